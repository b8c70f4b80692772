"""The snapshot budget of a run: checked before anything is created, and ``snapshot.keep_last`` after a success.

A run takes up to two VolumeSnapshots of the same PVC (data before submitting, model after training, both of
``data_pvc`` unless ``snapshot.model_pvc`` differs). Azure NetApp Files allows 255 snapshots per volume, and the csi
provider refuses a create at its ``max_snapshots_per_volume``; so :func:`check_snapshot_budget` refuses a submission
whose snapshots would not all fit *before* training starts, not after hours of it.

What Kubernetes can count: the VolumeSnapshots in the namespace whose source is the PVC (each is one ANF snapshot
taken through Trident). What it cannot: ANF snapshots made outside Kubernetes - snapshot policies, the portal or
``az netappfiles snapshot create``, the snapshot Trident takes on the source volume when a PVC is cloned from this
PVC - nor statically provisioned VolumeSnapshotContents. Those count against ANF's 255 too; lower the csi
provider's ``max_snapshots_per_volume`` to leave them room, or use the ``anf`` provider, which counts every
snapshot of the volume through ARM.

:func:`prune_after_success` is ``snapshot.keep_last``: after a successful run (in the launcher, as its service
account), the oldest VolumeSnapshots mlflow-anf made of each of the run's PVCs beyond the newest N are deleted -
never one of this run's, one not yet ready (another run may be taking it), one already being deleted, nor one
mlflow-anf did not make. The MLflow runs of deleted snapshots keep their tags; their data can no longer be restored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlflow_anf.backend.config import MPIJobBackendConfig
from mlflow_anf.snapshots.csi.retention import prune_candidates


class SnapshotBudgetError(RuntimeError):
    """The run's snapshots would not fit the per-volume limit; names the PVC, the count and the limit."""


def planned_snapshots(config: MPIJobBackendConfig) -> dict[str, int]:
    """PVC -> how many VolumeSnapshots of it this run takes (data before, model after)."""
    planned: dict[str, int] = {}
    if config.snapshot.data and config.data_pvc:
        planned[config.data_pvc] = planned.get(config.data_pvc, 0) + 1
    model_pvc = config.snapshot.model_pvc or config.data_pvc
    if config.snapshot.model and model_pvc:
        planned[model_pvc] = planned.get(model_pvc, 0) + 1
    return planned


def _source_pvc(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName")


def count_budget(existing: Iterable[Mapping[str, Any]], planned: Mapping[str, int], limit: int, namespace: str,
                 ) -> list[str]:
    """One problem line per PVC whose existing VolumeSnapshots plus this run's would exceed *limit* (pure)."""
    items = list(existing)
    problems = []
    for pvc, needed in sorted(planned.items()):
        count = sum(1 for s in items if _source_pvc(s) == pvc)
        if count + needed > limit:
            problems.append(
                f"PVC {namespace}/{pvc}: {count} VolumeSnapshots exist and this run takes {needed} more, over the "
                f"limit of {limit} per volume (Azure NetApp Files allows 255, counting snapshots made outside "
                "Kubernetes too); delete old ones or set snapshot.keep_last")
    return problems


def check_snapshot_budget(config: MPIJobBackendConfig, provider: Any) -> None:
    """Refuse (:class:`SnapshotBudgetError`) a run whose snapshots would not fit, before anything is created.
    *provider* is the job's csi provider (its ``api.list_snapshots`` and ``config.max_snapshots_per_volume``)."""
    planned = planned_snapshots(config)
    if not planned:
        return
    existing = provider.api.list_snapshots(config.namespace)
    problems = count_budget(existing, planned, provider.config.max_snapshots_per_volume, config.namespace)
    if problems:
        raise SnapshotBudgetError("snapshot budget: " + "; ".join(problems))


def prune_after_success(provider: Any, volumes: Iterable[str], keep_last: int, run_id: str) -> list[str]:
    """``snapshot.keep_last`` for each ``namespace/pvc`` in *volumes* with the csi provider's ``prune``; returns the
    deleted names."""
    deleted: list[str] = []
    for volume in dict.fromkeys(volumes):
        namespace = volume.split("/", 1)[0]
        protect = prune_candidates(provider.api.list_snapshots(namespace), run_id)
        deleted += provider.prune(volume, keep_last, protect=protect)
    return deleted
