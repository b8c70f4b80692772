"""Why a worker pod of an MPIJob will not become ready, read from its status as the kubelet and scheduler write it.

With ``launcherCreationPolicy: WaitForWorkersReady`` the MPI operator creates the launcher only once every worker is
Ready, never recreates a worker that failed or waits, and leaves the MPIJob ``Created`` (kubeflow/mpi-operator
pkg/controller/mpi_job_controller.go: launcher creation :676-684, getOrCreateWorker :1016-1023, updateMPIJobStatus
:1144-1158). So the submitter reads the workers itself while the job is ``Created``; :func:`worker_problem` says
whether a pod is stuck, and whether for good (the run fails at once) or possibly for a while (``grace``: the run
fails when it lasts longer than the backend's ``unschedulable_grace_seconds``):

* phase ``Failed`` (a crash at start with ``restartPolicy: Never``, an eviction): for good;
* a container waiting on ``CreateContainerConfigError`` (missing Secret/ConfigMap or key; kubernetes/kubernetes
  pkg/kubelet/kubelet_pods.go makeEnvironmentVariables), ``CreateContainerError``, ``InvalidImageName``,
  ``ErrImageNeverPull`` or ``CrashLoopBackOff``: for good;
* ``ErrImagePull`` whose message says the image does not exist (the registry's NotFound / manifest unknown): for
  good; any other pull error, and ``ImagePullBackOff`` (whose message is only ``Back-off pulling image "..."``,
  kubernetes/kubernetes pkg/kubelet/images/image_manager.go EnsureImageExists): with grace - unless the caller saw
  that pod's ``ErrImagePull`` say not found before (``pull_error``);
* ``PodScheduled=False`` with reason ``Unschedulable`` (e.g. not enough GPUs; pkg/scheduler/schedule_one.go
  handleSchedulingFailure): with grace (the cluster autoscaler may add a node).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FATAL_WAITING = frozenset({"CreateContainerConfigError", "CreateContainerError", "InvalidImageName",
                           "ErrImageNeverPull", "CrashLoopBackOff"})
PULL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff"})
_IMAGE_MISSING = re.compile(r"NotFound|not found|manifest unknown", re.IGNORECASE)


@dataclass(frozen=True)
class WorkerProblem:
    """A worker pod that is not becoming ready: its name, the kubelet's or scheduler's reason and message."""

    pod: str
    reason: str
    message: str
    grace: bool  # True: may clear by itself (fatal only once it lasts past the grace)

    def describe(self) -> str:
        return f"worker pod {self.pod}: {self.message}" if self.message else f"worker pod {self.pod}"


def _terminated_text(state: Mapping[str, Any]) -> str:
    text = f"exit code {state.get('exitCode')}"
    if state.get("message"):
        text += f": {str(state['message']).strip()}"
    return text


def _failed(name: str, status: Mapping[str, Any]) -> WorkerProblem:
    if status.get("reason"):
        return WorkerProblem(name, str(status["reason"]), str(status.get("message") or ""), False)
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return WorkerProblem(name, str(term.get("reason") or "Failed"),
                                 f"container {cs.get('name')} ended, {_terminated_text(term)}", False)
    return WorkerProblem(name, "Failed", str(status.get("message") or "pod failed"), False)


def worker_problem(pod: Mapping[str, Any], pull_error: str | None = None) -> WorkerProblem | None:
    """What keeps worker *pod* from becoming ready, or ``None`` (it is starting, running or ready). *pull_error*: the
    last ``ErrImagePull`` message seen for this pod (the kubelet alternates it with ``ImagePullBackOff``)."""
    name = str((pod.get("metadata") or {}).get("name") or "?")
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return _failed(name, status)
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason, message = str(waiting.get("reason") or ""), str(waiting.get("message") or "")
        if reason in FATAL_WAITING:
            last = (cs.get("lastState") or {}).get("terminated")
            if reason == "CrashLoopBackOff" and last:
                message = f"{message} (last run: {_terminated_text(last)})".strip()
            return WorkerProblem(name, reason, message, False)
        if reason in PULL_WAITING:
            if reason == "ImagePullBackOff" and pull_error and _IMAGE_MISSING.search(pull_error):
                return WorkerProblem(name, "ErrImagePull", pull_error, False)
            missing = reason == "ErrImagePull" and bool(_IMAGE_MISSING.search(message))
            return WorkerProblem(name, reason, message, not missing)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and str(cond.get("status")) == "False" and \
                cond.get("reason") == "Unschedulable":
            return WorkerProblem(name, "Unschedulable", str(cond.get("message") or ""), True)
    return None
