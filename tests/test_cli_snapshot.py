"""`mlflow-anf snapshot ...` through click's CliRunner: JSON output and the documented exit codes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient

from mlflow_anf import cli
from mlflow_anf.cli import ExitCode, exit_code_for, main
from mlflow_anf.snapshots import (
    InvalidSnapshotName,
    ProviderConfigError,
    SnapshotError,
    SnapshotExists,
    SnapshotNotFound,
    SnapshotTimeout,
)
from mlflow_anf.snapshots.local import MANIFEST_NAME, InvalidRequest, LocalSnapshotProvider
from tests.support.snapshot_tags import snapshot_fields


def _run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def _json(result: Result) -> object:
    return json.loads(result.stdout)


@pytest.fixture()
def volume(tmp_path: Path) -> Path:
    vol = tmp_path / "vol"
    (vol / "clips").mkdir(parents=True)
    (vol / "clips" / "1.jpg").write_bytes(os.urandom(2_000))
    (vol / "labels.json").write_text("[]\n")
    return vol


def test_exit_codes_are_documented_in_one_place() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5]
    assert exit_code_for(SnapshotTimeout("slow")) is ExitCode.TIMEOUT
    assert exit_code_for(SnapshotNotFound("x")) is ExitCode.NOT_FOUND
    assert exit_code_for(InvalidSnapshotName("x")) is ExitCode.USAGE
    assert exit_code_for(SnapshotExists("x")) is ExitCode.USAGE
    assert exit_code_for(ProviderConfigError("x")) is ExitCode.USAGE
    assert exit_code_for(SnapshotError("x")) is ExitCode.PROVIDER_ERROR
    help_text = " ".join(_run("snapshot", "--help").stdout.split())  # unwrap click's line breaks
    assert cli.EXIT_CODES_HELP in help_text


def test_create_list_show_verify_restore_delete(volume: Path, tmp_path: Path) -> None:
    created = _run("snapshot", "create", "--volume", str(volume), "--name", "v1", "--label", "team=lanes", "-o", "json")
    assert created.exit_code == 0, created.output
    snap = _json(created)
    assert snap["name"] == "v1" and snap["labels"] == {"team": "lanes"}
    assert snap["ref"] == f"local:{volume.resolve()}@v1"
    assert snap["digest"].startswith("sha256:") and snap["details"]["files"] == 2

    listed = _run("snapshot", "list", "--volume", str(volume), "-o", "json")
    assert listed.exit_code == 0 and [s["name"] for s in _json(listed)] == ["v1"]
    table = _run("snapshot", "list", "--volume", str(volume))
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "CREATED", "FILES", "SIZE", "DIGEST", "LABELS"]
    assert row.split()[0] == "v1" and "team=lanes" in row and snap["digest"][:19] in row

    shown = _run("snapshot", "show", "--volume", str(volume), "v1", "-o", "json")
    assert shown.exit_code == 0 and _json(shown) == snap
    assert "digest" in _run("snapshot", "show", "--volume", str(volume), "v1").stdout

    verified = _run("snapshot", "verify", "--volume", str(volume), "v1", "-o", "json")
    assert verified.exit_code == ExitCode.OK
    assert _json(verified) == {"ref": snap["ref"], "ok": True, "checked": 3, "problems": []}

    restored = _run("snapshot", "restore", "--volume", str(volume), "v1", "--target", str(tmp_path / "r"), "-o", "json")
    assert restored.exit_code == 0, restored.output
    assert _json(restored) == {"source": snap["ref"], "target": str(tmp_path / "r")}
    assert (tmp_path / "r" / "labels.json").read_text() == "[]\n"

    refused = _run("snapshot", "delete", "--volume", str(volume), "v1", input="n\n")
    assert refused.exit_code == ExitCode.USAGE and "not deleted" in refused.stderr
    deleted = _run("snapshot", "delete", "--volume", str(volume), "v1", "--yes", "-o", "json")
    assert deleted.exit_code == 0 and _json(deleted) == {"deleted": snap["ref"]}
    assert _run("snapshot", "list", "--volume", str(volume)).stdout.strip() == "no snapshots"


def test_verify_problems_exit_1(volume: Path) -> None:
    _run("snapshot", "create", "--volume", str(volume), "--name", "v")
    victim = volume / ".snapshot" / "v" / "labels.json"
    victim.chmod(0o644)
    victim.write_text("{}\n")
    result = _run("snapshot", "verify", "--volume", str(volume), "v", "-o", "json")
    assert result.exit_code == ExitCode.VERIFY_FAILED
    body = _json(result)
    assert body["ok"] is False and "changed: labels.json (content)" in body["problems"]
    text = _run("snapshot", "verify", "--volume", str(volume), "v")
    assert text.exit_code == 1 and "PROBLEMS" in text.stdout and "changed: labels.json" in text.stdout


def test_error_exit_codes(volume: Path, tmp_path: Path) -> None:
    missing = _run("snapshot", "show", "--volume", str(volume), "ghost", "-o", "json")
    assert missing.exit_code == ExitCode.NOT_FOUND
    assert _json(missing) == {"error": f"snapshot 'ghost' not found in {volume.resolve()}/.snapshot", "exit_code": 3}
    assert "Error: snapshot 'ghost' not found" in missing.stderr

    no_volume = _run("snapshot", "list", "--volume", str(tmp_path / "nowhere"))
    assert no_volume.exit_code == ExitCode.NOT_FOUND

    bad_name = _run("snapshot", "create", "--volume", str(volume), "--name", "Bad_Name")
    assert bad_name.exit_code == ExitCode.USAGE and "'Bad_Name' is not a valid snapshot name" in bad_name.stderr

    _run("snapshot", "create", "--volume", str(volume), "--name", "taken")
    taken = _run("snapshot", "create", "--volume", str(volume), "--name", "taken")
    assert taken.exit_code == ExitCode.USAGE and "already exists" in taken.stderr

    bad_label = _run("snapshot", "create", "--volume", str(volume), "--label", "novalue")
    assert bad_label.exit_code == ExitCode.USAGE and "--label" in bad_label.stderr

    unknown = _run("snapshot", "list", "--volume", str(volume), "--option", "colour=blue")
    assert unknown.exit_code == ExitCode.USAGE and "unknown option 'colour'" in unknown.stderr

    both = _run("snapshot", "restore", "--target", str(tmp_path / "x"))
    assert both.exit_code == ExitCode.USAGE and "--run-id" in both.stderr

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "f").write_text("x")
    not_empty = _run("snapshot", "restore", "--volume", str(volume), "taken", "--target", str(busy))
    assert not_empty.exit_code == ExitCode.USAGE and "not an empty directory" in not_empty.stderr

    broken = tmp_path / "broken-vol"
    broken.mkdir()
    (broken / ".snapshot").write_text("a file where the snapshot directory belongs")
    provider_error = _run("snapshot", "create", "--volume", str(broken), "-o", "json")
    assert provider_error.exit_code == ExitCode.PROVIDER_ERROR
    assert "not a directory" in _json(provider_error)["error"]


def test_provider_config_files(volume: Path, tmp_path: Path) -> None:
    yaml_file = tmp_path / "local.yaml"
    yaml_file.write_text("method: hardlink\nfsync: false\n")
    made = _run("snapshot", "create", "--volume", str(volume), "--provider-config", str(yaml_file), "-o", "json")
    assert made.exit_code == 0 and _json(made)["details"]["method"] == "hardlink"

    json_file = tmp_path / "local.json"
    json_file.write_text('{"root": "%s"}' % tmp_path)
    by_root = _run("snapshot", "list", "--provider", "local", "--provider-config", str(json_file), "-o", "json")
    assert by_root.exit_code == 0 and [Path(s["volume"]).name for s in _json(by_root)] == ["vol"]

    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "method": "hardlink",\n  oops\n}')
    bad = _run("snapshot", "list", "--volume", str(volume), "--provider-config", str(broken))
    assert bad.exit_code == ExitCode.USAGE and f"{broken}:3:" in bad.stderr

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("method: hardlink\nfsync: [unclosed\n")
    bad = _run("snapshot", "list", "--volume", str(volume), "--provider-config", str(bad_yaml))
    assert bad.exit_code == ExitCode.USAGE and f"{bad_yaml}:" in bad.stderr

    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- method\n")
    result = _run("snapshot", "list", "--volume", str(volume), "--provider-config", str(not_mapping))
    assert result.exit_code == ExitCode.USAGE and "expected a mapping" in result.stderr


def test_lazy_registry_hides_commands_that_are_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli._COMMANDS, "ghost", ("mlflow_anf.not_installed:ghost", "Never there."))
    monkeypatch.setitem(cli._COMMANDS, "extra", ("mlflow_anf.cli:snapshot", "Registered by one line."))
    monkeypatch.setitem(cli._COMMANDS, "half", ("mlflow_anf.cli:no_such_command", "Module there, command not yet."))
    help_text = _run("--help").stdout
    assert "snapshot" in help_text and "extra" in help_text and "ghost" not in help_text
    result = _run("ghost")
    assert result.exit_code == ExitCode.USAGE and "not available" in result.stderr
    half = _run("half")
    assert half.exit_code == ExitCode.USAGE and "mlflow_anf.cli:no_such_command is missing" in half.stderr
    assert _run("extra", "--help").exit_code == 0


def test_create_with_run_logs_to_mlflow_and_restores_from_it(
    tracking: MlflowClient, volume: Path, tmp_path: Path
) -> None:
    run_id = tracking.create_run(experiment_id="0").info.run_id
    result = _run("snapshot", "create", "--volume", str(volume), "--run-id", run_id, "--role", "data", "-o", "json")
    assert result.exit_code == 0, result.output
    snap = _json(result)
    assert snap["labels"]["mlflow-anf/run-id"] == run_id and snap["labels"]["mlflow-anf/role"] == "data"
    run = tracking.get_run(run_id)
    assert snapshot_fields(run.data.tags)["mlflow_anf.snapshot.data.ref"] == snap["ref"]
    # the dataset is named by the volume, not by the snapshot (whose name carries its time)
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == [Path(snap["volume"]).name]

    restored = _run("snapshot", "restore", "--run-id", run_id, "--target", str(tmp_path / "again"), "-o", "json")
    assert restored.exit_code == 0, restored.output
    assert (tmp_path / "again" / "labels.json").read_text() == "[]\n"
    no_model = _run("snapshot", "restore", "--run-id", run_id, "--role", "model", "--target", str(tmp_path / "m"))
    assert no_model.exit_code == ExitCode.NOT_FOUND

    role_only = _run("snapshot", "create", "--volume", str(volume), "--role", "model")
    assert role_only.exit_code == ExitCode.USAGE
    missing_run = _run("snapshot", "create", "--volume", str(volume), "--run-id", "f" * 32)
    assert missing_run.exit_code == ExitCode.NOT_FOUND
    assert len(_json(_run("snapshot", "list", "--volume", str(volume), "-o", "json"))) == 1


def test_yaml_provider_config_error_does_not_echo_the_line(tmp_path) -> None:
    """A YAML error reports file:line and the parser's problem, never the offending text (it may hold a secret)."""
    from click.testing import CliRunner

    from mlflow_anf.cli import main

    cfg = tmp_path / "provider.yaml"
    cfg.write_text("root: /data\ntoken: 'canary-s3cret\n")
    result = CliRunner().invoke(main, ["snapshot", "list", "--provider-config", str(cfg)])
    assert result.exit_code == 2
    assert f"{cfg}:" in result.output
    assert "canary-s3cret" not in result.output


# ------------------------------------------------------------------------------------ issue #11: data safety
def test_restore_never_writes_outside_the_target_for_a_doctored_manifest(volume: Path, tmp_path: Path) -> None:
    """Red team: a manifest entry `../escaped.txt` made `restore --no-verify` write next to the target, exit 0."""
    from tests.test_bad_inputs_snapshots import add_entry, doctor_manifest

    snap = LocalSnapshotProvider().create(str(volume), "s1")
    (volume / ".snapshot" / "escaped.txt").write_text("escaped")  # bytes for the forged entry to copy
    digest = hashlib.sha256(b"escaped").hexdigest()
    doctor_manifest(Path(snap.details["path"]), add_entry(path="../escaped.txt", type="file", mode="0644", size=7,
                                                          sha256=digest))  # fmt: skip
    result = CliRunner().invoke(
        main, ["snapshot", "restore", "--volume", str(volume), "s1", "--target", str(tmp_path / "t"), "--no-verify"]
    )
    assert result.exit_code == ExitCode.PROVIDER_ERROR, result.output
    assert "../escaped.txt" in result.output and MANIFEST_NAME in result.output
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "t").exists()


def test_file_names_with_newlines_cannot_forge_verify_or_list_output(volume: Path, tmp_path: Path) -> None:
    """Red team: a file named "x\\nchanged: ..." printed a forged line in `verify`; labels forged `list` rows."""
    provider = LocalSnapshotProvider()
    (volume / "x\nok: all good").write_text("x")
    snap = provider.create(str(volume), "s1")
    victim = Path(snap.details["path"]) / "x\nok: all good"
    Path(snap.details["path"]).chmod(0o755)
    victim.unlink()  # a real problem whose report line carries the name
    result = CliRunner().invoke(main, ["snapshot", "verify", "--volume", str(volume), "s1"])
    assert result.exit_code == 1
    assert "ok: all good" not in result.output.splitlines()
    assert '  missing: "x\\nok: all good"' in result.output.splitlines()
    with pytest.raises(InvalidRequest, match="labels"):
        provider.create(str(volume), "s2", labels={"run": "r1\ns9  2020-01-01"})
    root = tmp_path / "root"
    (root / "v\nforged").mkdir(parents=True)
    (root / "v\nforged" / "a.txt").write_text("a")
    provider.create(str(root / "v\nforged"), "s3")
    listing = CliRunner().invoke(main, ["snapshot", "list", "--option", f"root={root}"])
    assert listing.exit_code == 0 and not any(line.startswith("forged") for line in listing.output.splitlines())


def test_the_cli_reports_skipped_fifos_and_sockets(volume: Path) -> None:
    """Red team: fifos and sockets were skipped silently."""
    import socket

    os.mkfifo(volume / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(volume / "sock"))
        result = CliRunner().invoke(main, ["snapshot", "create", "--volume", str(volume), "--name", "s1"])
    finally:
        sock.close()
    assert result.exit_code == 0, result.output
    assert "skipped 2 special file(s)" in result.output and "pipe, sock" in result.output


def test_no_verify_reaches_the_provider_and_the_run_restore(
    volume: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-verify is passed as verify=False both to the provider and through mlflow_anf.tracking.restore."""
    snap = LocalSnapshotProvider().create(str(volume), "s1")
    snapdir = Path(snap.details["path"])
    manifest = snapdir / MANIFEST_NAME
    snapdir.chmod(0o755)
    manifest.chmod(0o644)
    header, rest = manifest.read_text().split("\n", 1)
    manifest.write_text(header.replace(snap.digest or "", "sha256:" + "0" * 64) + "\n" + rest)  # entries != digest
    checked = _run("snapshot", "restore", "--volume", str(volume), "s1", "--target", str(tmp_path / "a"))
    assert checked.exit_code == ExitCode.PROVIDER_ERROR and "do not match its digest" in checked.output
    unchecked = _run("snapshot", "restore", "--volume", str(volume), "s1", "--target", str(tmp_path / "b"),
                     "--no-verify", "-o", "json")  # fmt: skip
    assert unchecked.exit_code == 0, unchecked.output
    assert (tmp_path / "b" / "labels.json").read_text() == "[]\n"

    seen: list[bool] = []

    def restore(run_id: str, target: str, *, role: str, provider: object, provider_options: dict[str, str],
                wait: bool | None = None, timeout_s: float | None = None, verify: bool = True) -> str:  # fmt: skip
        seen.append(verify)
        return target

    monkeypatch.setattr("mlflow_anf.tracking.restore", restore)
    for extra in ([], ["--no-verify"]):
        result = _run("snapshot", "restore", "--run-id", "r1", "--target", str(tmp_path / "c"), *extra)
        assert result.exit_code == 0, result.output
    assert seen == [True, False]
