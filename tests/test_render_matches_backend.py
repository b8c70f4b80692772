"""``mlflow-anf render`` shows exactly what ``mlflow run --backend mpijob`` creates.

The backend submits a run into the Kubernetes API emulator (with the simulated MPI operator and snapshot
controller); ``mlflow-anf render`` is then run with the same backend config, entry point and parameters, and the
run's id and experiment id (``--run-id``/``--experiment-id``). Both build the job plan with
:func:`mlflow_anf.backend.plan.plan_job`; this test holds them to it on the objects themselves:

* the MPIJob: name, namespace, labels, annotations and spec are equal;
* the data VolumeSnapshot: name, namespace and labels are equal; the rendered annotations and spec are in the
  stored object, which has only what the plan documents as known to the cluster alone
  (:data:`mlflow_anf.backend.plan.CLUSTER_DERIVED`: creation time, the PVC's StorageClass, the default class).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from mlflow_anf.backend.plan import CLUSTER_DERIVED
from mlflow_anf.cli import main
from tests.test_backend_lifecycle import NS, make_config, submit


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


@pytest.fixture
def cluster(k8s_objects: Any, snapshot_controller: Any) -> Any:
    k8s_objects.namespace(NS)
    k8s_objects.storage_class("azurenetappfiles")
    k8s_objects.snapshot_class("netapp-csi-snapclass", default=True)
    k8s_objects.pvc("tusimple-data", NS, storage_class="azurenetappfiles")
    return k8s_objects


@pytest.mark.parametrize("snapshot_class", [None, "netapp-csi-snapclass"])
def test_render_shows_the_objects_the_backend_creates(cluster, kubeconfig_path, mlflow_store, sim_project,
                                                      mpi_operator, snapshot_class) -> None:
    snapshot = {"data": True, **({"snapshot_class": snapshot_class} if snapshot_class else {})}
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, snapshot=snapshot,
                      labels={"team": "lanes"}, annotations={"example.com/owner": "ml"})
    params = {"epochs": "2"}
    run = submit(cfg, mlflow_store, sim_project, **params)
    created_job = cluster.get("MPIJob", NS, run.name)
    assert created_job is not None
    snapshots = cluster.list("VolumeSnapshot", NS)
    assert len(snapshots) == 1
    created_snapshot = snapshots[0]
    assert run.wait() is True

    args = ["render", str(sim_project), "-e", "train", "-c", json.dumps(cfg), "--run-id", run.run_id,
            "--experiment-id", str(mlflow_store.experiment_id), "--tracking-uri", mlflow_store.uri, "-o", "json"]
    for name, value in params.items():
        args += ["-P", f"{name}={value}"]
    result = _runner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rendered_snapshot, rendered_job = json.loads(result.stdout)

    assert rendered_job["kind"] == created_job["kind"] == "MPIJob"
    for key in ("name", "namespace", "labels", "annotations"):
        assert rendered_job["metadata"][key] == created_job["metadata"][key], key
    assert rendered_job["spec"] == created_job["spec"]

    assert rendered_snapshot["kind"] == created_snapshot["kind"] == "VolumeSnapshot"
    for key in ("name", "namespace", "labels"):
        assert rendered_snapshot["metadata"][key] == created_snapshot["metadata"][key], key
    assert_planned_part(rendered_snapshot["metadata"]["annotations"], created_snapshot["metadata"]["annotations"],
                        CLUSTER_DERIVED["metadata.annotations"])
    assert_planned_part(rendered_snapshot["spec"], created_snapshot["spec"], CLUSTER_DERIVED["spec"])
    if snapshot_class:  # configured: planned, not derived
        assert rendered_snapshot["spec"]["volumeSnapshotClassName"] == snapshot_class
    else:
        assert created_snapshot["spec"]["volumeSnapshotClassName"] == "netapp-csi-snapclass"

    # the run records the snapshot it made under the planned name
    tags = mlflow_store.client().get_run(run.run_id).data.tags
    assert any(rendered_snapshot["metadata"]["name"] in value for value in tags.values())


def assert_planned_part(planned: dict[str, Any], created: dict[str, Any], derived: tuple[str, ...]) -> None:
    """*created* is *planned* plus, at most, the *derived* keys (and the planned values are kept)."""
    assert {k: created.get(k) for k in planned} == planned
    assert set(created) - set(planned) <= set(derived), set(created) - set(planned)
