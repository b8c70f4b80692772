"""Fit a training schedule to a time budget by measuring the machine it runs on (what ``make demo`` does).

Machines differ several-fold (2 CPU cores train the demo's SCNN at a few images/s, a laptop at many more), so a demo
that promises "done in 15 minutes" has to *measure*: :func:`measure_rates` times a few real training steps (data
loading, forward, loss, backward, optimizer step: the run's own configuration) and a few evaluation batches (forward
and decoding with the run's ``lane_fit``), and :func:`plan_schedule` picks the most epochs, up to the full schedule,
whose estimated cost fits the time that is left; if not even ``min_epochs`` fit, it trains on fewer frames.

:func:`plan_schedule` is pure arithmetic (tested without torch); :func:`measure_rates` is the only part that trains.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlflow_anf.progress import SILENT, Progress, Step, for_cli, quiet_option
from mlflow_anf_lanedet.config import TrainConfig


class BudgetError(ValueError):
    """The budget cannot hold even the smallest schedule; the message says what would."""


class Rates(BaseModel):
    """What this machine does per second with the run's configuration."""

    model_config = ConfigDict(frozen=True)

    train_images_per_s: float = Field(gt=0, description="training images/s (loading, forward, backward, step)")
    eval_frames_per_s: float = Field(gt=0, description="validation/test frames/s (loading, forward, decoding)")
    train_steps: int = Field(ge=1, description="timed training steps (after warm-up)")
    eval_batches: int = Field(ge=1, description="timed evaluation batches (after warm-up)")


class Plan(BaseModel):
    """The chosen schedule and the arithmetic behind it."""

    model_config = ConfigDict(frozen=True)

    epochs: int
    train_frames: int = Field(description="training frames per epoch")
    max_train_frames: int | None = Field(None, description="the `max_train_frames` param, when frames were cut")
    estimate_s: float = Field(description="estimated seconds of the run with this schedule (incl. overhead)")
    remaining_s: float = Field(description="seconds of the budget left for the run")
    spent_s: float = Field(0.0, description="seconds of the budget already spent before the run (set-up, data)")
    full_epochs: int
    full_estimate_s: float = Field(description="estimated seconds of the run with the full schedule")
    rates: Rates

    def params(self) -> dict[str, str]:
        """The `mlflow run -P` params of this plan."""
        out = {"epochs": str(self.epochs)}
        if self.max_train_frames is not None:
            out["max_train_frames"] = str(self.max_train_frames)
        return out

    def summary(self) -> str:
        """What was chosen and why, for the person waiting."""
        r = self.rates
        head = (f"measured here: training {r.train_images_per_s:.1f} images/s, evaluation {r.eval_frames_per_s:.1f} "
                f"frames/s; {_minutes(self.remaining_s)} of the budget left for the run")
        if self.epochs >= self.full_epochs and self.max_train_frames is None:
            return f"{head} -> the full schedule, {self.epochs} epochs (about {_minutes(self.estimate_s)})"
        cut = f" on {self.train_frames} training frames" if self.max_train_frames is not None else ""
        need = math.ceil((self.spent_s + self.full_estimate_s) / 60)
        return (f"{head} -> {self.epochs} of {self.full_epochs} epochs{cut} (about {_minutes(self.estimate_s)}); "
                f"the full schedule takes about {_minutes(self.full_estimate_s)} here: a budget of {need} minutes "
                f"or more runs it (DEMO_MINUTES={need})")


def _minutes(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s"


def plan_schedule(
    rates: Rates,
    *,
    remaining_s: float,
    train_frames: int,
    val_frames: int,
    test_frames: int,
    full_epochs: int,
    min_epochs: int = 2,
    min_train_frames: int = 64,
    overhead_s: float = 60.0,
    margin: float = 0.1,
    spent_s: float = 0.0,
) -> Plan:
    """The most epochs (at most *full_epochs*) whose estimated cost fits *remaining_s*.

    Cost of ``e`` epochs over ``n`` training frames: ``e * (n / train_rate + val / eval_rate) + test / eval_rate +
    overhead``, times ``1 + margin`` (the first steps run in warm caches; logging and Lightning's loop cost a little).
    When fewer than *min_epochs* fit, the training frames are cut so that *min_epochs* do (not below
    *min_train_frames*); when even that does not fit, :class:`BudgetError` says how much time would.
    """
    if full_epochs < 1 or min_epochs < 1 or train_frames < 1:
        raise ValueError("full_epochs, min_epochs and train_frames must be >= 1")
    min_epochs = min(min_epochs, full_epochs)

    def cost(epochs: int, frames: int) -> float:
        per_epoch = frames / rates.train_images_per_s + val_frames / rates.eval_frames_per_s
        return (epochs * per_epoch + test_frames / rates.eval_frames_per_s + overhead_s) * (1 + margin)

    full = cost(full_epochs, train_frames)
    fixed = cost(0, train_frames)
    per_epoch = cost(1, train_frames) - fixed
    epochs = min(full_epochs, int((remaining_s - fixed) // per_epoch)) if remaining_s > fixed else 0
    frames, limit = train_frames, None
    if epochs < min_epochs:
        epochs = min_epochs
        # frames such that cost(min_epochs, frames) <= remaining_s
        spare = remaining_s / (1 + margin) - overhead_s - test_frames / rates.eval_frames_per_s
        spare -= min_epochs * val_frames / rates.eval_frames_per_s
        frames = int(spare / min_epochs * rates.train_images_per_s)
        if frames < min_train_frames:
            need = cost(min_epochs, min(min_train_frames, train_frames))
            raise BudgetError(
                f"the budget leaves {_minutes(remaining_s)} for the run, but even {min_epochs} epochs over "
                f"{min(min_train_frames, train_frames)} frames take about {_minutes(need)} on this machine "
                f"(training {rates.train_images_per_s:.1f} images/s): allow at least {math.ceil(need / 60)} more "
                "minutes (DEMO_MINUTES)"
            )
        frames = min(frames, train_frames)
        limit = frames if frames < train_frames else None
    return Plan(epochs=epochs, train_frames=frames, max_train_frames=limit, estimate_s=cost(epochs, frames),
                remaining_s=remaining_s, spent_s=spent_s, full_epochs=full_epochs, full_estimate_s=full, rates=rates)


def measure_rates(cfg: TrainConfig, *, train_steps: int = 12, eval_batches: int = 3, warmup: int = 2,
                  datamodule: Any = None, progress: Progress = SILENT) -> Rates:
    """Time *train_steps* training steps and *eval_batches* evaluation batches of *cfg* on this machine.

    The steps are the run's own: its data module (*datamodule*, else a new one: augmentation, input size, loader
    workers), module (:func:`~mlflow_anf_lanedet.train._build_module`), loss and optimizer; evaluation decodes as the
    run's validation does (``LaneDetModule.decode``). Nothing is written; the model is thrown away. *progress*
    counts the steps (warm-up included) as they run.
    """
    import torch

    from mlflow_anf_lanedet.train import TuSimpleDataModule, _build_module

    torch.manual_seed(cfg.seed)
    dm = datamodule or TuSimpleDataModule(cfg)
    dm.setup("fit")
    module = _build_module(cfg)
    model: Any = module.model.train()
    # The run's optimizer at a tiny learning rate: the cost of a step does not depend on it, and a dozen steps at
    # the peak rate without the run's warm-up can diverge (NaN logits would then fail the decoding being timed).
    optimizer = module.make_optimizer(lr=cfg.lr * 1e-4)

    def timed(batches: Any, count: int, step: Any, what: str) -> tuple[float, int]:
        with progress.step(what, total=warmup + count) as shown:
            return _timed(batches, count, step, shown)

    def _timed(batches: Any, count: int, step: Any, shown: Step) -> tuple[float, int]:
        it = iter(batches)
        items, start = 0, 0.0
        for k in range(warmup + count):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(batches)
                batch = next(it)
            if k == warmup:
                start = time.perf_counter()
            step(batch)
            if k >= warmup:
                items += int(batch["image"].shape[0])
            shown.advance()
        return time.perf_counter() - start, items

    def train_step(batch: dict[str, Any]) -> None:
        seg, exist = model(batch["image"])
        loss = module.criterion(seg, exist, batch["mask"], batch["exist"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_s, train_n = timed(dm.train_dataloader(), train_steps, train_step, "time training steps")
    eval_set = dm.val_set if dm.val_set is not None and len(dm.val_set) else None
    if eval_set is None:
        dm.setup("test")
        eval_set = dm.test_set
    loader = dm._loader(eval_set, cfg.val_batch_size, shuffle=False)
    model.eval()

    def eval_step(batch: dict[str, Any]) -> None:
        with torch.no_grad():
            seg, exist = model(batch["image"])
            module.decode(seg, exist, [eval_set.labels[i] for i in batch["index"].tolist()])

    eval_s, eval_n = timed(loader, eval_batches, eval_step, "time evaluation batches")
    return Rates(train_images_per_s=train_n / train_s, eval_frames_per_s=eval_n / eval_s, train_steps=train_steps,
                 eval_batches=eval_batches)


def plan_for(cfg: TrainConfig, *, minutes: float, spent_s: float, min_epochs: int = 2, overhead_s: float = 60.0,
             rates: Rates | None = None, progress: Progress = SILENT) -> Plan:
    """Measure (unless *rates* are given) and plan *cfg*'s run for a budget of *minutes*, *spent_s* of it gone.

    The frame counts are those of the run's own data module (``max_train_frames``, ``use_val`` applied), which the
    measurement then uses too.
    """
    from mlflow_anf_lanedet.data.tusimple import DataError
    from mlflow_anf_lanedet.train import TuSimpleDataModule

    dm = TuSimpleDataModule(cfg)
    try:
        dm.setup(None)  # train (max_train_frames applied), val when use_val, test
    except (ValueError, DataError) as exc:  # no training frames, or a split the run could not read
        raise BudgetError(str(exc)) from None
    rates = rates or measure_rates(cfg, datamodule=dm, progress=progress)
    return plan_schedule(rates, remaining_s=minutes * 60 - spent_s, train_frames=len(dm.train_set),
                         val_frames=len(dm.val_set) if dm.val_set is not None else 0, test_frames=len(dm.test_set),
                         full_epochs=cfg.epochs, min_epochs=min_epochs, overhead_s=overhead_s, spent_s=spent_s)


@click.command("budget")
@click.option("--minutes", type=click.FloatRange(min=1), required=True, help="The whole budget, in minutes.")
@click.option("--started-at", type=float, default=None,
              help="Unix time at which the budget started (e.g. before set-up) [default: now].")
@click.option("-P", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A train parameter, as `mlflow run -P` takes it; `epochs` is the full schedule.")
@click.option("--min-epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--overhead-s", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds of the run that are neither training nor evaluation (start, snapshots, model export).")
@click.option("--write-params", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the chosen params as `-P key=value` words to this file.")
@quiet_option
def budget_command(minutes: float, started_at: float | None, params: tuple[str, ...], min_epochs: int,
                   overhead_s: float, write_params: Path | None, quiet: bool) -> None:
    """Measure this machine and choose the epochs (and, if needed, frames) that fit a time budget."""
    values: dict[str, str] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--param: expected KEY=VALUE, got {item!r}")
        values[key.strip()] = value
    try:
        cfg = TrainConfig(**values)
    except ValidationError as exc:
        lines = [f"-P {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise click.UsageError("invalid training parameters:\n  " + "\n  ".join(lines)) from None
    spent = max(0.0, time.time() - started_at) if started_at is not None else 0.0
    click.echo(f"measuring training and evaluation speed here ({cfg.backbone}, {cfg.input_size[0]}x"
               f"{cfg.input_size[1]}, batch {cfg.batch_size}) ...")
    try:
        plan = plan_for(cfg, minutes=minutes, spent_s=spent, min_epochs=min_epochs, overhead_s=overhead_s,
                        progress=for_cli(quiet))
    except BudgetError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(plan.summary())
    if write_params is not None:
        words = " ".join(f"-P {k}={v}" for k, v in plan.params().items())
        tmp = write_params.with_name(write_params.name + ".tmp")
        tmp.write_text(words + "\n")
        tmp.replace(write_params)
