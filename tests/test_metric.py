"""mlflow_anf_lanedet.metric: the official TuSimple metric, checked against the per-lane oracle and hand-computed cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlflow_anf_lanedet import metric
from mlflow_anf_lanedet.cli import main as lanedet_cli
from mlflow_anf_lanedet.metric import MetricError, bench_one_submit, evaluate, evaluate_files, evaluate_frame
from tests.doubles import reference_lane_eval as ref

H = list(range(160, 720, 10))  # 56 rows, as in the 0531/0601/test files
N = len(H)
MISS = -2

# The real evaluate/lane.py (latest revision, sklearn 1.x) on the fixture pair: the numbers to reproduce.
OFFICIAL_FIXTURE = {"Accuracy": 0.9999763091905761, "FP": 8.74737578726382e-05, "FN": 8.74737578726382e-05}

# Lanes whose exact least-squares slope has a whole-number threshold (29, 25, 52, 52 px), but where the closed
# form and sklearn's computation round differently; a prediction offset by exactly that threshold decides on the
# last bit. (rows, x values, offset, official (accuracy, fp, fn) for +offset, for -offset) — from the real benchmark.
TIE_CASES = [
    ([210, 250, 390, 450, 480], [300, 344, 488, 550, 587], 29, (51 / 56, 0.0, 0.0), (51 / 56, 0.0, 0.0)),
    ([250, 430, 550, 570, 630, 650, 670], [384, 524, 612, 626, 672, 684, 700], 25, (1.0, 0.0, 0.0), (1.0, 0.0, 0.0)),
    ([280, 500, 640], [209, 737, 1073], 52, (1.0, 0.0, 0.0), (1.0, 0.0, 0.0)),
    ([200, 390, 500, 600], [977, 521, 257, 17], 52, (1.0, 0.0, 0.0), (55 / 56, 0.0, 0.0)),
]


def straight(x0: float, slope: float = 0.0, first: int = 0, last: int = N - 1) -> list:
    """A straight lane x = x0 + slope * (y - 160) on rows first..last (integers where exact, else floats)."""
    lane = []
    for i, y in enumerate(H):
        x = x0 + slope * (y - H[0])
        lane.append((int(x) if float(x).is_integer() else x) if first <= i <= last else MISS)
    return lane


def shifted(lane: list, dx: float) -> list:
    return [x + dx if x >= 0 else MISS for x in lane]


@pytest.fixture(scope="module")
def fixture_records(tusimple_fixtures: Path) -> tuple[list[dict], list[dict]]:
    return (ref.read_lines(tusimple_fixtures / "pred_example_0313.json"),
            ref.read_lines(tusimple_fixtures / "label_data_0313.json"))


# ------------------------------------------------------------------------------------------------ official numbers


def test_fixture_matches_official_numbers_and_oracle(tusimple_fixtures: Path) -> None:
    pred, gt = tusimple_fixtures / "pred_example_0313.json", tusimple_fixtures / "label_data_0313.json"
    ours = {d["name"]: d["value"] for d in json.loads(bench_one_submit(pred, gt))}
    oracle = {d["name"]: d["value"] for d in json.loads(ref.bench_one_submit(pred, gt))}
    for key, official in OFFICIAL_FIXTURE.items():
        assert ours[key] == pytest.approx(official, abs=1e-12)
        assert ours[key] == pytest.approx(oracle[key], abs=1e-9)
    assert ours == oracle  # in fact bit-identical: same decisions, same summation order


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_randomised_files_match_oracle_frame_by_frame(fixture_records, seed: int) -> None:
    _, gts = fixture_records
    rng = np.random.default_rng(seed)
    subset = [gts[i] for i in rng.choice(len(gts), 250, replace=False)]
    preds, gts = ref.random_cases(subset, rng)
    by_file = {g["raw_file"]: g for g in gts}
    kinds = {"five_plus_gt": 0, "slow": 0, "too_many": 0, "empty_pred": 0, "negative_fp": 0}
    for p in preds:
        g = by_file[p["raw_file"]]
        expected = ref.bench(p["lanes"], g["lanes"], g["h_samples"], p["run_time"])
        got = evaluate_frame(p["lanes"], g["lanes"], g["h_samples"], p["run_time"])
        assert got == pytest.approx(expected, abs=1e-12), p["raw_file"]
        kinds["five_plus_gt"] += len(g["lanes"]) > 4
        kinds["slow"] += p["run_time"] > 200
        kinds["too_many"] += len(p["lanes"]) > len(g["lanes"]) + 2
        kinds["empty_pred"] += not p["lanes"]
        kinds["negative_fp"] += expected[1] < 0
    assert all(kinds.values()), kinds  # the generator really covers every rule
    assert evaluate(preds, gts) == ref.evaluate(preds, gts)


@pytest.mark.parametrize("case", TIE_CASES, ids=["29px", "25px", "52px", "52px-neg"])
def test_threshold_ties_are_decided_like_sklearn(case) -> None:
    rows, xs, offset, plus, minus = case
    lane = [MISS] * N
    for y, x in zip(rows, xs):
        lane[H.index(y)] = x
    for sign, official in ((1, plus), (-1, minus)):
        pred = [[x + sign * offset if x >= 0 else MISS for x in lane]]
        assert evaluate_frame(pred, [lane], H, 1.0) == pytest.approx(official, abs=1e-15)
        assert evaluate_frame(pred, [lane], H, 1.0) == ref.bench(pred, [lane], H, 1.0)
        fractional = pred + [[0.5] * N]  # a frame with non-integer x values takes the general tie check
        assert evaluate_frame(fractional, [lane], H, 1.0) == ref.bench(fractional, [lane], H, 1.0)
        assert evaluate_frame(fractional, [lane], H, 1.0)[0] == official[0]


def test_tie_cases_need_the_exact_slope() -> None:
    """Premise of the test above: the closed-form threshold alone would decide at least one case differently."""
    flips = 0
    for rows, xs, offset, _, _ in TIE_CASES:
        gt = np.full((1, N), -2.0)
        gt[0, [H.index(y) for y in rows]] = xs
        closed = metric.lane_thresholds(gt, np.array([H], dtype=float))[0]
        exact = 20.0 / np.cos(np.arctan(ref.fit_slope(np.array(xs), np.array(rows))))
        flips += (offset < closed) != (offset < exact)
    assert flips >= 1


def test_degenerate_rows_use_the_exact_fit() -> None:
    """h_samples that all coincide at a float whose mean is inexact: centring leaves only rounding noise, and the
    benchmark's slope is whatever sklearn's least squares makes of that noise (checked against real sklearn). The
    closed form makes something else of it, so such lanes must take the exact fit."""
    rng = np.random.default_rng(3)
    for _ in range(60):
        n = int(rng.integers(3, 7))
        y_samples = [float(rng.choice([0.7, 123.456]))] * n
        gt = [[float(x) for x in rng.integers(100, 1200, n)]]
        pred = [[x + float(rng.uniform(-100, 100)) for x in gt[0]] for _ in range(2)]
        assert evaluate_frame(pred, gt, y_samples) == ref.bench(pred, gt, y_samples, 0.0)


# ------------------------------------------------------------------------------------------------ rules, by hand


def test_perfect_prediction_scores_one_zero_zero() -> None:
    gt = [straight(300, -0.8, 5, 50), straight(600, 0.1), straight(900, 1.2, 10, 40), straight(1000, 2.5, 20, 30)]
    assert evaluate_frame(gt, gt, H, 5.0) == (1.0, 0.0, 0.0)


def test_shift_across_the_threshold_of_a_vertical_lane() -> None:
    gt = [straight(500)]  # slope 0: threshold exactly 20 px
    assert evaluate_frame([shifted(gt[0], 19)], gt, H) == (1.0, 0.0, 0.0)
    assert evaluate_frame([shifted(gt[0], -19.999)], gt, H) == (1.0, 0.0, 0.0)
    assert evaluate_frame([shifted(gt[0], 20)], gt, H) == (0.0, 1.0, 1.0)  # |d| < thr is strict


def test_threshold_grows_with_the_lane_angle() -> None:
    tilted = [straight(100, 0.75)]  # x changes 0.75 px per row: threshold 20 / cos(atan(0.75)) = 25 px
    assert evaluate_frame([shifted(tilted[0], 24)], tilted, H) == (1.0, 0.0, 0.0)
    assert evaluate_frame([shifted(tilted[0], 26)], tilted, H) == (0.0, 1.0, 1.0)
    upright = [straight(500)]
    assert evaluate_frame([shifted(upright[0], 24)], upright, H) == (0.0, 1.0, 1.0)


def test_rows_missing_in_both_count_as_correct_and_extra_points_as_wrong() -> None:
    gt = straight(600, 0.2, 0, 23)  # 24 points, 32 rows without
    longer = straight(600, 0.2, 0, 31)  # 8 points where the GT has none
    shorter = straight(600, 0.2, 0, 15)  # 8 GT points not predicted
    assert evaluate_frame([gt], [gt], H)[0] == 1.0
    assert evaluate_frame([longer], [gt], H) == (48 / 56, 0.0, 0.0)
    assert evaluate_frame([shorter], [gt], H) == (48 / 56, 0.0, 0.0)
    other_negative = [-1 if x == MISS else x for x in gt]  # any negative x means "no point"
    assert evaluate_frame([other_negative], [gt], H)[0] == 1.0


def test_a_lane_below_the_point_threshold_is_a_miss() -> None:
    gt = straight(600, 0.2)
    partial = [x if i < 47 else x + 100 for i, x in enumerate(gt)]  # 47/56 = 0.839 < 0.85
    assert evaluate_frame([partial], [gt], H) == (47 / 56, 1.0, 1.0)
    partial = [x if i < 48 else x + 100 for i, x in enumerate(gt)]  # 48/56 = 0.857
    assert evaluate_frame([partial], [gt], H) == (48 / 56, 0.0, 0.0)


def test_missing_and_extra_lanes() -> None:
    gt = [straight(x0, 0.5) for x0 in (100, 400, 700, 1000)]
    assert evaluate_frame(gt[:3], gt, H) == (0.75, 0.0, 0.25)
    extra = gt[:3] + [straight(10, 0.0)]
    assert evaluate_frame(extra, gt[:3], H) == (1.0, 0.25, 0.0)


def test_one_prediction_matching_two_lanes_gives_negative_fp() -> None:
    gt = [straight(500, 0.3), straight(510, 0.3)]  # 10 px apart: one prediction is within both thresholds
    assert evaluate_frame([gt[0]], gt, H) == (1.0, -1.0, 0.0)


def test_five_lane_frames_drop_the_worst_lane_and_one_miss() -> None:
    gt = [straight(x0, 0.4) for x0 in (100, 300, 500, 700, 900)]
    assert evaluate_frame(gt[:4], gt, H) == (1.0, 0.0, 0.0)  # (4 - 0) / 4, fn 1 - 1
    assert evaluate_frame(gt[:3], gt, H) == (0.75, 0.0, 0.25)  # (3 - 0) / 4, fn 2 - 1
    assert evaluate_frame(gt, gt, H) == (1.0, 0.0, 0.0)  # (5 - 1) / 4
    six = gt + [straight(1100, 0.4)]
    assert evaluate_frame(six, six, H) == (1.25, 0.0, 0.0)  # (6 - 1) / 4: the benchmark allows > 1


def test_run_time_over_200_ms_scores_zero() -> None:
    gt = [straight(500, 0.3)]
    assert evaluate_frame(gt, gt, H, run_time=200) == (1.0, 0.0, 0.0)
    assert evaluate_frame(gt, gt, H, run_time=200.01) == (0.0, 0.0, 1.0)


def test_more_than_two_extra_lanes_scores_zero() -> None:
    gt = [straight(300, 0.3), straight(800, -0.3)]
    extra = [straight(x0) for x0 in (50, 1200, 1250)]
    assert evaluate_frame(gt + extra[:2], gt, H) == (1.0, 0.5, 0.0)
    assert evaluate_frame(gt + extra, gt, H) == (0.0, 0.0, 1.0)


def test_empty_predictions_and_empty_ground_truth() -> None:
    gt = [straight(300, 0.3), straight(800, -0.3), straight(600)]
    assert evaluate_frame([], gt, H) == (0.0, 0.0, 1.0)
    assert evaluate_frame([], [], H) == (0.0, 0.0, 0.0)
    assert evaluate_frame(gt[:2], [], H) == (0.0, 1.0, 0.0)


def test_file_score_is_the_mean_over_ground_truth_frames() -> None:
    gt = [straight(300, 0.3), straight(800, -0.3)]
    gts = [{"raw_file": f"f{i}", "lanes": gt, "h_samples": H} for i in range(4)]
    preds = [{"raw_file": "f2", "lanes": gt, "run_time": 1.0}, {"raw_file": "f0", "lanes": gt[:1], "run_time": 1.0},
             {"raw_file": "f3", "lanes": [], "run_time": 1.0}, {"raw_file": "f1", "lanes": gt, "run_time": 999.0}]
    assert evaluate(preds, gts) == {"Accuracy": (1 + 0.5) / 4, "FP": 0.0, "FN": (0.5 + 1 + 1) / 4}


def test_accepts_label_models_from_the_data_module(tusimple_fixtures: Path) -> None:
    from mlflow_anf_lanedet.data.tusimple import read_labels

    labels = read_labels(tusimple_fixtures / "label_data_0313.json")[:50]
    preds = [{"raw_file": lab.raw_file, "lanes": lab.lanes, "run_time": 1.0} for lab in labels]
    assert evaluate(preds, labels) == ref.evaluate(preds, [lab.model_dump() for lab in labels])


def test_metric_module_does_not_import_torch() -> None:
    code = "import sys, mlflow_anf_lanedet.metric; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------------------------------------ malformed input


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


GT_LANE = straight(500, 0.3)


def _gt(name: str, **extra) -> dict:
    return {"raw_file": name, "lanes": [GT_LANE], "h_samples": H, **extra}


def _pred(name: str, **extra) -> dict:
    return {"raw_file": name, "lanes": [GT_LANE], "run_time": 10.0, **extra}


@pytest.mark.parametrize(
    ("pred_lines", "gt_lines", "where", "what"),
    [
        ([_pred("a"), "", '{"raw_file": "b", "lanes": [[1, 2]'], [_gt("a"), _gt("b")], "pred.json:3", "invalid JSON"),
        ([_pred("a"), {"raw_file": "b", "lanes": []}], [_gt("a"), _gt("b")], "pred.json:2", "'run_time'"),
        ([_pred("a"), _pred("b", lanes=[GT_LANE, GT_LANE[:-1]])], [_gt("a"), _gt("b")], "pred.json:2",
         "predicted lane 1 has 55 values but the ground truth has 56 h_samples"),
        ([_pred("a"), _pred("b")], [_gt("a"), _gt("b", lanes=[GT_LANE[1:]])], "gt.json:2",
         "ground-truth lane 0 has 55 values"),
        ([_pred("a"), _pred("c")], [_gt("a"), _gt("b")], "pred.json:2", "raw_file 'c' is not in the ground truth"),
        ([_pred("a")], [_gt("a"), _gt("b"), _gt("c")], "gt.json:2",
         "no prediction for raw_file 'b' (2 of 3 ground-truth frames"),
        ([_pred("a"), _pred("a")], [_gt("a"), _gt("b")], "pred.json:2", "duplicate prediction for raw_file 'a'"),
        ([_pred("a")], [_gt("a"), _gt("a")], "gt.json:2", "duplicate raw_file 'a' (first at"),
        ([_pred("a", lanes=[GT_LANE[:5] + ["7"] + GT_LANE[6:]])], [_gt("a")], "pred.json:1",
         "predicted lane 0 must contain finite numbers only, got '7'"),
        ([_pred("a", lanes=[GT_LANE[:5] + [None] + GT_LANE[6:]])], [_gt("a")], "pred.json:1", "got None"),
        ([_pred("a", lanes=[5])], [_gt("a")], "pred.json:1", "predicted lane 0 must be a list of numbers"),
        ([_pred("a", run_time="fast")], [_gt("a")], "pred.json:1", "'run_time' must be a non-negative finite number"),
        ([_pred("a")], [_gt("a", h_samples=[])], "gt.json:1", "'h_samples' must be a non-empty list"),
        ([_pred("a")], [["not", "an", "object"]], "gt.json:1", "expected a JSON object, got list"),
        ([_pred("a")], [_gt("a", raw_file=3)], "gt.json:1", "'raw_file' must be a string"),
        ([_pred("a")], [], "gt.json", "no ground-truth frames"),
    ],
    ids=["bad-json", "missing-key", "pred-lane-length", "gt-lane-length", "unknown-frame", "missing-frames",
         "duplicate-pred", "duplicate-gt", "string-value", "null-value", "lane-not-list", "run-time-type",
         "empty-h-samples", "not-object", "raw-file-type", "empty-gt"],
)
def test_malformed_files_raise_with_file_and_line(tmp_path, pred_lines, gt_lines, where, what) -> None:
    pred = _write(tmp_path / "pred.json", pred_lines)
    gt = _write(tmp_path / "gt.json", gt_lines)
    with pytest.raises(MetricError) as info:
        evaluate_files(pred, gt)
    message = str(info.value)
    assert message.startswith(str(tmp_path / where) + ":"), message
    assert what in message


DEEP = "[" * 100_000 + "]" * 100_000  # deeper than the JSON parser's recursion guard


@pytest.mark.parametrize(
    ("pred_lines", "gt_lines", "where", "what"),
    [
        ([_pred("a", run_time=True)], [_gt("a")], "pred.json:1", "'run_time' must be a non-negative finite number"),
        ([_pred("a", run_time=False)], [_gt("a")], "pred.json:1", "got False"),
        ([_pred("a", run_time=-1)], [_gt("a")], "pred.json:1", "'run_time' must be a non-negative finite number"),
        ([_pred("a", run_time=-0.5)], [_gt("a")], "pred.json:1", "got -0.5"),
        ([_pred("a", lanes=[[True] + GT_LANE[1:]])], [_gt("a")], "pred.json:1",
         "predicted lane 0 must contain finite numbers only, got True"),
        ([_pred("a")], [_gt("a", lanes=[GT_LANE[:-1] + [False]])], "gt.json:1",
         "ground-truth lane 0 must contain finite numbers only, got False"),
        ([_pred("a")], [_gt("a", h_samples=[True] + H[1:])], "gt.json:1", "'h_samples' must contain finite numbers"),
        (['{"raw_file": "a", "run_time": 1, "lanes": ' + DEEP + "}"], [_gt("a")], "pred.json:1",
         "invalid JSON (nested too deeply)"),
        ([_pred("a")], ['{"raw_file": "a", "h_samples": [1], "lanes": ' + DEEP + "}"], "gt.json:1",
         "invalid JSON (nested too deeply)"),
        ([_pred("a", lanes=[["[" * 500 + "]" * 500] + GT_LANE[1:]])], [_gt("a")], "pred.json:1",
         "must contain finite numbers only, got '[[[["),
        ([_pred("a", run_time=[[[[[1]]]]])], [_gt("a")], "pred.json:1", "got a list of 1 item(s)"),
        ([_pred("x" * 10_000)], [_gt("a")], "pred.json:1", "(10002 characters)"),
    ],
    ids=["run-time-true", "run-time-false", "run-time-negative-int", "run-time-negative-float", "pred-bool-x",
         "gt-bool-x", "gt-bool-row", "pred-deep-nesting", "gt-deep-nesting", "long-string-value",
         "nested-run-time", "huge-raw-file"],
)
def test_booleans_negative_run_times_and_deep_input_are_refused(tmp_path, pred_lines, gt_lines, where, what) -> None:
    """Booleans are not numbers, run times are not negative, nesting is no crash; messages stay short."""
    pred = _write(tmp_path / "pred.json", pred_lines)
    gt = _write(tmp_path / "gt.json", gt_lines)
    with pytest.raises(MetricError) as info:
        evaluate_files(pred, gt)
    message = str(info.value)
    assert message.startswith(str(tmp_path / where) + ":"), message
    assert what in message and len(message) < 400 + len(str(tmp_path)), message


def test_in_memory_booleans_are_refused_and_numpy_numbers_accepted() -> None:
    with pytest.raises(MetricError, match=r"^predictions\[0\]: predicted lane 0 must contain finite numbers only"):
        evaluate([_pred("a", lanes=[[True] * len(H)])], [_gt("a")])
    with pytest.raises(MetricError, match=r"^predictions\[0\]: 'run_time'"):
        evaluate([_pred("a", run_time=np.bool_(True))], [_gt("a")])
    lanes = [[np.int64(x) for x in GT_LANE]]
    assert evaluate([_pred("a", lanes=lanes, run_time=np.float32(3))], [_gt("a")]) == {
        "Accuracy": 1.0, "FP": 0.0, "FN": 0.0}


def test_unreadable_file_and_in_memory_locations(tmp_path) -> None:
    with pytest.raises(MetricError, match=r"nope\.json: cannot read"):
        evaluate_files(tmp_path / "nope.json", tmp_path / "nope.json")
    with pytest.raises(MetricError, match=r"^predictions\[1\]: missing key\(s\) 'lanes'"):
        evaluate([_pred("a"), {"raw_file": "b", "run_time": 1.0}], [_gt("a"), _gt("b")])


def test_blank_lines_are_skipped_and_do_not_shift_line_numbers(tmp_path) -> None:
    gt = _write(tmp_path / "gt.json", [_gt("a"), "", _gt("b"), "   "])
    pred = _write(tmp_path / "pred.json", ["", _pred("b"), _pred("a")])
    assert evaluate_files(pred, gt) == {"Accuracy": 1.0, "FP": 0.0, "FN": 0.0}
    _write(pred, ["", _pred("b"), _pred("a", lanes=[GT_LANE[1:]])])
    with pytest.raises(MetricError, match=r"pred\.json:3: predicted lane 0 has 55 values"):
        evaluate_files(pred, gt)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_prints_the_benchmark_json(tusimple_fixtures: Path) -> None:
    pred, gt = tusimple_fixtures / "pred_example_0313.json", tusimple_fixtures / "label_data_0313.json"
    result = CliRunner().invoke(lanedet_cli, ["eval", str(pred), str(gt)])
    assert result.exit_code == 0, result.output
    assert result.stdout == bench_one_submit(pred, gt) + "\n"
    out = json.loads(result.stdout)
    assert [(d["name"], d["order"]) for d in out] == [("Accuracy", "desc"), ("FP", "asc"), ("FN", "asc")]
    assert out[0]["value"] == pytest.approx(OFFICIAL_FIXTURE["Accuracy"], abs=1e-12)


def test_cli_malformed_input_exits_2_naming_file_and_line(tmp_path) -> None:
    gt = _write(tmp_path / "gt.json", [_gt("a"), _gt("b")])
    pred = _write(tmp_path / "pred.json", [_pred("a"), "{oops"])
    result = CliRunner().invoke(lanedet_cli, ["eval", str(pred), str(gt)])
    assert result.exit_code == 2
    assert f"{pred}:2: invalid JSON" in result.stderr
    assert result.stdout == ""
    missing = CliRunner().invoke(lanedet_cli, ["eval", str(tmp_path / "none.json"), str(gt)])
    assert missing.exit_code == 2 and "none.json: cannot read" in missing.stderr
