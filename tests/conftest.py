"""Shared pytest fixtures. Test modules add their own fixtures locally; keep this file small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.k8s_emulator"]  # Kubernetes API emulator fixtures (k8s_server, kubeconfig_path, ...)

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # Tests run offline: MLflow must not try to send usage telemetry (inherited by subprocesses too).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(autouse=True)
def _run_in_tmp_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own scratch directory, so that MLflow's default artifact root (``./mlruns`` next to a
    sqlite store) and anything else written relative to the working directory never lands in the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def _fixtures_dir() -> Path:
    env = os.environ.get("MLFLOW_ANF_FIXTURES")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = _fixtures_dir()
    if not path.is_dir():
        raise RuntimeError(f"shared fixtures not found at {path}; set MLFLOW_ANF_FIXTURES")
    return path


@pytest.fixture(scope="session")
def tusimple_fixtures(fixtures_dir: Path) -> Path:
    return fixtures_dir / "tusimple"


@pytest.fixture(scope="session")
def crds_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "crds"
