"""MLflow dataset source for storage snapshots (entry point ``mlflow.dataset_source`` → ``mlflow_anf_snapshot``).

A run that trained on a snapshot logs a dataset input whose source is a :class:`SnapshotDatasetSource`; the MLflow UI
lists it in the run's Datasets column (name = snapshot name, digest = the snapshot digest's short form), and
``mlflow.data.get_source(dataset_input.dataset)`` turns it back into this class through the entry point.

This is an adapter: it knows MLflow's ``DatasetSource`` API and the :class:`~mlflow_anf.snapshots.base.Snapshot`
record, nothing about how any provider stores data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.data.dataset_source import DatasetSource

from mlflow_anf.snapshots.base import Snapshot, SnapshotError, SnapshotNotFound

SOURCE_TYPE = "mlflow_anf_snapshot"
_FIELDS = ("provider", "volume", "name", "snapshot_id", "digest", "path")


class SnapshotDatasetSource(DatasetSource):
    """Where a dataset came from: one snapshot of one volume of one provider.

    ``path`` is the snapshot's read-only directory when the provider exposes one on this machine (local provider),
    else ``None``.
    """

    def __init__(
        self,
        provider: str,
        volume: str,
        name: str,
        snapshot_id: str | None = None,
        digest: str | None = None,
        path: str | None = None,
    ) -> None:
        for field, value in (("provider", provider), ("volume", volume), ("name", name)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"SnapshotDatasetSource.{field}: must be a non-empty string, got {value!r}")
        self.provider = provider
        self.volume = volume
        self.name = name
        self.snapshot_id = snapshot_id or name
        self.digest = digest
        self.path = path

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> SnapshotDatasetSource:
        from mlflow_anf.snapshots import traits_for

        path = traits_for(snapshot.provider).local_path(snapshot)
        return cls(
            provider=snapshot.provider,
            volume=snapshot.volume,
            name=snapshot.name,
            snapshot_id=snapshot.id,
            digest=snapshot.digest,
            path=path,
        )

    @property
    def ref(self) -> str:
        """``provider:volume@name``, the same string as :attr:`Snapshot.ref`."""
        return f"{self.provider}:{self.volume}@{self.name}"

    @staticmethod
    def _get_source_type() -> str:
        return SOURCE_TYPE

    def load(self) -> str:
        """Return the snapshot's read-only directory (local provider), else explain how to restore it."""
        if self.path is None:
            raise SnapshotError(
                f"snapshot {self.ref} lives in the {self.provider!r} provider and is not readable as a local path; "
                f"restore it first, e.g. `mlflow-anf snapshot restore --provider {self.provider} "
                f"--volume {self.volume} {self.name} --target <new-volume>` "
                f"(or mlflow_anf.restore(<run_id>, target=...))"
            )
        if not Path(self.path).is_dir():
            raise SnapshotNotFound(f"snapshot {self.ref}: directory {self.path} does not exist (deleted?)")
        return self.path

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        # Only our own records: MLflow asks every registered source about arbitrary strings and objects.
        return isinstance(raw_source, Snapshot)

    @classmethod
    def _resolve(cls, raw_source: Any) -> SnapshotDatasetSource:
        if not isinstance(raw_source, Snapshot):
            raise TypeError(f"SnapshotDatasetSource resolves Snapshot records, not {type(raw_source).__name__}")
        return cls.from_snapshot(raw_source)

    def to_dict(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in _FIELDS}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> SnapshotDatasetSource:
        if not isinstance(source_dict, dict):
            raise ValueError(f"SnapshotDatasetSource.from_dict: expected a dict, got {type(source_dict).__name__}")
        unknown = sorted(set(source_dict) - set(_FIELDS))
        if unknown:
            raise ValueError(f"SnapshotDatasetSource.from_dict: unknown field(s) {', '.join(map(str, unknown))}")
        missing = [f for f in ("provider", "volume", "name") if not source_dict.get(f)]
        if missing:
            raise ValueError(f"SnapshotDatasetSource.from_dict: missing field(s) {', '.join(missing)}")
        return cls(**source_dict)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SnapshotDatasetSource) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().items()))

    def __repr__(self) -> str:
        return f"SnapshotDatasetSource({self.ref!r}, digest={self.digest!r})"
