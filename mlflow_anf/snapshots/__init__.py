"""Snapshot store: a small provider protocol and its providers (local, csi, anf)."""

from mlflow_anf.snapshots.base import (
    InvalidSnapshotName,
    Snapshot,
    SnapshotError,
    SnapshotExists,
    SnapshotLimitExceeded,
    SnapshotNotFound,
    SnapshotProvider,
    SnapshotRole,
    SnapshotTimeout,
    SnapshotVerificationError,
    VerifyResult,
    validate_snapshot_name,
)

__all__ = [
    "InvalidSnapshotName",
    "Snapshot",
    "SnapshotError",
    "SnapshotExists",
    "SnapshotLimitExceeded",
    "SnapshotNotFound",
    "SnapshotProvider",
    "SnapshotRole",
    "SnapshotTimeout",
    "SnapshotVerificationError",
    "VerifyResult",
    "validate_snapshot_name",
]
