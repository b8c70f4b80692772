"""The model snapshot is of the model (issue #13): ``snapshot.model_pvc`` is mounted where the entry point writes,
a run whose ``output_dir`` is not on the snapshotted volume is refused before anything is created, and the model
snapshot's ``artifact_uri`` points at the model inside the volume, so it resolves."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import ExecutionException

from mlflow_anf.backend.config import BackendConfigError, load_backend_config
from mlflow_anf.backend.params import EntryPointParamError, model_location
from mlflow_anf.backend.plugin import MPIJobBackend
from mlflow_anf.backend.render import JobRequest, launcher_args, render_mpijob
from mlflow_anf.backend.launcher import parse_args
from tests.doubles.mpi_operator_sim import STUB_TRAIN, write_project
from tests.support.snapshot_tags import snapshot_fields

NS = "lane"
RUN_ID = "0123456789abcdef0123456789abcdef"
BASE = {"namespace": NS, "image": "registry.example.com/lanedet:0.1.0", "data_pvc": "tusimple-data",
        "tracking_uri": "http://mlflow.lane.svc:5000"}
REQ = JobRequest(run_id=RUN_ID, experiment_id="7", tracking_uri="http://mlflow.lane.svc:5000",
                 command="python stub_train.py", entry_point="train", project_name="sim", model_path="models/model")

# A project declaring where its entry point writes the model (the lanedet MLproject does the same for `train`).
MLPROJECT = '''\
name: sim-model
mlflow_anf:
  model_output:
    train: {param: output_dir, path: model}
entry_points:
  train:
    parameters:
      data_dir: {type: string, default: /mnt/tusimple}
      output_dir: {type: string, default: outputs}
      epochs: {type: float, default: 1}
    command: "python stub_train.py --epochs {epochs} --data-dir {data_dir}"
  plain:
    parameters:
      epochs: {type: float, default: 1}
    command: "python stub_train.py --epochs {epochs}"
  bare:
    parameters:
      output_dir: {type: string, default: /mnt/out}
    command: "python stub_train.py"
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project", MLPROJECT, **{"stub_train.py": STUB_TRAIN})


def _ep(project: Path, name: str = "train") -> Any:
    from mlflow.projects.utils import load_project

    return load_project(str(project)).get_entry_point(name)


def _cfg(**over: Any) -> Any:
    return load_backend_config({**BASE, **over})


# --- config ---------------------------------------------------------------------------------------------------

def test_model_mount_path_defaults_and_is_only_for_a_separate_model_pvc() -> None:
    cfg = _cfg(snapshot={"model": True, "model_pvc": "models"})
    assert cfg.model_volume() == ("models", "/models")
    assert _cfg(snapshot={"model": True}).model_volume() == ("tusimple-data", "/mnt")
    same = _cfg(snapshot={"model": True, "model_pvc": "tusimple-data"})
    assert same.model_volume() == ("tusimple-data", "/mnt")
    assert _cfg().model_volume() is None  # no model snapshot: no model volume
    custom = _cfg(snapshot={"model": True, "model_pvc": "models", "model_mount_path": "/workspace/outputs/"})
    assert custom.model_volume() == ("models", "/workspace/outputs")


@pytest.mark.parametrize(("snapshot", "over", "fragment"), [
    ({"model": True, "model_mount_path": "/models"}, {}, "snapshot.model_mount_path: set but snapshot.model_pvc"),
    ({"model": True, "model_pvc": "tusimple-data", "model_mount_path": "/models"}, {},
     "snapshot.model_mount_path: set but snapshot.model_pvc"),
    ({"model": True, "model_pvc": "models", "model_mount_path": "relative"}, {}, "snapshot.model_mount_path: "),
    ({"model": True, "model_pvc": "models", "model_mount_path": "/mnt/models"}, {},
     "snapshot.model_mount_path: '/mnt/models' is inside data_mount_path '/mnt'"),
    ({"model": True, "model_pvc": "models", "model_mount_path": "/data"}, {"data_mount_path": "/data/tusimple"},
     "snapshot.model_mount_path: '/data' contains data_mount_path"),
    ({"model": True, "model_pvc": "models", "model_mount_path": "/workspace"}, {},
     "snapshot.model_mount_path: '/workspace' would hide project_dir"),
    ({"model": True, "model_pvc": "models", "model_mount_path": "/dev/shm"}, {},
     "snapshot.model_mount_path: collides with the /dev/shm volume"),
])
def test_bad_model_mount_path_names_the_field(snapshot: dict[str, Any], over: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BackendConfigError) as err:
        _cfg(snapshot=snapshot, **over)
    assert len(err.value.problems) == 1, err.value.problems
    assert fragment in err.value.problems[0], err.value.problems


def test_runai_project_in_a_custom_namespace_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # docs.run.ai "Manually Create Projects" (v2.16-v2.20, admin/runai-setup/self-hosted/k8s/project-management):
    # a project gets namespace runai-<project> by default, but can be associated with any existing namespace
    # (`kubectl label ns <NAMESPACE> runai/queue=<PROJECT_NAME>`); `runai project create --namespace` (v3.0 CLI).
    with caplog.at_level(logging.WARNING, logger="mlflow_anf.backend.config"):
        cfg = load_backend_config({**BASE, "namespace": "research-ns", "scheduler": "runai",
                                   "runai_project": "lane-detection"})
    assert cfg.namespace == "research-ns"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    assert "research-ns" in warned[0] and "runai-lane-detection" in warned[0] and "runai/queue" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlflow_anf.backend.config"):
        load_backend_config({**BASE, "namespace": "runai-lane-detection", "scheduler": "runai",
                             "runai_project": "lane-detection"})
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# --- render ---------------------------------------------------------------------------------------------------

def _mounts(template: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in template["spec"]["containers"][0].get("volumeMounts", [])}


def _claims(template: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in template["spec"].get("volumes", [])
            if "persistentVolumeClaim" in v}


def test_separate_model_pvc_is_mounted_in_launcher_and_workers() -> None:
    cfg = _cfg(snapshot={"model": True, "model_pvc": "models", "model_mount_path": "/models"})
    job = render_mpijob(cfg, REQ)
    specs = job["spec"]["mpiReplicaSpecs"]
    worker, launcher = specs["Worker"]["template"], specs["Launcher"]["template"]
    assert _claims(worker) == {"data": "tusimple-data", "model": "models"}
    assert _mounts(worker)["data"] == "/mnt" and _mounts(worker)["model"] == "/models"
    assert _claims(launcher) == {"model": "models"} and _mounts(launcher) == {"model": "/models"}


def test_model_on_the_data_pvc_mounts_it_once_and_in_the_launcher() -> None:
    job = render_mpijob(_cfg(snapshot={"model": True}), REQ)
    specs = job["spec"]["mpiReplicaSpecs"]
    assert _claims(specs["Worker"]["template"]) == {"data": "tusimple-data"}
    assert _claims(specs["Launcher"]["template"]) == {"data": "tusimple-data"}
    assert _mounts(specs["Launcher"]["template"]) == {"data": "/mnt"}
    # without a model snapshot the launcher mounts nothing (as before)
    plain = render_mpijob(_cfg(), REQ)["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]
    assert "volumes" not in plain["spec"]


def test_launcher_gets_the_model_path_inside_the_volume() -> None:
    args = launcher_args(_cfg(snapshot={"model": True}), REQ)
    opts = parse_args(args)
    assert opts.model_snapshot == f"{NS}/tusimple-data" and opts.model_path == "models/model"


def test_a_model_snapshot_without_its_path_is_refused_by_the_launcher() -> None:
    with pytest.raises(ValueError, match="model-path"):
        parse_args(["--model-snapshot", f"{NS}/tusimple-data", "--", "true"])
    with pytest.raises(ValueError, match="model_path"):
        render_mpijob(_cfg(snapshot={"model": True}), JobRequest(
            run_id=RUN_ID, experiment_id="7", tracking_uri="http://x:5000", command="true"))


# --- where the entry point writes -----------------------------------------------------------------------------

def test_output_dir_on_the_data_pvc_gives_the_model_path(project: Path) -> None:
    cfg = _cfg(snapshot={"model": True})
    assert model_location(project, _ep(project), {"output_dir": "/mnt/models"}, cfg) == "models/model"
    assert model_location(project, _ep(project), {"output_dir": "/mnt/a/../b/"}, cfg) == "b/model"
    assert model_location(project, _ep(project), {"output_dir": "/mnt"}, cfg) == "model"
    assert model_location(project, _ep(project), {}, _cfg()) is None  # no model snapshot: nothing to check
    # no declaration: the model is output_dir itself
    assert model_location(project, _ep(project, "bare"), {}, cfg) == "out"


def test_output_dir_on_a_separate_model_pvc(project: Path) -> None:
    cfg = _cfg(snapshot={"model": True, "model_pvc": "models"})
    assert model_location(project, _ep(project), {"output_dir": "/models/run-1"}, cfg) == "run-1/model"
    relative = _cfg(snapshot={"model": True, "model_pvc": "models", "model_mount_path": "/workspace/outputs"})
    # the MLproject default (`outputs`, relative to project_dir) lands on a model volume mounted there
    assert model_location(project, _ep(project), {}, relative) == "model"


@pytest.mark.parametrize(("entry", "params", "over", "fragment"), [
    ("train", {}, {}, "-P output_dir: 'outputs' is /workspace/outputs in the pods"),
    ("train", {"output_dir": "/scratch/out"}, {}, "-P output_dir: '/scratch/out' is not on"),
    ("train", {"output_dir": "/mnt2/out"}, {}, "-P output_dir: '/mnt2/out' is not on"),
    ("train", {"output_dir": "/mnt/models"}, {"model_pvc": "models"}, "-P output_dir: '/mnt/models' is not on"),
    ("train", {"output_dir": ""}, {}, "-P output_dir: empty"),
    ("plain", {}, {}, "-P output_dir: entry point 'plain' has no output_dir parameter"),
])
def test_output_dir_off_the_model_volume_is_refused(project: Path, entry: str, params: dict[str, str],
                                                    over: dict[str, Any], fragment: str) -> None:
    cfg = _cfg(snapshot={"model": True, **over})
    with pytest.raises(EntryPointParamError) as err:
        model_location(project, _ep(project, entry), params, cfg)
    assert len(err.value.problems) == 1 and fragment in err.value.problems[0], err.value.problems


# --- the real path: mlflow run --backend mpijob against the emulator and the simulated operator ------------------

def _backend_cfg(kubeconfig: Path, store: Any, project: Path, **over: Any) -> dict[str, Any]:
    return {"namespace": NS, "kubeconfig": str(kubeconfig), "image": "registry.example.com/lanedet:0.1.0",
            "processes": 1, "gpus_per_process": 0, "launcher": "mpirun", "mpi_implementation": "MPICH",
            "tracking_uri": store.uri, "project_dir": "/workspace", "data_pvc": "tusimple-data",
            "poll_interval_seconds": 0.05, "submit_timeout_seconds": 5, "api_backoff_seconds": 0.01, **over}


def test_output_dir_elsewhere_is_refused_before_anything_is_created(k8s_server, k8s_objects, kubeconfig_path,
                                                                    mlflow_store, project) -> None:
    k8s_objects.namespace(NS)
    cfg = _backend_cfg(kubeconfig_path, mlflow_store, project, snapshot={"data": True, "model": True})
    mark = k8s_server.mark()
    with pytest.raises(ExecutionException, match="-P output_dir: 'outputs' is /workspace/outputs"):
        MPIJobBackend().run(str(project), "train", {}, None, cfg, mlflow_store.uri, mlflow_store.experiment_id)
    assert k8s_server.requests(mark) == []
    assert mlflow_store.client().search_runs([mlflow_store.experiment_id]) == []


def test_model_snapshot_of_the_model_pvc_resolves_to_the_model(k8s_server, k8s_objects, kubeconfig_path,
                                                               mlflow_store, project, mpi_operator,
                                                               snapshot_controller, tmp_path, monkeypatch) -> None:
    k8s_objects.namespace(NS)
    k8s_objects.snapshot_class("anf-snapclass", default=True)
    k8s_objects.pvc("tusimple-data", NS)
    k8s_objects.pvc("models", NS)
    mpi_operator.cwd_map = {"/workspace": str(project)}
    cfg = _backend_cfg(kubeconfig_path, mlflow_store, project,
                       snapshot={"data": True, "model": True, "model_pvc": "models"})
    run = MPIJobBackend().run(str(project), "train", {"output_dir": "/models/run-1"}, None, cfg, mlflow_store.uri,
                              mlflow_store.experiment_id)
    assert run.wait() is True
    tags = snapshot_fields(mlflow_store.client().get_run(run.run_id).data.tags)
    assert tags["mlflow_anf.snapshot.model.volume"] == f"{NS}/models"
    assert tags["mlflow_anf.snapshot.data.volume"] == f"{NS}/tusimple-data"
    uri = tags["mlflow_anf.snapshot.model.artifact_uri"]
    assert uri.startswith(f"snapshot://csi/{tags['mlflow_anf.snapshot.model.name']}/run-1/model?")
    # the volume as an NFS client sees it: the snapshot's files under .snapshot/<storage name>/ (Trident's
    # snapshot-<uid>, the last part of the content's snapshotHandle)
    snap = next(s for s in k8s_objects.list("VolumeSnapshot", NS)
                if s["metadata"]["name"] == tags["mlflow_anf.snapshot.model.name"])
    content = k8s_objects.get("VolumeSnapshotContent", None, snap["status"]["boundVolumeSnapshotContentName"])
    storage = content["status"]["snapshotHandle"].rsplit("/", 1)[-1]
    mount = tmp_path / "models-mount"
    model = mount / ".snapshot" / storage / "run-1" / "model"
    model.mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    monkeypatch.setenv("MLFLOW_ANF_SNAPSHOT_MOUNTS", f"csi:{NS}/models={mount}")
    import mlflow

    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "dl"))
    assert (Path(local) / "MLmodel").read_text() == "flavors: {}\n"


@pytest.mark.parametrize(("hook", "fragment"), [
    ("{param: output_dir, path: ../elsewhere}", "mlflow_anf.model_output.train.path: '../elsewhere' must be"),
    ("{param: 'output-dir'}", "mlflow_anf.model_output.train.param: 'output-dir' is not a parameter name"),
    ("{param: output_dir, where: model}", "mlflow_anf.model_output.train.where: Extra inputs"),
])
def test_bad_model_output_declaration_names_the_mlproject_key(project: Path, hook: str, fragment: str) -> None:
    text = (project / "MLproject").read_text().replace("{param: output_dir, path: model}", hook)
    (project / "MLproject").write_text(text)
    with pytest.raises(EntryPointParamError) as err:
        model_location(project, _ep(project), {"output_dir": "/mnt/models"}, _cfg(snapshot={"model": True}))
    assert fragment in str(err.value) and str(project / "MLproject") in str(err.value)


def test_launcher_takes_no_model_snapshot_when_the_mounted_volume_lacks_the_model(tmp_path, monkeypatch) -> None:
    from mlflow_anf.backend import launcher

    mount = tmp_path / "models"
    mount.mkdir()
    opts = parse_args(launcher_args(_cfg(snapshot={"model": True, "model_pvc": "models",
                                                   "model_mount_path": str(mount)}), REQ))
    assert opts.model_mount == str(mount) and opts.model_path == "models/model"
    taken: list[Any] = []
    monkeypatch.setattr("mlflow_anf.backend.snapshots.job_snapshot_provider", lambda *a, **k: "provider")
    monkeypatch.setattr("mlflow_anf.tracking.snapshot_and_log", lambda *a, **k: taken.append((a, k)) or "snap")
    # in a pod (the kubelet always sets KUBERNETES_SERVICE_HOST) the model volume is mounted: the model must be there
    pod_env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    with pytest.raises(launcher.LauncherError, match="wrote no model at .*models/model on the model volume"):
        launcher.take_model_snapshot(opts, pod_env, RUN_ID, client=None)
    assert taken == []
    (mount / "models" / "model").mkdir(parents=True)
    assert launcher.take_model_snapshot(opts, pod_env, RUN_ID, client=None) == "snap"
    assert taken[0][0][1:3] == (f"{NS}/models", "model") and taken[0][1]["artifact_path"] == "models/model"
