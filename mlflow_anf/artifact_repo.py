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
(``[provider:]volume=/mount/point`` entries separated by commas; read when a repository is created) or, where the
provider knows the volume's directory without a mount table (:meth:`ProviderTraits.local_root`; the local provider:
the volume itself), that directory. Azure NetApp Files (and ONTAP) show a volume's snapshots read-only there on
every NFS client when the volume's snapshot directory is visible; the local provider lays its snapshots out the same
way. A volume that is not mounted gets an error saying how to mount it or restore the
snapshot (``mlflow-anf snapshot restore``).

Each file is checked the way its provider says (:meth:`ProviderTraits.snapshot_files
<mlflow_anf.snapshots.base.ProviderTraits.snapshot_files>`): a local snapshot's file against its manifest's sha256
(free when inode, mtime and size match the manifest; hashed otherwise), so content rewritten in place is refused,
never served; csi and anf snapshots are immutable on the storage side and served as they are. A symlink in the snapshot
that leads out of it is neither read nor stat-ed (``list_artifacts`` lists it without a size).

Every write (``log_artifact``, ``log_artifacts``, ``delete_artifacts``, and whatever MLflow builds on them) raises
:class:`SnapshotReadOnlyError`: a snapshot never changes. Registered as the ``snapshot`` scheme through the
``mlflow.artifact_repository`` entry point. The URI helpers (:func:`snapshot_artifact_uri`,
:func:`parse_snapshot_uri`, :func:`parse_mounts`) call no MLflow API, but importing this adapter module imports
MLflow's artifact-repository base class: import it lazily from code that must stay free of MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

from mlflow.entities.file_info import FileInfo
from mlflow.store.artifact.artifact_repo import ArtifactRepository

from mlflow_anf.snapshots import traits_for
from mlflow_anf.snapshots.base import SnapshotError
from mlflow_anf.snapshots.files import SNAPSHOT_DIR, SnapshotArtifactNotFound, SnapshotFiles
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


# ------------------------------------------------------------------------------------------------- repository
class SnapshotArtifactRepository(ArtifactRepository):
    """Read-only MLflow artifact repository over a directory inside a snapshot (see the module docstring).

    An adapter: it parses the URI (:mod:`mlflow_anf.snapshots.uri`), finds the volume's directory (a mount named in
    ``MLFLOW_ANF_SNAPSHOT_MOUNTS``, else the provider's :meth:`~mlflow_anf.snapshots.base.ProviderTraits.local_root`)
    and reads through the reader the provider gives (:meth:`~mlflow_anf.snapshots.base.ProviderTraits.snapshot_files`),
    which applies the provider's own integrity checks.
    """

    def __init__(
        self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
    ) -> None:
        self.location = parse_snapshot_uri(artifact_uri)
        self._traits = traits_for(self.location.provider)
        self._mounts = parse_mounts(os.environ.get(MOUNTS_ENV))
        self._readers: dict[str, SnapshotFiles] = {}
        self._volume_root = self._find_volume_root()
        if self.location.snapshot is not None:
            self._reader(self.location.snapshot)  # fail here, before MLflow starts a download
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
        root = self._traits.local_root(loc.volume)
        if root is not None:
            return root
        raise SnapshotNotMounted(
            f"{loc.uri()}: no mount point is known for {loc.provider} volume {loc.volume!r}; "
            + self._how_to_reach(loc.snapshot or "<snapshot>")
        )

    def _dir_name(self, name: str) -> str:
        return self.location.dir if self.location.dir is not None else name

    def _reader(self, name: str) -> SnapshotFiles:
        """The reader of snapshot *name*'s files, checked to exist (and to match the URI's digest, where it can)."""
        reader = self._readers.get(name)
        if reader is None:
            loc = self.location
            check_snapshot_name(loc.provider, name, "snapshot")
            reader = self._traits.snapshot_files(
                self._volume_root, name, provider=loc.provider, volume=loc.volume, dir_name=self._dir_name(name),
                digest=loc.digest, hint=self._how_to_reach(name),
            )  # fmt: skip
            self._readers[name] = reader
        return reader

    # ---- paths
    def _rel(self, artifact_path: str | None) -> tuple[str, ...]:
        return check_path(artifact_path or "", "artifact path")

    def _resolve(self, artifact_path: str | None) -> tuple[SnapshotFiles, Path, tuple[str, ...], str]:
        """``(reader, local path, segments under the snapshot root, how messages name it)``; the path must exist."""
        segments = self.location.segments + self._rel(artifact_path)
        if not segments:
            raise InvalidSnapshotUri(
                f"{self.artifact_uri}: names no snapshot; use {SCHEME}://<provider>/<snapshot>/<path>?volume=..."
            )
        reader = self._reader(segments[0])
        where = f"{'/'.join(segments)} in {self.location.provider}:{self.location.volume}"
        return reader, reader.resolve(segments[1:], where), segments[1:], where

    def get_local_path(self, artifact_path: str) -> str:
        """The artifact's read-only path inside the snapshot (no copy); it lives as long as the snapshot.

        A file is checked first the way its provider checks (local: against its manifest's sha256)."""
        reader, local, _inner, where = self._resolve(artifact_path)
        if local.is_file():
            reader.check_file(local, where)
        return str(local)

    def _is_directory(self, artifact_path: str) -> bool:
        return self._resolve(artifact_path)[1].is_dir()

    # ---- reading
    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        """Entries directly under *path* (a file lists as ``[]``), as paths relative to this repository's root."""
        reader, local, inner, _where = self._resolve(path)
        if not local.is_dir():
            return []
        prefix = "/".join(self._rel(path))
        return [
            FileInfo(f"{prefix}/{info.name}" if prefix else info.name, info.is_dir, info.size)
            for info in reader.list_dir(local, top=not inner)
        ]

    def download_artifacts(self, artifact_path: str, dst_path: str | None = None) -> str:
        """Copy *artifact_path* (file or directory) out of the snapshot; see :meth:`get_local_path` for no copy."""
        self._resolve(artifact_path)  # a clear error for a missing path, before MLflow's per-file machinery
        return super().download_artifacts(artifact_path, dst_path)

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        reader, src, inner, where = self._resolve(remote_file_path)
        if not src.is_file():
            raise SnapshotArtifactNotFound(f"{'/'.join(inner)!r} in snapshot {self.artifact_uri} is not a regular file")
        # content only: snapshot files are read-only, the copy need not be; checked on the way (see get_local_path)
        reader.copy_file(src, Path(local_path), where)

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
