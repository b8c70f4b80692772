"""TuSimple metric: the vectorised ``mlflow_anf_lanedet.metric`` vs the per-lane least-squares loop, side by side.

*baseline* is ``tests/doubles/reference_lane_eval.py``: the benchmark's own structure (a frame loop, a least-squares fit
per GT lane, a line-accuracy list comprehension per (GT, prediction) pair), the way ``evaluate/lane.py`` runs.
*vectorised* is :func:`mlflow_anf_lanedet.metric.evaluate` on the same parsed records (validation included). Both results
are asserted identical (exact float equality) on every set:

* ``fixture``: the 2,858 frames of ``label_data_0313.json`` with the benchmark's example predictions;
* ``randomised``: the same frames with perturbed / dropped / extra / slow / 5-lane / tie cases;
* ``fixture xN``: the fixture replicated N times (renamed frames), to show the cost stays linear;
* ``files``: ``bench_one_submit`` end to end on the fixture files (JSON parsing included on both sides).

Times are CPU seconds of this process (``time.process_time``), best of a few runs each: on a shared machine wall
time mostly measures the other tenants. The goal is a ratio >= 20x.

    .venv/bin/python benchmarks/bench_metric.py [--quick] [--replicate N] [--repeats K]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _setup_path() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _fixture_files(tmp: Path) -> tuple[Path, Path]:
    """The repository's example predictions and the packaged real labels, written back as JSON lines into *tmp*."""
    from mlflow_anf_lanedet.assets import labels_0313_path, write_label_lines

    return (write_label_lines(ROOT / "fixtures" / "tusimple" / "pred_example_0313.npz", tmp / "pred.json"),
            write_label_lines(labels_0313_path(), tmp / "label_data_0313.json"))


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best CPU time of ``repeats`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    return best, result


def _replicate(records: list[dict], n: int) -> list[dict]:
    return [{**rec, "raw_file": f"{k}/{rec['raw_file']}"} for k in range(n) for rec in records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run: fewer repeats, smaller replication")
    parser.add_argument("--replicate", type=int, default=None, help="N for the 'fixture xN' set (default 5, quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per measurement (default 5, quick 2)")
    args = parser.parse_args(argv)
    _setup_path()
    import numpy as np

    from mlflow_anf_lanedet import metric
    from tests.doubles import reference_lane_eval as ref

    replicate = args.replicate or (2 if args.quick else 5)
    repeats = args.repeats or (2 if args.quick else 5)
    base_repeats = 1 if args.quick else 2  # the baseline is slow and steadier

    scratch = tempfile.TemporaryDirectory(prefix="bench-metric-")  # removed when main returns
    pred_file, gt_file = _fixture_files(Path(scratch.name))
    preds, gts = ref.read_lines(pred_file), ref.read_lines(gt_file)
    rand_preds, rand_gts = ref.random_cases(gts, np.random.default_rng(0))
    sets = [
        ("fixture", preds, gts),
        ("randomised", rand_preds, rand_gts),
        (f"fixture x{replicate}", _replicate(preds, replicate), _replicate(gts, replicate)),
    ]

    print("CPU seconds of this process, best of runs")
    print(f"{'set':<14} {'frames':>7} {'baseline s':>11} {'vectorised s':>13} {'ratio':>7}  result")
    ratios = []
    for name, p, g in sets:
        t_vec, ours = _best(lambda: metric.evaluate(p, g), repeats)
        t_base, theirs = _best(lambda: ref.evaluate(p, g), base_repeats)
        if ours != theirs:
            print(f"MISMATCH on {name}: {ours} != {theirs}")
            return 1
        ratios.append(t_base / t_vec)
        print(f"{name:<14} {len(p):>7} {t_base:>11.3f} {t_vec:>13.4f} {t_base / t_vec:>6.1f}x  "
              f"Accuracy {ours['Accuracy']:.6f} FP {ours['FP']:.6f} FN {ours['FN']:.6f}")

    t_vec, ours = _best(lambda: metric.bench_one_submit(pred_file, gt_file), repeats)
    t_base, theirs = _best(lambda: ref.bench_one_submit(pred_file, gt_file), base_repeats)
    if ours != theirs:
        print(f"MISMATCH on files: {ours} != {theirs}")
        return 1
    print(f"{'files':<14} {len(preds):>7} {t_base:>11.3f} {t_vec:>13.4f} {t_base / t_vec:>6.1f}x  "
          "(JSON parsing included on both sides)")
    print(f"evaluation speed-up: {min(ratios):.1f}x .. {max(ratios):.1f}x (goal >= 20x); results identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
