"""Reading the files of one snapshot from its read-only directory on this machine, with the provider's own checks.

Every provider here exposes a snapshot of a volume the way ONTAP and Azure NetApp Files do: as the directory
``<volume root>/.snapshot/<directory>/``. What differs is how far a file read from there can be trusted:

* csi, anf (the default): the storage system keeps a snapshot immutable; files are served as they are.
* local: a snapshot may share inodes with the live volume (hard links), so a file is checked against the sha256 its
  manifest recorded (free when inode, mtime and size still match) and changed content is refused.

A provider says which through :meth:`mlflow_anf.snapshots.base.ProviderTraits.snapshot_files`, which returns a
:class:`SnapshotFiles` (or a subclass). Callers (the ``snapshot://`` MLflow artifact repository) only ask it:
:meth:`SnapshotFiles.resolve` a path safely, :meth:`SnapshotFiles.list_dir`, :meth:`SnapshotFiles.check_file`,
:meth:`SnapshotFiles.copy_file`. This module knows nothing of MLflow.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NoReturn

from mlflow_anf.snapshots.base import SnapshotNotFound, SnapshotVerificationError
from mlflow_anf.snapshots.uri import InvalidSnapshotUri

#: the directory of a volume under which its snapshots are visible (ONTAP, Azure NetApp Files, the local provider)
SNAPSHOT_DIR = ".snapshot"
_CHUNK = 1 << 20


class SnapshotArtifactNotFound(SnapshotNotFound):
    """The snapshot exists but holds nothing at the requested path (re-exported by :mod:`mlflow_anf.artifact_repo`)."""


@dataclass(frozen=True)
class SnapshotFileInfo:
    """One entry of a snapshot directory: ``size`` is ``None`` for a directory and for an entry that cannot be
    read (a dangling symlink, or one leading out of the snapshot, which is never stat-ed)."""

    name: str
    is_dir: bool
    size: int | None


def _within(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def find_snapshot_dir(
    volume_root: Path, dir_name: str, *, name: str, provider: str, volume: str, hint: str = ""
) -> Path:
    """``<volume_root>/.snapshot/<dir_name>``, resolved; :class:`SnapshotNotFound` (ending in *hint*) if absent."""
    snapdir = volume_root / SNAPSHOT_DIR / dir_name
    if not snapdir.is_dir():
        if not (volume_root / SNAPSHOT_DIR).is_dir():
            raise SnapshotNotFound(
                f"snapshot {name!r}: {volume_root / SNAPSHOT_DIR} does not exist; is {volume_root} "
                f"the mount point of {provider} volume {volume!r}, with its snapshot directory visible? " + hint
            )
        raise SnapshotNotFound(
            f"snapshot {name!r} of {provider} volume {volume!r} not found at {snapdir} (deleted, or not ready yet?)"
        )
    return snapdir.resolve()


class SnapshotFiles:
    """The files of one snapshot in its read-only directory *root*; served as they are (storage-side immutability).

    *where* in every method is how the caller names the path in messages (e.g. ``model/x in anf:pool/vol``).
    Subclasses (the local provider's) override :meth:`expected_sha256` to have content checked, and
    :attr:`hidden` for bookkeeping files at the snapshot's top that are not part of the snapshot.
    """

    #: top-level names in the snapshot directory that are the provider's bookkeeping -> what to call them
    hidden: ClassVar[dict[str, str]] = {}

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name

    # ---- integrity: none by default
    def expected_sha256(self, path: Path, st: os.stat_result, where: str) -> tuple[str, str] | None:
        """``(path as recorded, sha256)`` the content of the opened file *path* (stat *st*) must have, or ``None``
        when it need not be hashed. Raises :class:`SnapshotVerificationError` for a file the snapshot never had."""
        return None

    def _changed(self, where: str, recorded: str) -> NoReturn:
        raise SnapshotVerificationError(
            f"{where}: {recorded!r} no longer matches the sha256 its snapshot recorded (rewritten in place, e.g. by "
            "root through a hard link to the live file); refusing to serve changed content "
            "(see mlflow-anf snapshot verify)"
        )

    # ---- paths
    def resolve(self, inner: tuple[str, ...], where: str) -> Path:
        """The path of *inner* (segments below the snapshot root, already checked relative and normalised).

        It must exist, and it must not lead out of the snapshot through a symlink (the target is resolved, never
        read); a hidden bookkeeping file is not served.
        """
        if len(inner) == 1 and inner[0] in self.hidden:
            raise SnapshotArtifactNotFound(f"{where}: {self.hidden[inner[0]]} is not an artifact of the snapshot")
        local = self.root.joinpath(*inner)
        if not os.path.lexists(local):
            raise SnapshotArtifactNotFound(f"{where}: no artifact {'/'.join(inner) or '.'!r} in snapshot {self.name!r}")
        # a symlink captured in the snapshot must not lead back to live data
        if not _within(self.root, local.resolve()):
            raise InvalidSnapshotUri(f"{where}: leads out of the snapshot (to {local.resolve()}) through a symlink")
        return local

    def list_dir(self, path: Path, *, top: bool = False) -> list[SnapshotFileInfo]:
        """Entries directly in directory *path* (*top*: the snapshot root, whose bookkeeping files are left out).

        A symlink that leads out of the snapshot is listed without being stat-ed, and without a size."""
        infos = []
        with os.scandir(path) as it:
            for entry in it:
                if top and entry.name in self.hidden:
                    continue
                try:
                    if entry.is_symlink() and not _within(self.root, Path(entry.path).resolve()):
                        infos.append(SnapshotFileInfo(entry.name, False, None))  # reading it is refused
                        continue
                    st = entry.stat()  # follows a symlink inside the snapshot, as reading it would
                except OSError:
                    infos.append(SnapshotFileInfo(entry.name, False, None))  # dangling: reading it reports why
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                infos.append(SnapshotFileInfo(entry.name, is_dir, None if is_dir else st.st_size))
        return sorted(infos, key=lambda f: f.name)

    # ---- content
    def check_file(self, path: Path, where: str) -> None:
        """Refuse regular file *path* if its content is not what the snapshot recorded (no-op by default)."""
        with open(path.resolve(), "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            expected = self.expected_sha256(path, st, where)
            if expected is None:
                return
            h = hashlib.sha256()
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if h.hexdigest() != expected[1]:
            self._changed(where, expected[0])

    def copy_file(self, path: Path, dst: Path, where: str) -> None:
        """Copy regular file *path* to *dst* (content and times, not the read-only mode), published atomically.

        Content that :meth:`expected_sha256` asks to be checked is hashed on the way; changed bytes are never
        left at *dst*."""
        tmp = dst.with_name(f".{dst.name}.part-{secrets.token_hex(4)}")
        try:
            with open(path.resolve(), "rb", buffering=0) as fsrc, open(tmp, "xb") as fdst:
                st = os.fstat(fsrc.fileno())
                expected = self.expected_sha256(path, st, where)
                h = hashlib.sha256() if expected is not None else None
                while chunk := fsrc.read(_CHUNK):
                    if h is not None:
                        h.update(chunk)
                    fdst.write(chunk)
            if expected is not None and h is not None and h.hexdigest() != expected[1]:
                self._changed(where, expected[0])
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


__all__ = [
    "SNAPSHOT_DIR",
    "SnapshotFileInfo",
    "SnapshotArtifactNotFound",
    "SnapshotFiles",
    "find_snapshot_dir",
]
