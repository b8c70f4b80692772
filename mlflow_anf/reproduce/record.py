"""Step 1 of a reproduction, and what ``diff`` reads: one run as a :class:`RunRecord`, and what the ``mpijob``
backend recorded about it (its backend config, the command it ran). Reads only; MLflow is imported inside."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.provenance import Provenance, backend_config_from_tags, parse_backend_config
from mlflow_anf.reproduce.errors import SourceGone
from mlflow_anf.reproduce.names import BACKEND_CONFIG_ARTIFACT, MPIJOB_ARTIFACT

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


class RunRecord(BaseModel):
    """What reproduce and diff read from one run."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    run_id: str
    experiment_id: str
    name: str = ""
    status: str = ""
    start_time: int | None = None
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    provenance: Provenance | None = None
    snapshots: dict[str, Any] = Field(default_factory=dict, description="role -> SnapshotRef")


def client_or_default(client: MlflowClient | None) -> MlflowClient:
    if client is not None:
        return client
    from mlflow import MlflowClient

    return MlflowClient()


def load_run_record(run_id: str, client: MlflowClient | None = None) -> RunRecord:
    """Read run *run_id* with its provenance and snapshot references (lenient about incomplete snapshot tags)."""
    from mlflow.exceptions import MlflowException

    from mlflow_anf.provenance import load_provenance
    from mlflow_anf.snapshots.base import SnapshotError
    from mlflow_anf.tracking import get_run_snapshots

    client = client_or_default(client)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise SourceGone(f"run {run_id}: not found in the tracking store") from None
        raise
    try:
        snapshots: dict[str, Any] = dict(get_run_snapshots(run_id, client))
    except SnapshotError as exc:
        log.warning("run %s: %s", run_id, exc)
        snapshots = {}
    return RunRecord(
        run_id=run_id, experiment_id=str(run.info.experiment_id), name=run.info.run_name or "",
        status=run.info.status, start_time=run.info.start_time, params=dict(run.data.params),
        metrics=dict(run.data.metrics), tags=dict(run.data.tags), provenance=load_provenance(run_id, client),
        snapshots=snapshots,
    )


def read(run_id: str, client: MlflowClient | None = None) -> RunRecord:
    """Step 1: the run to reproduce (:func:`load_run_record`); :class:`SourceGone` when there is no such run."""
    return load_run_record(run_id, client)


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str | None:
    """The text of artifact *path* of run *run_id*, or ``None`` when the run has no such artifact."""
    import tempfile

    folder = path.rsplit("/", 1)[0] if "/" in path else None
    if path not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory(prefix="mlflow-anf-") as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text(encoding="utf-8")


def recorded_backend_config(client: MlflowClient, rec: RunRecord) -> dict[str, Any] | None:
    """The backend config the ``mpijob`` backend recorded: its tag, else its ``mlflow_anf/backend-config.json``."""
    from_tag = backend_config_from_tags(rec.tags)
    if from_tag is not None:
        return from_tag
    text = _artifact_text(client, rec.run_id, BACKEND_CONFIG_ARTIFACT)
    return None if text is None else parse_backend_config(text, f"artifact {BACKEND_CONFIG_ARTIFACT}")


def recorded_command(client: MlflowClient, run_id: str) -> str | None:
    """The entry-point command the ``mpijob`` backend ran for *run_id* (from its ``mlflow_anf/mpijob.yaml``)."""
    import yaml

    text = _artifact_text(client, run_id, MPIJOB_ARTIFACT)
    if text is None:
        return None
    manifest = yaml.safe_load(text)
    try:
        containers = manifest["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"]
        args = list(containers[0]["args"])
    except (KeyError, IndexError, TypeError):
        return None
    return args[args.index("--") + 1] if "--" in args[:-1] else None
