"""Read artifacts back from *inside a snapshot*: the ``snapshot://`` MLflow artifact repository (read-only).

A run that snapshotted its output directory can point at a file or directory in that snapshot with a URI that
any MLflow API taking an artifact URI accepts (``mlflow.pytorch.load_model``, ``mlflow.artifacts.download_artifacts``,
``mlflow.register_model``), and that keeps working after the live copy was overwritten or deleted::

    snapshot://<provider>/<snapshot>/<path>?volume=<quoted volume>[&digest=<digest>][&dir=<storage name>]

* ``<provider>`` — the snapshot provider (``local``, ``csi``, ``anf``, or a registered third-party one);
* ``<snapshot>`` — the snapshot's name as its provider reports it (:attr:`Snapshot.name`);
* ``<path>`` — a relative POSIX path inside the snapshot (empty: the whole snapshot; the URI then ends in ``/``);
* ``volume`` — the provider's volume id, percent-quoted (local: the directory; csi: ``namespace/pvc``;
  anf: ``pool/volume``);
* ``digest`` — the snapshot's content digest where the provider computes one (local); a snapshot of that name
  with different content (deleted and re-created) is refused;
* ``dir`` — the snapshot's directory name under ``.snapshot/`` when it differs from its name (csi: the storage
  side's name, the last part of the VolumeSnapshotContent's ``snapshotHandle``; NetApp Trident names it
  ``snapshot-<uid>``).

The repository reads a local directory inside the snapshot: ``<root>/.snapshot/<dir>/<path>``, where ``<root>`` is
the mount point given for the volume in the environment variable ``MLFLOW_ANF_SNAPSHOT_MOUNTS``
(``[provider:]volume=/mount/point`` entries separated by commas; read when a repository is created) or, for the
local provider only, the volume directory itself. Azure NetApp Files (and ONTAP) show a volume's snapshots
read-only there on every NFS client when the volume's snapshot directory is visible; the local provider lays its
snapshots out the same way. A volume that is not mounted gets an error saying how to mount it or restore the
snapshot (``mlflow-anf snapshot restore``).

Every file read from a local snapshot is checked against its manifest's sha256 (free when inode, mtime and size
match the manifest; hashed otherwise): content rewritten in place is refused, never served. A symlink in the snapshot
that leads out of it is neither read nor stat-ed (``list_artifacts`` lists it without a size).

Every write (``log_artifact``, ``log_artifacts``, ``delete_artifacts``, and whatever MLflow builds on them) raises
:class:`SnapshotReadOnlyError`: a snapshot never changes. Registered as the ``snapshot`` scheme through the
``mlflow.artifact_repository`` entry point. The URI helpers (:func:`snapshot_artifact_uri`,
:func:`parse_snapshot_uri`, :func:`parse_mounts`) call no MLflow API, but importing this adapter module imports
MLflow's artifact-repository base class: import it lazily from code that must stay free of MLflow.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Any, NoReturn

from mlflow.entities.file_info import FileInfo
from mlflow.store.artifact.artifact_repo import ArtifactRepository

from mlflow_anf.snapshots.base import (
    SnapshotError,
    SnapshotNotFound,
    SnapshotVerificationError,
)
from mlflow_anf.snapshots.local import (
    MANIFEST_NAME,
    SNAPSHOT_DIR,
    LocalSnapshotProvider,
    ManifestEntry,
    file_unchanged,
)
from mlflow_anf.snapshots.uri import (  # the grammar lives there; these names stay importable from here
    MOUNTS_ENV,
    SCHEME,
    InvalidSnapshotUri,
    SnapshotLocation,
    SnapshotMount,  # noqa: F401
    check_path,
    check_snapshot_name,
    find_mount,
    parse_mounts,
    parse_snapshot_uri,
    snapshot_artifact_uri,
)


class SnapshotReadOnlyError(SnapshotError, PermissionError):
    """A write was attempted through a ``snapshot://`` repository."""


class SnapshotNotMounted(SnapshotError):
    """The snapshot's volume is not reachable as a directory on this machine."""


class SnapshotArtifactNotFound(SnapshotNotFound):
    """The snapshot exists but holds nothing at the requested path."""


# ------------------------------------------------------------------------------------------------- repository
def _within(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


class SnapshotArtifactRepository(ArtifactRepository):
    """Read-only MLflow artifact repository over a directory inside a snapshot (see the module docstring)."""

    def __init__(
        self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
    ) -> None:
        self.location = parse_snapshot_uri(artifact_uri)
        self._mounts = parse_mounts(os.environ.get(MOUNTS_ENV))
        self._roots: dict[str, Path] = {}
        self._manifests: dict[str, dict[str, ManifestEntry]] = {}  # local snapshots: path -> entry
        self._volume_root = self._find_volume_root()
        if self.location.snapshot is not None:
            self._snapshot_root(self.location.snapshot)  # fail here, before MLflow starts a download
        super().__init__(artifact_uri, tracking_uri, registry_uri)

    # ---- locating the snapshot
    def _how_to_reach(self, name: str) -> str:
        loc = self.location
        return (
            f"mount volume {loc.volume!r} on this machine and name its mount point in {MOUNTS_ENV} "
            f"(e.g. {MOUNTS_ENV}='{loc.provider}:{loc.volume}=/mnt/point'; the snapshot must be visible at "
            f"/mnt/point/{SNAPSHOT_DIR}/{self._dir_name(name)}/ — on Azure NetApp Files the volume's snapshot "
            "directory must not be hidden), or restore the snapshot to a new volume and read it there: "
            f"mlflow-anf snapshot restore --provider {loc.provider} --volume {loc.volume} {name} --target <new volume> "
            "(or --run-id <run id> --role <role> instead of --volume and the name)"
        )

    def _find_volume_root(self) -> Path:
        loc = self.location
        mount = find_mount(self._mounts, loc.provider, loc.volume)
        if mount is not None:
            root = mount.path
            if not root.is_dir():
                raise SnapshotNotMounted(
                    f"{MOUNTS_ENV}: mount point {root} of volume {loc.volume!r} is not a directory on this machine"
                )
            return root
        if loc.provider == "local":
            return Path(loc.volume)
        raise SnapshotNotMounted(
            f"{loc.uri()}: no mount point is known for {loc.provider} volume {loc.volume!r}; "
            + self._how_to_reach(loc.snapshot or "<snapshot>")
        )

    def _dir_name(self, name: str) -> str:
        return self.location.dir if self.location.dir is not None else name

    def _snapshot_root(self, name: str) -> Path:
        """The snapshot's read-only directory (resolved), checked to exist (and, for local, to match the digest)."""
        cached = self._roots.get(name)
        if cached is not None:
            return cached
        loc = self.location
        check_snapshot_name(loc.provider, name, "snapshot")
        snapdir = self._volume_root / SNAPSHOT_DIR / self._dir_name(name)
        if loc.provider == "local":
            record = LocalSnapshotProvider().get(str(self._volume_root), self._dir_name(name))
            if loc.digest is not None and record.digest != loc.digest:
                raise SnapshotVerificationError(
                    f"snapshot {record.ref}: its digest {record.digest} differs from {loc.digest} in the URI "
                    "(the name was reused for another snapshot); the snapshot this URI pinned is gone"
                )
            entries = LocalSnapshotProvider().entries(record)  # checked: no path leaves the snapshot
            self._manifests[name] = {e.path: e for e in entries}
        elif not snapdir.is_dir():
            if not (self._volume_root / SNAPSHOT_DIR).is_dir():
                raise SnapshotNotFound(
                    f"snapshot {name!r}: {self._volume_root / SNAPSHOT_DIR} does not exist; is {self._volume_root} "
                    f"the mount point of {loc.provider} volume {loc.volume!r}, with its snapshot directory visible? "
                    + self._how_to_reach(name)
                )
            raise SnapshotNotFound(
                f"snapshot {name!r} of {loc.provider} volume {loc.volume!r} not found at {snapdir} "
                "(deleted, or not ready yet?)"
            )
        root = snapdir.resolve()
        self._roots[name] = root
        return root

    # ---- paths
    def _rel(self, artifact_path: str | None) -> tuple[str, ...]:
        return check_path(artifact_path or "", "artifact path")

    def _resolve(self, artifact_path: str | None) -> tuple[Path, Path, tuple[str, ...]]:
        """``(snapshot root, local path, segments under the root)`` of *artifact_path*; the path must exist."""
        segments = self.location.segments + self._rel(artifact_path)
        if not segments:
            raise InvalidSnapshotUri(
                f"{self.artifact_uri}: names no snapshot; use {SCHEME}://<provider>/<snapshot>/<path>?volume=..."
            )
        root = self._snapshot_root(segments[0])
        inner = segments[1:]
        where = f"{'/'.join(segments)} in {self.location.provider}:{self.location.volume}"
        inner_path = "/".join(inner) or "."
        if self.location.provider == "local" and inner == (MANIFEST_NAME,):
            raise SnapshotArtifactNotFound(f"{where}: the snapshot manifest is not an artifact")
        local = root.joinpath(*inner)
        if not os.path.lexists(local):
            raise SnapshotArtifactNotFound(f"{where}: no artifact {inner_path!r} in snapshot {segments[0]!r}")
        if not _within(root, local.resolve()):  # a symlink captured in the snapshot must not lead back to live data
            raise InvalidSnapshotUri(f"{where}: leads out of the snapshot (to {local.resolve()}) through a symlink")
        return root, local, inner

    def _entry_for(self, root: Path, local: Path, segments: tuple[str, ...]) -> ManifestEntry | None:
        """The manifest entry of the file *local* resolves to (local snapshots; ``None`` for csi/anf)."""
        manifest = self._manifests.get(segments[0])
        if manifest is None:
            return None
        rel = local.resolve().relative_to(root).as_posix()
        entry = manifest.get(rel)
        if entry is None or entry.type != "file":
            raise SnapshotVerificationError(
                f"{'/'.join(segments)}: {rel!r} is not a file of snapshot {segments[0]!r} according to its manifest "
                "(added after the snapshot was taken?); refusing to serve it"
            )
        return entry

    def _changed(self, segments: tuple[str, ...], entry: ManifestEntry) -> NoReturn:
        raise SnapshotVerificationError(
            f"{'/'.join(segments)} in {self.location.provider}:{self.location.volume}: {entry.path!r} no longer "
            f"matches the sha256 its snapshot recorded (rewritten in place, e.g. by root through a hard link to the "
            "live file); refusing to serve changed content (see mlflow-anf snapshot verify)"
        )

    def _check_file(self, root: Path, local: Path, segments: tuple[str, ...]) -> None:
        """Refuse a local snapshot file whose content no longer matches its manifest (inode/mtime/size first)."""
        entry = self._entry_for(root, local, segments)
        if entry is None:
            return
        with open(local.resolve(), "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if file_unchanged(entry, st):
                return
            h = hashlib.sha256()
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if st.st_size != entry.size or h.hexdigest() != entry.sha256:
            self._changed(segments, entry)

    def get_local_path(self, artifact_path: str) -> str:
        """The artifact's read-only path inside the snapshot (no copy); it lives as long as the snapshot.

        A file of a local snapshot is checked against its manifest first (see :meth:`_check_file`)."""
        root, local, _inner = self._resolve(artifact_path)
        if local.is_file():
            self._check_file(root, local, self.location.segments + self._rel(artifact_path))
        return str(local)

    def _is_directory(self, artifact_path: str) -> bool:
        return self._resolve(artifact_path)[1].is_dir()

    # ---- reading
    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        """Entries directly under *path* (a file lists as ``[]``), as paths relative to this repository's root."""
        _root, local, inner = self._resolve(path)
        if not local.is_dir():
            return []
        prefix = "/".join(self._rel(path))
        hide_manifest = self.location.provider == "local" and not inner
        infos = []
        with os.scandir(local) as it:
            for entry in it:
                if hide_manifest and entry.name == MANIFEST_NAME:
                    continue
                rel = f"{prefix}/{entry.name}" if prefix else entry.name
                try:
                    if entry.is_symlink() and not _within(_root, Path(entry.path).resolve()):
                        infos.append(FileInfo(rel, False, None))  # leads out of the snapshot: reading it is refused
                        continue
                    st = entry.stat()  # follows a symlink inside the snapshot, as reading it would
                except OSError:
                    infos.append(FileInfo(rel, False, None))  # dangling: reading it reports why
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                infos.append(FileInfo(rel, is_dir, None if is_dir else st.st_size))
        return sorted(infos, key=lambda f: f.path)

    def download_artifacts(self, artifact_path: str, dst_path: str | None = None) -> str:
        """Copy *artifact_path* (file or directory) out of the snapshot; see :meth:`get_local_path` for no copy."""
        self._resolve(artifact_path)  # a clear error for a missing path, before MLflow's per-file machinery
        return super().download_artifacts(artifact_path, dst_path)

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        root, src, inner = self._resolve(remote_file_path)
        if not src.is_file():
            raise SnapshotArtifactNotFound(f"{'/'.join(inner)!r} in snapshot {self.artifact_uri} is not a regular file")
        segments = self.location.segments + self._rel(remote_file_path)
        entry = self._entry_for(root, src, segments)
        dst = Path(local_path)
        tmp = dst.with_name(f".{dst.name}.part-{secrets.token_hex(4)}")
        try:
            # content only: snapshot files are read-only, the copy need not be. A local snapshot's file is hashed
            # on the way unless inode, mtime and size still match its manifest; changed bytes are never served.
            with open(src.resolve(), "rb", buffering=0) as fsrc, open(tmp, "xb") as fdst:
                st = os.fstat(fsrc.fileno())
                h = hashlib.sha256() if entry is not None and not file_unchanged(entry, st) else None
                while chunk := fsrc.read(1 << 20):
                    if h is not None:
                        h.update(chunk)
                    fdst.write(chunk)
            if entry is not None and h is not None and h.hexdigest() != entry.sha256:
                self._changed(segments, entry)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # ---- writing: never
    def _read_only(self, operation: str) -> NoReturn:
        raise SnapshotReadOnlyError(
            f"{operation}: {self.artifact_uri} is inside a snapshot, which is read-only; log new artifacts to the "
            "run's own artifact store (mlflow.log_artifact) or restore the snapshot to a writable volume "
            "(mlflow-anf snapshot restore)"
        )

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> NoReturn:
        self._read_only("log_artifact")

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> NoReturn:
        self._read_only("log_artifacts")

    def _log_artifact_async(self, filename: str, artifact_path: str | None = None, artifact: Any = None) -> NoReturn:
        self._read_only("log_artifact")

    def delete_artifacts(self, artifact_path: str | None = None) -> NoReturn:
        self._read_only("delete_artifacts")


__all__ = [
    "MOUNTS_ENV",
    "SCHEME",
    "InvalidSnapshotUri",
    "SnapshotArtifactNotFound",
    "SnapshotArtifactRepository",
    "SnapshotLocation",
    "SnapshotMount",
    "SnapshotNotMounted",
    "SnapshotReadOnlyError",
    "find_mount",
    "parse_mounts",
    "parse_snapshot_uri",
    "snapshot_artifact_uri",
]
