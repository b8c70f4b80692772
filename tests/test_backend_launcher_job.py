"""The launcher Job as Kubernetes' Job controller runs it under the MPI operator: ``backoffLimit`` retries the
launcher pod (kubernetes/kubernetes pkg/controller/job/job_controller.go), the operator only copies
``backoffLimit``/``activeDeadlineSeconds``/``ttlSecondsAfterFinished`` onto the launcher Job
(kubeflow/mpi-operator pkg/controller/mpi_job_controller.go newLauncherJob :1554-1577) and reports a failed Job with
the last failed pod's (here empty) reason (updateMPIJobFailedStatus :1202-1231)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.doubles.mpi_operator_sim import LauncherRun, wrapper_runner
from tests.test_backend_lifecycle import NS, make_config, submit

LAUNCHER_ROLE = "training.kubeflow.org/job-role=launcher"


@pytest.fixture
def namespace(k8s_objects: Any) -> str:
    k8s_objects.namespace(NS)
    return NS


def test_run_policy_goes_onto_the_launcher_job_only(k8s_server, k8s_objects, kubeconfig_path, namespace,
                                                    mlflow_store, sim_project, mpi_operator):
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, backoff_limit=2, active_deadline_seconds=600,
                      ttl_seconds_after_finished=3600)
    run = submit(cfg, mlflow_store, sim_project)
    assert run.wait() is True
    [job] = k8s_objects.list("Job", NS)
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"],
            job["spec"]["ttlSecondsAfterFinished"]) == (2, 600, 3600)
    for pod in k8s_objects.history("Pod", NS, f"{run.name}-worker-0"):
        assert "activeDeadlineSeconds" not in ((pod or {}).get("spec") or {})


def test_launcher_is_retried_up_to_backoff_limit(k8s_server, k8s_objects, kubeconfig_path, namespace,
                                                 mlflow_store, sim_project, mpi_operator):
    attempts: list[str] = []

    def flaky(launch: LauncherRun) -> int:
        attempts.append(launch.pod)
        if len(attempts) == 1:
            launch.stdout.write("first attempt: node lost\n")
            return 1
        return wrapper_runner(launch)

    mpi_operator.runner = flaky
    run = submit(make_config(kubeconfig_path, mlflow_store, sim_project, backoff_limit=1), mlflow_store, sim_project)
    assert run.wait() is True
    assert len(attempts) == 2 and attempts[0] != attempts[1]  # a new pod for the retry
    phases = sorted(p["status"]["phase"] for p in k8s_objects.list("Pod", NS, LAUNCHER_ROLE))
    assert phases == ["Failed", "Succeeded"]
    [job] = k8s_objects.list("Job", NS)
    assert job["status"]["failed"] == 1 and job["status"]["succeeded"] == 1
    assert mlflow_store.client().get_run(run.run_id).info.status == "FINISHED"


def test_launcher_failing_past_backoff_limit_fails_job_with_operator_reason(k8s_server, k8s_objects,
                                                                           kubeconfig_path, namespace,
                                                                           mlflow_store, sim_project, mpi_operator):
    run = submit(make_config(kubeconfig_path, mlflow_store, sim_project, backoff_limit=1), mlflow_store, sim_project,
                 fail=3)
    assert run.wait() is False
    assert len(k8s_objects.list("Pod", NS, LAUNCHER_ROLE)) == 2
    job = k8s_objects.get("MPIJob", NS, run.name)
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded/"
    assert failed["message"] == "Job has reached the specified backoff limit: "
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FAILED"


def test_active_deadline_fails_the_launcher_job_and_the_run(k8s_server, k8s_objects, kubeconfig_path, namespace,
                                                            mlflow_store, sim_project, mpi_operator):
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, active_deadline_seconds=1)
    run = submit(cfg, mlflow_store, sim_project, sleep=60)
    assert run.wait() is False
    mpi_operator.wait_idle()
    job = k8s_objects.get("MPIJob", NS, run.name)
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == ("DeadlineExceeded", "Job was active longer than specified deadline")
    assert job["status"].get("completionTime")
    assert k8s_objects.list("Pod", NS, LAUNCHER_ROLE) == []  # the Job controller deleted its active pod
    [launcher_job] = k8s_objects.list("Job", NS)
    assert launcher_job["status"]["conditions"][0]["reason"] == "DeadlineExceeded"
    info = mlflow_store.client().get_run(run.run_id)
    # the launcher, stopped by SIGTERM, closes the run KILLED; the job failed, so the run is FAILED
    assert info.info.status == "FAILED"
    assert info.data.tags["mlflow_anf.backend.condition"] == (
        "Failed (DeadlineExceeded): Job was active longer than specified deadline")


def test_ttl_after_finished_removes_the_launcher_job_only(k8s_server, k8s_objects, kubeconfig_path, namespace,
                                                          mlflow_store, sim_project, mpi_operator):
    import time

    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, ttl_seconds_after_finished=0,
                      clean_pod_policy="None")
    run = submit(cfg, mlflow_store, sim_project)
    assert run.wait() is True
    deadline = time.monotonic() + 10
    while k8s_objects.list("Job", NS) or k8s_objects.list("Pod", NS, LAUNCHER_ROLE):
        assert time.monotonic() < deadline, "the TTL controller never removed the launcher Job"
        time.sleep(0.02)
    assert k8s_objects.get("MPIJob", NS, run.name) is not None  # the MPIJob stays, Succeeded
    assert len(k8s_objects.list("Pod", NS, "training.kubeflow.org/job-role=worker")) == 2  # workers stay
    assert run.get_status() == "FINISHED"
    assert mlflow_store.client().get_run(run.run_id).info.status == "FINISHED"
    run.cancel()
