"""Local directory snapshots, laid out the way ONTAP / Azure NetApp Files expose theirs.

A *volume* is a directory. Snapshot ``<name>`` of it lives in ``<volume>/.snapshot/<name>/``: a read-only tree with
the volume's files as they were, plus a manifest ``.mlflow-anf-snapshot.json`` at its root (the volume's own
top-level ``.snapshot`` is never part of a snapshot). The manifest is JSON Lines: a header line (name, created,
labels, digest, counts), then one line per entry sorted by path — ``file`` (size, mode, sha256), ``dir`` (mode) or
``symlink`` (target). The snapshot digest is ``sha256:`` + the sha256 over the canonical form of those entries
(type, path, mode, size, sha256/target), so it names the content, not the time or the name.

How files are captured:

* **reflink** (``FICLONE``; XFS, btrfs, ...): the snapshot gets its own copy-on-write clone, made read-only; the live
  file is untouched and stays writable.
* **hard link** (everything else, e.g. ext4, NFS): the snapshot shares the live file's inode. To keep the snapshot
  immutable the provider **removes the write permission bits from the live file** when it snapshots it — only from
  a file whose inode has no other name (``st_nlink == 1``). From then on
  the live tree is copy-on-write by convention: writers must *replace* a file (write a temp file, rename it over the
  old one — what Python's atomic writers, ``torch.save`` to a new path, rsync, git and most tools do) instead of
  rewriting it in place; a replaced file gets a new inode and the snapshot keeps the old one. An owner (or root) can
  still ``chmod u+w`` and rewrite in place, which would change the snapshot too: :meth:`LocalSnapshotProvider.verify`
  re-hashes every file and reports that as ``changed:``, restore (even without verify) and ``snapshot://`` reads
  hash a file whose inode, mtime or size differs from its manifest entry and refuse changed content. Manifests record
  modes without write bits, so the digest does not depend on this chmod, and restore gives files back their owner
  write bit.
* **copy**: a *writable* file whose inode has other names (a download that ``prepare`` hard-linked into the volume,
  a second name inside the volume, a file made writable again after an earlier snapshot) is copied byte by byte:
  permissions of an inode shared with anything outside the snapshot are never changed.

The walk never follows a symbolic link and never acts on a path it has not opened itself: it works from directory
file descriptors (``fstatat``, ``openat`` with ``O_NOFOLLOW``), changes permissions only with ``fchmod`` on the
descriptor it opened, and links that very inode (``/proc/self/fd``, or by name checked against the opened inode).
A name swapped for a link while the walk runs is captured as the link (or looked at again), never followed. If a
snapshot fails, the write bits it removed are given back. Fifos, sockets and devices are skipped and listed in the
header's ``skipped`` (the CLI prints them).

Repeated snapshots are cheap: a file whose inode, size and mtime equal those recorded by the volume's latest
snapshot (and which, for hard links, is still read-only as that snapshot left it) reuses the recorded sha256 instead
of being read again; a previous manifest that does not match its own digest is not trusted. This is the quick check
git and rsync use: an in-place rewrite that restores size *and* mtime is not noticed by ``create`` — only by
``verify``.

Names are DNS-1123 and at most :data:`LOCAL_NAME_MAX` (237) characters, so that the work directories fit the
255-byte file name limit. Atomicity: a snapshot is built in ``.snapshot/.tmp-<name>-<random>/`` (held with ``flock``
while it is built), its manifest is fsynced, its directories are made read-only, the filesystem is synced (one
``syncfs``; an fsync per directory where that call is missing), and one ``rename`` publishes it. A killed process
leaves only a dot-directory that ``list``/``get`` never show; the next ``create``/``list``/``delete`` removes it
once no live process holds its lock. ``delete`` renames the snapshot away first (``.del-...``), then removes it.
Restore checks every manifest path first (relative, normalised, each parent a directory of the manifest) and builds
the copy in a locked ``.tmp-restore-*`` directory (next to a new target, inside an existing empty one) that is
published only when complete; the next restore into the same place removes what a killed one left. Snapshot
consistency is per file (each file as it was when linked); pause writers for a cut across files.

The provider is split in parts: :mod:`.manifest` (layout names, the manifest model, its digest and checks),
:mod:`.capture` (the fd-based walk that builds a snapshot), :mod:`.fsops` (locked work directories, durable
publishing, the fd-based restore copy), :mod:`.files` (reading a snapshot's files with the manifest's checks, for
``snapshot://``) and :mod:`.provider` (:class:`LocalSnapshotProvider`). Every name below stays importable from
``mlflow_anf.snapshots.local``.
"""

from __future__ import annotations

# _RestoreCopy, _TreeCapture, _Changed: the same class objects the provider uses, for tests that patch them
from mlflow_anf.snapshots.local.capture import _Changed, _TreeCapture  # noqa: F401
from mlflow_anf.snapshots.local.fsops import _RestoreCopy, open_in_snapshot  # noqa: F401
from mlflow_anf.snapshots.local.manifest import (
    FORMAT,
    LOCAL_NAME_MAX,
    MANIFEST_NAME,
    SNAPSHOT_DIR,
    InvalidRequest,
    ManifestEntry,
    ManifestError,
    ManifestHeader,
    Progress,
    check_entries,
    file_unchanged,
    manifest_digest,
    read_entries,
    read_header,
    validate_local_name,
)
from mlflow_anf.snapshots.local.provider import LocalSnapshotProvider

__all__ = [
    "FORMAT",
    "LOCAL_NAME_MAX",
    "MANIFEST_NAME",
    "SNAPSHOT_DIR",
    "InvalidRequest",
    "LocalSnapshotProvider",
    "ManifestEntry",
    "ManifestError",
    "ManifestHeader",
    "Progress",
    "check_entries",
    "file_unchanged",
    "manifest_digest",
    "open_in_snapshot",
    "read_entries",
    "read_header",
    "validate_local_name",
]
