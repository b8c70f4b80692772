"""Runs recorded before the run vocabulary moved snapshot tags under ``mlflow_anf.snapshot.<role>.*`` still work.

Up to commit ca4385a, ``mlflow_anf.tracking.log_snapshot`` wrote ``mlflow_anf.<role>.<field>`` (fields snapshot_id,
name, provider, volume, digest, ref, created, artifact_uri) and ``provenance.json`` listed snapshots without their
ids. The store below is written in exactly that layout: a real run of the stub project, whose snapshot tags are then
moved back to the old keys (the values are the ones the old code wrote: ``SnapshotRef.tags`` is unchanged apart from
the key). ``reproduce``, ``diff``, ``snapshot restore --run-id`` and the ``snapshot://`` URI in the old
``artifact_uri`` tag must all still work on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from mlflow_anf.snapshots import get_provider
from mlflow_anf.snapshots.uri import snapshot_artifact_uri
from mlflow_anf.tracking import get_run_snapshots
from mlflow_anf.vocabulary import TAG_REPRODUCES, parse_snapshot_tags
from tests.test_reproduce import (  # noqa: F401 - fixtures of that module
    _entry_points_run_this_python,
    cli,
    data_dir,
    stub_project,
)

OLD_FIELDS = ("snapshot_id", "name", "provider", "volume", "digest", "ref", "created", "artifact_uri")


def to_old_layout(client: MlflowClient, run_id: str) -> dict[str, str]:
    """Move the run's snapshot tags to the pre-vocabulary keys; returns the old tags written."""
    tags = client.get_run(run_id).data.tags
    old: dict[str, str] = {}
    for key, value in tags.items():
        parts = key.split(".")
        if len(parts) == 4 and parts[:2] == ["mlflow_anf", "snapshot"] and parts[3] in OLD_FIELDS:
            old[f"mlflow_anf.{parts[2]}.{parts[3]}"] = value
            client.delete_tag(run_id, key)
        elif len(parts) == 3 and parts[:2] == ["mlflow_anf", "snapshot"]:  # today's JSON record: its fields
            old.update({f"mlflow_anf.{parts[2]}.{f}": v for f, v in json.loads(value).items() if f in OLD_FIELDS})
            client.delete_tag(run_id, key)
    for key, value in old.items():
        client.set_tag(run_id, key, value)
    assert not any(k.startswith("mlflow_anf.snapshot.") for k in client.get_run(run_id).data.tags)
    return old


@pytest.fixture
def old_run(tracking: MlflowClient, mlflow_store: Any, stub_project: Path, data_dir: Path,  # noqa: F811
            tmp_path: Path) -> tuple[str, Path, Path]:
    out = tmp_path / "out"
    submitted = mlflow.projects.run(str(stub_project), "train", parameters={"data_dir": str(data_dir),
                                    "output_dir": str(out)}, experiment_id=mlflow_store.experiment_id,
                                    env_manager="local")
    run_id = submitted.run_id
    # the stub snapshots its output directory without a path inside; lanedet's train names one ("model"): record
    # the URI of the file as log_snapshot(..., artifact_path=...) did, under the old key
    ref = get_run_snapshots(run_id, tracking)["model"]
    uri = snapshot_artifact_uri(get_provider("local").get(ref.volume, ref.name), "model.txt")
    tracking.set_tag(run_id, "mlflow_anf.snapshot.model.artifact_uri", uri)
    old = to_old_layout(tracking, run_id)
    assert {"mlflow_anf.data.snapshot_id", "mlflow_anf.data.digest", "mlflow_anf.model.ref"} <= set(old)
    assert old["mlflow_anf.model.artifact_uri"] == uri
    return run_id, data_dir, out


def test_old_snapshot_tags_are_read_as_before(tracking: MlflowClient, old_run: tuple[str, Path, Path]) -> None:
    run_id, data, out = old_run
    refs = get_run_snapshots(run_id, tracking)
    assert set(refs) == {"data", "model"}
    assert refs["data"].volume == str(data) and refs["model"].volume == str(out)
    assert refs["data"].digest and refs["data"].snapshot_id
    # a group that is not a snapshot record (mlflow_anf.code.*) is not mistaken for one
    assert set(parse_snapshot_tags(tracking.get_run(run_id).data.tags, strict=False)) == {"data", "model"}


def test_old_run_is_reproduced_and_diffed(tracking: MlflowClient, old_run: tuple[str, Path, Path],
                                          tmp_path: Path) -> None:
    run_id, data, _ = old_run
    shutil.rmtree(data / "clips")  # the live data changed after the run
    result = cli("reproduce", run_id, "--workdir", str(tmp_path / "repro"), "--output", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["identical"] is True and report["restored"]["volume"] == str(tmp_path / "repro" / "data")
    new = tracking.get_run(report["run_id"])
    assert new.data.tags[TAG_REPRODUCES] == run_id
    diff = json.loads(cli("diff", run_id, report["run_id"], "-o", "json").stdout)
    assert diff["summary"]["data"] is True  # same data digest, read from the old tags on one side
    assert {r["key"] for r in diff["data"]} >= {"data.digest"}


def test_old_run_restores_by_run_id_and_its_snapshot_uri_still_loads(
    tracking: MlflowClient, old_run: tuple[str, Path, Path], tmp_path: Path
) -> None:
    run_id, data, out = old_run
    target = tmp_path / "restored"
    result = cli("snapshot", "restore", "--run-id", run_id, "--target", str(target))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in data.iterdir() if p.name != ".snapshot")

    model = cli("snapshot", "restore", "--run-id", run_id, "--role", "model", "--target", str(tmp_path / "m"))
    assert model.exit_code == 0, model.output
    uri = tracking.get_run(run_id).data.tags["mlflow_anf.model.artifact_uri"]
    (out / "model.txt").unlink()  # the live copy is replaced (as a new training writes it); the snapshot is not
    (out / "model.txt").write_text("overwritten after the run\n")
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "dl"))
    text = Path(local).read_text()
    assert text != "overwritten after the run\n" and float(text) > 0
