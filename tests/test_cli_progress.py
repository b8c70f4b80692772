"""Long commands show what they are doing on a terminal, and nothing with -q or when stderr is not a terminal
(issue #15, part 2): mlflow_anf.progress itself, then the real commands run under a pseudo-terminal (``pty``)."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from mlflow_anf.progress import SILENT, TerminalProgress, for_cli
from tests.conftest import REPO_ROOT

ELAPSED = "0:00:0"  # rich's TimeElapsedColumn: H:MM:SS
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _text(terminal: str) -> str:
    """What a terminal was sent, without the colour and cursor escapes."""
    return _ANSI.sub("", terminal)


class _Buffer(io.StringIO):
    def getvalue(self) -> str:
        return _text(super().getvalue())


def _terminal_progress() -> tuple[TerminalProgress, io.StringIO]:
    buf = _Buffer()
    return TerminalProgress(console=Console(file=buf, force_terminal=True, width=120)), buf


def test_a_step_shows_its_description_count_and_elapsed_time_on_a_terminal() -> None:
    progress, buf = _terminal_progress()
    with progress.step("render 3 frames", total=3) as step:
        for _ in range(3):
            step.advance()
    out = buf.getvalue()
    assert "render 3 frames" in out and "3/3" in out and ELAPSED in out


def test_a_waiting_step_shows_the_phase_it_is_told() -> None:
    progress, buf = _terminal_progress()
    with progress.step("VolumeSnapshot ns/data@s1") as step:
        step.describe("VolumeSnapshot ns/data@s1: pending [no content yet]")  # brackets are no rich markup
    assert "pending [no content yet]" in buf.getvalue()


def test_a_failed_step_says_so_and_the_error_goes_on() -> None:
    progress, buf = _terminal_progress()
    with pytest.raises(RuntimeError), progress.step("restore x"):
        raise RuntimeError("boom")
    assert "restore x (failed)" in buf.getvalue()


def test_nested_steps_share_one_display() -> None:
    progress, buf = _terminal_progress()
    with progress.step("reproduce"), progress.step("restore"):
        pass  # two live displays at once would raise rich.errors.LiveError
    with progress.step("again"):
        pass
    assert "again" in buf.getvalue()


def test_silent_draws_nothing_and_for_cli_decides_by_terminal_and_quiet() -> None:
    with SILENT.step("x", total=2) as step:
        step.advance()
        step.describe("y")
    assert not step.shown
    assert for_cli(False, io.StringIO()) is SILENT  # not a terminal
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            assert isinstance(for_cli(False, tty), TerminalProgress)
            assert for_cli(True, tty) is SILENT
    finally:
        os.close(master)
        os.close(slave)


# ---- the real commands ----------------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "project"), env.get("PYTHONPATH", "")])
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm"
    env["COLUMNS"] = "300"  # a pty opened here has no size: rich would assume 80 columns and cut the long paths
    return env


def _run_on_pty(args: list[str], timeout_s: float = 180) -> tuple[int, str, str]:
    """Run *args* with stderr on a pseudo-terminal (stdout a pipe): (exit code, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=_env())
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    stdout, _ = proc.communicate(timeout=60)
    return proc.returncode, stdout.decode(), _text(b"".join(chunks).decode(errors="replace"))


def _run_piped(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=180, stdin=subprocess.DEVNULL)


def _mlflow_anf(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlflow_anf.cli", *args]


def _lanedet(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlflow_anf_lanedet.cli", *args]


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    vol = tmp_path / "vol"
    (vol / "sub").mkdir(parents=True)
    for i in range(5):
        (vol / "sub" / f"f{i}.txt").write_text(f"file {i}\n")
    return vol


def test_snapshot_create_and_restore_show_progress_on_a_terminal(volume: Path, tmp_path: Path) -> None:
    code, out, tty = _run_on_pty(_mlflow_anf("snapshot", "create", "--volume", str(volume), "--name", "s1"))
    assert code == 0, tty
    assert f"snapshot {volume}" in tty and ELAPSED in tty and "created local:" in out
    code, out, tty = _run_on_pty(_mlflow_anf("snapshot", "restore", "--volume", str(volume), "s1",
                                             "--target", str(tmp_path / "copy")))
    assert code == 0, tty
    assert f"restore {volume}@s1 to {tmp_path / 'copy'}" in tty and ELAPSED in tty
    assert (tmp_path / "copy" / "sub" / "f4.txt").read_text() == "file 4\n"


def test_snapshot_create_is_silent_with_quiet_and_off_a_terminal(volume: Path) -> None:
    code, out, tty = _run_on_pty(_mlflow_anf("snapshot", "create", "--volume", str(volume), "--name", "s1", "-q"))
    assert code == 0 and "created local:" in out
    assert tty == ""
    piped = _run_piped(_mlflow_anf("snapshot", "create", "--volume", str(volume), "--name", "s2"))
    assert piped.returncode == 0 and "created local:" in piped.stdout
    assert piped.stderr == ""


def test_a_failing_step_shows_failed_then_the_error(tmp_path: Path) -> None:
    code, _, tty = _run_on_pty(_mlflow_anf("snapshot", "create", "--volume", str(tmp_path / "missing")))
    assert code != 0
    assert "(failed)" in tty and "Error:" in tty


@pytest.mark.slow
def test_lanedet_synth_counts_frames_on_a_terminal_and_is_quiet_otherwise(tmp_path: Path) -> None:
    code, out, tty = _run_on_pty(_lanedet("synth", "--out", str(tmp_path / "a"), "--frames", "3"))
    assert code == 0, tty
    assert "render 3 frames" in tty and "3/3" in tty and ELAPSED in tty and "wrote 3 frames" in out
    code, out, tty = _run_on_pty(_lanedet("synth", "--out", str(tmp_path / "b"), "--frames", "3", "--quiet"))
    assert code == 0 and tty == "" and "wrote 3 frames" in out
    piped = _run_piped(_lanedet("synth", "--out", str(tmp_path / "c"), "--frames", "3"))
    assert piped.returncode == 0 and piped.stderr == ""


@pytest.mark.slow
def test_lanedet_prepare_shows_its_steps_on_a_terminal(tmp_path: Path) -> None:
    assert _run_piped(_lanedet("synth", "--out", str(tmp_path / "raw"), "--frames", "3")).returncode == 0
    code, out, tty = _run_on_pty(_lanedet("prepare", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "p")))
    assert code == 0, tty
    for step in ("layout)", "clips", "check labels", "digest"):
        assert step in tty
    assert "prepared" in out
    code, out, tty = _run_on_pty(_lanedet("prepare", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "q"),
                                          "-q"))
    assert code == 0 and tty == ""


# ---- phases of the waits: a csi VolumeSnapshot (Kubernetes emulator), an ANF operation (ARM emulator) ------------

def test_csi_snapshot_create_shows_each_phase_while_it_waits(kubeconfig_path: Path, k8s_objects, snapshot_controller,
                                                             pvc_binder) -> None:
    k8s_objects.storage_class()
    k8s_objects.snapshot_class(default=True)
    k8s_objects.pvc("data")
    snapshot_controller.default.ready_after = 0.5
    code, out, tty = _run_on_pty(_mlflow_anf("snapshot", "create", "--provider", "csi", "--option",
                                             f"kubeconfig={kubeconfig_path}", "--volume", "default/data",
                                             "--name", "s1"))
    assert code == 0, tty
    assert "VolumeSnapshot default/data@s1: ready" in tty and ELAPSED in tty and "created csi:" in out


def test_anf_volume_restore_shows_the_operation_state_while_it_waits(tmp_path: Path, monkeypatch) -> None:
    import yaml

    from tests.doubles.arm_emulator import ACCOUNT, RG, ArmEmulator, seed_ml_estate

    with ArmEmulator() as emu:
        seed_ml_estate(emu)
        emu.add_snapshot(RG, ACCOUNT, "premium", "data", "golden")
        emu.client_secret = "progress-test-secret"
        config = tmp_path / "anf.yaml"
        config.write_text(yaml.safe_dump({
            "subscription_id": emu.subscription_id, "resource_group": RG, "account": ACCOUNT, "pool": "premium",
            "credential": "environment", "base_url": emu.base_url, "authority": emu.base_url,
            "disable_instance_discovery": True, "ca_bundle": emu.ca_file, "polling_interval_s": 0.01,
            "retry_total": 1, "retry_backoff_factor": 0.01,
        }))
        for name, value in (("AZURE_TENANT_ID", emu.tenant_id), ("AZURE_CLIENT_ID", emu.client_id),
                            ("AZURE_CLIENT_SECRET", emu.client_secret)):
            monkeypatch.setenv(name, value)
        code, out, tty = _run_on_pty(_mlflow_anf("volume", "restore", "data@golden", "--to", "copy",
                                                 "--provider-config", str(config)))
    assert code == 0, tty
    assert "restore anf:premium/data@golden to new volume premium/copy: InProgress" in tty, tty
    assert ELAPSED in tty and "restored anf:premium/data@golden" in out


@pytest.mark.slow
def test_lanedet_budget_counts_the_steps_it_times(tmp_path: Path) -> None:
    from mlflow_anf_lanedet.data.prepare import prepare
    from mlflow_anf_lanedet.synth import generate

    generate(tmp_path / "download", frames=24, seed=5)
    prepare(tmp_path / "download", tmp_path / "data")
    args = ["budget", "--minutes", "60", "-P", f"data_dir={tmp_path / 'data'}", "-P", "epochs=3",
            "-P", "backbone=resnet18_lite", "-P", "input_size=64x128", "-P", "batch_size=4", "-P", "num_workers=0"]
    code, out, tty = _run_on_pty(_lanedet(*args))
    assert code == 0, tty
    assert "time training steps" in tty and "14/14" in tty and "time evaluation batches" in tty and "5/5" in tty
    assert "the full schedule, 3 epochs" in out  # (-q: the same for_cli(quiet) as every command above)


def test_results_printed_during_a_step_stay_on_stdout(tmp_path: Path) -> None:
    """`volume show` prints its result inside its step: with stdout a pipe or file and stderr the terminal, the result
    is on stdout (rich would otherwise route stdout through its console, i.e. to stderr)."""
    script = ("import click\nfrom mlflow_anf.progress import for_cli\n"
              "with for_cli(False).step('working'):\n    click.echo('RESULT-LINE')\n    print('PRINTED-LINE')\n")
    code, out, tty = _run_on_pty([sys.executable, "-c", script])
    assert code == 0, tty
    assert "RESULT-LINE" in out and "PRINTED-LINE" in out
    assert "RESULT-LINE" not in tty and "PRINTED-LINE" not in tty and "working" in tty
