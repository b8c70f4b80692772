"""``MPIJobSubmittedRun``: follow, stream and cancel one submitted MPIJob on behalf of MLflow.

Status comes from the MPIJob's conditions (Created, Running, Restarting, Succeeded, Failed, Suspended; see
:func:`status_from_conditions`). ``wait()`` follows the job with :func:`mlflow_anf.k8s.follow` (the routine the
csi provider's waits use: a watch from the listed resourceVersion, re-listed after 410 Gone, polling when watching
keeps failing), fails with the job's events when the operator never sets a Created condition (it only emits a
Warning event when it rejects a job), and, when the launcher could not close the MLflow run itself (pod never
started, evicted, deadline), sets the run's final status from the job. While the job is ``Created`` (no Running
yet) it also reads the worker pods every poll: the MPI operator never recreates a worker that failed or cannot start
and leaves the job ``Created`` for ever (:mod:`mlflow_anf.backend.workers`), so a worker that failed, or waits on a
reason that will not clear (missing Secret/ConfigMap, image not found; Unschedulable or image pull back-off past
``unschedulable_grace``), ends the run FAILED with the pod's reason and message and removes the job. ``wait_timeout``
(from the submission) bounds the whole wait the same way. ``cancel()`` deletes the job with foreground propagation
and waits until no launcher/worker pod, Job, ConfigMap, Secret or Service of it is left.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from mlflow.entities import RunStatus
from mlflow.exceptions import ExecutionException
from mlflow.projects.submitted_run import SubmittedRun

from mlflow_anf.vocabulary import (  # noqa: F401  (the names stay importable from this module)
    TAG_BACKEND_CONDITION,
    TAG_BACKEND_JOB,
    clip,
)
from mlflow_anf.backend.render import GROUP, KIND, OPERATOR_JOB_NAME_LABEL, OPERATOR_JOB_ROLE_LABEL, PLURAL, VERSION
from mlflow_anf.backend.workers import WorkerProblem, worker_problem
from mlflow_anf.k8s import KubeApiError, RetryPolicy, call_with_retries

log = logging.getLogger(__name__)

TAG_JOB = TAG_BACKEND_JOB
TAG_CONDITION = TAG_BACKEND_CONDITION


class MPIJobSubmitTimeout(ExecutionException):
    """The operator never acknowledged the job (no Created condition); the message carries the job's events."""


class MPIJobCancelTimeout(ExecutionException):
    """Objects of a cancelled job were still there when the cancel timeout ran out."""


class MPIJobGone(ExecutionException):
    """The MPIJob disappeared while it was being followed (deleted by someone else, or TTL after finishing)."""


class _Stop(Exception):
    """The wait ends the run FAILED with *cond* (a worker that will not start, the wait deadline) and removes the
    job."""

    def __init__(self, cond: dict[str, Any]) -> None:
        super().__init__(describe_condition(cond))
        self.cond = cond


_LOG_DRAIN_S = 60.0  # upper bound on printing the rest of a finished launcher's log


def _true(cond: dict[str, Any]) -> bool:
    return str(cond.get("status")) == "True"


def status_from_conditions(conditions: Iterable[dict[str, Any]] | None) -> tuple[str, dict[str, Any] | None]:
    """MLflow status (``RunStatus`` name) for an MPIJob's conditions, and the condition that decided it.

    Succeeded → FINISHED; Failed → FAILED; Suspended → SCHEDULED (the job is paused, nothing runs);
    Running or Restarting → RUNNING; Created (or nothing yet) → SCHEDULED.
    """
    by_type = {c.get("type"): c for c in (conditions or []) if isinstance(c, dict)}
    for ctype, status in (("Succeeded", "FINISHED"), ("Failed", "FAILED"), ("Suspended", "SCHEDULED"),
                          ("Restarting", "RUNNING"), ("Running", "RUNNING"), ("Created", "SCHEDULED")):
        cond = by_type.get(ctype)
        if cond is not None and _true(cond):
            return status, cond
    return "SCHEDULED", None


def describe_condition(cond: dict[str, Any] | None) -> str:
    if not cond:
        return "no condition yet"
    text = str(cond.get("type"))
    if cond.get("reason"):
        text += f" ({cond['reason']})"
    if cond.get("message"):
        text += f": {cond['message']}"
    return text


class MPIJobSubmittedRun(SubmittedRun):
    """One MPIJob that runs MLflow run *run_id*. Not thread-safe (like every ``SubmittedRun``)."""

    def __init__(
        self,
        run_id: str,
        namespace: str,
        name: str,
        api_client: Any,
        *,
        tracking_client: Any = None,
        poll_interval: float = 5.0,
        submit_timeout: float = 300.0,
        cancel_timeout: float = 300.0,
        wait_timeout: float | None = None,
        unschedulable_grace: float = 600.0,
        retry: RetryPolicy | None = None,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self._run_id = run_id
        self.namespace = namespace
        self.name = name
        self._api_client = api_client
        self._tracking = tracking_client
        self.poll_interval = poll_interval
        self.submit_timeout = submit_timeout
        self.cancel_timeout = cancel_timeout
        self.wait_timeout = wait_timeout
        self.unschedulable_grace = unschedulable_grace
        self._problem_since: dict[tuple[str, str], float] = {}  # (pod, reason) -> first seen (clock)
        self._pull_errors: dict[str, str] = {}  # pod -> its last ErrImagePull message
        self._last_job: Mapping[str, Any] | None = None
        self._retry = retry or RetryPolicy()
        self._out = out
        self._clock = clock
        self._sleep = sleep
        self._started = clock()
        self._status = "SCHEDULED"
        self._cancelled = False
        self._last_described: str | None = None
        self._unchecked: set[str] = set()  # kinds we may not list (403), so cannot check after a cancel

    # --- MLflow's interface ---------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self._run_id

    def get_status(self) -> str:
        """The run's status from the MPIJob's conditions (``RunStatus`` name)."""
        if RunStatus.is_terminated(RunStatus.from_string(self._status)):
            return self._status
        job = self._read_job()
        if job is None:
            self._status = "KILLED" if self._cancelled else "FAILED"
        else:
            self._status, _ = status_from_conditions((job.get("status") or {}).get("conditions"))
        return self._status

    def wait(self, follow_logs: bool = False) -> bool:
        """Block until the job ends; True when it succeeded. Raises :class:`MPIJobSubmitTimeout` when the operator
        never sets a Created condition within ``submit_timeout`` seconds."""
        streamer = None
        if follow_logs:
            streamer = threading.Thread(target=self._stream_quietly, name=f"logs-{self.name}", daemon=True)
            streamer.start()
        try:
            status, cond = self._follow()
        except MPIJobSubmitTimeout as exc:
            self._finish_run("FAILED", {"type": "SubmitTimeout", "status": "True", "message": str(exc)})
            raise
        except _Stop as stop:
            status, cond = "FAILED", stop.cond
            self._status = status
            self._remove_failed_job(cond, "")
        finally:
            if streamer is not None:
                streamer.join(timeout=max(self.poll_interval * 4, 2.0))
        if streamer is not None and streamer.is_alive():
            # the job has ended, so its launcher log is complete: let the stream finish printing it (a loaded
            # client can take longer than the short join above; the thread ends when the log does)
            streamer.join(timeout=_LOG_DRAIN_S)
        if status == "FAILED" and not ((self._last_job or {}).get("status") or {}).get("completionTime"):
            # Failed without completionTime: the operator failed the job (an evicted worker) while its launcher
            # Job still runs, and it will not stop it (kubeflow/mpi-operator mpi_job_controller.go:622-633,
            # :1159-1163): remove the job so nothing keeps the GPUs or closes the run later
            self._remove_failed_job(cond, " while its launcher still runs")
        elif status == "FAILED" and not self._cancelled:
            # a launcher stopped by the Job controller (activeDeadlineSeconds) closes the run KILLED on its way out:
            # once it has ended, the job's failure is the run's outcome
            self._wait_launcher_ended()
            self._finish_run(status, cond, force=self._run_status() == "KILLED")
        self._finish_run(status, cond)
        return status == "FINISHED"

    def _run_status(self) -> str | None:
        try:
            return self._tracking.get_run(self._run_id).info.status if self._tracking is not None else None
        except Exception:  # noqa: BLE001 - only a hint; _finish_run reports tracking trouble
            return None

    def _wait_launcher_ended(self) -> None:
        """Wait (up to ``cancel_timeout``) until no launcher pod of the job is Pending or Running."""
        deadline = self._clock() + self.cancel_timeout
        selector = f"{OPERATOR_JOB_NAME_LABEL}={self.name},{OPERATOR_JOB_ROLE_LABEL}=launcher"
        while self._clock() < deadline:
            try:
                pods = _json(self._call(self._core().list_namespaced_pod, self.namespace, label_selector=selector,
                                        op=f"list launcher pods of {self.namespace}/{self.name}",
                                        _preload_content=False)).get("items") or []
            except KubeApiError:
                return
            if all((p.get("status") or {}).get("phase") in ("Succeeded", "Failed") for p in pods):
                return
            self._sleep(self.poll_interval)

    def _remove_failed_job(self, cond: dict[str, Any] | None, why: str) -> None:
        """End the run FAILED with *cond*, delete the job and wait until nothing of it is left."""
        self._say(f"MPIJob {self.namespace}/{self.name}: {describe_condition(cond)}{why}; removing the job")
        self._finish_run("FAILED", cond)
        self._delete_and_wait()
        # a launcher stopped by the delete closes the run KILLED on its way out; the outcome is this one
        self._finish_run("FAILED", None, force=True)

    def cancel(self) -> None:
        """Delete the MPIJob (foreground propagation) and wait until none of its objects is left."""
        self._cancelled = True
        self._delete_and_wait()
        self._status = "KILLED"
        self._finish_run("KILLED", None)
        self._say(f"MPIJob {self.namespace}/{self.name} cancelled; no pod, job, configmap, secret or service left")

    def _delete_and_wait(self) -> None:
        """Delete the MPIJob (foreground propagation) and wait until none of its objects is left."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"}
        try:
            self._call(self._custom().delete_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                       self.name, body=body, op=f"delete MPIJob {self.namespace}/{self.name}")
        except KubeApiError as exc:
            if not exc.not_found:
                raise ExecutionException(str(exc)) from None
        deadline = self._clock() + self.cancel_timeout
        while True:
            left = self.leftovers()
            if not left:
                break
            if self._clock() >= deadline:
                raise MPIJobCancelTimeout(
                    f"MPIJob {self.namespace}/{self.name} deleted, but after {self.cancel_timeout:g}s these objects "
                    f"are still there: {', '.join(left)}"
                )
            self._sleep(self.poll_interval)

    # --- logs -----------------------------------------------------------------------------------------------
    def launcher_pod(self) -> dict[str, Any] | None:
        """The newest launcher pod of the job, or None."""
        selector = f"{OPERATOR_JOB_NAME_LABEL}={self.name},{OPERATOR_JOB_ROLE_LABEL}=launcher"
        pods = self._call(self._core().list_namespaced_pod, self.namespace, label_selector=selector,
                          op=f"list launcher pods of {self.namespace}/{self.name}", _preload_content=False)
        items = _json(pods).get("items") or []
        items.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        return items[-1] if items else None

    def stream_logs(self, out: TextIO | None = None, follow: bool = True) -> None:
        """Write the launcher's log to *out* (default: stdout); with *follow*, until the launcher ends.

        A log stream that ends while the launcher still runs (a dropped connection) is reopened; lines already
        written are skipped by their timestamps.
        """
        out = out or self._out or sys.stdout
        last_ts = ""
        attempts = 0
        while True:
            pod = self._wait_for_launcher_pod() if follow else self.launcher_pod()
            if pod is None:
                return
            pod_name = pod["metadata"]["name"]
            try:
                resp = self._call(self._core().read_namespaced_pod_log, pod_name, self.namespace, follow=follow,
                                  timestamps=True, _preload_content=False,
                                  op=f"read log of pod {self.namespace}/{pod_name}")
                for raw in _iter_lines(resp):
                    stamp, _, text = raw.partition(" ")
                    ts = _ts_key(stamp)
                    if last_ts and ts <= last_ts:
                        continue
                    last_ts = ts
                    out.write(text + "\n")
                    out.flush()
            except KubeApiError as exc:
                if exc.not_found:
                    return
            except Exception as exc:  # noqa: BLE001 - a stream dropped mid-body; reopen it below
                log.debug("log stream of %s/%s dropped: %s", self.namespace, pod_name, exc)
            finished = self._pod_finished(pod_name) if follow else True
            log.debug("log stream of %s/%s ended (pod finished: %s)", self.namespace, pod_name, finished)
            if finished:
                return
            attempts += 1
            if attempts >= self._retry.max_attempts:
                log.warning("giving up following the log of %s/%s after %d attempts", self.namespace, pod_name,
                            attempts)
                return
            self._sleep(self._retry.backoff(attempts))

    def _pod_finished(self, pod_name: str) -> bool:
        """True when the pod is gone or its containers have ended (its log is complete)."""
        try:
            resp = self._call(self._core().read_namespaced_pod, pod_name, self.namespace, _preload_content=False,
                              op=f"get pod {self.namespace}/{pod_name}")
        except KubeApiError as exc:
            return exc.not_found
        return (_json(resp).get("status") or {}).get("phase") in ("Succeeded", "Failed")

    # --- internals ------------------------------------------------------------------------------------------
    def _custom(self) -> Any:
        from kubernetes.client import CustomObjectsApi

        return CustomObjectsApi(self._api_client)

    def _core(self) -> Any:
        from kubernetes.client import CoreV1Api

        return CoreV1Api(self._api_client)

    def _call(self, fn: Callable[..., Any], *args: Any, op: str, **kwargs: Any) -> Any:
        return call_with_retries(fn, *args, op=op, policy=self._retry, sleep=self._sleep, **kwargs)

    def _say(self, msg: str) -> None:
        log.info("%s", msg)
        if self._out is not None:
            self._out.write(msg + "\n")
            self._out.flush()

    def _read_job(self) -> dict[str, Any] | None:
        try:
            return self._call(self._custom().get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                              self.name, op=f"get MPIJob {self.namespace}/{self.name}")
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise ExecutionException(str(exc)) from None

    def _follow(self) -> tuple[str, dict[str, Any] | None]:
        """Follow the job (:func:`mlflow_anf.k8s.follow`: one watch from the listed resourceVersion, re-listed
        after 410 Gone, polled when watching fails) until it ends; until the operator acknowledges it (any
        condition) within ``submit_timeout`` of the submission."""
        from mlflow_anf.k8s import follow, list_watch

        what = f"MPIJob {self.namespace}/{self.name}"
        list_fn, watch_fn = list_watch(
            lambda ns, **kw: self._custom().list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, **kw),
            call=lambda op, fn, *args, **kw: self._call(fn, *args, op=op, **kw), what=what)
        outcome: dict[str, Any] = {}

        def ended(job: Mapping[str, Any] | None) -> bool:
            if job is None:
                return True
            self._last_job = job
            conditions = (job.get("status") or {}).get("conditions") or []
            status, cond = status_from_conditions(conditions)
            self._status, outcome["cond"], outcome["acknowledged"] = status, cond, bool(conditions)
            described = describe_condition(cond)
            if described != self._last_described:
                self._say(f"MPIJob {self.namespace}/{self.name}: {described}")
                self._last_described = described
            return RunStatus.is_terminated(RunStatus.from_string(status))

        def follow_until(until: Any, timeout_s: float | None, initial: Mapping[str, Any] | None) -> Any:
            try:
                return follow(list_fn, watch_fn, namespace=self.namespace, name=self.name, until=until,
                              timeout_s=timeout_s, poll_interval_s=self.poll_interval, initial=initial,
                              watch_timeout_s=max(self.poll_interval, 60.0), what=what, sleep=self._sleep,
                              clock=self._clock)
            except KubeApiError as exc:
                raise ExecutionException(str(exc)) from None

        submit_left = max(self._started + self.submit_timeout - self._clock(), 0.0)
        followed = follow_until(lambda job: ended(job) or bool(outcome.get("acknowledged")), submit_left, None)
        if not followed.done:
            raise MPIJobSubmitTimeout(self._timeout_message())
        if followed.state is not None and not RunStatus.is_terminated(RunStatus.from_string(self._status)):
            followed = self._follow_started(follow_until, ended, followed.state)
        if followed.state is None:
            if self._cancelled:
                return "KILLED", None
            raise MPIJobGone(f"MPIJob {self.namespace}/{self.name} no longer exists (deleted outside MLflow?)")
        return self._status, outcome.get("cond")

    def _follow_started(self, follow_until: Callable[..., Any], ended: Callable[[Any], bool],
                        state: Mapping[str, Any]) -> Any:
        """Follow an acknowledged job until it ends, within ``wait_timeout`` of the submission. While it is only
        ``Created`` (SCHEDULED), follow it one poll interval at a time and read its workers in between."""
        deadline = None if self.wait_timeout is None else self._started + self.wait_timeout
        while True:
            left = None if deadline is None else deadline - self._clock()
            if left is not None and left <= 0:
                raise _Stop({"type": "WaitTimeout", "status": "True", "reason": "WaitTimeout",
                             "message": f"MPIJob {self.namespace}/{self.name} did not end within "
                                        f"{self.wait_timeout:g}s of its submission (wait_timeout_seconds)"})
            if self._status == "SCHEDULED":
                self._check_workers()
                window = self.poll_interval if left is None else min(self.poll_interval, left)
                followed = follow_until(lambda job: ended(job) or self._status != "SCHEDULED", window, state)
            else:
                followed = follow_until(ended, left, state)
            if followed.state is None or RunStatus.is_terminated(RunStatus.from_string(self._status)):
                return followed
            state = followed.state

    def worker_pods(self) -> list[dict[str, Any]]:
        """The job's worker pods (one list request)."""
        selector = f"{OPERATOR_JOB_NAME_LABEL}={self.name},{OPERATOR_JOB_ROLE_LABEL}=worker"
        pods = self._call(self._core().list_namespaced_pod, self.namespace, label_selector=selector,
                          op=f"list worker pods of {self.namespace}/{self.name}", _preload_content=False)
        return list(_json(pods).get("items") or [])

    def _check_workers(self) -> None:
        """Raise :class:`_Stop` for a worker that will not become ready (at once, or past the grace)."""
        try:
            pods = self.worker_pods()
        except KubeApiError as exc:  # not allowed or not reachable: the job's own conditions still decide
            log.debug("cannot read the workers of %s/%s: %s", self.namespace, self.name, exc)
            return
        now, seen = self._clock(), set()
        for pod in pods:
            problem = worker_problem(pod, self._pull_errors.get(str((pod.get("metadata") or {}).get("name"))))
            if problem is None:
                continue
            if problem.reason == "ErrImagePull":
                self._pull_errors[problem.pod] = problem.message
            key = (problem.pod, problem.reason if problem.grace else "")
            seen.add(key)
            since = self._problem_since.setdefault(key, now)
            if not problem.grace or now - since >= self.unschedulable_grace:
                raise _Stop(_worker_condition(problem, None if not problem.grace else now - since))
        for key in set(self._problem_since) - seen:  # cleared (scheduled after all, pulled at last)
            del self._problem_since[key]

    def _events(self) -> list[str]:
        selector = f"involvedObject.name={self.name},involvedObject.kind={KIND}"
        op = f"list events of MPIJob {self.namespace}/{self.name}"
        # every API server selects Events on involvedObject.* (kubernetes/kubernetes pkg/apis/core/v1/conversion.go,
        # AddFieldLabelConversionsForEvent; the emulator enforces the same list)
        try:
            resp = self._call(self._core().list_namespaced_event, self.namespace, field_selector=selector,
                              op=op, _preload_content=False)
        except KubeApiError as exc:
            return [f"(could not list events: {exc})"]
        items = list(_json(resp).get("items") or [])
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or
                   (e.get("metadata") or {}).get("creationTimestamp") or "")
        return [f"{e.get('type', '?')} {e.get('reason', '?')}: {e.get('message', '')}" for e in items]

    def _timeout_message(self) -> str:
        events = self._events()
        lines = "\n".join(f"  {e}" for e in events) if events else "  (no events: is the MPI operator installed and " \
                                                                   "watching this namespace?)"
        return (f"MPIJob {self.namespace}/{self.name} got no Created condition within {self.submit_timeout:g}s; "
                f"the MPI operator did not accept it. Events:\n{lines}\n"
                f"Inspect with: kubectl -n {self.namespace} describe mpijob {self.name}")

    def _finish_run(self, status: str, cond: dict[str, Any] | None, force: bool = False) -> None:
        """Set the MLflow run's final status when the launcher could not (it normally does it itself)."""
        client = self._tracking
        if client is None:
            from mlflow.tracking import MlflowClient

            client = self._tracking = MlflowClient()
        try:
            current = client.get_run(self._run_id).info.status
            if cond is not None:
                client.set_tag(self._run_id, TAG_CONDITION, clip(describe_condition(cond)))
            if force and current != status or not RunStatus.is_terminated(RunStatus.from_string(current)):
                client.set_terminated(self._run_id, status)
        except Exception as exc:  # noqa: BLE001 - never hide the job's outcome behind a tracking hiccup
            log.warning("could not update MLflow run %s: %s", self._run_id, exc)

    def _wait_for_launcher_pod(self) -> dict[str, Any] | None:
        while True:
            pod = self.launcher_pod()
            phase = ((pod or {}).get("status") or {}).get("phase")
            if phase in ("Running", "Succeeded", "Failed"):
                return pod
            job = self._read_job()
            status, _ = status_from_conditions(((job or {}).get("status") or {}).get("conditions"))
            if job is None or RunStatus.is_terminated(RunStatus.from_string(status)):
                return pod if phase else None
            self._sleep(self.poll_interval)

    def _stream_quietly(self) -> None:
        try:
            self.stream_logs(follow=True)
        except Exception as exc:  # noqa: BLE001 - logs are a convenience; wait() decides the outcome
            log.warning("log streaming of %s/%s stopped: %s", self.namespace, self.name, exc)

    def leftovers(self) -> list[str]:
        """``kind/name`` of every object of this job still present (the MPIJob, its pods, Jobs, ConfigMaps, ...)."""
        from kubernetes.client import BatchV1Api, CoreV1Api

        core, batch = CoreV1Api(self._api_client), BatchV1Api(self._api_client)
        found: list[str] = []
        if self._read_job() is not None:
            found.append(f"mpijob/{self.name}")
        app = f"app={self.name}"
        lists = [
            ("pod", core.list_namespaced_pod, f"{OPERATOR_JOB_NAME_LABEL}={self.name}"),
            ("job", batch.list_namespaced_job, app),
            ("configmap", core.list_namespaced_config_map, app),
            ("secret", core.list_namespaced_secret, app),
            ("service", core.list_namespaced_service, app),
        ]
        for kind, fn, selector in lists:
            try:
                resp = self._call(fn, self.namespace, label_selector=selector, _preload_content=False,
                                  op=f"list {kind}s of {self.namespace}/{self.name}")
            except KubeApiError as exc:
                if exc.status == 403:  # least privilege (k8s/base/rbac.yaml) does not list Secrets: trust the GC
                    if kind not in self._unchecked:
                        self._unchecked.add(kind)
                        log.info("not allowed to list %ss in %s; not checking that none is left", kind,
                                 self.namespace)
                    continue
                raise ExecutionException(str(exc)) from None
            found += [f"{kind}/{i['metadata']['name']}" for i in _json(resp).get("items") or []]
        return found


def _worker_condition(problem: WorkerProblem, waited: float | None) -> dict[str, Any]:
    """The condition recorded on the run (``TAG_BACKEND_CONDITION``) for a worker that will not become ready."""
    from mlflow_anf.secrets import redact_text

    message = problem.describe() + (f" (for {waited:.0f}s)" if waited is not None else "")
    return {"type": "WorkerNotReady", "status": "True", "reason": problem.reason, "message": redact_text(message)}


def _json(resp: Any) -> dict[str, Any]:
    """Body of a ``_preload_content=False`` response as a dict (secrets' data is never printed from here)."""
    import json

    if isinstance(resp, dict):
        return resp
    data = resp.data if hasattr(resp, "data") else resp
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return json.loads(data) if data else {}


def _ts_key(stamp: str) -> str:
    """A kubelet log timestamp (RFC 3339 with up to 9 fractional digits, trailing zeros dropped) as a string that
    sorts like the time it names."""
    body = stamp[:-1] if stamp.endswith("Z") else stamp
    base, _, frac = body.partition(".")
    return f"{base}.{frac.ljust(9, '0')}"


def _iter_lines(resp: Any) -> Iterable[str]:
    """Lines of a streamed (``_preload_content=False``) log response."""
    buf = b""
    stream = resp.stream(amt=4096, decode_content=True) if hasattr(resp, "stream") else [resp.data]
    for chunk in stream:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode("utf-8", "replace")
    if buf:
        yield buf.decode("utf-8", "replace")
