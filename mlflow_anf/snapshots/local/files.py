"""Reading a local snapshot's files with its manifest's checks (see :mod:`mlflow_anf.snapshots.files`).

A local snapshot may share inodes with the live volume (hard links): a file is served only if it is a file of the
manifest, and only with the content the manifest recorded (hashed unless inode, mtime and size still match).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from mlflow_anf.snapshots.base import SnapshotVerificationError
from mlflow_anf.snapshots.files import SnapshotFiles
from mlflow_anf.snapshots.local.manifest import MANIFEST_NAME, ManifestEntry, file_unchanged


class LocalSnapshotFiles(SnapshotFiles):
    """The files of one local snapshot, checked against its (already validated) manifest *entries*."""

    hidden: ClassVar[dict[str, str]] = {MANIFEST_NAME: "the snapshot manifest"}

    def __init__(self, root: Path, name: str, entries: list[ManifestEntry]) -> None:
        super().__init__(root, name)
        self._entries = {e.path: e for e in entries}

    def expected_sha256(self, path: Path, st: os.stat_result, where: str) -> tuple[str, str] | None:
        rel = path.resolve().relative_to(self.root).as_posix()
        entry = self._entries.get(rel)
        if entry is None or entry.type != "file":
            raise SnapshotVerificationError(
                f"{where}: {rel!r} is not a file of snapshot {self.name!r} according to its manifest "
                "(added after the snapshot was taken?); refusing to serve it"
            )
        if file_unchanged(entry, st):
            return None
        return entry.path, entry.sha256 or ""
