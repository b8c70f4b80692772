"""`mlflow-anf reproduce` and `mlflow-anf diff` end to end, with no mocks of our own code.

* local: a tiny real SCNN training (deterministic) is reproduced from its data snapshot after the original data
  directory was changed and emptied - identical final metrics, same data digest, runs linked;
* local, with a stub entry point that does what `lanedet train` does with MLflow (provenance, data and model
  snapshots) in a fraction of the time: missing snapshot, dirty / changed / vanished code;
* Kubernetes: the mpijob backend against the API emulator and the simulated MPI operator - the data snapshot is
  restored as a new PVC with a ``dataSource``, the MPIJob is resubmitted mounting it, the runs are linked; a gone
  image (a local registry answers 404) or a gone VolumeSnapshot is refused before anything is created;
* diff: tables and JSON, from runs written to a real sqlite store.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_anf.cli import main
from mlflow_anf.provenance import Provenance, code_version, load_provenance, log_provenance
from mlflow_anf.reproduce import (
    TAG_REPRODUCED_BY,
    TAG_REPRODUCES,
    TAG_REWRITTEN,
    RunRecord,
    compare_runs,
    entry_point_params,
    parse_image_ref,
    pin_image,
    rewrite_params,
)
from mlflow_anf.snapshots import get_provider
from mlflow_anf.tracking import SnapshotRef, get_run_snapshots, log_snapshot, snapshot_and_log
from tests.conftest import REPO_ROOT
from tests.doubles.mpi_operator_sim import write_project
from tests.support.git import commit_all, git
from tests.support.http_server import serve
from tests.support.snapshot_tags import snapshot_fields
from tests.support.tiny_data import make_tiny_tusimple

NS = "lane"


def cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


@pytest.fixture(autouse=True)
def _entry_points_run_this_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry-point subprocesses (``mlflow run``, ``mpirun``) find this interpreter as ``python``, one OpenMP thread
    each. The tracking store they log to is the shared ``tracking`` fixture's (tests/support/mlflow_store.py)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))


# ---------------------------------------------------------------------------------------------------------------
# pure parts

def record(run_id: str, **kw: Any) -> RunRecord:
    return RunRecord(run_id=run_id, experiment_id="1", **kw)


def ref(volume: str, digest: str | None, role: str = "data", provider: str = "local") -> SnapshotRef:
    return SnapshotRef(role=role, provider=provider, volume=volume, name="s1", snapshot_id="s1",
                       ref=f"{provider}:{volume}@s1", digest=digest)


def test_compare_runs_rewritten_params_timing_metrics_and_verdict() -> None:
    a = record("a", params={"data_dir": "/d", "lr": "0.1", "seed": "1"},
               metrics={"loss": 0.5, "acc": math.nan, "throughput": 10.0, "system/cpu": 3.0, "old": 1.0},
               snapshots={"data": ref("/d", "sha256:aa")})
    b = record("b", params={"data_dir": "/r/data", "lr": "0.1", "seed": "1"},
               metrics={"loss": 0.5, "acc": math.nan, "throughput": 12.0, "system/cpu": 9.0, "old": 1.0},
               snapshots={"data": ref("/r/data", "sha256:aa")},
               tags={TAG_REPRODUCES: "a", TAG_REWRITTEN: json.dumps({"data_dir": {"from": "/d", "to": "/r/data"}})})
    d = compare_runs(a, b)
    rows = {r.key: r.status for r in d.params}
    assert rows == {"data_dir": "rewritten", "lr": "same", "seed": "same"}
    metrics = {m.key: (m.status, m.timing) for m in d.metrics}
    assert metrics["acc"] == ("same", False)  # NaN == NaN for reproducibility
    assert metrics["throughput"] == ("differs", True) and metrics["system/cpu"] == ("differs", True)
    assert d.summary.params and d.summary.metrics and d.summary.data is True and d.summary.code is None
    assert d.summary.reproduced and d.b.reproduces == "a"

    c = record("c", params={"data_dir": "/d", "lr": "0.2"}, metrics={"loss": 0.25, "new": 1.0},
               snapshots={"data": ref("/d", "sha256:bb")})
    d2 = compare_runs(a, c)
    assert {r.key: r.status for r in d2.params} == {"data_dir": "same", "lr": "differs", "seed": "only_a"}
    m2 = {m.key: m for m in d2.metrics}
    assert (m2["loss"].status, m2["loss"].delta) == ("differs", -0.25)
    assert m2["old"].status == "only_a" and m2["new"].status == "only_b"
    assert not d2.summary.params and d2.summary.data is False and not d2.summary.reproduced


def test_entry_point_params_undo_mlflow_quoting_and_spell_extras_as_options() -> None:
    declared = {"data_dir": None, "pvc_name": "", "note": ""}
    params = {"data_dir": "/d", "pvc_name": "''", "note": "'two words'", "weight_decay": "0.1", "momentum": "0.9",
              "model.lr": "1"}
    project, dropped = entry_point_params(record("a", params=params, tags={"mlflow.source.type": "PROJECT"}), declared)
    assert project == {"data_dir": "/d", "pvc_name": "", "note": "two words", "momentum": "0.9"}
    assert dropped == ["model.lr (not an option name)", "weight_decay (logged by the code itself)"]
    direct, _ = entry_point_params(record("a", params=params, tags={"mlflow.source.type": "LOCAL"}), declared)
    assert direct["weight-decay"] == "0.1" and direct["momentum"] == "0.9"


def test_path_params_are_rewritten_relative_to_the_recorded_cwd(tmp_path: Path) -> None:
    from mlflow_anf.snapshots import traits_for
    from mlflow_anf.snapshots.base import volume_matcher

    params = {"data_dir": "data", "out": str(tmp_path / "out"), "lr": "0.1", "uri": "s3://b/data"}
    same_path = volume_matcher(traits_for("local"), str(tmp_path / "data"), tmp_path)
    new, changed = rewrite_params(params, [(same_path, "/new")])
    assert new == {"data_dir": "/new", "out": str(tmp_path / "out"), "lr": "0.1", "uri": "s3://b/data"}
    assert changed == {"data_dir": {"from": "data", "to": "/new"}}


def test_image_references() -> None:
    digest = "sha256:" + "0" * 64
    assert parse_image_ref("ubuntu") == ("registry-1.docker.io", "library/ubuntu", "latest")
    assert parse_image_ref("org/app:1.2") == ("registry-1.docker.io", "org/app", "1.2")
    assert parse_image_ref(f"127.0.0.1:5000/lanedet:0.1@{digest}") == ("127.0.0.1:5000", "lanedet", digest)
    assert parse_image_ref("acr.azurecr.io/team/lanedet:2") == ("acr.azurecr.io", "team/lanedet", "2")
    assert pin_image("reg.io/a:1", digest) == f"reg.io/a:1@{digest}"
    assert pin_image(f"reg.io/a@{digest}", "sha256:" + "1" * 64) == f"reg.io/a@{digest}"
    assert pin_image("reg.io/a:1", None) == "reg.io/a:1"


# ---------------------------------------------------------------------------------------------------------------
# a stub project that does with MLflow what `lanedet train` does: provenance, data snapshot, outputs, model snapshot

STUB_MLPROJECT = """\
name: stub
entry_points:
  train:
    parameters:
      data_dir: {type: string}
      output_dir: {type: string, default: outputs}
      seed: {type: float, default: 1}
    command: "python train.py --data-dir {data_dir} --output-dir {output_dir} --seed {seed}"
"""

STUB_TRAIN = '''\
"""Train on every byte of the data: the score changes with any change to the data or the seed."""
import argparse, hashlib, os, pathlib
import mlflow
from mlflow_anf.provenance import log_provenance
from mlflow_anf.tracking import snapshot_and_log

p = argparse.ArgumentParser()
p.add_argument("--data-dir"); p.add_argument("--output-dir"); p.add_argument("--seed", type=float)
a = p.parse_args()
with mlflow.start_run() as run:
    log_provenance(run.info.run_id, entry_point="train", code_path=__file__)
    snapshot_and_log("local", a.data_dir, "data")
    h = hashlib.sha256()
    for path in sorted(pathlib.Path(a.data_dir).rglob("*")):
        if ".snapshot" not in path.parts and path.is_file():
            h.update(path.relative_to(a.data_dir).as_posix().encode() + path.read_bytes())
    score = int(h.hexdigest()[:8], 16) / 2**32 + a.seed
    out = pathlib.Path(a.output_dir); out.mkdir(parents=True, exist_ok=True)
    (out / "model.txt").write_text(repr(score))
    snapshot_and_log("local", str(out), "model")
    mlflow.log_metric("score", score)
    mlflow.log_metric("throughput", float(os.getpid()))
'''


@pytest.fixture
def stub_project(git_repo: Path) -> Path:
    project = git_repo
    (project / "MLproject").write_text(STUB_MLPROJECT)
    (project / "train.py").write_text(STUB_TRAIN)
    (project / ".gitignore").write_text("__pycache__/\n")
    commit_all(project)
    return project


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "clips" / "a").mkdir(parents=True)
    (data / "clips" / "a" / "20.jpg").write_bytes(os.urandom(4096))
    (data / "label_data_0313.json").write_text('{"lanes": [[1, 2]]}\n')
    return data


def stub_score(data: Path, seed: float) -> float:
    """What STUB_TRAIN computes."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(data.rglob("*")):
        if ".snapshot" not in path.parts and path.is_file():
            h.update(path.relative_to(data).as_posix().encode() + path.read_bytes())
    return int(h.hexdigest()[:8], 16) / 2**32 + seed


def source_run(client: MlflowClient, project: Path, data: Path, out: Path, experiment_id: str) -> str:
    """The record a stub training leaves, written in-process (params as MLflow's project runner logs them)."""
    run = client.create_run(experiment_id, tags={"mlflow.source.type": "PROJECT", "mlflow.source.name": str(project),
                                                 "mlflow.project.entryPoint": "train"})
    run_id = run.info.run_id
    for key, value in {"data_dir": str(data), "output_dir": str(out), "seed": "1"}.items():
        client.log_param(run_id, key, value)
    log_provenance(run_id, code_path=project / "train.py", client=client, environ={})
    snapshot_and_log("local", str(data), "data", run_id=run_id, client=client)
    out.mkdir(parents=True, exist_ok=True)
    score = stub_score(data, 1.0)
    (out / "model.txt").write_text(repr(score))
    snapshot_and_log("local", str(out), "model", run_id=run_id, client=client)
    client.log_metric(run_id, "score", score)
    client.set_terminated(run_id)
    return run_id


def test_stub_run_reproduces_on_a_restored_copy_and_both_runs_are_linked(
    tracking: MlflowClient, mlflow_store: Any, stub_project: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    submitted = mlflow.projects.run(str(stub_project), "train", parameters={"data_dir": str(data_dir),
                                    "output_dir": str(out)}, experiment_id=mlflow_store.experiment_id,
                                    env_manager="local")
    source = submitted.run_id
    original = tracking.get_run(source)
    # the live data changes after the run: a file replaced, another deleted
    (data_dir / "label_data_0313.json").unlink()
    (data_dir / "label_data_0313.json").write_text("changed\n")
    shutil.rmtree(data_dir / "clips")

    workdir = tmp_path / "repro"
    result = cli("reproduce", source, "--workdir", str(workdir), "--output", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    new = report["run_id"]
    assert report["identical"] is True and report["code"] == "same" and report["status"] == "FINISHED"
    assert report["restored"]["volume"] == str(workdir / "data")
    assert report["rewritten"] == {"data_dir": {"from": str(data_dir), "to": str(workdir / "data")},
                                   "output_dir": {"from": str(out), "to": str(workdir / "outputs")}}
    run = tracking.get_run(new)
    assert run.data.metrics["score"] == original.data.metrics["score"]
    assert run.data.tags[TAG_REPRODUCES] == source
    assert tracking.get_run(source).data.tags[TAG_REPRODUCED_BY] == new
    assert run.data.tags["mlflow_anf.reproduce.identical"] == "true"
    digest = "mlflow_anf.snapshot.data.digest"
    assert snapshot_fields(run.data.tags)[digest] == snapshot_fields(original.data.tags)[digest]
    assert snapshot_fields(run.data.tags)["mlflow_anf.snapshot.data.volume"] == str(workdir / "data")
    moved = {"data_dir": str(workdir / "data"), "output_dir": str(workdir / "outputs")}
    # the data snapshot params name the restored copy's snapshot, of the same content (so the same digest)
    moved["mlflow_anf.data.snapshot"] = get_run_snapshots(run.info.run_id)["data"].ref
    assert run.data.params == {**original.data.params, **moved}  # logged as MLflow's runner logged the source's
    assert (out / "model.txt").exists() and (workdir / "outputs" / "model.txt").exists()

    # an override is recorded, shows up in diff, and a second reproduction is appended to the back-link
    result = cli("reproduce", source, "--workdir", str(tmp_path / "repro2"), "-P", "seed=2")
    assert result.exit_code == 1, result.output  # finished, but the metric differs: reported, not hidden
    assert "metrics DIFFER: score" in result.output
    second = tracking.get_run(source).data.tags[TAG_REPRODUCED_BY].split(",")
    assert second[0] == new and len(second) == 2
    assert json.loads(tracking.get_run(second[1]).data.tags["mlflow_anf.reproduce.overrides"]) == {"seed": "2"}
    diff = json.loads(cli("diff", source, second[1], "-o", "json").stdout)
    assert {r["key"]: r["status"] for r in diff["params"]}["seed"] == "differs"
    assert diff["summary"]["metrics"] is False and diff["summary"]["data"] is True


def test_missing_snapshot_is_refused_with_exit_3_and_nothing_created(
    tracking: MlflowClient, mlflow_store: Any, stub_project: Path, data_dir: Path, tmp_path: Path
) -> None:
    source = source_run(tracking, stub_project, data_dir, tmp_path / "out", mlflow_store.experiment_id)
    snap = get_run_snapshots(source, tracking)["data"]
    get_provider("local").delete(snap.volume, snap.name)
    workdir = tmp_path / "repro"
    result = cli("reproduce", source, "--workdir", str(workdir))
    assert result.exit_code == 3, result.output
    assert f"data snapshot {snap.ref} of the run is gone" in result.stderr
    assert not workdir.exists()
    shutil.rmtree(data_dir)  # the whole volume, snapshots and all
    result = cli("reproduce", source, "--workdir", str(workdir), "-o", "json")
    assert result.exit_code == 3 and json.loads(result.stdout)["exit_code"] == 3
    assert "is not an existing directory" in result.stderr
    assert [r.info.run_id for r in tracking.search_runs([mlflow_store.experiment_id])] == [source]
    assert cli("reproduce", "0" * 32).exit_code == 3  # no such run


def test_changed_dirty_and_vanished_code(
    tracking: MlflowClient, mlflow_store: Any, stub_project: Path, data_dir: Path, tmp_path: Path
) -> None:
    # the run ran uncommitted code: recorded loudly (dirty=true) with the digest of exactly that tree
    (stub_project / "train.py").write_text(STUB_TRAIN.replace("+ a.seed", "+ a.seed * 1.0"))
    source = source_run(tracking, stub_project, data_dir, tmp_path / "out", mlflow_store.experiment_id)
    prov = load_provenance(source, tracking)
    assert isinstance(prov, Provenance) and prov.code.dirty and prov.code.dirty_files == [" M train.py"]
    assert tracking.get_run(source).data.tags["mlflow_anf.code.dirty"] == "true"

    # the tree moved on: refused, nothing created
    (stub_project / "extra.py").write_text("")
    result = cli("reproduce", source, "--workdir", str(tmp_path / "r1"))
    assert result.exit_code == 2, result.output
    assert "(dirty, digest" in result.stderr and "--allow-code-change" in result.stderr
    assert not (tmp_path / "r1").exists()

    # the same uncommitted tree again: the content digest says it is the same code, so it runs
    (stub_project / "extra.py").unlink()
    result = cli("reproduce", source, "--workdir", str(tmp_path / "r2"), "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["code"] == "same" and report["status"] == "FINISHED" and report["identical"] is True
    assert tracking.get_run(report["run_id"]).data.tags["mlflow_anf.code.digest"] == prov.code.digest

    # history rewritten (and the code moved on): the recorded commit is gone from the repository
    shutil.rmtree(stub_project / ".git")
    (stub_project / "train.py").write_text(STUB_TRAIN)
    commit_all(stub_project, "new history")
    result = cli("reproduce", source, "--workdir", str(tmp_path / "r3"))
    assert result.exit_code == 3, result.output
    assert f"commit {prov.code.commit} of run {source} is not in the repository" in result.stderr
    # explicitly allowed: runs the current code and says so on the new run
    result = cli("reproduce", source, "--workdir", str(tmp_path / "r4"), "--allow-code-change", "-o", "json")
    report = json.loads(result.stdout)
    assert "code" in report, result.output
    assert report["code"].startswith("changed (allowed)")
    assert tracking.get_run(report["run_id"]).data.tags["mlflow_anf.reproduce.code"].startswith("changed")


def test_restore_only_then_reproduce_on_the_restored_volume(
    tracking: MlflowClient, mlflow_store: Any, stub_project: Path, data_dir: Path, tmp_path: Path
) -> None:
    source = source_run(tracking, stub_project, data_dir, tmp_path / "out", mlflow_store.experiment_id)
    mount = tmp_path / "mnt" / "tusimple"
    result = cli("reproduce", source, "--restore-only", "--target", str(mount), "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "RESTORED" and report["run_id"] is None
    assert report["restored"]["volume"] == str(mount)
    assert (mount / "clips" / "a" / "20.jpg").read_bytes() == (data_dir / "clips" / "a" / "20.jpg").read_bytes()
    assert len(tracking.search_runs([mlflow_store.experiment_id])) == 1

    shutil.rmtree(data_dir)  # snapshot and all: the restored copy is what the reproduction uses
    result = cli("reproduce", source, "--restored", str(mount), "--workdir", str(tmp_path / "w"), "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["identical"] is True and report["rewritten"]["data_dir"]["to"] == str(mount)
    assert tracking.get_run(report["run_id"]).data.tags["mlflow_anf.reproduce.restored"] == str(mount)


def test_anf_snapshot_restores_to_a_new_volume_then_runs_where_it_is_mounted(
    tracking: MlflowClient, mlflow_store: Any, stub_project: Path, data_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The anf provider through the real Azure SDK against the ARM/AAD emulator, with the options the run recorded
    (the client secret lives in the environment, never in the record)."""
    from tests.doubles.arm_emulator import ACCOUNT, RG, ArmEmulator, seed_ml_estate

    with ArmEmulator() as emu:
        seed_ml_estate(emu)
        emu.client_secret = "CANARY-secret-reproduce"
        monkeypatch.setenv("AZURE_TENANT_ID", emu.tenant_id)
        monkeypatch.setenv("AZURE_CLIENT_ID", emu.client_id)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", emu.client_secret)
        options = {"subscription_id": emu.subscription_id, "resource_group": RG, "account": ACCOUNT,
                   "pool": "premium", "base_url": emu.base_url, "ca_bundle": str(emu.ca_file),
                   "credential": "environment", "authority": emu.base_url, "disable_instance_discovery": True,
                   "polling_interval_s": 0.01, "retry_total": 1, "retry_backoff_factor": 0.01}
        run_id = tracking.create_run(mlflow_store.experiment_id, tags={
            "mlflow.project.entryPoint": "train", "mlflow.source.type": "PROJECT"}).info.run_id
        for key, value in {"data_dir": "/mnt/anf/data", "output_dir": str(tmp_path / "out"), "seed": "1"}.items():
            tracking.log_param(run_id, key, value)
        log_provenance(run_id, code_path=stub_project, provider_options=options, client=tracking, environ={})
        # (snapshot_and_log would label it; ANF snapshots take no labels - see the report)
        snap = get_provider("anf", **options).create("data", "golden")
        log_snapshot(snap, "data", run_id=run_id, client=tracking)
        tracking.log_metric(run_id, "score", stub_score(data_dir, 1.0))

        # step 1: a new ANF volume from the snapshot (to be mounted where the training runs)
        result = cli("reproduce", run_id, "--restore-only", "-o", "json")
        assert result.exit_code == 0, result.output
        restored = json.loads(result.stdout)["restored"]
        pool, volume = restored["volume"].split("/")
        assert restored["source"] == "anf:premium/data@golden" and pool == "premium"
        new = emu.volume(RG, ACCOUNT, pool, volume)
        assert new["properties"]["snapshotId"] == snap.id and new["properties"]["creationToken"] == volume
        assert "CANARY-secret" not in json.dumps(load_provenance(run_id, tracking).model_dump(mode="json"))

    # step 2: run on it where it is mounted (here: a copy of its content)
    mount = tmp_path / "mnt" / volume
    shutil.copytree(data_dir, mount)
    result = cli("reproduce", run_id, "--restored", f"{pool}/{volume}", "-P", f"data_dir={mount}",
                 "-P", f"output_dir={tmp_path / 'out2'}", "--workdir", str(tmp_path / "w"), "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["identical"] is True and report["overrides"]["data_dir"] == str(mount)
    assert tracking.get_run(report["run_id"]).data.tags["mlflow_anf.reproduce.restored"] == f"{pool}/{volume}"


@pytest.mark.parametrize("provider, volume, hint", [
    ("anf", "pool1/tusimple", "--restore-only"),
    ("csi", "lane/tusimple-data", "--backend mpijob"),
])
def test_volumes_a_local_run_cannot_mount_are_refused_with_the_way_out(
    tracking: MlflowClient, mlflow_store: Any, stub_project: Path, tmp_path: Path,
    provider: str, volume: str, hint: str,
) -> None:
    run_id = tracking.create_run(mlflow_store.experiment_id, tags={"mlflow.project.entryPoint": "train"}).info.run_id
    tracking.log_param(run_id, "data_dir", "/mnt/tusimple")
    log_provenance(run_id, code_path=stub_project, client=tracking, environ={})
    snap = SnapshotRef(role="data", provider=provider, volume=volume, name="s1", snapshot_id="id-1",
                       ref=f"{provider}:{volume}@s1")
    for key, value in snap.tags().items():
        tracking.set_tag(run_id, key, value)
    result = cli("reproduce", run_id, "--workdir", str(tmp_path / "w"))
    assert result.exit_code == 2, result.output
    assert hint in result.stderr and not (tmp_path / "w").exists()


def test_diff_table_and_json(tracking: MlflowClient, mlflow_store: Any, stub_project: Path,
                             data_dir: Path, tmp_path: Path) -> None:
    a = source_run(tracking, stub_project, data_dir, tmp_path / "out-a", mlflow_store.experiment_id)
    (data_dir / "more.txt").write_text("more data")
    b = source_run(tracking, stub_project, data_dir, tmp_path / "out-b", mlflow_store.experiment_id)
    tracking.log_param(b, "extra", "x")
    tracking.log_metric(b, "score", 0.75)
    score_a = tracking.get_run(a).data.metrics["score"]

    table = cli("diff", a, b)
    assert table.exit_code == 0, table.output
    text = table.stdout
    assert f"A  {a}" in text and f"B  {b}" in text
    assert "*  output_dir" in text and ">  extra" in text
    assert "*  data.digest" in text and "score" in text and f"{0.75 - score_a:+.3g}" in text
    assert "summary: params DIFFERENT, code same, data DIFFERENT, metrics DIFFERENT -> NOT reproduced" in text
    assert "seed" not in text and "seed" in cli("diff", a, b, "--all").stdout  # identical rows only with --all

    data = json.loads(cli("diff", a, b, "--output", "json").stdout)
    assert set(data) == {"a", "b", "params", "code", "image", "data", "packages", "metrics", "summary"}
    code = {r["key"]: r for r in data["code"]}
    assert code["commit"]["status"] == "same" and code["commit"]["a"] == git(stub_project, "rev-parse", "HEAD")
    score = next(m for m in data["metrics"] if m["key"] == "score")
    assert (score["a"], score["b"], score["status"]) == (score_a, 0.75, "differs")
    assert data["summary"] == {"params": False, "code": True, "data": False, "metrics": False, "reproduced": False}
    assert cli("diff", a, b, "--exit-code").exit_code == 1
    assert cli("diff", a, a, "--exit-code").exit_code == 0


# ---------------------------------------------------------------------------------------------------------------
# the real thing: a tiny deterministic SCNN training, reproduced bit for bit

@pytest.mark.slow
def test_lanedet_training_reproduces_bit_identically(
    tracking: MlflowClient, mlflow_store: Any, tmp_path: Path, tusimple_fixtures: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = make_tiny_tusimple(tmp_path, tusimple_fixtures / "label_data_0313.json")
    # the project as a clean checkout of its own (the shared tree changes under concurrent work)
    project = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "project" / "mlflow_anf_lanedet", project / "project" / "mlflow_anf_lanedet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("MLproject", "conda.yaml", ".gitignore", "project/run.py"):
        shutil.copy(REPO_ROOT / name, project / name)
    commit = commit_all(project)
    monkeypatch.setenv("PYTHONPATH", str(project / "project"))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", mlflow_store.experiment_id)

    out = tmp_path / "outputs"
    cmd = [sys.executable, "-m", "mlflow_anf_lanedet.cli", "train", "--data-dir", str(data), "--output-dir", str(out),
           "--epochs", "1", "--batch-size", "4", "--val-batch-size", "4", "--backbone", "resnet18",
           "--input-size", "64x128", "--num-workers", "0", "--deterministic", "true", "--seed", "7",
           "--overlays", "0", "--log-model", "false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (source,) = [r.info.run_id for r in tracking.search_runs([mlflow_store.experiment_id])]
    original = tracking.get_run(source)
    assert original.data.tags["mlflow_anf.code.commit"] == commit
    assert original.data.tags["mlflow_anf.code.dirty"] == "false"
    assert load_provenance(source, tracking).code.digest == code_version(project).digest

    # the original data directory is changed and emptied in between: it must not matter
    (data / "label_data_0313.json").unlink()
    (data / "label_data_0313.json").write_text("")
    for child in data.iterdir():
        if child.name != ".snapshot":
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    workdir = tmp_path / "repro"
    result = cli("reproduce", source, "--workdir", str(workdir), "-o", "json")
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads(result.stdout)
    assert report["identical"] is True and report["code"] == "same"
    new = tracking.get_run(report["run_id"])
    model_metrics = {k: v for k, v in original.data.metrics.items() if k.startswith(("train_", "val_", "test_"))}
    assert {"train_loss", "val_accuracy", "test_accuracy", "test_loss"} <= set(model_metrics)
    assert {k: new.data.metrics[k] for k in model_metrics} == model_metrics  # bit for bit
    digest = "mlflow_anf.snapshot.data.digest"
    assert snapshot_fields(new.data.tags)[digest] == snapshot_fields(original.data.tags)[digest]
    moved = {"data_dir": str(workdir / "data"), "output_dir": str(workdir / "outputs")}
    # the data snapshot params name the restored copy's snapshot, of the same content (so the same digest)
    moved["mlflow_anf.data.snapshot"] = get_run_snapshots(new.info.run_id)["data"].ref
    assert new.data.params == {**original.data.params, **moved}  # the same params, on the restored copy
    assert new.data.tags[TAG_REPRODUCES] == source

    diff = json.loads(cli("diff", source, report["run_id"], "-o", "json").stdout)
    assert diff["summary"] == {"params": True, "code": True, "data": True, "metrics": True, "reproduced": True}
    assert {r["key"] for r in diff["params"] if r["status"] == "rewritten"} == {"data_dir", "output_dir"}


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes: mpijob backend + csi snapshots against the API emulator and the simulated MPI operator

MPI_MLPROJECT = """\
name: sim-lanedet
entry_points:
  train:
    parameters:
      data_dir: {type: string, default: /mnt/tusimple}
      seed: {type: float, default: 1}
    command: "python mpi_train.py --data-dir {data_dir} --seed {seed}"
"""

MPI_TRAIN = '''\
"""Stand-in for `lanedet train` under mpirun: rank 0 records provenance and a seed-determined score."""
import argparse, os
p = argparse.ArgumentParser(); p.add_argument("--data-dir"); p.add_argument("--seed", type=float)
a = p.parse_args()
if int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))) == 0:
    from mlflow import MlflowClient
    from mlflow_anf.provenance import log_provenance
    client = MlflowClient()
    run_id = os.environ["MLFLOW_RUN_ID"]
    log_provenance(run_id, entry_point="train", code_path=__file__, client=client)
    client.log_metric(run_id, "score", a.seed / 3)
print("trained on", a.data_dir, flush=True)
'''


class _Registry(http.server.BaseHTTPRequestHandler):
    """An OCI registry that has exactly the manifests in ``server.present`` (reference -> digest)."""

    def do_HEAD(self) -> None:  # noqa: N802 - http.server API
        reference = self.path.rsplit("/manifests/", 1)[-1]
        digest = self.server.present.get(reference)  # type: ignore[attr-defined]
        self.send_response(200 if digest else 404)
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    server.present = {}  # type: ignore[attr-defined]
    yield from serve(server)


@pytest.fixture
def cluster(k8s_objects: Any, snapshot_controller: Any, pvc_binder: Any) -> Any:
    k8s_objects.namespace(NS)
    k8s_objects.storage_class()
    k8s_objects.snapshot_class(default=True)
    k8s_objects.pvc("tusimple-data", NS, size="100Gi")
    return k8s_objects


@pytest.fixture
def mpi_project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "mpi-project", MPI_MLPROJECT, **{"mpi_train.py": MPI_TRAIN})


def backend_config(kubeconfig: Path, store: Any, project: Path, image: str) -> dict[str, Any]:
    return {
        "namespace": NS, "kubeconfig": str(kubeconfig), "image": image, "processes": 2, "gpus_per_process": 0,
        "launcher": "mpirun", "mpi_implementation": "MPICH", "tracking_uri": store.uri, "project_dir": str(project),
        "data_pvc": "tusimple-data", "data_mount_path": "/mnt", "poll_interval_seconds": 0.05,
        "submit_timeout_seconds": 10, "api_backoff_seconds": 0.01, "snapshot": {"data": True},
    }


def test_mpijob_run_is_reproduced_from_a_restored_pvc(
    tracking: MlflowClient, mlflow_store: Any, cluster: Any, kubeconfig_path: Path,
    mpi_operator: Any, mpi_project: Path, registry: Any,
) -> None:
    digest = "sha256:" + "c" * 64
    registry.present[digest] = digest
    image = f"127.0.0.1:{registry.server_port}/lanedet:0.1.0@{digest}"
    cfg = backend_config(kubeconfig_path, mlflow_store, mpi_project, image)
    original = mlflow.projects.run(str(mpi_project), "train", parameters={"seed": "2"}, backend="mpijob",
                                   backend_config={**cfg, "wait": True}, experiment_id=mlflow_store.experiment_id,
                                   env_manager="local")
    source = original.run_id
    src = tracking.get_run(source)
    assert src.info.status == "FINISHED" and src.data.tags["mlflow_anf.image.digest"] == digest
    snapshot = snapshot_fields(src.data.tags)["mlflow_anf.snapshot.data.name"]

    result = cli("reproduce", source, "--wait", "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    new_run_id, new_pvc = report["run_id"], report["restored"]["volume"].split("/")[1]
    assert report["identical"] is True and report["backend"] == "mpijob"
    assert report["rewritten"] == {"backend_config.data_pvc": {"from": "tusimple-data", "to": new_pvc}}
    assert report["image"] == f"{image} (present, {digest})"

    # the restored PVC is filled by the CSI driver from the run's VolumeSnapshot
    pvc = cluster.get("PersistentVolumeClaim", NS, new_pvc)
    assert pvc["spec"]["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                         "name": snapshot}
    # the resubmitted MPIJob mounts it, with the same image, command and params
    jobs = {j["metadata"]["labels"]["mlflow-anf/run-id"]: j for j in cluster.list("MPIJob", NS)}
    worker = jobs[new_run_id]["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    assert worker["volumes"][0]["persistentVolumeClaim"]["claimName"] == new_pvc
    assert worker["containers"][0]["image"] == image
    old_launcher = jobs[source]["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    new_launcher = jobs[new_run_id]["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    assert new_launcher["args"] == old_launcher["args"]

    new = tracking.get_run(new_run_id)
    assert new.info.status == "FINISHED" and new.data.metrics["score"] == src.data.metrics["score"]
    assert new.data.tags[TAG_REPRODUCES] == source
    assert tracking.get_run(source).data.tags[TAG_REPRODUCED_BY] == new_run_id
    # its own snapshot, of the restored PVC
    assert snapshot_fields(new.data.tags)["mlflow_anf.snapshot.data.volume"] == f"{NS}/{new_pvc}"
    assert new.data.params["seed"] == "2"

    # the local MLproject makes the command the image runs: a changed one is refused before anything is created
    (mpi_project / "MLproject").write_text(MPI_MLPROJECT.replace("--seed {seed}", "--seed {seed} --fast"))
    pvcs = cluster.list("PersistentVolumeClaim", NS)
    result = cli("reproduce", source)
    assert result.exit_code == 2, result.output
    assert "python mpi_train.py --data-dir /mnt/tusimple --seed 2 --fast" in result.stderr
    assert cluster.list("PersistentVolumeClaim", NS) == pvcs


def test_mpijob_gone_image_or_snapshot_is_refused_before_anything_is_created(
    tracking: MlflowClient, mlflow_store: Any, cluster: Any, kubeconfig_path: Path,
    mpi_project: Path, registry: Any,
) -> None:
    from mlflow_anf.backend.config import load_backend_config
    from mlflow_anf.backend.plugin import csi_provider

    image = f"127.0.0.1:{registry.server_port}/lanedet:0.1.0"
    cfg = backend_config(kubeconfig_path, mlflow_store, mpi_project, image)
    run_id = tracking.create_run(mlflow_store.experiment_id, tags={
        "mlflow.project.entryPoint": "train", "mlflow.source.name": str(mpi_project),
        "mlflow.project.backend": "mpijob", "mlflow_anf.backend.mpijob": f"{NS}/sim-lanedet-12345678",
        "mlflow_anf.backend.image": image,
    }).info.run_id
    # a config too long for a tag is only an artifact
    tracking.log_text(run_id, json.dumps(cfg), "mlflow_anf/backend-config.json")
    snap = snapshot_and_log(csi_provider(load_backend_config(cfg)), f"{NS}/tusimple-data", "data", run_id=run_id,
                            client=tracking)
    pvcs_before = [p["metadata"]["name"] for p in cluster.list("PersistentVolumeClaim", NS)]

    result = cli("reproduce", run_id)  # the registry no longer has the tag
    assert result.exit_code == 3, result.output
    assert f"image: {image} of run {run_id} is gone from its registry" in result.stderr

    registry.present["0.1.0"] = "sha256:" + "d" * 64
    cluster.delete("VolumeSnapshot", NS, snap.name, force=True)
    result = cli("reproduce", run_id)
    assert result.exit_code == 3, result.output
    assert f"data snapshot csi:{NS}/tusimple-data@{snap.name} of the run is gone" in result.stderr
    assert [p["metadata"]["name"] for p in cluster.list("PersistentVolumeClaim", NS)] == pvcs_before
    assert cluster.list("MPIJob", NS) == []


def test_code_installed_from_a_distribution_is_recorded_as_such_and_checked_against_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Code run from an installed wheel (no MLproject above it) is recorded as that distribution and the content of
    its package; a reproduction accepts the same install and names the distribution to install when it differs
    (before: the site-packages directory was taken for the project and every reproduction said "code changed")."""
    from mlflow_anf.provenance import code_version, collect_provenance
    from mlflow_anf.reproduce import CodeMismatch, check_code

    site = tmp_path / "site-packages"
    pkg = site / "pkgx"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "train.py").write_text("EPOCHS = 3\n")
    info = site / "pkgx_dist-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pkgx-dist\nVersion: 1.2\n")
    (info / "top_level.txt").write_text("pkgx\n")
    (info / "RECORD").write_text("pkgx/__init__.py,,\npkgx/sub/__init__.py,,\npkgx/sub/train.py,,\n"
                                 "pkgx_dist-1.2.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))

    version = code_version(pkg / "sub" / "train.py")
    assert (version.kind, version.package, version.distribution) == ("dist", "pkgx", "pkgx-dist==1.2")
    assert version.root == str(pkg.resolve()) and version.files == 3 and version.label().startswith("installed pkgx")
    rec = record("r1", provenance=collect_provenance(code_path=pkg / "sub" / "train.py"))
    verdict, current = check_code(rec, tmp_path, allow_change=False)
    assert verdict == "same" and current.digest == version.digest
    (pkg / "sub" / "train.py").write_text("EPOCHS = 4\n")  # another build of the same version
    with pytest.raises(CodeMismatch, match=r"ran the installed pkgx-dist==1\.2.*\n.*install pkgx-dist==1\.2"):
        check_code(rec, tmp_path, allow_change=False)
    assert check_code(rec, tmp_path, allow_change=True)[0].startswith("changed (allowed)")
