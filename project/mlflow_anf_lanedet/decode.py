"""SCNN probability maps -> TuSimple lanes (one x per ``h_samples`` row), the standard SCNN post-processing.

For every lane slot whose existence probability exceeds ``exist_thr``: smooth the slot's probability map with a
``smooth`` x ``smooth`` box filter (SCNN's 9x9 blur, edges replicated), and on the map row of each h_sample take
the peak along x; the row gets a point when the peak exceeds ``prob_thr``. The peak's x (the middle of a flat top)
is mapped back to the source image and rounded. Lanes with fewer than ``min_points`` points are dropped. Lanes
come out in slot order, which is left to right (see ``mlflow_anf_lanedet.data.tusimple.lane_slots``).

Coordinates use pixel centres, as ``mlflow_anf_lanedet.data.tusimple.build_targets`` draws them: source pixel ``x``
is at map position ``(x + 0.5) * w / W - 0.5``. Accepts numpy arrays or torch tensors (converted on the CPU; torch is never
imported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlflow_anf_lanedet.road import solve_road
from mlflow_anf_lanedet.tusimple_format import IMAGE_HW, IMAGE_W

MISSING = -2
"""x value of a row without a point (TuSimple format)."""


LaneFit = Literal[0, 1, 2, 3, "road"]
"""How decoded lanes are smoothed: 0 = the points as found (standard SCNN), 1-3 = a robust polynomial of that degree
per lane (:func:`refit_lane`), ``"road"`` = all lanes of a frame jointly to the flat-road model (:func:`fit_road`,
falling back to degree 1 per lane where the model does not hold)."""


def fit_options(lane_fit: LaneFit) -> dict[str, Any]:
    """``fit_degree`` / ``road_fit`` arguments of the decode functions for a ``lane_fit`` setting."""
    if lane_fit == "road":
        return {"fit_degree": 1, "road_fit": True}
    return {"fit_degree": int(lane_fit), "road_fit": False}


def parse_lane_fit(value: Any, field: str = "lane_fit") -> LaneFit:
    """Accept 0-3 (also as "1" or 1.0, as MLproject params arrive) or "road"; anything else names ``field``."""
    text = str(value).strip().lower()
    if text == "road":
        return "road"
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if number in (0, 1, 2, 3):
        return int(number)  # type: ignore[return-value]
    raise ValueError(f"{field}: expected 0, 1, 2, 3 or road, got {value!r}")


class DecodeError(ValueError):
    """Inputs that cannot be decoded (wrong shapes, NaNs, values that are not probabilities, rows off the image)."""


def auto_smooth(map_w: int, src_w: int = IMAGE_W, line_width: float = 15.0) -> int:
    """The box-filter size that suits a probability map ``map_w`` wide: the largest odd size not wider than a lane
    marking drawn ``line_width`` source pixels wide (the training targets' width). A wider filter dilutes a thin lane
    below the threshold at small input sizes; 9, the SCNN default, is right for 800-wide maps."""
    width = max(1, round(line_width * map_w / src_w))
    return width if width % 2 else max(1, width - 1)


class DecodeConfig(BaseModel):
    """Post-processing parameters (defaults: the usual SCNN TuSimple settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    src_hw: tuple[int, int] = Field(IMAGE_HW, description="(height, width) of the source image that h_samples "
                                    "and the output x refer to")
    exist_thr: float = Field(0.5, ge=0.0, le=1.0, description="a lane slot is decoded when its existence "
                             "probability is above this")
    prob_thr: float = Field(0.3, ge=0.0, le=1.0, description="a row gets a point when the smoothed lane "
                            "probability at its peak is above this")
    smooth: int = Field(9, ge=1, description="odd box-filter size in map pixels applied before the peak search; "
                        "1 = no smoothing")
    min_points: int = Field(2, ge=1, description="lanes with fewer points are dropped")
    fit_degree: int = Field(0, ge=0, le=3, description="0: the points as found (standard SCNN). 1-3: replace each "
                            "lane by a robust polynomial x(y) of this degree fitted to its points (outliers "
                            "rejected), over the rows it spans, which also fills gaps inside it")
    road_fit: bool = Field(False, description="fit the lanes of a frame jointly to the flat-road model (see "
                           ":func:`fit_road`); frames where it does not hold fall back to fit_degree per lane")

    @field_validator("src_hw")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) <= 0:
            raise ValueError(f"must be positive, got {value}")
        return value

    @field_validator("smooth")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd, got {value}")
        return value


def _as_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().to("cpu").float().numpy()
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{name}: not a numeric array ({exc})") from None
    if not np.isfinite(arr).all():
        raise DecodeError(f"{name}: contains NaN or infinite values")
    return arr


def _check_probabilities(arr: np.ndarray, name: str) -> None:
    lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise DecodeError(f"{name}: expected probabilities in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                          "(apply softmax / sigmoid to the network outputs first)")


def _map_rows(h_samples: Sequence[float], cfg: DecodeConfig, map_h: int) -> np.ndarray:
    """Map row (pixel containing the centre of each source row) for every h_sample."""
    try:
        ys = np.asarray(h_samples, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"h_samples: not a list of numbers ({exc})") from None
    if ys.ndim != 1 or len(ys) == 0:
        raise DecodeError(f"h_samples: expected a non-empty list of y values, got shape {ys.shape}")
    src_h = cfg.src_hw[0]
    outside = np.flatnonzero(~((ys >= 0) & (ys < src_h)))
    if len(outside):
        raise DecodeError(f"h_samples[{outside[0]}] = {h_samples[outside[0]]} is outside the image rows [0, {src_h})")
    return np.minimum(np.floor((ys + 0.5) * map_h / src_h), map_h - 1).astype(np.int64)


def _box_rows(maps: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """Box-filtered values of ``maps`` [K, H, W] on ``rows`` only -> [K, R, W] float64 (edges replicated)."""
    k = size // 2
    if k == 0:
        return maps[:, rows, :].astype(np.float64)
    window = np.clip(rows[:, None] + np.arange(-k, k + 1), 0, maps.shape[1] - 1)  # [R, size]
    vertical = maps[:, window, :].mean(axis=2, dtype=np.float64)  # [K, R, W]
    padded = np.pad(vertical, ((0, 0), (0, 0), (k + 1, k)), mode="edge")
    padded[..., 0] = 0.0
    csum = np.cumsum(padded, axis=-1)
    return (csum[..., size:] - csum[..., :-size]) / size


def _decode_item(
    lane_prob: np.ndarray, exist: np.ndarray, rows: np.ndarray, cfg: DecodeConfig, ys: Sequence[float] = ()
) -> list[list[int]]:
    keep = np.flatnonzero(exist > cfg.exist_thr)
    if len(keep) == 0:
        return []
    width = lane_prob.shape[2]
    smoothed = _box_rows(lane_prob[keep], rows, cfg.smooth)  # [K, R, W]
    peak = smoothed.max(axis=-1)
    first = smoothed.argmax(axis=-1)
    # Middle of the flat top that starts at the first maximum (blurred thick lanes have plateaus).
    col = np.arange(width)
    below = (col > first[..., None]) & (smoothed < peak[..., None] - 1e-9)
    end = np.where(below.any(axis=-1), below.argmax(axis=-1), width)  # first column past the plateau
    x_map = (first + end - 1) / 2.0
    src_w = cfg.src_hw[1]
    x_src = np.clip(np.rint((x_map + 0.5) * src_w / width - 0.5), 0, src_w - 1).astype(np.int64)
    lanes = np.where(peak > cfg.prob_thr, x_src, MISSING)
    fitted = fit_road(lanes, ys, src_w, fallback_degree=cfg.fit_degree, weights=peak**2) if cfg.road_fit else None
    if fitted is not None:
        lanes = fitted
    elif cfg.fit_degree:
        lanes = np.stack([refit_lane(lane, ys, cfg.fit_degree, src_w) for lane in lanes]) if len(lanes) else lanes
    return [lane.tolist() for lane in lanes if np.count_nonzero(lane != MISSING) >= cfg.min_points]


def refit_lane(lane: np.ndarray, ys: np.ndarray, degree: int, src_w: int, iterations: int = 3) -> np.ndarray:
    """A lane's points replaced by a polynomial ``x(y)`` fitted to them, rejecting points further than
    ``max(15 px, 3 x median residual)`` from the fit (a row whose peak jumped to a neighbouring marking), evaluated
    on every row between the first and last found point (a rejected row loses its x, not the lane's extent). Lanes
    with fewer than 4 points are returned unchanged."""
    found = lane != MISSING
    if np.count_nonzero(found) < 4:
        return lane
    ys = np.asarray(ys, dtype=np.float64)
    xs = lane.astype(np.float64)
    keep = found.copy()
    for _ in range(iterations):
        coef = np.polyfit(ys[keep], xs[keep], min(degree, int(keep.sum()) - 2))
        residual = np.abs(np.polyval(coef, ys) - xs)
        nxt = found & (residual < max(15.0, 3.0 * float(np.median(residual[keep]))))
        if nxt.sum() < 4 or (nxt == keep).all():
            break
        keep = nxt
    coef = np.polyfit(ys[keep], xs[keep], min(degree, int(keep.sum()) - 2))
    span = (ys >= ys[found].min()) & (ys <= ys[found].max())
    fitted = np.rint(np.polyval(coef, ys))
    return np.where(span & (fitted >= 0) & (fitted < src_w), fitted, MISSING).astype(np.int64)


def fit_road(
    lanes: np.ndarray,
    ys: Sequence[float],
    src_w: int,
    fallback_degree: int = 0,
    weights: np.ndarray | None = None,
    iterations: int = 5,
    max_rms: float = 25.0,
) -> np.ndarray | None:
    """All lanes of a frame refitted jointly to the flat-road model ``x_i(y) = x_c + b_i t + k / t``, ``t = y - y_h``.

    A straight or constantly curving road seen by a pinhole camera: every marking shares the horizon row ``y_h``, the
    vanishing column ``x_c`` and the curvature term ``k``; only its lateral offset ``b_i`` is its own (the hyperbola
    lane model; our synthetic frames are drawn from it, and it reproduces the real TuSimple labels of clip 0313 to
    Accuracy 0.998). Fitting the lanes together lets the well-found ones carry a lane through the rows where its own
    points are missing or wandered to a crack or a shadow edge. ``y_h`` is found by a 1-D search, the rest by linear
    least squares (both in :func:`mlflow_anf_lanedet.road.solve_road`, which the synthetic generator fits real labels
    with too); points further than ``max(15 px, 3 x median residual)`` from their lane's fit are rejected and the
    fit repeated. A lane whose absence halves the median residual, or that loses half its points to the rejection,
    does not follow the road (a kerb, a merging ramp, a misdetection) and leaves the joint fit, as do lanes with fewer
    than 4 points: those get :func:`refit_lane` of ``fallback_degree`` (0 = unchanged). ``weights`` [K, R] (decoding
    passes the squared peak probability) let confidently found rows count more than rows guessed across a gap. Each
    lane is evaluated between its first and last found point (a rejected row loses its x, not the lane's extent).

    ``lanes`` [K, R] (``-2`` = no point) at rows ``ys``. Returns the refitted lanes, or None when the model does not
    apply: fewer than two lanes to fit it to, or an RMS residual above ``max_rms`` pixels (scaled to 1280 wide).
    """
    lanes = np.asarray(lanes, dtype=np.int64)
    ys = np.asarray(ys, dtype=np.float64)
    found = lanes != MISSING
    counts = found.sum(axis=1)
    joint = [i for i in range(len(lanes)) if counts[i] >= 4]
    scale = src_w / IMAGE_W
    keep = found.copy()
    w = np.ones(lanes.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    # a whole lane off the road (another vanishing point) drags every lane with it in least squares: leave out the
    # lane whose absence at least halves the median residual, as long as two remain (a few stray rows of a lane
    # barely move the median; the rejection below deals with them)
    while len(joint) > 2:
        typical = _typical_residual(lanes, keep, joint, ys, scale, w)
        trials = [(_typical_residual(lanes, keep, [j for j in joint if j != i], ys, scale, w), i) for i in joint]
        best, worst = min(trials)
        if best > 0.5 * typical or typical < 4.0 * scale:
            break
        joint.remove(worst)
    for _ in range(iterations):
        if len(joint) < 2:
            return None
        y_h, model, rms = _road_solve(lanes, keep, joint, ys, scale, w)
        residual = np.abs(model - lanes)
        nxt = keep.copy()
        for i in joint:
            limit = max(15.0 * scale, 3.0 * float(np.median(residual[i][keep[i]])))
            nxt[i] = found[i] & (residual[i] < limit)
        off_road = [i for i in joint if nxt[i].sum() < max(3, counts[i] / 2)]
        if off_road:
            joint = [i for i in joint if i not in off_road]
            continue
        if (nxt[joint] == keep[joint]).all():
            break
        keep = nxt
    else:
        if len(joint) < 2:
            return None
        y_h, model, rms = _road_solve(lanes, keep, joint, ys, scale, w)
    if rms > max_rms * scale:
        return None
    out = lanes.copy()
    for i in range(len(lanes)):
        if i not in joint:
            if fallback_degree and counts[i]:
                out[i] = refit_lane(lanes[i], ys, fallback_degree, src_w)
            continue
        rows = ys[found[i]]  # the lane's extent is where it was found; rejected rows only lose their x
        span = (ys >= rows.min()) & (ys <= rows.max()) & (ys > y_h)
        x_fit = np.rint(model[i])
        out[i] = np.where(span & (x_fit >= 0) & (x_fit < src_w), x_fit, MISSING)
    return out


def _typical_residual(
    lanes: np.ndarray, keep: np.ndarray, joint: list[int], ys: np.ndarray, scale: float, w: np.ndarray
) -> float:
    """Median absolute residual of the kept points of the ``joint`` lanes under their least-squares road model."""
    model = _road_solve(lanes, keep, joint, ys, scale, w)[1]
    rows = keep[joint]
    return float(np.median(np.abs(model[joint] - lanes[joint])[rows]))


def _road_solve(
    lanes: np.ndarray, keep: np.ndarray, joint: list[int], ys: np.ndarray, scale: float, w: np.ndarray
) -> tuple[float, np.ndarray, float]:
    """Least-squares road model (:func:`mlflow_anf_lanedet.road.solve_road`) on the kept points of the ``joint``
    lanes, horizon searched from 300 to 4 rows (at 1280 wide) above the highest point in steps of 2 -> (y_h, x of
    every lane [K, R] (0 for lanes not in ``joint``), RMS). An unsolvable system gives an infinite RMS."""
    lane_of, row_of = np.nonzero(keep[joint])
    y = ys[row_of]
    x = lanes[joint][lane_of, row_of].astype(np.float64)
    horizons = np.arange(y.min() - 300.0 * scale, y.min() - 4.0 * scale, 2.0 * scale)
    fit = solve_road(y, x, lane_of, len(joint), horizons, weights=w[joint][lane_of, row_of])
    model = np.zeros(lanes.shape, dtype=np.float64)
    if fit is None:
        return float("nan"), model, float("inf")
    model[joint] = fit.columns(np.arange(len(joint)), ys)
    return fit.y_h, model, fit.rms


def decode_batch(
    prob: Any,
    exist_prob: Any,
    h_samples: Sequence[float] | Sequence[Sequence[float]],
    src_hw: tuple[int, int] = IMAGE_HW,
    exist_thr: float = 0.5,
    prob_thr: float = 0.3,
    smooth: int = 9,
    min_points: int = 2,
    fit_degree: int = 0,
    road_fit: bool = False,
) -> list[list[list[int]]]:
    """Decode a batch: ``prob`` [B, 1 + L, H, W] softmax probabilities (channel 0 = background) and ``exist_prob``
    [B, L] (numpy or torch) -> per item, a list of lanes, each one x per h_sample (``-2`` = no point).

    ``h_samples`` is one list of source-image rows for the whole batch, or one list per item. Parameters as in
    :class:`DecodeConfig`. Raises :class:`DecodeError` for bad inputs and pydantic's ``ValidationError`` for bad
    parameters.
    """
    cfg = DecodeConfig(src_hw=src_hw, exist_thr=exist_thr, prob_thr=prob_thr, smooth=smooth, min_points=min_points,
                       fit_degree=fit_degree, road_fit=road_fit)
    probs = _as_array(prob, "prob")
    exists = _as_array(exist_prob, "exist_prob")
    if probs.ndim != 4 or probs.shape[1] < 2 or min(probs.shape[2:]) < 1:
        raise DecodeError(f"prob: expected shape [B, 1 + lanes, H, W], got {list(probs.shape)}")
    if exists.shape != (probs.shape[0], probs.shape[1] - 1):
        raise DecodeError(f"exist_prob: expected shape {[probs.shape[0], probs.shape[1] - 1]} for prob of shape "
                          f"{list(probs.shape)}, got {list(exists.shape)}")
    _check_probabilities(probs, "prob")
    _check_probabilities(exists, "exist_prob")
    per_item = len(h_samples) > 0 and isinstance(h_samples[0], Sequence | np.ndarray)
    if per_item and len(h_samples) != probs.shape[0]:
        raise DecodeError(f"h_samples: {len(h_samples)} lists for a batch of {probs.shape[0]}")
    map_h = probs.shape[2]
    shared = None if per_item else _map_rows(h_samples, cfg, map_h)
    out = []
    for b in range(probs.shape[0]):
        ys = h_samples[b] if per_item else h_samples
        rows = _map_rows(ys, cfg, map_h) if per_item else shared
        out.append(_decode_item(probs[b, 1:], exists[b], rows, cfg, ys))
    return out


def decode_lanes(
    prob: Any,
    exist_prob: Any,
    h_samples: Sequence[float],
    src_hw: tuple[int, int] = IMAGE_HW,
    exist_thr: float = 0.5,
    prob_thr: float = 0.3,
    smooth: int = 9,
    min_points: int = 2,
    fit_degree: int = 0,
    road_fit: bool = False,
) -> list[list[int]]:
    """Decode one image: ``prob`` [1 + L, H, W] softmax probabilities at network resolution, ``exist_prob`` [L]
    -> lanes in TuSimple format (x per ``h_samples`` row in ``src_hw`` coordinates, ``-2`` = no point)."""
    probs = _as_array(prob, "prob")
    exists = _as_array(exist_prob, "exist_prob")
    if probs.ndim != 3:
        raise DecodeError(f"prob: expected shape [1 + lanes, H, W], got {list(probs.shape)}")
    if exists.ndim != 1:
        raise DecodeError(f"exist_prob: expected shape [lanes], got {list(exists.shape)}")
    return decode_batch(probs[None], exists[None], h_samples, src_hw=src_hw, exist_thr=exist_thr,
                        prob_thr=prob_thr, smooth=smooth, min_points=min_points, fit_degree=fit_degree,
                        road_fit=road_fit)[0]
