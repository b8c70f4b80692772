"""The snapshot provider protocol: the only thing the rest of mlflow-anf knows about storage.

A *volume* is whatever a provider snapshots (a local directory, a namespaced PVC, an ANF volume), named by a
provider-specific string. A :class:`Snapshot` is the immutable, serialisable record of one point-in-time copy.
This module knows nothing of MLflow or Kubernetes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.k8s.naming import DNS1123_SUBDOMAIN_MAX, is_dns1123_subdomain

if TYPE_CHECKING:
    from mlflow_anf.snapshots.files import SnapshotFiles

# A snapshot name is a DNS-1123 subdomain, the strictest of the three back ends (Kubernetes object names; ANF accepts
# a superset). The rule itself is the one of mlflow_anf.k8s.naming (pure string checks, no Kubernetes client).
NAME_MAX = DNS1123_SUBDOMAIN_MAX


class SnapshotError(Exception):
    """Base class of every error a provider raises on purpose."""


class SnapshotInputError(SnapshotError, ValueError):
    """The one input-error type: a name, volume id, URI, option or path given to mlflow-anf that it refuses.

    The message names the field (or URI part, option, file) and what is wrong, never a secret value.
    """


class InvalidSnapshotName(SnapshotInputError):
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
    if len(name) > NAME_MAX or not is_dns1123_subdomain(name):
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


# DNS-1123-compatible names and the wider names ANF, ONTAP and Trident give snapshots on the storage side.
_STORAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def validate_storage_name(name: str, field: str = "name") -> str:
    """*name* if it is a storage-side snapshot name (letters, digits, ``-``, ``_``, ``.``), else raise naming
    *field*."""
    if not isinstance(name, str) or not _STORAGE_NAME_RE.match(name):
        raise InvalidSnapshotName(
            f"{field}: {name!r} is not a valid snapshot name (letters, digits, '-', '_' and '.', starting with a "
            "letter or digit, at most 255 characters)"
        )
    return name


class ProviderTraits:
    """What callers outside :mod:`mlflow_anf.snapshots` may ask of a provider *class*, without building one.

    Every branch on a provider's name that used to sit in reproduce, the artifact repository, the dataset source or
    training is one of these questions. The defaults describe a remote provider whose snapshots are volumes on some
    storage system (csi, anf, a third-party provider); the local provider overrides what differs. Get the class of a
    registered provider with :func:`mlflow_anf.snapshots.provider_class` (or :func:`mlflow_anf.snapshots.traits_for`,
    which answers the defaults for a name this installation lacks) and ask it:

    * naming: :meth:`check_volume`, :meth:`check_name` — refuse a volume id or snapshot name the provider could not
      have produced, naming the field;
    * where the files are: :meth:`local_root` (a volume's directory without a mount table), :meth:`storage_dir` (the
      snapshot's directory under ``.snapshot/``), :meth:`local_path` (a snapshot's directory on this machine),
      :meth:`snapshot_files` (a reader of a snapshot's files with the provider's integrity checks);
    * restoring: :attr:`restore_needs_mount`, :attr:`mount_hint`, :meth:`restore_scope`,
      :meth:`default_restore_target`;
    * run parameters: :meth:`refers_to`, :meth:`param_value` — whether a parameter names a volume, and what it names
      after a restore.

    A provider class subclasses this and implements :class:`SnapshotProvider` (the operations, on an instance).
    """

    name: ClassVar[str]
    #: whether snapshots can carry labels (ANF snapshots cannot: the ARM resource has no tags)
    supports_labels: ClassVar[bool] = True
    #: whether a volume restored from a snapshot must be mounted (by a pod, on a host) before a process can read it;
    #: False: the restored volume is a directory on this machine (local)
    restore_needs_mount: ClassVar[bool] = True
    #: what to tell a user who wants to train on a restored volume through MLflow's local backend
    mount_hint: ClassVar[str] = "mount the restored volume, then name the mount path in the run's data parameter"

    @classmethod
    def check_volume(cls, volume: str, field: str = "volume") -> str:
        """*volume* if it is a volume id this provider can name, else :class:`SnapshotInputError` naming *field*."""
        if not isinstance(volume, str) or not volume.strip() or "\x00" in volume:
            raise SnapshotInputError(f"{field}: a non-empty volume id is required")
        return volume

    @classmethod
    def check_name(cls, name: str, field: str = "snapshot") -> str:
        """*name* if this provider could have given a snapshot that name."""
        return validate_storage_name(name, field)

    @classmethod
    def storage_dir(cls, snapshot: Snapshot) -> str | None:
        """The snapshot's directory under the volume's ``.snapshot/`` when it is not the snapshot's name."""
        return None

    @classmethod
    def local_root(cls, volume: str) -> Path | None:
        """Where *volume*'s files are on this machine without any mount table (local: the directory itself)."""
        return None

    @classmethod
    def local_path(cls, snapshot: Snapshot) -> str | None:
        """A directory on this machine holding the snapshot's files, where the provider knows one."""
        return None

    @classmethod
    def refers_to(cls, value: str, volume: str, *, base: Path) -> bool:
        """Whether the run parameter *value* names *volume* (relative paths are taken from *base*)."""
        return value == volume

    @classmethod
    def param_value(cls, value: str, volume: str, restored: str) -> str:
        """What a parameter that named *volume* as *value* names after the restore into *restored*."""
        return restored

    @classmethod
    def restore_scope(cls, volume: str) -> str | None:
        """The scope a restore of a snapshot of *volume* must stay in (csi: the namespace), if any."""
        return None

    @classmethod
    def default_restore_target(cls, volume: str, workdir: Path) -> str:
        """Where ``reproduce`` restores a snapshot of *volume* when no target is given: a new, unique name."""
        base = volume.rsplit("/", 1)[-1]
        return f"{base[:40].rstrip('-.')}-repro-{secrets.token_hex(3)}"

    @classmethod
    def snapshot_files(
        cls,
        volume_root: Path,
        name: str,
        *,
        provider: str,
        volume: str,
        dir_name: str | None = None,
        digest: str | None = None,
        hint: str = "",
    ) -> SnapshotFiles:
        """A reader of the files of snapshot *name* of *volume*, whose root directory is *volume_root* here.

        The snapshot is ``<volume_root>/.snapshot/<dir_name or name>/``. *digest*: the snapshot's digest the caller
        recorded, checked where the provider can (a mismatch raises :class:`SnapshotVerificationError`); *hint*:
        how to make the snapshot visible, appended to the error when the volume's snapshot directory is missing;
        *provider* names the provider in messages. Default (a storage system that keeps snapshots immutable): files
        are served as they are, no digest is checked. The local provider checks each file against its manifest.
        """
        from mlflow_anf.snapshots.files import SnapshotFiles, find_snapshot_dir

        root = find_snapshot_dir(volume_root, dir_name or name, name=name, provider=provider, volume=volume, hint=hint)
        return SnapshotFiles(root, name)


def volume_matcher(traits: type[ProviderTraits], volume: str, base: Path) -> Callable[[str], bool]:
    """A predicate: does a parameter value name *volume* (see :meth:`ProviderTraits.refers_to`)."""
    return lambda value: traits.refers_to(value, volume, base=base)


@runtime_checkable
class SnapshotProvider(Protocol):
    """What every provider implements (on an instance built from its ``Config``; see :mod:`mlflow_anf.snapshots`).

    The operations: :meth:`create`, :meth:`list`, :meth:`get`, :meth:`restore`, :meth:`delete`, :meth:`verify`.
    Each raises :class:`SnapshotError` subclasses with clear messages: :class:`SnapshotInputError` for a bad name,
    volume id, option or target; :class:`SnapshotNotFound`, :class:`SnapshotExists`, :class:`SnapshotTimeout`,
    :class:`SnapshotLimitExceeded`, :class:`SnapshotVerificationError` for what the storage answered. A provider
    class also subclasses :class:`ProviderTraits` (the questions callers may ask of the class) and defines
    ``name`` (its registry name), ``Config`` (a pydantic model of its options) and ``__init__(config=None)``.
    Keyword-only parameters are part of the protocol: callers pass them by name to any provider.
    """

    name: ClassVar[str]
    #: whether snapshots can carry labels (ANF snapshots cannot: the ARM resource has no tags)
    supports_labels: ClassVar[bool]

    def create(
        self, volume: str, name: str | None = None, *, labels: Mapping[str, str] | None = None
    ) -> Snapshot:
        """Snapshot *volume* now as *name* (a generated name when ``None``), with *labels* where supported."""
        ...

    def list(self, volume: str | None = None, *, labels: Mapping[str, str] | None = None) -> list[Snapshot]:
        """Snapshots of *volume* (of every volume the provider sees when ``None``) carrying all of *labels*."""
        ...

    def get(self, volume: str, name: str) -> Snapshot:
        """The snapshot *name* of *volume*; :class:`SnapshotNotFound` if there is none."""
        ...

    def restore(
        self,
        snapshot: Snapshot,
        target: str,
        *,
        wait: bool = False,
        timeout_s: float | None = None,
        verify: bool = True,
    ) -> str:
        """Materialise *snapshot* as a new volume *target*; returns the new volume id.

        ``wait``: return only when the new volume is usable (csi: the PVC is Bound; anf: the volume succeeded),
        within ``timeout_s`` (the provider's configured timeout when ``None``); a provider whose restore is complete
        when it returns (local) ignores both, and one whose new volume is useless until then may default ``wait`` to
        True (anf). ``verify``: check, where the provider can, that what is restored is what was snapshotted (local:
        every file's sha256 against the manifest; anf: the snapshot is still the one the record names); ``False``
        skips those checks. Every provider accepts all three keywords.
        """
        ...

    def delete(self, volume: str, name: str) -> None:
        """Delete snapshot *name* of *volume*; :class:`SnapshotNotFound` if there is none."""
        ...

    def verify(self, snapshot: Snapshot) -> VerifyResult:
        """Check *snapshot* is still what it was when taken; problems are reported, not raised."""
        ...
