"""``lanedet evaluate`` (the MLproject's evaluate entry point): predict lanes on a split with a trained MLflow model
and score them with the official metric."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from mlflow_anf_lanedet.config import parse_hw
from mlflow_anf_lanedet.data.tusimple import TuSimpleDataset
from mlflow_anf_lanedet.decode import parse_lane_fit
from mlflow_anf_lanedet.predict import LanePredictor


@click.command("evaluate")
@click.option("--model-uri", required=True, help="MLflow model URI, e.g. runs:/<run_id>/model or a local path")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--output", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write predictions in the TuSimple submission format")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--input-size", default=None, help="HEIGHTxWIDTH; default: the size the model was trained at")
@click.option("--exist-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--prob-threshold", type=click.FloatRange(0, 1), default=0.3, show_default=True)
@click.option("--lane-fit", type=click.Choice(["0", "1", "2", "3", "road"]), default=None,
              help="0 = points as found; 1-3 = robust polynomial per lane; road = all lanes jointly on the flat-road "
                   "model; default: what the model was trained with")
@click.option("--ignore-run-time", is_flag=True,
              help="score as if every frame ran in 0 ms (the official rule zeroes frames slower than 200 ms, "
                   "which a CPU run always is); the measured time is still written to --output")
def evaluate_command(
    model_uri: str, data_dir: Path, split: str, output: Path | None, batch_size: int,
    input_size: str | None, exist_threshold: float, prob_threshold: float, lane_fit: str | None,
    ignore_run_time: bool,
) -> None:
    """Predict lanes on a split with a trained model and score them with the official metric."""
    import mlflow
    import mlflow.pytorch

    from mlflow_anf_lanedet.metric import evaluate as evaluate_predictions

    try:
        model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except Exception as exc:  # MLflow raises many types for a bad URI
        raise click.UsageError(f"--model-uri: cannot load {model_uri!r}: {exc}") from None
    hw = parse_hw(input_size) if input_size else tuple(getattr(model, "input_hw", (288, 512)))
    dataset = TuSimpleDataset(data_dir, split, input_hw=hw)
    fit = parse_lane_fit(lane_fit if lane_fit is not None else getattr(model, "lane_fit", 0), "--lane-fit")
    predictor = LanePredictor(model, hw, exist_threshold, prob_threshold, lane_fit=fit)
    preds, gts = [], []
    for start in range(0, len(dataset.labels), batch_size):
        labels = dataset.labels[start : start + batch_size]
        t0 = time.perf_counter()
        paths = [dataset.root / lab.raw_file for lab in labels]
        lanes = predictor.predict_files(paths, [lab.h_samples for lab in labels])  # read as the run's test read them
        per_frame_ms = (time.perf_counter() - t0) * 1000 / len(labels)
        for lab, pred in zip(labels, lanes):
            preds.append({"raw_file": lab.raw_file, "lanes": pred, "run_time": per_frame_ms})
            gts.append({"raw_file": lab.raw_file, "lanes": lab.lanes, "h_samples": lab.h_samples})
    scored = [dict(p, run_time=0.0) for p in preds] if ignore_run_time else preds
    scores = evaluate_predictions(scored, gts)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text("".join(json.dumps(p) + "\n" for p in preds))
        tmp.replace(output)
    if mlflow.active_run() is not None or os.environ.get("MLFLOW_RUN_ID"):
        with mlflow.start_run():
            mlflow.log_metrics({f"{split}_{k.lower()}": float(v) for k, v in scores.items()})
            if output is not None:
                mlflow.log_artifact(str(output))
    click.echo(json.dumps({k: float(v) for k, v in scores.items()}))
