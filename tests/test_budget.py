"""`lanedet budget` / `make demo`: a schedule fitted to a time budget by measuring the machine it runs on."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_anf_lanedet.budget import BudgetError, Rates, plan_schedule
from mlflow_anf_lanedet.cli import main as lanedet_main

RATES = Rates(train_images_per_s=10.0, eval_frames_per_s=30.0, train_steps=12, eval_batches=3)
SPLITS = {"train_frames": 1050, "val_frames": 150, "test_frames": 300}


def test_the_full_schedule_when_it_fits() -> None:
    # per epoch 105 s + 5 s; test 10 s; overhead 60 s; margin 10 %: 20 epochs = (2200 + 70) * 1.1 = 2497 s
    plan = plan_schedule(RATES, remaining_s=2500, full_epochs=20, **SPLITS)
    assert (plan.epochs, plan.max_train_frames) == (20, None) and plan.params() == {"epochs": "20"}
    assert plan.estimate_s == pytest.approx(2497.0)
    assert "the full schedule, 20 epochs" in plan.summary()


def test_fewer_epochs_when_the_budget_is_short_and_the_summary_says_what_the_full_run_needs() -> None:
    plan = plan_schedule(RATES, remaining_s=700, full_epochs=20, spent_s=200, **SPLITS)
    # (700 / 1.1 - 70) / 110 = 5.15 -> 5 epochs
    assert plan.epochs == 5 and plan.max_train_frames is None and plan.estimate_s <= 700
    text = plan.summary()
    assert "5 of 20 epochs" in text and "training 10.0 images/s" in text
    assert "DEMO_MINUTES=45" in text  # (200 + 2497) / 60 = 44.95 -> 45


def test_training_frames_are_cut_when_not_even_the_minimum_epochs_fit() -> None:
    plan = plan_schedule(RATES, remaining_s=200, full_epochs=20, min_epochs=2, **SPLITS)
    assert plan.epochs == 2 and plan.max_train_frames is not None and plan.max_train_frames < 1050
    assert plan.estimate_s <= 200 + 1e-6 and plan.params() == {"epochs": "2",
                                                              "max_train_frames": str(plan.max_train_frames)}
    assert f"on {plan.train_frames} training frames" in plan.summary()


def test_a_budget_too_small_for_anything_says_how_much_is_needed() -> None:
    with pytest.raises(BudgetError, match=r"leaves 1 min 00 s for the run.*allow at least \d+ more minutes"):
        plan_schedule(RATES, remaining_s=60, full_epochs=20, **SPLITS)
    with pytest.raises(BudgetError, match="leaves 0 min 00 s"):
        plan_schedule(RATES, remaining_s=-30, full_epochs=20, **SPLITS)


@pytest.mark.slow
def test_the_command_measures_this_machine_and_writes_the_params(tmp_path: Path) -> None:
    from mlflow_anf_lanedet.data.prepare import prepare
    from mlflow_anf_lanedet.synth import generate

    generate(tmp_path / "download", frames=24, seed=5)
    prepare(tmp_path / "download", tmp_path / "data")
    out = tmp_path / "schedule.params"
    args = ["budget", "--minutes", "60", "-P", f"data_dir={tmp_path / 'data'}", "-P", "epochs=3",
            "-P", "backbone=resnet18_lite", "-P", "input_size=64x128", "-P", "batch_size=4", "-P", "num_workers=0",
            "-P", "lane_fit=road", "--write-params", str(out)]
    result = CliRunner().invoke(lanedet_main, args)
    assert result.exit_code == 0, result.output
    assert "measured here: training" in result.output and "the full schedule, 3 epochs" in result.output
    assert out.read_text() == "-P epochs=3\n"
    bad = CliRunner().invoke(lanedet_main, ["budget", "--minutes", "5", "-P", f"data_dir={tmp_path}",
                                            "-P", "input_size=7x7"])
    assert bad.exit_code == 2 and "-P input_size" in bad.output
