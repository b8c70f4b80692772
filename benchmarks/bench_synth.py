"""Synthetic TuSimple generator speed: frames/s of `lanedet synth`, against a straightforward baseline.

Both run here, in the same process, on the same frames:
  * ours      - `FrameRenderer`: texture tiles built once per worker, sliced per frame; vectorised drawing.
  * baseline  - the same renderer but building its noise tiles for every frame (what a renderer without per-worker
                precomputation does).
Then the whole `generate()` (rendering, JPEG files, label files, atomic rename) on one core, and the goal it is
measured against: 1,000 frames in <= ~60 s.

    .venv/bin/python benchmarks/bench_synth.py [--quick] [--frames N] [--workers K]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mlflow_anf_lanedet.synth import generate
from mlflow_anf_lanedet.synth.config import SynthConfig
from mlflow_anf_lanedet.synth.render import TextureBank
from mlflow_anf_lanedet.synth.writer import FrameRenderer, default_labels_path, plan_frames


def _per_frame(renderer: FrameRenderer, plans: list, fresh_bank: bool) -> float:
    """CPU seconds per frame (render + JPEG encode)."""
    start = time.process_time()
    for plan in plans:
        if fresh_bank:
            renderer.bank = TextureBank(renderer.seed)
        renderer.render(plan)
    return (time.process_time() - start) / len(plans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (seconds)")
    parser.add_argument("--frames", type=int, default=None, help="frames for generate() (default 1000, quick 60)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--labels", type=Path, default=None)
    args = parser.parse_args()
    labels = args.labels or default_labels_path()
    frames = args.frames or (60 if args.quick else 1000)
    n_ours, n_base = (20, 3) if args.quick else (100, 10)

    config = SynthConfig(out=Path("unused"), frames=max(frames, n_ours), seed=1, labels=labels)
    plans = plan_frames(config)[:n_ours]
    renderer = FrameRenderer(labels, config.seed, config.max_fit_rms, config.jpeg_quality)
    ours = _per_frame(renderer, plans, fresh_bank=False)
    base = _per_frame(renderer, plans[:n_base], fresh_bank=True)
    print(
        f"render+encode, CPU per frame: ours {ours * 1e3:.1f} ms ({1 / ours:.1f} frames/s) | baseline (tiles per "
        f"frame) {base * 1e3:.1f} ms ({1 / base:.2f} frames/s) | speed-up x{base / ours:.1f}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        report = generate(Path(tmp) / "ds", frames, 1, labels=labels, workers=args.workers)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(f"generate(): {frames} frames, {args.workers} worker(s): {wall:.1f} s wall, {report.frames_per_s:.1f} fps")
    if args.workers == 1:  # all the work ran in this process: its CPU time is the one-core cost
        per_1000 = cpu / frames * 1000
        print(f"  one core: {cpu:.1f} s CPU, 1,000 frames ~ {per_1000:.0f} s (goal <= 60 s: ratio {per_1000 / 60:.2f})")

if __name__ == "__main__":
    main()
