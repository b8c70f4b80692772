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

Bit-for-bit agreement on the threshold decisions: slopes are computed in closed form for all lanes; a lane with
any |pred - gt| within 1e-9 (relative) of its threshold has its slope recomputed the way sklearn computes it
(centre both variables, LAPACK ``gelsd`` least squares, :func:`sklearn_slope`) before deciding. With integer x
values (the TuSimple format) |pred - gt| is an integer, so only thresholds within rounding of a whole number can
be that close, and the comparison itself runs on int16 (``d < thr`` is ``d <= ceil(thr) - 1``).

Input checks are stricter than the benchmark's, which silently overwrites duplicate ``raw_file`` keys and scores
partial files: every problem raises :class:`MetricError` naming the file (or list) and line (or index).
"""

from __future__ import annotations

import itertools
import json
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
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

_TIE_RTOL = 1e-9  # decisions this close (relative) to a threshold are re-made with sklearn's exact slope
_SHAKY_SPREAD = 1e-10  # sum((y - mean)^2) below this fraction of sum(y^2): closed-form slope too imprecise
_CHUNK_ELEMENTS = 1 << 20  # elements of the [frames, gt, pred, rows] margin array per chunk (8 MB as float64)

_SEQUENCE_TYPES = (list, tuple, np.ndarray)
_PLAIN_NUMBERS = frozenset((int, float))  # value types that need no closer look (bool is a subclass of int)
_NO_VALUE = object()
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


def lane_thresholds(
    gt_x: np.ndarray, y: np.ndarray, *, return_fitted: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per GT lane ``PIXEL_THRESH / cos(arctan(slope))`` for lanes ``gt_x`` [..., S] at rows ``y`` (broadcastable).

    A point is used when x >= 0. Lanes with fewer than two points get angle 0; points all on one row give
    slope 0 (sklearn's minimum-norm solution). Closed form, except for lanes whose rows are so close together
    that centring loses the slope's precision: those use :func:`sklearn_slope`. With ``return_fitted`` also the
    mask of lanes that had a slope fitted (those whose thresholds carry rounding).
    """
    gt_x = np.asarray(gt_x, dtype=np.float64)
    y = np.broadcast_to(np.asarray(y, dtype=np.float64), gt_x.shape)
    weight = (gt_x >= 0).astype(np.float64)
    n = weight.sum(axis=-1)
    safe_n = np.maximum(n, 1.0)
    y_mean = np.einsum("...s,...s->...", weight, y) / safe_n
    x_mean = np.einsum("...s,...s->...", weight, gt_x) / safe_n
    dy = (y - y_mean[..., None]) * weight  # zero off the lane, so dx needs no mask
    dx = gt_x - x_mean[..., None]
    syy = np.einsum("...s,...s->...", dy, dy)
    sxy = np.einsum("...s,...s->...", dy, dx)
    fitted = n > 1
    slope = np.where(fitted & (syy > 0), sxy / np.where(syy > 0, syy, 1.0), 0.0)
    thr = PIXEL_THRESH / np.cos(np.where(fitted, np.arctan(slope), 0.0))
    y_sq = np.einsum("...s,...s->...", weight * y, y)
    shaky = fitted & (syy > 0) & (syy <= _SHAKY_SPREAD * y_sq)
    for lane in zip(*np.nonzero(shaky)):  # e.g. float h_samples that repeat: rare, never in TuSimple files
        thr[lane] = _exact_threshold(gt_x[lane], y[lane])
    return (thr, fitted) if return_fitted else thr


def _exact_threshold(gt_x: np.ndarray, y: np.ndarray) -> float:
    """The threshold of one GT lane with the slope computed exactly as sklearn does."""
    valid = gt_x >= 0
    if valid.sum() <= 1:
        return float(PIXEL_THRESH / np.cos(0.0))
    return float(PIXEL_THRESH / np.cos(np.arctan(sklearn_slope(gt_x[valid], y[valid]))))


# --------------------------------------------------------------------------------------------------- input checks


@dataclass(frozen=True)
class _Source:
    """Where records came from: a file (``path:line``) or an in-memory sequence (``name[index]``)."""

    name: str
    lines: Sequence[int] | None = None  # file line numbers; None for in-memory lists

    def at(self, i: int) -> str:
        return f"{self.name}:{self.lines[i]}" if self.lines is not None else f"{self.name}[{i}]"


def _fields(record: Any, keys: tuple[str, str, str], src: _Source, i: int) -> tuple[str, Any, Any]:
    """raw_file, lanes and the third key of one record, with shape checks (values are checked when packing)."""
    if type(record) is not dict:
        if hasattr(record, "model_dump") and not isinstance(record, Mapping):  # e.g. a pydantic LaneLabel
            record = record.model_dump()
        if not isinstance(record, Mapping):
            raise MetricError(f"{src.at(i)}: expected a JSON object, got {type(record).__name__}")
    try:
        raw_file, lanes, third = record[keys[0]], record[keys[1]], record[keys[2]]
    except KeyError:
        missing = ", ".join(repr(k) for k in keys if k not in record)
        raise MetricError(f"{src.at(i)}: missing key(s) {missing}") from None
    if type(raw_file) is not str:
        raise MetricError(f"{src.at(i)}: 'raw_file' must be a string, got {type(raw_file).__name__}")
    if not isinstance(lanes, (list, tuple)):
        raise MetricError(f"{src.at(i)}: 'lanes' must be a list of lanes, got {type(lanes).__name__}")
    return raw_file, lanes, third


def _is_number(value: Any) -> bool:
    """A finite int or float; booleans (JSON ``true``/``false``) are not numbers here."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        return isinstance(value, (int, float, np.integer, np.floating)) and bool(np.isfinite(float(value)))
    except OverflowError:  # an int too large for a float
        return False


_SHOW_CHARS = 60


def _show(value: Any) -> str:
    """A short, safe rendering of a bad value for an error message: containers by type and size (a deeply nested
    list has no repr), scalars by a repr cut to a few dozen characters."""
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else f"{text[:_SHOW_CHARS]}... ({len(text)} characters)"


@dataclass
class _Frames:
    """Validated records, one frame per prediction in prediction order."""

    y: list[Sequence[Any]]  # h_samples per frame
    gt: list[Sequence[Sequence[Any]]]
    pred: list[Sequence[Sequence[Any]]]
    run_time: list[float]
    gt_of: list[int]  # index of each frame's GT record in gt_src
    pred_src: _Source
    gt_src: _Source


def _collect(preds: Sequence[Any], pred_src: _Source, gts: Sequence[Any], gt_src: _Source) -> _Frames:
    """Pair every prediction with its GT record by raw_file; one prediction per GT frame, no duplicates."""
    if len(gts) == 0:
        raise MetricError(f"{gt_src.name}: no ground-truth frames")
    gt_index: dict[str, int] = {}
    gt_lanes, gt_samples = [], []
    for i, rec in enumerate(gts):
        raw_file, lanes, samples = _fields(rec, GT_KEYS, gt_src, i)
        if not isinstance(samples, _SEQUENCE_TYPES) or len(samples) == 0:
            raise MetricError(f"{gt_src.at(i)}: 'h_samples' must be a non-empty list of y values")
        first = gt_index.setdefault(raw_file, i)
        if first != i:
            raise MetricError(f"{gt_src.at(i)}: duplicate raw_file {_show(raw_file)} (first at {gt_src.at(first)})")
        gt_lanes.append(lanes)
        gt_samples.append(samples)

    frames = _Frames([], [], [], [], [], pred_src, gt_src)
    seen: dict[int, int] = {}
    for i, rec in enumerate(preds):
        raw_file, lanes, run_time = _fields(rec, PRED_KEYS, pred_src, i)
        if not _is_number(run_time) or run_time < 0:
            raise MetricError(
                f"{pred_src.at(i)}: 'run_time' must be a non-negative finite number (milliseconds), "
                f"got {_show(run_time)}"
            )
        g = gt_index.get(raw_file)
        if g is None:
            raise MetricError(f"{pred_src.at(i)}: raw_file {_show(raw_file)} is not in the ground truth {gt_src.name}")
        if seen.setdefault(g, i) != i:
            raise MetricError(
                f"{pred_src.at(i)}: duplicate prediction for raw_file {_show(raw_file)} "
                f"(first at {pred_src.at(seen[g])})"
            )
        frames.y.append(gt_samples[g])
        frames.gt.append(gt_lanes[g])
        frames.pred.append(lanes)
        frames.run_time.append(float(run_time))
        frames.gt_of.append(g)
    if len(seen) != len(gt_lanes):
        missing = [g for g in range(len(gt_lanes)) if g not in seen]
        raw_file = _fields(gts[missing[0]], GT_KEYS, gt_src, missing[0])[0]
        raise MetricError(
            f"{gt_src.at(missing[0])}: no prediction for raw_file {_show(raw_file)} "
            f"({len(missing)} of {len(gt_lanes)} ground-truth frames have no prediction in {pred_src.name})"
        )
    return frames


# --------------------------------------------------------------------------------------------------- packing


@dataclass
class _Packed:
    """Frames [F] with lanes flattened: GT lanes [NG, S] and predicted lanes [NP, S], frame-major, padded to S."""

    y: np.ndarray  # [F, S] float64
    n_rows: np.ndarray  # [F]
    n_gt: np.ndarray  # [F]
    n_pred: np.ndarray  # [F]
    zero: np.ndarray  # [F] bool, scored (0, 0, 1) by the run-time / too-many-lanes rules
    gt: np.ndarray  # [NG, S] float64
    pred: np.ndarray  # [NP, S] float64
    gt_frame: np.ndarray  # [NG]
    pred_frame: np.ndarray  # [NP]


def _lane_matrix(lanes: list[Sequence[Any]], expected: np.ndarray, width: int, locate: Callable[[int], str],
                 what: str) -> np.ndarray:
    """Lists of numbers -> float64 [N, width] (zero-padded); each must have ``expected[n]`` entries.

    One C-level conversion for all values (``struct`` accepts ints and floats, rejects strings / None like the
    benchmark's comparisons would) and one C-level pass collecting the value types (``struct`` also takes booleans,
    which are refused); a Python loop runs only after a failure, to name the offending record.
    """
    try:
        lengths = np.fromiter(map(len, lanes), np.int64, count=len(lanes))
    except TypeError:
        n = next(n for n, lane in enumerate(lanes) if not isinstance(lane, _SEQUENCE_TYPES))
        raise MetricError(f"{locate(n)} must be a list of numbers, got {type(lanes[n]).__name__}") from None
    wrong = np.flatnonzero(lengths != expected)
    if len(wrong):
        n = int(wrong[0])
        raise MetricError(f"{locate(n)} has {lengths[n]} values but {what} has {expected[n]} h_samples")
    total = int(lengths.sum())
    try:
        values = np.frombuffer(struct.pack(f"{total}d", *itertools.chain.from_iterable(lanes)), np.float64)
    except (struct.error, OverflowError, TypeError, ValueError):
        values = None
    if values is None or not np.isfinite(values).all() or not _PLAIN_NUMBERS.issuperset(
        map(type, itertools.chain.from_iterable(lanes))
    ):
        for n, lane in enumerate(lanes):
            bad = next((v for v in lane if not _is_number(v)), _NO_VALUE)
            if bad is not _NO_VALUE:
                raise MetricError(f"{locate(n)} must contain finite numbers only, got {_show(bad)}")
    if total == len(lanes) * width:
        return values.reshape(len(lanes), width)
    out = np.zeros((len(lanes), width))
    out[np.arange(width)[None, :] < lengths[:, None]] = values
    return out


def _pack(frames: _Frames) -> _Packed:
    n_rows = np.fromiter(map(len, frames.y), np.int64, count=len(frames.y))
    n_gt = np.fromiter(map(len, frames.gt), np.int64, count=len(frames.gt))
    n_pred = np.fromiter(map(len, frames.pred), np.int64, count=len(frames.pred))
    width = int(n_rows.max())
    f_idx = np.arange(len(n_rows))
    gt_frame = np.repeat(f_idx, n_gt)
    pred_frame = np.repeat(f_idx, n_pred)
    gt_off = np.cumsum(n_gt) - n_gt
    pred_off = np.cumsum(n_pred) - n_pred

    def in_gt(n: int) -> str:
        f = gt_frame[n]
        return f"{frames.gt_src.at(frames.gt_of[f])}: ground-truth lane {n - gt_off[f]}"

    def in_pred(n: int) -> str:
        f = pred_frame[n]
        return f"{frames.pred_src.at(f)}: predicted lane {n - pred_off[f]}"

    y = _lane_matrix(frames.y, n_rows, width, lambda f: f"{frames.gt_src.at(frames.gt_of[f])}: 'h_samples'", "it")
    gt = _lane_matrix(list(itertools.chain.from_iterable(frames.gt)), n_rows[gt_frame], width, in_gt, "its frame")
    pred = _lane_matrix(list(itertools.chain.from_iterable(frames.pred)), n_rows[pred_frame], width, in_pred,
                        "the ground truth")
    run_time = np.array(frames.run_time, dtype=np.float64)
    zero = (run_time > MAX_RUN_TIME_MS) | (n_pred > n_gt + MAX_EXTRA_LANES)
    return _Packed(y, n_rows, n_gt, n_pred, zero, gt, pred, gt_frame, pred_frame)


# --------------------------------------------------------------------------------------------------- scoring


def _accuracies_integral(gt: np.ndarray, pred: np.ndarray, y: np.ndarray, thr: np.ndarray,
                         fitted: np.ndarray) -> np.ndarray:
    """Line accuracies [F, G, P] for frames whose x values are all integers in (-16000, 16000).

    Then every |pred - gt| is an integer d, and ``d < thr`` is exactly ``d <= ceil(thr) - 1``: int16 arithmetic.
    The rounding of a fitted slope can only move ``ceil(thr)`` when thr is within rounding of an integer; those
    lanes get sklearn's exact slope first.
    """
    thr = thr.copy()
    near = fitted & (np.abs(thr - np.round(thr)) <= _TIE_RTOL * thr)
    for f, g in zip(*np.nonzero(near)):
        thr[f, g] = _exact_threshold(gt[f, g], y[f])
    limit = np.minimum(np.ceil(thr) - 1.0, np.iinfo(np.int16).max).astype(np.int16)
    gt_x = np.where(gt >= 0, gt, MISSING_X).astype(np.int16)[:, :, None, :]
    pred_x = np.where(pred >= 0, pred, MISSING_X).astype(np.int16)[:, None, :, :]
    hits = np.abs(pred_x - gt_x) <= limit[:, :, None, None]
    return np.count_nonzero(hits, axis=3) / gt.shape[2]  # correct rows / all rows, as the benchmark divides


def _accuracies_general(gt: np.ndarray, pred: np.ndarray, y: np.ndarray, thr: np.ndarray,
                        fitted: np.ndarray) -> np.ndarray:
    """Line accuracies [F, G, P] for any finite x values, in float64.

    A fitted lane with any |pred - gt| within 1e-9 (relative) of its threshold is re-decided with sklearn's exact
    slope.
    """
    gt_x = np.where(gt >= 0, gt, MISSING_X)[:, :, None, :]
    pred_x = np.where(pred >= 0, pred, MISSING_X)[:, None, :, :]
    margin = np.abs(pred_x - gt_x)  # [F, G, P, S]
    margin -= thr[:, :, None, None]  # < 0 exactly when |pred - gt| < thr (IEEE subtraction keeps the sign)
    acc = np.count_nonzero(margin < 0, axis=3) / gt.shape[2]
    if fitted.any():
        close = (np.abs(margin[fitted]) <= _TIE_RTOL * thr[fitted][:, None, None]).any(axis=(1, 2))
        for f, g in zip(*(ix[close] for ix in np.nonzero(fitted))):
            exact = _exact_threshold(gt[f, g], y[f])
            acc[f, g] = np.count_nonzero(np.abs(pred_x[f, 0] - gt_x[f, g, 0]) < exact, axis=1) / gt.shape[2]
    return acc


def _score_group(pk: _Packed, frames: np.ndarray, n_rows: int, n_gt: int, n_pred: int) -> np.ndarray:
    """(accuracy, fp, fn) [F, 3] for scored frames that share their h_sample count and lane counts."""
    n = len(frames)
    best = np.zeros((n, n_gt))
    if n_gt and n_pred:
        gt_lanes = (np.cumsum(pk.n_gt) - pk.n_gt)[frames][:, None] + np.arange(n_gt)
        pred_lanes = (np.cumsum(pk.n_pred) - pk.n_pred)[frames][:, None] + np.arange(n_pred)
        gt = pk.gt[:, :n_rows][gt_lanes]  # [F, G, S]
        pred = pk.pred[:, :n_rows][pred_lanes]  # [F, P, S]
        y = pk.y[frames, :n_rows]  # [F, S]
        thr, fitted = lane_thresholds(gt, y[:, None, :], return_fitted=True)  # [F, G]
        small = np.abs(gt).max(axis=(1, 2)) < 16000
        small &= np.abs(pred).max(axis=(1, 2)) < 16000
        integral = small & (np.floor(gt) == gt).all(axis=(1, 2)) & (np.floor(pred) == pred).all(axis=(1, 2))
        acc = np.empty((n, n_gt, n_pred))
        for part, accuracies in ((integral, _accuracies_integral), (~integral, _accuracies_general)):
            if part.any():
                acc[part] = accuracies(gt[part], pred[part], y[part], thr[part], fitted[part])
        best = acc.max(axis=2)  # each GT lane takes its best prediction
    matched = (best >= PT_THRESH).sum(axis=1).astype(np.float64)
    total = np.zeros(n)
    for g in range(n_gt):  # in GT order, as sum(line_accs)
        total += best[:, g]
    fn = n_gt - matched
    if n_gt > 4:
        fn = np.where(fn > 0, fn - 1.0, fn)
        total -= best.min(axis=1)
    norm = max(min(4.0, float(n_gt)), 1.0)
    out = np.empty((n, 3))
    out[:, 0] = total / norm
    out[:, 1] = (n_pred - matched) / n_pred if n_pred > 0 else 0.0
    out[:, 2] = fn / norm
    return out


def _frame_scores(frames: _Frames) -> np.ndarray:
    """(accuracy, fp, fn) per frame [F, 3], in frame order."""
    pk = _pack(frames)
    out = np.empty((len(pk.n_gt), 3))
    out[pk.zero] = (0.0, 0.0, 1.0)
    live = np.flatnonzero(~pk.zero)
    keys = np.stack([pk.n_rows[live], pk.n_gt[live], pk.n_pred[live]], axis=1)
    groups, group_of = np.unique(keys, axis=0, return_inverse=True)
    for k, (n_rows, n_gt, n_pred) in enumerate(groups.tolist()):
        members = live[group_of.ravel() == k]
        step = max(1, _CHUNK_ELEMENTS // max(1, n_rows * (n_gt * max(n_pred, 1) + n_gt + n_pred)))
        for start in range(0, len(members), step):
            chunk = members[start:start + step]
            out[chunk] = _score_group(pk, chunk, n_rows, n_gt, n_pred)
    return out


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

    Raises :class:`MetricError` ``"<path>:<line>: invalid JSON ..."`` (also for nesting too deep to parse) or
    ``"<path>: cannot read ..."``.
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
                except RecursionError:  # the C parser's depth guard: no record of this format nests like that
                    raise MetricError(f"{path}:{lineno}: invalid JSON (nested too deeply)") from None
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
