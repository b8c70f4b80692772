"""The job plan: every object one ``mlflow run --backend mpijob`` submission creates, decided before anything is.

:func:`plan_job` is the one function that names and renders them, from the backend config and the
:class:`~mlflow_anf.backend.render.JobRequest` (run id, experiment id, the entry point's command, ...). The backend
(:mod:`mlflow_anf.backend.plugin`) creates exactly the plan's objects and ``mlflow-anf render`` prints the same plan,
so for the same config, entry point, parameters, run id and experiment id they agree.

The data VolumeSnapshot is created by the csi provider's ``create`` (through ``mlflow_anf.tracking.snapshot_and_log``,
which records it on the run) with the plan's name and labels; its labels and annotations come from the same functions
``create`` uses (:func:`mlflow_anf.snapshots.csi.manifests.snapshot_labels`/``snapshot_annotations``). What only the
cluster knows is added at create time and is therefore not in the plan (:data:`CLUSTER_DERIVED`): the precise creation
time and the source PVC's StorageClass (annotations), and - when ``snapshot.snapshot_class`` is not set - the default
class chosen for the PVC's driver (``spec.volumeSnapshotClassName``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlflow_anf.backend.config import RUN_SUFFIX_LEN, MPIJobBackendConfig
from mlflow_anf.backend.render import JobRequest, job_name_for, render_mpijob
from mlflow_anf.k8s.naming import derive_name, run_suffix
from mlflow_anf.vocabulary import (
    ANNOTATION_CREATED_AT,
    ANNOTATION_SOURCE_STORAGE_CLASS,
    LABEL_EXPERIMENT_ID,
    LABEL_ROLE,
    LABEL_RUN_ID,
    ROLE_DATA,
)

#: What the csi provider adds to the planned VolumeSnapshot at create time, from the cluster.
CLUSTER_DERIVED = {
    "metadata.annotations": (ANNOTATION_CREATED_AT, ANNOTATION_SOURCE_STORAGE_CLASS),
    "spec": ("volumeSnapshotClassName",),
}


def snapshot_name_for(pvc: str, role: str, run_id: str) -> str:
    """``<pvc>-<role>-<run_id[:8]>``: the name of a run's snapshot of one PVC in one role (a retried submission
    adopts the same snapshot instead of taking a second one)."""
    return derive_name(pvc, f"{role}-{run_suffix(run_id, RUN_SUFFIX_LEN)}")


def snapshot_run_labels(run_id: str, experiment_id: str, role: str) -> dict[str, str]:
    """The labels that link a snapshot to its run (as ``mlflow_anf.tracking.snapshot_and_log`` passes them)."""
    return {LABEL_RUN_ID: run_id, LABEL_EXPERIMENT_ID: str(experiment_id), LABEL_ROLE: role}


@dataclass(frozen=True)
class JobPlan:
    """What one submission creates, in order: the data VolumeSnapshot (when ``snapshot.data``), then the MPIJob.

    Frozen; the manifests are plain dicts, to be created as they are (copy before changing one)."""

    namespace: str
    job_name: str
    mpijob: dict[str, Any]
    run_id: str
    data_volume: str | None = None
    data_snapshot_name: str | None = None
    data_snapshot_labels: dict[str, str] = field(default_factory=dict)
    data_snapshot: dict[str, Any] | None = None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.mpijob["metadata"].get("labels") or {})

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.mpijob["metadata"].get("annotations") or {})

    def manifests(self) -> list[dict[str, Any]]:
        """The objects in creation order."""
        return [m for m in (self.data_snapshot, self.mpijob) if m is not None]


def plan_job(config: MPIJobBackendConfig, req: JobRequest) -> JobPlan:
    """The plan of submitting *req* under *config* (pure: no I/O)."""
    from mlflow_anf.snapshots.csi.manifests import render_volume_snapshot, snapshot_annotations, snapshot_labels

    name = job_name_for(config, req.project_name, req.run_id)
    mpijob = render_mpijob(config, req, name)
    if not (config.snapshot.data and config.data_pvc):
        return JobPlan(namespace=config.namespace, job_name=name, mpijob=mpijob, run_id=req.run_id)
    pvc = config.data_pvc
    snap_name = snapshot_name_for(pvc, ROLE_DATA, req.run_id)
    run_labels = snapshot_run_labels(req.run_id, req.experiment_id, ROLE_DATA)
    snapshot = render_volume_snapshot(snap_name, config.namespace, pvc, config.snapshot.snapshot_class,
                                      labels=snapshot_labels(run_labels, pvc), annotations=snapshot_annotations(pvc))
    return JobPlan(namespace=config.namespace, job_name=name, mpijob=mpijob, run_id=req.run_id,
                   data_volume=f"{config.namespace}/{pvc}", data_snapshot_name=snap_name,
                   data_snapshot_labels=run_labels, data_snapshot=snapshot)
