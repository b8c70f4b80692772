"""Training entry point: Lightning modules for SCNN on TuSimple, tracked in MLflow.

This is the edge of ``lanedet`` where MLflow and Lightning meet the core (data → model → decode → metric): it builds
the data, the module and the trainer, and owns the run. The run's lineage (provenance, data snapshot before fit,
model snapshot after it) is :class:`mlflow_anf.lightning.SnapshotLineage`, given the model export as a hook. Only the
process with global rank 0 talks to MLflow and takes snapshots; every rank trains.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytorch_lightning as pl
import torch
from pydantic import ValidationError
from pytorch_lightning.loggers import MLFlowLogger
from torch.utils.data import DataLoader

from mlflow_anf_lanedet.callbacks import EpochSummaryCallback, ThroughputCallback
from mlflow_anf_lanedet.config import DATA_DIR_HINT, TrainConfig, cli_options
from mlflow_anf_lanedet.data.tusimple import TuSimpleDataset
from mlflow_anf_lanedet.decode import LaneFit, auto_smooth, decode_batch, fit_options
from mlflow_anf_lanedet.distributed import (StopSignals, describe_process, fail_fast, global_rank, stop_signals,
                                            world_size)
from mlflow_anf_lanedet.metric import evaluate_frame
from mlflow_anf_lanedet.models import SCNNLoss, build_model, poly_lr_lambda
from mlflow_anf_lanedet.evaluate import evaluate_command
from mlflow_anf_lanedet.export import ModelExport
from mlflow_anf_lanedet.predict import TUSIMPLE_HW, LanePredictor, default_rows, draw_lanes, load_frame

log = logging.getLogger(__name__)

# Moved to their own modules, still importable from here (lanedet's CLI names mlflow_anf_lanedet.train:evaluate_command)
__all__ = ["EpochSummaryCallback", "LaneDetModule", "ThroughputCallback", "TrainInputError", "TuSimpleDataModule",
           "evaluate_command", "lineage_config", "preflight", "run_training", "train_command"]


# --------------------------------------------------------------------------------------------------- data module
class TuSimpleDataModule(pl.LightningDataModule):
    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_set: TuSimpleDataset | None = None
        self.val_set: TuSimpleDataset | None = None
        self.test_set: TuSimpleDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        cfg = self.cfg
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = TuSimpleDataset(
                cfg.data_dir, "train", input_hw=cfg.input_size, augment=cfg.augment_config() or False,
                max_items=cfg.max_train_frames,
            )
            if len(self.train_set) == 0:
                raise ValueError(f"data_dir: {cfg.data_dir} has no training frames (label_data_0313/0601.json)")
        if stage in (None, "fit", "validate") and self.val_set is None and cfg.use_val:
            self.val_set = TuSimpleDataset(cfg.data_dir, "val", input_hw=cfg.input_size)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = TuSimpleDataset(cfg.data_dir, "test", input_hw=cfg.input_size)

    def _loader(self, dataset: TuSimpleDataset, batch_size: int, shuffle: bool) -> DataLoader:
        workers = self.cfg.loader_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=shuffle and len(dataset) > batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return self._loader(self.train_set, self.cfg.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, self.cfg.val_batch_size, shuffle=False) if self.val_set else []

    def test_dataloader(self) -> DataLoader:
        assert self.test_set is not None
        return self._loader(self.test_set, self.cfg.val_batch_size, shuffle=False)


# ------------------------------------------------------------------------------------------------ lightning module
class LaneDetModule(pl.LightningModule):
    """SCNN + loss + the official metric on decoded lanes for validation/test."""

    def __init__(
        self,
        backbone: str = "vgg16_bn",
        input_hw: tuple[int, int] = (288, 512),
        lr: float = 0.01,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
        exist_threshold: float = 0.5,
        prob_threshold: float = 0.3,
        pretrained: str | None = None,
        lane_fit: LaneFit = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.model = build_model(backbone, input_hw=tuple(input_hw), pretrained=pretrained)
        self.model.input_hw = tuple(input_hw)  # travels with the logged model for inference
        self.model.lane_fit = lane_fit
        self.criterion = SCNNLoss()
        self._frame_scores: torch.Tensor | None = None  # [N, 4]: acc, fp, fn, times seen

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(images)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        seg, exist = self.model(batch["image"])
        losses = self.criterion(seg, exist, batch["mask"], batch["exist"])
        n = batch["image"].shape[0]
        self.log("train_loss", losses["loss"], on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("train_seg_loss", losses["seg_loss"], on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("train_exist_loss", losses["exist_loss"], on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return losses["loss"]

    # validation and test share one path: loss, then decode → official metric per frame
    def _dataset(self, stage: str) -> TuSimpleDataset:
        dm = self.trainer.datamodule
        return dm.val_set if stage == "val" else dm.test_set

    def _start_scores(self, stage: str) -> None:
        self._frame_scores = torch.zeros(len(self._dataset(stage)), 4, dtype=torch.float64, device=self.device)

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        seg, exist = self.model(batch["image"])
        losses = self.criterion(seg, exist, batch["mask"], batch["exist"])
        self.log(f"{stage}_loss", losses["loss"], on_epoch=True, sync_dist=True, batch_size=batch["image"].shape[0])
        labels = [self._dataset(stage).labels[i] for i in batch["index"].tolist()]
        preds = self.decode(seg, exist, labels)
        for index, label, pred in zip(batch["index"].tolist(), labels, preds):
            acc, fp, fn = evaluate_frame(pred, label.lanes, label.h_samples, 0.0)
            self._frame_scores[index] += torch.tensor([acc, fp, fn, 1.0], dtype=torch.float64, device=self.device)

    def decode(self, seg: torch.Tensor, exist: torch.Tensor, labels: list[Any]) -> list[list[list[int]]]:
        """Lanes of a batch's raw outputs at each label's h_samples, with this module's thresholds and lane fit."""
        return decode_batch(
            torch.softmax(seg.float(), dim=1).cpu().numpy(),
            torch.sigmoid(exist.float()).cpu().numpy(),
            [label.h_samples for label in labels],
            src_hw=TUSIMPLE_HW,
            exist_thr=self.hparams.exist_threshold,
            prob_thr=self.hparams.prob_threshold,
            smooth=auto_smooth(seg.shape[-1]),
            **fit_options(self.hparams.lane_fit),
        )

    def _end_scores(self, stage: str) -> None:
        # Sum over ranks; a frame seen twice (distributed sampler padding) is averaged, so the score is exact.
        scores = self.trainer.strategy.reduce(self._frame_scores, reduce_op="sum")
        seen = scores[:, 3]
        mask = seen > 0
        if mask.any():
            per_frame = scores[mask, :3] / seen[mask, None]
            acc, fp, fn = per_frame.mean(dim=0).tolist()
            self.log(f"{stage}_accuracy", acc, prog_bar=True, rank_zero_only=True)
            self.log(f"{stage}_fp", fp, rank_zero_only=True)
            self.log(f"{stage}_fn", fn, rank_zero_only=True)
        self._frame_scores = None

    def on_validation_epoch_start(self) -> None:
        self._start_scores("val")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._end_scores("val")

    def on_test_epoch_start(self) -> None:
        self._start_scores("test")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._end_scores("test")

    def make_optimizer(self, lr: float | None = None) -> torch.optim.Optimizer:
        """The run's optimizer over the model's parameters (peak learning rate ``lr``, default the run's)."""
        hp = self.hparams
        lr = hp.lr if lr is None else lr
        if hp.optimizer == "adamw":
            return torch.optim.AdamW(
                self.model.parameters(), lr=lr, betas=(hp.momentum, 0.999), weight_decay=hp.weight_decay
            )
        return torch.optim.SGD(self.model.parameters(), lr=lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = self.make_optimizer()
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = min(total - 1, int(hp.warmup_epochs * steps_per_epoch)) if total > 1 else 0
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lr_lambda(total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# ------------------------------------------------------------------------------------------------ orchestration
def distribution(cfg: TrainConfig) -> dict[str, Any]:
    """Trainer ``strategy``/``devices``/``num_nodes`` for the ``strategy`` param, agreeing with the launcher's world
    (mpirun → DDP over MPIEnvironment, horovodrun → Horovod; see :mod:`mlflow_anf_lanedet.strategies`)."""
    from mlflow_anf_lanedet.strategies import trainer_distribution

    return trainer_distribution(cfg.strategy, cfg.devices)


class TrainInputError(ValueError):
    """A training parameter that cannot work, found before any snapshot, run or training; the message names it."""

    def __init__(self, field: str, message: str) -> None:
        prefix = f"{field}:"
        super().__init__(message if message.startswith(prefix) else f"{prefix} {message}")
        self.field = field


class RunOwnedMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger, minus ending the run: ``MLFlowLogger.finalize`` marks the run FINISHED after
    ``fit`` (and FAILED on any exception), while the held-out test, model export and model snapshot still run. The
    run's one status is set by :func:`_owned_run`, at the very end."""

    def finalize(self, status: str = "success") -> None:  # noqa: ARG002 - the owner of the run ends it
        return None


@dataclass
class _Plan:
    """What the pre-flight check built and the run reuses: nothing of it has touched a volume or MLflow."""

    dm: TuSimpleDataModule
    module: LaneDetModule
    placement: dict[str, Any]
    lineage: Any  # the SnapshotLineageConfig of the run (mlflow_anf.lightning)
    provider: Any  # a SnapshotProvider when enable_snapshot, else None


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def preflight(cfg: TrainConfig) -> _Plan:
    """Check every parameter that can only be checked against the world (files, devices, launcher, provider) and
    build the data module and model, *before* any snapshot, MLflow run, output directory or training.

    Raises :class:`TrainInputError` naming the parameter; writes nothing.
    """
    from mlflow_anf_lanedet.data.tusimple import DataError
    from mlflow_anf_lanedet.models import PretrainedError

    data_dir = cfg.data_dir
    if not data_dir.is_dir():
        raise TrainInputError("data_dir", f"{data_dir} is not a directory; {DATA_DIR_HINT}")
    out = cfg.output_dir
    if out.exists() and not out.is_dir():
        raise TrainInputError("output_dir", f"{out} exists and is not a directory")
    data_abs, out_abs = data_dir.resolve(), out.resolve()
    if _inside(out_abs, data_abs) or _inside(data_abs, out_abs):
        raise TrainInputError(
            "output_dir", f"{out} and data_dir {data_dir} must not contain one another (the run would write its "
            "model into its own data, or snapshot the data with the model)")
    if cfg.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise TrainInputError("accelerator", f"{cfg.accelerator} asked for, but no CUDA device is available")
    if cfg.accelerator == "mps" and not torch.backends.mps.is_available():
        raise TrainInputError("accelerator", "mps asked for, but MPS is not available")
    try:
        placement = distribution(cfg)
    except (ValueError, ImportError, RuntimeError) as exc:
        raise TrainInputError(_named_field(exc, "strategy"), str(exc)) from None

    dm = TuSimpleDataModule(cfg)
    try:
        dm.setup("fit")
        dm.setup("test")
    except (DataError, ValueError, OSError) as exc:
        raise TrainInputError("data_dir", f"{data_dir} is not a usable prepared TuSimple root: {exc}; {DATA_DIR_HINT}"
                              ) from None
    for split, dataset in (("train", dm.train_set), ("val", dm.val_set), ("test", dm.test_set)):
        if dataset is None:
            continue
        missing = [lab.raw_file for lab in dataset.labels if not (Path(dataset.root) / lab.raw_file).is_file()]
        if missing:
            raise TrainInputError(
                "data_dir", f"{len(missing)} frame(s) of the {split} split are missing under {data_dir}, "
                f"e.g. {missing[0]}")

    for path in cfg.overlay_images:
        try:
            load_frame(path)
        except ValueError as exc:
            raise TrainInputError("overlay_images", str(exc)) from None
    if cfg.pretrained is not None and not cfg.pretrained.is_file():
        raise TrainInputError("pretrained", f"{cfg.pretrained} is not a file")
    try:
        module = _build_module(cfg)
    except (PretrainedError, OSError) as exc:
        raise TrainInputError("pretrained", str(exc)) from None

    from mlflow_anf.snapshots import SnapshotError

    lineage = lineage_config(cfg)
    try:
        provider = lineage.build_provider()
    except SnapshotError as exc:  # ProviderConfigError included: names the option, never its value
        raise TrainInputError("snapshot_options", str(exc)) from None
    return _Plan(dm=dm, module=module, placement=placement, lineage=lineage, provider=provider)


def lineage_config(cfg: TrainConfig) -> Any:
    """The run's :class:`~mlflow_anf.lightning.SnapshotLineageConfig`: which volumes the data and model snapshots
    take, and where the model lies in its volume. Where the provider's volumes are directories on this machine
    (local) they are ``data_dir`` and (default) ``output_dir``, the model at ``model`` inside it; elsewhere they are
    named: ``pvc_name`` and ``model_volume`` (default ``pvc_name``), the model at ``model_path``.

    Raises :class:`TrainInputError` naming the parameter."""
    from mlflow_anf.lightning import SnapshotLineageConfig, directory_volume

    data_volume = directory_volume(cfg.snapshot_provider, cfg.data_dir)
    model_volume, model_path = cfg.model_volume, cfg.model_path
    if data_volume is not None:  # the provider's volumes are directories: the run's own
        model_volume = directory_volume(cfg.snapshot_provider, model_volume or cfg.output_dir)
        model_path = _model_inside(cfg, model_volume) if cfg.enable_snapshot else model_path
    else:
        data_volume, model_volume = cfg.pvc_name, model_volume or cfg.pvc_name
    if cfg.enable_snapshot and not data_volume:
        raise TrainInputError("pvc_name", f"the {cfg.snapshot_provider} provider needs the data volume name (PVC_NAME)")
    try:
        return SnapshotLineageConfig(
            provider=cfg.snapshot_provider, provider_options=cfg.snapshot_options, data_volume=data_volume,
            model_volume=model_volume, model_path=model_path, snapshot_data=cfg.enable_snapshot,
            snapshot_model=cfg.enable_snapshot, entry_point="train", code_path=__file__,
        )
    except ValidationError as exc:  # a volume the provider cannot name (its traits' check_volume)
        problem = exc.errors(include_url=False, include_input=False)[0]["msg"].removeprefix("Value error, ")
        field = problem.split(":", 1)[0]
        field = "pvc_name" if field == "data_volume" else field if field in TrainConfig.model_fields else "pvc_name"
        raise TrainInputError(field, problem) from None


def _model_inside(cfg: TrainConfig, model_volume: str) -> str:
    """Where ``output_dir/model`` (the exported model) lies inside the directory *model_volume*."""
    model_dir = (cfg.output_dir / "model").resolve()
    if not _inside(model_dir, Path(model_volume)):
        raise TrainInputError("model_volume", f"{model_volume} does not contain the exported model {model_dir}")
    inside = model_dir.relative_to(model_volume).as_posix()
    if cfg.model_path is not None and cfg.model_path.strip("/") != inside:
        raise TrainInputError("model_path", f"{cfg.model_path} is not where the model is exported in {model_volume}: "
                              f"{inside}")
    return inside


def _named_field(exc: BaseException, default: str) -> str:
    """The field a ``"field: message"`` error names, else *default*."""
    head = str(exc).split(":", 1)[0]
    return head if head in TrainConfig.model_fields else default


def _build_module(cfg: TrainConfig) -> LaneDetModule:
    return LaneDetModule(
        backbone=cfg.backbone,
        input_hw=cfg.input_size,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        warmup_epochs=cfg.warmup_epochs,
        exist_threshold=cfg.exist_threshold,
        prob_threshold=cfg.prob_threshold,
        pretrained=str(cfg.pretrained) if cfg.pretrained else None,
        lane_fit=cfg.lane_fit,
    )


@contextmanager
def _owned_run(stop: StopSignals, is_rank0: bool) -> Iterator[Any]:
    """The MLflow run (rank 0; ``None`` elsewhere), ended exactly once, after the block: FINISHED when the block
    completed, KILLED when the process was told to stop (:class:`TrainingStopped`), FAILED on any other error."""
    if not is_rank0:
        yield None
        return
    import mlflow

    # `mlflow run` passes MLFLOW_RUN_ID; start_run() resumes it. Otherwise a new run is created.
    run = mlflow.start_run(log_system_metrics=True)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        if stop.disarm() is not None:  # a stop signal, whatever it interrupted (or if it came while closing)
            status = "KILLED"
        log.info("run %s ends %s", run.info.run_id, status)
        _end_run(run.info.run_id, status)


def _end_run(run_id: str, status: str, attempts: int = 5) -> None:
    """``mlflow.end_run(status)``, retried: a stop signal can land while this process is writing to the tracking
    store (a sqlite store then stays locked until the interrupted write's connection is collected), and a run must
    not be left RUNNING for that. The last attempt goes through a fresh client."""
    import gc

    import mlflow
    from mlflow.tracking import MlflowClient

    for attempt in range(attempts):
        try:
            if attempt < attempts - 1:
                mlflow.end_run(status)
            else:
                MlflowClient().set_terminated(run_id, status)
                mlflow.end_run(status)  # also stops the system-metrics monitor and clears the active run
            return
        except Exception as exc:  # the store's errors come in many types (sqlalchemy, MlflowException, HTTP)
            log.warning("ending run %s as %s failed (attempt %d of %d): %s", run_id, status, attempt + 1, attempts,
                        exc)
            if attempt == attempts - 1:
                raise
            gc.collect()  # releases a connection left in a write by an interrupted call
            time.sleep(1.0 + attempt)


def _log_overlays(module: LaneDetModule, dm: TuSimpleDataModule, cfg: TrainConfig) -> None:
    import mlflow

    dataset = dm.val_set or dm.test_set
    predictor = LanePredictor(
        module.model, cfg.input_size, cfg.exist_threshold, cfg.prob_threshold, device=module.device,
        lane_fit=cfg.lane_fit,
    )
    items: list[tuple[str, Path, list[int], list[list[int]] | None]] = []
    if dataset is not None:
        for label in dataset.labels[: cfg.overlays]:
            items.append((label.raw_file, Path(dataset.root) / label.raw_file, label.h_samples, label.lanes))
    for path in cfg.overlay_images:
        items.append((Path(path).name, Path(path), None, None))
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, path, h_samples, gt) in enumerate(items):
            frame = load_frame(path)
            rows = h_samples if h_samples is not None else default_rows(frame.height)
            lanes = predictor.predict([frame], [rows])[0]
            out = Path(tmp) / f"{k:02d}_{name.replace('/', '_')}"
            draw_lanes(frame, lanes, rows, gt).save(out.with_suffix(".jpg"), quality=90)
        mlflow.log_artifacts(tmp, artifact_path="overlays")


def run_training(cfg: TrainConfig, stop: StopSignals | None = None) -> dict[str, Any]:
    """Check the inputs, then train, test on the held-out split, log everything (rank 0). Returns the final metrics
    and run id. Raises :class:`TrainInputError` (nothing written) for a parameter that cannot work.

    *stop*: the process's :func:`stop_signals` state; a run stopped by a signal ends KILLED (default: a fresh one,
    with the signals handled for this call)."""
    if stop is None:
        with stop_signals() as own:
            return run_training(cfg, own)

    pl.seed_everything(cfg.seed, workers=True)  # before preflight, which initialises the model's weights
    log.info("%s", describe_process())
    plan = preflight(cfg)
    # Bit-identical reruns are a CPU promise: on CUDA some SCNN ops (bilinear upsampling backward, adaptive pooling,
    # NLL loss) have no deterministic kernel, so they only warn there instead of stopping the run.
    deterministic: bool | str = cfg.deterministic
    if cfg.deterministic and torch.cuda.is_available() and cfg.accelerator != "cpu":
        deterministic = "warn"
    is_rank0 = global_rank() == 0
    result: dict[str, Any] = {}

    with _owned_run(stop, is_rank0) as run:
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        logger: Any = False
        if run is not None:
            logger = _start_logging(cfg, run.info.run_id)
            result["run_id"] = run.info.run_id

        from mlflow_anf.lightning import SnapshotLineage

        # provenance and the data snapshot before fit, the model's export and snapshot after a successful fit;
        # every rank carries the callback, rank 0 alone records (and exports)
        export = ModelExport(cfg)
        lineage = SnapshotLineage(plan.lineage, run_id=result.get("run_id"), provider=plan.provider,
                                  export_model=export)
        dm, module = plan.dm, plan.module
        trainer = pl.Trainer(
            max_epochs=cfg.epochs,
            accelerator=cfg.accelerator,
            **plan.placement,  # strategy, devices, num_nodes
            precision=cfg.precision,
            logger=logger,
            callbacks=[ThroughputCallback(), EpochSummaryCallback(), lineage],
            deterministic=deterministic,
            default_root_dir=str(cfg.output_dir),
            enable_checkpointing=False,
            log_every_n_steps=10,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, datamodule=dm)
        test_metrics = trainer.test(module, datamodule=dm, verbose=False)
        result["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if test_metrics:
            result["metrics"].update({k: float(v) for k, v in test_metrics[0].items()})
            if run is not None:
                export.log_test_metrics(run.info.run_id, result["metrics"], step=trainer.global_step)
        if run is not None and (cfg.overlays or cfg.overlay_images):
            _log_overlays(module, dm, cfg)
    return result


def _start_logging(cfg: TrainConfig, run_id: str) -> RunOwnedMLFlowLogger:
    """Rank 0, before the trainer: the resolved params and the project's tags; the logger Lightning writes with."""
    import mlflow

    from mlflow_anf.vocabulary import TAG_WORLD_SIZE

    # `mlflow run` already logged the params it was given (as typed); add the resolved rest.
    logged = mlflow.get_run(run_id).data.params
    mlflow.log_params({k: v for k, v in cfg.mlflow_params().items() if k not in logged})
    mlflow.set_tags({"lanedet.entry_point": "train", TAG_WORLD_SIZE: str(world_size())})
    return RunOwnedMLFlowLogger(tracking_uri=mlflow.get_tracking_uri(), run_id=run_id, log_model=False)


# ------------------------------------------------------------------------------------------------------- CLI
def _config_options(func: Any) -> Any:
    """One click option per TrainConfig field, all parsed and validated by the pydantic model; the help's defaults
    and choices come from it too (config.cli_options)."""
    for flag, name, kwargs in reversed(cli_options(TrainConfig)):
        func = click.option(flag, name, **kwargs)(func)
    return func


def _validated(values: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        lines = [f"--{'.'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" for e in exc.errors()]
        raise click.UsageError("invalid training parameters:\n  " + "\n  ".join(lines)) from None


@click.command("train")
@_config_options
def train_command(**values: Any) -> None:
    """Train SCNN on a prepared TuSimple root; logs to the active MLflow run (or a new one)."""
    cfg = _validated(values)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # A stop (SIGTERM from Kubernetes or `mlflow run`'s cancel, Ctrl-C, or - under `mlflow run`, whose child this
    # process is - the death of that parent) ends the run KILLED and exits 128 + the signal number.
    watch_parent = bool(os.environ.get("MLFLOW_RUN_ID")) and world_size() == 1
    # fail_fast: an exception on any rank ends the whole job instead of leaving the others hanging
    with fail_fast(), stop_signals(watch_parent=watch_parent) as stop:
        try:
            result = run_training(cfg, stop)
        except TrainInputError as exc:
            raise click.UsageError(f"--{exc.field.replace('_', '-')}{str(exc)[len(exc.field):]}") from None
    if "run_id" in result:
        metrics = result.get("metrics", {})
        summary = {k: round(v, 4) for k, v in sorted(metrics.items()) if k.startswith(("test_", "val_"))}
        click.echo(f"run {result['run_id']}: {json.dumps(summary)}")
