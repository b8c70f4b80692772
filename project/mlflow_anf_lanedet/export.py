"""The trained SCNN as an MLflow model: what ``lanedet train`` exports after a successful fit (the export hook of
:class:`mlflow_anf.lightning.SnapshotLineage`, which then snapshots it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from mlflow_anf_lanedet.config import TrainConfig


def model_signature(input_hw: tuple[int, int]) -> Any:
    """Input: normalised float32 images [B, 3, H, W]; the outputs (seg logits, existence logits) are a tuple."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, *input_hw), "image")]))


def model_requirements() -> list[str]:
    """What loading the pickled SCNN needs besides the bundled lanedet code (stated, not inferred: inference
    would re-import the model in a subprocess)."""
    import importlib.metadata as md

    return [f"{name}=={md.version(name).split('+')[0]}" for name in ("torch", "numpy", "pydantic", "pillow")]


class ModelExport:
    """The export hook of :class:`~mlflow_anf.lightning.SnapshotLineage` (rank 0, after a successful fit, before the
    model snapshot): the MLflow model at ``output_dir/model``, and logged to the run when ``log_model``."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        #: the id of the MLflow 3 logged model once logged (``log_model``), for its test metrics
        self.model_id: str | None = None

    def __call__(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        import copy
        import shutil

        import mlflow.pytorch

        model_dir = self.cfg.output_dir / "model"
        if model_dir.exists():
            shutil.rmtree(model_dir)
        # a CPU copy: the trainer goes on to test the module where it is
        model = copy.deepcopy(module.model).eval().cpu()
        # The lanedet package travels with the model, so it loads where lanedet is not installed; pickle keeps
        # the message-passing loops as written (pt2 export would trace them).
        model_kwargs = {
            "code_paths": [str(Path(__file__).resolve().parent)],
            "serialization_format": "pickle",
            "signature": model_signature(self.cfg.input_size),
            "pip_requirements": model_requirements(),
        }
        mlflow.pytorch.save_model(model, str(model_dir), **model_kwargs)
        if self.cfg.log_model:
            self.model_id = mlflow.pytorch.log_model(model, name="model", **model_kwargs).model_id

    def log_test_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """The held-out test's metrics as the logged model's, measured on the run's data snapshot: the logged-model
        page then shows them and the snapshot as "Datasets used" (:func:`mlflow_anf.tracking.log_model_metrics`).
        *step*: the step Lightning logged them at, so the run's metric history gets no second point elsewhere.
        Nothing without a logged model."""
        from mlflow_anf.tracking import log_model_metrics

        test = {k: v for k, v in metrics.items() if k.startswith("test_")}
        if self.model_id is not None and test:
            log_model_metrics(run_id, self.model_id, test, step=step)
