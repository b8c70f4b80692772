"""`volume set-service-level` of a Trident-managed ANF volume: Trident addresses the volume by its ARM id (pool
included), so a pool change would break every later CSI snapshot of the PV. The command refuses, before any write,
with the steps that keep Trident working (see NetApp/trident citations in mlflow_anf/snapshots/anf/trident.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mlflow_anf.snapshots.anf import AnfInputError
from mlflow_anf.snapshots.anf.trident import TridentManagedVolume, backend_pools
from tests.doubles.arm_emulator import ACCOUNT, RG, ArmEmulator, seed_ml_estate
from tests.test_snapshots_anf import CANARY_TOKEN, make, options

PV = "pvc-3f1c2b9e-8d4a-4c52-9a61-0c8a3e2d7b15"
BACKEND = {"spec": {"storageDriverName": "azure-netapp-files", "serviceLevel": "Standard",
                    "resourceGroups": [RG], "netappAccounts": [f"{RG}/{ACCOUNT}"],
                    "capacityPools": [f"{RG}/{ACCOUNT}/standard", "premium"]}}


@pytest.fixture
def emu():
    with ArmEmulator() as emulator:
        emulator.allow_token(CANARY_TOKEN)
        seed_ml_estate(emulator)
        # what Trident's create leaves in ANF: the volume named after the PV, the 'provisioning' tag
        # (azure_anf.go:1027-1031, api/azure.go:1130-1139), creation token = internal name
        emulator.add_volume(RG, ACCOUNT, "premium", PV, tags={"provisioning": "{}"}, creationToken=PV)
        yield emulator


def test_trident_volume_pool_change_is_refused_with_the_steps(emu):
    p = make(emu)
    emu.clear_requests()
    with pytest.raises(TridentManagedVolume) as err:
        p.volumes.change_service_level(f"premium/{PV}", "standard")
    text = str(err.value)
    assert "internalID" in text and "tridentctl import volume" in text and "mlflow-anf volume restore" in text
    assert f"premium/{PV}@" in text and "--pool standard" in text
    assert isinstance(err.value, AnfInputError) and emu.writes() == []
    assert emu.volume(RG, ACCOUNT, "premium", PV) is not None


def test_a_volume_trident_does_not_manage_still_moves(emu):
    assert make(emu).change_service_level("premium/data", "standard").status == "succeeded"


def test_target_pool_outside_the_backend_is_named(emu):
    pools = backend_pools(BACKEND)
    with pytest.raises(TridentManagedVolume, match="capacityPools"):
        make(emu).volumes.change_service_level(f"premium/{PV}", "ultra", trident_backend=pools)
    with pytest.raises(TridentManagedVolume) as err:
        make(emu).volumes.change_service_level(f"premium/{PV}", "standard", trident_backend=pools)
    assert "is not in" not in str(err.value)


def test_backend_pools_reads_a_trident_backend_config():
    pools = backend_pools(BACKEND)
    assert pools.matches(RG, ACCOUNT, "standard", "Standard") and pools.matches(RG, ACCOUNT, "premium", "Standard")
    assert not pools.matches(RG, ACCOUNT, "premium", "Premium")  # the backend's serviceLevel filters pools
    with pytest.raises(ValueError, match="spec.storageDriverName"):
        backend_pools({"spec": {"storageDriverName": "ontap-nas"}})


def test_cli_refuses_with_exit_2_and_prints_the_steps(emu, tmp_path, monkeypatch):
    import yaml

    from mlflow_anf.cli_volume import volume

    emu.client_secret = "CANARY-pool-change-secret"
    monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", emu.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", emu.client_secret)
    cfg = tmp_path / "anf.yaml"
    cfg.write_text(yaml.safe_dump({**options(emu), "credential": "environment", "authority": emu.base_url,
                                   "disable_instance_discovery": True}))
    backend = tmp_path / "tbc.yaml"
    backend.write_text(yaml.safe_dump(BACKEND))
    emu.clear_requests()
    result = CliRunner().invoke(volume, ["set-service-level", f"premium/{PV}", "--pool", "ultra",
                                         "--provider-config", str(cfg), "--trident-backend", str(backend)])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "tridentctl import volume" in result.stderr and "capacityPools" in result.stderr
    assert emu.writes() == [] and emu.client_secret not in result.stderr
    bad = tmp_path / "ontap.yaml"
    bad.write_text(yaml.safe_dump({"spec": {"storageDriverName": "ontap-nas"}}))
    result = CliRunner().invoke(volume, ["set-service-level", f"premium/{PV}", "--pool", "standard",
                                         "--provider-config", str(cfg), "--trident-backend", str(bad)])
    assert result.exit_code == 2 and "spec.storageDriverName" in result.stderr
