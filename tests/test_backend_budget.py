"""``mlflow_anf.backend.budget`` on its own: what a run takes, what fits, what keep_last may never delete."""

from __future__ import annotations

from typing import Any

import pytest

from mlflow_anf.backend.budget import count_budget, planned_snapshots, prune_candidates
from mlflow_anf.backend.config import BackendConfigError, load_backend_config
from mlflow_anf.backend.launcher import parse_args
from mlflow_anf.backend.plan import plan_job
from mlflow_anf.backend.render import JobRequest
from mlflow_anf.vocabulary import LABEL_RUN_ID

BASE = {"namespace": "lane", "image": "x.io/y:1", "data_pvc": "data"}


def _cfg(**snapshot: Any) -> Any:
    return load_backend_config({**BASE, "snapshot": snapshot})


def _snap(name: str, pvc: str, *, run: str = "", ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {LABEL_RUN_ID: run} if run else {}},
            "spec": {"source": {"persistentVolumeClaimName": pvc}}, "status": {"readyToUse": ready}}


def test_a_run_takes_two_snapshots_of_the_data_pvc_by_default_and_one_each_with_a_model_pvc() -> None:
    assert planned_snapshots(_cfg(data=True, model=True)) == {"data": 2}
    assert planned_snapshots(_cfg(data=True, model=True, model_pvc="models")) == {"data": 1, "models": 1}
    assert planned_snapshots(_cfg(model=True)) == {"data": 1}
    assert planned_snapshots(_cfg()) == {}


def test_the_budget_counts_only_snapshots_of_the_same_pvc() -> None:
    existing = [_snap(f"s{i}", "data") for i in range(253)] + [_snap("o", "other")]
    assert count_budget(existing, {"data": 2}, 255, "lane") == []
    (problem,) = count_budget(existing + [_snap("x", "data")], {"data": 2}, 255, "lane")
    assert problem.startswith("PVC lane/data: 254 VolumeSnapshots exist and this run takes 2 more")


def test_keep_last_protects_this_runs_and_unready_snapshots() -> None:
    snaps = [_snap("mine", "data", run="r1"), _snap("busy", "data", run="r2", ready=False),
             _snap("failed", "data", run="r3", ready=False), _snap("old", "data", run="r0")]
    assert prune_candidates(snaps, "r1") == ["mine", "busy", "failed"]


def test_keep_last_must_be_a_positive_number_and_reaches_the_launcher() -> None:
    with pytest.raises(BackendConfigError, match="snapshot.keep_last"):
        _cfg(data=True, keep_last=0)
    cfg = _cfg(data=True, model=True, model_pvc="models", keep_last=3)
    req = JobRequest(run_id="a" * 32, experiment_id="1", tracking_uri="http://mlflow:5000", command="python t.py",
                     entry_point="train", project_name="p", model_path="run-1/model")
    spec = plan_job(cfg, req).mpijob["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    argv = [*spec.get("command", []), *spec.get("args", [])]
    opts = parse_args(argv[argv.index("mlflow_anf.backend.launcher") + 1:])
    assert opts.keep_last == 3 and opts.prune == ["lane/data", "lane/models"]
