"""End to end: a tiny `mlflow run . -e train` on a few synthetic frames, then everything a user sees on the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.snapshot_tags import snapshot_fields
from tests.support.tiny_data import make_tiny_tusimple

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory, tusimple_fixtures: Path) -> Path:
    return make_tiny_tusimple(tmp_path_factory.mktemp("tiny"), tusimple_fixtures / "label_data_0313.json")


def _mlflow_env(tracking_uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MLFLOW_TRACKING_URI=tracking_uri, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # sample system metrics every 0.1 s so that even this seconds-long run records some
    env.update(MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="0.1", MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def test_mlflow_run_train_records_everything(tiny_data: Path, tmp_path: Path, tusimple_fixtures: Path) -> None:
    import mlflow
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "outputs"
    cmd = [
        sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "-e", "train", "--env-manager", "local",
        "--experiment-name", "e2e",
        "-P", f"data_dir={tiny_data}", "-P", f"output_dir={out}", "-P", "epochs=1", "-P", "batch_size=4",
        "-P", "val_batch_size=4", "-P", "backbone=resnet18", "-P", "input_size=64x128", "-P", "num_workers=0",
        "-P", f"overlay_images={tusimple_fixtures / '520.jpg'}",
        "-P", "optimizer=adamw", "-P", "lr=0.002", "-P", "augment=flip", "-P", "lane_fit=road",  # the demo's settings
    ]
    proc = subprocess.run(cmd, env=_mlflow_env(tracking_uri), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "val_accuracy", "val_fp", "val_fn", "throughput",
                "test_accuracy", "test_fp", "test_fn"):
        assert key in run.data.metrics, key
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    monitor_lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "system_metrics" in ln]
    assert any(k.startswith("system/") for k in run.data.metrics), f"system metrics missing: {monitor_lines}"
    for key in ("data_dir", "epochs", "batch_size", "backbone", "input_size", "lr", "seed", "use_val",
                "enable_snapshot", "num_workers", "val_batch_size"):
        assert key in run.data.params, key
    assert (run.data.params["optimizer"], run.data.params["lane_fit"], run.data.params["augment"]) == (
        "adamw", "road", "flip")
    tags = snapshot_fields(run.data.tags)
    assert tags["mlflow_anf.snapshot.data.provider"] == "local" and tags["mlflow_anf.snapshot.model.provider"] == "local"
    assert tags["mlflow_anf.snapshot.data.digest"] and tags["mlflow_anf.snapshot.model.digest"]
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.source_type == "mlflow_anf_snapshot"
    assert inputs[0].dataset.name == "tusimple"  # the volume's name
    # the logged model carries the test metrics, measured on the data snapshot (its page's "Datasets used")
    (output,) = run.outputs.model_outputs
    model_metrics = {m.key: m for m in client.get_logged_model(output.model_id).metrics}
    assert model_metrics["test_accuracy"].value == run.data.metrics["test_accuracy"]
    assert (model_metrics["test_accuracy"].dataset_name, model_metrics["test_accuracy"].dataset_digest) == (
        "tusimple", inputs[0].dataset.digest)

    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "overlays")]
    assert any("520" in p for p in artifacts) and len(artifacts) >= 2

    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    import torch

    seg, exist = model(torch.zeros(1, 3, 64, 128))
    assert seg.shape == (1, 5, 64, 128) and exist.shape == (1, 4)
    assert model.lane_fit == "road"  # inference decodes the way the run was scored

    # `lanedet evaluate` (the MLproject's evaluate entry point) scores the logged model on the test split exactly as
    # the run's own test did: same reading of the frames, same decoding (the model carries lane_fit)
    preds_file = tmp_path / "preds" / "test.json"
    ev = subprocess.run(
        [sys.executable, "-m", "mlflow_anf_lanedet.cli", "evaluate", "--model-uri", f"runs:/{run.info.run_id}/model",
         "--data-dir", str(tiny_data), "--split", "test", "--batch-size", "4", "--ignore-run-time",
         "--output", str(preds_file)],
        env=_mlflow_env(tracking_uri), capture_output=True, text=True, timeout=300,
    )
    assert ev.returncode == 0, ev.stdout[-2000:] + ev.stderr[-2000:]
    scores = json.loads(ev.stdout.strip().splitlines()[-1])
    for name in ("Accuracy", "FP", "FN"):
        assert scores[name] == pytest.approx(run.data.metrics[f"test_{name.lower()}"], abs=1e-6), (name, scores)
    lines = preds_file.read_text().splitlines()
    assert len(lines) == sum(1 for _ in (tiny_data / "test_label.json").open()) and "run_time" in json.loads(lines[0])
    bad = subprocess.run([sys.executable, "-m", "mlflow_anf_lanedet.cli", "evaluate", "--model-uri", "runs:/nope/model",
                          "--data-dir", str(tiny_data)], env=_mlflow_env(tracking_uri), capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "--model-uri" in bad.stderr

    # the model is readable from inside its snapshot even after the live copy is gone
    import shutil

    shutil.rmtree(out / "model")
    pinned = mlflow.pytorch.load_model(tags["mlflow_anf.snapshot.model.artifact_uri"])
    assert torch.equal(pinned(torch.zeros(1, 3, 64, 128))[0], seg)

    # the data snapshot is a read-only point-in-time copy under the volume's .snapshot/
    snap_dir = tiny_data / ".snapshot" / tags["mlflow_anf.snapshot.data.name"]
    assert (snap_dir / "label_data_0313.json").exists()


def test_bad_param_fails_with_the_field_name(tiny_data: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mlflow_anf_lanedet.cli", "train", "--data-dir", str(tiny_data), "--input-size", "100x100"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_mlflow_env(f"sqlite:///{tmp_path}/m.db"))
    assert proc.returncode == 2
    assert "--input-size" in proc.stderr and "multiples of 8" in proc.stderr
