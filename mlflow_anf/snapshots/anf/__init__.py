"""Azure NetApp Files: snapshots, restore-to-new-volume, revert and service-level change via ARM.

The package is split by concern; every name is re-exported here, so ``mlflow_anf.snapshots.anf:AnfSnapshotProvider``
(the registry target) and ``from mlflow_anf.snapshots.anf import ...`` keep working:

* :mod:`.provider` — :class:`AnfSnapshotProvider`, the snapshot protocol (create/list/get/restore/delete/verify);
* :mod:`.volumes` — :class:`AnfVolumes`, volume administration (new volume from a snapshot, revert, service-level
  change, show, Trident PV lookup) behind ``mlflow-anf volume``; the provider delegates ``restore`` to it;
* :mod:`.arm` — :class:`AnfArm`: the ``azure-mgmt-netapp`` client with an ``azure-identity`` credential (both imported
  lazily), long-running operations, SDK errors → :class:`AnfApiError` / :class:`AnfNotFound` / ``SnapshotTimeout``;
* :mod:`.names` — pool/volume/ARM-id parsing, name rules, creation tokens, Trident PVs (:func:`volume_for_pv`);
* :mod:`.config` — :class:`AnfConfig`; :mod:`.errors` — the error types and :func:`redact`.

Importing this package loads no Azure module.
"""

from __future__ import annotations

from mlflow_anf.snapshots.anf.arm import AnfArm
from mlflow_anf.snapshots.anf.config import ANF_MAX_SNAPSHOTS_PER_VOLUME, AnfConfig
from mlflow_anf.snapshots.anf.errors import AnfApiError, AnfInputError, AnfNotFound, RevertNotConfirmed, redact
from mlflow_anf.snapshots.anf.names import TRIDENT_CSI_DRIVER, TridentVolume, VolumeRef, parse_volume_id, volume_for_pv
from mlflow_anf.snapshots.anf.provider import AnfSnapshotProvider
from mlflow_anf.snapshots.anf.volumes import (
    GIB,
    MIN_VOLUME_BYTES,
    RESTORE_COPIED_PROPERTIES,
    AnfVolumes,
    PoolChangeResult,
    RevertPlan,
    SnapshotSummary,
    VolumeInfo,
)
from mlflow_anf.snapshots.base import InvalidSnapshotName

__all__ = [
    "ANF_MAX_SNAPSHOTS_PER_VOLUME",
    "AnfApiError",
    "AnfArm",
    "AnfConfig",
    "AnfInputError",
    "AnfNotFound",
    "AnfSnapshotProvider",
    "AnfVolumes",
    "GIB",
    "InvalidSnapshotName",
    "MIN_VOLUME_BYTES",
    "PoolChangeResult",
    "RESTORE_COPIED_PROPERTIES",
    "RevertNotConfirmed",
    "RevertPlan",
    "SnapshotSummary",
    "TRIDENT_CSI_DRIVER",
    "TridentVolume",
    "VolumeInfo",
    "VolumeRef",
    "parse_volume_id",
    "redact",
    "volume_for_pv",
]
