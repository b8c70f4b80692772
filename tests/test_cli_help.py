"""What a first-time user reads (issue #15, part 2): `mlflow-anf render`'s entry point as `mlflow run` picks it, and
`lanedet train --help` with the defaults, ranges and choices of the one config model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_anf.cli import main
from tests.conftest import REPO_ROOT

CFG = json.dumps({"namespace": "lane", "image": "x.io/y:1", "tracking_uri": "http://m:5000"})


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


def _project(tmp_path: Path, *entry_points: str) -> Path:
    project = tmp_path / "p"
    project.mkdir()
    lines = ["name: p", "entry_points:"]
    for name in entry_points:
        lines += [f"  {name}:", f"    command: python -c 'print({name!r})'"]
    (project / "MLproject").write_text("\n".join(lines) + "\n")
    return project


def _command(result: object) -> str:
    import yaml

    job = list(yaml.safe_load_all(result.stdout))[-1]  # type: ignore[attr-defined]
    return job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["args"][-1]


@pytest.mark.parametrize(("entry_points", "expected"), [(("main", "other"), "main"), (("only",), "only")])
def test_render_defaults_to_main_else_the_only_entry_point(tmp_path: Path, entry_points: tuple[str, ...],
                                                           expected: str) -> None:
    result = _runner().invoke(main, ["render", str(_project(tmp_path, *entry_points)), "-c", CFG])
    assert result.exit_code == 0, result.stderr
    assert _command(result) == f"python -c 'print({expected!r})'"


def test_render_without_main_lists_the_entry_points(tmp_path: Path) -> None:
    result = _runner().invoke(main, ["render", str(REPO_ROOT), "-c", CFG])
    assert result.exit_code == 2
    assert ("has no entry point 'main' (what `mlflow run` runs without -e); pick one of evaluate, prepare, synth, "
            "train with -e, e.g. -e train") in result.stderr


def test_render_unknown_entry_point_lists_the_project_s(tmp_path: Path) -> None:
    result = _runner().invoke(main, ["render", str(_project(tmp_path, "main", "train")), "-e", "trian", "-c", CFG])
    assert result.exit_code == 2
    assert "entry point 'trian' is not in project" in result.stderr
    assert "its entry points: main, train" in result.stderr


def test_render_takes_a_script_entry_point_as_mlflow_run_does(tmp_path: Path) -> None:
    project = _project(tmp_path, "main")
    (project / "job.py").write_text("print('job')\n")
    result = _runner().invoke(main, ["render", str(project), "-e", "job.py", "-c", CFG])
    assert result.exit_code == 0, result.stderr
    assert _command(result) == "python job.py"


def test_render_of_a_missing_directory_says_so(tmp_path: Path) -> None:
    result = _runner().invoke(main, ["render", str(tmp_path / "nowhere"), "-c", CFG])
    assert result.exit_code == 2
    assert "no such directory (give the folder that holds the MLproject file, or a Git URI)" in result.stderr
    assert "Traceback" not in result.stderr


# ---- lanedet train --help -------------------------------------------------------------------------------------

def test_train_help_shows_defaults_ranges_and_choices_from_the_config_model() -> None:
    from mlflow_anf_lanedet.config import TrainConfig
    from mlflow_anf_lanedet.train import train_command

    result = CliRunner().invoke(train_command, ["--help"], terminal_width=400)
    assert result.exit_code == 0
    lines: dict[str, str] = {}  # option -> its help, continuation lines joined
    for line in result.output.split("Options:")[1].splitlines():
        if line.strip().startswith("--"):
            current = line.split()[0]
            lines[current] = " ".join(line.split())
        elif line.strip():
            lines[current] += " " + " ".join(line.split())
    assert "[required]" in lines["--data-dir"]
    assert lines["--epochs"].startswith("--epochs INTEGER") and "[default: 30; 1<=x<=10000]" in lines["--epochs"]
    assert "[default: 288x512]" in lines["--input-size"]
    assert lines["--backbone"].startswith("--backbone [vgg16_bn|resnet18|resnet34|resnet18_lite]")
    assert "[default: vgg16_bn]" in lines["--backbone"]
    assert lines["--use-val"].startswith("--use-val [true|false]") and "[default: true]" in lines["--use-val"]
    assert lines["--augment"].startswith("--augment [full|flip|none]")  # listed; true/false still accepted
    assert "[default: 0.01; 0<x<=10]" in lines["--lr"]
    # every field has its option, and a default shown is the model's own
    assert {f"--{name.replace('_', '-')}" for name in TrainConfig.model_fields} <= set(lines)
    assert f"[default: {TrainConfig.model_fields['batch_size'].default};" in lines["--batch-size"]


def test_train_choices_are_checked_by_click_naming_the_option_and_the_choices() -> None:
    from mlflow_anf_lanedet.train import train_command

    result = CliRunner().invoke(train_command, ["--data-dir", "/nonexistent", "--backbone", "vgg19"])
    assert result.exit_code == 2
    assert "--backbone" in result.output and "vgg16_bn" in result.output and "resnet18" in result.output


def test_train_without_data_dir_says_the_option_is_missing() -> None:
    from mlflow_anf_lanedet.train import train_command

    result = CliRunner().invoke(train_command, [])
    assert result.exit_code == 2 and "Missing option '--data-dir'" in result.output
