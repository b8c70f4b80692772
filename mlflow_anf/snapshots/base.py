"""The snapshot provider protocol: the only thing the rest of mlflow-anf knows about storage.

A *volume* is whatever a provider snapshots (a local directory, a namespaced PVC, an ANF volume), named by a
provider-specific string. A :class:`Snapshot` is the immutable, serialisable record of one point-in-time copy.
This module knows nothing of MLflow or Kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

# DNS-1123 subdomain, the strictest of the three back ends (Kubernetes object names; ANF accepts a superset).
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
NAME_MAX = 253


class SnapshotError(Exception):
    """Base class of every error a provider raises on purpose."""


class InvalidSnapshotName(SnapshotError, ValueError):
    pass


class SnapshotNotFound(SnapshotError, LookupError):
    pass


class SnapshotExists(SnapshotError):
    pass


class SnapshotTimeout(SnapshotError, TimeoutError):
    pass


class SnapshotLimitExceeded(SnapshotError):
    pass


class SnapshotVerificationError(SnapshotError):
    pass


def validate_snapshot_name(name: str, field: str = "name") -> str:
    """Return *name* if it is a valid DNS-1123 subdomain, else raise naming *field*."""
    if not isinstance(name, str) or not name:
        raise InvalidSnapshotName(f"{field}: snapshot name must be a non-empty string")
    if len(name) > NAME_MAX or not _NAME_RE.match(name):
        raise InvalidSnapshotName(
            f"{field}: {name!r} is not a valid snapshot name (DNS-1123: lower-case letters, digits, '-' and '.', "
            f"starting and ending with a letter or digit, at most {NAME_MAX} characters)"
        )
    return name


class SnapshotRole(str, Enum):
    DATA = "data"
    MODEL = "model"
    OTHER = "other"


class Snapshot(BaseModel):
    """Record of one snapshot, as every provider reports it."""

    model_config = ConfigDict(frozen=True)

    provider: str = Field(description="provider name: local, csi or anf")
    volume: str = Field(description="provider-specific volume id: directory, namespace/pvc, account/pool/volume")
    name: str
    id: str = Field(description="provider-unique id (local: name; csi: object uid; anf: ARM resource id)")
    created: datetime
    ready: bool = True
    digest: str | None = Field(default=None, description="content digest where the provider can compute one")
    size_bytes: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict, description="provider-specific facts")

    @property
    def ref(self) -> str:
        """Stable human-readable reference: ``provider:volume@name``."""
        return f"{self.provider}:{self.volume}@{self.name}"


class VerifyResult(BaseModel):
    ok: bool
    checked: int = 0
    problems: list[str] = Field(default_factory=list)


@runtime_checkable
class SnapshotProvider(Protocol):
    """What every provider implements. Methods raise :class:`SnapshotError` subclasses with clear messages."""

    name: ClassVar[str]
    #: whether snapshots can carry labels (ANF snapshots cannot: the ARM resource has no tags)
    supports_labels: ClassVar[bool]

    def create(
        self, volume: str, name: str | None = None, *, labels: Mapping[str, str] | None = None
    ) -> Snapshot: ...

    def list(self, volume: str | None = None, *, labels: Mapping[str, str] | None = None) -> list[Snapshot]: ...

    def get(self, volume: str, name: str) -> Snapshot: ...

    def restore(self, snapshot: Snapshot, target: str, **options: Any) -> str:
        """Materialise *snapshot* as a new volume *target*; returns the new volume id."""
        ...

    def delete(self, volume: str, name: str) -> None: ...

    def verify(self, snapshot: Snapshot) -> VerifyResult: ...
