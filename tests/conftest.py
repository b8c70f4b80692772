"""Shared pytest fixtures. Test modules add their own fixtures locally; keep this file small."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# Fixtures every test module sees without importing them (docs/testing.md lists them):
pytest_plugins = [
    "tests.doubles.k8s_emulator",  # Kubernetes API emulator: k8s_server, k8s_tls, kubeconfig_path, k8s_objects, ...
    "tests.doubles.mpi_operator_sim",  # MPI operator simulator: mpi_operator, sim_project
    "tests.support.mlflow_store",  # the MLflow tracking store: mlflow_store, tracking
    "tests.support.git",  # git_repo (helpers git, commit_all: import them from tests.support.git)
    "tests.support.postgres",  # a real PostgreSQL (Debian's packages) as k8s/mlflow/postgres.yaml sets it up: postgres
]

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # Tests run offline: MLflow must not try to send usage telemetry (inherited by subprocesses too).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Each test leaves ``os.environ`` as it found it. Code run in-process may set variables for its own children
    (Lightning's ``seed_everything`` sets ``PL_GLOBAL_SEED``, which seeds its DistributedSampler), and a later test's
    subprocesses must not inherit them."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def _run_in_tmp_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own scratch directory, so that MLflow's default artifact root (``./mlruns`` next to a
    sqlite store) and anything else written relative to the working directory never lands in the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


FIXTURES = REPO_ROOT / "fixtures"  # in the repository (fixtures/README.md: provenance and licences)


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's fixtures, with the TuSimple JSON files written back from their compact forms: a scratch
    copy laid out as ``tusimple/`` (frames, ``label_data_0313.json``, ``pred_example_0313.json``) and ``crds/``."""
    from mlflow_anf_lanedet.assets import labels_0313_path, write_label_lines

    root = tmp_path_factory.mktemp("fixtures")
    tusimple = root / "tusimple"
    tusimple.mkdir()
    for frame in sorted((FIXTURES / "tusimple").glob("*.jpg")):
        shutil.copyfile(frame, tusimple / frame.name)
    write_label_lines(labels_0313_path(), tusimple / "label_data_0313.json")
    write_label_lines(FIXTURES / "tusimple" / "pred_example_0313.npz", tusimple / "pred_example_0313.json")
    (root / "crds").symlink_to(FIXTURES / "crds")
    return root


@pytest.fixture(scope="session")
def tusimple_fixtures(fixtures_dir: Path) -> Path:
    return fixtures_dir / "tusimple"


@pytest.fixture(scope="session")
def crds_dir() -> Path:
    return FIXTURES / "crds"
