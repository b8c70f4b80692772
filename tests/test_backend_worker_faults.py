"""Workers that never become ready, against the simulated MPI operator as kubeflow/mpi-operator v2beta1 behaves.

With ``launcherCreationPolicy: WaitForWorkersReady`` (the backend's default) the operator creates the launcher only
once every worker is Ready, never recreates a worker that failed or waits, and leaves the MPIJob ``Created``
(kubeflow/mpi-operator pkg/controller/mpi_job_controller.go:676-684, :1016-1023, :1144-1158). Without help the
submitter would wait for ever; these tests show it ends the run FAILED with the pod's reason, cancels the job and
leaves nothing behind, and that ``wait()`` has an overall deadline.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import pytest

from mlflow_anf.backend.submitted_run import worker_problem
from mlflow_anf.vocabulary import TAG_BACKEND_CONDITION
from tests.doubles.mpi_operator_sim import launcher_env
from tests.test_backend_lifecycle import KINDS_OWNED, NS, make_config, owned_objects, submit

WORKER_ROLE = "training.kubeflow.org/job-role=worker"


@pytest.fixture
def namespace(k8s_objects: Any) -> str:
    k8s_objects.namespace(NS)
    return NS


def wait_bounded(run: Any, limit: float = 30.0) -> bool:
    """``run.wait()`` in a thread: the test fails (instead of hanging) when it does not return within *limit*."""
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            result["ok"] = run.wait()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["exc"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"wait() still blocked after {limit:g}s: the run hangs on a worker never ready"
    if "exc" in result:
        raise result["exc"]
    return result["ok"]


def wait_for(pred: Any, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not pred():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


# --- the double ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["crash", "image-not-found", "unschedulable"])
def test_sim_worker_never_ready_keeps_job_created_without_launcher(fault, k8s_server, k8s_objects, kubeconfig_path,
                                                                   namespace, mlflow_store, sim_project,
                                                                   mpi_operator):
    mpi_operator.behave("*", worker_fault=fault)
    run = submit(make_config(kubeconfig_path, mlflow_store, sim_project, wait_timeout_seconds=3), mlflow_store,
                 sim_project)
    wait_for(lambda: any((p.get("status") or {}).get("containerStatuses") or (p.get("status") or {}).get(
        "phase") == "Failed" or any(c.get("reason") == "Unschedulable" for c in (p.get("status") or {}).get(
            "conditions") or []) for p in k8s_objects.list("Pod", NS, WORKER_ROLE)))
    time.sleep(0.3)  # the operator's next syncs change nothing
    job = k8s_objects.get("MPIJob", NS, run.name)
    assert [c["type"] for c in job["status"]["conditions"]] == ["Created"]
    assert "completionTime" not in job["status"]
    assert k8s_objects.list("Job", NS) == []  # no launcher until every worker is Ready
    workers = k8s_objects.list("Pod", NS, WORKER_ROLE)
    assert [p["metadata"]["name"] for p in workers] == [f"{run.name}-worker-0", f"{run.name}-worker-1"]
    creates = [v for v in k8s_objects.history("Pod", NS, f"{run.name}-worker-1") if v is None]
    assert not creates  # never deleted and recreated
    run.cancel()


def test_sim_service_and_launcher_env_as_the_operator_sets_them(k8s_server, k8s_objects, kubeconfig_path, namespace,
                                                                mlflow_store, sim_project, mpi_operator):
    run = submit(make_config(kubeconfig_path, mlflow_store, sim_project), mlflow_store, sim_project)
    assert run.wait() is True
    [svc] = k8s_objects.list("Service", NS) or [None]
    if svc is not None:  # cleaned up with the job otherwise
        assert svc["spec"]["publishNotReadyAddresses"] is False  # only with runLauncherAsWorker
    launcher = k8s_objects.list("Pod", NS, "training.kubeflow.org/job-role=launcher")[0]
    env = {e["name"]: e.get("value") for e in launcher["spec"]["containers"][0]["env"]}
    assert env["HYDRA_HOST_FILE"] == "/etc/mpi/hostfile"
    assert env["HYDRA_LAUNCH_EXTRA_ARGS"] == "-o ConnectionAttempts=10"
    assert "NVIDIA_VISIBLE_DEVICES" in env and env["NVIDIA_VISIBLE_DEVICES"] in (None, "")
    ompi = {e["name"]: e.get("value") for e in launcher_env({"slotsPerWorker": 4})}
    assert ompi["OMPI_MCA_orte_default_hostfile"] == "/etc/mpi/hostfile"
    assert ompi["OMPI_MCA_orte_keep_fqdn_hostnames"] == "true" and ompi["OMPI_MCA_orte_set_default_slots"] == "4"
    assert "NVIDIA_VISIBLE_DEVICES" not in {e["name"] for e in launcher_env({"runLauncherAsWorker": True})}


# --- the fix -----------------------------------------------------------------------------------------------------------
FAULTS = {
    "crash": ("Error", "exit code 1"),
    "missing-secret": ("CreateContainerConfigError", 'secret "hf-token" not found'),
    "missing-key": ("CreateContainerConfigError", "couldn't find key token in Secret lane/hf-token"),
    "image-not-found": ("ErrImagePull", "not found"),
    "unschedulable": ("Unschedulable", "Insufficient nvidia.com/gpu"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_worker_never_ready_fails_run_cancels_job_leaves_nothing(fault, k8s_server, k8s_objects, kubeconfig_path,
                                                                 namespace, mlflow_store, sim_project,
                                                                 mpi_operator):
    over: dict[str, Any] = {"unschedulable_grace_seconds": 0.5}
    if fault in ("missing-secret", "missing-key"):
        over["secret_env"] = {"HF_TOKEN": {"secret": "hf-token", "key": "token"}}
        if fault == "missing-key":
            k8s_objects.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token", "namespace": NS},
                                "data": {"other": base64.b64encode(b"x").decode()}})
    else:
        mpi_operator.behave("*", worker_fault=fault)
    run = submit(make_config(kubeconfig_path, mlflow_store, sim_project, **over), mlflow_store, sim_project)
    assert wait_bounded(run) is False
    assert run.get_status() == "FAILED"
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FAILED"
    reason, text = FAULTS[fault]
    tag = info.data.tags[TAG_BACKEND_CONDITION]
    if fault == "image-not-found":  # whichever of the kubelet's two states the poll saw last
        assert "ErrImagePull" in tag or "ImagePullBackOff" in tag, tag
        assert "registry.example.com/lanedet:0.1.0" in tag
    else:
        assert f"({reason})" in tag and text in tag, tag
    assert f"{run.name}-worker-" in tag
    left = owned_objects(k8s_objects)
    if fault == "missing-key":  # the test's own Secret, not the job's
        left["Secret"].remove("hf-token")
    assert left == {kind: [] for kind in KINDS_OWNED}


def test_unschedulable_within_grace_keeps_waiting(k8s_server, k8s_objects, kubeconfig_path, namespace, mlflow_store,
                                                  sim_project, mpi_operator):
    mpi_operator.behave("*", worker_fault="unschedulable")
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, unschedulable_grace_seconds=600,
                      wait_timeout_seconds=2)
    run = submit(cfg, mlflow_store, sim_project)
    started = time.monotonic()
    assert wait_bounded(run) is False
    assert time.monotonic() - started >= 1.5  # not failed on the first sight of Unschedulable
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FAILED"
    assert info.data.tags[TAG_BACKEND_CONDITION].startswith("WaitTimeout")
    assert owned_objects(k8s_objects) == {kind: [] for kind in KINDS_OWNED}


def test_wait_has_an_overall_deadline(k8s_server, k8s_objects, kubeconfig_path, namespace, mlflow_store,
                                      sim_project, mpi_operator):
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, wait_timeout_seconds=1.5)
    run = submit(cfg, mlflow_store, sim_project, sleep=60)
    assert wait_bounded(run) is False
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FAILED"
    assert "did not end within 1.5s" in info.data.tags[TAG_BACKEND_CONDITION]
    assert owned_objects(k8s_objects) == {kind: [] for kind in KINDS_OWNED}
    mpi_operator.wait_idle()


@pytest.mark.parametrize("field", ["wait_timeout_seconds", "unschedulable_grace_seconds"])
def test_bad_wait_settings_name_the_field(field, kubeconfig_path, mlflow_store, sim_project):
    from mlflow_anf.backend.config import MPIJobBackendConfig

    with pytest.raises(Exception, match=field):
        MPIJobBackendConfig.model_validate(make_config(kubeconfig_path, mlflow_store, sim_project, **{field: -1}))


# --- the classification, on pod statuses as the kubelet and scheduler write them ---------------------------------------
def _pod(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "j-worker-0"}, "status": status}


def _waiting(reason: str, message: str) -> dict[str, Any]:
    return _pod({"phase": "Pending", "containerStatuses": [{"name": "worker", "state": {
        "waiting": {"reason": reason, "message": message}}}]})


@pytest.mark.parametrize(("pod", "expected"), [
    (_pod({"phase": "Pending"}), None),
    (_pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}), None),
    (_waiting("ContainerCreating", ""), None),
    (_waiting("CreateContainerConfigError", 'configmap "c" not found'), ("CreateContainerConfigError", False)),
    (_waiting("InvalidImageName", "bad"), ("InvalidImageName", False)),
    (_waiting("ErrImagePull", 'rpc error: code = NotFound desc = failed to pull "x": not found'),
     ("ErrImagePull", False)),
    (_waiting("ErrImagePull", "rpc error: code = Unknown desc = i/o timeout"), ("ErrImagePull", True)),
    (_waiting("ImagePullBackOff", 'Back-off pulling image "x"'), ("ImagePullBackOff", True)),
    (_waiting("CrashLoopBackOff", "back-off 10s restarting failed container"), ("CrashLoopBackOff", False)),
    (_pod({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}), ("Evicted", False)),
    (_pod({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                               "message": "0/3 nodes"}]}), ("Unschedulable", True)),
])
def test_worker_problem_classification(pod, expected):
    problem = worker_problem(pod)
    assert (None if problem is None else (problem.reason, problem.grace)) == expected


def test_back_off_after_a_not_found_pull_is_for_good():
    """The kubelet alternates ErrImagePull (with the registry's error) and ImagePullBackOff (without it): a poll that
    saw the first knows the second will not clear."""
    backoff = _waiting("ImagePullBackOff", 'Back-off pulling image "x"')
    problem = worker_problem(backoff, 'rpc error: code = NotFound desc = failed to pull and unpack image "x": not found')
    assert problem is not None and (problem.reason, problem.grace) == ("ErrImagePull", False)
    assert "not found" in problem.message
    timeout = worker_problem(backoff, "rpc error: code = Unknown desc = dial tcp: i/o timeout")
    assert timeout is not None and timeout.grace
