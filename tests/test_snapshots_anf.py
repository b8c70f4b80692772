"""The anf provider over the real azure-mgmt-netapp SDK, talking HTTPS to the local ARM emulator (no mocks)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import traceback

import pytest
from azure.core.credentials import AccessToken

from tests.doubles.arm_emulator import ACCOUNT, GIB, RG, ArmEmulator, seed_ml_estate
from mlflow_anf.snapshots import ProviderConfigError, get_provider
from mlflow_anf.snapshots.anf import (
    RESTORE_COPIED_PROPERTIES,
    AnfApiError,
    AnfArm,
    AnfConfig,
    AnfInputError,
    AnfNotFound,
    AnfSnapshotProvider,
    AnfVolumes,
    RevertNotConfirmed,
    VolumeRef,
    parse_volume_id,
    volume_for_pv,
)
from mlflow_anf.snapshots.anf.volumes import pool_change_problems, restore_body
from mlflow_anf.snapshots.base import (
    InvalidSnapshotName,
    SnapshotLimitExceeded,
    SnapshotNotFound,
    SnapshotProvider,
    SnapshotTimeout,
    SnapshotVerificationError,
)

CANARY_TOKEN = "CANARY-token-5d41402abc4b2a76"
CANARY_SECRET = "CANARY-secret-7d793037a0760186"
CANARY_FEDERATED = "CANARY-federated-9e107d9d372bb682"
CANARY_CONFIG = "CANARY-config-e4da3b7fbbce2345"
CANARIES = (CANARY_TOKEN, CANARY_SECRET, CANARY_FEDERATED, CANARY_CONFIG)


class StaticTokenCredential:
    """A TokenCredential that returns one fixed token (what a test needs; no AAD round trip)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


@pytest.fixture
def emu():
    with ArmEmulator() as emulator:
        emulator.allow_token(CANARY_TOKEN)
        seed_ml_estate(emulator)
        yield emulator


def options(emu: ArmEmulator, **overrides: object) -> dict[str, object]:
    opts: dict[str, object] = {
        "subscription_id": emu.subscription_id, "resource_group": RG, "account": ACCOUNT, "pool": "premium",
        "base_url": emu.base_url, "ca_bundle": emu.ca_file, "polling_interval_s": 0.01, "retry_total": 2,
        "retry_backoff_factor": 0.01, "retry_backoff_max_s": 0.05, "read_timeout_s": 10,
    }
    opts.update(overrides)
    return opts


def make(emu: ArmEmulator, **overrides: object) -> AnfSnapshotProvider:
    return AnfSnapshotProvider(AnfConfig(**options(emu, **overrides)), credential=StaticTokenCredential(CANARY_TOKEN))


def writes(emu: ArmEmulator) -> list[tuple[str, str]]:
    return [(r.method, r.path.rsplit("/", 2)[-2] + "/" + r.path.rsplit("/", 1)[-1]) for r in emu.writes()]


# ------------------------------------------------------------------------------------------------ snapshot lifecycle
def test_create_list_get_delete_with_lro_polling(emu):
    emu.lro_polls = 3
    p = make(emu)
    assert isinstance(p, SnapshotProvider)
    snap = p.create("data", "epoch-1")
    assert (snap.provider, snap.volume, snap.name, snap.ready) == ("anf", "premium/data", "epoch-1", True)
    arm = emu.snapshots[snap.id.lower()]
    assert snap.id == arm["id"] and snap.details["snapshot_id"] == arm["properties"]["snapshotId"]
    assert snap.details["location"] == "westeurope" and snap.details["provisioning_state"] == "Succeeded"
    assert snap.created.tzinfo is not None and snap.created.microsecond > 0  # 7-digit ARM fraction parsed
    # the PUT answered 201 + Azure-AsyncOperation while Creating; the SDK polled it 3 times, then GOT the result
    assert emu.count("PUT", "/snapshots/epoch-1$") == 1
    assert emu.count("GET", "/operationStatuses/") == 3
    assert writes(emu) == [("PUT", "snapshots/epoch-1")]

    second = p.create("premium/data", "epoch-2")
    assert [s.name for s in p.list("data")] == ["epoch-1", "epoch-2"]
    assert [s.name for s in p.list()] == ["epoch-1", "epoch-2"]  # whole account: other volumes have none
    assert p.get("data", "epoch-2") == second.model_copy(update={"created": p.get("data", "epoch-2").created})

    p.delete("data", "epoch-1")
    assert emu.snapshot_names(RG, ACCOUNT, "premium", "data") == ["epoch-2"]
    with pytest.raises(SnapshotNotFound, match="epoch-1"):
        p.get("data", "epoch-1")
    with pytest.raises(SnapshotNotFound):
        p.delete("data", "epoch-1")


def test_generated_name_and_labels_refused(emu):
    p = make(emu)
    snap = p.create("data")
    assert snap.name.startswith("mlflow-anf-") and snap.name in emu.snapshot_names(RG, ACCOUNT, "premium", "data")
    emu.clear_requests()
    with pytest.raises(AnfInputError, match="labels"):
        p.create("data", "x", labels={"run": "1"})
    with pytest.raises(AnfInputError, match="labels"):
        p.list("data", labels={"run": "1"})
    assert emu.requests == []


def test_429_retry_after_is_honoured(emu):
    emu.inject("PUT", "/snapshots/", status=429, retry_after="1")
    snap = make(emu).create("data", "throttled")
    assert snap.ready
    puts = [r for r in emu.requests if r.method == "PUT"]
    assert [r.status for r in puts] == [429, 201]
    assert puts[1].at - puts[0].at >= 0.9  # waited Retry-After (the backoff factor alone would be ~0.01 s)


def test_5xx_and_reset_are_retried_then_succeed(emu):
    emu.inject("GET", "/volumes/data/snapshots$", status=503, times=2)
    emu.inject("PUT", "/snapshots/", status=500)
    emu.inject("GET", "/operationStatuses/", kind="reset")
    snap = make(emu).create("data", "flaky")
    assert snap.ready
    assert [r.status for r in emu.requests if r.method == "PUT"] == [500, 201]
    assert emu.snapshot_names(RG, ACCOUNT, "premium", "data") == ["flaky"]


def test_5xx_gives_up_clearly(emu):
    emu.inject("GET", "/snapshots/kept$", status=500, times=100, message="The service is unavailable (test).")
    with pytest.raises(AnfApiError) as info:
        make(emu, retry_total=2).get("data", "kept")
    text = str(info.value)
    assert "get snapshot anf:premium/data@kept" in text and "HTTP 500" in text and "InternalServerError" in text
    assert "The service is unavailable (test)." in text and "retry_total=2" in text
    assert info.value.status_code == 500
    assert emu.count("GET", "/snapshots/kept$") == 3  # 1 try + 2 retries


def test_unreachable_endpoint_is_an_api_error(emu):
    emu.inject("GET", "/snapshots$", kind="reset", times=100)
    with pytest.raises(AnfApiError, match="cannot reach https://127.0.0.1"):
        make(emu, retry_total=1).list("data")


def test_lost_answer_then_409_adopts_the_snapshot(emu):
    # the first PUT lands server-side but its answer is lost; the SDK re-sends it, ARM says 409, we adopt
    emu.inject("PUT", "/snapshots/once$", kind="drop_response")
    snap = make(emu).create("data", "once")
    assert snap.details.get("adopted") is True and snap.ready
    assert [r.status for r in emu.requests if r.method == "PUT"] == [201, 409]
    assert emu.snapshot_names(RG, ACCOUNT, "premium", "data") == ["once"]


def test_existing_name_is_adopted_without_a_write(emu):
    emu.add_snapshot(RG, ACCOUNT, "premium", "data", "nightly")
    emu.clear_requests()
    snap = make(emu).create("data", "nightly")
    assert snap.details["adopted"] is True and writes(emu) == []
    emu.add_snapshot(RG, ACCOUNT, "premium", "data", "broken")["properties"]["provisioningState"] = "Failed"
    with pytest.raises(AnfApiError, match="exists but is 'Failed'"):
        make(emu).create("data", "broken")
    assert writes(emu) == []


def test_conflict_that_is_not_ours_is_reported(emu):
    emu.inject("PUT", "/snapshots/", status=409, code="OperationInProgress",
               message="Another operation is in progress on the volume.")
    with pytest.raises(AnfApiError, match="HTTP 409 OperationInProgress: Another operation is in progress"):
        make(emu).create("data", "busy")


def test_not_found_errors(emu):
    p = make(emu)
    with pytest.raises(AnfNotFound, match="volume 'premium/ghost' not found"):
        p.create("ghost", "s")
    with pytest.raises(SnapshotNotFound, match="anf:premium/data@nope: no such snapshot"):
        p.get("data", "nope")
    with pytest.raises(SnapshotNotFound):
        p.list("standard/ghost")


def test_lro_timeout_and_failure(emu):
    emu.hang_operations = True
    with pytest.raises(SnapshotTimeout, match="lro_timeout_s=0.3"):
        make(emu, lro_timeout_s=0.3).create("data", "slow")
    emu.hang_operations = False
    emu.fail_operations = ("InternalServerError", "Snapshot creation failed on the storage system.")
    with pytest.raises(AnfApiError, match="create snapshot anf:premium/data@broken"):
        make(emu).create("data", "broken")


def test_snapshot_limit_is_enforced_before_any_write(emu):
    emu.page_size = 100  # 255 snapshots come back in three pages
    for i in range(255):
        emu.add_snapshot(RG, ACCOUNT, "premium", "data", f"s{i:03d}")
    emu.clear_requests()
    p = make(emu)
    with pytest.raises(SnapshotLimitExceeded, match="255 snapshots"):
        p.create("data", "one-too-many")
    assert writes(emu) == [] and emu.count("GET", "/snapshots$") == 3
    assert p.create("data", "s254").details["adopted"] is True  # an existing name is still adopted
    small = make(emu, max_snapshots_per_volume=3)
    emu.add_volume(RG, ACCOUNT, "premium", "tiny")
    for name in ("a", "b", "c"):
        small.create("tiny", name)
    with pytest.raises(SnapshotLimitExceeded, match="limit 3"):
        small.create("tiny", "d")


@pytest.mark.parametrize("bad", ["", "Upper", "under_score", "-lead", "trail-", "a" * 254, "sp ace"])
def test_invalid_snapshot_names_send_nothing(emu, bad):
    p = make(emu)
    with pytest.raises(InvalidSnapshotName):
        p.create("data", bad)  # the names mlflow-anf gives are DNS-1123 (every provider takes them)
    assert emu.requests == []
    # reads take every name ANF gives its own snapshots (policies, portal: upper case, '_', '.'); see
    # tests/test_anf_fidelity.py. Only names no ANF snapshot can have are refused before a call.
    if bad in ("", "-lead", "sp ace"):
        with pytest.raises(InvalidSnapshotName):
            p.get("data", bad)
        assert emu.requests == []
    else:
        with pytest.raises(SnapshotNotFound):
            p.get("data", bad)


@pytest.mark.parametrize("bad", ["a/b/c/d", "premium/1data", "../data", "premium/", "other-account/premium/data",
                                 "/subscriptions/x/resourceGroups/rg/providers/Microsoft.NetApp/netAppAccounts/"
                                 "anf-ml/capacityPools/premium/volumes/data"])
def test_invalid_volume_ids(emu, bad):
    with pytest.raises(AnfInputError):
        make(emu).create(bad, "s")
    assert emu.requests == []


def test_volume_id_forms():
    cfg = AnfConfig(subscription_id="00000000-0000-4000-8000-000000000001", resource_group="rg-ml",
                    account="anf-ml", pool="premium")
    arm = ("/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/RG-ML/providers/Microsoft.NetApp/"
           "netAppAccounts/anf-ml/capacityPools/standard/volumes/data")
    assert [parse_volume_id(v, cfg).id for v in ("data", "premium/data", "anf-ml/standard/data", arm)] == [
        "premium/data", "premium/data", "standard/data", "standard/data"]
    with pytest.raises(AnfInputError, match="has no pool"):
        parse_volume_id("data", cfg.model_copy(update={"pool": None}))


def test_verify(emu):
    p = make(emu)
    snap = p.create("data", "v1")
    assert p.verify(snap).ok
    p.delete("data", "v1")
    p.create("data", "v1")  # same name, different snapshot
    result = p.verify(snap)
    assert not result.ok and "deleted and re-created" in result.problems[0]
    p.delete("data", "v1")
    assert not p.verify(snap).ok


# ------------------------------------------------------------------------------------------------ restore
def test_restore_to_new_volume_copies_properties(emu):
    src = emu.volume(RG, ACCOUNT, "premium", "data")
    src["properties"].update({"kerberosEnabled": False, "ldapEnabled": False, "throughputMibps": 32.0,
                              "dataProtection": {"snapshot": {"snapshotPolicyId": "/x/policy"}}})
    p = make(emu)
    snap = p.create("data", "golden")
    emu.clear_requests()
    assert p.restore(snap, "data-golden") == "premium/data-golden"
    (put,) = [r for r in emu.writes()]
    assert put.method == "PUT" and put.path.endswith("/capacityPools/premium/volumes/data-golden")
    body, props = put.body, put.body["properties"]
    for key in RESTORE_COPIED_PROPERTIES:
        if key in src["properties"]:
            assert props[key] == src["properties"][key], key
    assert props["snapshotId"] == snap.id and props["creationToken"] == "data-golden"
    assert props["usageThreshold"] == 100 * GIB and props["serviceLevel"] == "Premium"
    assert "dataProtection" not in props and "throughputMibps" not in props  # auto-QoS pool: no throughput
    assert body["location"] == "westeurope" and body["zones"] == ["1"]
    assert body["tags"] == {"team": "lanedet", "mlflow-anf-restored-from": "premium/data@golden"}
    new = emu.volume(RG, ACCOUNT, "premium", "data-golden")
    assert new["properties"]["provisioningState"] == "Succeeded"

    # into another pool: the service level is the target pool's
    assert p.restore(snap, "standard/data-std", size_gib=150) == "standard/data-std"
    std = emu.volume(RG, ACCOUNT, "standard", "data-std")["properties"]
    assert std["serviceLevel"] == "Standard" and std["usageThreshold"] == 150 * GIB


def test_restore_size_and_capacity_rules(emu):
    p = make(emu)
    snap = p.create("data", "golden")
    emu.clear_requests()
    with pytest.raises(AnfInputError, match="below the snapshot's size floor 100 GiB"):
        p.restore(snap, "too-small", size_gib=60)
    sized = snap.model_copy(update={"size_bytes": 55 * GIB})  # a recorded snapshot size lowers the floor
    with pytest.raises(AnfInputError, match="floor 55 GiB"):
        p.restore(sized, "too-small", size_gib=54)
    with pytest.raises(AnfInputError, match="'ultra' has 24 GiB unallocated"):
        p.restore(snap, "ultra/no-room")
    with pytest.raises(AnfInputError, match="already exists"):
        p.restore(snap, "data")
    with pytest.raises(AnfInputError, match="not a valid ANF volume name"):
        p.restore(snap, "9-starts-with-digit")
    with pytest.raises(AnfNotFound, match="capacity pool 'nopool' not found .*premium \\(Premium\\)"):
        p.restore(snap, "nopool/x")
    assert emu.writes() == []
    assert p.restore(sized, "just-enough", size_gib=55) == "premium/just-enough"
    assert emu.volume(RG, ACCOUNT, "premium", "just-enough")["properties"]["usageThreshold"] == 55 * GIB


def test_restore_rejected_by_arm_is_reported(emu):
    p = make(emu)
    emu.set_used(RG, ACCOUNT, "premium", "data", 60)
    snap = p.create("data", "golden").model_copy(update={"size_bytes": 50 * GIB})  # a wrong recorded size
    with pytest.raises(AnfApiError, match="HTTP 400 VolumeSizeTooSmall: The volume quota must be at least"):
        p.restore(snap, "small", size_gib=50)
    assert emu.volume(RG, ACCOUNT, "premium", "small") is None


def test_restore_takes_the_protocol_keywords(emu):
    p = make(emu)
    snap = p.create("data", "golden")
    emu.clear_requests()
    # wait=False: back as soon as ARM accepted the create; nothing polled, the new volume is still Creating
    assert p.restore(snap, "quick", wait=False) == "premium/quick"
    assert emu.count("GET", "/operationStatuses/") == 0
    assert emu.volume(RG, ACCOUNT, "premium", "quick")["properties"]["provisioningState"] == "Creating"
    # the default waits until ARM reports the volume Succeeded
    p.restore(snap, "waited")
    assert emu.volume(RG, ACCOUNT, "premium", "waited")["properties"]["provisioningState"] == "Succeeded"
    # timeout_s bounds the wait instead of lro_timeout_s
    emu.hang_operations = True
    started = time.monotonic()
    with pytest.raises(SnapshotTimeout, match="still running after timeout_s=0.3s"):
        make(emu, lro_timeout_s=8).restore(snap, "slow", timeout_s=0.3)
    assert time.monotonic() - started < 6
    emu.hang_operations = False
    emu.clear_requests()
    for bad in (0, -1.5, "soon", True):
        with pytest.raises(AnfInputError, match="timeout_s: must be a positive number"):
            p.restore(snap, "never", timeout_s=bad)
    with pytest.raises(TypeError):
        p.restore(snap, "never", colour="blue")  # no catch-all **options any more
    with pytest.raises(AnfInputError, match="timeout_s"):
        p.revert("data", "golden", confirm="data", timeout_s=0)
    with pytest.raises(AnfInputError, match="timeout_s"):
        p.change_service_level("data", "standard", timeout_s=-1)
    assert emu.requests == []


def test_restore_refuses_a_snapshot_that_is_no_longer_the_recorded_one(emu):
    p = make(emu)
    snap = p.create("data", "golden")
    p.delete("data", "golden")
    p.create("data", "golden")  # same name, another snapshot (new GUID)
    emu.clear_requests()
    with pytest.raises(SnapshotVerificationError, match="deleted and re-created .*nothing was created"):
        p.restore(snap, "stale")
    moved = p.get("data", "golden").model_copy(update={"id": snap.id.replace("/volumes/data/", "/volumes/old/")})
    with pytest.raises(SnapshotVerificationError, match="ARM resource id is now"):
        p.restore(moved, "stale")
    assert emu.writes() == [] and emu.volume(RG, ACCOUNT, "premium", "stale") is None
    assert p.restore(snap, "stale", verify=False) == "premium/stale"  # the caller vouches for the name
    assert p.verify(moved).problems and not p.verify(p.get("data", "golden")).problems


def test_volume_administration_stands_alone(emu):
    volumes = AnfVolumes(AnfArm(AnfConfig(**options(emu)), credential=StaticTokenCredential(CANARY_TOKEN)))
    info = volumes.describe_volume("data")
    assert (info.id, info.service_level, info.quota_bytes) == ("premium/data", "Premium", 100 * GIB)
    snap = make(emu).create("data", "s1")
    assert volumes.restore(snap, "copy", size_gib=120) == "premium/copy"
    assert emu.volume(RG, ACCOUNT, "premium", "copy")["properties"]["usageThreshold"] == 120 * GIB
    assert volumes.change_service_level("copy", "standard").new_volume == "standard/copy"
    p = make(emu)
    assert isinstance(p.volumes, AnfVolumes) and p.volumes.arm is p.arm and p.client is p.arm.client


def test_restore_body_copies_cool_access_and_throughput_only_where_the_target_pool_takes_them():
    source = {"location": "westeurope", "tags": {"team": "x"}, "properties": {
        "subnetId": "/sub/net", "coolAccess": True, "coolnessPeriod": 7, "throughputMibps": 64.0,
        "usageThreshold": 100 * GIB, "dataProtection": {"backup": {"backupEnabled": True}},
        "volumeType": "DataProtection",
    }}
    snap, dest = {"id": "/x/snapshots/s"}, VolumeRef(pool="p", volume="v")
    plain = restore_body(source, {"properties": {"serviceLevel": "Premium"}}, snap, dest, 200 * GIB,
                         restored_from="p/d@s")
    assert plain == {"location": "westeurope", "tags": {"team": "x", "mlflow-anf-restored-from": "p/d@s"},
                     "properties": {"subnetId": "/sub/net", "creationToken": "v", "usageThreshold": 200 * GIB,
                                    "serviceLevel": "Premium", "snapshotId": "/x/snapshots/s"}}
    pool = {"properties": {"serviceLevel": "Standard", "coolAccess": True, "qosType": "Manual"}}
    rich = restore_body({**source, "zones": ["2"]}, pool, snap, dest, 200 * GIB, restored_from="p/d@s")
    assert {k: rich["properties"].get(k) for k in ("coolAccess", "coolnessPeriod", "throughputMibps")} == {
        "coolAccess": True, "coolnessPeriod": 7, "throughputMibps": 64.0}
    assert rich["zones"] == ["2"] and rich["properties"]["serviceLevel"] == "Standard"


def test_pool_change_rules():
    src, ok = {"serviceLevel": "Premium"}, {"serviceLevel": "Standard", "provisioningState": "Succeeded"}
    assert pool_change_problems("premium", src, ok, {}, 100 * GIB, 100 * GIB) == []
    assert pool_change_problems("premium", src, ok, {"coolAccess": True}, 0, 0) == [
        "the volume uses cool access but the target pool does not allow it"]
    manual = {**ok, "qosType": "Manual", "totalThroughputMibps": 100, "utilizedThroughputMibps": 90}
    assert pool_change_problems("premium", src, manual, {"throughputMibps": 32.0}, 0, 0) == [
        "target manual-QoS pool has 10 MiB/s unassigned, the volume has 32 MiB/s"]
    assert pool_change_problems("premium", src, manual, {"throughputMibps": 10.0}, 0, 0) == []
    assert pool_change_problems("premium", src, {**ok, "provisioningState": "Updating"}, {}, 0, 0) == [
        "target pool is 'Updating', not 'Succeeded'"]


# ------------------------------------------------------------------------------------------------ revert
def test_revert_requires_exact_confirm_and_sends_nothing_without_it(emu):
    p = make(emu)
    for name in ("s1", "s2", "s3"):
        p.create("data", name)
    emu.clear_requests()
    for confirm in (None, "", "dat", "standard/data", "DATA"):
        with pytest.raises(RevertNotConfirmed, match="nothing was sent"):
            p.revert("data", "s1", confirm=confirm)
    assert emu.requests == []

    plan = p.plan_revert("data", "s1")
    assert [s.name for s in plan.snapshots_lost] == ["s2", "s3"] and plan.data_lost_since == plan.snapshot_created
    assert emu.writes() == []
    done = p.revert("premium/data", "s1", confirm="data")
    assert done.status == "succeeded" and [s.name for s in done.snapshots_lost] == ["s2", "s3"]
    (post,) = emu.writes()
    assert post.path.endswith("/volumes/data/revert") and post.body == {"snapshotId": p.get("data", "s1").id}
    assert emu.snapshot_names(RG, ACCOUNT, "premium", "data") == ["s1"]
    assert p.revert("data", "s1", confirm="premium/data").snapshots_lost == []


def test_revert_refused_for_volume_with_backups(emu):
    p = make(emu)
    p.create("data", "s1")
    emu.volume(RG, ACCOUNT, "premium", "data")["properties"]["dataProtection"] = {"backup": {"backupEnabled": True}}
    emu.clear_requests()
    with pytest.raises(AnfInputError, match="backups"):
        p.revert("data", "s1", confirm="data")
    assert emu.writes() == []


# ------------------------------------------------------------------------------------------------ pool change
def test_change_service_level(emu):
    p = make(emu)
    p.create("data", "before-move")
    result = p.change_service_level("data", "standard")
    assert (result.from_service_level, result.to_service_level, result.new_volume) == ("Premium", "Standard",
                                                                                      "standard/data")
    assert result.status == "succeeded" and result.target_free_bytes == 4 * 1024 * GIB
    moved = emu.volume(RG, ACCOUNT, "standard", "data")
    assert moved["properties"]["serviceLevel"] == "Standard" and emu.volume(RG, ACCOUNT, "premium", "data") is None
    (post,) = [w for w in emu.writes() if w.path.endswith("/poolChange")]
    assert post.body == {"newPoolResourceId": emu.pools[post.body["newPoolResourceId"].lower()]["id"]}
    assert [s.name for s in p.list("standard/data")] == ["before-move"]  # snapshots move with the volume


def test_change_service_level_without_wait_only_starts(emu):
    result = make(emu).change_service_level("data", "standard", wait=False)
    assert result.status == "started"
    assert emu.count("GET", "/operationStatuses/") == 0 and len(emu.writes()) == 1


@pytest.mark.parametrize(("target", "error", "match"), [
    ("nopool", AnfNotFound, "capacity pool 'nopool' not found in account 'anf-ml' .*standard \\(Standard\\)"),
    ("premium", AnfInputError, "already in pool 'premium'"),
    ("premium2", AnfInputError, "same service level \\(Premium\\)"),
    ("ultra", AnfInputError, "has 24 GiB unallocated, the volume needs 100 GiB"),
    ("double", AnfInputError, "encryption type differs"),
    ("Bad Pool", AnfInputError, "not a valid capacity pool name"),
])
def test_change_service_level_rejects_bad_targets(emu, target, error, match):
    with pytest.raises(error, match=match):
        make(emu).change_service_level("data", target)
    assert emu.writes() == []


# ------------------------------------------------------------------------------------------------ config and secrets
def test_config_errors_name_the_option_never_the_value(emu):
    cases = {
        "subscription_id": "subscription UUID",
        "base_url": "https://",
        "max_snapshots_per_volume": "integer",
        "client_secret": "unknown option 'client_secret'",
    }
    for key, expected in cases.items():
        with pytest.raises(ProviderConfigError) as info:
            get_provider("anf", **options(emu, **{key: CANARY_CONFIG if key != "base_url" else
                                                   f"http://{CANARY_CONFIG}"}))
        assert expected in str(info.value) and key in str(info.value)
        assert CANARY_CONFIG not in "".join(traceback.format_exception(info.value))
    with pytest.raises(ProviderConfigError, match="required"):
        AnfSnapshotProvider(None)


def test_error_texts_are_redacted_even_when_arm_echoes_a_secret(emu, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", CANARY_SECRET)
    emu.inject("GET", "/snapshots/x$", status=400, code="BadRequest",
               message=f"proxy says: Authorization: Bearer {CANARY_TOKEN}; client_secret={CANARY_SECRET}")
    with pytest.raises(AnfApiError) as info:
        make(emu).get("data", "x")
    text = str(info.value)
    assert "HTTP 400 BadRequest" in text and "Bearer ***" in text and "client_secret=***" in text
    assert CANARY_TOKEN not in text and CANARY_SECRET not in text


def test_cloud_endpoints():
    base = {"subscription_id": "00000000-0000-4000-8000-000000000001", "resource_group": "rg", "account": "a"}
    gov = AnfConfig(**base, cloud="usgov")
    assert (gov.arm_endpoint, gov.scope, gov.authority_host) == (
        "https://management.usgovcloudapi.net", "https://management.core.usgovcloudapi.net/.default",
        "login.microsoftonline.us")
    pub = AnfConfig(**base)
    assert pub.scope == "https://management.azure.com/.default"
    custom = AnfConfig(**base, base_url="https://arm.contoso.local/", credential_scope="api://arm/.default")
    assert (custom.arm_endpoint, custom.scope) == ("https://arm.contoso.local", "api://arm/.default")


def _run_flows(emu: ArmEmulator, provider_options: dict[str, object], tag: str) -> list[str]:
    """Successful and failing operations; returns the texts of every exception raised."""
    texts: list[str] = []

    def expect_error(fn, *args, **kwargs):
        with pytest.raises(Exception) as info:
            fn(*args, **kwargs)
        texts.append("".join(traceback.format_exception(info.value)))

    p = get_provider("anf", **provider_options)
    snap = p.create("data", f"canary-{tag}")
    p.list()
    p.verify(snap)
    p.restore(snap, f"copy-{tag}")
    expect_error(p.get, "data", "missing")
    emu.inject("GET", "/snapshots$", status=500, times=10)
    expect_error(p.list, "data")
    emu.clear_faults()
    emu.hang_operations = True
    expect_error(get_provider("anf", **{**provider_options, "lro_timeout_s": 0.2}).create, "data", "hung")
    emu.hang_operations = False
    expect_error(p.revert, "data", f"canary-{tag}", confirm="nope")
    return texts


def test_canary_secrets_never_reach_logs_errors_or_output(emu, monkeypatch, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # azure.core, azure.identity, msal, urllib3 and ours, all at DEBUG
    emu.client_secret, emu.federated_token = CANARY_SECRET, CANARY_FEDERATED
    monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", emu.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", CANARY_SECRET)
    token_file = tmp_path / "federated-token"
    token_file.write_text(CANARY_FEDERATED)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    aad = {"authority": emu.base_url, "disable_instance_discovery": True}
    texts: list[str] = []
    # client secret from the environment, through DefaultAzureCredential and EnvironmentCredential
    for mode in ("default", "environment"):
        texts += _run_flows(emu, options(emu, credential=mode, **aad), tag=mode)
    # a federated (workload identity) token file
    monkeypatch.delenv("AZURE_CLIENT_SECRET")
    texts += _run_flows(emu, options(emu, credential="workload_identity", **aad), tag="wi")
    kinds = {(t.credential_kind, t.credential_ok) for t in emu.token_requests}
    assert kinds == {("client_secret", True), ("client_assertion", True)}  # every slot really was exercised
    assert all(t.scope == f"{emu.base_url}/.default" for t in emu.token_requests)
    # a wrong secret: the authentication error must not echo it
    monkeypatch.setenv("AZURE_CLIENT_SECRET", CANARY_SECRET + "-wrong")
    with pytest.raises(AnfApiError, match="authentication failed") as info:
        get_provider("anf", **options(emu, credential="environment", **aad)).list("data")
    texts.append("".join(traceback.format_exception(info.value)))
    # a static bearer token
    p = make(emu)
    p.create("data", "static-token")
    texts.append(repr(p) + p.config.model_dump_json())

    out = capsys.readouterr()
    assert caplog.records, "DEBUG logging was captured"
    for canary in CANARIES:
        for where, text in (("logs", caplog.text), ("stdout", out.out), ("stderr", out.err),
                            ("exceptions", "\n".join(texts))):
            assert canary not in text, f"{canary} leaked into {where}"


# ------------------------------------------------------------------------------------------------ Trident PVs
def trident_pv(name: str = "pvc-3f1c2b9e-8d4a-4c52-9a61-0c8a3e2d7b15", **attrs: str) -> dict:
    """A PV as Trident's CSI controller creates it (shape of `kubectl get pv -o json`)."""
    volume_attributes = {
        "backendUUID": "9b3c7e41-5a0d-4f1e-b7a2-6c8d2e4f9a01",
        "internalName": name,
        "name": name,
        "protocol": "file",
        "storage.kubernetes.io/csiProvisionerIdentity": "1714567890123-7383-csi.trident.netapp.io",
        **attrs,
    }
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": "csi.trident.netapp.io"},
                     "finalizers": ["kubernetes.io/pv-protection", "external-attacher/csi-trident-netapp-io"]},
        "spec": {
            "accessModes": ["ReadWriteMany"], "capacity": {"storage": "100Gi"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": "tusimple-data",
                         "namespace": "lanedet", "uid": name[4:]},
            "csi": {"driver": "csi.trident.netapp.io", "volumeHandle": name, "volumeAttributes": volume_attributes},
            "mountOptions": ["nfsvers=4.1"], "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "azure-netapp-files-premium", "volumeMode": "Filesystem",
        },
        "status": {"phase": "Bound"},
    }


def arm_volume_id(pool: str, volume: str, account: str = ACCOUNT) -> str:
    return (f"/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/{RG}/providers/Microsoft.NetApp/"
            f"netAppAccounts/{account}/capacityPools/{pool}/volumes/{volume}")


def test_volume_for_pv_reads_trident_attributes():
    modern = volume_for_pv(trident_pv(internalID=arm_volume_id("premium", "pvc-3f1c2b9e-8d4a-4c52-9a61-0c8a3e2d7b15")))
    assert modern.exact and (modern.pool, modern.volume, modern.account, modern.resource_group) == (
        "premium", "pvc-3f1c2b9e-8d4a-4c52-9a61-0c8a3e2d7b15", ACCOUNT, RG)
    assert modern.claim == "lanedet/tusimple-data" and modern.creation_token == modern.pv_name
    imported = volume_for_pv(trident_pv(internalName="tusimple-2017", internalID=arm_volume_id("standard",
                                                                                                "tusimple-2017")))
    assert (imported.volume, imported.pool, imported.creation_token) == ("tusimple-2017", "standard", "tusimple-2017")
    legacy = volume_for_pv(trident_pv())  # Trident < 23.01: no internalID
    assert not legacy.exact and legacy.pool is None and legacy.volume == legacy.pv_name


def test_volume_for_pv_rejects_foreign_pvs():
    pv = trident_pv()
    pv["spec"]["csi"]["driver"] = "disk.csi.azure.com"
    with pytest.raises(ValueError, match="spec.csi.driver is 'disk.csi.azure.com'"):
        volume_for_pv(pv)
    nfs = trident_pv()
    nfs["spec"].pop("csi")
    nfs["spec"]["nfs"] = {"server": "10.1.2.4", "path": "/data"}
    with pytest.raises(ValueError, match="spec.csi is missing"):
        volume_for_pv(nfs)
    with pytest.raises(ValueError, match="internalID is not an ANF volume resource id"):
        volume_for_pv(trident_pv(internalID="svm1:trident_pvc_3f1c2b9e"))
    with pytest.raises(ValueError, match="expected PersistentVolume"):
        volume_for_pv({**trident_pv(), "kind": "PersistentVolumeClaim"})


def test_volume_id_for_pv_resolves_in_the_account(emu):
    p = make(emu, pool=None)
    assert p.volume_id_for_pv(trident_pv("pvc-x", internalID=arm_volume_id("premium", "data"))) == "premium/data"
    with pytest.raises(AnfInputError, match="account 'other'"):
        p.volume_id_for_pv(trident_pv(internalID=arm_volume_id("premium", "data", account="other")))
    emu.add_volume(RG, ACCOUNT, "standard", "pvc-1d2e3f40-0000-4000-8000-000000000abc")
    assert p.volume_id_for_pv(trident_pv("pvc-1d2e3f40-0000-4000-8000-000000000abc")) == (
        "standard/pvc-1d2e3f40-0000-4000-8000-000000000abc")  # legacy PV: found by listing the pools
    emu.add_volume(RG, ACCOUNT, "standard", "imported-vol", creationToken="trident-import-1")
    assert p.volume_id_for_pv(trident_pv("pvc-zzz", internalName="trident-import-1")) == "standard/imported-vol"
    with pytest.raises(AnfNotFound, match="pvc-nowhere"):
        p.volume_id_for_pv(trident_pv("pvc-nowhere"))
    assert emu.writes() == []


def test_importing_the_modules_loads_no_azure():
    code = ("import sys, mlflow_anf.snapshots.anf, mlflow_anf.snapshots.anf.provider, "
            "mlflow_anf.snapshots.anf.volumes, mlflow_anf.snapshots.anf.arm, mlflow_anf.cli_volume; "
            "bad = [m for m in sys.modules if m.startswith(('azure', 'msal'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_snapshot_and_log_links_anf_snapshots_by_tags_only(emu, tmp_path):
    """ANF snapshots carry no labels, so a training run's data snapshot is linked to the run by MLflow tags alone."""
    import mlflow

    from mlflow_anf.tracking import get_run_snapshots, snapshot_and_log

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run() as run:
        snap = snapshot_and_log(make(emu), "data", "data", run_id=run.info.run_id, name="run-data")
    assert snap.labels == {}
    refs = get_run_snapshots(run.info.run_id)
    assert refs["data"].provider == "anf" and refs["data"].name == "run-data"
    assert writes(emu) == [("PUT", "snapshots/run-data")]
