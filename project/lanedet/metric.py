"""The official TuSimple lane metric, vectorised with numpy.

Semantics are those of ``LaneEval`` in the benchmark's ``evaluate/lane.py`` (TuSimple/tusimple-benchmark, latest
revision), re-implemented over whole files at once instead of frame by frame and lane by lane:

* per ground-truth (GT) lane, the angle of a least-squares fit of x on y over its valid points (x >= 0; the
  benchmark uses sklearn ``LinearRegression``), theta = arctan(slope), 0 with fewer than two points;
  threshold = ``PIXEL_THRESH / cos(theta)``;
* line accuracy of a predicted lane against a GT lane: every negative x (in either) becomes ``MISSING_X`` (-100),
  a row is correct when ``|pred - gt| < threshold``, accuracy = correct rows / all h_sample rows (so a row that is
  missing in both counts as correct, a point predicted where the GT has none counts as wrong);
* each GT lane takes its best prediction; it is matched when that accuracy >= ``PT_THRESH`` (0.85), else a
  false negative; FP = predictions - matched GT lanes (negative when one prediction matches two GT lanes);
* with more than 4 GT lanes one FN is forgiven and the worst lane's accuracy is dropped;
* per frame: accuracy = sum / max(min(4, #gt), 1), FP = fp / #pred (0 without predictions),
  FN = fn / max(min(#gt, 4), 1); a frame whose ``run_time`` > 200 (ms) or with more than #gt + 2 predictions
  scores (0, 0, 1);
* file scores are the frame scores summed in prediction-file order, divided by the number of GT frames.

Bit-for-bit agreement on the threshold decisions: the slope is computed in closed form for all lanes; any lane
whose decision is within 1e-9 (relative) of its threshold gets its slope recomputed the way sklearn does it
(centre both variables, LAPACK ``gelsd`` least squares), see :func:`sklearn_slope`.

Input checks are stricter than the benchmark's, which silently overwrites duplicate ``raw_file`` keys and scores
partial files: every problem raises :class:`MetricError` naming the file (or list) and line (or index).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

PIXEL_THRESH = 20.0
"""Base x tolerance in pixels (scaled by 1/cos(angle of the GT lane))."""
PT_THRESH = 0.85
"""Line accuracy from which a GT lane counts as matched."""
MAX_RUN_TIME_MS = 200.0
"""A frame whose ``run_time`` exceeds this scores accuracy 0, FP 0, FN 1."""
MAX_EXTRA_LANES = 2
"""A frame with more than #gt + MAX_EXTRA_LANES predicted lanes scores accuracy 0, FP 0, FN 1."""
MISSING_X = -100.0
"""The value the benchmark substitutes for every negative x before comparing."""

_TIE_RTOL = 1e-9
_CHUNK_ELEMENTS = 1 << 20  # pair-rows x h_samples per vectorised chunk (bounds temporary memory to ~10 MB/array)

_LANE_TYPES = (list, tuple, np.ndarray)
GT_KEYS = ("raw_file", "lanes", "h_samples")
PRED_KEYS = ("raw_file", "lanes", "run_time")


class MetricError(ValueError):
    """Malformed or inconsistent prediction / ground-truth input; the message starts with ``<file>:<line>:``."""


# --------------------------------------------------------------------------------------------------- slope / angle


def sklearn_slope(xs: np.ndarray, ys: np.ndarray) -> float:
    """Slope of x on y as ``sklearn.linear_model.LinearRegression().fit(ys[:, None], xs).coef_[0]`` computes it.

    sklearn centres both variables with ``np.average`` and solves the centred problem with
    ``scipy.linalg.lstsq`` (LAPACK ``gelsd``, ``cond = max(shape) * eps``); numpy's ``lstsq`` calls the same routine.
    Used for near-tie threshold decisions, where the last bits of the slope matter.
    """
    x = np.asarray(ys, dtype=np.float64)[:, None]
    y = np.asarray(xs, dtype=np.float64)
    x = x - np.average(x, axis=0)
    y = y - np.average(y, axis=0)
    coef = np.linalg.lstsq(x, y, rcond=max(x.shape) * np.finfo(np.float64).eps)[0]
    return float(coef[0])


def lane_thresholds(gt_x: np.ndarray, y: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Per GT lane ``PIXEL_THRESH / cos(arctan(slope))`` for lanes ``gt_x`` [N, S] sampled at rows ``y`` [N, S].

    ``rows`` [N, S] marks the real (non-padding) entries; a point is used when it is a real row and x >= 0.
    Lanes with fewer than two points, or all on one row, get slope 0 (as sklearn's minimum-norm solution).
    Closed form; see :func:`sklearn_slope` for the bit-exact variant.
    """
    valid = gt_x >= 0
    if rows is not None:
        valid &= rows
    n = valid.sum(axis=1)
    safe_n = np.maximum(n, 1)
    y_mean = np.where(valid, y, 0.0).sum(axis=1) / safe_n
    x_mean = np.where(valid, gt_x, 0.0).sum(axis=1) / safe_n
    dy = np.where(valid, y - y_mean[:, None], 0.0)
    dx = np.where(valid, gt_x - x_mean[:, None], 0.0)
    syy = (dy * dy).sum(axis=1)
    sxy = (dy * dx).sum(axis=1)
    fitted = (n > 1) & (syy > 0)
    slope = np.where(fitted, sxy / np.where(fitted, syy, 1.0), 0.0)
    theta = np.where(n > 1, np.arctan(slope), 0.0)
    return PIXEL_THRESH / np.cos(theta)


def _exact_threshold(gt_x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> float:
    valid = (gt_x >= 0) & rows
    if valid.sum() <= 1:
        return PIXEL_THRESH / np.cos(0.0)
    theta = np.arctan(sklearn_slope(gt_x[valid], y[valid]))
    return float(PIXEL_THRESH / np.cos(theta))


# --------------------------------------------------------------------------------------------------- input checks


@dataclass(frozen=True)
class _Source:
    """Where records came from: a file (``path:line``) or an in-memory sequence (``name[index]``)."""

    name: str
    lines: Sequence[int] | None = None  # file line numbers; None for in-memory lists

    def at(self, i: int) -> str:
        return f"{self.name}:{self.lines[i]}" if self.lines is not None else f"{self.name}[{i}]"


def _as_mapping(record: Any) -> Any:
    if hasattr(record, "model_dump") and not isinstance(record, Mapping):  # e.g. lanedet.data.tusimple.LaneLabel
        return record.model_dump()
    return record


def _check_record(record: Any, keys: tuple[str, ...], where: str) -> Mapping[str, Any]:
    if not isinstance(record, Mapping):
        raise MetricError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise MetricError(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}")
    if not isinstance(record["raw_file"], str):
        raise MetricError(f"{where}: 'raw_file' must be a string, got {type(record['raw_file']).__name__}")
    lanes = record["lanes"]
    if not isinstance(lanes, (list, tuple)) or not all(isinstance(lane, _LANE_TYPES) for lane in lanes):
        raise MetricError(f"{where}: 'lanes' must be a list of lists of x values")
    return record


def _is_number(value: Any) -> bool:
    try:
        return isinstance(value, (int, float, np.integer, np.floating)) and bool(np.isfinite(float(value)))
    except OverflowError:  # an int too large for a float
        return False


def _first_bad(values: Iterable[Any]) -> int:
    """Index of the first entry that is not a finite number, -1 when all are."""
    return next((i for i, v in enumerate(values) if not _is_number(v)), -1)


def _to_float_rows(rows: list[list[Any]]) -> np.ndarray | None:
    """Equal-length lists of finite numbers -> float64 [N, L]; None when any entry is not a finite number."""
    try:
        arr = np.asarray(rows)
    except (ValueError, OverflowError, TypeError):
        return None
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        return None
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        return None
    return arr


@dataclass
class _Frames:
    """Validated frames in prediction order, ready to be packed."""

    y: list[list[Any]]  # h_samples per frame
    gt: list[list[list[Any]]]
    pred: list[list[list[Any]]]
    run_time: list[float]
    gt_where: list[str]  # location of each frame's GT record (for value errors)
    pred_where: list[str]


def _collect(
    preds: Sequence[Any], pred_src: _Source, gts: Sequence[Any], gt_src: _Source
) -> _Frames:
    if len(gts) == 0:
        raise MetricError(f"{gt_src.name}: no ground-truth frames")
    gt_index: dict[str, int] = {}
    gt_records = []
    for i, rec in enumerate(gts):
        where = gt_src.at(i)
        rec = _check_record(_as_mapping(rec), GT_KEYS, where)
        samples = rec["h_samples"]
        if not isinstance(samples, _LANE_TYPES) or len(samples) == 0 or _first_bad(samples) >= 0:
            raise MetricError(f"{where}: 'h_samples' must be a non-empty list of finite numbers")
        for k, lane in enumerate(rec["lanes"]):
            if len(lane) != len(samples):
                raise MetricError(
                    f"{where}: lane {k} has {len(lane)} x values but 'h_samples' has {len(samples)}"
                )
        first = gt_index.setdefault(rec["raw_file"], i)
        if first != i:
            raise MetricError(f"{where}: duplicate raw_file {rec['raw_file']!r} (first at {gt_src.at(first)})")
        gt_records.append(rec)

    frames = _Frames([], [], [], [], [], [])
    seen: dict[int, int] = {}
    for i, rec in enumerate(preds):
        where = pred_src.at(i)
        rec = _check_record(_as_mapping(rec), PRED_KEYS, where)
        run_time = rec["run_time"]
        if not _is_number(run_time):
            raise MetricError(f"{where}: 'run_time' must be a finite number (milliseconds), got {run_time!r}")
        g = gt_index.get(rec["raw_file"])
        if g is None:
            raise MetricError(f"{where}: raw_file {rec['raw_file']!r} is not in the ground truth {gt_src.name}")
        if g in seen:
            raise MetricError(
                f"{where}: duplicate prediction for raw_file {rec['raw_file']!r} (first at {pred_src.at(seen[g])})"
            )
        seen[g] = i
        gt_rec = gt_records[g]
        n_rows = len(gt_rec["h_samples"])
        for k, lane in enumerate(rec["lanes"]):
            if len(lane) != n_rows:
                raise MetricError(
                    f"{where}: lane {k} has {len(lane)} x values but the ground truth ({gt_src.at(g)}) "
                    f"has {n_rows} h_samples"
                )
        frames.y.append(gt_rec["h_samples"])
        frames.gt.append(gt_rec["lanes"])
        frames.pred.append(rec["lanes"])
        frames.run_time.append(float(run_time))
        frames.gt_where.append(gt_src.at(g))
        frames.pred_where.append(where)
    if len(seen) != len(gt_records):
        missing = [g for g in range(len(gt_records)) if g not in seen]
        raise MetricError(
            f"{gt_src.at(missing[0])}: no prediction for raw_file {gt_records[missing[0]]['raw_file']!r} "
            f"({len(missing)} of {len(gt_records)} ground-truth frames have no prediction in {pred_src.name})"
        )
    return frames


# --------------------------------------------------------------------------------------------------- packing


@dataclass
class _Packed:
    """Frames [F] with lanes flattened: GT lanes [NG, S] and predicted lanes [NP, S], frame-major, padded to S."""

    y: np.ndarray  # [F, S] float64
    rows: np.ndarray  # [F, S] bool, real h_sample rows
    n_rows: np.ndarray  # [F]
    n_gt: np.ndarray  # [F]
    n_pred: np.ndarray  # [F]
    zero: np.ndarray  # [F] bool, scored (0, 0, 1) by the run-time / too-many-lanes rules
    gt: np.ndarray  # [NG, S] float64
    pred: np.ndarray  # [NP, S] float64
    gt_frame: np.ndarray  # [NG]
    pred_frame: np.ndarray  # [NP]


def _pack_lanes(lanes: list[list[Any]], lengths: np.ndarray, width: int, owner: list[str], frame_of: np.ndarray,
                what: str) -> np.ndarray:
    out = np.zeros((len(lanes), width))
    for length in np.unique(lengths):
        idx = np.flatnonzero(lengths == length)
        block = lanes if len(idx) == len(lanes) else [lanes[i] for i in idx]
        arr = _to_float_rows(block) if length > 0 else np.zeros((len(idx), 0))
        if arr is None:
            for i in idx:  # slow path, only to name the offending record
                bad = _first_bad(lanes[i])
                if bad >= 0:
                    raise MetricError(
                        f"{owner[frame_of[i]]}: {what} x values must be finite numbers, got {lanes[i][bad]!r}"
                    )
            arr = np.array(block, dtype=np.float64)  # all finite numbers, just not one numpy dtype (huge ints)
        out[idx, :length] = arr
    return out


def _pack(frames: _Frames) -> _Packed:
    n_rows = np.array([len(y) for y in frames.y], dtype=np.int64)
    n_gt = np.array([len(g) for g in frames.gt], dtype=np.int64)
    n_pred = np.array([len(p) for p in frames.pred], dtype=np.int64)
    width = int(n_rows.max())
    f_idx = np.arange(len(n_rows))
    y = _pack_lanes(frames.y, n_rows, width, frames.gt_where, f_idx, "h_samples")
    rows = np.arange(width)[None, :] < n_rows[:, None]
    gt_frame = np.repeat(f_idx, n_gt)
    pred_frame = np.repeat(f_idx, n_pred)
    gt = _pack_lanes([lane for lanes in frames.gt for lane in lanes], n_rows[gt_frame], width,
                     frames.gt_where, gt_frame, "ground-truth")
    pred = _pack_lanes([lane for lanes in frames.pred for lane in lanes], n_rows[pred_frame], width,
                       frames.pred_where, pred_frame, "predicted")
    run_time = np.array(frames.run_time, dtype=np.float64)
    zero = (run_time > MAX_RUN_TIME_MS) | (n_pred > n_gt + MAX_EXTRA_LANES)
    return _Packed(y, rows, n_rows, n_gt, n_pred, zero, gt, pred, gt_frame, pred_frame)


# --------------------------------------------------------------------------------------------------- scoring


def _line_accuracies(pk: _Packed, gt_x: np.ndarray, pred_x: np.ndarray, g: np.ndarray, p: np.ndarray,
                     thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of each (GT lane g, predicted lane p) pair and whether any row is a near-tie with the threshold."""
    f = pk.gt_frame[g]
    diff = np.abs(pred_x[p] - gt_x[g])
    t = thr[g][:, None]
    rows = pk.rows[f]
    hits = ((diff < t) & rows).sum(axis=1)
    near = ((np.abs(diff - t) <= _TIE_RTOL * t) & rows).any(axis=1)
    return hits / pk.n_rows[f], near


def _score_chunk(pk: _Packed) -> np.ndarray:
    """Per-frame (accuracy, fp, fn) [F, 3] for one packed chunk."""
    n_frames = len(pk.n_gt)
    gt_x = np.where(pk.gt >= 0, pk.gt, MISSING_X)
    pred_x = np.where(pk.pred >= 0, pk.pred, MISSING_X)
    thr = lane_thresholds(pk.gt, pk.y[pk.gt_frame], pk.rows[pk.gt_frame])

    # All (gt lane, pred lane) pairs within each scored frame, GT-lane-major so each GT lane owns a contiguous block.
    n_pair_pred = np.where(pk.zero, 0, pk.n_pred)
    counts = pk.n_gt * n_pair_pred
    pair_start = np.cumsum(counts) - counts
    gt_off = np.cumsum(pk.n_gt) - pk.n_gt
    pred_off = np.cumsum(pk.n_pred) - pk.n_pred
    pair_frame = np.repeat(np.arange(n_frames), counts)
    j = np.arange(int(counts.sum())) - pair_start[pair_frame]
    per = n_pair_pred[pair_frame]
    g = gt_off[pair_frame] + j // np.maximum(per, 1)
    p = pred_off[pair_frame] + j % np.maximum(per, 1)

    acc, near = _line_accuracies(pk, gt_x, pred_x, g, p, thr)
    if near.any():  # decisions within rounding of the threshold: use sklearn's exact slope for those lanes
        tied = np.unique(g[near])
        for lane in tied:
            f = pk.gt_frame[lane]
            thr[lane] = _exact_threshold(pk.gt[lane], pk.y[f], pk.rows[f])
        redo = np.isin(g, tied)
        acc[redo], _ = _line_accuracies(pk, gt_x, pred_x, g[redo], p[redo], thr)

    n_lanes = len(pk.gt_frame)
    best = np.zeros(n_lanes)
    has_pred = n_pair_pred[pk.gt_frame] > 0
    if has_pred.any():
        lanes = np.flatnonzero(has_pred)
        fr = pk.gt_frame[lanes]
        starts = pair_start[fr] + (lanes - gt_off[fr]) * n_pair_pred[fr]
        best[lanes] = np.maximum.reduceat(acc, starts)

    matched = np.bincount(pk.gt_frame, weights=(best >= PT_THRESH).astype(np.float64), minlength=n_frames)
    total = np.bincount(pk.gt_frame, weights=best, minlength=n_frames)  # sequential, like sum(line_accs)
    worst = np.zeros(n_frames)
    with_gt = pk.n_gt > 0
    if with_gt.any():
        worst[with_gt] = np.minimum.reduceat(best, gt_off[with_gt])
    n_gt = pk.n_gt.astype(np.float64)
    n_pred = pk.n_pred.astype(np.float64)
    fn = n_gt - matched
    many = pk.n_gt > 4
    fn = np.where(many & (fn > 0), fn - 1.0, fn)
    total = np.where(many, total - worst, total)
    norm = np.maximum(np.minimum(4.0, n_gt), 1.0)
    out = np.empty((n_frames, 3))
    out[:, 0] = total / norm
    out[:, 1] = np.where(pk.n_pred > 0, (n_pred - matched) / np.maximum(n_pred, 1.0), 0.0)
    out[:, 2] = fn / norm
    out[pk.zero] = (0.0, 0.0, 1.0)
    return out


def _chunks(pk: _Packed) -> Iterable[_Packed]:
    """Split frames into consecutive chunks of about ``_CHUNK_ELEMENTS`` pair-row elements each."""
    cost = (pk.n_gt * np.maximum(pk.n_pred, 1) + pk.n_gt + pk.n_pred) * pk.y.shape[1]
    chunk_id = np.maximum(np.cumsum(cost) - 1, 0) // _CHUNK_ELEMENTS
    edges = np.concatenate([[0], np.flatnonzero(np.diff(chunk_id)) + 1, [len(cost)]])
    if len(edges) == 2:
        yield pk
        return
    gt_off = np.concatenate([[0], np.cumsum(pk.n_gt)])
    pred_off = np.concatenate([[0], np.cumsum(pk.n_pred)])
    for a, b in zip(edges[:-1], edges[1:]):
        ga, gb, pa, pb = gt_off[a], gt_off[b], pred_off[a], pred_off[b]
        yield _Packed(pk.y[a:b], pk.rows[a:b], pk.n_rows[a:b], pk.n_gt[a:b], pk.n_pred[a:b], pk.zero[a:b],
                      pk.gt[ga:gb], pk.pred[pa:pb], pk.gt_frame[ga:gb] - a, pk.pred_frame[pa:pb] - a)


def _frame_scores(frames: _Frames) -> np.ndarray:
    packed = _pack(frames)
    return np.concatenate([_score_chunk(chunk) for chunk in _chunks(packed)])


def _totals(scores: np.ndarray, n_gt_frames: int) -> dict[str, float]:
    # Summed in prediction order one frame after the other (cumsum is sequential), as the benchmark's `+=` loop.
    sums = np.cumsum(scores, axis=0)[-1] if len(scores) else np.zeros(3)
    return {"Accuracy": float(sums[0] / n_gt_frames), "FP": float(sums[1] / n_gt_frames),
            "FN": float(sums[2] / n_gt_frames)}


# --------------------------------------------------------------------------------------------------- public API


def evaluate_frame(
    pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]], y_samples: Sequence[float], run_time: float = 0.0
) -> tuple[float, float, float]:
    """``LaneEval.bench`` for one frame: (accuracy, fp, fn) of predicted lanes ``pred`` against ``gt``.

    Every lane is a list of x values per ``y_samples`` row (negative = no point); ``run_time`` in milliseconds.
    """
    gt_rec = {"raw_file": "frame", "lanes": [list(lane) for lane in gt], "h_samples": list(y_samples)}
    pred_rec = {"raw_file": "frame", "lanes": [list(lane) for lane in pred], "run_time": run_time}
    frames = _collect([pred_rec], _Source("pred"), [gt_rec], _Source("gt"))
    acc, fp, fn = _frame_scores(frames)[0]
    return float(acc), float(fp), float(fn)


def evaluate(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Score prediction records against GT records -> ``{"Accuracy", "FP", "FN"}`` (the benchmark's numbers).

    ``preds``: ``{"raw_file", "lanes", "run_time"}`` each; ``gts``: ``{"raw_file", "lanes", "h_samples"}`` each
    (pydantic models such as ``LaneLabel`` are accepted too). Every GT frame needs exactly one prediction.
    Raises :class:`MetricError` naming ``predictions[i]`` / ``ground_truth[i]``.
    """
    frames = _collect(preds, _Source("predictions"), gts, _Source("ground_truth"))
    return _totals(_frame_scores(frames), len(gts))


def read_json_lines(path: str | Path) -> tuple[list[Any], list[int]]:
    """Records of a JSON-lines file and their 1-based line numbers (blank lines skipped).

    Raises :class:`MetricError` ``"<path>:<line>: invalid JSON ..."`` or ``"<path>: cannot read ..."``.
    """
    records: list[Any] = []
    lines: list[int] = []
    try:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    records.append(json.loads(raw))
                except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                    detail = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else exc
                    raise MetricError(f"{path}:{lineno}: invalid JSON ({detail})") from None
                lines.append(lineno)
    except OSError as exc:
        raise MetricError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return records, lines


def evaluate_files(pred_file: str | Path, gt_file: str | Path) -> dict[str, float]:
    """Score a JSON-lines prediction file against a JSON-lines GT file -> ``{"Accuracy", "FP", "FN"}``."""
    preds, pred_lines = read_json_lines(pred_file)
    gts, gt_lines = read_json_lines(gt_file)
    frames = _collect(preds, _Source(str(pred_file), pred_lines), gts, _Source(str(gt_file), gt_lines))
    return _totals(_frame_scores(frames), len(gts))


def format_result(result: Mapping[str, float]) -> str:
    """The benchmark's output: a JSON list of ``{"name", "value", "order"}`` (Accuracy first, the ranking key)."""
    return json.dumps([
        {"name": "Accuracy", "value": result["Accuracy"], "order": "desc"},
        {"name": "FP", "value": result["FP"], "order": "asc"},
        {"name": "FN", "value": result["FN"], "order": "asc"},
    ])


def bench_one_submit(pred_file: str | Path, gt_file: str | Path) -> str:
    """``LaneEval.bench_one_submit``: score ``pred_file`` against ``gt_file`` and return the benchmark's JSON."""
    return format_result(evaluate_files(pred_file, gt_file))


@click.command("eval")
@click.argument("pred_json", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("gt_json", type=click.Path(dir_okay=False, path_type=Path))
def eval_command(pred_json: Path, gt_json: Path) -> None:
    """Score PRED_JSON against GT_JSON (JSON lines) with the official TuSimple metric.

    Prints the benchmark's JSON list (Accuracy, FP, FN). Exits 2 on malformed input, naming the file and line.
    """
    try:
        out = bench_one_submit(pred_json, gt_json)
    except MetricError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    click.echo(out)
