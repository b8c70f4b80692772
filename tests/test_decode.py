"""mlflow_anf_lanedet.decode: probability maps drawn from known lanes decode back to those lanes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest

from mlflow_anf_lanedet.decode import DecodeConfig, DecodeError, decode_batch, decode_lanes
from mlflow_anf_lanedet.metric import evaluate, evaluate_frame

SRC_HW = (720, 1280)
MAP_HW = (288, 512)
H56 = list(range(160, 720, 10))
H48 = list(range(240, 720, 10))


def lane_fn(x_top: float, slope: float, curve: float = 0.0, top: float = 295.0, bottom: float = 719.0):
    """x(y) = x_top + slope * d + curve * d^2 with d = y - top, for ``top <= y <= bottom`` (source pixels);
    None outside that span or outside the image."""
    def x_at(y: float) -> float | None:
        if not top <= y <= bottom:
            return None
        x = x_top + slope * (y - top) + curve * (y - top) ** 2
        return x if 0 <= x < SRC_HW[1] else None
    return x_at


def draw(lanes: list, exist=None, half_width: float = 3.0, fg: float = 0.9, map_hw=MAP_HW):
    """Softmax-like maps [1 + L, h, w]: class i+1 has ``fg`` within ``half_width`` map pixels of lane i (later
    lanes drawn over earlier ones where they meet), the background has the rest."""
    h, w = map_hw
    mask = np.zeros((h, w), dtype=np.int64)
    cols = np.arange(w)
    for i, x_at in enumerate(lanes):
        for r in range(h):
            x = x_at((r + 0.5) * SRC_HW[0] / h - 0.5)  # source y of the map row's centre
            if x is not None:
                u = (x + 0.5) * w / SRC_HW[1] - 0.5
                mask[r, np.abs(cols - u) <= half_width] = i + 1
    prob = np.eye(5, dtype=np.float32)[mask].transpose(2, 0, 1) * fg
    prob[0] = 1.0 - prob[1:].sum(axis=0)
    exist = np.array([1.0] * len(lanes) + [0.0] * (4 - len(lanes)) if exist is None else exist, dtype=np.float32)
    return prob, exist


def tusimple(x_at, h_samples=H56) -> list[int]:
    xs = [x_at(y) for y in h_samples]
    return [int(round(x)) if x is not None else -2 for x in xs]


# Four lanes left to right, 30-50 px apart at their tops (ends between h_sample rows, as real lanes end anywhere).
FOUR = [lane_fn(600, -1.3, top=295), lane_fn(630, -0.45, top=287), lane_fn(680, 0.5, 3e-4, top=285),
        lane_fn(720, 1.3, top=318, bottom=605)]


def test_known_lanes_round_trip() -> None:
    prob, exist = draw(FOUR)
    gt = [tusimple(f) for f in FOUR]
    lanes = decode_lanes(prob, exist, H56)
    assert len(lanes) == 4
    for got, want in zip(lanes, gt):  # slot order = left to right
        assert [x >= 0 for x in got] == [x >= 0 for x in want]
        rows = [i for i, x in enumerate(want) if x >= 0]
        errors = [abs(got[i] - want[i]) for i in rows]
        assert max(errors[1:-1]) <= 2  # 1 map pixel = 2.5 source pixels
        # At a lane's ends the 9x9 box sees only the lane on one side, which pulls the peak along the lane.
        assert max(errors[0], errors[-1]) <= 8
    assert evaluate_frame(lanes, gt, H56) == (1.0, 0.0, 0.0)


def test_flat_topped_peaks_decode_to_their_middle() -> None:
    prob, exist = draw([lane_fn(640.0, 0.0, top=0)], half_width=8.0)  # wider than the 9-pixel box: a flat top
    for smooth in (1, 9):
        (lane,) = decode_lanes(prob, exist, H56, smooth=smooth)
        assert {x for x in lane if x >= 0} == {640}


def test_existence_threshold_selects_slots() -> None:
    prob, _ = draw(FOUR)
    lanes = decode_lanes(prob, [0.9, 0.4, 0.51, 0.5], H56)  # strictly above 0.5
    assert lanes == [decode_lanes(prob, [1, 0, 0, 0], H56)[0], decode_lanes(prob, [0, 0, 1, 0], H56)[0]]
    assert decode_lanes(prob, [0.9, 0.4, 0.51, 0.5], H56, exist_thr=0.3) == decode_lanes(prob, [1, 1, 1, 1], H56)


def test_probability_threshold() -> None:
    prob, exist = draw(FOUR[:1], fg=0.25)
    assert decode_lanes(prob, exist, H56, smooth=1) == []
    assert len(decode_lanes(prob, exist, H56, smooth=1, prob_thr=0.2)) == 1


def test_lanes_with_too_few_points_are_dropped() -> None:
    prob, exist = draw([lane_fn(600, 0.2, top=395, bottom=405)])  # covers the h_sample row 400 only
    assert decode_lanes(prob, exist, H56, smooth=1) == []
    (lane,) = decode_lanes(prob, exist, H56, smooth=1, min_points=1)
    assert [i for i, x in enumerate(lane) if x >= 0] == [H56.index(400)]


def test_empty_maps_give_no_lanes() -> None:
    prob = np.zeros((5, *MAP_HW), dtype=np.float32)
    prob[0] = 1.0
    assert decode_lanes(prob, np.ones(4), H56) == []
    assert decode_lanes(prob, np.zeros(4), H56) == []


def test_batch_of_torch_tensors_matches_single_decodes() -> None:
    import torch
    torch.set_num_threads(1)
    items = [draw(FOUR), draw(FOUR[1:3]), draw([])]
    prob = torch.from_numpy(np.stack([p for p, _ in items]))
    exist = torch.from_numpy(np.stack([e for _, e in items]))
    expected = [decode_lanes(p, e, H56) for p, e in items]
    assert decode_batch(prob, exist, H56) == expected
    assert [len(x) for x in expected] == [4, 2, 0]
    per_item = decode_batch(prob, exist, [H56, H48, H56])  # one h_samples list per image
    assert per_item[1] == decode_lanes(*items[1], H48)
    assert all(len(lane) == 48 for lane in per_item[1])


@pytest.mark.parametrize(
    ("prob", "exist", "h_samples", "message"),
    [
        (np.full((5, 8, 8), np.nan), np.ones(4), H56, "prob: contains NaN"),
        (np.full((5, 8, 8), 3.0), np.ones(4), H56, "expected probabilities in [0, 1]"),
        (np.zeros((8, 8)), np.ones(4), H56, "prob: expected shape [1 + lanes, H, W]"),
        (np.zeros((5, 8, 8)), np.ones(3), H56, "exist_prob: expected shape [1, 4]"),
        (np.zeros((5, 8, 8)), np.array([1, 1, np.inf, 1]), H56, "exist_prob: contains NaN or infinite"),
        (np.zeros((5, 8, 8)), np.ones(4), [160, 170, 720], "h_samples[2] = 720 is outside the image rows [0, 720)"),
        (np.zeros((5, 8, 8)), np.ones(4), [-10, 170], "h_samples[0] = -10 is outside"),
        (np.zeros((5, 8, 8)), np.ones(4), [], "h_samples: expected a non-empty list"),
        (np.zeros((5, 8, 8)), np.ones(4), ["a"], "h_samples: not a list of numbers"),
    ],
    ids=["nan", "logits", "ndim", "exist-shape", "exist-inf", "row-below", "row-above", "no-rows", "row-type"],
)
def test_bad_inputs_raise_clear_errors(prob, exist, h_samples, message) -> None:
    with pytest.raises(DecodeError) as info:
        decode_lanes(prob, exist, h_samples)
    assert message in str(info.value)


def test_bad_parameters_name_the_field() -> None:
    prob, exist = draw(FOUR)
    with pytest.raises(pydantic.ValidationError, match="smooth"):
        decode_lanes(prob, exist, H56, smooth=4)
    with pytest.raises(pydantic.ValidationError, match="prob_thr"):
        decode_lanes(prob, exist, H56, prob_thr=1.5)
    with pytest.raises(DecodeError, match="2 lists for a batch of 1"):
        decode_batch(prob[None], exist[None], [H56, H56])
    with pytest.raises(pydantic.ValidationError, match="fit_degree"):
        decode_lanes(prob, exist, H56, fit_degree=4)
    assert DecodeConfig().model_dump() == {"src_hw": (720, 1280), "exist_thr": 0.5, "prob_thr": 0.3, "smooth": 9,
                                          "min_points": 2, "fit_degree": 0, "road_fit": False}


@pytest.fixture(scope="module")
def label_round_trip(tusimple_fixtures: Path):
    """~200 real labels -> build_targets mask at network size -> one-hot probabilities (decoded per test)."""
    from mlflow_anf_lanedet.data.tusimple import build_targets, read_labels

    labels = read_labels(tusimple_fixtures / "label_data_0313.json")
    rng = np.random.default_rng(7)
    chosen = [labels[i] for i in sorted(rng.choice(len(labels), 200, replace=False))]
    eye = np.eye(5, dtype=np.float32)
    items = []
    for label in chosen:
        mask, exist = build_targets(label, MAP_HW)
        items.append((label, eye[mask].transpose(2, 0, 1), exist))
    return items


@pytest.mark.parametrize(("prob_thr", "min_accuracy"), [(0.5, 0.995), (0.3, 0.975)])
def test_label_targets_decode_back_to_the_label(label_round_trip, prob_thr: float, min_accuracy: float) -> None:
    """label -> build_targets -> one-hot prob -> decode -> official metric against the label.

    GT lanes without 2 visible points are left out of the reference: the benchmark only "matches" such an all -2
    lane with an all -2 prediction, which no mask can encode. Drawn lanes have round caps and the 9x9 blur spreads
    them, so at the standard prob_thr 0.3 a lane end often gains one h_sample row (a point where the label has
    none counts as wrong); at 0.5 that overshoot is cut off.
    """
    preds, gts = [], []
    for label, prob, exist in label_round_trip:
        lanes = decode_lanes(prob, exist, label.h_samples, prob_thr=prob_thr)
        preds.append({"raw_file": label.raw_file, "lanes": lanes, "run_time": 1.0})
        visible = [lane for lane in label.lanes if sum(x >= 0 for x in lane) >= 2]
        gts.append({"raw_file": label.raw_file, "lanes": visible, "h_samples": label.h_samples})
    result = evaluate(preds, gts)
    assert result["Accuracy"] >= min_accuracy, result
    assert result["FP"] == 0.0, result
    assert result["FN"] <= 0.005, result  # 1 lane in 200 frames: two labelled lanes drawn over one another


# ----------------------------------------------------------------------------------------------- robust lane refit
def test_refit_lane_rejects_a_jumped_row_and_fills_gaps_without_extrapolating() -> None:
    import numpy as np

    from mlflow_anf_lanedet.decode import MISSING, refit_lane

    ys = np.arange(160, 720, 10)
    truth = np.rint(0.002 * (ys - 160) ** 2 + 0.3 * ys + 200).astype(np.int64)
    lane = truth.copy()
    lane[:4] = MISSING  # the lane starts at row 200
    lane[10] = truth[10] + 180  # one row's peak jumped to the neighbouring marking
    lane[30] = MISSING  # a gap inside the lane
    fitted = refit_lane(lane, ys, 2, 1280)
    assert (fitted[:4] == MISSING).all()  # no extrapolation above the first point
    assert np.abs(fitted[4:] - truth[4:]).max() <= 1  # outlier replaced, gap filled, curve kept


def test_refit_lane_leaves_short_lanes_and_clips_to_the_image() -> None:
    import numpy as np

    from mlflow_anf_lanedet.decode import MISSING, refit_lane

    ys = np.arange(160, 720, 10)
    short = np.full(len(ys), MISSING)
    short[[40, 41, 42]] = [100, 104, 108]
    assert (refit_lane(short, ys, 2, 1280) == short).all()
    steep = np.rint(4.0 * (ys - 160)).astype(np.int64)  # leaves a 1280-wide image half-way down
    steep[steep >= 1280] = MISSING
    fitted = refit_lane(steep, ys, 1, 1280)
    assert ((fitted == MISSING) | ((fitted >= 0) & (fitted < 1280))).all()


def test_decode_with_fit_degree_matches_plain_decode_on_clean_maps() -> None:
    import numpy as np

    from mlflow_anf_lanedet.decode import decode_lanes

    h, w = 72, 128
    prob = np.zeros((5, h, w), dtype=np.float32)
    prob[0] = 1.0
    for r in range(h):
        c = 20 + r // 2
        prob[0, r, c - 1 : c + 2], prob[2, r, c - 1 : c + 2] = 0.0, 1.0
    rows = list(range(160, 720, 10))
    plain = decode_lanes(prob, np.array([0, 1, 0, 0.0]), rows, smooth=3)
    fitted = decode_lanes(prob, np.array([0, 1, 0, 0.0]), rows, smooth=3, fit_degree=1)
    assert len(plain) == len(fitted) == 1
    assert max(abs(a - b) for a, b in zip(plain[0], fitted[0]) if a >= 0) <= 10


# ----------------------------------------------------------------------------------------------- joint road-model fit
def _road_lanes(ys: np.ndarray, y_h: float = 250.0, x_c: float = 660.0, k: float = 900.0,
                b: tuple[float, ...] = (-2.6, -0.9, 0.8, 2.5), first: float = 280.0) -> np.ndarray:
    from mlflow_anf_lanedet.decode import MISSING

    t = np.maximum(ys - y_h, 1e-3)
    x = np.rint(x_c + np.asarray(b)[:, None] * t[None, :] + k / t[None, :])
    return np.where((ys >= first) & (x >= 0) & (x < 1280), x, MISSING).astype(np.int64)


def test_fit_road_carries_a_lane_through_a_gap_and_off_a_crack() -> None:
    from mlflow_anf_lanedet.decode import MISSING, fit_road

    ys = np.arange(160, 720, 10, dtype=np.float64)
    truth = _road_lanes(ys)
    found = truth.copy()
    found[1, 35:45] = MISSING  # the ego-left lane lost in a dash gap near the car ...
    found[1, 45:50] = truth[1, 45:50] - 60  # ... then its peak follows a crack 60 px to the left
    found[2, 20:24] += 25  # a few rows of the right lane pulled by a shadow edge
    fitted = fit_road(found, ys, 1280)
    assert fitted is not None
    for lane in range(4):
        span = truth[lane] != MISSING
        assert (fitted[lane][~span] == MISSING).all()  # nothing above a lane's first point
        got = span & (fitted[lane] != MISSING)
        assert np.abs(fitted[lane][got] - truth[lane][got]).max() <= 2
    assert np.count_nonzero(fitted[1] != MISSING) == np.count_nonzero(truth[1] != MISSING)  # the gap is filled
    # a per-lane line cannot do this: the crack rows pull the bottom of the lane away
    from mlflow_anf_lanedet.decode import refit_lane

    single = refit_lane(found[1], ys, 1, 1280)
    assert np.abs(single[45:50] - truth[1, 45:50]).max() > 10


def test_fit_road_declines_where_the_model_does_not_hold() -> None:
    from mlflow_anf_lanedet.decode import MISSING, fit_road

    ys = np.arange(160, 720, 10, dtype=np.float64)
    truth = _road_lanes(ys)
    one = truth.copy()
    one[1:] = MISSING
    assert fit_road(one, ys, 1280) is None  # one lane fixes no shared horizon
    rng = np.random.default_rng(0)
    noise = np.where(truth != MISSING, rng.integers(0, 1280, truth.shape), MISSING)
    assert fit_road(noise, ys, 1280) is None  # no road in these points: keep them for the per-lane fallback


def test_road_model_reproduces_the_real_labels(tusimple_fixtures: Path) -> None:
    """The flat-road model is a prior real highway lanes satisfy: refitting the real 0313 labels changes the official
    score by less than 1 %. (Synthetic frames are drawn from it, so this is the check that matters.)"""
    from mlflow_anf_lanedet.data.tusimple import read_labels
    from mlflow_anf_lanedet.decode import fit_road

    labels = read_labels(tusimple_fixtures / "label_data_0313.json")[::3]
    preds = []
    for label in labels:
        fitted = fit_road(np.asarray(label.lanes), label.h_samples, 1280)
        lanes = fitted.tolist() if fitted is not None else label.lanes
        preds.append({"raw_file": label.raw_file, "lanes": lanes, "run_time": 1.0})
    result = evaluate(preds, labels)
    assert result["Accuracy"] >= 0.99 and result["FP"] <= 0.006 and result["FN"] <= 0.006, result


def test_road_decode_on_label_masks(label_round_trip) -> None:
    preds = []
    for label, prob, exist in label_round_trip:
        preds.append({"raw_file": label.raw_file, "run_time": 1.0,
                      "lanes": decode_lanes(prob, exist, label.h_samples, prob_thr=0.5, road_fit=True)})
    gts = [{"raw_file": label.raw_file, "h_samples": label.h_samples,
            "lanes": [lane for lane in label.lanes if sum(x >= 0 for x in lane) >= 2]}
           for label, _, _ in label_round_trip]
    result = evaluate(preds, gts)
    assert result["Accuracy"] >= 0.985 and result["FP"] <= 0.01, result


@pytest.mark.parametrize(("value", "expected"),
                         [(0, 0), ("1", 1), (2.0, 2), ("3", 3), ("road", "road"), ("Road", "road")])
def test_lane_fit_settings(value, expected) -> None:
    from mlflow_anf_lanedet.config import TrainConfig
    from mlflow_anf_lanedet.decode import fit_options, parse_lane_fit

    assert parse_lane_fit(value) == expected
    assert TrainConfig(data_dir=".", lane_fit=value).mlflow_params()["lane_fit"] == str(expected)
    assert fit_options(expected) == ({"fit_degree": 1, "road_fit": True} if expected == "road"
                                     else {"fit_degree": expected, "road_fit": False})


@pytest.mark.parametrize("value", ["4", "poly", 1.5, -1, ""])
def test_bad_lane_fit_names_the_field(value) -> None:
    from mlflow_anf_lanedet.config import TrainConfig

    with pytest.raises(pydantic.ValidationError, match="lane_fit: expected 0, 1, 2, 3 or road"):
        TrainConfig(data_dir=".", lane_fit=value)


def test_fit_road_leaves_a_lane_that_does_not_follow_the_road_out() -> None:
    """A misdetected "lane" along a kerb with its own vanishing point must not bend the real ones; it gets the
    per-lane fallback instead."""
    from mlflow_anf_lanedet.decode import MISSING, fit_road

    ys = np.arange(160, 720, 10, dtype=np.float64)
    truth = _road_lanes(ys, b=(-2.6, -0.9, 0.8))
    stray = np.where(ys >= 300, np.rint(1200 - 0.4 * (ys - 300)), MISSING).astype(np.int64)
    found = np.vstack([truth, stray])
    fitted = fit_road(found, ys, 1280)
    assert fitted is not None
    for lane in range(3):
        got = fitted[lane] != MISSING
        assert (got == (truth[lane] != MISSING)).all()
        assert np.abs(fitted[lane][got] - truth[lane][got]).max() <= 1
    assert (fitted[3] == stray).all()  # fallback_degree=0: left as found
    line = fit_road(found, ys, 1280, fallback_degree=1)
    assert np.abs(line[3][stray != MISSING] - stray[stray != MISSING]).max() <= 1  # a straight line refits exactly


def test_fit_road_trusts_confident_rows_more() -> None:
    """Rows found with a weak peak (a lane guessed across a dash gap) pull the fit less than well-seen ones."""
    from mlflow_anf_lanedet.decode import MISSING, fit_road

    ys = np.arange(160, 720, 10, dtype=np.float64)
    truth = _road_lanes(ys)
    found = truth.copy()
    found[1, 40:] = truth[1, 40:] - 12  # a 12 px bias, inside the outlier limit: only the weights can discount it
    weights = np.ones(found.shape)
    weights[1, 40:] = 0.05
    plain, weighted = fit_road(found, ys, 1280), fit_road(found, ys, 1280, weights=weights)
    rows = truth[1] != MISSING
    assert np.abs(weighted[1][rows] - truth[1][rows]).max() <= 3 < 5 <= np.abs(plain[1][rows] - truth[1][rows]).max()
    assert (fit_road(found, ys, 1280, weights=np.ones(found.shape)) == plain).all()  # unit weights = unweighted
