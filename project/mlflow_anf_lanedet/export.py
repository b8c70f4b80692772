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
            mlflow.pytorch.log_model(model, name="model", **model_kwargs)
