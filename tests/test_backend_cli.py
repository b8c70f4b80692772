"""``mlflow-anf render`` / ``doctor``, the ``mlflow run --backend mpijob`` CLI end to end, and secrets end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlflow_anf.cli import main
from tests.doubles.k8s_emulator import K8sServer
from tests.doubles.k8s_schemas import validate_crd_object
from tests.doubles.mpi_operator_sim import serve_access_reviews
from tests.test_backend_lifecycle import NS, make_config, read_artifact, submit

CANARY = "canary-4c1d2e3f5a6b7c8d"


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


# ---- render ---------------------------------------------------------------------------------------------------

def test_render_prints_the_manifests_without_submitting(sim_project: Path, crds_dir: Path) -> None:
    cfg = {"namespace": "lane-detection", "image": "registry.example.com/lanedet:0.1.0", "processes": 3,
           "data_pvc": "tusimple-data", "tracking_uri": "http://mlflow.lane-detection.svc:5000",
           "snapshot": {"data": True, "snapshot_class": "netapp-csi-snapclass"}}
    result = _runner().invoke(main, ["render", str(sim_project), "-e", "train", "-P", "epochs=5", "-P",
                                     "data_dir=/mnt/tusimple", "-c", json.dumps(cfg), "--run-id", "abcdef0123"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["VolumeSnapshot", "MPIJob"]
    for doc in docs:
        validate_crd_object(doc, crds_dir)
    snapshot, job = docs
    assert snapshot["spec"] == {"source": {"persistentVolumeClaimName": "tusimple-data"},
                                "volumeSnapshotClassName": "netapp-csi-snapclass"}
    assert job["metadata"]["name"] == "sim-lanedet-abcdef01"
    command = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["args"][-1]
    assert command == "python stub_train.py --epochs 5 --fail 0 --data-dir /mnt/tusimple --sleep 0"


def test_render_passes_the_entry_points_snapshot_switch_through(crds_dir: Path) -> None:
    """The backend no longer rewrites enable_snapshot when it takes the snapshots itself (the training side skips a
    role the run already has recorded): the rendered (and submitted) command carries the project's default or the
    value given, and nothing is said about it."""
    from tests.conftest import REPO_ROOT

    cfg = {"namespace": "lane-detection", "image": "registry.example.com/lanedet:0.1.0", "processes": 2,
           "data_pvc": "tusimple-data", "tracking_uri": "http://mlflow.lane-detection.svc:5000",
           "snapshot": {"data": True, "model": True}}
    # output_dir on the snapshotted volume (data_pvc at /mnt): the model snapshot must hold the model (issue #13)
    args = ["render", str(REPO_ROOT), "-e", "train", "-P", "data_dir=/mnt/tusimple", "-P", "output_dir=/mnt/models",
            "-c", json.dumps(cfg)]
    for extra, expected in (([], "true"), (["-P", "enable_snapshot=false"], "false"),
                            (["-P", "enable_snapshot=true"], "true")):
        result = _runner().invoke(main, args + extra)
        assert result.exit_code == 0, result.output
        job = list(yaml.safe_load_all(result.stdout))[-1]
        command = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["args"][-1]
        assert f"--enable-snapshot {expected} " in command
        assert "enable_snapshot" not in result.stderr


@pytest.mark.parametrize(("args", "fragment"), [
    (["-c", '{"namespace": "lane", "image": "x.io/y:1", "procesess": 2}'], "procesess: unknown key"),
    (["-c", '{"namespace": "lane", "image": "x.io/y:1"}', "--tracking-uri", "sqlite:///mlflow.db"],
     "tracking_uri: the pods cannot reach this machine's tracking store"),
    (["-c", '{"namespace": "lane", "image": "x.io/y:1", "tracking_uri": "http://m:5000"}', "-e", "nope"],
     "entry point 'nope'"),
    (["-c", '{"namespace": "lane", "image": "x.io/y:1", "tracking_uri": "http://m:5000"}', "-P", "epochs"],
     "use NAME=VALUE"),
])
def test_render_bad_input_exits_2_naming_it(args: list[str], fragment: str, sim_project: Path) -> None:
    result = _runner().invoke(main, ["render", str(sim_project), "-e", "train", *args])
    assert result.exit_code == 2, result.output
    assert fragment in (result.stderr if hasattr(result, "stderr") else result.output)


# ---- doctor ---------------------------------------------------------------------------------------------------

def _doctor(cfg: dict[str, Any]) -> Any:
    return _runner().invoke(main, ["doctor", "-c", json.dumps(cfg), "--tracking-uri", "sqlite:///local.db"])


def test_doctor_all_ok(k8s_server, k8s_objects, kubeconfig_path) -> None:
    reviews = serve_access_reviews(k8s_server)
    k8s_objects.namespace(NS)
    k8s_objects.storage_class("azurenetappfiles")
    k8s_objects.snapshot_class("netapp-csi-snapclass", default=True)
    k8s_objects.pvc("tusimple-data", NS, storage_class="azurenetappfiles")
    k8s_objects.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow", "namespace": NS},
                        "spec": {"ports": [{"port": 5000}]}})
    cfg = {"namespace": NS, "image": "registry.example.com/lanedet@sha256:" + "b" * 64,
           "kubeconfig": str(kubeconfig_path), "data_pvc": "tusimple-data",
           "tracking_uri": f"http://mlflow.{NS}.svc.cluster.local:5000", "snapshot": {"data": True, "model": True},
           "service_account": "mlflow-anf-launcher"}  # the launcher takes the model snapshot (k8s/base/rbac.yaml)
    mark = k8s_server.mark()
    result = _doctor(cfg)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(line.startswith("[ ok ]") for line in lines[:-1]), result.stdout
    assert lines[-1] == "8 ok, 0 warning(s), 0 failed"
    assert "data PVC: lane/tusimple-data Bound, ReadWriteMany" in result.stdout
    assert {(r["verb"], r["resource"]) for r in reviews} >= {("create", "mpijobs"), ("get", "pods"),
                                                             ("create", "volumesnapshots")}
    writes = [r for r in k8s_server.requests(mark) if r.is_write and r.plural != "selfsubjectaccessreviews"]
    assert writes == []  # the doctor only reads (access reviews are not stored)


def test_doctor_reports_each_problem_with_its_fix(k8s_server, k8s_objects, kubeconfig_path) -> None:
    serve_access_reviews(k8s_server, denied={("delete", "mpijobs"), ("get", "pods/log")})
    k8s_objects.namespace(NS)
    k8s_objects.snapshot_class("csi-a", default=True)
    k8s_objects.snapshot_class("csi-b", default=True)
    k8s_objects.pvc("tusimple-data", NS, storage_class="missing-class", access_modes=("ReadWriteOnce",),
                    phase="Pending")
    cfg = {"namespace": NS, "image": "registry.example.com/lanedet:0.1.0", "kubeconfig": str(kubeconfig_path),
           "data_pvc": "tusimple-data", "tracking_uri": "http://localhost:5000", "snapshot": {"data": True}}
    result = _doctor(cfg)
    assert result.exit_code == 1
    out = result.stdout
    assert ("[FAIL] VolumeSnapshotClass: snapshot_class: not configured and 2 default VolumeSnapshotClasses fit PVC "
            "lane/tusimple-data (csi-a, csi-b)") in out
    assert ("[FAIL] data PVC: lane/tusimple-data is Pending, not Bound; access modes ['ReadWriteOnce'] lack "
            "ReadWriteMany, so the workers cannot all mount it; its StorageClass 'missing-class' does not exist") \
        in out
    assert ("[FAIL] RBAC: in lane: denied delete mpijobs (submit, follow and cancel jobs), get pods/log (stream its "
            "log)") in out
    assert "[warn] tracking URI: 'http://localhost:5000' is localhost" in out
    assert "[warn] image: registry.example.com/lanedet:0.1.0 is not pinned by digest" in out
    assert out.count("fix: ") == 5
    assert out.splitlines()[-1] == "3 ok, 2 warning(s), 3 failed"


def test_doctor_checks_a_separate_model_pvc_as_it_checks_the_data_pvc(k8s_server, k8s_objects,
                                                                      kubeconfig_path) -> None:
    """snapshot.model_pvc differing from data_pvc is mounted in launcher and workers (backend/model_volume.py): it
    must exist, be Bound and ReadWriteMany, as the data PVC must."""
    serve_access_reviews(k8s_server)
    k8s_objects.namespace(NS)
    k8s_objects.storage_class("azurenetappfiles")
    k8s_objects.snapshot_class("netapp-csi-snapclass", default=True)
    k8s_objects.pvc("tusimple-data", NS, storage_class="azurenetappfiles")
    cfg = {"namespace": NS, "image": "registry.example.com/lanedet@sha256:" + "b" * 64,
           "kubeconfig": str(kubeconfig_path), "data_pvc": "tusimple-data", "service_account": "mlflow-anf-launcher",
           "snapshot": {"data": True, "model": True, "model_pvc": "lanedet-models"}}
    out = _doctor(cfg).stdout
    assert f"[FAIL] model PVC: {NS}/lanedet-models not found" in out, out
    assert "fix: create snapshot.model_pvc" in out, out
    k8s_objects.pvc("lanedet-models", NS, storage_class="azurenetappfiles", access_modes=("ReadWriteOnce",),
                    phase="Pending")
    out = _doctor(cfg).stdout
    assert (f"[FAIL] model PVC: {NS}/lanedet-models is Pending, not Bound; access modes ['ReadWriteOnce'] lack "
            "ReadWriteMany, so the workers cannot all mount it") in out, out
    assert f"[ ok ] data PVC: {NS}/tusimple-data Bound" in out
    k8s_objects.delete("PersistentVolumeClaim", NS, "lanedet-models")
    k8s_objects.pvc("lanedet-models", NS, storage_class="azurenetappfiles")
    out = _doctor(cfg).stdout
    assert f"[ ok ] model PVC: {NS}/lanedet-models Bound, ReadWriteMany" in out, out
    same = _doctor({**cfg, "snapshot": {"data": True, "model": True, "model_pvc": "tusimple-data"}}).stdout
    assert "model PVC" not in same  # the model is on the data volume: checked once


def test_doctor_without_the_mpi_operator(tmp_path: Path, crds_dir: Path, k8s_tls) -> None:
    only_snapshots = tmp_path / "crds"
    only_snapshots.mkdir()
    for crd in crds_dir.glob("snapshot.storage.k8s.io_*.yaml"):
        shutil.copy(crd, only_snapshots)
    with K8sServer(crds_dir=only_snapshots, tls=k8s_tls) as server:
        serve_access_reviews(server)
        server.objects.namespace(NS)
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        result = _doctor({"namespace": NS, "image": "x.io/y:1", "kubeconfig": str(kubeconfig),
                          "tracking_uri": "https://mlflow.example.com"})
    assert result.exit_code == 1
    assert "[FAIL] MPIJob CRD: kubeflow.org/v2beta1 mpijobs is not served\n       fix: install the Kubeflow MPI " \
           "operator" in result.stdout


def test_doctor_unreachable_cluster(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": CANARY}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    result = _doctor({"namespace": NS, "image": "x.io/y:1", "kubeconfig": str(kubeconfig),
                      "tracking_uri": "https://mlflow.example.com", "api_max_attempts": 1})
    assert result.exit_code == 1
    assert result.stdout.startswith("[FAIL] API server: get /version: cannot reach the API server")
    assert CANARY not in result.output


# ---- `mlflow run` end to end, and secrets --------------------------------------------------------------------

@pytest.mark.parametrize("fail", [0, 4])
def test_mlflow_run_cli_against_the_emulator(fail: int, k8s_server, k8s_objects, kubeconfig_path,
                                             mlflow_store, sim_project, mpi_operator, tmp_path) -> None:
    k8s_objects.namespace(NS)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(make_config(kubeconfig_path, mlflow_store, sim_project, wait=True,
                                               follow_logs=True)))
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store.uri, "MLFLOW_EXPERIMENT_ID": mlflow_store.experiment_id}
    proc = subprocess.run([str(mlflow_cli), "run", str(sim_project), "-e", "train", "-P", f"fail={fail}",
                           "--backend", "mpijob", "--backend-config", str(cfg_path)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    runs = mlflow_store.client().search_runs([mlflow_store.experiment_id])
    assert len(runs) == 1, output
    run = runs[0]
    assert run.data.tags["mlflow.project.backend"] == "mpijob"
    assert "rank 0/2 training 2 epochs" in output  # the launcher log, followed by the CLI
    log = read_artifact(mlflow_store, run.info.run_id, "launcher.log", tmp_path)
    if fail:
        assert proc.returncode == 1 and run.info.status == "FAILED"
        assert f"exit code {fail}" in log and "ended FAILED" in output
    else:
        assert proc.returncode == 0, output
        assert run.info.status == "FINISHED" and "exit code 0" in log


def test_secrets_never_reach_manifests_logs_or_mlflow(k8s_server, k8s_objects, kubeconfig_path,
                                                      mlflow_store, sim_project, mpi_operator, tmp_path,
                                                      monkeypatch, capsys) -> None:
    import base64
    import io

    for var in ("AZURE_CLIENT_SECRET", "MLFLOW_TRACKING_TOKEN", "KUBE_TOKEN"):
        monkeypatch.setenv(var, CANARY)
    k8s_objects.namespace(NS)
    k8s_objects.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf", "namespace": NS},
                        "data": {"token": base64.b64encode(CANARY.encode()).decode()}})
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project,
                      secret_env={"CANARY_TOKEN": {"secret": "hf", "key": "token"}})
    out = io.StringIO()
    run = submit(cfg, mlflow_store, sim_project, out=out)
    assert run.wait(follow_logs=True) is True
    # the training really saw the secret (the stub prints it), but every sink shows *** instead
    assert "rank 0 sees token ***" in out.getvalue()
    pod = k8s_objects.list("Pod", NS)[0]["metadata"]["name"]
    assert "rank 1 sees token ***" in mpi_operator.pod_log(NS, pod)
    bodies = k8s_server.call(lambda: [r.text for r in k8s_server._api()._requests])
    assert bodies and not [b for b in bodies if b and CANARY in b]
    info = mlflow_store.client().get_run(run.run_id)
    assert CANARY not in json.dumps({**info.data.params, **info.data.tags})
    for artifact in ("launcher.log", "mlflow_anf/mpijob.yaml"):
        assert CANARY not in read_artifact(mlflow_store, run.run_id, artifact, tmp_path)
    captured = capsys.readouterr()
    assert CANARY not in out.getvalue() + captured.out + captured.err
