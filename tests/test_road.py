"""mlflow_anf_lanedet.road: the flat-road solver shared by decoding and the synthetic generator."""

from __future__ import annotations

import numpy as np

from mlflow_anf_lanedet.road import road_x, solve_road

Y_H, X_C, K, B = 250.0, 640.0, 3000.0, np.array([-1.6, -0.4, 0.8, 2.0])


def _points(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lane_of = np.repeat(np.arange(len(B)), len(rows))
    y = np.tile(rows, len(B)).astype(np.float64)
    return y, road_x(X_C, B[lane_of], K, y - Y_H), lane_of


def test_recovers_the_model_on_the_candidate_grid() -> None:
    y, x, lane_of = _points(np.arange(300, 720, 10))
    fit = solve_road(y, x, lane_of, len(B), np.arange(150.0, 296.0, 1.0), ridge=0.0)
    assert fit is not None and fit.y_h == Y_H and fit.rms < 1e-6
    assert abs(fit.x_c - X_C) < 1e-6 and abs(fit.k - K) < 1e-3 and np.allclose(fit.b, B)
    assert np.allclose(fit.columns([0, 3], np.array([400.0])), road_x(X_C, B[[0, 3], None], K, 150.0))


def test_weights_let_good_points_outvote_a_bad_one() -> None:
    y, x, lane_of = _points(np.arange(300, 720, 10))
    x = x.copy()
    x[5] += 80.0  # one point on another marking
    weights = np.ones(len(x))
    weights[5] = 1e-6
    fit = solve_road(y, x, lane_of, len(B), np.arange(150.0, 296.0, 2.0), weights=weights)
    assert fit is not None and fit.y_h == Y_H and np.allclose(fit.b, B, atol=1e-3)
    unweighted = solve_road(y, x, lane_of, len(B), np.arange(150.0, 296.0, 2.0))
    assert unweighted is not None and unweighted.rms > fit.rms


def test_no_candidate_or_no_point_gives_none() -> None:
    y, x, lane_of = _points(np.arange(300, 720, 10))
    assert solve_road(y, x, lane_of, len(B), np.array([])) is None
    assert solve_road(y[:0], x[:0], lane_of[:0], len(B), np.arange(150.0, 296.0)) is None
