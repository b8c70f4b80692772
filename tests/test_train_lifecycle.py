"""A training run's life: it ends FINISHED only when everything it records is recorded; a stopped trainer (SIGTERM,
or `mlflow run` killed under it) ends its run KILLED with a non-zero exit, never FINISHED, and never lingers as an
orphan; a run's outputs never make the checkout dirty."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.test_e2e_train import _mlflow_env, tiny_data  # noqa: F401 - the module-scoped tiny dataset fixture
from tests.support.snapshot_tags import snapshot_fields


def _lifecycle_env(tracking_uri: str) -> dict[str, str]:
    """The e2e environment with system metrics sampled every second (not every 0.1 s): these runs last tens of
    seconds, and a sampler writing to the sqlite store ten times a second only adds lock contention to the stop."""
    env = _mlflow_env(tracking_uri)
    env.update(MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1")
    return env

pytestmark = pytest.mark.slow

# the tiny, fast settings of test_e2e_train; epochs high enough that only a stop ends the run within the test
TINY = {"batch_size": "4", "val_batch_size": "4", "backbone": "resnet18_lite", "input_size": "64x128",
        "num_workers": "0", "overlays": "1", "log_model": "false"}


def _cli_args(values: dict[str, str]) -> list[str]:
    return [a for k, v in values.items() for a in (f"--{k.replace('_', '-')}", v)]


class _Lines:
    """Reads a process's merged output on a thread, so a test can wait for a line with a bound."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str, timeout_s: float) -> bool:
        while True:
            try:
                line = self.lines.get(timeout=timeout_s)
            except queue.Empty:
                return False
            if line is None:
                return False
            self.seen.append(line)
            if text in line:
                return True

    def tail(self) -> str:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return "".join(self.seen[-40:])


def _only_run(tracking_uri: str, experiment: str = "Default"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _kill_tree(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_sigterm_to_the_trainer_ends_the_run_killed_with_exit_143(tiny_data: Path, tmp_path: Path) -> None:  # noqa: F811
    """Finding: SIGTERM (Kubernetes stopping the pod) stopped training and the trainer exited 0, so `mlflow run`
    said it succeeded (Lightning 2.6 raises SIGTERMException, a SystemExit without a code; the run was left FAILED
    by the logger, not KILLED; a SIGTERM after `fit`, with Lightning's handler gone, killed the process outright
    and left the run RUNNING)."""
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "outputs"
    cmd = [sys.executable, str(REPO_ROOT / "project" / "run.py"), "train", "--data-dir", str(tiny_data),
           "--output-dir", str(out), "--epochs", "500", *_cli_args(TINY)]
    proc = subprocess.Popen(cmd, env=_lifecycle_env(tracking_uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = _Lines(proc)
    try:
        assert lines.wait_for("epoch 1/500", 120), lines.tail()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        _kill_tree([proc.pid])
    assert rc == 128 + signal.SIGTERM, lines.tail()
    run = _only_run(tracking_uri)
    assert run.info.status == "KILLED"
    assert not (out / "model").exists()  # a stopped run exports no model
    assert "mlflow_anf.snapshot.model.name" not in snapshot_fields(run.data.tags)  # ... and takes no model snapshot


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_mlflow_run_stops_its_trainer_and_ends_the_run_killed(
    tiny_data: Path, tmp_path: Path, sig: signal.Signals  # noqa: F811
) -> None:
    """Finding: SIGTERM/SIGKILL to `mlflow run` left the trainer training as an orphan and the run RUNNING.
    `mlflow run --env-manager local` starts the entry point with `bash -c` (which execs it) in its own process group
    and only cancels it on KeyboardInterrupt; the trainer now notices its parent is gone."""
    import psutil

    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "-e", "train", "--env-manager", "local",
           "-P", f"data_dir={tiny_data}", "-P", f"output_dir={tmp_path / 'outputs'}", "-P", "epochs=500",
           "-P", "batch_size=4", "-P", "val_batch_size=4", "-P", "backbone=resnet18_lite",
           "-P", "input_size=64x128", "-P", "num_workers=0", "-P", "enable_snapshot=false"]
    proc = subprocess.Popen(cmd, env=_lifecycle_env(tracking_uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = _Lines(proc)
    trainers: list[int] = []
    try:
        assert lines.wait_for("epoch 1/500", 180), lines.tail()
        trainers = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert trainers
        proc.send_signal(sig)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs([psutil.Process(pid) for pid in trainers if psutil.pid_exists(pid)],
                                        timeout=60)
        assert not alive, f"orphaned trainer(s) still running: {[p.pid for p in alive]}\n{lines.tail()}"
    finally:
        _kill_tree([proc.pid, *trainers])
    run = _only_run(tracking_uri)
    assert run.info.status == "KILLED", lines.tail()


def test_the_run_is_finished_only_after_everything_is_recorded(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """Finding: Lightning's MLFlowLogger ended the run FINISHED after `fit`, while the held-out test, the model
    export, the overlays and the model snapshot were still running (about 4 minutes of `make demo`)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from mlflow_anf_lanedet import train
    from mlflow_anf_lanedet.config import TrainConfig

    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)  # the env var decides
    seen: dict[str, str] = {}

    def status() -> str:
        return MlflowClient().get_run(mlflow.active_run().info.run_id).info.status

    import mlflow_anf.tracking

    real_test_start, real_overlays, real_snapshot = (
        train.LaneDetModule.on_test_epoch_start, train._log_overlays, mlflow_anf.tracking.snapshot_and_log)

    def on_test_epoch_start(self) -> None:  # type: ignore[no-untyped-def]
        seen["test"] = status()
        real_test_start(self)

    def log_overlays(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen["overlays"] = status()
        return real_overlays(*args, **kwargs)

    def snapshot(provider, volume, role, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen[f"{role} snapshot"] = status()
        return real_snapshot(provider, volume, role, *args, **kwargs)

    monkeypatch.setattr(train.LaneDetModule, "on_test_epoch_start", on_test_epoch_start)
    monkeypatch.setattr(train, "_log_overlays", log_overlays)
    monkeypatch.setattr(mlflow_anf.tracking, "snapshot_and_log", snapshot)  # what SnapshotLineage calls
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns(".snapshot"))
    cfg = TrainConfig(data_dir=data, output_dir=tmp_path / "outputs", epochs=1, **TINY)
    result = train.run_training(cfg)
    assert seen == {"data snapshot": "RUNNING", "test": "RUNNING", "overlays": "RUNNING",
                    "model snapshot": "RUNNING"}
    assert MlflowClient().get_run(result["run_id"]).info.status == "FINISHED"


def test_a_run_failing_after_fit_ends_failed(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """The other side of owning the run: an error after `fit` (here: drawing the overlays) ends it FAILED, not
    FINISHED (the logger no longer closes it after `fit`; the owner does, once)."""
    from mlflow_anf_lanedet import train
    from mlflow_anf_lanedet.config import TrainConfig

    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)  # the env var decides

    def broken_overlays(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full while drawing overlays")

    monkeypatch.setattr(train, "_log_overlays", broken_overlays)
    cfg = TrainConfig(data_dir=tiny_data, output_dir=tmp_path / "outputs", epochs=1, enable_snapshot=False, **TINY)
    with pytest.raises(RuntimeError, match="disk full"):
        train.run_training(cfg)
    run = _only_run(tracking_uri)
    assert run.info.status == "FAILED"


def test_outputs_of_a_run_never_make_the_checkout_dirty(tmp_path: Path) -> None:
    """Finding: the default output_dir `outputs` lies in the checkout and was not ignored: after one run the code
    was dirty, the provenance digest changed and `mlflow-anf reproduce` refused."""
    from mlflow_anf.provenance import code_version

    repo = tmp_path / "checkout"
    (repo / "project").mkdir(parents=True)
    shutil.copy(REPO_ROOT / ".gitignore", repo / ".gitignore")
    shutil.copy(REPO_ROOT / "MLproject", repo / "MLproject")
    (repo / "project" / "train.py").write_text("print('train')\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "init"], check=True)
    before = code_version(repo / "project" / "train.py")
    assert not before.dirty

    # what a run with the default output_dir leaves in the checkout (the MLproject's cwd)
    (repo / "outputs" / "model").mkdir(parents=True)
    (repo / "outputs" / "model" / "MLmodel").write_text("flavors: {}\n")
    (repo / "outputs" / ".snapshot" / "model-1").mkdir(parents=True)
    after = code_version(repo / "project" / "train.py")
    assert not after.dirty, after.dirty_files
    assert after.digest == before.digest
    # only the top-level outputs/ is ignored: a source folder of that name elsewhere still counts
    (repo / "project" / "outputs").mkdir()
    (repo / "project" / "outputs" / "code.py").write_text("x = 1\n")
    assert code_version(repo / "project" / "train.py").dirty


def test_stop_signals_raise_once_then_only_record_and_restore_the_handlers() -> None:
    from mlflow_anf_lanedet.distributed import TrainingStopped, stop_signals

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped) as info:
        with stop_signals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes (right away); the loop only bounds the wait
                pass
    assert info.value.code == 143 and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == previous

    with stop_signals() as stop:
        assert stop.disarm() is None
        os.kill(os.getpid(), signal.SIGINT)  # closing: recorded, not raised
        for _ in range(1000):
            pass
    assert stop.signum == signal.SIGINT

    # an error caused by the stop (e.g. a data-loader worker killed by the same signal) still reads as the stop
    with pytest.raises(TrainingStopped) as info:
        with stop_signals() as stop:
            stop.signum = signal.SIGTERM
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated")
    assert info.value.code == 143 and isinstance(info.value.__cause__, RuntimeError)
