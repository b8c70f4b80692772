"""Installed as users install it: wheels of both distributions (not editable) in a fresh venv, used from elsewhere.

Two environments are made per test module, each a new ``python -m venv`` with this checkout's wheels installed in
it (``pip wheel`` of a copy of the tracked tree, so nothing is built inside the checkout):

- *full*: both wheels (``mlflow-anf``, ``mlflow-anf-lanedet``). ``mlflow run <clone> -e train --version X`` from
  another directory must run the code of commit X (not the installed copy), finish with its snapshot tags, and
  ``mlflow-anf reproduce`` must accept the run.
- *plugin only*: the ``mlflow-anf`` wheel and no torch. ``mlflow server`` there must serve the files of a model
  registered from a ``snapshot://`` URI (an MLflow server installs the plugin without the training stack).

Third-party packages come from the test venv through a ``.pth`` view of its site-packages (the plugin-only view leaves
torch, Lightning and the editable copies of this project out), so that no test downloads or installs torch again;
what is under test is what the wheels bring: modules, package data, entry points, console scripts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.git import commit_all, git
from tests.support.snapshot_tags import snapshot_fields

pytestmark = pytest.mark.slow

# what the plugin-only environment must not see
TRAINING_STACK = ("torch", "functorch", "torchgen", "pytorch_lightning", "lightning_fabric", "lightning_utilities",
                  "torchmetrics", "horovod", "mpi4py", "mpich")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding this checkout's files (tracked and untracked-not-ignored), as a user clones it."""
    root = tmp_path_factory.mktemp("clone") / "mlflow-anf"
    listed = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO_ROOT / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    commit_all(root, "the checkout")
    return root


@pytest.fixture(scope="module")
def wheels(clone: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    build = tmp_path_factory.mktemp("build")
    src = build / "src"
    shutil.copytree(clone, src, ignore=shutil.ignore_patterns(".git"))
    out = build / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(out), str(src), str(src / "project")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"mlflow_anf", "mlflow_anf_lanedet"}, found
    return found


def _venv(where: Path, wheels: list[Path], leave_out: tuple[str, ...]) -> Path:
    """A new venv with *wheels* installed (no deps) and the test venv's other packages, minus *leave_out*."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           "--no-index", *map(str, wheels)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = ("mlflow_anf", "mlflow_anf_lanedet", "__editable__", "mlflow_anf-", "mlflow_anf_lanedet-")
    view = where / "borrowed-site-packages"
    view.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name
        stem = name.split("-")[0].split(".")[0]
        if name.startswith(ours) or stem in leave_out or name.endswith(".pth"):
            continue
        (view / name).symlink_to(entry)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_borrowed.pth").write_text(f"{view}\n")
    return python


def _env(venv_python: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = str(venv_python.parent) + os.pathsep + env.get("PATH", "")
    env.update(MLFLOW_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def test_wheels_carry_the_package_data_and_a_run_of_a_commit_runs_that_commit(
    clone: Path, wheels: dict[str, Path], tmp_path: Path,
) -> None:
    venv = _venv(tmp_path / "venv", list(wheels.values()), leave_out=("horovod", "mpi4py", "mpich"))  # no extras
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _env(venv, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")

    # the installed package is the wheel's, with its data, far from any checkout
    code = ("import mlflow_anf, mlflow_anf_lanedet, mlflow_anf_lanedet.assets as a; "
            "print(mlflow_anf.__file__); print(mlflow_anf_lanedet.__file__); print(a.labels_0313_path())")
    shown = subprocess.run([str(venv), "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for line in shown.stdout.split():
        assert str(tmp_path / "venv") in line and str(REPO_ROOT) not in line, line
    # the commands are on PATH and the generator finds its labels without any path outside the package
    synth = subprocess.run([str(venv.parent / "lanedet"), "synth", "--out", "download", "--frames", "16", "--seed",
                            "3"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert synth.returncode == 0, synth.stderr[-2000:]
    prep = subprocess.run([str(venv.parent / "lanedet"), "prepare", "--src", "download", "--out", "data"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert prep.returncode == 0, prep.stderr[-2000:]
    assert subprocess.run([str(venv.parent / "mlflow-anf"), "--help"], env=env, capture_output=True).returncode == 0

    # commit X changes a default: the run must show X's value, not the installed wheel's
    config = clone / "project" / "mlflow_anf_lanedet" / "config.py"
    before = config.read_text()
    marker = 'overlays: int = Field(4, ge=0'
    assert marker in before
    config.write_text(before.replace(marker, 'overlays: int = Field(3, ge=0'))
    git(clone, "commit", "-q", "-am", "three overlays")
    commit = git(clone, "rev-parse", "HEAD")
    git(clone, "reset", "-q", "--hard", "HEAD~1")  # the clone's work tree is the old code again

    cmd = [str(venv), "-m", "mlflow", "run", f"file://{clone}", "--version", commit, "-e", "train",
           "--env-manager", "local", "--experiment-name", "installed",
           "-P", f"data_dir={elsewhere / 'data'}", "-P", f"output_dir={elsewhere / 'outputs'}", "-P", "epochs=1",
           "-P", "batch_size=4", "-P", "val_batch_size=4", "-P", "backbone=resnet18_lite",
           "-P", "input_size=64x128", "-P", "num_workers=0"]
    proc = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("installed").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["overlays"] == "3"  # commit X's code ran
    tags = snapshot_fields(run.data.tags)
    assert tags["mlflow.source.git.commit"] == commit and tags["mlflow_anf.code.commit"] == commit
    assert tags["mlflow_anf.code.dirty"] == "false"
    assert tags["mlflow_anf.snapshot.data.provider"] == "local" and tags["mlflow_anf.snapshot.model.snapshot_id"]

    # reproduce accepts it: same code, data restorable (restore only, nothing trained again)
    rep = subprocess.run([str(venv.parent / "mlflow-anf"), "reproduce", run.info.run_id, "--restore-only",
                          "--target", str(elsewhere / "restored"), "-o", "json"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    assert json.loads(rep.stdout)["code"] == "same"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_plugin_only_mlflow_server_serves_a_snapshot_registered_model(
    wheels: dict[str, Path], tmp_path: Path,
) -> None:
    import mlflow
    import mlflow.pytorch
    import torch

    from mlflow_anf.artifact_repo import snapshot_artifact_uri
    from mlflow_anf.snapshots import get_provider

    venv = _venv(tmp_path / "venv", [wheels["mlflow_anf"]], leave_out=TRAINING_STACK)
    env = _env(venv)
    no_torch = subprocess.run([str(venv), "-c", "import mlflow_anf.artifact_repo, mlflow; import torch"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr, no_torch.stderr[-2000:]

    # a model saved on a volume, snapshotted, and registered from its snapshot:// URI (by the training side)
    volume = tmp_path / "outputs"
    mlflow.pytorch.save_model(torch.nn.Linear(2, 1), str(volume / "model"), pip_requirements=[],
                              serialization_format="pickle")
    snap = get_provider("local").create(str(volume), name="model-1")
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(tracking)
    try:
        version = mlflow.register_model(snapshot_artifact_uri(snap, "model"), "from-snapshot")
    finally:
        mlflow.set_tracking_uri(None)
    assert version.source.startswith("snapshot://")

    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(venv), "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", tracking, "--workers", "1"],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)
        url = f"{base}/model-versions/get-artifact?name=from-snapshot&version={version.version}&path=MLmodel"
        with urllib.request.urlopen(url, timeout=30) as resp:
            served = resp.read()
        assert served == (volume / "model" / "MLmodel").read_bytes()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
