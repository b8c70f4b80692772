"""The fd-based walk that captures a volume into a snapshot tree (reflink, hard link or copy per file).

The walk never follows a symbolic link and never acts on a path it has not opened itself; see
:mod:`mlflow_anf.snapshots.local` for why and how.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from mlflow_anf.snapshots.base import SnapshotError, SnapshotLimitExceeded
from mlflow_anf.snapshots.local.fsops import _kind
from mlflow_anf.snapshots.local.manifest import (
    _FICLONE,
    _NO_REFLINK_ERRNOS,
    _O_DIR,
    _O_FILE,
    _WRITE_BITS,
    SNAPSHOT_DIR,
    ManifestEntry,
    Progress,
    _Known,
    _ro_mode,
    _sha256_stream,
    _show,
)


class _Changed(Exception):
    """The name was replaced between looking at it and opening it: look again."""


class _TreeCapture:
    """Builds one snapshot tree in a private directory: reflink, hard-link or copy each file, hash what is new.

    The walk works from directory file descriptors only: every name is looked up with ``fstatat`` and opened with
    ``O_NOFOLLOW`` relative to its parent's descriptor, every permission change is an ``fchmod`` of a descriptor
    the walk opened itself, and a hard link is kept only when it names the very inode that was opened. A name
    swapped for a symbolic link (or a directory swapped for one) while the walk runs is therefore never followed:
    nothing outside the volume is read, linked or chmod-ed.
    """

    def __init__(
        self,
        vol: Path,
        dest: Path,
        previous: dict[str, _Known],
        method: str,
        progress: Progress | None,
    ) -> None:
        self.vol, self.dest, self.previous, self.progress = vol, dest, previous, progress
        self.method = method
        self.reflink_ok: bool | None = {"auto": None, "reflink": True, "hardlink": False}[method]
        self.entries: list[ManifestEntry] = []
        self.dir_modes: list[tuple[str, int]] = []
        self.skipped: list[str] = []
        self.files = self.dirs = self.symlinks = self.bytes = self.reused = 0
        self.by_method = {"reflink": 0, "hardlink": 0, "copy": 0}
        self.chmodded: list[tuple[str, int]] = []  # live files this run made read-only: (path, original mode)
        self.vol_dev = 0
        # linkat(2) of /proc/self/fd/N with AT_SYMLINK_FOLLOW links exactly the inode that was opened; without /proc
        # the name is linked and the result compared with the opened inode.
        self.proc_fd = os.path.isdir("/proc/self/fd")

    def method_used(self) -> str:
        used = [m for m, n in self.by_method.items() if n]
        return used[0] if len(used) == 1 else ("mixed" if used else "none")

    def undo_chmods(self) -> None:
        """Give the live files this run made read-only their write bits back (the snapshot is being discarded).

        Each one is reached through the snapshot's own hard link in the private work directory, which names the
        same inode; nothing is looked up in the live volume again.
        """
        for rel, mode in reversed(self.chmodded):
            with contextlib.suppress(OSError):
                fd = os.open(f"{self.dest}/{rel}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
        self.chmodded.clear()

    def run(self) -> None:
        try:
            root_fd = os.open(self.vol, _O_DIR)
        except OSError as exc:
            raise SnapshotError(f"volume {self.vol}: cannot read it: {exc.strerror}") from exc
        try:
            dest_fd = os.open(self.dest, _O_DIR)
        except BaseException:
            os.close(root_fd)
            raise
        self.vol_dev = os.fstat(root_fd).st_dev
        # A stack of open directories: (relative path, source dir fd, destination dir fd, names still to visit).
        stack: list[tuple[str, int, int, Iterator[str]]] = []
        try:
            stack.append(("", root_fd, dest_fd, iter(self._names(root_fd, ""))))  # type: ignore[arg-type]
            while stack:
                rel_dir, src_fd, dst_fd, names = stack[-1]
                item = next(names, None)
                if item is None:
                    stack.pop()
                    os.close(src_fd)
                    os.close(dst_fd)
                    continue
                name, hint = item
                if not rel_dir and name == SNAPSHOT_DIR:
                    continue
                rel = f"{rel_dir}/{name}" if rel_dir else name
                sub = self._child(src_fd, dst_fd, rel, name, hint)
                if sub is not None:
                    stack.append((rel, sub[0], sub[1], iter(self._names(sub[0], rel))))  # type: ignore[arg-type]
        finally:
            for _rel, src_fd, dst_fd, _names in stack:
                os.close(src_fd)
                os.close(dst_fd)
        self.entries.sort(key=lambda e: e.path)

    def _names(self, dir_fd: int, rel_dir: str) -> list[tuple[str, str | None]]:
        """Sorted (name, type hint from the directory entry, None when the filesystem gives none) of a directory."""
        try:
            with os.scandir(dir_fd) as it:
                return sorted((entry.name, _hint(entry)) for entry in it)
        except OSError as exc:
            raise SnapshotError(f"volume {self.vol}: cannot read {rel_dir or '.'}: {exc.strerror}") from exc

    def _child(self, src_fd: int, dst_fd: int, rel: str, name: str, hint: str | None) -> tuple[int, int] | None:
        """Capture one directory entry; for a directory return its (source fd, destination fd) to descend into.

        The directory entry's type only chooses how to open the name; what is captured is what the ``O_NOFOLLOW``
        open returns. A name that turns out to be something else is looked at again (``fstatat``).
        """
        for _attempt in range(8):
            kind = hint
            if kind is None:
                try:
                    kind = _kind(os.stat(name, dir_fd=src_fd, follow_symlinks=False).st_mode)
                except FileNotFoundError:
                    return None  # removed while we walked: not part of this point in time
            hint = None
            try:
                if kind == "dir":
                    return self._dir(src_fd, dst_fd, rel, name)
                if kind == "file":
                    self._file(src_fd, dst_fd, rel, name)
                    return None
                if kind == "symlink":
                    try:
                        target = os.readlink(name, dir_fd=src_fd)
                    except OSError as exc:
                        if exc.errno == errno.EINVAL:
                            raise _Changed from None  # no longer a link
                        raise
                    os.symlink(target, name, dir_fd=dst_fd)
                    self.entries.append(ManifestEntry(path=rel, type="symlink", target=target))
                    self.symlinks += 1
                    return None
                self.skipped.append(rel)  # sockets, fifos, devices: no content to keep (reported in the header)
                return None
            except FileNotFoundError:
                return None
            except _Changed:
                continue
        raise SnapshotError(
            f"volume {self.vol}: {_show(rel)} kept being replaced while it was snapshotted; pause writers and retry"
        )

    def _dir(self, src_fd: int, dst_fd: int, rel: str, name: str) -> tuple[int, int]:
        try:
            fd = os.open(name, _O_DIR, dir_fd=src_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _Changed from None  # swapped for a link or a file since the fstatat
            if exc.errno == errno.ENOENT:
                raise
            raise SnapshotError(f"volume {self.vol}: cannot read {_show(rel)}: {exc.strerror}") from exc
        try:
            fst = os.fstat(fd)
            if fst.st_dev != self.vol_dev:
                raise SnapshotError(
                    f"volume {self.vol}: {_show(rel)} is another filesystem (a mount point inside the volume); "
                    "snapshot that volume separately"
                )
            os.mkdir(name, 0o700, dir_fd=dst_fd)
            sub_dst = os.open(name, _O_DIR, dir_fd=dst_fd)
        except BaseException:
            os.close(fd)
            raise
        mode = _ro_mode(fst.st_mode) | 0o500  # read-only, but the owner can still walk it
        self.entries.append(ManifestEntry(path=rel, type="dir", mode=mode))
        self.dir_modes.append((rel, mode))
        self.dirs += 1
        return fd, sub_dst

    def _file(self, src_fd: int, dst_fd: int, rel: str, name: str) -> None:
        try:
            fd = os.open(name, _O_FILE, dir_fd=src_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.ENOTDIR):
                raise _Changed from None  # now a link, a socket, ...
            if exc.errno == errno.ENOENT:
                raise
            raise SnapshotError(f"volume {self.vol}: cannot read {_show(rel)}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _Changed
            try:
                captured, how, digest = self._capture(src_fd, dst_fd, rel, name, fd, st)
            except (_Changed, FileNotFoundError):
                raise
            except OSError as exc:
                if exc.errno == errno.EMLINK:
                    raise SnapshotLimitExceeded(
                        f"volume {self.vol}: {_show(rel)} has reached the filesystem's hard-link limit; "
                        "delete old snapshots"
                    ) from exc
                hint = " (hard links to files of other users need fs.protected_hardlinks=0 or ownership)" \
                    if exc.errno == errno.EPERM else ""  # fmt: skip
                raise SnapshotError(f"volume {self.vol}: cannot snapshot {_show(rel)}: {exc.strerror}{hint}") from exc
        finally:
            os.close(fd)
        key = (captured.st_ino, captured.st_mtime_ns)
        prev = self.previous.get(rel)
        # A hard-linked file that was writable may have been rewritten in place: hash it.
        trusted = not (how == "hardlink" and st.st_mode & _WRITE_BITS)
        if digest is None and prev is not None and trusted and prev[0] == key and prev[1] == captured.st_size:
            digest = prev[2]
            self.reused += 1
        elif digest is None:
            digest = _sha256_at(dst_fd, name)
        self.entries.append(
            ManifestEntry(
                path=rel, type="file", mode=_ro_mode(st.st_mode), size=captured.st_size, sha256=digest, stat=key
            )
        )
        self.files += 1
        self.bytes += captured.st_size
        if self.progress is not None:
            self.progress(self.files, rel)

    def _capture(
        self, src_fd: int, dst_fd: int, rel: str, name: str, fd: int, st: os.stat_result
    ) -> tuple[os.stat_result, str, str | None]:
        """Put the opened file *fd* at *name* in *dst_fd* without changing anything outside the volume.

        Returns (stat of the captured inode, method, sha256 when the bytes were read on the way).
        """
        if self.reflink_ok is not False:
            captured = self._reflink(dst_fd, name, fd, st)
            if captured is not None:
                self.by_method["reflink"] += 1
                return captured, "reflink", None
        writable = bool(st.st_mode & _WRITE_BITS)
        if writable and st.st_nlink > 1:
            # The inode has other names (in another snapshot made writable again, elsewhere in the volume, or
            # outside it: a download that `prepare` hard-linked): its permissions are not ours to change. Copy it.
            digest = _copy_fd(fd, dst_fd, name, st)
            self.by_method["copy"] += 1
            return st, "copy", digest
        if writable:
            os.fchmod(fd, _ro_mode(st.st_mode))  # the shared inode: live file and snapshot both read-only
            self.chmodded.append((rel, stat.S_IMODE(st.st_mode)))
        try:
            if self.proc_fd:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dst_fd, follow_symlinks=True)
                linked = st  # the opened inode itself: same inode, size and mtime
            else:
                os.link(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
                linked = os.stat(name, dir_fd=dst_fd, follow_symlinks=False)
                if (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino):  # the name was replaced after the open
                    os.unlink(name, dir_fd=dst_fd)
                    raise _Changed
        except BaseException:
            if writable:
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                self.chmodded.pop()
            raise
        self.by_method["hardlink"] += 1
        return linked, "hardlink", None

    def _reflink(self, dst_fd: int, name: str, fd: int, st: os.stat_result) -> os.stat_result | None:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dst_fd)
        try:
            fcntl.ioctl(out, _FICLONE, fd)
        except OSError as exc:
            os.close(out)
            os.unlink(name, dir_fd=dst_fd)
            if exc.errno not in _NO_REFLINK_ERRNOS:
                raise
            if self.method == "reflink":
                raise SnapshotError(
                    f"volume {self.vol}: method 'reflink' requested but the filesystem refuses FICLONE "
                    f"({exc.strerror}); use method 'auto' or 'hardlink'"
                ) from exc
            self.reflink_ok = False
            return None
        try:
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.fchmod(out, _ro_mode(st.st_mode))
        finally:
            os.close(out)
        self.reflink_ok = True
        return st  # stat from before cloning: a write during the clone must not match next time


def _hint(entry: os.DirEntry[str]) -> str | None:
    """The type a directory entry reports (``d_type``; no system call), ``None`` if the filesystem reports none."""
    try:
        if entry.is_symlink():
            return "symlink"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_file(follow_symlinks=False):
            return "file"
    except OSError:
        return None
    return None  # a special file, or DT_UNKNOWN: fstatat decides


def _copy_fd(fd: int, dst_fd: int, name: str, st: os.stat_result) -> str:
    """Copy the bytes of open file *fd* to a new read-only file *name* in *dst_fd*; returns their sha256."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dst_fd)
    try:
        with open(os.dup(fd), "rb", buffering=0) as src:
            src.seek(0)
            while n := src.readinto(buf):
                h.update(view[:n])
                done = 0
                while done < n:
                    done += os.write(out, view[done:n])
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.fchmod(out, _ro_mode(st.st_mode))
    finally:
        os.close(out)
    return h.hexdigest()


def _sha256_at(dir_fd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    with open(fd, "rb", buffering=0) as f:
        return _sha256_stream(f)


