"""ANF as ANF accepts it: the ARM emulator's name rules, snapshots made by ANF itself (policies, portal, Trident),
the snapshot budget counting every ANF snapshot, and GET-after-PUT eventual consistency (see docs/testing.md, ARM)."""

from __future__ import annotations

import pytest
import requests

from mlflow_anf.snapshots.anf import AnfInputError
from mlflow_anf.snapshots.base import InvalidSnapshotName, SnapshotLimitExceeded
from tests.doubles.arm_emulator import ACCOUNT, RG, ArmEmulator, seed_ml_estate
from tests.test_snapshots_anf import CANARY_TOKEN, make, writes

# Names ANF gives its own snapshots: snapshot policies (hourly/daily/weekly/monthly, '.' and '_'), the portal (any
# case) and Trident (a clone's source snapshot is named after the clone's PV, 'pvc-<uid>' — azure_anf.go CreateClone).
ANF_MADE = ["daily.2026-12-01_0010", "hourly.2026-12-01_0905", "Before_Upgrade.v2", "PORTAL-Snap",
            "pvc-3f1c2b9e-8d4a-4c52-9a61-0c8a3e2d7b15"]


@pytest.fixture
def emu():
    with ArmEmulator() as emulator:
        emulator.allow_token(CANARY_TOKEN)
        seed_ml_estate(emulator)
        yield emulator


def _put(emu: ArmEmulator, path: str, body: dict) -> requests.Response:
    url = f"{emu.base_url}/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/Microsoft.NetApp" \
          f"/netAppAccounts/{ACCOUNT}/{path}?api-version=2025-06-01"
    return requests.put(url, json=body, headers={"Authorization": f"Bearer {CANARY_TOKEN}"}, verify=emu.ca_file,
                        timeout=10)


def _volume_body(token: str) -> dict:
    return {"location": "westeurope", "properties": {
        "creationToken": token, "usageThreshold": 100 * 1024**3,
        "subnetId": "/subscriptions/x/resourceGroups/rg-ml/providers/Microsoft.Network/virtualNetworks/v/subnets/s"}}


@pytest.mark.parametrize("name, token, code", [
    ("ok_name", "ok_name", "InvalidCreationToken"),       # '_' is a volume name character, not a token one
    ("ok-name", "1token", "InvalidCreationToken"),
    ("ok-name", "t" * 81, "InvalidCreationToken"),
    ("1volume", "token", "InvalidResourceName"),
    ("v" * 65, "token", "InvalidResourceName"),
    ("bad.name", "token", "InvalidResourceName"),
])
def test_emulator_refuses_names_arm_refuses(emu, name, token, code):
    answer = _put(emu, f"capacityPools/premium/volumes/{name}", _volume_body(token))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code
    assert emu.volume(RG, ACCOUNT, "premium", name) is None


def test_emulator_takes_the_names_arm_takes(emu):
    assert _put(emu, "capacityPools/premium/volumes/Vol_1-a", _volume_body("Vol-1-a")).status_code == 201
    answer = _put(emu, "capacityPools/premium/volumes/data/snapshots/Before_Upgrade.v2", {"location": "westeurope"})
    assert answer.status_code == 201


@pytest.mark.parametrize("target", ["my_restore", "premium/my_restore", "1restore", "-restore", "r" * 65])
def test_restore_target_anf_refuses_is_refused_before_any_call(emu, target):
    p = make(emu)
    snap = p.create("data", "base")
    emu.clear_requests()
    with pytest.raises(AnfInputError, match="target"):
        p.volumes.restore(snap, target)
    assert emu.requests == []


@pytest.mark.parametrize("name", ANF_MADE)
def test_snapshots_made_by_anf_are_listed_shown_and_restored(emu, name):
    emu.add_snapshot(RG, ACCOUNT, "premium", "data", name)
    p = make(emu)
    assert name in [s.name for s in p.list("premium/data")]
    snap = p.get("premium/data", name)
    assert snap.name == name and p.verify(snap).ok
    assert p.restore(snap, "from-anf") == "premium/from-anf"
    assert emu.volume(RG, ACCOUNT, "premium", "from-anf")["properties"]["provisioningState"] == "Succeeded"


@pytest.mark.parametrize("bad", ["", "a/b", "sp ace", "x" * 256, "-lead"])
def test_names_no_anf_snapshot_can_have_are_refused_before_any_call(emu, bad):
    with pytest.raises(InvalidSnapshotName):
        make(emu).get("premium/data", bad)
    assert emu.requests == []


def test_the_budget_counts_every_anf_snapshot(emu):
    for i in range(250):
        emu.add_snapshot(RG, ACCOUNT, "premium", "data", f"hourly.2026-12-01_{i:04d}")
    for name in ANF_MADE[2:]:
        emu.add_snapshot(RG, ACCOUNT, "premium", "data", name)
    emu.clear_requests()
    with pytest.raises(SnapshotLimitExceeded, match="253 snapshots"):
        make(emu, max_snapshots_per_volume=253).create("premium/data", "run-1")
    p = make(emu)
    p.create("premium/data", "run-1")  # 253 + 1 = 254
    p.create("premium/data", "run-2")  # 255: the last one ANF takes
    with pytest.raises(SnapshotLimitExceeded, match="255 snapshots"):
        p.create("premium/data", "run-3")
    assert [w for w in writes(emu) if w[0] == "PUT"] == [("PUT", "snapshots/run-1"), ("PUT", "snapshots/run-2")]


def test_emulator_answers_404_right_after_a_create_when_told(emu):
    emu.get_after_put_lag = 2
    assert _put(emu, "capacityPools/premium/volumes/data/snapshots/lagging", {"location": "westeurope"}).ok
    url = f"{emu.base_url}/subscriptions/{emu.subscription_id}/resourceGroups/{RG}/providers/Microsoft.NetApp" \
          f"/netAppAccounts/{ACCOUNT}/capacityPools/premium/volumes/data/snapshots/lagging?api-version=2025-06-01"
    auth = {"Authorization": f"Bearer {CANARY_TOKEN}"}
    codes = [requests.get(url, headers=auth, verify=emu.ca_file, timeout=10).status_code for _ in range(3)]
    assert codes == [404, 404, 200]


def test_create_and_restore_tolerate_get_after_put_lag(emu):
    emu.get_after_put_lag = 3
    p = make(emu)
    snap = p.create("premium/data", "lagged")
    assert snap.name == "lagged" and snap.details.get("snapshot_id")
    assert p.restore(snap, "lagged-copy") == "premium/lagged-copy"
    assert emu.volume(RG, ACCOUNT, "premium", "lagged-copy")["properties"]["provisioningState"] == "Succeeded"


def test_azure_extra_bound_is_the_sdk_whose_as_dict_gives_arm_json():
    """azure-mgmt-netapp 13.x's ``as_dict()`` flattens ``properties`` into snake_case (``provisioning_state``); from
    14 it gives ARM's JSON, which the provider reads. Checked by running this suite with 13.0.0, 13.3.0 (fail) and
    14.0.0 (pass) wheels on PYTHONPATH; the extra and the GPU image follow."""
    import re
    import tomllib
    from pathlib import Path

    from azure.mgmt.netapp.models import Snapshot

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "azure-mgmt-netapp>=14" in extras["azure"]
    raw = {"id": "/x/snapshots/s", "name": "a/p/v/s", "properties": {"provisioningState": "Succeeded"}}
    assert Snapshot(raw).as_dict()["properties"]["provisioningState"] == "Succeeded"
    dockerfile = (root / "docker" / "Dockerfile").read_text()
    assert re.search(r'pip install "\.\[[^\]]*\bazure\b[^\]]*\]"', dockerfile), "the GPU image installs the azure extra"


@pytest.mark.parametrize("source", ["premium/my_data", "premium/data", "premium/" + "a_b" * 21])
def test_reproduce_default_target_is_a_name_anf_takes(emu, tmp_path, source):
    from mlflow_anf.snapshots import traits_for
    from mlflow_anf.snapshots.anf.names import VolumeRef, check_new_volume

    target = traits_for("anf").default_restore_target(source, tmp_path)
    check_new_volume(VolumeRef(pool="premium", volume=target))
    p = make(emu)
    emu.add_volume(RG, ACCOUNT, "premium", source.split("/")[1][:64])
    snap = p.create(source[:72], "base")
    assert p.restore(snap, target) == f"premium/{target}"
