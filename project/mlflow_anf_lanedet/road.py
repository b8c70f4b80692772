"""The flat-road lane model and its least-squares solver (pure numpy), shared by decoding and the synthetic data.

A straight or constantly curving road seen by a pinhole camera, in image coordinates::

    x_i(y) = x_c + b_i * t + k / t,    t = y - y_h  (rows below the horizon)

Every lane marking ``i`` shares the horizon row ``y_h``, the vanishing column ``x_c`` and the curvature term ``k``;
only its lateral offset ``b_i`` (the marking's distance from the camera in units of the camera height) is its own.
For a fixed ``y_h`` the model is linear in ``(x_c, k, b_1..b_n)``, so :func:`solve_road` tries every candidate horizon
row, solves the (weighted) linear least-squares problem of each, and keeps the horizon with the smallest residual.

Callers: :func:`mlflow_anf_lanedet.decode.fit_road` (robust refit of decoded lanes: outlier rejection, lanes that
leave the road) and :func:`mlflow_anf_lanedet.synth.geometry.fit_road` (the geometry of real label frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIDGE = 1e-9
"""Added to the normal equations' diagonal so that a degenerate candidate horizon cannot make them singular."""


@dataclass(frozen=True)
class RoadSolution:
    """The best flat-road model for a set of points (see module doc); ``b`` has one offset per lane index."""

    y_h: float
    x_c: float
    k: float
    b: np.ndarray  # (n_lanes,) float64
    rms: float  # weighted RMS residual in pixels at the chosen horizon

    def columns(self, lanes: np.ndarray | list[int], ys: np.ndarray) -> np.ndarray:
        """x of lanes ``lanes`` (indices into ``b``) on rows ``ys`` -> ``[len(lanes), len(ys)]``; rows at or above the
        horizon are evaluated just below it."""
        return road_x(self.x_c, self.b[np.asarray(lanes, dtype=np.int64)][:, None], self.k, ys[None, :] - self.y_h)


def road_x(x_c: float, b: float | np.ndarray, k: float, t: float | np.ndarray) -> np.ndarray:
    """Column of lateral offset ``b`` at ``t`` rows below the horizon (``t`` is clamped to at least 1e-3)."""
    t = np.maximum(t, 1e-3)
    return x_c + b * t + k / t


def solve_road(
    y: np.ndarray,
    x: np.ndarray,
    lane_of: np.ndarray,
    n_lanes: int,
    horizons: np.ndarray,
    weights: np.ndarray | None = None,
    ridge: float = RIDGE,
) -> RoadSolution | None:
    """Weighted least-squares flat-road model of points ``(y, x)`` of lanes ``lane_of`` (0..``n_lanes`` - 1).

    ``horizons`` are the candidate horizon rows (all above every point); ``weights`` per point (default 1). For every
    candidate the normal equations of ``(x_c, k, b_1..b_n)`` are built from per-lane sums (the design matrix is
    block-sparse: ``b_i`` only touches lane ``i``), so the search costs O(candidates x points). Returns None when
    there is no candidate or the equations cannot be solved.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    horizons = np.asarray(horizons, dtype=np.float64)
    if len(horizons) == 0 or len(y) == 0:
        return None
    wt = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    onehot = np.zeros((len(y), n_lanes))
    onehot[np.arange(len(y)), lane_of] = wt  # the weights enter every per-lane sum through the lane indicator
    t = y[None, :] - horizons[:, None]  # [G, m]
    inv = 1.0 / t
    n_cand = len(horizons)
    gram = np.zeros((n_cand, 2 + n_lanes, 2 + n_lanes))
    gram[:, 0, 0] = wt.sum()
    gram[:, 0, 1] = gram[:, 1, 0] = inv @ wt
    gram[:, 1, 1] = (inv * inv) @ wt
    idx = np.arange(2, 2 + n_lanes)
    gram[:, 0, idx] = gram[:, idx, 0] = t @ onehot  # sum of t per lane
    gram[:, 1, idx] = gram[:, idx, 1] = onehot.sum(axis=0)[None, :]  # t * (1/t) = 1 per point
    gram[:, idx, idx] = (t * t) @ onehot
    rhs = np.empty((n_cand, 2 + n_lanes))
    rhs[:, 0] = wt @ x
    rhs[:, 1] = inv @ (wt * x)
    rhs[:, 2:] = (t * x[None, :]) @ onehot
    try:
        sol = np.linalg.solve(gram + ridge * np.eye(2 + n_lanes), rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return None
    sq = np.maximum(wt @ (x * x) - (sol * rhs).sum(axis=1), 0.0) / wt.sum()  # residual sum of squares at the optimum
    best = int(np.argmin(sq))
    return RoadSolution(
        y_h=float(horizons[best]), x_c=float(sol[best, 0]), k=float(sol[best, 1]), b=sol[best, 2:].copy(),
        rms=float(np.sqrt(sq[best])),
    )
