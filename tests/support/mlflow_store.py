"""The one MLflow tracking-store fixture of the suite (loaded by ``pytest_plugins`` in tests/conftest.py).

* ``mlflow_store``: a fresh sqlite store for one test, copied from a store migrated once per session
  (``_mlflow_db_template``: creating the schema takes seconds, copying the file milliseconds), with an experiment
  ``backend`` whose artifacts go under the test's ``tmp_path``. Nothing is made global: pass ``mlflow_store.uri``.
* ``tracking``: the same store made *the* tracking store of the test: ``MLFLOW_TRACKING_URI`` (seen by
  subprocesses) and ``mlflow.set_tracking_uri`` (seen by code that calls ``MlflowClient()`` or ``mlflow.*``),
  both restored afterwards. Returns an ``MlflowClient`` for it.

MLflow telemetry stays off in both (``MLFLOW_DISABLE_TELEMETRY``, also set for the session by tests/conftest.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


@dataclass
class MlflowStore:
    uri: str  # sqlite:///<root>/mlflow.db
    experiment_id: str  # the experiment "backend", artifacts under <root>/artifacts
    root: Path

    def client(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)


@pytest.fixture(scope="session")
def _mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised (migrated) sqlite store, made once per session: copying it is much faster than migrating."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-template")
    path = folder / "mlflow.db"
    staging = folder / "staging.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        # the store's "Default" experiment (id 0) gets ./mlruns as its artifact location: make that the template's
        # folder, not the working directory of whichever test happens to come first
        mp.chdir(folder)
        MlflowClient(f"sqlite:///{staging}").search_experiments()
    staging.replace(path)
    return path


@pytest.fixture
def mlflow_store(_mlflow_db_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowStore:
    """A fresh sqlite tracking store of this test's own, with an experiment ``backend`` (artifacts under tmp)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no phoning home from tests (and their subprocesses)
    root = tmp_path / "mlflow"
    root.mkdir()
    shutil.copy(_mlflow_db_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    exp = MlflowClient(uri).create_experiment("backend", artifact_location=(root / "artifacts").as_uri())
    return MlflowStore(uri, exp, root)


@pytest.fixture
def tracking(mlflow_store: MlflowStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    """``mlflow_store`` as the tracking store of the test, in this process and its subprocesses; an
    ``MlflowClient`` for it. The previous global tracking URI (usually none) is restored afterwards."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri  # what set_tracking_uri set, None if nothing did (not the default)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store.uri)
    mlflow.set_tracking_uri(mlflow_store.uri)
    try:
        yield MlflowClient(mlflow_store.uri)
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets it (as mlflow's own _use_tracking_uri does)
        # mlflow.set_experiment() in a test leaves its experiment as the process's active one (a module global, not
        # the environment the autouse fixture restores): the next test's fresh store has no such experiment
        from mlflow.tracking import fluent

        fluent._active_experiment_id = None
