"""`mlflow-anf volume` through click's CliRunner, against the ARM emulator with a real azure-identity credential."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from mlflow_anf.cli import main
from mlflow_anf.cli_volume import volume
from tests.doubles.arm_emulator import ACCOUNT, GIB, RG, ArmEmulator, seed_ml_estate

SECRET = "CANARY-cli-secret-1f0e3dad99908345"


@pytest.fixture
def emu(monkeypatch):
    with ArmEmulator() as emulator:
        seed_ml_estate(emulator)
        emulator.client_secret = SECRET
        # the CLI builds its own credential: EnvironmentCredential, pointed at the emulated AAD authority
        monkeypatch.setenv("AZURE_TENANT_ID", emulator.tenant_id)
        monkeypatch.setenv("AZURE_CLIENT_ID", emulator.client_id)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
        yield emulator


@pytest.fixture
def config_file(emu, tmp_path):
    path = tmp_path / "anf.yaml"
    path.write_text(yaml.safe_dump({
        "subscription_id": emu.subscription_id, "resource_group": RG, "account": ACCOUNT, "pool": "premium",
        "credential": "environment", "base_url": emu.base_url, "authority": emu.base_url,
        "disable_instance_discovery": True, "ca_bundle": emu.ca_file, "polling_interval_s": 0.01,
        "retry_total": 1, "retry_backoff_factor": 0.01,
    }))
    return path


def run(config_file, *args: str):
    result = CliRunner().invoke(volume, [*args, "--provider-config", str(config_file)])
    for stream in (result.stdout, result.stderr):
        assert SECRET not in stream
    return result


def seed_snapshots(emu: ArmEmulator, *names: str) -> None:
    for name in names:
        emu.add_snapshot(RG, ACCOUNT, "premium", "data", name)


def test_show_text_and_json(emu, config_file):
    seed_snapshots(emu, "s1", "s2")
    result = run(config_file, "show", "data")
    assert result.exit_code == 0, result.stderr
    assert "premium/data  (Succeeded)" in result.stdout and "Premium, quota 100 GiB, NFSv4.1" in result.stdout
    assert "10.1.2." in result.stdout and ":/data" in result.stdout and "snapshots   2, latest s2" in result.stdout
    result = run(config_file, "show", "premium/data", "-o", "json")
    info = json.loads(result.stdout)["volume"]
    assert (info["id"], info["quota_bytes"], info["snapshot_count"]) == ("premium/data", 100 * GIB, 2)
    assert info["pool_free_bytes"] == 4 * 1024 * GIB - 100 * GIB


def test_options_override_the_config_file(emu, config_file):
    emu.add_volume(RG, ACCOUNT, "standard", "other")
    result = run(config_file, "show", "other", "--option", "pool=standard")
    assert result.exit_code == 0 and "standard/other" in result.stdout


def test_set_service_level(emu, config_file):
    result = run(config_file, "set-service-level", "data", "--pool", "standard", "--wait")
    assert result.exit_code == 0, result.stderr
    assert "moved premium/data → standard/data: Premium → Standard" in result.stdout
    assert emu.volume(RG, ACCOUNT, "standard", "data") is not None


def test_set_service_level_without_wait_and_bad_targets(emu, config_file):
    result = run(config_file, "set-service-level", "data", "--pool", "premium2")
    assert result.exit_code == 2 and "same service level (Premium)" in result.stderr
    result = run(config_file, "set-service-level", "data", "--pool", "nopool", "-o", "json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["exit_code"] == 3 and "pool 'nopool' not found" in result.stderr
    assert emu.writes() == []
    result = run(config_file, "set-service-level", "data", "--pool", "standard")
    assert result.exit_code == 0 and "started; check with: mlflow-anf volume show standard/data" in result.stdout
    assert len(emu.writes()) == 1


def test_revert_refuses_without_exact_confirm(emu, config_file):
    seed_snapshots(emu, "s1", "s2", "s3")
    for extra in ([], ["--confirm", "dat"], ["--confirm", "standard/data"]):
        result = run(config_file, "revert", "data", "s1", *extra)
        assert result.exit_code == 2
        assert "newer snapshot(s):" in result.stderr and "s2" in result.stderr and "s3" in result.stderr
        assert "all data written to premium/data since" in result.stderr
        assert "pass --confirm data" in result.stderr
    result = run(config_file, "revert", "data", "s1", "-o", "json")
    out = json.loads(result.stdout)
    assert out["exit_code"] == 2 and [s["name"] for s in out["revert_plan"]["snapshots_lost"]] == ["s2", "s3"]
    assert emu.writes() == [] and emu.snapshot_names(RG, ACCOUNT, "premium", "data") == ["s1", "s2", "s3"]

    result = run(config_file, "revert", "data", "s1", "--confirm", "data")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.rstrip().endswith("reverted.") and "2 newer snapshot(s)" in result.stdout
    assert emu.snapshot_names(RG, ACCOUNT, "premium", "data") == ["s1"]


def test_restore(emu, config_file):
    seed_snapshots(emu, "golden")
    result = run(config_file, "restore", "premium/data@golden", "--to", "data-golden")
    assert result.exit_code == 0, result.stderr
    assert "restored anf:premium/data@golden → new volume premium/data-golden" in result.stdout
    result = run(config_file, "restore", "anf:data@golden", "--to", "data-std", "--pool", "standard",
                 "--size-gib", "120", "-o", "json")
    assert json.loads(result.stdout)["restored"]["volume"] == "standard/data-std"
    assert emu.volume(RG, ACCOUNT, "standard", "data-std")["properties"]["usageThreshold"] == 120 * GIB


def test_restore_of_a_policy_snapshot_and_a_target_anf_refuses(emu, config_file):
    seed_snapshots(emu, "daily.2026-12-01_0010")  # named by an ANF snapshot policy
    result = run(config_file, "restore", "premium/data@daily.2026-12-01_0010", "--to", "data-daily")
    assert result.exit_code == 0, result.stderr
    assert emu.volume(RG, ACCOUNT, "premium", "data-daily") is not None
    emu.clear_requests()
    result = run(config_file, "restore", "premium/data@daily.2026-12-01_0010", "--to", "data_daily")
    assert result.exit_code == 2 and "target: 'data_daily'" in result.stderr and "no '_'" in result.stderr
    assert [r for r in emu.requests if r.is_arm] == []  # refused before any ARM call


def test_restore_without_wait_only_starts(emu, config_file):
    seed_snapshots(emu, "golden")
    result = run(config_file, "restore", "data@golden", "--to", "later", "--no-wait")
    assert result.exit_code == 0, result.stderr
    assert "restoring anf:premium/data@golden → new volume premium/later" in result.stdout
    assert emu.volume(RG, ACCOUNT, "premium", "later")["properties"]["provisioningState"] == "Creating"
    assert emu.count("GET", "/operationStatuses/") == 0


def test_snapshot_restore_command_waits_and_takes_no_verify(emu, config_file):
    """`mlflow-anf snapshot restore --provider anf` still waits for the new volume; --no-verify no longer fails."""
    seed_snapshots(emu, "golden")
    args = ["snapshot", "restore", "--provider", "anf", "--provider-config", str(config_file), "--volume", "data",
            "golden"]
    for target, extra in (("copy", []), ("copy-unverified", ["--no-verify"])):
        result = CliRunner().invoke(main, [*args, "--target", target, *extra])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert f"premium/{target}" in result.stdout
        assert emu.volume(RG, ACCOUNT, "premium", target)["properties"]["provisioningState"] == "Succeeded"


@pytest.mark.parametrize(("args", "code", "message"), [
    (["restore", "data-golden", "--to", "x"], 2, "not 'pool/volume@snapshot'"),
    (["restore", "data@missing", "--to", "x"], 3, "no such snapshot"),
    (["restore", "data@golden", "--to", "x", "--size-gib", "10"], 2, "below the snapshot's size floor"),
    (["show", "ghost"], 3, "volume 'premium/ghost' not found"),
    (["show", "Bad Volume!"], 2, "not a valid ANF volume name"),
])
def test_exit_codes_for_bad_input_and_missing_things(emu, config_file, args, code, message):
    seed_snapshots(emu, "golden")
    result = run(config_file, *args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert emu.writes() == []


def test_api_error_and_timeout_exit_codes(emu, config_file):
    emu.inject("GET", "/volumes/data$", status=503, times=2, message="Service busy (test).")
    result = run(config_file, "show", "data")
    assert result.exit_code == 4 and "HTTP 503" in result.stderr and "Service busy (test)." in result.stderr
    seed_snapshots(emu, "golden")
    emu.hang_operations = True
    result = run(config_file, "restore", "data@golden", "--to", "slow", "--option", "lro_timeout_s=0.3")
    assert result.exit_code == 5 and "still running after lro_timeout_s=0.3s" in result.stderr


def test_config_errors_exit_2_without_echoing_values(emu, config_file, tmp_path):
    result = run(config_file, "show", "data", "--option", f"client_secret={SECRET}")
    assert result.exit_code == 2 and "unknown option 'client_secret'" in result.stderr
    result = run(config_file, "show", "data", "--option", f"subscription_id={SECRET}", "-o", "json")
    assert result.exit_code == 2 and "subscription_id" in json.loads(result.stdout)["error"]
    result = run(config_file, "show", "data", "--option", SECRET)
    assert result.exit_code == 2 and "KEY=VALUE" in result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"subscription_id: x\naccount: [unclosed {SECRET}\n")
    result = run(broken, "show", "data")
    assert result.exit_code == 2 and "broken.yaml:" in result.stderr
    result = run(tmp_path / "missing.yaml", "show", "data")
    assert result.exit_code == 2 and "missing.yaml" in result.stderr
    emu.client_secret = "rotated"  # AAD now rejects our secret
    result = run(config_file, "show", "data")
    assert result.exit_code == 4 and "authentication failed" in result.stderr


def test_registered_in_the_main_cli(emu, config_file):
    result = CliRunner().invoke(main, ["volume", "show", "data", "--provider-config", str(config_file)])
    assert result.exit_code == 0, result.stderr
    assert "premium/data" in result.stdout
    assert "set-service-level" in CliRunner().invoke(main, ["volume", "--help"]).stdout
