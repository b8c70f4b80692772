"""The steps of a reproduction as functions over a frozen plan: ``plan`` checks everything and creates nothing (no
MLflow run, no volume, no snapshot, no Kubernetes object), and no later step changes the plan it is given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from pydantic import ValidationError

from mlflow_anf.reproduce import (
    ImageCheck,
    ReproduceError,
    ReproduceOptions,
    ReproductionPlan,
    RestoredData,
    plan,
    point_at,
    read,
    restore,
)
from mlflow_anf.snapshots import get_provider
from mlflow_anf.tracking import get_run_snapshots, snapshot_and_log
from tests.test_reproduce import (  # noqa: F401 - fixtures
    NS,
    backend_config,
    _entry_points_run_this_python,
    cluster,
    data_dir,
    mpi_project,
    source_run,
    stub_project,
)


def _present(ref: str) -> ImageCheck:
    return ImageCheck(status="present", ref=ref, digest="sha256:" + "e" * 64)


def test_local_plan_creates_nothing_is_frozen_and_the_later_steps_leave_it_alone(
    tracking: MlflowClient, mlflow_store: Any, stub_project: Path, data_dir: Path, tmp_path: Path,  # noqa: F811
) -> None:
    source = source_run(tracking, stub_project, data_dir, tmp_path / "out", mlflow_store.experiment_id)
    snap = get_run_snapshots(source, tracking)["data"]
    snapshots_before = [s.name for s in get_provider("local").list(snap.volume)]
    workdir = tmp_path / "w"

    the_plan = plan(read(source, tracking), ReproduceOptions(workdir=workdir, overrides={"seed": "3"}),
                    client=tracking)

    assert isinstance(the_plan, ReproductionPlan)
    assert the_plan.backend == "local" and the_plan.entry_point == "train" and the_plan.code == "same"
    assert the_plan.target == str(workdir / "data") and the_plan.data == snap and not the_plan.restore_wait
    assert not workdir.exists()  # no restore target, no outputs directory
    assert [r.info.run_id for r in tracking.search_runs([mlflow_store.experiment_id])] == [source]
    assert [s.name for s in get_provider("local").list(snap.volume)] == snapshots_before
    with pytest.raises(ValidationError):
        the_plan.target = str(tmp_path / "elsewhere")  # type: ignore[misc]
    with pytest.raises(ValidationError):
        the_plan.params = {}  # type: ignore[misc]

    frozen = the_plan.model_dump(mode="json")
    restored = restore(the_plan)
    assert restored == RestoredData(source=snap.ref, volume=str(workdir / "data"), provider="local",
                                    restored_now=True)
    assert (workdir / "data" / "clips" / "a" / "20.jpg").is_file()
    pointed = point_at(the_plan, restored)
    assert pointed.params["data_dir"] == str(workdir / "data") and pointed.params["seed"] == "3"
    assert pointed.params["output_dir"] == str(workdir / "outputs")  # never the source run's outputs
    assert pointed.rewritten["data_dir"] == {"from": str(data_dir), "to": str(workdir / "data")}
    assert pointed.overrides == {"seed": "3"} and "seed" not in pointed.rewritten
    assert the_plan.model_dump(mode="json") == frozen  # restore and point_at only read the plan


def test_a_plan_refuses_an_existing_local_target_before_anything_is_created(
    tracking: MlflowClient, mlflow_store: Any, stub_project: Path, data_dir: Path, tmp_path: Path,  # noqa: F811
) -> None:
    source = source_run(tracking, stub_project, data_dir, tmp_path / "out", mlflow_store.experiment_id)
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(ReproduceError, match=r"target: .*taken already exists"):
        plan(read(source, tracking), ReproduceOptions(target=str(taken)), client=tracking)
    assert list(taken.iterdir()) == []


def test_mpijob_plan_creates_no_kubernetes_object_and_waits_for_the_restore_when_the_backend_snapshots_data(
    tracking: MlflowClient, mlflow_store: Any, cluster: Any, kubeconfig_path: Path, mpi_project: Path,  # noqa: F811
) -> None:
    from mlflow_anf.backend.config import load_backend_config
    from mlflow_anf.backend.plugin import csi_provider

    image = "registry.test/lanedet:0.1.0"
    cfg = {**backend_config(kubeconfig_path, mlflow_store, mpi_project, image),
           "snapshot": {"data": True, "timeout_seconds": 42}}
    run_id = tracking.create_run(mlflow_store.experiment_id, tags={
        "mlflow.project.entryPoint": "train", "mlflow.source.name": str(mpi_project),
        "mlflow.project.backend": "mpijob", "mlflow_anf.backend.image": image,
    }).info.run_id
    tracking.log_text(run_id, json.dumps(cfg), "mlflow_anf/backend-config.json")
    snap = snapshot_and_log(csi_provider(load_backend_config(cfg)), f"{NS}/tusimple-data", "data", run_id=run_id,
                            client=tracking)
    kinds = ("PersistentVolumeClaim", "VolumeSnapshot", "MPIJob", "Pod", "ConfigMap", "Secret")
    before = {kind: cluster.list(kind, NS) for kind in kinds}
    checked: list[str] = []

    def checker(ref: str) -> ImageCheck:
        checked.append(ref)
        return _present(ref)

    the_plan = plan(read(run_id, tracking), client=tracking, image_checker=checker)

    assert {kind: cluster.list(kind, NS) for kind in kinds} == before
    assert [r.info.run_id for r in tracking.search_runs([mlflow_store.experiment_id])] == [run_id]
    assert checked == [image] and the_plan.image == f"{image} (present, sha256:{'e' * 64})"
    assert the_plan.code == "in the image" and the_plan.data.ref == snap.ref
    assert the_plan.restore_wait is True and the_plan.restore_timeout_s == 42
    assert the_plan.target is not None and the_plan.target.startswith("tusimple-data-repro-")
    assert any("not pinned by digest" in note for note in the_plan.notes)
    with pytest.raises(ValidationError):
        the_plan.backend_config = {}  # type: ignore[misc]

    # the data PVC of the backend config follows the restored volume, the plan's config stays as it was
    pointed = point_at(the_plan, RestoredData(source=snap.ref, volume=f"{NS}/new-pvc", provider="csi",
                                              restored_now=True))
    assert pointed.backend_config is not None and pointed.backend_config["data_pvc"] == "new-pvc"
    assert pointed.rewritten == {"backend_config.data_pvc": {"from": "tusimple-data", "to": "new-pvc"}}
    assert the_plan.backend_config is not None and the_plan.backend_config["data_pvc"] == "tusimple-data"

    # a PVC restores only in its snapshot's namespace: refused in the plan, before anything exists
    cluster.namespace("other")
    with pytest.raises(ReproduceError, match="namespace 'other' differs from the snapshot's 'lane'"):
        plan(read(run_id, tracking), ReproduceOptions(backend_config={"namespace": "other"}), client=tracking,
             image_checker=_present)
    # no backend snapshot of the data: nothing to wait for
    no_snapshot = plan(read(run_id, tracking), ReproduceOptions(backend_config={"snapshot": {"data": False}}),
                       client=tracking, image_checker=_present)
    assert no_snapshot.restore_wait is False and no_snapshot.restore_timeout_s is None
    assert {kind: cluster.list(kind, NS) for kind in kinds} == before
