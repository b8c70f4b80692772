"""A transient snapshot error is not a failure (issue 13).

The real external-snapshotter keeps retrying a snapshot whose creation failed, and ``status.error`` is only the *last
observed* error, cleared on success (kubernetes-csi/external-snapshotter client/apis/volumesnapshot/v1/types.go:184-191;
the double's :class:`~tests.doubles.k8s_emulator.SnapshotController` cites the controller lines). So: the emulator's
controller retries and recovers; the ``csi`` provider waits for ``readyToUse`` until its timeout and then names the last
observed error; a training run whose model snapshot met one retry still records it and ends FINISHED.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mlflow_anf.snapshots import SnapshotError, SnapshotTimeout
from mlflow_anf.snapshots.csi import SnapshotProgress, render_volume_snapshot
from tests.doubles.k8s_emulator import ObjectStore, PvcBinder, SnapshotController
from tests.test_snapshots_csi import FAST_RETRY, make_provider
from tests.support.snapshot_tags import snapshot_fields
from tests.support.waiting import wait_for

QUOTA = ("Failed to create snapshot: failed to take snapshot of the volume pvc-1: \"rpc error: code = "
         "ResourceExhausted desc = ANF snapshot quota reached (255)\"")
BUSY = ("Failed to check and update snapshot content: failed to take snapshot of the volume pvc-1: \"rpc error: "
        "code = Aborted desc = volume is busy\"")


@pytest.fixture
def cluster(k8s_objects: ObjectStore, snapshot_controller: SnapshotController, pvc_binder: PvcBinder) -> ObjectStore:
    k8s_objects.storage_class()
    k8s_objects.snapshot_class(default=True)
    k8s_objects.pvc("data")
    k8s_objects.pvc("model")
    return k8s_objects


def new_snapshot(objects: ObjectStore, name: str, pvc: str, snapshot_class: str | None = None) -> None:
    """A VolumeSnapshot as a user creates it (no status): the controller takes it from there."""
    objects.create(render_volume_snapshot(name, "default", pvc, snapshot_class), validate=True)


def _statuses(objects: ObjectStore, kind: str, namespace: str | None, name: str) -> list[dict[str, Any]]:
    return [(v or {}).get("status") or {} for v in objects.history(kind, namespace, name)]


# ---- the double: the controller retries, the error is the last observed one and clears on success ---------------


def test_a_transient_error_clears_and_the_snapshot_becomes_ready(cluster: ObjectStore,
                                                                 snapshot_controller: SnapshotController) -> None:
    snapshot_controller.behave("flaky", error=BUSY, recover_after=0.15)
    new_snapshot(cluster, "flaky", "data")
    snap = wait_for(lambda: (s := cluster.get("VolumeSnapshot", "default", "flaky")) and (
        s.get("status") or {}).get("readyToUse") and s, "readyToUse")
    assert "error" not in snap["status"]
    history = _statuses(cluster, "VolumeSnapshot", "default", "flaky")
    assert any((h.get("error") or {}).get("message") == BUSY and h.get("readyToUse") is False for h in history)
    content_name = snap["status"]["boundVolumeSnapshotContentName"]
    content = cluster.get("VolumeSnapshotContent", None, content_name)
    assert content["status"]["readyToUse"] is True and "error" not in content["status"]
    assert any((h.get("error") or {}).get("message") == BUSY
               for h in _statuses(cluster, "VolumeSnapshotContent", None, content_name))
    events = [e for e in cluster.list("Event", "default") if e["involvedObject"]["name"] == "flaky"]
    assert [(e["type"], e["reason"], e["message"]) for e in events] == [("Warning", "SnapshotCreationFailed", BUSY)]


def test_a_persistent_error_stays_the_last_observed_one(cluster: ObjectStore,
                                                        snapshot_controller: SnapshotController) -> None:
    snapshot_controller.behave("broken", error=[BUSY, QUOTA], retry_interval=0.02, retry_max=0.05)
    new_snapshot(cluster, "broken", "data")
    wait_for(lambda: ((cluster.get("VolumeSnapshot", "default", "broken").get("status") or {}).get("error") or {}
                      ).get("message") == QUOTA, "the second attempt's error")
    time.sleep(0.3)  # retries go on, failing the same way: nothing changes (the same message is not re-set)
    history = _statuses(cluster, "VolumeSnapshot", "default", "broken")
    messages = [(h.get("error") or {}).get("message") for h in history]
    assert [m for i, m in enumerate(messages) if m and m != messages[i - 1]] == [BUSY, QUOTA]
    assert history[-1]["readyToUse"] is False and history[-1]["error"]["message"] == QUOTA


def test_a_missing_class_is_retried_and_the_snapshot_proceeds_once_it_exists(
        cluster: ObjectStore, snapshot_controller: SnapshotController) -> None:
    """checkAndUpdateSnapshotClass's error requeues the snapshot; a class created later is found and the error
    cleared (pkg/common-controller/snapshot_controller_base.go:391-402, snapshot_controller.go:1303-1306)."""
    new_snapshot(cluster, "early", "data", "late-class")
    error = wait_for(lambda: (cluster.get("VolumeSnapshot", "default", "early").get("status") or {}).get("error"),
                     "the class error")
    assert error["message"] == ('Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io '
                                '"late-class" not found')
    assert "readyToUse" not in cluster.get("VolumeSnapshot", "default", "early")["status"]  # class errors leave it
    cluster.snapshot_class("late-class")
    status = wait_for(lambda: (s := cluster.get("VolumeSnapshot", "default", "early")["status"]).get("readyToUse")
                      and s, "readyToUse after the class appeared")
    assert "error" not in status and status["boundVolumeSnapshotContentName"]


def test_the_default_class_is_the_one_of_the_volumes_driver(k8s_objects: ObjectStore,
                                                              snapshot_controller: SnapshotController) -> None:
    """SetDefaultSnapshotClass keeps the default classes whose driver is the source volume's
    (pkg/common-controller/snapshot_controller.go:1493-1506): another driver's default is ignored, two of the
    same driver are an error."""
    k8s_objects.storage_class()  # provisioner csi.trident.netapp.io
    k8s_objects.pvc("data")
    k8s_objects.snapshot_class("other-default", driver="disk.csi.azure.com", default=True)
    k8s_objects.snapshot_class("trident-default", default=True)
    new_snapshot(k8s_objects, "picked", "data")
    status = wait_for(lambda: (k8s_objects.get("VolumeSnapshot", "default", "picked").get("status") or {}).get(
        "readyToUse"), "readyToUse") and k8s_objects.get("VolumeSnapshot", "default", "picked")
    assert status["spec"]["volumeSnapshotClassName"] == "trident-default"
    k8s_objects.snapshot_class("second-trident-default", default=True)
    new_snapshot(k8s_objects, "ambiguous", "data")
    error = wait_for(lambda: (k8s_objects.get("VolumeSnapshot", "default", "ambiguous").get("status") or {}).get(
        "error"), "the class error")
    assert error["message"] == "Failed to set default snapshot class with error 2 default snapshot classes were found"


# ---- the provider: waits through errors until its timeout, then names the last one ------------------------------


def test_create_waits_through_a_transient_error(kubeconfig_path: Path, cluster: ObjectStore,
                                                snapshot_controller: SnapshotController) -> None:
    snapshot_controller.behave("flaky", error=QUOTA, recover_after=0.3)
    seen: list[SnapshotProgress] = []
    provider = make_provider(kubeconfig_path, progress=seen.append)
    snap = provider.create("data", "flaky")
    assert snap.ready and snap.details["snapshot_handle"]
    assert [p.phase for p in seen][-1] == "ready"
    retried = [p for p in seen if p.phase == "retrying"]
    assert retried and retried[0].message == QUOTA and not retried[0].ready


def test_a_persistent_error_times_out_naming_the_last_observed_error(
        kubeconfig_path: Path, cluster: ObjectStore, snapshot_controller: SnapshotController) -> None:
    snapshot_controller.behave("broken", error=[BUSY, QUOTA], retry_interval=0.05, retry_max=0.1)
    provider = make_provider(kubeconfig_path, ready_timeout_s=1.0, watch_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(SnapshotTimeout) as exc:
        provider.create("data", "broken")
    assert time.monotonic() - started >= 1.0  # it waited the whole ready_timeout_s, not until the first error
    message = str(exc.value)
    assert "VolumeSnapshot default/broken not ready after" in message and "ready_timeout_s=1" in message
    assert f"last observed error: {QUOTA}" in message and BUSY not in message
    assert "kubectl -n default describe volumesnapshot broken" in message
    assert cluster.get("VolumeSnapshot", "default", "broken") is not None  # kept for inspection


def test_a_ready_snapshot_whose_class_was_deleted_still_restores(kubeconfig_path: Path, cluster: ObjectStore) -> None:
    """The controller puts the class error on a ready snapshot without touching readyToUse
    (pkg/common-controller/snapshot_controller_base.go:391,509): the snapshot is still usable; restore goes on, and
    one that is not ready is refused naming its last error."""
    provider = make_provider(kubeconfig_path)
    snap = provider.create("data", "kept")
    cluster.delete("VolumeSnapshotClass", None, "csi-snapclass")
    status = wait_for(lambda: (s := cluster.get("VolumeSnapshot", "default", "kept")["status"]).get("error") and s,
                      "the class error on the ready snapshot")
    assert status["readyToUse"] is True and "csi-snapclass" in status["error"]["message"]
    assert provider.restore(snap, "kept-restored", wait=True) == "default/kept-restored"

    cluster.patch("VolumeSnapshot", "default", "kept", {"status": {"readyToUse": False}})
    with pytest.raises(SnapshotError, match=r"VolumeSnapshot default/kept is not ready to use yet; wait for "
                                            r"readyToUse before restoring \(last observed error: Failed to get"):
        provider.restore(snap, "not-now")


# ---- a training run: one controller retry during the model snapshot does not fail it -------------------------


def test_a_retried_model_snapshot_is_recorded_and_the_run_finishes(
        kubeconfig_path: Path, cluster: ObjectStore, snapshot_controller: SnapshotController, tracking: Any,
        mlflow_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lanedet run's owner (``_owned_run``) around a Lightning fit with the lineage callback on the csi provider:
    the model snapshot meets a controller error that a retry clears; the fit, the model tags and FINISHED stay."""
    pl = pytest.importorskip("pytorch_lightning")
    pytest.importorskip("torch")

    from mlflow_anf.lightning import SnapshotLineage, SnapshotLineageConfig
    from mlflow_anf.vocabulary import parse_snapshot_tags
    from mlflow_anf_lanedet.distributed import stop_signals
    from mlflow_anf_lanedet.train import _owned_run
    from tests.test_lineage_callback import Tiny

    snapshot_controller.behave("model-*", error=QUOTA, recover_after=0.3)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", mlflow_store.experiment_id)  # what `mlflow run` passes
    config = SnapshotLineageConfig(
        provider="csi", provider_options={"kubeconfig": str(kubeconfig_path), "ready_timeout_s": 10,
                                          "poll_interval_s": 0.05, "watch_timeout_s": 5, "retry": FAST_RETRY},
        data_volume="default/data", model_volume="default/model", model_path="model", provenance=False)
    with stop_signals() as stop, _owned_run(stop, True) as run:
        run_id = run.info.run_id
        lineage = SnapshotLineage(config, run_id=run_id, client=tracking)
        pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path / "pl"),
                   callbacks=[lineage]).fit(Tiny())

    info = tracking.get_run(run_id)
    assert info.info.status == "FINISHED"
    refs = parse_snapshot_tags(info.data.tags)
    assert sorted(refs) == ["data", "model"] and refs["model"].volume == "default/model"
    model = cluster.get("VolumeSnapshot", "default", refs["model"].name)
    assert model["status"]["readyToUse"] is True and "error" not in model["status"]
    assert any((h.get("error") or {}).get("message") == QUOTA
               for h in _statuses(cluster, "VolumeSnapshot", "default", refs["model"].name))


def test_mpijob_launcher_model_snapshot_through_a_transient_error(
        k8s_objects: ObjectStore, kubeconfig_path: Path, mlflow_store: Any, sim_project: Path, mpi_operator: Any,
        snapshot_controller: SnapshotController) -> None:
    """The mpijob backend end to end: the data snapshot (before submitting) and the launcher's model snapshot (csi
    provider, in the launcher) each meet a controller error that a retry clears; the run ends FINISHED with both
    recorded."""
    from tests.test_backend_lifecycle import NS, make_config, submit

    k8s_objects.namespace(NS)
    k8s_objects.snapshot_class("anf-snapclass", default=True)
    k8s_objects.pvc("tusimple-data", NS, size="100Gi")
    snapshot_controller.behave("*", error=QUOTA, recover_after=0.3)
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, snapshot={"data": True, "model": True})
    run = submit(cfg, mlflow_store, sim_project)
    assert run.wait() is True
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FINISHED"
    for role in ("data", "model"):
        name = snapshot_fields(info.data.tags)[f"mlflow_anf.snapshot.{role}.name"]
        assert k8s_objects.get("VolumeSnapshot", NS, name)["status"]["readyToUse"] is True
        history = _statuses(k8s_objects, "VolumeSnapshot", NS, name)
        assert any((h.get("error") or {}).get("message") == QUOTA for h in history), role
