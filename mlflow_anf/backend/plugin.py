"""The ``mpijob`` MLflow project backend (entry point ``mlflow.project_backend``).

``mlflow run . -e train --backend mpijob --backend-config cfg.json`` ends up in :meth:`MPIJobBackend.run`:

1. validate the backend config (nothing is created when it is wrong) and connect to the cluster;
2. fetch the project and compute the entry-point command with MLflow's own ``EntryPoint.compute_command``;
3. create the MLflow run (params logged by MLflow's ``get_or_create_run``), tag it with the job and the config;
4. snapshot the data PVC (csi provider) and record it on the run, when configured;
5. submit the MPIJob and return an :class:`~mlflow_anf.backend.submitted_run.MPIJobSubmittedRun` (or wait for it,
   streaming the launcher log, when ``wait``/``follow_logs`` is set: the ``mlflow run`` CLI does not wait for
   plugin backends).

A failure after the run exists marks it FAILED with the reason in ``mlflow_anf.backend.error``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mlflow.exceptions import ExecutionException
from mlflow.projects.backend.abstract_backend import AbstractBackend

from mlflow_anf.vocabulary import (  # noqa: F401  (the names stay importable from this module)
    ARTIFACT_BACKEND_CONFIG,
    ARTIFACT_MPIJOB,
    TAG_BACKEND_CONFIG,
    TAG_BACKEND_ERROR,
    TAG_BACKEND_IMAGE,
    TAG_BACKEND_JOB,
    TAG_BACKEND_PREFIX,
    TAG_BACKEND_SNAPSHOT_ROLES,
    MLFLOW_TAG_BACKEND,
    ROLE_DATA,
    ROLE_MODEL,
    TAG_VALUE_MAX,
    clip,
)
from mlflow_anf.backend.config import BackendConfigError, MPIJobBackendConfig, load_backend_config
from mlflow_anf.backend.plan import JobPlan, plan_job
from mlflow_anf.backend.render import GROUP, PLURAL, VERSION, JobRequest
from mlflow_anf.backend.snapshots import SNAPSHOT_PROVIDER, job_snapshot_provider  # noqa: F401  (re-exported)
from mlflow_anf.secrets import redact, redact_text, secret_in_value

log = logging.getLogger(__name__)

TAG_PREFIX = TAG_BACKEND_PREFIX
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def pod_tracking_uri(config: MPIJobBackendConfig, client_uri: str) -> str:
    """The tracking URI the pods use: ``tracking_uri`` from the config, else this client's own one when the pods can
    reach it (a server URI that is not localhost). Never returns or echoes an URI with a password in it."""
    if config.tracking_uri:
        return config.tracking_uri
    parts = urlsplit(client_uri or "")
    if parts.password is not None or parts.username is not None or secret_in_value(client_uri or ""):
        raise BackendConfigError(["tracking_uri: this client's tracking URI embeds a password or token; set "
                                  "tracking_uri without credentials and pass them to the pods with secret_env"])
    if parts.scheme in ("", "file", "sqlite") or (parts.hostname or "") in _LOCAL_HOSTS:
        raise BackendConfigError([
            f"tracking_uri: the pods cannot reach this machine's tracking store {client_uri!r}; set tracking_uri to "
            "a server they can reach (e.g. http://mlflow.mlflow.svc.cluster.local:5000)"
        ])
    return client_uri


def kube_config(config: MPIJobBackendConfig) -> Any:
    """The :class:`mlflow_anf.k8s.KubeConfig` (cluster, context, retries) of a backend config."""
    from mlflow_anf.k8s import KubeConfig, RetryPolicy

    retry = RetryPolicy(max_attempts=config.api_max_attempts, base_delay_s=config.api_backoff_seconds)
    return KubeConfig(kubeconfig=config.kubeconfig, context=config.kube_context, namespace=config.namespace,
                      in_cluster="false" if config.kubeconfig else "auto", retry=retry)


def csi_provider(config: MPIJobBackendConfig) -> Any:
    """The csi snapshot provider for the job's namespace, reaching the cluster like the backend does."""
    kube = kube_config(config)
    return job_snapshot_provider(config.namespace, timeout_s=config.snapshot.timeout_seconds,
                                 snapshot_class=config.snapshot.snapshot_class, kubeconfig=config.kubeconfig,
                                 context=config.kube_context, in_cluster=kube.in_cluster, retry=kube.retry)


def snapshot_provider(config: MPIJobBackendConfig | Mapping[str, Any], provider: str) -> Any | None:
    """The provider this backend would use for snapshots of *provider*, reaching the cluster as the backend does;
    ``None`` when the backend does not take that provider's snapshots (reproduce then configures one itself)."""
    if provider != SNAPSHOT_PROVIDER:
        return None
    if not isinstance(config, MPIJobBackendConfig):
        config = load_backend_config(dict(config))
    return csi_provider(config)


def load_entry_point(project_uri: str, entry_point: str, params: Mapping[str, Any], version: str | None = None,
                     ) -> tuple[str, str, str, Any]:
    """Fetch the project and compute the entry point's command with MLflow's own ``EntryPoint.compute_command``.

    Returns ``(command, project name, work dir, EntryPoint)``. ``storage_dir=None``: ``path`` params are passed
    through as given, since they name paths inside the pods.
    """
    from mlflow.projects.utils import fetch_and_validate_project, load_project

    work_dir = fetch_and_validate_project(project_uri, version, entry_point, dict(params))
    project = load_project(work_dir)
    ep = project.get_entry_point(entry_point)
    command = ep.compute_command(dict(params), None)
    name = project.name or os.path.basename(os.path.normpath(work_dir))
    return command, name, work_dir, ep


def load_job_entry_point(project_uri: str, entry_point: str, params: dict[str, Any], version: str | None,
                         ) -> tuple[str, str, str, Any]:
    """:func:`load_entry_point`, then the parameters are checked (:func:`mlflow_anf.backend.params.validate_params`:
    no secrets, MLflow's declared types, the project's own parameter model);
    :class:`~mlflow_anf.backend.params.EntryPointParamError` names the bad ones before anything is created.

    The parameters are passed on as given: when the backend takes the snapshots (snapshot.data/model) it records
    which roles it takes on the run, and the training side skips them."""
    from mlflow_anf.backend.params import validate_params

    command, name, work_dir, ep = load_entry_point(project_uri, entry_point, params, version)
    validate_params(work_dir, ep, params)
    return command, name, work_dir, ep


def _in_store(tracking_uri: str, fn: Any, *args: Any) -> Any:
    """Call an MLflow helper that writes to the *global* tracking store against *tracking_uri* (what MLflow handed
    the backend; the same store when called by ``mlflow run``, where nothing changes)."""
    import mlflow

    if not tracking_uri or mlflow.get_tracking_uri() == tracking_uri:
        return fn(*args)
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(tracking_uri):
            return fn(*args)
    finally:  # restoring an unset URI unsets the variable too: put back what the caller had
        if env_before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_before


def _require_k8s() -> None:
    """The kubernetes package (the ``k8s`` extra), or an error ``mlflow run`` shows as it is, naming the extra."""
    from mlflow_anf.extras import MissingExtraError, require_extra

    try:
        require_extra("k8s", "kubernetes", "`--backend mpijob`")
    except MissingExtraError as exc:
        raise ExecutionException(str(exc)) from None


class MPIJobBackend(AbstractBackend):
    """Runs an MLflow project entry point as a Kubeflow MPIJob."""

    def __init__(self, api_client: Any = None, tracking_client: Any = None, out: Any = None) -> None:
        # Injection points for tests and embedding; MLflow builds it with no arguments.
        self._api_client = api_client
        self._tracking_client = tracking_client
        self._out = out

    def run(
        self,
        project_uri: str,
        entry_point: str,
        params: Mapping[str, Any] | None,
        version: str | None,
        backend_config: Mapping[str, Any] | str | None,
        tracking_uri: str,
        experiment_id: str,
    ) -> Any:
        from mlflow.projects.utils import get_or_create_run
        from mlflow.tracking import MlflowClient

        _require_k8s()  # before anything is fetched or created
        from mlflow_anf.backend.params import EntryPointParamError, model_location
        from mlflow_anf.backend.submitted_run import MPIJobSubmittedRun
        from mlflow_anf.k8s import KubeApiError, KubeConfigError, api_client, call_with_retries

        params = dict(params or {})
        try:
            config = load_backend_config(backend_config if backend_config is not None else {})
            pod_uri = pod_tracking_uri(config, tracking_uri)
        except BackendConfigError as exc:
            raise ExecutionException(str(exc)) from None

        try:
            command, project_name, work_dir, ep = load_job_entry_point(project_uri, entry_point, params, version)
            model_path = model_location(work_dir, ep, params, config)  # the model snapshot is of the model
        except EntryPointParamError as exc:
            raise ExecutionException(str(exc)) from None

        kube = kube_config(config)
        try:
            api = self._api_client or api_client(kube, "`--backend mpijob`")
        except KubeConfigError as exc:
            raise ExecutionException(f"mpijob backend: {exc}") from None

        client = self._tracking_client or MlflowClient(tracking_uri)
        active_run = _in_store(tracking_uri, get_or_create_run, None, project_uri, experiment_id, work_dir, version,
                               entry_point, params)
        run_id = active_run.info.run_id
        req = JobRequest(run_id=run_id, experiment_id=str(active_run.info.experiment_id), tracking_uri=pod_uri,
                         command=command, entry_point=entry_point, project_name=project_name, model_path=model_path)
        plan = plan_job(config, req)
        name, manifest = plan.job_name, plan.mpijob
        try:
            self._record_submission(client, run_id, config, plan)
            self._check_snapshot_budget(config)
            self._snapshot_data(config, plan, client)
            call_with_retries(self._custom(api).create_namespaced_custom_object, GROUP, VERSION, config.namespace,
                              PLURAL, manifest, op=f"create MPIJob {config.namespace}/{name}",
                              policy=kube.retry)
        except Exception as exc:
            reason = redact_text(str(exc))
            if isinstance(exc, KubeApiError) and exc.conflict:
                reason = f"MPIJob {config.namespace}/{name} already exists: {reason}"
            self._fail_run(client, run_id, reason)
            raise ExecutionException(f"mpijob backend: run {run_id} not submitted: {reason}") from None
        self._say(f"submitted MPIJob {config.namespace}/{name} for run {run_id} "
                  f"({config.processes} processes on {config.workers} workers)")

        submitted = MPIJobSubmittedRun(
            run_id, config.namespace, name, api, tracking_client=client,
            poll_interval=config.poll_interval_seconds, submit_timeout=config.submit_timeout_seconds,
            cancel_timeout=config.cancel_timeout_seconds, retry=kube.retry, out=self._out,
            wait_timeout=config.wait_timeout_seconds, unschedulable_grace=config.unschedulable_grace_seconds,
        )
        if config.wait or config.follow_logs:
            try:
                ok = submitted.wait(follow_logs=config.follow_logs)
            except KeyboardInterrupt:  # Ctrl-C in `mlflow run`: take the job down with us, like MLflow's local runs
                self._say(f"interrupted: cancelling MPIJob {config.namespace}/{name}")
                submitted.cancel()
                raise
            if not ok:
                raise ExecutionException(f"Run (ID '{run_id}') failed: MPIJob {config.namespace}/{name} "
                                         f"ended {submitted.get_status()}")
        return submitted

    # --- helpers --------------------------------------------------------------------------------------------
    @staticmethod
    def _record_submission(client: Any, run_id: str, config: MPIJobBackendConfig, plan: JobPlan) -> None:
        """What the run must carry before anything is created: backend, job, image, config, manifest, and the
        snapshot roles the backend takes itself (the training side skips those, see mlflow_anf.lightning)."""
        # MLflow tags the backend only after run() returns, which it does not when waiting ends in failure
        client.set_tag(run_id, MLFLOW_TAG_BACKEND, "mpijob")
        client.set_tag(run_id, TAG_BACKEND_JOB, f"{config.namespace}/{plan.job_name}")
        client.set_tag(run_id, TAG_BACKEND_IMAGE, config.image)
        roles = [role for role, on in ((ROLE_DATA, config.snapshot.data), (ROLE_MODEL, config.snapshot.model)) if on]
        if roles:
            client.set_tag(run_id, TAG_BACKEND_SNAPSHOT_ROLES, ",".join(roles))
        # the config refuses plain secrets; redacting what is recorded as well costs nothing
        public = json.dumps(redact(config.public_dict()), sort_keys=True)
        client.log_text(run_id, public, ARTIFACT_BACKEND_CONFIG)
        # whole JSON or nothing in the tag (a truncated one would not parse); the artifact always has it
        if len(public) <= TAG_VALUE_MAX:
            client.set_tag(run_id, TAG_BACKEND_CONFIG, public)
        client.log_dict(run_id, redact(plan.mpijob), ARTIFACT_MPIJOB)

    @staticmethod
    def _check_snapshot_budget(config: MPIJobBackendConfig) -> None:
        """Both of the run's snapshots must fit the per-volume limit before training starts (budget.py)."""
        from mlflow_anf.backend.budget import check_snapshot_budget, planned_snapshots

        if planned_snapshots(config):
            check_snapshot_budget(config, csi_provider(config))

    def _snapshot_data(self, config: MPIJobBackendConfig, plan: JobPlan, client: Any) -> None:
        """Take the plan's data snapshot (its name and labels) and record it on the run."""
        if plan.data_volume is None:
            return
        from mlflow_anf.tracking import snapshot_and_log

        snap = snapshot_and_log(csi_provider(config), plan.data_volume, ROLE_DATA, run_id=plan.run_id,
                                labels=plan.data_snapshot_labels, name=plan.data_snapshot_name, client=client)
        self._say(f"data snapshot {snap.ref}")

    @staticmethod
    def _custom(api: Any) -> Any:
        from kubernetes.client import CustomObjectsApi

        return CustomObjectsApi(api)

    def _say(self, msg: str) -> None:
        log.info("%s", msg)
        if self._out is not None:
            self._out.write(msg + "\n")

    @staticmethod
    def _fail_run(client: Any, run_id: str, reason: str) -> None:
        try:
            client.set_tag(run_id, TAG_BACKEND_ERROR, clip(reason))
            client.set_terminated(run_id, "FAILED")
        except Exception as exc:  # noqa: BLE001 - report the original failure, not this one
            log.warning("could not mark run %s FAILED: %s", run_id, exc)

