"""The ``mpijob`` backend end to end against the Kubernetes API emulator and the simulated MPI operator.

The launcher container is the real ``mlflow_anf.backend.launcher`` wrapper, run in-process by the simulator with
the container's env; it starts the entry point on 2 processes with MPICH's ``mpirun`` and closes the MLflow run.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import ExecutionException

from mlflow_anf.backend.plugin import MPIJobBackend
from mlflow_anf.backend.submitted_run import MPIJobSubmitTimeout, status_from_conditions
from tests.doubles.mpi_operator_sim import LauncherRun, wrapper_runner
from tests.support.snapshot_tags import snapshot_fields

NS = "lane"
KINDS_OWNED = ("Pod", "Job", "ConfigMap", "Secret", "Service", "MPIJob")


@pytest.fixture
def namespace(k8s_objects: Any) -> str:
    k8s_objects.namespace(NS)
    return NS


def make_config(kubeconfig: Path, store: Any, project: Path, **over: Any) -> dict[str, Any]:
    cfg = {
        "namespace": NS, "kubeconfig": str(kubeconfig), "image": "registry.example.com/lanedet:0.1.0",
        "processes": 2, "gpus_per_process": 0, "launcher": "mpirun", "mpi_implementation": "MPICH",
        "tracking_uri": store.uri, "project_dir": str(project), "data_pvc": "tusimple-data",
        "poll_interval_seconds": 0.05, "submit_timeout_seconds": 5, "cancel_timeout_seconds": 10,
        "api_backoff_seconds": 0.01,
    }
    cfg.update(over)
    return cfg


def submit(cfg: dict[str, Any], store: Any, project: Path, out: Any = None, **params: Any) -> Any:
    return MPIJobBackend(out=out).run(str(project), "train", {k: str(v) for k, v in params.items()}, None, cfg,
                                      store.uri, store.experiment_id)


def owned_objects(k8s_objects: Any) -> dict[str, list[str]]:
    return {kind: [o["metadata"]["name"] for o in k8s_objects.list(kind, NS)] for kind in KINDS_OWNED}


def read_artifact(store: Any, run_id: str, path: str, tmp_path: Path) -> str:
    local = store.client().download_artifacts(run_id, path, str(tmp_path / f"dl-{path.replace('/', '_')}"))
    return Path(local).read_text()


def test_success_finishes_run_with_log_artifact(k8s_server, k8s_objects, kubeconfig_path, namespace,
                                                mlflow_store, sim_project, mpi_operator, tmp_path):
    def runner(launch: LauncherRun) -> int:
        # the first followed log stream breaks after this line; carry on once the submitter has reconnected
        launch.stdout.write("launcher pod started\n")
        deadline = time.monotonic() + 20
        while mpi_operator.followed_logs < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return wrapper_runner(launch)

    mpi_operator.runner = runner
    mpi_operator.drop_log_streams = 1
    out = io.StringIO()
    run = submit(make_config(kubeconfig_path, mlflow_store, sim_project), mlflow_store, sim_project, out=out,
                 epochs=3)
    assert run.wait(follow_logs=True) is True
    assert run.get_status() == "FINISHED"
    client = mlflow_store.client()
    info = client.get_run(run.run_id)
    assert info.info.status == "FINISHED"
    assert info.data.params["epochs"] == "3"
    assert info.data.tags["mlflow_anf.launcher.exit_code"] == "0"
    assert info.data.tags["mlflow_anf.backend.mpijob"] == f"{NS}/{run.name}"
    assert "mlflow_anf.backend.snapshot_roles" not in info.data.tags  # no snapshots configured
    recorded = json.loads(read_artifact(mlflow_store, run.run_id, "mlflow_anf/backend-config.json", tmp_path))
    assert recorded == json.loads(info.data.tags["mlflow_anf.backend.config"])
    assert recorded["processes"] == 2 and recorded["namespace"] == NS
    log = read_artifact(mlflow_store, run.run_id, "launcher.log", tmp_path)
    for rank in (0, 1):
        assert f"rank {rank}/2 training 3 epochs on /mnt/tusimple run={run.run_id}" in log
    assert "exit code 0" in log
    # the launcher's log was streamed to the submitter while waiting, once, despite a dropped connection
    assert out.getvalue().count("launcher pod started") == 1 and out.getvalue().count("rank 0 done") == 1
    assert "Succeeded (MPIJobSucceeded)" in out.getvalue()
    assert mpi_operator.followed_logs == 2
    job = k8s_objects.get("MPIJob", NS, run.name)
    status, cond = status_from_conditions(job["status"]["conditions"])
    assert (status, cond["reason"]) == ("FINISHED", "MPIJobSucceeded")
    # cleanPodPolicy Running removed the workers; the launcher pod stays for its logs
    assert [p["metadata"]["labels"]["training.kubeflow.org/job-role"] for p in k8s_objects.list("Pod", NS)] == [
        "launcher"]


def test_launcher_failure_fails_run(k8s_server, k8s_objects, kubeconfig_path, namespace,
                                    mlflow_store, sim_project, mpi_operator, tmp_path):
    run = submit(make_config(kubeconfig_path, mlflow_store, sim_project), mlflow_store, sim_project, fail=3)
    assert run.wait() is False
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FAILED"
    assert info.data.tags["mlflow_anf.launcher.exit_code"] == "3"
    # the operator appends the last failed launcher pod's status.reason, empty for a container that exited 1
    # (kubeflow/mpi-operator mpi_job_controller.go updateMPIJobFailedStatus :1202-1231); the exit code tag above
    # is what says why
    assert info.data.tags["mlflow_anf.backend.condition"] == (
        "Failed (BackoffLimitExceeded/): Job has reached the specified backoff limit: ")
    log = read_artifact(mlflow_store, run.run_id, "launcher.log", tmp_path)
    assert "rank 1 fails with 3" in log
    assert run.get_status() == "FAILED"


def test_worker_eviction_is_failed_without_completion_and_the_launcher_runs_on(k8s_server, k8s_objects,
                                                                              kubeconfig_path, namespace,
                                                                              mlflow_store, sim_project,
                                                                              mpi_operator):
    """The double, as kubeflow/mpi-operator v2beta1 does it (pkg/controller/mpi_job_controller.go:1144-1163,
    :622-633): an evicted worker is never replaced, the job gets Failed/MPIJobEvicted without completionTime, and
    nothing stops the launcher or cleans the pods (that needs a completionTime). (This replaces a test of a
    ``Restarting`` condition and a replaced worker, which the v2 controller never does.)"""
    release = threading.Event()
    seen: dict[str, Any] = {}

    def runner(launch: LauncherRun) -> int:
        release.wait(20)
        seen["killed"] = launch.killed.is_set()
        return 0

    mpi_operator.runner = runner
    mpi_operator.behave("*", evict_worker=1)
    run = submit(make_config(kubeconfig_path, mlflow_store, sim_project), mlflow_store, sim_project)
    deadline = time.monotonic() + 20
    while True:
        job = k8s_objects.get("MPIJob", NS, run.name)
        conds = {c["type"]: c for c in (job.get("status") or {}).get("conditions") or []}
        if "Failed" in conds:
            break
        assert time.monotonic() < deadline, "never evicted"
        time.sleep(0.02)
    time.sleep(0.2)  # later syncs change nothing
    job = k8s_objects.get("MPIJob", NS, run.name)
    conds = {c["type"]: c for c in job["status"]["conditions"]}
    assert (conds["Failed"]["status"], conds["Failed"]["reason"]) == ("True", "MPIJobEvicted")
    assert conds["Running"]["status"] == "False"
    assert "completionTime" not in job["status"]
    evicted = k8s_objects.get("Pod", NS, f"{run.name}-worker-1")
    assert (evicted["status"]["phase"], evicted["status"]["reason"]) == ("Failed", "Evicted")
    assert None not in k8s_objects.history("Pod", NS, f"{run.name}-worker-1")  # never deleted nor replaced
    launcher = k8s_objects.list("Pod", NS, "training.kubeflow.org/job-role=launcher")[0]
    assert launcher["status"]["phase"] == "Running"
    assert k8s_objects.get("Pod", NS, f"{run.name}-worker-0")["status"]["phase"] == "Running"
    release.set()
    mpi_operator.wait_idle()
    assert seen == {"killed": False}
    run.cancel()


def test_worker_eviction_fails_run_and_removes_the_job_whose_launcher_runs_on(k8s_server, k8s_objects,
                                                                            kubeconfig_path, namespace,
                                                                            mlflow_store, sim_project,
                                                                            mpi_operator):
    seen: dict[str, Any] = {}

    def launcher_running_on(launch: LauncherRun) -> int:
        launch.stdout.write("training...\n")
        seen["killed"] = launch.killed.wait(15)  # the operator does not stop it; only deleting the job does
        return 137 if seen["killed"] else 0

    mpi_operator.runner = launcher_running_on
    mpi_operator.behave("*", evict_worker=0, evict_after=0.5)  # once the job is Running
    run = submit(make_config(kubeconfig_path, mlflow_store, sim_project), mlflow_store, sim_project)
    assert run.wait() is False
    assert seen.get("killed") is True  # wait() removed the job before returning
    assert owned_objects(k8s_objects) == {kind: [] for kind in KINDS_OWNED}
    mpi_operator.wait_idle()
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FAILED"  # set by the submitter from the job's condition
    assert info.data.tags["mlflow_anf.backend.condition"] == "Failed (MPIJobEvicted): 1/2 workers are evicted"


def test_cancel_deletes_in_foreground_and_leaves_nothing(k8s_server, k8s_objects, kubeconfig_path,
                                                         namespace, mlflow_store, sim_project, mpi_operator):
    run = submit(make_config(kubeconfig_path, mlflow_store, sim_project), mlflow_store, sim_project, sleep=30)
    deadline = time.monotonic() + 10
    while run.get_status() != "RUNNING":
        assert time.monotonic() < deadline, "the job never ran"
        time.sleep(0.05)
    before = owned_objects(k8s_objects)
    assert before["Pod"] and before["Job"] and before["ConfigMap"] and before["Secret"] and before["Service"]
    mark = k8s_server.mark()
    # the submitter's least-privilege Role may not list Secrets: cancel checks everything else
    k8s_server.fail_next(f"/api/v1/namespaces/{NS}/secrets", method="GET", status=403, count=100)
    run.cancel()
    assert owned_objects(k8s_objects) == {kind: [] for kind in KINDS_OWNED}
    assert any(r.plural == "secrets" and r.status == 403 for r in k8s_server.requests(mark))
    deletes = [r for r in k8s_server.requests(mark) if r.method == "DELETE"]
    assert [(r.plural, r.name) for r in deletes] == [("mpijobs", run.name)]
    bodies = k8s_server.call(lambda: [r.data for r in k8s_server._api()._requests
                                      if str(r.method).upper().endswith("DELETE")])
    assert bodies[-1]["propagationPolicy"] == "Foreground"
    mpi_operator.wait_idle()
    assert mlflow_store.client().get_run(run.run_id).info.status == "KILLED"
    assert run.get_status() == "KILLED"


@pytest.mark.parametrize("case", ["rejected", "no-operator"])
def test_no_created_condition_times_out_with_events(case, k8s_server, k8s_objects, kubeconfig_path,
                                                    namespace, mlflow_store, sim_project, mpi_operator):
    if case == "rejected":
        mpi_operator.behave("*", validation_error="spec.mpiReplicaSpecs[Worker].template: quota 'gpu' exceeded")
    else:
        mpi_operator.behave("*", ignore=True)
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, submit_timeout_seconds=0.6)
    run = submit(cfg, mlflow_store, sim_project)
    with pytest.raises(MPIJobSubmitTimeout) as err:
        run.wait()
    text = str(err.value)
    assert f"MPIJob {NS}/{run.name} got no Created condition within 0.6s" in text
    if case == "rejected":
        assert "Warning ValidationError: Found validation errors: spec.mpiReplicaSpecs[Worker].template: quota " \
               "'gpu' exceeded" in text
    else:
        assert "no events: is the MPI operator installed" in text
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FAILED"
    assert "got no Created condition" in info.data.tags["mlflow_anf.backend.condition"]


def test_api_faults_are_retried_and_watch_expiry_rereads(k8s_server, k8s_objects, kubeconfig_path,
                                                         namespace, mlflow_store, sim_project, mpi_operator):
    mpijobs = f"/apis/kubeflow.org/v2beta1/namespaces/{NS}/mpijobs"
    k8s_server.fail_next(mpijobs, method="POST", status=503, count=1)
    mark = k8s_server.mark()

    def runner(launch: LauncherRun) -> int:
        # while the job runs: an expired watch (410), whose re-list gets a 429 with Retry-After, and a dropped
        # connection on the watch after it (mlflow_anf.k8s.follow re-lists and watches again)
        k8s_server.fail_next(mpijobs, method="GET", verb="list", status=429, retry_after=0, count=1)
        k8s_server.reset_next(mpijobs, method="GET", verb="watch", count=1)
        k8s_server.expire_watches()
        return wrapper_runner(launch)

    mpi_operator.runner = runner
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project)
    backend = MPIJobBackend()
    run = backend.run(str(sim_project), "train", {}, None, cfg, mlflow_store.uri, mlflow_store.experiment_id)
    assert run.wait() is True
    records = k8s_server.requests(mark)
    creates = [r for r in records if r.method == "POST" and r.plural == "mpijobs"]
    assert [r.status for r in creates] == [503, 201]
    assert any(r.status == 429 and r.verb == "list" for r in records)
    assert any(r.reset and r.verb == "watch" for r in records)
    watches = [r for r in records if r.verb == "watch"]
    assert all(r.query.get("resourceVersion") for r in watches)  # every watch resumes from a version
    assert mlflow_store.client().get_run(run.run_id).info.status == "FINISHED"


def test_create_failing_for_good_fails_run_and_leaves_nothing(k8s_server, k8s_objects,
                                                              kubeconfig_path, namespace, mlflow_store,
                                                              sim_project, mpi_operator):
    mpijobs = f"/apis/kubeflow.org/v2beta1/namespaces/{NS}/mpijobs"
    k8s_server.fail_next(mpijobs, method="POST", status=500, count=10)
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project)
    with pytest.raises(ExecutionException, match=r"not submitted: create MPIJob lane/sim-lanedet-\w+: HTTP 500"):
        submit(cfg, mlflow_store, sim_project)
    runs = mlflow_store.client().search_runs([mlflow_store.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "HTTP 500" in runs[0].data.tags["mlflow_anf.backend.error"]
    assert owned_objects(k8s_objects)["MPIJob"] == []


def test_data_and_model_snapshots_are_recorded_on_the_run(k8s_server, k8s_objects, kubeconfig_path,
                                                          namespace, mlflow_store, sim_project, mpi_operator,
                                                          snapshot_controller):
    k8s_objects.snapshot_class("anf-snapclass", default=True)
    k8s_objects.pvc("tusimple-data", NS, size="100Gi")
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, snapshot={"data": True, "model": True})
    run = submit(cfg, mlflow_store, sim_project)
    # the data snapshot exists before the job is created
    history = k8s_server.requests()
    first_snapshot = next(i for i, r in enumerate(history) if r.plural == "volumesnapshots" and r.is_write)
    first_job = next(i for i, r in enumerate(history) if r.plural == "mpijobs" and r.is_write)
    assert first_snapshot < first_job
    assert run.wait() is True
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FINISHED"
    tags = snapshot_fields(info.data.tags)
    assert tags["mlflow_anf.backend.snapshot_roles"] == "data,model"  # what the training side must not take again
    snaps = {s["metadata"]["name"]: s for s in k8s_objects.list("VolumeSnapshot", NS)}
    assert {tags["mlflow_anf.snapshot.data.name"], tags["mlflow_anf.snapshot.model.name"]} == set(snaps)
    for role in ("data", "model"):
        snap = snaps[tags[f"mlflow_anf.snapshot.{role}.name"]]
        assert tags[f"mlflow_anf.snapshot.{role}.provider"] == "csi"
        assert tags[f"mlflow_anf.snapshot.{role}.volume"] == f"{NS}/tusimple-data"
        assert snap["metadata"]["labels"]["mlflow-anf/run-id"] == run.run_id
        assert snap["metadata"]["labels"]["mlflow-anf/role"] == role
        assert snap["status"]["readyToUse"] is True
    # the dataset is named by the volume (the PVC), not by the snapshot's time
    assert [d.dataset.name for d in info.inputs.dataset_inputs] == ["tusimple-data"]


def test_failed_model_snapshot_fails_the_run(k8s_server, k8s_objects, kubeconfig_path, namespace,
                                             mlflow_store, sim_project, mpi_operator, snapshot_controller):
    k8s_objects.snapshot_class("anf-snapclass", default=True)
    k8s_objects.pvc("tusimple-data", NS)
    # a persistent error: the launcher waits for readyToUse until the snapshot timeout (the controller retries)
    snapshot_controller.behave("*", error="Failed to check and update snapshot content: ANF quota exceeded")
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, snapshot={"model": True, "timeout_seconds": 2})
    run = submit(cfg, mlflow_store, sim_project)
    assert run.wait() is False
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FAILED"
    assert info.data.tags["mlflow_anf.launcher.exit_code"] == "3"
    assert "ANF quota exceeded" in info.data.tags["mlflow_anf.launcher.error"]
    assert "mlflow_anf.snapshot.model.name" not in snapshot_fields(info.data.tags)


def test_ctrl_c_while_waiting_cancels_the_job(k8s_server, k8s_objects, kubeconfig_path, namespace,
                                              mlflow_store, sim_project, mpi_operator, request):
    import os
    import signal
    import threading

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + 60  # a loaded 2-core machine can take a while to start the launcher
        while time.monotonic() < deadline:
            pods = k8s_objects.list("Pod", NS, "training.kubeflow.org/job-role=launcher")
            if pods and (pods[0].get("status") or {}).get("phase") == "Running":
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in `mlflow run` does
                return
            time.sleep(0.05)

    # Python turns SIGINT into KeyboardInterrupt only where it was not ignored at start, and a shell starts background
    # jobs with SIGINT ignored (`make test &`): give this test the interactive behaviour it simulates
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    threading.Thread(target=interrupt_once_running, daemon=True).start()
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, wait=True)
    with pytest.raises(KeyboardInterrupt):
        submit(cfg, mlflow_store, sim_project, sleep=120)  # does not end by itself before the Ctrl-C
    assert owned_objects(k8s_objects) == {kind: [] for kind in KINDS_OWNED}
    mpi_operator.wait_idle()
    [run] = mlflow_store.client().search_runs([mlflow_store.experiment_id])
    assert run.info.status == "KILLED"


@pytest.mark.parametrize(("given", "expected"), [(None, "true"), ("true", "true"), ("false", "false")])
def test_backend_passes_the_entry_points_snapshot_switch_through(k8s_server, k8s_objects, kubeconfig_path,
                                                           namespace, mlflow_store, sim_project, mpi_operator,
                                                           snapshot_controller, tmp_path, caplog, given, expected):
    """With snapshot.data/model in the backend config the entry point's enable_snapshot is not rewritten (the
    training side skips a role the run already has recorded): its default or the value given reaches the pods,
    without a warning; the backend's data snapshot is on the run under the plan's name."""
    mlproject = sim_project / "MLproject"
    mlproject.write_text(mlproject.read_text()
                         .replace('enable_snapshot: {type: string, default: "false"}',
                                  'enable_snapshot: {type: string, default: "true"}')
                         .replace("--sleep {sleep}", "--sleep {sleep} --enable-snapshot {enable_snapshot}"))
    k8s_objects.snapshot_class("anf-snapclass", default=True)
    k8s_objects.pvc("tusimple-data", NS)
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, snapshot={"data": True})
    params = {} if given is None else {"enable_snapshot": given}
    with caplog.at_level("WARNING", logger="mlflow_anf"):
        run = submit(cfg, mlflow_store, sim_project, **params)
    assert run.wait() is True
    info = mlflow_store.client().get_run(run.run_id)
    assert info.data.params["enable_snapshot"] == expected
    assert f"--enable-snapshot {expected}" in read_artifact(mlflow_store, run.run_id, "mlflow_anf/mpijob.yaml", tmp_path)
    assert "taken twice" not in caplog.text
    assert f"tusimple-data-data-{run.run_id[:8]}" in info.data.tags.values() or any(
        f"tusimple-data-data-{run.run_id[:8]}" in v for v in info.data.tags.values())
