"""Pure rendering of the Kubeflow MPIJob (``kubeflow.org/v2beta1``) that runs one MLflow project entry point.

Input: the validated :class:`~mlflow_anf.backend.config.MPIJobBackendConfig` and a :class:`JobRequest` (run id,
experiment, tracking URI for the pods, the entry-point command as MLflow computed it). Output: plain dicts, ready for
the Kubernetes API or ``yaml.safe_dump``. No I/O, no Kubernetes or MLflow imports.

The launcher runs ``python -m mlflow_anf.backend.launcher ... -- <entry-point command>``: that wrapper starts the
command on every process with ``horovodrun``/``mpirun`` using the operator's hostfile, and sets the MLflow run's final
status from the exit code. Workers run ``sshd`` (the MPI operator's SSH bootstrap). Secret values never appear here:
``secret_env`` becomes ``valueFrom.secretKeyRef``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlflow_anf.vocabulary import (  # noqa: F401  (the names stay importable from this module)
    ANNOTATION_PROJECT,
    ANNOTATION_TRACKING_URI,
    ARTIFACT_LAUNCHER_LOG,
    LABEL_ENTRY_POINT,
    LABEL_EXPERIMENT_ID,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_RUN_ID,
    MANAGED_BY,
    ROLE_DATA,
)
from mlflow_anf.backend.config import RUN_SUFFIX_LEN, MPIJobBackendConfig
from mlflow_anf.k8s.naming import derive_name, dns1035_prefix, run_suffix, sanitize_label_value

API_VERSION = "kubeflow.org/v2beta1"
KIND = "MPIJob"
PLURAL = "mpijobs"
GROUP = "kubeflow.org"
VERSION = "v2beta1"


# Labels the MPI operator puts on the pods it creates (pkg/apis/kubeflow/v2beta1/constants.go).
OPERATOR_JOB_NAME_LABEL = "training.kubeflow.org/job-name"
OPERATOR_JOB_ROLE_LABEL = "training.kubeflow.org/job-role"

LAUNCHER_LOG_ARTIFACT = ARTIFACT_LAUNCHER_LOG
SECRET_ENV_LIST = "MLFLOW_ANF_SECRET_ENV"
WORKER_COMMAND = ["/usr/sbin/sshd", "-De"]
DEFAULT_RUNAI_SCHEDULER = "runai-scheduler"


@dataclass(frozen=True)
class JobRequest:
    """What one submission needs besides the backend config."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    command: str = field(metadata={"doc": "entry-point shell command, from MLflow's EntryPoint.compute_command"})
    entry_point: str = "main"
    project_name: str = "mlflow-project"
    #: where the entry point writes its model, relative to the model volume's root
    #: (:func:`mlflow_anf.backend.params.model_location`); required when the config takes a model snapshot
    model_path: str | None = None


def job_name_for(config: MPIJobBackendConfig, project_name: str, run_id: str) -> str:
    """``<job_name or sanitised project name>-<run_id[:8]>``: a DNS-1035 label whose worker host names
    (``<name>-worker-<n>``) fit 63 characters (a long prefix is cut and ends with a hash of itself)."""
    prefix = config.job_name or dns1035_prefix(project_name) or "mlflow"
    return derive_name(prefix, run_suffix(run_id, RUN_SUFFIX_LEN), max_len=63,
                       reserve=len(f"-worker-{config.workers - 1}"), dns1035=True)


def launcher_args(config: MPIJobBackendConfig, req: JobRequest) -> list[str]:
    """Arguments of ``python -m mlflow_anf.backend.launcher`` in the launcher container."""
    args = [
        "--launcher", config.launcher,
        "--mpi-implementation", config.mpi_implementation,
        "--processes", str(config.processes),
        "--slots-per-worker", str(config.slots_per_worker),
        "--log-artifact", LAUNCHER_LOG_ARTIFACT,
    ]
    for extra in config.mpi_args:
        args += [f"--mpi-arg={extra}"]
    model = config.model_volume()
    if model is not None:
        if req.model_path is None:
            raise ValueError("snapshot.model: the request has no model_path (where the entry point writes the model "
                             "on the model volume; mlflow_anf.backend.params.model_location finds it)")
        args += ["--model-snapshot", f"{config.namespace}/{model[0]}", f"--model-path={req.model_path}",
                 "--model-mount", model[1],
                 "--snapshot-timeout", f"{config.snapshot.timeout_seconds:g}"]
        if config.snapshot.snapshot_class:
            args += ["--snapshot-class", config.snapshot.snapshot_class]
    if config.snapshot.keep_last:  # pruned by the launcher after a success (mlflow_anf.backend.budget)
        from mlflow_anf.backend.budget import planned_snapshots

        for pvc in planned_snapshots(config):
            args += ["--prune", f"{config.namespace}/{pvc}"]
        args += ["--keep-last", str(config.snapshot.keep_last)]
    return [*args, "--", req.command]


def _env(config: MPIJobBackendConfig, req: JobRequest) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(config.env.items())]
    for name, ref in sorted(config.secret_env.items()):
        key_ref: dict[str, Any] = {"name": ref.secret, "key": ref.key}
        if ref.optional:
            key_ref["optional"] = True
        env.append({"name": name, "valueFrom": {"secretKeyRef": key_ref}})
    env += [
        {"name": "MLFLOW_RUN_ID", "value": req.run_id},
        {"name": "MLFLOW_EXPERIMENT_ID", "value": str(req.experiment_id)},
        {"name": "MLFLOW_TRACKING_URI", "value": req.tracking_uri},
        {"name": SECRET_ENV_LIST, "value": ",".join(config.secret_env_names())},
    ]
    return env


def _resources(cpu: str | None, memory: str | None, gpus: int = 0, gpu_resource: str = "") -> dict[str, Any]:
    amounts: dict[str, str] = {}
    if cpu:
        amounts["cpu"] = cpu
    if memory:
        amounts["memory"] = memory
    limits = dict(amounts)
    if gpus:
        limits[gpu_resource] = str(gpus)
    out: dict[str, Any] = {}
    if amounts:
        out["requests"] = amounts
    if limits:
        out["limits"] = limits
    return out


def _pod_labels(config: MPIJobBackendConfig, req: JobRequest) -> dict[str, str]:
    labels = {**config.labels, LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN_ID: req.run_id}
    if config.scheduler == "runai" and config.runai_project:
        labels["project"] = config.runai_project
        labels["runai/queue"] = config.runai_project
    return labels


def _pvc_volumes(config: MPIJobBackendConfig, *, data: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(volumeMounts, volumes)`` of the PVCs: the data PVC (when *data*; workers) and the model volume (launcher
    and workers) - the data PVC once when the model is on it, else ``snapshot.model_pvc`` as volume ``model``."""
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    model = config.model_volume()
    if config.data_pvc and (data or (model is not None and model[0] == config.data_pvc)):
        mounts.append({"name": "data", "mountPath": config.data_mount_path})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": config.data_pvc}})
    if model is not None and model[0] != config.data_pvc:
        mounts.append({"name": "model", "mountPath": model[1]})
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": model[0]}})
    return mounts, volumes


def _pod_spec_common(config: MPIJobBackendConfig) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if config.scheduler == "runai":
        spec["schedulerName"] = DEFAULT_RUNAI_SCHEDULER
    if config.priority_class:
        spec["priorityClassName"] = config.priority_class
    if config.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in config.image_pull_secrets]
    return spec


def render_launcher_template(config: MPIJobBackendConfig, req: JobRequest) -> dict[str, Any]:
    container = {
        "name": "launcher",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "workingDir": config.project_dir,
        "command": ["python", "-m", "mlflow_anf.backend.launcher"],
        "args": launcher_args(config, req),
        "env": _env(config, req),
        "resources": _resources(config.launcher_cpu, config.launcher_memory),
    }
    mounts, volumes = _pvc_volumes(config, data=False)
    if mounts:
        container["volumeMounts"] = mounts
    spec = {**_pod_spec_common(config), "containers": [container]}
    if volumes:
        spec["volumes"] = volumes
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    return {"metadata": {"labels": _pod_labels(config, req)}, "spec": spec}


def render_worker_template(config: MPIJobBackendConfig, req: JobRequest) -> dict[str, Any]:
    mounts, volumes = _pvc_volumes(config, data=True)
    if config.shm_size:
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": config.shm_size}})
    container: dict[str, Any] = {
        "name": "worker",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "workingDir": config.project_dir,
        "command": list(WORKER_COMMAND),
        "env": _env(config, req),
        "resources": _resources(config.cpu, config.memory, config.gpus_per_process * config.slots_per_worker,
                                config.gpu_resource),
    }
    if mounts:
        container["volumeMounts"] = mounts
    spec: dict[str, Any] = {**_pod_spec_common(config), "containers": [container]}
    if volumes:
        spec["volumes"] = volumes
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = [t.model_dump(exclude_none=True) for t in config.tolerations]
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    return {"metadata": {"labels": _pod_labels(config, req)}, "spec": spec}


def render_mpijob(config: MPIJobBackendConfig, req: JobRequest, name: str | None = None) -> dict[str, Any]:
    """The MPIJob manifest for *req* (name from :func:`job_name_for` unless given)."""
    name = name or job_name_for(config, req.project_name, req.run_id)
    labels = {
        **config.labels,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RUN_ID: req.run_id,
        LABEL_EXPERIMENT_ID: sanitize_label_value(str(req.experiment_id)),
        LABEL_ENTRY_POINT: sanitize_label_value(req.entry_point),
    }
    if config.scheduler == "runai" and config.runai_project:
        labels["project"] = config.runai_project
    annotations = {**config.annotations, ANNOTATION_TRACKING_URI: req.tracking_uri,
                   ANNOTATION_PROJECT: req.project_name}
    run_policy: dict[str, Any] = {"cleanPodPolicy": config.clean_pod_policy, "backoffLimit": config.backoff_limit}
    if config.ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = config.ttl_seconds_after_finished
    if config.active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = config.active_deadline_seconds
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": config.namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "slotsPerWorker": config.slots_per_worker,
            "mpiImplementation": config.mpi_implementation,
            "launcherCreationPolicy": config.launcher_creation_policy,
            "runPolicy": run_policy,
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "restartPolicy": "Never",
                             "template": render_launcher_template(config, req)},
                "Worker": {"replicas": config.workers, "restartPolicy": "Never",
                           "template": render_worker_template(config, req)},
            },
        },
    }


def data_snapshot_name(config: MPIJobBackendConfig, run_id: str) -> str:
    """Name of the run's data snapshot (:func:`mlflow_anf.backend.plan.snapshot_name_for`; the backend uses it)."""
    from mlflow_anf.backend.plan import snapshot_name_for

    return snapshot_name_for(config.data_pvc or "data", ROLE_DATA, run_id)


def render_manifests(config: MPIJobBackendConfig, req: JobRequest, name: str | None = None) -> list[dict[str, Any]]:
    """Everything a submission creates, in order: the data VolumeSnapshot (when ``snapshot.data``), the MPIJob
    (:func:`mlflow_anf.backend.plan.plan_job`; *name* overrides the job's name)."""
    from mlflow_anf.backend.plan import plan_job

    plan = plan_job(config, req)
    out = plan.manifests()
    if name is not None and name != plan.job_name:
        out[-1] = render_mpijob(config, req, name)
    return out
