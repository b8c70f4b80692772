"""Bad-input corpus, training's share: every bad `lanedet train` parameter (``python project/run.py train``, the
MLproject's train entry point, ``TrainConfig``) exits 2 with a message naming the parameter, *before* anything
happens: the data directory, the output directory and the working directory are left exactly as they were (no
``.snapshot/``, no read-only files, no ``outputs/``) and no MLflow run is created.

Every case runs the real click command in-process (one import of torch for the whole corpus); the tests at the end
run the same refusals through ``project/run.py`` and ``mlflow run`` (where the run exists before the trainer starts
and so ends FAILED).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.support.fs_state import state_diff, tree_state
from tests.test_e2e_train import _mlflow_env, tiny_data  # noqa: F401 - the module-scoped tiny dataset fixture

# Tiny, fast settings: should a case not be refused, it trains one short epoch instead of the default 30 of VGG.
TINY = ["--epochs", "1", "--backbone", "resnet18_lite", "--input-size", "64x128", "--batch-size", "4",
        "--val-batch-size", "4", "--num-workers", "0", "--overlays", "0", "--log-model", "false"]


@dataclass
class Ctx:
    data: Path  # the tiny prepared dataset (shared by the module; must never change)
    tmp: Path  # scratch for the case's own files, outside data, outputs and the cwd
    cwd: Path

    def copy_of_data(self) -> Path:
        dest = self.tmp / "data-copy"
        shutil.copytree(self.data, dest, ignore=shutil.ignore_patterns(".snapshot"))
        return dest


@dataclass
class Case:
    id: str
    field: str  # the parameter the message must name (as the CLI spells it, without the dashes)
    args: Callable[[Ctx], list[str]]  # the case's own args; --data-dir defaults to the tiny dataset
    says: str = ""  # a piece of the explanation the message must contain


def opt(field: str, value: str, says: str = "", name: str | None = None) -> Case:
    return Case(name or f"{field}={value or 'empty'}", field, lambda c: [f"--{field.replace('_', '-')}", value], says)


def _file(ctx: Ctx, name: str, data: bytes) -> Path:
    path = ctx.tmp / name
    path.write_bytes(data)
    return path


def _download_layout(ctx: Ctx) -> Path:
    """The official TuSimple download layout, not yet prepared (`lanedet prepare` merges it)."""
    root = ctx.tmp / "download"
    (root / "train_set" / "clips").mkdir(parents=True)
    shutil.copy(ctx.data / "label_data_0313.json", root / "train_set" / "label_data_0313.json")
    (root / "test_set").mkdir()
    return root


def _corrupt_test_labels(ctx: Ctx) -> Path:
    root = ctx.copy_of_data()
    lines = (root / "test_label.json").read_text().splitlines()
    lines[1] = '{"raw_file": "clips/x.jpg", "lanes": [[1, 2]'  # line 2: cut off
    (root / "test_label.json").write_text("\n".join(lines) + "\n")
    return root


def _missing_frame(ctx: Ctx) -> Path:
    import json

    root = ctx.copy_of_data()
    first = json.loads((root / "test_label.json").read_text().splitlines()[0])
    (root / first["raw_file"]).unlink()
    return root


def _without(name: str) -> Callable[[Ctx], Path]:
    def build(ctx: Ctx) -> Path:
        root = ctx.copy_of_data()
        (root / name).unlink()
        return root

    return build


def data(build: Callable[[Ctx], Path | str]) -> Callable[[Ctx], list[str]]:
    return lambda c: ["--data-dir", str(build(c))]


CASES: list[Case] = [
    # ---- numbers: zero, negative, huge, not a number
    opt("epochs", "0"),
    opt("epochs", "-3"),
    opt("epochs", "100000", name="epochs=huge"),
    opt("epochs", "many"),
    opt("epochs", "1.5"),
    opt("batch_size", "0"),
    opt("batch_size", "-1"),
    opt("batch_size", "1000000", name="batch_size=huge"),
    opt("val_batch_size", "0"),
    opt("val_batch_size", "99999999", name="val_batch_size=huge"),
    opt("num_workers", "-2"),
    opt("num_workers", "1000", name="num_workers=huge"),
    opt("lr", "0"),
    opt("lr", "-0.1"),
    opt("lr", "nan"),
    opt("lr", "1e9", name="lr=huge"),
    opt("weight_decay", "inf"),
    opt("weight_decay", "-1"),
    opt("warmup_epochs", "inf"),
    opt("warmup_epochs", "-1"),
    opt("momentum", "1"),
    opt("seed", "-1"),
    opt("seed", "99999999999", name="seed=huge"),
    opt("max_train_frames", "0"),
    opt("max_train_frames", "abc"),
    opt("exist_threshold", "1.5"),
    opt("prob_threshold", "0"),
    opt("overlays", "1000", name="overlays=huge"),
    # ---- input_size
    opt("input_size", "300x500", says="multiples of 8"),
    opt("input_size", "288", says="HEIGHTxWIDTH"),
    opt("input_size", "16x16", says="at least 32x32"),
    opt("input_size", "288x512x3", says="HEIGHTxWIDTH"),
    opt("input_size", "abcxdef", says="HEIGHTxWIDTH"),
    opt("input_size", "-288x512"),
    opt("input_size", "100000x100000", says="larger than", name="input_size=huge"),
    # ---- booleans
    opt("use_val", "perhaps"),
    opt("enable_snapshot", "2"),
    opt("deterministic", "maybe"),
    opt("use_workers", "yesno"),
    opt("log_model", "sometimes"),
    # ---- choices
    opt("backbone", "vgg19"),
    opt("optimizer", "adam"),
    opt("strategy", "deepspeed"),
    opt("augment", "some"),
    opt("lane_fit", "4"),
    opt("lane_fit", "cubic"),
    opt("snapshot_provider", "nfs"),
    opt("precision", "8"),
    opt("accelerator", "tpu"),
    opt("devices", "two"),
    opt("accelerator", "mps", says="not available"),  # never available on Linux
    # ---- snapshot options and volumes
    opt("snapshot_options", "novalue", says="key=value"),
    opt("snapshot_options", "=x", says="key=value"),
    opt("snapshot_options", "colour=red", says="colour", name="snapshot_options=unknown-option"),
    opt("snapshot_options", "method=copy", says="method", name="snapshot_options=bad-local-method"),
    Case("csi-without-pvc_name", "pvc_name", lambda c: ["--snapshot-provider", "csi"], "PVC_NAME"),
    Case("anf-without-pvc_name", "pvc_name", lambda c: ["--snapshot-provider", "anf"], "PVC_NAME"),
    Case("anf-without-account-options", "snapshot_options",
         lambda c: ["--snapshot-provider", "anf", "--pvc-name", "data"], "anf"),
    Case("csi-with-unknown-option", "snapshot_options",
         lambda c: ["--snapshot-provider", "csi", "--pvc-name", "data", "--snapshot-options", "namespce=ml"],
         "namespce"),
    opt("model_path", "../elsewhere", says="inside the snapshot"),
    opt("model_path", "/abs/model", says="absolute"),
    Case("model_volume=not-holding-the-model", "model_volume", lambda c: ["--model-volume", str(c.tmp / "else")],
         "does not contain"),
    opt("model_path", "weights", says="is not where the model is exported", name="model_path=not-the-export"),
    # ---- data_dir
    Case("data_dir=empty", "data_dir", data(lambda c: ""), "empty path"),
    Case("data_dir=missing", "data_dir", data(lambda c: c.tmp / "nope"), "not a directory"),
    Case("data_dir=a-file", "data_dir", data(lambda c: _file(c, "labels.json", b"{}\n")), "not a directory"),
    Case("data_dir=empty-dir", "data_dir", data(lambda c: (c.tmp / "empty").mkdir() or c.tmp / "empty"),
         "label file"),
    Case("data_dir=not-a-dataset", "data_dir",
         data(lambda c: (c.tmp / "home").mkdir() or _file(c, "home/notes.txt", b"mine\n").parent), "label file"),
    Case("data_dir=unprepared-download", "data_dir", data(_download_layout), "label file"),
    Case("data_dir=corrupt-test-labels", "data_dir", data(_corrupt_test_labels), "test_label.json:2"),
    Case("data_dir=missing-frame", "data_dir", data(_missing_frame), "missing"),
    Case("data_dir=no-val-labels", "data_dir", data(_without("label_data_0531.json")), "label_data_0531.json"),
    # ---- output_dir
    Case("output_dir=empty", "output_dir", lambda c: ["--output-dir", ""], "empty path"),
    Case("output_dir=a-file", "output_dir", lambda c: ["--output-dir", str(_file(c, "out.txt", b"x"))],
         "not a directory"),
    Case("output_dir=inside-data_dir", "output_dir", lambda c: ["--output-dir", str(c.data / "outputs")],
         "must not contain"),
    Case("output_dir=data_dir", "output_dir", lambda c: ["--output-dir", str(c.data)], "must not contain"),
    # ---- files the run reads
    Case("overlay_images=missing", "overlay_images", lambda c: ["--overlay-images", str(c.tmp / "no.jpg")],
         "no.jpg"),
    Case("overlay_images=a-directory", "overlay_images", lambda c: ["--overlay-images", str(c.tmp)],
         "cannot read image"),
    Case("overlay_images=not-an-image", "overlay_images",
         lambda c: ["--overlay-images", str(_file(c, "frame.jpg", b"not a jpeg"))], "frame.jpg"),
    Case("pretrained=missing", "pretrained", lambda c: ["--pretrained", str(c.tmp / "vgg.pth")], "vgg.pth"),
    Case("pretrained=a-directory", "pretrained", lambda c: ["--pretrained", str(c.tmp)], "not a file"),
    Case("pretrained=garbage", "pretrained",
         lambda c: ["--pretrained", str(_file(c, "weights.pth", b"\x00garbage" * 8))], "weights.pth"),
    # ---- not a parameter at all
    Case("unknown-parameter", "batchsize", lambda c: ["--batchsize", "3"], "No such option"),
]


def test_the_corpus_is_large_and_its_ids_unique() -> None:
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture
def store_db(tracking: Any, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The suite's tracking store (tests/support/mlflow_store.py: under tmp_path/mlflow, outside every tree the
    cases compare) as the store the run would write to; no run to resume."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return Path(mlflow_store.root) / "mlflow.db"


def _runs(db: Path) -> list[str]:
    if not db.exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    return [r.info.run_id for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_train_input_is_refused_before_anything_happens(
    case: Case, tiny_data: Path, tmp_path: Path, store_db: Path  # noqa: F811
) -> None:
    from click.testing import CliRunner

    from mlflow_anf_lanedet.train import train_command

    ctx = Ctx(data=tiny_data, tmp=tmp_path / "case", cwd=Path.cwd())
    ctx.tmp.mkdir()
    own = case.args(ctx)
    args = ["--data-dir", str(tiny_data), *TINY, *own]
    data_dirs = {tiny_data, *(Path(own[i + 1]) for i, a in enumerate(own[:-1]) if a == "--data-dir" and own[i + 1])}
    out_dirs = [Path(own[i + 1]) for i, a in enumerate(own[:-1]) if a == "--output-dir" and own[i + 1]]
    watched = [*data_dirs, *out_dirs, ctx.cwd / "outputs", ctx.cwd]
    before = {str(p): tree_state(p) for p in watched}

    result = CliRunner().invoke(train_command, args)

    message = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2, f"exit {result.exit_code}: {message[-2000:]}\n{result.exception!r}"
    flag = "--" + case.field.replace("_", "-")
    assert flag in message, message
    assert case.says in message, message
    after = {str(p): tree_state(p) for p in watched}
    for path in before:
        assert before[path] == after[path], f"{path} changed:\n{state_diff(before[path], after[path])}"
    assert _runs(store_db) == []


def test_non_dataset_data_dir_is_refused_by_the_real_cli_before_any_snapshot(tmp_path: Path) -> None:
    """Finding: `train` with a wrong data_dir snapshotted it first (a `.snapshot/` and read-only files in a
    directory that is not a dataset), then the run failed."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine\n")
    before = tree_state(home)
    db = tmp_path / "mlflow.db"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "project" / "run.py"), "train", "--data-dir", str(home), *TINY],
        env=_mlflow_env(f"sqlite:///{db}"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--data-dir" in proc.stderr and "label file" in proc.stderr
    assert tree_state(home) == before, state_diff(before, tree_state(home))
    assert not (Path.cwd() / "outputs").exists()
    assert _runs(db) == []


def test_missing_overlay_image_fails_the_mlflow_run_before_training(tiny_data: Path, tmp_path: Path) -> None:  # noqa: F811
    """Finding: a missing overlay image failed the run only after the data snapshot and a full training. Under
    `mlflow run` the run exists before the trainer starts: it ends FAILED, with no snapshot taken and no metric."""
    from mlflow.tracking import MlflowClient

    before = tree_state(tiny_data)
    db = tmp_path / "mlflow.db"
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "-e", "train", "--env-manager", "local",
           "-P", f"data_dir={tiny_data}", "-P", f"output_dir={tmp_path / 'outputs'}", "-P", "epochs=1",
           "-P", "batch_size=4", "-P", "val_batch_size=4", "-P", "backbone=resnet18_lite",
           "-P", "input_size=64x128", "-P", "num_workers=0", "-P", f"overlay_images={tmp_path / 'gone.jpg'}"]
    proc = subprocess.run(cmd, env=_mlflow_env(f"sqlite:///{db}"), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--overlay-images" in proc.stderr and "gone.jpg" in proc.stderr, proc.stderr[-2000:]
    assert tree_state(tiny_data) == before, state_diff(before, tree_state(tiny_data))
    assert not (tmp_path / "outputs").exists()
    (run_id,) = _runs(db)
    run = MlflowClient(f"sqlite:///{db}").get_run(run_id)
    assert run.info.status == "FAILED"
    assert not run.data.metrics and not any(k.startswith("mlflow_anf.snapshot.data") for k in run.data.tags)
