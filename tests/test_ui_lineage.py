"""Lineage where MLflow 3 users look, asserted through MLflow's API (what scripts/ui_screenshots.py's screenshots
show), and k8s/mlflow/server.yaml's store URI against a real PostgreSQL.

* the dataset of a data snapshot is named by its volume and identified by its content: byte-identical data is one
  dataset (MLflow dedups by experiment, name and digest: ``SqlAlchemyStore._log_inputs_impl``, mlflow 3.18,
  mlflow/store/tracking/sqlalchemy_store.py:2518-2567), other data another digest of the same name;
* the run's data snapshot is in its params (``mlflow_anf.data.snapshot``/``.digest``): MLflow's compare view lists
  params, not datasets;
* one JSON tag per snapshot role; runs written with one tag per field (and the older ``mlflow_anf.<role>.<field>``)
  are still read;
* the logged model's test metrics carry the data snapshot's dataset (the logged-model page's "Datasets used");
* ``mlflow server`` started with server.yaml's command, args and expanded store URI runs on PostgreSQL with proxied
  artifacts; the lanedet scenario on it, and (headless Chromium) the compare page shows both digests.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import mlflow
import pytest
from mlflow import MlflowClient

from mlflow_anf.snapshots.local import LocalSnapshotProvider
from mlflow_anf.tracking import dataset_digest, log_model_metrics, log_snapshot, run_dataset, tag_model_version
from mlflow_anf.vocabulary import PARAM_DATA_DIGEST, PARAM_DATA_SNAPSHOT, SnapshotRef, parse_snapshot_tags
from tests.conftest import REPO_ROOT
from tests.support.postgres import PostgresServer


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ui_screenshots", REPO_ROOT / "scripts" / "ui_screenshots.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["ui_screenshots"] = module
    spec.loader.exec_module(module)
    return module


def _volume(root: Path, payload: bytes) -> Path:
    vol = root / "tusimple"
    (vol / "clips").mkdir(parents=True)
    (vol / "clips" / "20.jpg").write_bytes(payload)
    (vol / "label_data_0313.json").write_text('{"lanes": []}\n')
    return vol


def _sqlite_datasets(uri: str, experiment_id: str) -> list[tuple[str, str]]:
    """The rows of MLflow's ``datasets`` table (mlflow/store/tracking/dbmodels/models.py ``SqlDataset``)."""
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        return sorted(db.execute("SELECT name, digest FROM datasets WHERE experiment_id = ?", (int(experiment_id),)))


# ------------------------------------------------------------------------------------------ the tracking side
def test_byte_identical_data_is_one_dataset_and_other_data_another_digest(
        tracking: MlflowClient, mlflow_store, tmp_path: Path) -> None:
    provider = LocalSnapshotProvider()
    first = _volume(tmp_path / "a", b"\x01" * 4000)
    copy = tmp_path / "b" / "tusimple"
    shutil.copytree(first, copy)  # byte-identical data in another volume of the same name
    changed = _volume(tmp_path / "c", b"\x02" * 4000)
    snaps = {"first": provider.create(str(first), "snap-1"), "again": provider.create(str(first), "snap-2"),
             "copy": provider.create(str(copy), "snap-3"), "changed": provider.create(str(changed), "snap-4")}
    runs = {}
    for name, snap in snaps.items():
        runs[name] = tracking.create_run(mlflow_store.experiment_id, run_name=name).info.run_id
        log_snapshot(snap, "data", run_id=runs[name], client=tracking)

    seen = {name: run_dataset(tracking.get_run(run_id)) for name, run_id in runs.items()}
    assert seen["first"] == seen["again"] == seen["copy"] == ("tusimple", dataset_digest(snaps["first"]))
    assert seen["changed"][0] == "tusimple" and seen["changed"][1] != seen["first"][1]
    # one row per (name, digest) in MLflow's own table: three runs on the same bytes share one dataset
    assert _sqlite_datasets(mlflow_store.uri, mlflow_store.experiment_id) == sorted(
        {("tusimple", seen["first"][1]), ("tusimple", seen["changed"][1])})
    # the params the compare view shows side by side
    params = {name: tracking.get_run(run_id).data.params for name, run_id in runs.items()}
    assert params["first"] == {PARAM_DATA_SNAPSHOT: snaps["first"].ref, PARAM_DATA_DIGEST: seen["first"][1]}
    assert params["changed"][PARAM_DATA_DIGEST] == seen["changed"][1] != params["first"][PARAM_DATA_DIGEST]


def test_a_second_data_snapshot_keeps_the_first_params_and_records_its_tag(
        tracking: MlflowClient, mlflow_store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    provider = LocalSnapshotProvider()
    vol = _volume(tmp_path, b"x" * 100)
    one = provider.create(str(vol), "one")
    (vol / "label_data_0313.json").unlink()
    (vol / "label_data_0313.json").write_text('{"lanes": [1]}\n')
    two = provider.create(str(vol), "two")
    run_id = tracking.create_run(mlflow_store.experiment_id).info.run_id
    log_snapshot(one, "data", run_id=run_id, client=tracking)
    log_snapshot(two, "data", run_id=run_id, client=tracking)  # MLflow would refuse to change a param
    run = tracking.get_run(run_id)
    assert run.data.params[PARAM_DATA_SNAPSHOT] == one.ref
    assert parse_snapshot_tags(run.data.tags)["data"].name == "two"
    assert f"{two.ref} is recorded in its tags only" in caplog.text


def test_one_json_tag_per_snapshot_and_every_earlier_layout_is_read(tmp_path: Path) -> None:
    ref = SnapshotRef(role="data", provider="local", volume="/v/tusimple", name="s1", snapshot_id="s1",
                      ref="local:/v/tusimple@s1", digest="sha256:" + "ab" * 32)
    tags = ref.tags()
    assert list(tags) == ["mlflow_anf.snapshot.data"] and json.loads(tags["mlflow_anf.snapshot.data"])["name"] == "s1"
    per_field = ref.field_tags()  # written before the JSON tag
    oldest = {k.replace("mlflow_anf.snapshot.", "mlflow_anf."): v for k, v in per_field.items()}
    for layout in (tags, per_field, oldest):
        assert parse_snapshot_tags(layout) == {"data": ref}
    # the JSON tag wins field by field over the per-field tags of the same role
    newer = ref.model_copy(update={"name": "s2", "snapshot_id": "s2", "ref": "local:/v/tusimple@s2"})
    assert parse_snapshot_tags({**per_field, **newer.tags()})["data"] == newer
    # a record too long for one tag value is written one tag per field, which the parser reads as well
    long = ref.model_copy(update={"volume": "/v/" + "d" * 8100})
    assert "mlflow_anf.snapshot.data.volume" in long.tags()
    assert parse_snapshot_tags(long.tags())["data"].volume.endswith("...")


def test_the_logged_models_test_metrics_carry_the_data_snapshot(
        tracking: MlflowClient, mlflow_store, tmp_path: Path) -> None:
    snap = LocalSnapshotProvider().create(str(_volume(tmp_path, b"y" * 100)), "snap")
    with mlflow.start_run(experiment_id=mlflow_store.experiment_id) as run:
        log_snapshot(snap, "data", client=tracking)
        model = mlflow.initialize_logged_model(name="model", source_run_id=run.info.run_id)
        got = log_model_metrics(run.info.run_id, model.model_id, {"test_accuracy": 0.75, "test_fp": 0.1},
                                client=tracking, step=3)
    assert got == ("tusimple", dataset_digest(snap))
    metrics = {m.key: m for m in tracking.get_logged_model(model.model_id).metrics}
    assert sorted(metrics) == ["test_accuracy", "test_fp"]
    acc = metrics["test_accuracy"]
    assert (acc.value, acc.step, acc.dataset_name, acc.dataset_digest, acc.run_id) == (
        0.75, 3, "tusimple", dataset_digest(snap), run.info.run_id)
    assert tracking.get_run(run.info.run_id).data.metrics["test_accuracy"] == 0.75

    # the registered version's page shows tags (not metrics, not datasets): the lineage is copied there
    tracking.create_registered_model("lanedet")
    version = tracking.create_model_version("lanedet", f"models:/{model.model_id}", run_id=run.info.run_id,
                                            model_id=model.model_id)
    expected = {"mlflow_anf.data.snapshot": snap.ref, "mlflow_anf.dataset": f"tusimple ({dataset_digest(snap)})",
                "test_accuracy": "0.75", "test_fp": "0.1"}
    assert tag_model_version("lanedet", version.version, tracking) == expected
    assert tracking.get_model_version("lanedet", version.version).tags == expected


# --------------------------------------------------------------------------- the server on PostgreSQL (real)
@pytest.fixture(scope="module")
def server(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory):
    script = _script()
    with script.tracking_server(postgres, tmp_path_factory.mktemp("mlflow-server")) as srv:
        yield srv


def test_the_manifests_store_uri_runs_mlflow_server_on_postgres_with_proxied_artifacts(
        server, postgres: PostgresServer, tmp_path: Path) -> None:
    import psycopg2

    # the manifest's own form, with the Secret's password and the Service's host and port as $(VAR)s
    assert server.store_uri_form == ("postgresql+psycopg2://mlflow:$(MLFLOW_DB_PASSWORD)@$(MLFLOW_DB_HOST):"
                                     "$(MLFLOW_DB_PORT)/mlflow")
    client = MlflowClient(server.uri)
    exp = client.create_experiment("pg-check")
    run = client.create_run(exp, run_name="through-the-server")
    client.log_param(run.info.run_id, "p", "1")
    client.log_metric(run.info.run_id, "m", 0.5)
    (tmp_path / "note.txt").write_text("proxied\n")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run.info.run_id)

    back = client.get_run(run.info.run_id)
    assert (back.data.params, back.data.metrics, back.info.status) == ({"p": "1"}, {"m": 0.5}, "FINISHED")
    assert back.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: the client never sees the volume
    local = Path(client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "dl")))
    assert local.read_text() == "proxied\n"
    assert list(server.artifacts.rglob("note.txt"))  # ... which the server wrote into --artifacts-destination
    # and the run is in PostgreSQL, logged in as the manifest's user with the Secret's password
    with psycopg2.connect(host=postgres.host, port=postgres.port, user="mlflow", password=postgres.password,
                          dbname="mlflow") as db, db.cursor() as cur:
        cur.execute("SELECT name, status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchall() == [("through-the-server", "FINISHED")]


@pytest.mark.slow
def test_lanedet_runs_on_the_server_show_their_data_where_the_ui_looks(
        server, postgres: PostgresServer, tmp_path: Path) -> None:
    import psycopg2

    script = _script()
    scenario = script.build_scenario(server.uri, tmp_path)
    client = MlflowClient(server.uri)
    runs = {name: client.get_run(run_id) for name, run_id in scenario.runs.items()}
    data = {name: run_dataset(run) for name, run in runs.items()}

    # byte-identical data (one volume, unchanged between two snapshots): one dataset; other data: another digest
    assert data["same-data-1"] == data["same-data-2"] and data["same-data-1"][0] == "tusimple"
    assert data["other-data"][0] == "tusimple" and data["other-data"][1] != data["same-data-1"][1]
    with psycopg2.connect(host=postgres.host, port=postgres.port, user="mlflow", password=postgres.password,
                          dbname="mlflow") as db, db.cursor() as cur:
        cur.execute("SELECT name, digest FROM datasets WHERE experiment_id = %s ORDER BY digest",
                    (int(scenario.experiment_id),))
        assert sorted(cur.fetchall()) == sorted({data["same-data-1"], data["other-data"]})
    # the compare view's rows: the params of each run name its snapshot and digest
    for name, run in runs.items():
        assert run.data.params[PARAM_DATA_DIGEST] == data[name][1]
        assert run.data.params[PARAM_DATA_SNAPSHOT] == parse_snapshot_tags(run.data.tags)["data"].ref
    # grouped tags: one per snapshot role, no per-field tags
    tags = runs["same-data-1"].data.tags
    assert sorted(k for k in tags if k.startswith("mlflow_anf.snapshot")) == [
        "mlflow_anf.snapshot.data", "mlflow_anf.snapshot.model"]
    # the logged model: its test metrics, measured on the run's data snapshot ("Datasets used")
    model = client.get_logged_model(scenario.models["same-data-1"])
    metrics = {m.key: m for m in model.metrics}
    assert {"test_accuracy", "test_fp", "test_fn"} <= set(metrics)
    assert {(m.dataset_name, m.dataset_digest) for m in model.metrics} == {data["same-data-1"]}
    assert metrics["test_accuracy"].value == runs["same-data-1"].data.metrics["test_accuracy"]
    assert model.source_run_id == scenario.runs["same-data-1"]
    # the registered version is that model
    version = client.get_model_version(script.MODEL_NAME, scenario.version)
    # (the SQL registry keeps the source, not the model id: see mlflow_anf.tracking._logged_model_of)
    assert (version.source, version.run_id) == (f"models:/{model.model_id}", scenario.runs["same-data-1"])
    assert version.tags["mlflow_anf.dataset"] == "tusimple ({})".format(data["same-data-1"][1])
    assert float(version.tags["test_accuracy"]) == pytest.approx(metrics["test_accuracy"].value, rel=1e-3, abs=1e-4)

    # the compare page in headless Chromium: both digests side by side
    out = tmp_path / "shots"
    script.screenshots(scenario, out, {"compare": [data["same-data-1"][1], data["other-data"][1]]}, only=["compare"])
    text = scenario.texts["compare"]
    assert data["same-data-1"][1] in text and data["other-data"][1] in text and PARAM_DATA_DIGEST in text
    assert (out / "compare.png").stat().st_size > 10_000
