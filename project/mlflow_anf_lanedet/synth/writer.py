"""`generate`: write a synthetic dataset in the official TuSimple download layout, atomically and deterministically.

Layout (as the real `train_set.zip` / `test_set.zip` / `test_label.json` unpack)::

    out/train_set/clips/{0313-1,0313-2,0531,0601}/<id>/20.jpg
    out/train_set/label_data_0313.json   label_data_0601.json   (train)    label_data_0531.json (val)
    out/test_set/clips/0530/<id>/20.jpg
    out/test_set/test_tasks_0627.json    (raw_file + h_samples, no lanes)
    out/test_label.json                  (test ground truth, raw_file "clips/0530/...")

Frame `i` depends only on (seed, i): its generator is seeded with both, the texture tiles with the seed, so the bytes
are the same for any number of workers. Only the labelled 20th frame of each clip is written.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from mlflow_anf.progress import SILENT, Progress, Step

from ..assets import labels_0313_path
from .config import H_SAMPLES_0313, H_SAMPLES_WIDE, SynthConfig, SynthError, SynthReport, split_counts
from .geometry import RoadFit, Scene, fit_road, frame_labels, load_sources, sample_scene, split_sources, usable
from .render import Rendered, TextureBank, render_frame

LABEL_FILES = {  # split -> (directory under out, label file name)
    "train": ("train_set", "label_data_0313.json"),
    "train_0601": ("train_set", "label_data_0601.json"),
    "val": ("train_set", "label_data_0531.json"),
    "test": (".", "test_label.json"),
}
TEST_TASKS = "test_set/test_tasks_0627.json"
_MAX_DRAWS = 200  # source/perturbation draws per frame before giving up (never reached with the real labels)


def default_labels_path() -> Path:
    """The real TuSimple labels of clips 0313 shipped with the package (compact ``.npz``, see
    :mod:`mlflow_anf_lanedet.assets`)."""
    return labels_0313_path()


@dataclass(frozen=True)
class FramePlan:
    """Where frame `index` goes and which real frames its geometry may come from."""

    index: int
    split: str  # train | val | test (selects the pool of real frames)
    label_file: str  # key of LABEL_FILES
    raw_file: str  # "clips/<clip>/<id>/20.jpg", relative to train_set/ or test_set/
    h_samples: tuple[int, ...]

    @property
    def image_path(self) -> str:
        return f"{'test_set' if self.split == 'test' else 'train_set'}/{self.raw_file}"


def plan_frames(config: SynthConfig) -> list[FramePlan]:
    """Assign every frame its split, clip, id and h_samples grid (deterministic from the seed)."""
    counts = split_counts(config.frames, config.val_fraction, config.test_fraction)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x1D5]))
    n_train = counts["train"]
    n_0601 = round(n_train * config.train_0601_fraction)
    if config.train_0601_fraction > 0 and n_train >= 2:  # both train label files get frames, 0313 at least one
        n_0601 = min(max(n_0601, 1), n_train - 1)
    n_0601 = min(n_0601, n_train - 1)
    plans: list[FramePlan] = []
    clip_count = {"0313-1": 0, "0313-2": 0}

    def stamp(base: int, j: int) -> str:  # nanosecond-timestamp ids like the real 0531/0601/0530 clips
        return str(base + j * 3_000_000_000 + int(rng.integers(0, 1_000_000_000)))

    for j in range(n_train - n_0601):
        clip = "0313-1" if j < (n_train - n_0601 + 1) // 2 else "0313-2"
        clip_count[clip] += 1
        raw = f"clips/{clip}/{60 * clip_count[clip]}/20.jpg"
        plans.append(FramePlan(len(plans), "train", "train", raw, H_SAMPLES_0313))
    for j in range(n_0601):
        plans.append(FramePlan(len(plans), "train", "train_0601", f"clips/0601/{stamp(1494452381594376146, j)}/20.jpg",
                               H_SAMPLES_WIDE))  # fmt: skip
    for j in range(counts["val"]):
        plans.append(FramePlan(len(plans), "val", "val", f"clips/0531/{stamp(1492626287507231547, j)}/20.jpg",
                               H_SAMPLES_WIDE))  # fmt: skip
    for j in range(counts["test"]):
        grid = H_SAMPLES_WIDE if rng.random() < 0.5 else H_SAMPLES_0313
        plans.append(FramePlan(len(plans), "test", "test", f"clips/0530/{stamp(1492626047222176976, j)}_0/20.jpg",
                               grid))  # fmt: skip
    return plans


class FrameRenderer:
    """Renders planned frames: real labels, their fits and the texture tiles, built once per process."""

    def __init__(self, labels: Path, seed: int, max_fit_rms: float, jpeg_quality: int) -> None:
        self.sources = load_sources(labels)
        self.splits = split_sources(self.sources)
        self.seed = seed
        self.max_fit_rms = max_fit_rms
        self.jpeg_quality = jpeg_quality
        self.bank = TextureBank(seed)
        self._fits: dict[int, RoadFit | None] = {}

    def scene(self, plan: FramePlan, rng: np.random.Generator) -> Scene:
        """Draw a real frame from the split's pool and perturb it until it yields 3-5 lanes."""
        pool = self.splits[plan.split]
        for _ in range(_MAX_DRAWS):
            i = pool[int(rng.integers(len(pool)))]
            if i not in self._fits:
                self._fits[i] = fit_road(self.sources[i])
            fit = self._fits[i]
            if fit is not None and usable(fit, self.max_fit_rms):
                scene = sample_scene(fit, rng)
                if scene is not None:
                    return scene
        raise SynthError(f"no usable real frame for the {plan.split} split after {_MAX_DRAWS} draws (max_fit_rms?)")

    def render(self, plan: FramePlan) -> tuple[Scene, Rendered]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, plan.index]))
        scene = self.scene(plan, rng)
        return scene, render_frame(scene, self.bank, rng, self.jpeg_quality)

    def write(self, plan: FramePlan, root: Path) -> tuple[int, list[list[int]], str]:
        """Render one frame into `root`; returns (index, lanes, real source raw_file)."""
        scene, rendered = self.render(plan)
        path = root / plan.image_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rendered.jpeg)
        pad = 4 if plan.label_file == "train" else 0  # as in the real label_data_0313.json
        return plan.index, frame_labels(scene, plan.h_samples, pad_to=pad), scene.source


_WORKER: FrameRenderer | None = None


def _init_worker(labels: str, seed: int, max_fit_rms: float, jpeg_quality: int) -> None:
    global _WORKER
    _WORKER = FrameRenderer(Path(labels), seed, max_fit_rms, jpeg_quality)


def _work(args: tuple[list[FramePlan], str]) -> list[tuple[int, list[list[int]], str]]:
    plans, root = args
    assert _WORKER is not None
    return [_WORKER.write(p, Path(root)) for p in plans]


def generate(
    out: str | os.PathLike[str],
    frames: int,
    seed: int,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    labels: str | os.PathLike[str] | None = None,
    workers: int = 1,
    overwrite: bool = False,
    jpeg_quality: int = 90,
    progress: Progress = SILENT,
    **options: object,
) -> SynthReport:
    """Write `frames` synthetic frames (train/val/test) in the official TuSimple layout under `out`.

    Options are validated by `SynthConfig` (extra keyword options are its other fields). Raises `SynthError` naming
    the option or file on bad input, before anything is written. *progress* counts the frames as they are written.
    """
    try:
        config = SynthConfig(
            out=Path(out), frames=frames, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
            labels=Path(labels) if labels is not None else None, workers=workers, overwrite=overwrite,
            jpeg_quality=jpeg_quality, **options,
        )  # fmt: skip
    except ValidationError as exc:
        raise SynthError(_describe(exc)) from None
    return generate_from_config(config, progress)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def generate_from_config(config: SynthConfig, progress: Progress = SILENT) -> SynthReport:
    """`generate` with a validated config."""
    started = time.perf_counter()
    labels = config.labels or default_labels_path()
    out = config.out
    _check_out(out, config.overwrite)
    load_sources(labels)  # fail on a bad labels file before creating anything
    plans = plan_frames(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.synth-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        with progress.step(f"render {len(plans)} frames", total=len(plans)) as step:
            results = _render_all(plans, tmp, labels, config, step)
        counts = _write_labels(plans, results, tmp)
        _replace(tmp, out, config.overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    sources: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for plan in plans:
        sources[plan.split].append(results[plan.index][2])
    return SynthReport(
        out=out, seed=config.seed, frames=config.frames, counts=counts, sources=sources, seconds=round(seconds, 3),
        frames_per_s=round(config.frames / seconds, 2), workers=config.workers,
    )  # fmt: skip


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"out: {out} is not empty (pass overwrite to replace it)")
        if (out / ".git").exists() or out.resolve() in (Path("/"), Path.home().resolve()):
            raise SynthError(f"out: refusing to overwrite {out} (a repository or home/root directory)")


def _render_all(
    plans: list[FramePlan], root: Path, labels: Path, config: SynthConfig, step: Step
) -> dict[int, tuple[int, list[list[int]], str]]:
    results: dict[int, tuple[int, list[list[int]], str]] = {}
    if config.workers == 1 or len(plans) < 8:
        renderer = FrameRenderer(labels, config.seed, config.max_fit_rms, config.jpeg_quality)
        for p in plans:
            results[p.index] = renderer.write(p, root)
            step.advance()
        return results
    chunk = max(4, min(32, len(plans) // (config.workers * 4)))
    chunks = [(plans[i : i + chunk], str(root)) for i in range(0, len(plans), chunk)]
    with ProcessPoolExecutor(
        max_workers=config.workers,
        mp_context=get_context("spawn"),  # no fork of a parent that may hold threads (torch, MLflow)
        initializer=_init_worker,
        initargs=(str(labels), config.seed, config.max_fit_rms, config.jpeg_quality),
    ) as pool:
        for batch in pool.map(_work, chunks):
            results.update({r[0]: r for r in batch})
            step.advance(len(batch))
    return results


def _write_labels(
    plans: list[FramePlan], results: dict[int, tuple[int, list[list[int]], str]], root: Path
) -> dict[str, int]:
    lines: dict[str, list[str]] = {key: [] for key in LABEL_FILES}
    tasks: list[str] = []
    for plan in plans:
        lanes = results[plan.index][1]
        record = {"lanes": lanes, "h_samples": list(plan.h_samples), "raw_file": plan.raw_file}
        lines[plan.label_file].append(json.dumps(record))
        if plan.split == "test":
            tasks.append(json.dumps({"h_samples": list(plan.h_samples), "raw_file": plan.raw_file}))
    counts = {}
    for key, (folder, name) in LABEL_FILES.items():
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines[key]), encoding="utf-8")
        counts[name] = len(lines[key])
    (root / TEST_TASKS).write_text("".join(line + "\n" for line in tasks), encoding="utf-8")
    return counts


def _replace(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished dataset into place; an old `out` is swapped out first and removed after."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            if not overwrite:  # appeared while we were rendering
                raise SynthError(f"out: {out} became non-empty while generating")
            old = out.parent / f".{out.name}.synth-old-{secrets.token_hex(4)}"
            out.rename(old)
        else:
            out.rmdir()
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
