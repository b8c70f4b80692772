"""Lightning callbacks of lanedet training that are about the training itself (what a run's lineage needs is
:class:`mlflow_anf.lightning.SnapshotLineage`)."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl

log = logging.getLogger("mlflow_anf_lanedet.train")  # the epoch lines keep the logger name launcher logs show


class ThroughputCallback(pl.Callback):
    """Logs global training images/s per epoch (all ranks' images over the epoch's wall time)."""

    def __init__(self) -> None:
        self._start = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._images = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        self._images += int(batch["image"].shape[0])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        pl_module.log("throughput", self._images * trainer.world_size / elapsed, sync_dist=False, rank_zero_only=True)


class EpochSummaryCallback(pl.Callback):
    """One log line per epoch with the logged metrics: readable in launcher logs, where progress bars are not."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
        text = " ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items()))
        log.info("epoch %d/%d: %s", trainer.current_epoch + 1, trainer.max_epochs, text)
