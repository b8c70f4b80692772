"""Distributed data-parallel training on CPU with 2 processes (Gloo): DDP under ``mpirun`` and Horovod under
``horovodrun`` behave exactly like one process with the global batch, and a failing rank fails the whole job.

Equivalence (``tests/support/dist_tiny.py`` explains the BN-free float64 model): N=2 processes × batch 4 for 8 steps give the
weights of 1 process × batch 8 to within 1e-12 (float64; only the summation order of the gradient average differs),
also with gradient accumulation (2 × batch 2 per step) and when resuming from a rank-0 checkpoint. Rank 1 starts from
other weights (and, for Horovod, another momentum), so equality also proves the broadcast from rank 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import REPO_ROOT
from tests.support.dist_tiny import EPOCHS, N_SAMPLES, build_model, run_reference
from tests.support.snapshot_tags import snapshot_fields

BIN = Path(sys.executable).parent
LAUNCH = {
    "ddp": [str(BIN / "mpirun"), "-n", "2"],
    "horovod": [str(BIN / "horovodrun"), "-np", "2", "--gloo"],
}
PERTURB = {"ddp": "weights", "horovod": "weights+optimizer"}  # DDP syncs weights only, Horovod optimizer state too
PER_PROCESS_BATCH = 4
ATOL = 1e-12


# ----------------------------------------------------------------------------------------------------- helpers
def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "HOROVOD_", "MPI_LOCAL"))}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    # launched from the test's scratch directory (MLflow's ./mlruns lands there): `tests.*` imports need the repo
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _launch(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a launcher in its own session; on a hang kill every process it started and fail with its output."""
    proc = subprocess.Popen(cmd, env=env, cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:4])} ... hung for {timeout:.0f} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


# ------------------------------------------------------------------------------- 2 processes vs 1 (tiny model)
@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return run_reference(batch=2 * PER_PROCESS_BATCH)


@pytest.fixture(scope="module", params=["ddp", "horovod"])
def tiny_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One launch per strategy: equivalence, accumulation, resume, then rank 1 raises mid-training."""
    strategy = request.param
    out = tmp_path_factory.mktemp(f"tiny-{strategy}")
    cmd = [*LAUNCH[strategy], sys.executable, str(REPO_ROOT / "tests" / "support" / "dist_tiny.py"), "--strategy", strategy,
           "--out", str(out), "--batch", str(PER_PROCESS_BATCH), "--perturb", PERTURB[strategy],
           "--phases", "equivalence,accumulate,resume,fail"]
    proc = _launch(cmd, _env(), timeout=240)
    results = {p.stem: torch.load(p, weights_only=False) for p in out.glob("*.pt")}
    return {"strategy": strategy, "out": out, "proc": proc, "results": results}


def _phase(tiny_run: dict[str, Any], phase: str, rank: int) -> dict[str, Any]:
    key = f"{phase}.rank{rank}"
    assert key in tiny_run["results"], f"{key} missing; launcher output:\n{tiny_run['proc'].stdout[-4000:]}"
    return tiny_run["results"][key]


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["equivalence", "accumulate", "resume"])
def test_two_processes_match_one_process_with_the_global_batch(
    tiny_run: dict[str, Any], reference: dict[str, Any], phase: str
) -> None:
    initial = build_model(0).state_dict()
    assert _max_diff(reference["state"], initial) > 1e-2, "the reference must actually train"
    for rank in (0, 1):
        result = _phase(tiny_run, phase, rank)
        assert _max_diff(result["state"], reference["state"]) < ATOL, (tiny_run["strategy"], phase, rank)
        assert result["lr"] == pytest.approx(reference["lr"], abs=1e-15)  # same scheduler steps
        assert result["momentum"] == 0.9  # rank 1's 0.5 (horovod) was replaced by rank 0's


@pytest.mark.slow
def test_logged_metrics_are_global(tiny_run: dict[str, Any], reference: dict[str, Any]) -> None:
    for rank in (0, 1):
        metrics = _phase(tiny_run, "equivalence", rank)["metrics"]
        # sync_dist=True mean over both ranks' batches == the single process's epoch mean over the same samples
        assert metrics["train_loss"] == pytest.approx(reference["metrics"]["train_loss"], abs=1e-12)
        assert metrics["samples"] == N_SAMPLES == reference["metrics"]["samples"]  # reduce_fx=sum over ranks


@pytest.mark.slow
def test_collectives_and_data_shards(tiny_run: dict[str, Any]) -> None:
    seen = []
    for rank in (0, 1):
        result = _phase(tiny_run, "equivalence", rank)
        assert result["collectives"] == {
            "world_size": 2,
            "sum": [3.0],
            "mean": [1.5],
            "max": [2.0],
            "all_gather": [[0, 0], [1, 10]],
            "broadcast": {"from": 0},
            "any_rank0": True,
            "all_rank0": False,
        }
        seen.append(result["seen"])
    # every sample once per epoch, split between the ranks
    assert len(seen[0]) == len(seen[1]) == EPOCHS * N_SAMPLES // 2
    assert sorted(seen[0] + seen[1]) == sorted(list(range(N_SAMPLES)) * EPOCHS)


@pytest.mark.slow
def test_checkpoint_written_by_rank0_only(tiny_run: dict[str, Any]) -> None:
    out: Path = tiny_run["out"]
    assert (out / "resume.rank0.ckpt").is_file()
    assert not (out / "resume.rank1.ckpt").exists()  # horovod's rank 1 resumed from a path it could not read


@pytest.mark.slow
def test_a_rank_that_raises_fails_the_job(tiny_run: dict[str, Any]) -> None:
    proc, out = tiny_run["proc"], tiny_run["out"]
    assert proc.returncode != 0
    assert "injected failure on rank 1 at step 2" in proc.stdout
    assert "[rank 1/2] training failed: RuntimeError" in proc.stdout
    assert {p.name for p in out.glob("fail.*")} == {"fail.started.rank0", "fail.started.rank1"}


# ----------------------------------------------------------------------------------- 2-process `lanedet train`
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory, tusimple_fixtures: Path) -> Path:
    from mlflow_anf_lanedet.data.prepare import prepare
    from mlflow_anf_lanedet.synth import generate

    root = tmp_path_factory.mktemp("dist-data")
    generate(root / "download", frames=12, seed=3, labels=tusimple_fixtures / "label_data_0313.json")
    prepare(root / "download", root / "tusimple")
    return root / "tusimple"


def _train_cmd(launcher: str, data: Path, out: Path, *extra: str) -> list[str]:
    return [*LAUNCH[launcher], sys.executable, "-m", "mlflow_anf_lanedet.cli", "train", "--data-dir", str(data),
            "--output-dir", str(out), "--strategy", launcher, "--epochs", "1", "--batch-size", "2",
            "--val-batch-size", "2", "--backbone", "resnet18", "--input-size", "64x128", "--num-workers", "0",
            "--overlays", "0", "--log-model", "false", "--accelerator", "cpu", *extra]


def _runs(tracking_uri: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "horovod"])
def test_two_process_train_logs_one_run_and_one_snapshot_each(
    strategy: str, tiny_data: Path, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "outputs"
    data = tmp_path / "tusimple"  # a copy per run: snapshots are taken inside the data volume
    shutil.copytree(tiny_data, data)
    proc = _launch(_train_cmd(strategy, data, out), _env(MLFLOW_TRACKING_URI=uri), timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:]

    runs = _runs(uri)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow_anf.world_size"] == "2"
    data_snaps = [p.name for p in (data / ".snapshot").iterdir()]
    model_snaps = [p.name for p in (out / ".snapshot").iterdir()]
    assert len(data_snaps) == 1 and len(model_snaps) == 1
    assert snapshot_fields(run.data.tags)["mlflow_anf.snapshot.data.name"] == data_snaps[0]
    assert snapshot_fields(run.data.tags)["mlflow_anf.snapshot.model.name"] == model_snaps[0]
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "test_accuracy")
    assert len(history) == 1  # logged once, by rank 0
    assert proc.stdout.count(f"run {run.info.run_id}:") == 1  # only rank 0 reports a run


@pytest.mark.slow
def test_rank0_failing_before_training_fails_the_job_instead_of_hanging(tiny_data: Path, tmp_path: Path) -> None:
    """Rank 0 fails its data snapshot (a file named .snapshot is in the way; SnapshotLineage.on_fit_start) while rank 1
    waits for it in the first collective. Without the fail-fast guard mpirun would wait until the 30-minute
    process-group timeout. (Bad parameters,
    such as csi without pvc_name, are refused by every rank before any of this: see test_bad_inputs_train.py.)"""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    data = tmp_path / "tusimple"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns(".snapshot"))
    (data / ".snapshot").write_text("not a directory\n")
    cmd = _train_cmd("ddp", data, tmp_path / "outputs")
    proc = _launch(cmd, _env(MLFLOW_TRACKING_URI=uri), timeout=150)
    assert proc.returncode != 0
    assert "[rank 0/2] training failed:" in proc.stdout and ".snapshot" in proc.stdout, proc.stdout[-3000:]
    runs = _runs(uri)
    assert [r.info.status for r in runs] == ["FAILED"]


# -------------------------------------------------------------------------------------------- in-process units
MPICH_2 = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
OPENMPI_4_ON_2_NODES = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
                        "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
HOROVODRUN_2 = {"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "0", "HOROVOD_LOCAL_SIZE": "2",
                "HOROVOD_GLOO_RENDEZVOUS_ADDR": "127.0.0.1"}


def test_process_layout_from_each_launcher() -> None:
    from mlflow_anf_lanedet.distributed import process_layout

    assert process_layout({}).model_dump() == {"world_size": 1, "global_rank": 0, "local_world_size": 1,
                                               "local_rank": 0}
    mpich = process_layout(MPICH_2)
    assert (mpich.world_size, mpich.global_rank, mpich.local_world_size, mpich.num_nodes) == (2, 1, 2, 1)
    ompi = process_layout(OPENMPI_4_ON_2_NODES)
    assert (ompi.num_nodes, ompi.node_rank, ompi.local_rank) == (2, 1, 1)
    torchrun = process_layout({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"})
    assert (torchrun.num_nodes, torchrun.node_rank) == (2, 1)
    with pytest.raises(ValueError, match="do not split evenly"):
        process_layout({"PMI_RANK": "0", "PMI_SIZE": "3", "MPI_LOCALNRANKS": "2"})
    with pytest.raises(ValueError, match="PMI_RANK='x' is not an integer"):
        process_layout({"PMI_RANK": "x", "PMI_SIZE": "2"})


def test_trainer_distribution_matches_the_launcher() -> None:
    from mlflow_anf_lanedet.strategies import trainer_distribution
    from mlflow_anf_lanedet.strategies.mpi_ddp import MPIDDPStrategy

    assert trainer_distribution("auto", "auto", env={}) == {"strategy": "auto", "devices": "auto", "num_nodes": 1}
    assert trainer_distribution("ddp", "2", env={}) == {"strategy": "ddp", "devices": 2, "num_nodes": 1}
    placed = trainer_distribution("auto", "auto", env=OPENMPI_4_ON_2_NODES)
    assert isinstance(placed["strategy"], MPIDDPStrategy)
    assert (placed["devices"], placed["num_nodes"]) == (2, 2)
    with pytest.raises(ValueError, match=r"^devices: 4 does not fit this launch \(the launcher started 2 processes"):
        trainer_distribution("ddp", "4", env=MPICH_2)
    with pytest.raises(ValueError, match="^devices: 2 does not fit .*each process drives one device"):
        trainer_distribution("horovod", "2", env=HOROVODRUN_2)
    with pytest.raises(ValueError, match="^strategy: ddp cannot run under horovodrun"):
        trainer_distribution("ddp", "auto", env=HOROVODRUN_2)
    with pytest.raises(ValueError, match="^strategy: unknown strategy 'fsdp'"):
        trainer_distribution("fsdp", "auto", env={})


def test_mpi_ddp_refuses_devices_that_disagree_with_the_mpi_world() -> None:
    import pytorch_lightning as pl

    from mlflow_anf_lanedet.strategies.mpi_ddp import MPIDDPStrategy

    # This test process is an MPI world of one; a Trainer asking for 2 processes is refused when it is built.
    with pytest.raises(ValueError, match=r"^devices: Trainer\(devices=2, num_nodes=1\) makes 2 processes but mpirun "
                                         r"started 1"):
        pl.Trainer(strategy=MPIDDPStrategy(), accelerator="cpu", devices=2, logger=False)


def test_horovod_missing_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_anf_lanedet.strategies import build_strategy
    from mlflow_anf_lanedet.strategies.horovod import HorovodUnavailableError

    monkeypatch.setitem(sys.modules, "horovod", None)  # what an environment without horovod looks like to import
    monkeypatch.setitem(sys.modules, "horovod.torch", None)
    with pytest.raises(HorovodUnavailableError, match=r"^strategy=horovod needs horovod: run scripts/install_horovod"):
        build_strategy("horovod")


def test_horovod_sync_batchnorm_converts_and_reverts() -> None:
    import horovod.torch as hvd

    from mlflow_anf_lanedet.strategies.horovod import HorovodSyncBatchNorm

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4),
                                torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(4)))
    bn2d, bn1d = model[1], model[2][1]
    bn2d.running_mean += 3.0
    sync = HorovodSyncBatchNorm(hvd)
    converted = sync.apply(model)
    assert isinstance(converted[1], hvd.SyncBatchNorm) and isinstance(converted[2][1], hvd.SyncBatchNorm)
    assert converted[1].weight is bn2d.weight and torch.equal(converted[1].running_mean, bn2d.running_mean)
    reverted = sync.revert(converted)
    assert type(reverted[1]) is torch.nn.BatchNorm2d and type(reverted[2][1]) is torch.nn.BatchNorm1d
    assert reverted[2][1].bias is bn1d.bias and torch.equal(reverted[1].running_mean, torch.full((4,), 3.0))


def test_fail_fast_reraises_in_a_single_process() -> None:
    from mlflow_anf_lanedet.distributed import fail_fast

    with pytest.raises(KeyError, match="boom"), fail_fast(env={}):
        raise KeyError("boom")


def test_fail_fast_aborts_a_rank_of_a_multi_process_job() -> None:
    code = "from mlflow_anf_lanedet.distributed import fail_fast\nwith fail_fast():\n    raise ValueError('boom')\nprint('survived')"
    env = _env(WORLD_SIZE="2", RANK="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "survived" not in proc.stdout
    assert "[rank 1/2] training failed: ValueError: boom" in proc.stderr
    assert "Traceback" in proc.stderr
