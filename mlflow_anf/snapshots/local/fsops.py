"""Filesystem operations of the local provider that need care: locked work directories, removal of read-only
trees, durable publishing, and the fd-based copy of a snapshot's entries into a restore target.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from mlflow_anf.snapshots.base import SnapshotError, SnapshotNotFound, SnapshotVerificationError
from mlflow_anf.snapshots.local.manifest import (
    _FICLONE,
    _NO_REFLINK_ERRNOS,
    _O_DIR,
    ManifestEntry,
    _sha256_stream,
    _show,
    file_unchanged,
)


def _fsync_path(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: Path | str) -> bool:
    """Flush the filesystem holding *path* with one ``syncfs(2)``; ``False`` where that call is unavailable.

    One journal commit instead of one per directory or file (an fsync each costs a commit on ext4); it also
    flushes other writers' dirty data on the same filesystem.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True


def _try_lock(path: Path, *, blocking: bool) -> int | None:
    """Open directory *path* and take an exclusive flock; ``None`` if it is gone or (non-blocking) held."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    if os.fstat(fd).st_nlink == 0:  # removed by a cleaner before we locked it
        os.close(fd)
        return None
    return fd


def _make_locked_dir(parent: Path, prefix: str) -> tuple[Path, int]:
    """Create a fresh private directory under *parent* and lock it before anyone may treat it as stale."""
    for _ in range(8):
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        fd = _try_lock(path, blocking=True)
        if fd is not None:
            return path, fd
    raise SnapshotError(f"could not create a working directory in {parent}")


def _force_rmtree(path: Path) -> None:
    """Remove a snapshot tree: give its *directories* back their write bit first.

    Files are never chmod-ed: with hard links their inodes are shared with the live volume and other snapshots.
    """
    if not os.path.lexists(path):
        return
    if not path.is_dir() or path.is_symlink():
        path.unlink()
        return
    for root, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(root, stat.S_IMODE(os.lstat(root).st_mode) | 0o700)
    try:
        shutil.rmtree(path)
    except FileNotFoundError:  # something else removed part of it meanwhile
        if os.path.lexists(path):
            shutil.rmtree(path)


def _kind(st_mode: int) -> str:
    if stat.S_ISREG(st_mode):
        return "file"
    if stat.S_ISDIR(st_mode):
        return "dir"
    return "symlink" if stat.S_ISLNK(st_mode) else "special file"


def _walk_lstat(top: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under *top*, not following symlinks."""
    stack = [("", str(top))]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as it:
            children = list(it)
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            st = child.stat(follow_symlinks=False)
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                stack.append((rel, child.path))


def open_in_snapshot(root_fd: int, rel: str, flags: int = os.O_RDONLY) -> int:
    """Open *rel* below directory fd *root_fd* without following any symbolic link on the way (``ELOOP`` if one)."""
    parts = rel.split("/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _O_DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


class _RestoreCopy:
    """Copies a snapshot's (validated) entries into a fresh private tree, checking sha256 on the way.

    Sources are opened below the snapshot's directory fd without following links; with ``verify`` off, a file
    whose inode, mtime or size differs from its manifest entry is still hashed, so an in-place rewrite of a
    hard-linked snapshot is refused instead of restored.
    """

    _BUF = 1 << 20

    def __init__(self, snapdir: Path, ref: str, dest: Path, verify: bool) -> None:
        self.snapdir, self.ref, self.dest, self.verify = snapdir, ref, dest, verify
        self.reflink_ok: bool | None = None
        self._buf = bytearray(self._BUF)

    def run(self, entries: list[ManifestEntry]) -> None:
        try:
            snap_fd = os.open(self.snapdir, _O_DIR)
        except FileNotFoundError:
            raise SnapshotNotFound(f"snapshot {self.ref} was deleted before it could be restored") from None
        try:
            self._run(snap_fd, entries)
        finally:
            os.close(snap_fd)

    def _run(self, snap_fd: int, entries: list[ManifestEntry]) -> None:
        dirs: list[tuple[Path, int]] = []
        for entry in entries:  # sorted by path, validated: a directory precedes its contents
            dst = self.dest / entry.path
            try:
                if entry.type == "dir":
                    os.mkdir(dst, 0o700)
                    dirs.append((dst, entry.mode | 0o700))
                elif entry.type == "symlink":
                    os.symlink(entry.target or "", dst)
                else:
                    self._copy(entry, open_in_snapshot(snap_fd, entry.path), dst)
            except (FileNotFoundError, NotADirectoryError) as exc:
                if os.fstat(snap_fd).st_nlink == 0:
                    raise SnapshotNotFound(f"snapshot {self.ref} was deleted while it was being restored") from exc
                raise SnapshotVerificationError(
                    f"snapshot {self.snapdir}: {_show(entry.path)} is missing; the snapshot is damaged (see verify)"
                ) from exc
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise SnapshotVerificationError(
                    f"snapshot {self.snapdir}: {_show(entry.path)} is reached through a symbolic link the manifest "
                    "does not record; the snapshot is damaged (see verify)"
                ) from exc
        for path, mode in reversed(dirs):
            os.chmod(path, mode)

    def _copy(self, entry: ManifestEntry, src_fd: int, dst: Path) -> None:
        with open(src_fd, "rb", buffering=0) as fsrc, open(dst, "xb", buffering=0) as fdst:
            st = os.fstat(fsrc.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise SnapshotVerificationError(
                    f"snapshot {self.snapdir}: {_show(entry.path)} is not a regular file; the snapshot is damaged"
                )
            check = self.verify or not file_unchanged(entry, st)
            digest = None
            if self.reflink_ok is not False:
                try:
                    fcntl.ioctl(fdst.fileno(), _FICLONE, fsrc.fileno())
                    self.reflink_ok = True
                    if check:
                        digest = _sha256_stream(fsrc, self._buf)
                except OSError as exc:
                    if exc.errno not in _NO_REFLINK_ERRNOS:
                        raise
                    self.reflink_ok = False
            if self.reflink_ok is False:
                h = hashlib.sha256() if check else None
                view = memoryview(self._buf)
                while n := fsrc.readinto(self._buf):
                    chunk = view[:n]
                    if h is not None:
                        h.update(chunk)
                    fdst.write(chunk)
                digest = h.hexdigest() if h is not None else None
            os.fchmod(fdst.fileno(), entry.mode | 0o200)
            os.utime(fdst.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
        if check and digest != entry.sha256:
            raise SnapshotVerificationError(
                f"snapshot {self.snapdir}: {_show(entry.path)} does not match its manifest sha256 (changed in place "
                "since the snapshot was taken?); the snapshot is damaged (see verify)"
            )
