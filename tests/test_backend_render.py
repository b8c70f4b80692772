"""Rendering of the MPIJob and its helpers, the launcher's command lines, and the condition → status mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlflow_anf.backend.config import MPIJobBackendConfig, load_backend_config
from mlflow_anf.backend.launcher import (
    LauncherError,
    Redactor,
    build_command,
    command_argv,
    parse_args,
    read_hostfile,
)
from mlflow_anf.backend.render import (
    JobRequest,
    job_name_for,
    launcher_args,
    render_manifests,
    render_mpijob,
)
from mlflow_anf.backend.submitted_run import status_from_conditions
from tests.doubles.k8s_schemas import validate_builtin, validate_crd_object

CANARY = "canary-2b7e151628aed2a6"
RUN_ID = "0123456789abcdef0123456789abcdef"
BASE = {"namespace": "lane-detection", "image": "registry.example.com/lanedet-train@sha256:" + "a" * 64}
REQ = JobRequest(run_id=RUN_ID, experiment_id="7", tracking_uri="http://mlflow.lane-detection.svc:5000",
                 command="python -m mlflow_anf_lanedet.cli train --data-dir /mnt/tusimple --epochs 30 --batch-size 33",
                 entry_point="train", project_name="lanedet-scnn", model_path="models/model")

CONFIGS: dict[str, dict[str, Any]] = {
    "minimal": {},
    # the seed's `runai submit-mpi --processes=3 --gpu 1 --large-shm --pvc ...:/mnt -e ...`
    "seed-runai": {"namespace": "runai-lane-detection", "scheduler": "runai", "runai_project": "lane-detection",
                   "processes": 3, "gpus_per_process": 1, "data_pvc": "pvc-download-tusimple-data-0",
                   "data_mount_path": "/mnt", "shm_size": "16Gi",
                   "env": {"USE_WORKERS": "true", "NUM_WORKERS": "4", "BATCH_SIZE": "33", "USE_VAL": "false",
                           "VAL_BATCH_SIZE": "99", "ENABLE_SNAPSHOT": "true",
                           "PVC_NAME": "pvc-download-tusimple-data-0"}},
    "aks-gpu-pool": {"processes": 8, "slots_per_worker": 4, "gpus_per_process": 1, "cpu": "20", "memory": "200Gi",
                     "data_pvc": "tusimple-data", "node_selector": {"agentpool": "gpupool"},
                     "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
                                     {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                      "effect": "NoExecute", "tolerationSeconds": 60}],
                     "service_account": "mlflow-anf-launcher", "priority_class": "gpu-training",
                     "image_pull_secrets": ["acr-pull"], "labels": {"team": "perception"},
                     "annotations": {"example.com/owner": "lane team"},
                     "secret_env": {"MLFLOW_TRACKING_TOKEN": {"secret": "mlflow-token", "key": "token"},
                                    "AZURE_CLIENT_SECRET": {"secret": "anf-sp", "key": "clientSecret",
                                                            "optional": True}},
                     "snapshot": {"data": True, "model": True, "snapshot_class": "netapp-csi-snapclass"},
                     "ttl_seconds_after_finished": 3600, "active_deadline_seconds": 86400, "backoff_limit": 2,
                     "clean_pod_policy": "All", "launcher_creation_policy": "AtStartup", "shm_size": None},
    "mpich-no-gpu": {"processes": 2, "gpus_per_process": 0, "mpi_implementation": "MPICH", "launcher": "mpirun",
                     "mpi_args": ["-verbose"], "image_pull_policy": "Always"},
    "intel": {"processes": 4, "slots_per_worker": 2, "mpi_implementation": "Intel", "job_name": "lanes"},
}


def _config(name: str) -> MPIJobBackendConfig:
    return load_backend_config({**BASE, **CONFIGS[name]})


def _pod(template: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": name,
                                                           "namespace": "lane-detection"}, "spec": template["spec"]}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rendered_objects_validate_against_crd_and_builtin_schemas(name: str, crds_dir: Path) -> None:
    cfg = _config(name)
    manifests = render_manifests(cfg, REQ)
    job = manifests[-1]
    validate_crd_object(job, crds_dir)
    specs = job["spec"]["mpiReplicaSpecs"]
    validate_builtin(_pod(specs["Launcher"]["template"], "launcher"))
    validate_builtin(_pod(specs["Worker"]["template"], "worker-0"))
    for extra in manifests[:-1]:
        validate_crd_object(extra, crds_dir)
    assert [m["kind"] for m in manifests] == (["VolumeSnapshot", "MPIJob"] if cfg.snapshot.data else ["MPIJob"])


def test_seed_submission_maps_onto_the_mpijob() -> None:
    job = render_mpijob(_config("seed-runai"), REQ)
    spec = job["spec"]
    assert job["metadata"]["name"] == "lanedet-scnn-01234567"
    assert job["metadata"]["namespace"] == "runai-lane-detection"
    assert spec["launcherCreationPolicy"] == "WaitForWorkersReady"
    assert spec["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 0}
    assert spec["mpiImplementation"] == "OpenMPI" and spec["slotsPerWorker"] == 1
    worker = spec["mpiReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 3
    pod = worker["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert container["command"] == ["/usr/sbin/sshd", "-De"]
    assert {"name": "data", "mountPath": "/mnt"} in container["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "pvc-download-tusimple-data-0"}} in pod["volumes"]
    assert pod["schedulerName"] == "runai-scheduler"
    assert worker["template"]["metadata"]["labels"]["project"] == "lane-detection"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BATCH_SIZE"] == "33" and env["PVC_NAME"] == "pvc-download-tusimple-data-0"
    assert env["MLFLOW_RUN_ID"] == RUN_ID and env["MLFLOW_EXPERIMENT_ID"] == "7"
    assert env["MLFLOW_TRACKING_URI"] == REQ.tracking_uri
    launcher = spec["mpiReplicaSpecs"]["Launcher"]
    assert launcher["replicas"] == 1
    lc = launcher["template"]["spec"]["containers"][0]
    assert lc["command"] == ["python", "-m", "mlflow_anf.backend.launcher"]
    assert lc["args"][-2:] == ["--", REQ.command]
    assert "nvidia.com/gpu" not in json.dumps(lc["resources"])


def test_gpu_pool_scheduling_secrets_and_policies() -> None:
    job = render_mpijob(_config("aks-gpu-pool"), REQ)
    spec = job["spec"]
    assert spec["slotsPerWorker"] == 4 and spec["mpiReplicaSpecs"]["Worker"]["replicas"] == 2
    assert spec["launcherCreationPolicy"] == "AtStartup"
    assert spec["runPolicy"] == {"cleanPodPolicy": "All", "backoffLimit": 2, "ttlSecondsAfterFinished": 3600,
                                 "activeDeadlineSeconds": 86400}
    worker = spec["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
    assert worker["containers"][0]["resources"] == {
        "requests": {"cpu": "20", "memory": "200Gi"}, "limits": {"cpu": "20", "memory": "200Gi", "nvidia.com/gpu": "4"}}
    assert worker["nodeSelector"] == {"agentpool": "gpupool"} and len(worker["tolerations"]) == 2
    assert "nodeSelector" not in launcher and "tolerations" not in launcher  # the launcher needs no GPU node
    for pod in (worker, launcher):
        assert pod["serviceAccountName"] == "mlflow-anf-launcher"
        assert pod["priorityClassName"] == "gpu-training"
        assert pod["imagePullSecrets"] == [{"name": "acr-pull"}]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["MLFLOW_TRACKING_TOKEN"] == {"name": "MLFLOW_TRACKING_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": "mlflow-token", "key": "token"}}}
        assert env["AZURE_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["optional"] is True
        assert env["MLFLOW_ANF_SECRET_ENV"]["value"] == "AZURE_CLIENT_SECRET,MLFLOW_TRACKING_TOKEN"
        assert "dshm" not in json.dumps(pod)
    assert job["metadata"]["labels"]["team"] == "perception"
    assert job["metadata"]["annotations"]["example.com/owner"] == "lane team"
    opts = parse_args(launcher["containers"][0]["args"])
    assert opts.model_snapshot == "lane-detection/tusimple-data"
    assert opts.snapshot_class == "netapp-csi-snapclass" and opts.processes == 8 and opts.slots_per_worker == 4


def test_no_secret_value_reaches_a_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AZURE_CLIENT_SECRET", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "CANARY_TOKEN"):
        monkeypatch.setenv(var, CANARY)
    for name in CONFIGS:
        text = json.dumps(render_manifests(_config(name), REQ))
        assert CANARY not in text


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_launcher_args_round_trip(name: str) -> None:
    cfg = _config(name)
    opts = parse_args(launcher_args(cfg, REQ))
    assert (opts.launcher, opts.mpi_implementation, opts.processes, opts.slots_per_worker) == (
        cfg.launcher, cfg.mpi_implementation, cfg.processes, cfg.slots_per_worker)
    assert opts.command == REQ.command and opts.mpi_args == cfg.mpi_args
    assert opts.log_artifact == "launcher.log"


def test_job_names_fit_dns_limits() -> None:
    cfg = load_backend_config({**BASE, "processes": 1000})
    name = job_name_for(cfg, "My Very_Long Project Name " * 5, RUN_ID)
    assert len(f"{name}-worker-999") <= 63 and name.endswith("-01234567")
    assert name.startswith("my-very-long-project-name-")
    assert job_name_for(cfg, "2048 lanes", RUN_ID) == "p-2048-lanes-01234567"
    assert job_name_for(_config("intel"), "ignored", RUN_ID) == "lanes-01234567"


# ---- the launcher's command line ---------------------------------------------------------------------------------

HOSTS = [("job-worker-0.job.ns.svc", 2), ("job-worker-1.job.ns.svc", 2)]


def _opts(**kw: Any) -> Any:
    args = []
    for key, value in kw.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return parse_args([*args, "--", "python train.py --epochs 3"])


def test_horovodrun_gets_an_explicit_host_list_for_every_implementation() -> None:
    for impl in ("OpenMPI", "Intel", "MPICH"):
        cmd = build_command(_opts(processes=4, mpi_implementation=impl), HOSTS, "/etc/mpi/hostfile", {})
        assert cmd == ["horovodrun", "-np", "4", "-H", "job-worker-0.job.ns.svc:2,job-worker-1.job.ns.svc:2",
                       "python", "train.py", "--epochs", "3"]


def test_openmpi_mpirun_forwards_the_environment_ranks_need() -> None:
    env = {"MLFLOW_RUN_ID": "r", "MLFLOW_TRACKING_URI": "u", "NCCL_DEBUG": "INFO", "PATH": "/bin",
           "UNRELATED": "x", "HF_TOKEN": CANARY}
    cmd = build_command(_opts(launcher="mpirun", processes=4), HOSTS, "/etc/mpi/hostfile", env, ["HF_TOKEN"])
    assert cmd[:9] == ["mpirun", "--allow-run-as-root", "-np", "4", "--hostfile", "/etc/mpi/hostfile",
                       "-bind-to", "none", "-map-by"]
    forwarded = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-x"]
    assert forwarded == ["HF_TOKEN", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "NCCL_DEBUG", "PATH"]
    assert CANARY not in cmd  # names are forwarded, never values


def test_hydra_mpirun_and_too_few_slots() -> None:
    cmd = build_command(_opts(launcher="mpirun", mpi_implementation="MPICH", processes=3), HOSTS, "/h", {})
    assert cmd == ["mpirun", "-n", "3", "-f", "/h", "python", "train.py", "--epochs", "3"]
    with pytest.raises(LauncherError, match="4 slots for 5 processes"):
        build_command(_opts(processes=5), HOSTS, "/h", {})


def test_hostfiles_of_every_implementation(tmp_path: Path) -> None:
    path = tmp_path / "hostfile"
    path.write_text("a.svc slots=2\n# comment\n\nb.svc:3\nc.svc\n")
    assert read_hostfile(path) == [("a.svc", 2), ("b.svc", 3), ("c.svc", 1)]
    path.write_text("a.svc:two\n")
    with pytest.raises(LauncherError, match=r"hostfile .*:1: cannot parse"):
        read_hostfile(path)
    path.write_text("\n")
    with pytest.raises(LauncherError, match="no hosts"):
        read_hostfile(path)
    with pytest.raises(LauncherError, match="cannot read"):
        read_hostfile(tmp_path / "missing")


def test_command_argv_uses_a_shell_only_for_shell_syntax() -> None:
    assert command_argv("python -m mlflow_anf_lanedet.cli train --data-dir '/mnt/a b' --note 'x;y|z'") == [
        "python", "-m", "mlflow_anf_lanedet.cli", "train", "--data-dir", "/mnt/a b", "--note", "x;y|z"]
    for shell in ("cd /workspace && python t.py", "python t.py > out.txt", "echo $HOME", "a | b"):
        assert command_argv(shell) == ["/bin/sh", "-c", shell]


def test_redactor_hides_secret_values_only() -> None:
    redact = Redactor({"HF_TOKEN": CANARY, "SHORT": "ab", "PLAIN": "visible"}, ["HF_TOKEN", "SHORT", "MISSING"])
    assert redact(f"token={CANARY} ab visible") == "token=*** ab visible"


# ---- conditions → MLflow status ------------------------------------------------------------------------------------

def _c(ctype: str, status: str = "True", reason: str = "") -> dict[str, str]:
    return {"type": ctype, "status": status, "reason": reason}


@pytest.mark.parametrize(("conditions", "expected"), [
    ([], "SCHEDULED"),
    (None, "SCHEDULED"),
    ([_c("Created")], "SCHEDULED"),
    ([_c("Created"), _c("Running")], "RUNNING"),
    ([_c("Created"), _c("Restarting")], "RUNNING"),
    ([_c("Created"), _c("Suspended"), _c("Running", "False")], "SCHEDULED"),
    ([_c("Created"), _c("Suspended", "False"), _c("Running")], "RUNNING"),
    ([_c("Created"), _c("Running", "False"), _c("Succeeded")], "FINISHED"),
    ([_c("Created"), _c("Running", "False"), _c("Failed", reason="MPIJobEvicted")], "FAILED"),
    ([_c("Created"), _c("Failed", "False"), _c("Running")], "RUNNING"),
])
def test_status_from_conditions(conditions: Any, expected: str) -> None:
    assert status_from_conditions(conditions)[0] == expected


def test_log_timestamps_sort_by_time() -> None:
    from mlflow_anf.backend.submitted_run import _ts_key

    stamps = ["2026-01-01T00:00:05Z", "2026-01-01T00:00:05.5Z", "2026-01-01T00:00:05.50001Z",
              "2026-01-01T00:00:05.500010001Z", "2026-01-01T00:00:06.1Z"]
    assert sorted(stamps, key=_ts_key) == stamps
    assert sorted(stamps, key=_ts_key) != sorted(stamps)  # plain string order gets it wrong
