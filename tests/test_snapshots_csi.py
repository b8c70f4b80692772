"""The ``csi`` snapshot provider against the Kubernetes API emulator, over HTTPS with the official client.

No mocks: the provider talks to ``tests.doubles.k8s_emulator`` (kmock-based) whose simulated external-snapshotter and PVC
binder play the cluster. Every object the provider creates is validated (the emulator rejects invalid writes with
422, and the tests re-validate the stored VolumeSnapshots and restored PVCs against the CRD / Kubernetes schemas).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from mlflow_anf.k8s import KubeApiError, KubeConfig, RetryPolicy, api_client, call_with_retries
from mlflow_anf.snapshots import (
    InvalidSnapshotName,
    Snapshot,
    SnapshotError,
    SnapshotExists,
    SnapshotLimitExceeded,
    SnapshotNotFound,
    SnapshotProvider,
    SnapshotTimeout,
    SnapshotVerificationError,
    get_provider,
)
from mlflow_anf.snapshots.csi import (
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_RUN_ID,
    LABEL_SOURCE_PVC,
    CsiSnapshotProvider,
    InvalidInput,
    SnapshotProgress,
    render_restore_pvc,
    render_volume_snapshot,
)
from tests.doubles.k8s_emulator import K8sServer, ObjectStore, PvcBinder, SnapshotController
from tests.doubles.k8s_schemas import validate_builtin, validate_crd_object

SNAPSHOTS_PATH = "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots"
PVC_PATH = "/api/v1/namespaces/default/persistentvolumeclaims/data"
FAST_RETRY = {"max_attempts": 4, "base_delay_s": 0.01, "max_delay_s": 0.05}
RUN_LABELS = {LABEL_RUN_ID: "0123456789abcdef0123456789abcdef", "mlflow-anf/experiment-id": "7", LABEL_ROLE: "data"}


@pytest.fixture
def cluster(k8s_objects: ObjectStore, snapshot_controller: SnapshotController, pvc_binder: PvcBinder) -> ObjectStore:
    """A cluster with Trident-on-ANF classes and a Bound 10Gi PVC default/data."""
    k8s_objects.storage_class()
    k8s_objects.snapshot_class(default=True)
    k8s_objects.pvc("data")
    return k8s_objects


def make_provider(kubeconfig: Path, **options: Any) -> CsiSnapshotProvider:
    settings: dict[str, Any] = {"kubeconfig": kubeconfig, "ready_timeout_s": 5, "poll_interval_s": 0.05,
                                "watch_timeout_s": 5, "retry": FAST_RETRY}
    settings.update(options)
    provider = get_provider("csi", **settings)
    assert isinstance(provider, CsiSnapshotProvider)
    return provider


@pytest.fixture
def provider(kubeconfig_path: Path, cluster: ObjectStore) -> CsiSnapshotProvider:
    return make_provider(kubeconfig_path)


def stored(objects: ObjectStore, name: str, namespace: str = "default") -> dict[str, Any]:
    obj = objects.get("VolumeSnapshot", namespace, name)
    assert obj is not None, f"VolumeSnapshot {namespace}/{name} missing"
    return obj


# ---- create ------------------------------------------------------------------------------------------------------


def test_create_waits_for_ready_and_records_the_snapshot(
    provider: CsiSnapshotProvider, cluster: ObjectStore, k8s_server: K8sServer,
    snapshot_controller: SnapshotController, crds_dir: Path,
) -> None:
    snapshot_controller.default.ready_after = 0.3
    seen: list[SnapshotProgress] = []
    provider = CsiSnapshotProvider(provider.config.model_copy(update={"progress": seen.append}))
    mark = k8s_server.mark()
    labels = {**RUN_LABELS, "team": "lane detection/α"}
    snap = provider.create("data", "data-v1", labels=labels)

    assert isinstance(provider, SnapshotProvider)
    obj = stored(cluster, "data-v1")
    content = cluster.get("VolumeSnapshotContent", None, obj["status"]["boundVolumeSnapshotContentName"])
    assert (snap.provider, snap.volume, snap.name, snap.id) == ("csi", "default/data", "data-v1",
                                                                obj["metadata"]["uid"])
    assert snap.ready and snap.size_bytes == 10 * 2**30
    assert snap.details["content"] == content["metadata"]["name"]
    assert snap.details["snapshot_handle"] == content["status"]["snapshotHandle"]
    assert snap.details["restore_size"] == "10Gi" and snap.details["pvc"] == "data"
    assert snap.details["creation_time"] == obj["status"]["creationTime"]
    assert snap.details["snapshot_class"] == "csi-snapclass" and snap.details["driver"] == "csi.trident.netapp.io"
    assert snap.details["source_storage_class"] == "azure-netapp-files"
    assert obj["metadata"]["labels"] == snap.labels == {
        **RUN_LABELS, "team": "lane-detection", LABEL_MANAGED_BY: "mlflow-anf", LABEL_SOURCE_PVC: "data"}
    validate_crd_object(obj, crds_dir)
    assert [p.phase for p in seen] == ["submitted", "bound", "ready"] and seen[-1].restore_size == "10Gi"

    calls = k8s_server.api_calls(mark)
    assert calls["writes"] == 1 <= 3 and calls["watches"] == 1 and calls["faults"] == 0
    writes = [r for r in k8s_server.requests(mark) if r.is_write]
    assert [(w.method, w.plural, w.status) for w in writes] == [("POST", "volumesnapshots", 201)]


def test_api_calls_do_not_depend_on_data_size(kubeconfig_path: Path, cluster: ObjectStore, k8s_server: K8sServer,
                                              snapshot_controller: SnapshotController) -> None:
    cluster.pvc("huge", size="100Ti")
    provider = make_provider(kubeconfig_path)
    counts = []
    for pvc in ("data", "huge"):
        mark = k8s_server.mark()
        snap = provider.create(pvc, f"{pvc}-1")
        counts.append(k8s_server.api_calls(mark))
        assert snap.ready
    assert counts[0] == counts[1] and counts[0]["writes"] == 1
    assert provider.get("huge", "huge-1").size_bytes == 100 * 2**40


def test_generated_name_and_no_wait(provider: CsiSnapshotProvider, cluster: ObjectStore,
                                    snapshot_controller: SnapshotController) -> None:
    snapshot_controller.default.ready_after = None
    snap = provider.create("default/data", wait=False)
    assert snap.name.startswith("data-") and len(snap.name) == len("data-20250101-120000-abcd")
    assert not snap.ready and stored(cluster, snap.name)["spec"]["source"] == {"persistentVolumeClaimName": "data"}


def test_never_ready_times_out_naming_the_snapshot(kubeconfig_path: Path, cluster: ObjectStore,
                                                    snapshot_controller: SnapshotController) -> None:
    snapshot_controller.behave("stuck", ready_after=None)
    provider = make_provider(kubeconfig_path, ready_timeout_s=0.6, watch_timeout_s=1)
    with pytest.raises(SnapshotTimeout) as exc:
        provider.create("data", "stuck")
    message = str(exc.value)
    assert "VolumeSnapshot default/stuck not ready after" in message and "bound to snapcontent-" in message
    assert stored(cluster, "stuck")["status"]["readyToUse"] is False  # kept for inspection


def test_controller_error_is_reported_verbatim(kubeconfig_path: Path, cluster: ObjectStore,
                                               snapshot_controller: SnapshotController) -> None:
    """A persistent controller error: waited for until ready_timeout_s (the controller retries; see
    test_csi_transient_errors.py), then reported verbatim as the last observed error."""
    error = ('Failed to check and update snapshot content: failed to take snapshot of the volume '
             'pvc-1/"data": rpc error: code = ResourceExhausted desc = ANF snapshot quota reached (255)')
    snapshot_controller.behave("bad", error=error)
    provider = make_provider(kubeconfig_path, ready_timeout_s=0.6, watch_timeout_s=1)
    with pytest.raises(SnapshotTimeout) as exc:
        provider.create("data", "bad")
    assert "VolumeSnapshot default/bad not ready after" in str(exc.value)
    assert f"; last observed error: {error}; it is kept" in str(exc.value)


def test_watch_expiry_and_unavailable_watches_are_survived(
    kubeconfig_path: Path, cluster: ObjectStore, k8s_server: K8sServer, snapshot_controller: SnapshotController
) -> None:
    provider = make_provider(kubeconfig_path)
    cluster.pvc("busy")  # other objects change after the snapshot: its own resourceVersion is no safe restart
    snapshot_controller.behave("expiring", ready_after=0.8)
    expire_when_watched(k8s_server, then=lambda: cluster.patch("PersistentVolumeClaim", "default", "busy",
                                                               {"metadata": {"labels": {"touched": "yes"}}}))
    mark = k8s_server.mark()
    assert provider.create("data", "expiring").ready
    log = k8s_server.requests(mark)
    watches = [r for r in log if r.verb == "watch"]
    assert len(watches) == 2  # the expired one, then one from the re-list's resourceVersion
    relists = [r for r in log if r.verb == "list" and r.query.get("fieldSelector") == "metadata.name=expiring"]
    assert len(relists) == 1 and int(watches[1].query["resourceVersion"]) > int(watches[0].query["resourceVersion"])

    k8s_server.fail_next(SNAPSHOTS_PATH, verb="watch", status=500, count=5)
    snapshot_controller.behave("polled", ready_after=0.3)
    mark = k8s_server.mark()
    assert provider.create("data", "polled").ready
    log = k8s_server.requests(mark)
    # a watch that keeps failing (3 times in a row, mlflow_anf.k8s.follow) gives way to polling: no 4th watch
    assert [r.status for r in log if r.verb == "watch"] == [500, 500, 500]
    polls = [r for r in log if r.verb == "list" and r.query.get("fieldSelector") == "metadata.name=polled"]
    assert len(polls) >= 4  # a re-list after each failed watch, then at least one poll


def expire_when_watched(server: K8sServer, then: Any) -> None:
    """In the background: as soon as a watch is open, make an unrelated write (so the watched object's own
    resourceVersion falls behind), then expire every watch and compact the history up to that write."""
    import threading

    def run() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not server.call(lambda: server._api().open_watches):
            time.sleep(0.01)
        then()
        server.expire_watches()

    threading.Thread(target=run, daemon=True).start()


# ---- transient failures ----------------------------------------------------------------------------------------


def test_5xx_and_connection_resets_are_retried_then_succeed(provider: CsiSnapshotProvider, cluster: ObjectStore,
                                                            k8s_server: K8sServer) -> None:
    k8s_server.fail_next(PVC_PATH, status=503, count=2)
    k8s_server.reset_next(SNAPSHOTS_PATH, verb="list")
    k8s_server.fail_next(SNAPSHOTS_PATH, method="POST", status=500)
    mark = k8s_server.mark()
    assert provider.create("data", "flaky").ready
    log = k8s_server.requests(mark)

    def statuses(verb: str, plural: str) -> list[int | None]:
        return [r.status for r in log if r.verb == verb and r.plural == plural]

    assert statuses("get", "persistentvolumeclaims") == [503, 503, 200]
    assert statuses("list", "volumesnapshots") == [0, 200]  # 0: connection reset
    assert statuses("create", "volumesnapshots") == [500, 201]
    assert len(cluster.list("VolumeSnapshot", "default")) == 1


def test_lost_create_response_is_idempotent(provider: CsiSnapshotProvider, cluster: ObjectStore,
                                            k8s_server: K8sServer) -> None:
    k8s_server.reset_next(SNAPSHOTS_PATH, method="POST", after_apply=True)  # created, but the reply never arrives
    mark = k8s_server.mark()
    snap = provider.create("data", "once")
    creates = [r.status for r in k8s_server.requests(mark) if r.verb == "create"]
    assert creates == [0, 409]  # the retry meets its own object and adopts it
    assert snap.ready and snap.id == stored(cluster, "once")["metadata"]["uid"]
    assert len(cluster.list("VolumeSnapshot", "default")) == 1


def test_retries_give_up_clearly_and_create_nothing(kubeconfig_path: Path, cluster: ObjectStore,
                                                    k8s_server: K8sServer) -> None:
    provider = make_provider(kubeconfig_path, retry={**FAST_RETRY, "max_attempts": 3})
    k8s_server.fail_next(SNAPSHOTS_PATH, method="POST", status=500, count=10)
    with pytest.raises(SnapshotError) as exc:
        provider.create("data", "doomed")
    assert "create VolumeSnapshot default/doomed: HTTP 500 InternalError" in str(exc.value)
    assert "gave up after 3 attempts" in str(exc.value)
    assert cluster.list("VolumeSnapshot", "default") == []


def test_retry_after_is_honoured(kubeconfig_path: Path, cluster: ObjectStore, k8s_server: K8sServer) -> None:
    core = client.CoreV1Api(api_client(KubeConfig(kubeconfig=kubeconfig_path)))
    k8s_server.fail_next(PVC_PATH, status=429, retry_after=3, count=2)
    sleeps: list[float] = []
    pvc = call_with_retries(core.read_namespaced_persistent_volume_claim, "data", "default", op="get PVC",
                            policy=RetryPolicy(max_attempts=3, max_retry_after_s=60), sleep=sleeps.append)
    assert pvc.metadata.name == "data" and sleeps == [3.0, 3.0]
    k8s_server.fail_next(PVC_PATH, status=429, retry_after=120)
    sleeps.clear()
    call_with_retries(core.read_namespaced_persistent_volume_claim, "data", "default", op="get PVC",
                      policy=RetryPolicy(max_retry_after_s=5), sleep=sleeps.append)
    assert sleeps == [5.0]  # capped
    k8s_server.fail_next(PVC_PATH, status=503, count=3)
    sleeps.clear()
    call_with_retries(core.read_namespaced_persistent_volume_claim, "data", "default", op="get PVC",
                      policy=RetryPolicy(base_delay_s=1, max_delay_s=3, jitter=0.5), sleep=sleeps.append,
                      rng=lambda: 1.0)
    assert sleeps == [0.5, 1.0, 1.5]  # exponential, capped at 3, half jittered away (rng at its maximum)
    with pytest.raises(KubeApiError) as exc:
        call_with_retries(core.read_namespaced_persistent_volume_claim, "nope", "default", op="get PVC nope",
                          sleep=sleeps.append)
    assert exc.value.not_found and exc.value.attempts == 1  # 404 is not retried

    provider = make_provider(kubeconfig_path)  # end to end, with a short Retry-After
    k8s_server.fail_next(SNAPSHOTS_PATH, method="POST", status=429, retry_after=0.05)
    assert provider.create("data", "throttled").ready


# ---- idempotency, 404s, bad input --------------------------------------------------------------------------------


def test_existing_name_is_adopted_or_refused(provider: CsiSnapshotProvider, cluster: ObjectStore,
                                             k8s_server: K8sServer) -> None:
    cluster.pvc("other")
    cluster.volume_snapshot("taken", "other")
    with pytest.raises(SnapshotExists, match="default/taken already exists and is a snapshot of PVC 'other'"):
        provider.create("data", "taken")
    cluster.volume_snapshot("mine", "data")
    mark = k8s_server.mark()
    again = provider.create("data", "mine")
    assert again.id == stored(cluster, "mine")["metadata"]["uid"]
    assert k8s_server.api_calls(mark)["writes"] == 0


def test_missing_things_give_clear_errors_and_create_nothing(kubeconfig_path: Path, cluster: ObjectStore,
                                                             k8s_server: K8sServer) -> None:
    provider = make_provider(kubeconfig_path)
    mark = k8s_server.mark()
    with pytest.raises(SnapshotNotFound, match="PersistentVolumeClaim 'gone' not found in namespace 'default'"):
        provider.create("gone", "s1")
    with pytest.raises(SnapshotNotFound, match="namespace 'ghost' not found"):
        provider.create("ghost/data", "s1")
    cluster.pvc("waiting", phase="Pending")
    with pytest.raises(SnapshotError, match="waiting: PersistentVolumeClaim is Pending, not Bound"):
        provider.create("waiting", "s1")
    with pytest.raises(SnapshotNotFound, match=r"VolumeSnapshotClass 'fast' not found \(available: csi-snapclass\)"):
        make_provider(kubeconfig_path, snapshot_class="fast").create("data", "s1")
    cluster.pvc("blob", provisioner="blob.csi.azure.com")
    with pytest.raises(SnapshotNotFound, match="no default VolumeSnapshotClass for driver 'blob.csi.azure.com'"):
        provider.create("blob", "s1")
    with pytest.raises(SnapshotError, match="is for driver 'csi.trident.netapp.io', but PVC default/blob"):
        make_provider(kubeconfig_path, snapshot_class="csi-snapclass").create("blob", "s1")
    assert k8s_server.api_calls(mark)["writes"] == 0

    with pytest.raises(SnapshotNotFound, match="VolumeSnapshot default/nope not found"):
        provider.get("data", "nope")
    with pytest.raises(SnapshotNotFound, match="VolumeSnapshot default/nope not found"):
        provider.delete("data", "nope")
    cluster.volume_snapshot("theirs", "blob")
    with pytest.raises(SnapshotNotFound, match="is a snapshot of PVC 'blob', not 'data'"):
        provider.get("data", "theirs")
    with pytest.raises(SnapshotError, match="refusing to delete"):
        provider.delete("data", "theirs")


def test_snapshot_api_not_installed_is_named(kubeconfig_path: Path, k8s_objects: ObjectStore,
                                             k8s_server: K8sServer, tmp_path: Path) -> None:
    bare = K8sServer(tls=k8s_server.tls).start()  # no CRDs
    try:
        bare.objects.pvc("data")
        provider = make_provider(bare.write_kubeconfig(tmp_path / "bare"))
        with pytest.raises(SnapshotError, match="API is not served - install the external-snapshotter CRDs"):
            provider.create("data", "s1")
    finally:
        bare.stop()


@pytest.mark.parametrize("volume, name, labels, problem", [
    ("data", "Bad_Name", None, "name: 'Bad_Name' is not a valid snapshot name"),
    ("a/b/c", "s1", None, "volume: 'a/b/c' has more than one '/'"),
    ("UPPER/data", "s1", None, "volume (namespace): 'UPPER' is not a valid DNS-1123 label"),
    ("default/data_1", "s1", None, "volume (PVC name): 'data_1' is not a valid DNS-1123 subdomain"),
    ("", "s1", None, "volume: expected 'namespace/pvc' or 'pvc'"),
    ("data", "s1", {"bad key!": "x"}, "labels['bad key!']: 'bad key!' is not a valid label key"),
])
def test_invalid_input_is_refused_before_any_request(provider: CsiSnapshotProvider, k8s_server: K8sServer,
                                                     volume: str, name: str, labels: Any, problem: str) -> None:
    mark = k8s_server.mark()
    with pytest.raises((InvalidInput, InvalidSnapshotName)) as exc:
        provider.create(volume, name, labels=labels)
    assert problem in str(exc.value) and isinstance(exc.value, ValueError)
    assert k8s_server.requests(mark) == []


def test_config_errors_name_the_option(kubeconfig_path: Path) -> None:
    from mlflow_anf.snapshots import ProviderConfigError

    with pytest.raises(ProviderConfigError, match="unknown option 'snapshotclass'"):
        get_provider("csi", snapshotclass="x")
    with pytest.raises(ProviderConfigError, match="option 'namespace'"):
        get_provider("csi", namespace="Not_Valid")
    with pytest.raises(ProviderConfigError, match="option 'keep_last'"):
        get_provider("csi", keep_last=0)
    provider = make_provider(kubeconfig_path.parent / "missing-kubeconfig")
    with pytest.raises(SnapshotError, match="kubeconfig: no file at '.*missing-kubeconfig'"):
        provider.list("data")


# ---- limits, retention, list, delete -------------------------------------------------------------------------


def test_volume_snapshot_limit_is_refused_before_creating(kubeconfig_path: Path, cluster: ObjectStore,
                                                          k8s_server: K8sServer) -> None:
    for i in range(255):
        cluster.volume_snapshot(f"old-{i:03d}", "data")
    cluster.pvc("other")
    cluster.volume_snapshot("other-1", "other")
    provider = make_provider(kubeconfig_path)
    mark = k8s_server.mark()
    with pytest.raises(SnapshotLimitExceeded, match="255 VolumeSnapshots exist, the limit is 255 per volume"):
        provider.create("data", "one-too-many")
    lists = [r for r in k8s_server.requests(mark) if r.verb == "list" and r.plural == "volumesnapshots"]
    assert len(lists) == 2 and k8s_server.api_calls(mark)["writes"] == 0  # 256 items in pages of 250
    assert provider.create("other", "other-2").ready  # the limit is per volume
    with pytest.raises(SnapshotLimitExceeded, match="limit is 2 per volume"):
        make_provider(kubeconfig_path, max_snapshots_per_volume=2).create("other", "other-3")


def test_keep_last_prunes_only_old_managed_snapshots(kubeconfig_path: Path, cluster: ObjectStore,
                                                     k8s_server: K8sServer) -> None:
    cluster.volume_snapshot("by-hand", "data")  # not ours: never pruned
    cluster.pvc("other")
    provider = make_provider(kubeconfig_path, keep_last=2)
    provider.create("other", "other-1")
    for i in range(1, 5):
        mark = k8s_server.mark()
        provider.create("data", f"run-{i}")
        writes = [(r.method, r.name) for r in k8s_server.requests(mark) if r.is_write]
        assert len(writes) <= 3
        if i > 2:
            assert writes == [("POST", None), ("DELETE", f"run-{i - 2}")]
    remaining = sorted(s["metadata"]["name"] for s in cluster.list("VolumeSnapshot", "default")
                       if not s["metadata"].get("deletionTimestamp"))
    assert remaining == ["by-hand", "other-1", "run-3", "run-4"]
    assert make_provider(kubeconfig_path).prune("data", keep_last=1) == ["run-3"]


def test_keep_last_spares_the_runs_other_snapshots_and_unready_ones(kubeconfig_path: Path, cluster: ObjectStore,
                                                                     k8s_server: K8sServer) -> None:
    """keep_last=1 with the data and the model snapshot of one run on the same PVC: the model snapshot's prune must
    not delete the run's data snapshot; nor an older managed snapshot that is not ready (another run may be taking
    it) - the rule of mlflow_anf.backend.budget.prune_candidates."""
    managed = {LABEL_MANAGED_BY: "mlflow-anf"}
    cluster.volume_snapshot("old-ready", "data", labels=managed)
    cluster.volume_snapshot("other-run-pending", "data", labels=managed, ready=False)
    provider = make_provider(kubeconfig_path, keep_last=1)
    provider.create("data", "run-data", labels=RUN_LABELS)
    mark = k8s_server.mark()
    provider.create("data", "run-model", labels={**RUN_LABELS, LABEL_ROLE: "model"})
    deletes = [r.name for r in k8s_server.requests(mark) if r.method == "DELETE"]
    assert "run-data" not in deletes and "other-run-pending" not in deletes
    remaining = sorted(s["metadata"]["name"] for s in cluster.list("VolumeSnapshot", "default")
                       if not s["metadata"].get("deletionTimestamp"))
    assert remaining == ["other-run-pending", "run-data", "run-model"]


def test_list_by_pvc_run_label_and_selector(provider: CsiSnapshotProvider, cluster: ObjectStore) -> None:
    cluster.pvc("models")
    provider.create("data", "d1", labels={LABEL_RUN_ID: "run-a", LABEL_ROLE: "data"})
    provider.create("models", "m1", labels={LABEL_RUN_ID: "run-a", LABEL_ROLE: "model"})
    provider.create("data", "d2", labels={LABEL_RUN_ID: "run-b", LABEL_ROLE: "data"})
    cluster.volume_snapshot("manual", "data")

    def names(snaps: list[Snapshot]) -> list[str]:
        return [s.name for s in snaps]

    assert sorted(names(provider.list("data"))) == ["d1", "d2", "manual"]
    assert names(provider.list("data", managed_only=True)) == ["d1", "d2"]
    assert sorted(names(provider.list(run_id="run-a"))) == ["d1", "m1"]
    assert names(provider.list(labels={LABEL_ROLE: "model"})) == ["m1"]
    assert names(provider.list("data", selector=f"{LABEL_RUN_ID} in (run-b, run-c)")) == ["d2"]
    assert all(s.details.get("snapshot_handle") for s in provider.list("models"))  # contents joined in one list
    with pytest.raises(InvalidInput, match="label selector"):
        provider.list(selector="role in data")


def test_delete_and_wait_until_gone(provider: CsiSnapshotProvider, cluster: ObjectStore) -> None:
    snap = provider.create("data", "temp")
    content = snap.details["content"]
    provider.delete("data", "temp", wait=True)
    assert cluster.get("VolumeSnapshot", "default", "temp") is None
    assert cluster.get("VolumeSnapshotContent", None, content) is None
    assert provider.list("data") == []


# ---- restore and verify --------------------------------------------------------------------------------------


def test_restore_creates_a_pvc_from_the_snapshot(provider: CsiSnapshotProvider, cluster: ObjectStore,
                                                 k8s_server: K8sServer) -> None:
    snap = provider.create("data", "v1")
    mark = k8s_server.mark()
    assert provider.restore(snap, "data-restored", wait=True) == "default/data-restored"
    pvc = cluster.get("PersistentVolumeClaim", "default", "data-restored")
    assert pvc["spec"]["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                         "name": "v1"}
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert pvc["spec"]["storageClassName"] == "azure-netapp-files"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["status"]["phase"] == "Bound"
    validate_builtin(pvc)
    assert [r.method for r in k8s_server.requests(mark) if r.is_write] == ["POST"]

    assert provider.restore(snap, "default/bigger", size="12Gi", storage_class="anf-premium",
                            access_modes=("ReadWriteOnce",)) == "default/bigger"
    bigger = cluster.get("PersistentVolumeClaim", "default", "bigger")
    assert bigger["spec"]["storageClassName"] == "anf-premium" and bigger["spec"]["accessModes"] == ["ReadWriteOnce"]
    mark = k8s_server.mark()
    with pytest.raises(InvalidInput, match="size: 5Gi is smaller than the snapshot's restoreSize 10Gi"):
        provider.restore(snap, "small", size="5Gi")
    with pytest.raises(InvalidInput, match="size: '10 GB' is not a Kubernetes quantity"):
        provider.restore(snap, "odd", size="10 GB")
    with pytest.raises(InvalidInput, match="a PVC can only be restored from a snapshot in its own namespace"):
        provider.restore(snap, "elsewhere/copy")
    assert provider.restore(snap, "bigger", size="12Gi") == "default/bigger"  # a repeated restore is idempotent
    with pytest.raises(SnapshotExists, match="PersistentVolumeClaim default/data already exists"):
        provider.restore(snap, "data")  # not restored from this snapshot: refused
    assert k8s_server.api_calls(mark)["writes"] == 2  # only the two creates answered 409 reached the server


def test_restore_survives_a_deleted_source_pvc_and_checks_identity(provider: CsiSnapshotProvider,
                                                                   cluster: ObjectStore) -> None:
    snap = provider.create("data", "keep")
    cluster.delete("PersistentVolumeClaim", "default", "data")
    assert [s.name for s in provider.list("data")] == ["keep"]
    assert provider.restore(snap, "revived") == "default/revived"  # storage class recorded on the snapshot
    assert cluster.get("PersistentVolumeClaim", "default", "revived")["spec"]["storageClassName"] == \
        "azure-netapp-files"
    with pytest.raises(SnapshotNotFound, match="PersistentVolumeClaim 'data' not found"):
        provider.create("data", "after")

    cluster.delete("VolumeSnapshot", "default", "keep", force=True)
    cluster.volume_snapshot("keep", "data")  # same name, different object
    with pytest.raises(SnapshotVerificationError, match="name reused"):
        provider.restore(snap, "wrong")
    with pytest.raises(InvalidInput, match="records no storage class; pass storage_class="):
        provider.restore(snap, "trusting", verify=False)  # the look-alike has no record of a class
    assert provider.restore(snap, "trusting", verify=False, storage_class="anf") == "default/trusting"


def test_verify_checks_snapshot_and_content(provider: CsiSnapshotProvider, cluster: ObjectStore) -> None:
    snap = provider.create("data", "checked")
    result = provider.verify(snap)
    assert result.ok and result.problems == [] and result.checked >= 8
    cluster.patch("VolumeSnapshot", "default", "checked", {"status": {"error": {"message": "disk on fire"}}})
    cluster.delete("VolumeSnapshotContent", None, snap.details["content"])
    result = provider.verify(snap)
    assert not result.ok
    assert any("reports an error: disk on fire" in p for p in result.problems)
    assert any(f"VolumeSnapshotContent {snap.details['content']} of" in p for p in result.problems)
    cluster.delete("VolumeSnapshot", "default", "checked", force=True)
    assert provider.verify(snap).problems == ["VolumeSnapshot default/checked no longer exists"]


def test_rendered_manifests_are_valid(crds_dir: Path) -> None:
    snapshot = render_volume_snapshot("s1", "ml", "data", "csi-snapclass",
                                      labels={LABEL_MANAGED_BY: "mlflow-anf"}, annotations={"a/b": "c"})
    validate_crd_object(snapshot, crds_dir)
    validate_crd_object(render_volume_snapshot("s1", "ml", "data"), crds_dir)  # default class
    pvc = render_restore_pvc("restored", "ml", "s1", 10 * 2**30, storage_class="azure-netapp-files")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    validate_builtin(pvc)


# ---- connection modes and secrets ----------------------------------------------------------------------------


def test_namespace_and_in_cluster_service_account(k8s_server: K8sServer, cluster: ObjectStore, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.namespace("ml")
    cluster.pvc("data", namespace="ml")
    kubeconfig = k8s_server.write_kubeconfig(tmp_path / "ml-kubeconfig", namespace="ml")
    assert make_provider(kubeconfig).create("data", "from-context").volume == "ml/data"

    sa_dir = k8s_server.write_service_account(tmp_path / "serviceaccount", namespace="ml")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", k8s_server.host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(k8s_server.port))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "does-not-exist"))
    in_cluster = make_provider(None, service_account_dir=sa_dir)  # in_cluster="auto" finds the pod's account
    assert in_cluster.config.kube().use_in_cluster()
    snap = in_cluster.create("data", "from-pod")
    assert snap.volume == "ml/data" and snap.ready
    with pytest.raises(SnapshotError, match="kubeconfig: no file at"):
        make_provider(None, service_account_dir=sa_dir, in_cluster=False).list("data")


def test_tokens_never_reach_logs_or_errors(k8s_server: K8sServer, cluster: ObjectStore, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture,
                                           snapshot_controller: SnapshotController) -> None:
    caplog.set_level(logging.DEBUG)
    canary = k8s_server.token
    kubeconfig = k8s_server.write_kubeconfig(tmp_path / "kubeconfig")
    assert canary in kubeconfig.read_text()
    provider = make_provider(kubeconfig, retry={**FAST_RETRY, "max_attempts": 2}, ready_timeout_s=1, watch_timeout_s=1)
    k8s_server.fail_next(PVC_PATH, status=503)
    k8s_server.reset_next(SNAPSHOTS_PATH, verb="list")
    snapshot_controller.behave("broken", error="controller failure")
    texts = [repr(provider), repr(provider.config)]
    assert provider.create("data", "ok").ready
    for call in (lambda: provider.create("data", "broken"), lambda: provider.create("gone", "x")):
        with pytest.raises(SnapshotError) as exc:
            call()
        texts += [str(exc.value), repr(exc.value)]
    k8s_server.fail_next(SNAPSHOTS_PATH, method="POST", status=500, count=5)
    with pytest.raises(SnapshotError) as exc:
        provider.create("data", "exhausted")
    texts += [str(exc.value), repr(exc.value), str(exc.value.__cause__), str(exc.value.__context__)]

    wrong = make_provider(k8s_server.write_kubeconfig(tmp_path / "wrong", token=canary[::-1]))
    with pytest.raises(SnapshotError) as exc:
        wrong.create("data", "denied")
    assert "HTTP 401 Unauthorized" in str(exc.value) and "RBAC" in str(exc.value)
    texts += [str(exc.value), repr(exc.value)]
    assert "retrying" in caplog.text  # the retries were logged ...
    for text in [caplog.text, *texts]:
        assert canary not in text and canary[::-1] not in text  # ... without credentials


def test_kubeconfig_namespace_default_and_explicit_override(kubeconfig_path: Path, cluster: ObjectStore) -> None:
    provider = make_provider(kubeconfig_path, namespace="ml")
    assert provider.namespace == "ml"
    with pytest.raises(SnapshotNotFound, match="namespace 'ml' not found"):
        provider.create("data", "s1")
    assert make_provider(kubeconfig_path).namespace == "default"
    conf = client.Configuration()
    config.load_kube_config(str(kubeconfig_path), client_configuration=conf, persist_config=False)
    assert conf.host.startswith("https://127.0.0.1:")


# ---- pure helpers of mlflow_anf.k8s ----------------------------------------------------------------------------


def test_quantities_labels_and_names() -> None:
    from mlflow_anf.k8s import (
        format_quantity,
        parse_quantity,
        sanitize_label_value,
        validate_dns1123_label,
        validate_label_key,
    )

    assert [parse_quantity(q) for q in ("10Gi", "1.5Ki", "500M", "1e3", "100m", 42)] == [
        10 * 2**30, 1536, 500_000_000, 1000, 1, 42]
    assert [format_quantity(n) for n in (10 * 2**30, 100 * 2**40, 1536, 1000)] == ["10Gi", "100Ti", "1536", "1000"]
    for bad in ("10 GB", "-1Gi", "Gi", ""):
        with pytest.raises(ValueError, match="size: .* is not a Kubernetes quantity"):
            parse_quantity(bad, "size")
    assert sanitize_label_value("lane detection/α") == "lane-detection"
    assert sanitize_label_value("0123456789abcdef0123456789abcdef") == "0123456789abcdef0123456789abcdef"
    long_a, long_b = sanitize_label_value("x" * 70 + "a"), sanitize_label_value("x" * 70 + "b")
    assert len(long_a) == 63 and long_a != long_b  # truncated, still distinct
    assert validate_label_key("mlflow-anf/run-id") == "mlflow-anf/run-id"
    for key in ("Bad/run", "a/" + "x" * 64, "-x"):
        with pytest.raises(ValueError, match="not a valid label key"):
            validate_label_key(key)
    with pytest.raises(ValueError, match="namespace: 'a.b' is not a valid DNS-1123 label"):
        validate_dns1123_label("a.b", "namespace")


def test_kube_config_resolves_mode_and_backoff_is_bounded(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    auto = KubeConfig(service_account_dir=sa)
    assert auto.use_in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert not auto.use_in_cluster({})
    assert not KubeConfig(service_account_dir=sa, in_cluster=False).use_in_cluster({"KUBERNETES_SERVICE_HOST": "h"})
    assert KubeConfig(in_cluster="yes").in_cluster == "true"
    assert KubeConfig(kubeconfig=tmp_path / "k").kubeconfig_location({"KUBECONFIG": "/x"}) == str(tmp_path / "k")
    assert KubeConfig().kubeconfig_location({"KUBECONFIG": "/a:/b"}) == "/a:/b"
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4, jitter=0.5)
    assert [policy.backoff(n, rng=lambda: 0.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [policy.backoff(n, rng=lambda: 1.0) for n in range(1, 6)] == [0.25, 0.5, 1.0, 2.0, 2.0]
