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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.snapshots.base import (
    InvalidSnapshotName,
    ProviderTraits,
    SnapshotInputError,
    Snapshot,
    SnapshotError,
    SnapshotExists,
    SnapshotLimitExceeded,
    SnapshotNotFound,
    SnapshotVerificationError,
    VerifyResult,
    validate_snapshot_name,
)

SNAPSHOT_DIR = ".snapshot"
MANIFEST_NAME = ".mlflow-anf-snapshot.json"
FORMAT = "mlflow-anf-local-snapshot/1"
_TMP_PREFIX = ".tmp-"
_DEL_PREFIX = ".del-"
_FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h
_NO_REFLINK_ERRNOS = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS, errno.EPERM}
_WRITE_BITS = 0o222
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a fifo swapped in never blocks
_TOKEN_CHARS = 12  # secrets.token_hex(6)
_RESTORE_PREFIX = f"{_TMP_PREFIX}restore-"
_RESTORE_WORK_RE = re.compile(r"^\.tmp-restore-.{0,40}-[0-9a-f]{12}$", re.DOTALL)
#: the longest snapshot name whose work directories (``.tmp-<name>-<token>``, ``.del-<name>-<token>``) still fit the
#: 255-byte file name limit of Linux filesystems
LOCAL_NAME_MAX = 255 - len(_TMP_PREFIX) - 1 - _TOKEN_CHARS
_ENTRY_TYPES = ("file", "dir", "symlink")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

Progress = Callable[[int, str], None]
_Known = tuple[tuple[int, ...], int, str]  # what digest reuse needs of a previous entry: (inode, mtime), size, sha


class InvalidRequest(SnapshotError, ValueError):
    """A request the local provider refuses as given (non-empty restore target, reserved file name, ...)."""


class ManifestError(SnapshotVerificationError):
    """A manifest entry line that is unreadable or unsafe (the message starts with ``<manifest>:<line>:``)."""


_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


@dataclass(slots=True)
class ManifestEntry:
    """One path of a snapshot. ``stat`` (live inode and mtime at capture) only feeds digest reuse."""

    path: str
    type: Literal["file", "dir", "symlink"]
    mode: int = 0
    size: int = 0
    sha256: str | None = None
    target: str | None = None
    stat: tuple[int, int] | None = None

    def canonical(self) -> str:
        """``json.dumps([type, path, mode, size, sha256 | target], separators=(",", ":"))`` plus a newline.

        Spelled out with the C string escaper because it runs once per file per snapshot.
        """
        if self.type == "file":
            value = f'"{self.sha256}"' if self.sha256 is not None else "null"
        else:
            value = _json_str(self.target) if self.type == "symlink" and self.target is not None else "null"
        return f'["{self.type}",{_json_str(self.path)},{self.mode},{self.size},{value}]\n'

    def to_json(self) -> str:
        path = _json_str(self.path)
        if self.type == "file":
            stat_json = f"[{self.stat[0]},{self.stat[1]}]" if self.stat else "null"
            return (
                f'{{"path":{path},"type":"file","mode":"{self.mode:04o}","size":{self.size},'
                f'"sha256":"{self.sha256}","stat":{stat_json}}}'
            )
        if self.type == "dir":
            return f'{{"path":{path},"type":"dir","mode":"{self.mode:04o}"}}'
        return f'{{"path":{path},"type":"symlink","target":{_json_str(self.target or "")}}}'

    @classmethod
    def from_json(cls, line: str) -> ManifestEntry:
        return cls.from_dict(json.loads(line))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestEntry:
        st = data.get("stat")
        return cls(
            path=data["path"],
            type=data["type"],
            mode=int(data.get("mode", "0"), 8),
            size=int(data.get("size", 0)),
            sha256=data.get("sha256"),
            target=data.get("target"),
            stat=(int(st[0]), int(st[1])) if st else None,
        )


class ManifestHeader(BaseModel):
    """First line of a snapshot manifest."""

    model_config = ConfigDict(extra="ignore")

    format: str
    name: str
    volume: str
    created: datetime
    labels: dict[str, str] = Field(default_factory=dict)
    digest: str
    entries: int
    files: int
    dirs: int
    symlinks: int
    bytes: int
    method: str
    reused_digests: int = 0
    skipped: list[str] = Field(default_factory=list)


def _show(path: str) -> str:
    """*path* for a message or a report line: as is when printable, else JSON-quoted (a newline cannot forge lines)."""
    return path if path.isprintable() else _json_str(path)


def check_entries(entries: list[ManifestEntry], manifest: Path | str) -> None:
    """Refuse a manifest whose entries could write or read outside a snapshot or a restore target.

    Every path must be relative, normalised (no empty, ``.`` or ``..`` segment), free of NUL, listed once, and
    every parent must itself be a ``dir`` entry listed before it (so no path runs through a symbolic link).
    Raises :class:`ManifestError` naming ``<manifest>:<line>``; nothing is checked on disk.
    """
    dirs: set[str] = set()
    seen: set[str] = set()
    for lineno, entry in enumerate(entries, start=2):
        where = f"{manifest}:{lineno}"
        path = entry.path
        if not isinstance(path, str) or not path:
            raise ManifestError(f"{where}: path: must be a non-empty string, got {path!r}")
        shown = _json_str(path)
        if path.startswith("/"):
            raise ManifestError(f"{where}: path {shown} is absolute; manifest paths are relative")
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ManifestError(
                f"{where}: path {shown} is not normalised (empty, '.' or '..' segment); it could leave the snapshot"
            )
        if "\x00" in path:  # other control characters are legal in file names (and shown quoted in reports)
            raise ManifestError(f"{where}: path {shown} contains a NUL character")
        if path == MANIFEST_NAME:
            raise ManifestError(f"{where}: path {shown} is the manifest's own name")
        if path in seen:
            raise ManifestError(f"{where}: path {shown} is listed twice")
        parent = path.rpartition("/")[0]
        if parent and parent not in dirs:
            raise ManifestError(
                f"{where}: path {shown}: its parent {_json_str(parent)} is not a directory listed before it "
                "(a symlink or a missing directory); the manifest was edited"
            )
        if entry.type not in _ENTRY_TYPES:
            raise ManifestError(f"{where}: type {entry.type!r} of {shown} is not one of {_ENTRY_TYPES}")
        if not 0 <= entry.mode <= 0o7777:
            raise ManifestError(f"{where}: mode {entry.mode:o} of {shown} is not a permission mode")
        if entry.type == "file" and (not isinstance(entry.sha256, str) or not _SHA256_RE.match(entry.sha256)):
            raise ManifestError(f"{where}: sha256 of {shown} is not 64 lower-case hex digits")
        if entry.type == "file" and entry.size < 0:
            raise ManifestError(f"{where}: size of {shown} is negative")
        bad_target = not isinstance(entry.target, str) or not entry.target or "\x00" in entry.target
        if entry.type == "symlink" and bad_target:
            raise ManifestError(f"{where}: target of symlink {shown} must be a non-empty string")
        seen.add(path)
        if entry.type == "dir":
            dirs.add(path)


def validate_local_name(name: str, field: str = "name") -> str:
    """:func:`validate_snapshot_name`, plus the local provider's shorter length limit (:data:`LOCAL_NAME_MAX`)."""
    validate_snapshot_name(name, field)
    if len(name) > LOCAL_NAME_MAX:
        raise InvalidSnapshotName(
            f"{field}: {name[:20]}... is {len(name)} characters; the local provider allows at most {LOCAL_NAME_MAX} "
            f"(its work directory .tmp-<name>-<token> must fit the 255-byte file name limit)"
        )
    return name


def manifest_digest(entries: list[ManifestEntry]) -> str:
    """``sha256:<hex>`` over the canonical form of *entries* (which must be sorted by path)."""
    h = hashlib.sha256()
    for entry in entries:
        h.update(entry.canonical().encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


def _sha256_stream(f: Any, buf: bytearray | None = None) -> str:
    """sha256 hex of an unbuffered binary file object, read from its current position."""
    h = hashlib.sha256()
    buf = buf if buf is not None else bytearray(1 << 18)
    view = memoryview(buf)
    while n := f.readinto(buf):
        h.update(view[:n])
    return h.hexdigest()


def _ro_mode(st_mode: int) -> int:
    return stat.S_IMODE(st_mode) & ~_WRITE_BITS


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


class LocalSnapshotProvider(ProviderTraits):
    """Snapshots of local directories (see the module docstring for layout, immutability and atomicity)."""

    name: ClassVar[str] = "local"
    supports_labels: ClassVar[bool] = True
    restore_needs_mount: ClassVar[bool] = False  # a restore is a directory on this machine

    # ---- traits (see ProviderTraits): what callers may ask without building a provider
    @classmethod
    def check_volume(cls, volume: str, field: str = "volume") -> str:
        super().check_volume(volume, field)
        if not volume.startswith("/"):
            raise SnapshotInputError(f"{field}: {volume!r} must be an absolute directory for the local provider")
        return volume

    @classmethod
    def check_name(cls, name: str, field: str = "snapshot") -> str:
        return validate_snapshot_name(name, field)  # the local provider only ever creates DNS-1123 names

    @classmethod
    def local_root(cls, volume: str) -> Path | None:
        return Path(volume)

    @classmethod
    def local_path(cls, snapshot: Snapshot) -> str | None:
        path = snapshot.details.get("path")
        return str(path) if path else None

    @classmethod
    def refers_to(cls, value: str, volume: str, *, base: Path) -> bool:
        if not value or "://" in value:
            return False
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = base / path
        return os.path.normpath(path.resolve()) == os.path.normpath(Path(volume).resolve())

    @classmethod
    def default_restore_target(cls, volume: str, workdir: Path) -> str:
        return str(workdir / "data")

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        root: Path | None = Field(
            default=None,
            description="base directory: relative volumes resolve under it, and list() without a volume "
            "lists the snapshots of every sub-directory of it",
        )
        method: Literal["auto", "reflink", "hardlink"] = Field(
            default="auto", description="auto: reflink where the filesystem supports it, else hard links"
        )
        fsync: bool = Field(default=True, description="fsync manifests and directories before publishing")

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or self.Config()

    # ----------------------------------------------------------------------------------------------- helpers
    def _volume_path(self, volume: str | os.PathLike[str]) -> Path:
        if volume is None or str(volume) == "":
            raise InvalidRequest("volume: a directory path is required")
        path = Path(volume).expanduser()
        if not path.is_absolute() and self.config.root is not None:
            path = self.config.root.expanduser() / path
        path = path.resolve()
        if not path.is_dir():
            raise SnapshotNotFound(f"volume: {path} is not an existing directory")
        return path

    def _snapshot_dir(self, vol: Path, name: str) -> Path:
        path = vol / SNAPSHOT_DIR / validate_local_name(name)
        if path.is_symlink() or not (path / MANIFEST_NAME).is_file():
            raise SnapshotNotFound(f"snapshot {name!r} not found in {vol / SNAPSHOT_DIR}")
        return path

    @staticmethod
    def _read_header(snapdir: Path) -> ManifestHeader:
        manifest = snapdir / MANIFEST_NAME
        try:
            with open(manifest, encoding="utf-8") as f:
                line = f.readline()
            return ManifestHeader.model_validate_json(line)
        except (OSError, ValueError) as exc:
            raise SnapshotVerificationError(f"{manifest}:1: unreadable snapshot manifest header: {exc}") from exc

    @staticmethod
    def _read_entry_dicts(snapdir: Path) -> list[dict[str, Any]]:
        manifest = snapdir / MANIFEST_NAME
        with open(manifest, encoding="utf-8", errors="surrogateescape") as f:
            f.readline()
            lines = f.read().splitlines()
        try:
            data = json.loads("[" + ",".join(lines) + "]")  # one C-level parse instead of one call per line
        except ValueError:
            for lineno, line in enumerate(lines, start=2):
                try:
                    json.loads(line)
                except ValueError as exc:
                    raise ManifestError(f"{manifest}:{lineno}: bad manifest entry: {exc}") from exc
            raise ManifestError(f"{manifest}: unreadable manifest entries") from None
        return data

    @classmethod
    def _read_entries(cls, snapdir: Path) -> list[ManifestEntry]:
        """The manifest's entries, checked by :func:`check_entries` (none can lead outside the snapshot)."""
        entries = []
        for lineno, data in enumerate(cls._read_entry_dicts(snapdir), start=2):
            try:
                entries.append(ManifestEntry.from_dict(data))
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                raise ManifestError(
                    f"{snapdir / MANIFEST_NAME}:{lineno}: bad manifest entry: {exc!r}"
                ) from exc
        check_entries(entries, snapdir / MANIFEST_NAME)
        return entries

    def _record(self, vol: Path, snapdir: Path, header: ManifestHeader) -> Snapshot:
        return Snapshot(
            provider=self.name,
            volume=str(vol),
            name=header.name,
            id=header.name,
            created=header.created,
            ready=True,
            digest=header.digest,
            size_bytes=header.bytes,
            labels=header.labels,
            details={
                "path": str(snapdir),
                "files": header.files,
                "dirs": header.dirs,
                "symlinks": header.symlinks,
                "bytes": header.bytes,
                "method": header.method,
                "reused_digests": header.reused_digests,
                "skipped": header.skipped,
            },
        )

    @staticmethod
    def _clean_stale(snaproot: Path, pattern: re.Pattern[str] | None = None) -> None:
        """Remove leftovers of killed creates/deletes (or, with *pattern*, of the work directories whose names
        match it), unless a live process still holds them."""
        try:
            children = list(os.scandir(snaproot))
        except (FileNotFoundError, NotADirectoryError):
            return
        for child in children:
            if pattern is not None:
                if not pattern.match(child.name):
                    continue
            elif not child.name.startswith((_TMP_PREFIX, _DEL_PREFIX)):
                continue
            if not child.is_dir(follow_symlinks=False):
                continue
            fd = _try_lock(Path(child.path), blocking=False)
            if fd is None:
                continue
            try:
                _force_rmtree(Path(child.path))
            except OSError:
                pass  # best effort: a read-only mount, say; list/get ignore these directories anyway
            finally:
                os.close(fd)

    def _snapshot_dirs(self, vol: Path) -> Iterator[Path]:
        snaproot = vol / SNAPSHOT_DIR
        try:
            with os.scandir(snaproot) as it:
                children = sorted(it, key=lambda c: c.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for child in children:
            if not child.name.startswith(".") and child.is_dir(follow_symlinks=False):
                yield Path(child.path)

    def _latest_entries(self, vol: Path) -> dict[str, _Known]:
        """``path -> ((inode, mtime_ns), size, sha256)`` of the volume's newest readable snapshot's files."""
        latest: tuple[datetime, Path, str] | None = None
        for snapdir in self._snapshot_dirs(vol):
            try:
                header = self._read_header(snapdir)
            except SnapshotVerificationError:
                continue
            if latest is None or header.created > latest[0]:
                latest = (header.created, snapdir, header.digest)
        if latest is None:
            return {}
        try:
            dicts = self._read_entry_dicts(latest[1])
            if manifest_digest([ManifestEntry.from_dict(d) for d in dicts]) != latest[2]:
                return {}  # an edited or damaged manifest: hash everything rather than inherit its digests
            return {
                d["path"]: (tuple(d["stat"]), d["size"], d["sha256"])
                for d in dicts
                if d.get("type") == "file" and d.get("stat") and d.get("sha256")
            }
        except (OSError, SnapshotVerificationError, KeyError, TypeError, AttributeError, ValueError):
            return {}  # no reuse: the new snapshot simply hashes everything

    @staticmethod
    def _labels(labels: Mapping[str, str] | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in (labels or {}).items():
            if not isinstance(key, str) or not key or not isinstance(value, str):
                raise InvalidRequest(f"labels: {key!r}={value!r} — keys must be non-empty strings, values strings")
            if not (key + value).isprintable():
                raise InvalidRequest(f"labels: {key!r}={value!r} contains a control or non-printable character")
            out[key] = value
        return out

    # ---------------------------------------------------------------------------------------------- protocol
    def create(
        self,
        volume: str,
        name: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Snapshot:
        """Snapshot directory *volume*; *progress* (if given) is called as ``progress(files_done, path)``."""
        vol = self._volume_path(volume)
        label_map = self._labels(labels)
        created = datetime.now(timezone.utc)
        snaproot = vol / SNAPSHOT_DIR
        if name is None:
            name = "snap-" + created.strftime("%Y%m%d-%H%M%S-%f")
        validate_local_name(name)
        if os.path.lexists(vol / MANIFEST_NAME):
            raise InvalidRequest(f"volume {vol}: contains {MANIFEST_NAME}, a name reserved for snapshot manifests")
        if os.path.lexists(snaproot) and (snaproot.is_symlink() or not snaproot.is_dir()):
            raise SnapshotError(f"volume {vol}: {SNAPSHOT_DIR} exists but is not a directory")
        snaproot.mkdir(mode=0o755, exist_ok=True)
        self._clean_stale(snaproot)
        final = snaproot / name
        if os.path.lexists(final):
            raise SnapshotExists(f"snapshot {name!r} already exists in {snaproot}")

        previous = self._latest_entries(vol)
        tmp, lock_fd = _make_locked_dir(snaproot, f"{_TMP_PREFIX}{name}-")
        builder = _TreeCapture(vol, tmp, previous, self.config.method, progress)
        try:
            builder.run()
            entries = builder.entries
            header = ManifestHeader(
                format=FORMAT,
                name=name,
                volume=str(vol),
                created=created,
                labels=label_map,
                digest=manifest_digest(entries),
                entries=len(entries),
                files=builder.files,
                dirs=builder.dirs,
                symlinks=builder.symlinks,
                bytes=builder.bytes,
                method=builder.method_used(),
                reused_digests=builder.reused,
                skipped=builder.skipped,
            )
            self._write_manifest(tmp, header, entries)
            for rel, mode in reversed(builder.dir_modes):  # children first, so parents stay writable meanwhile
                os.chmod(tmp / rel, mode)
            os.chmod(tmp, 0o555)
            if self.config.fsync and not _syncfs(tmp):  # every link and directory durable before publishing
                for rel, _mode in builder.dir_modes:
                    _fsync_path(tmp / rel)
                _fsync_path(tmp)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise SnapshotExists(f"snapshot {name!r} already exists in {snaproot}") from None
                raise
            if self.config.fsync:
                _fsync_path(snaproot)
        except BaseException:
            builder.undo_chmods()  # through the work tree's links, before they are removed
            with contextlib.suppress(OSError):
                _force_rmtree(tmp)
            raise
        finally:
            os.close(lock_fd)
        return self._record(vol, final, header)

    def _write_manifest(self, tmp: Path, header: ManifestHeader, entries: list[ManifestEntry]) -> None:
        path = tmp / MANIFEST_NAME
        with open(path, "x", encoding="utf-8", errors="surrogateescape") as f:
            f.write(header.model_dump_json() + "\n")
            for entry in entries:
                f.write(entry.to_json() + "\n")
            f.flush()
            if self.config.fsync:
                os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o444)

    def list(self, volume: str | None = None, *, labels: Mapping[str, str] | None = None) -> list[Snapshot]:
        """Snapshots of *volume* (or of every sub-directory of ``root``), oldest first, filtered by *labels*."""
        if volume is None:
            if self.config.root is None:
                raise InvalidRequest("volume: the local provider lists one volume directory (or set option 'root')")
            root = self.config.root.expanduser().resolve()
            volumes = [p for p in sorted(root.iterdir()) if (p / SNAPSHOT_DIR).is_dir()] if root.is_dir() else []
        else:
            volumes = [self._volume_path(volume)]
        wanted = self._labels(labels)
        out: list[Snapshot] = []
        for vol in volumes:
            self._clean_stale(vol / SNAPSHOT_DIR)
            for snapdir in self._snapshot_dirs(vol):
                try:
                    snap = self._record(vol, snapdir, self._read_header(snapdir))
                except SnapshotVerificationError as exc:
                    try:
                        created = datetime.fromtimestamp(snapdir.stat().st_mtime, timezone.utc)
                    except FileNotFoundError:
                        continue  # deleted while we listed: no longer a snapshot
                    snap = Snapshot(
                        provider=self.name, volume=str(vol), name=snapdir.name, id=snapdir.name,
                        created=created, ready=False, details={"path": str(snapdir), "error": str(exc)},
                    )  # fmt: skip
                if all(snap.labels.get(k) == v for k, v in wanted.items()):
                    out.append(snap)
        return sorted(out, key=lambda s: (s.volume, s.created, s.name))

    def get(self, volume: str, name: str) -> Snapshot:
        vol = self._volume_path(volume)
        snapdir = self._snapshot_dir(vol, name)
        return self._record(vol, snapdir, self._read_header(snapdir))

    def _resolve_record(self, snapshot: Snapshot) -> tuple[Path, ManifestHeader, list[ManifestEntry]]:
        if snapshot.provider != self.name:
            raise InvalidRequest(f"snapshot {snapshot.ref} belongs to provider {snapshot.provider!r}, not 'local'")
        vol = self._volume_path(snapshot.volume)
        snapdir = self._snapshot_dir(vol, snapshot.name)
        header = self._read_header(snapdir)
        if snapshot.digest is not None and header.digest != snapshot.digest:
            raise SnapshotVerificationError(
                f"snapshot {snapshot.ref}: on-disk digest {header.digest} differs from the record's {snapshot.digest} "
                "(was the name reused for a new snapshot?)"
            )
        return snapdir, header, self._read_entries(snapdir)

    def entries(self, snapshot: Snapshot) -> list[ManifestEntry]:
        """The manifest entries of *snapshot*, checked (:func:`check_entries`) and matched to its digest."""
        _snapdir, header, entries = self._resolve_record(snapshot)
        if manifest_digest(entries) != header.digest:
            raise SnapshotVerificationError(
                f"snapshot {snapshot.ref}: its manifest does not match its own digest {header.digest} (edited?); "
                "see verify"
            )
        return entries

    def restore(self, snapshot: Snapshot, target: str, *, verify: bool = True) -> str:
        """Copy *snapshot* into directory *target* (new, or empty); returns its absolute path.

        The copy is independent and writable (reflink where possible, else a byte copy). With *verify*, every
        file's sha256 is checked against the manifest while it is copied; a mismatch aborts and removes the copy.
        """
        snapdir, header, entries = self._resolve_record(snapshot)
        if verify and manifest_digest(entries) != header.digest:
            raise SnapshotVerificationError(f"snapshot {snapshot.ref}: manifest entries do not match its digest")
        if not isinstance(target, (str, os.PathLike)) or not str(target).strip() or "\x00" in str(target):
            raise InvalidRequest(f"target: {target!r} is not a directory path")
        dest = Path(target).expanduser().absolute()
        snaproot = snapdir.parent.resolve()
        if dest.resolve() == snaproot or snaproot in dest.resolve().parents:
            raise InvalidRequest(f"target: {dest} is inside {snaproot}; restore to a new directory")
        in_place = dest.exists()
        if in_place:
            if not dest.is_dir():
                raise InvalidRequest(f"target: {dest} exists and is not a directory")
            names = [c.name for c in os.scandir(dest)]
            work = [n for n in names if _RESTORE_WORK_RE.match(n)]
            if work and len(work) < len(names):
                raise InvalidRequest(
                    f"target: {dest} holds an unfinished restore ({work[0]} next to restored files: one was killed "
                    "while publishing, or another is publishing now); empty the directory and restore again"
                )
            if names and not work:
                raise InvalidRequest(f"target: {dest} exists and is not an empty directory")
            if work:  # only the work directory of a killed restore into this empty target: remove it
                self._clean_stale(dest, _RESTORE_WORK_RE)
                if any(os.scandir(dest)):
                    raise InvalidRequest(f"target: {dest}: another restore into it is running")
            parent = dest
        else:
            parent = dest.parent
            if os.path.lexists(dest):
                raise InvalidRequest(f"target: {dest} is a dangling symbolic link")
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise InvalidRequest(f"target: {parent} (the target's parent) is not a directory") from None
            self._clean_stale(parent, _RESTORE_WORK_RE)  # leftovers of a killed restore next to this target
        # Built in a locked work directory (inside an existing empty target, else next to the new one) and
        # published only when complete: a killed restore leaves a .tmp-restore-* directory that the next restore
        # into the same place removes, never a target that looks complete.
        build, lock_fd = _make_locked_dir(parent, f"{_RESTORE_PREFIX}{dest.name[:40]}-")
        try:
            _RestoreCopy(snapdir, snapshot.ref, build, verify).run(entries)
            if not in_place:  # the volume root gets the snapshot root's mode, plus the owner's write bit
                os.chmod(build, stat.S_IMODE(snapdir.stat().st_mode) | 0o700)
            if self.config.fsync and not _syncfs(build):
                os.sync()
            if in_place:
                for child in sorted(os.listdir(build)):
                    if os.path.lexists(dest / child):
                        raise InvalidRequest(f"target: {dest / child} appeared while restoring; not overwriting it")
                    os.rename(build / child, dest / child)
                os.rmdir(build)
                if self.config.fsync:
                    _fsync_path(dest)
            else:
                try:
                    os.rename(build, dest)
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        raise InvalidRequest(f"target: {dest} appeared while restoring; not overwriting it") from None
                    raise
                if self.config.fsync:
                    _fsync_path(dest.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                _force_rmtree(build)
            raise
        finally:
            os.close(lock_fd)
        return str(dest)

    def delete(self, volume: str, name: str) -> None:
        vol = self._volume_path(volume)
        snapdir = self._snapshot_dir(vol, name)
        lock_fd = _try_lock(snapdir, blocking=True)  # the lock follows the directory through the rename
        if lock_fd is None:
            raise SnapshotNotFound(f"snapshot {name!r} not found in {vol / SNAPSHOT_DIR}")
        grave = snapdir.parent / f"{_DEL_PREFIX}{name}-{secrets.token_hex(6)}"
        try:
            try:
                os.rename(snapdir, grave)  # the snapshot disappears atomically; a killed delete leaves a .del- dir
            except FileNotFoundError:
                raise SnapshotNotFound(f"snapshot {name!r} not found in {vol / SNAPSHOT_DIR}") from None
            _force_rmtree(grave)
        finally:
            os.close(lock_fd)

    def verify(self, snapshot: Snapshot) -> VerifyResult:
        """Re-hash every file against the manifest; report ``changed:``, ``missing:``, ``extra:``, ``writable:``.

        Paths with control characters are shown JSON-quoted, so a file name cannot forge report lines.
        """
        try:
            snapdir, header, entries = self._resolve_record(snapshot)
        except ManifestError as exc:  # an unreadable or unsafe entry line: a problem to report, not to follow
            return VerifyResult(ok=False, checked=0, problems=[f"manifest: {exc}"])
        try:
            return self._verify(snapdir, header, entries)
        except FileNotFoundError:
            if os.path.lexists(snapdir / MANIFEST_NAME):
                raise
            raise SnapshotNotFound(f"snapshot {snapshot.ref} was deleted while it was being verified") from None

    def _verify(self, snapdir: Path, header: ManifestHeader, entries: list[ManifestEntry]) -> VerifyResult:
        problems: list[str] = []
        if manifest_digest(entries) != header.digest:
            problems.append(f"manifest: entries do not match the recorded digest {header.digest} (manifest edited?)")
        if snapdir.lstat().st_mode & _WRITE_BITS:
            problems.append("writable: . (snapshot entries must be read-only)")
        actual = dict(_walk_lstat(snapdir))
        actual.pop(MANIFEST_NAME, None)
        checked = 0
        for entry in entries:
            st = actual.pop(entry.path, None)
            checked += 1
            shown = _show(entry.path)
            if st is None:
                problems.append(f"missing: {shown}")
                continue
            kind = _kind(st.st_mode)
            if kind != entry.type:
                problems.append(f"changed: {shown} (was a {entry.type}, now a {kind})")
                continue
            if entry.type == "symlink":
                if os.readlink(snapdir / entry.path) != entry.target:
                    problems.append(f"changed: {shown} (symlink target)")
                continue
            if st.st_mode & _WRITE_BITS:
                problems.append(f"writable: {shown} (snapshot entries must be read-only)")
            if _ro_mode(st.st_mode) != entry.mode:
                problems.append(f"changed: {shown} (mode {_ro_mode(st.st_mode):04o}, expected {entry.mode:04o})")
            if entry.type == "file":
                if st.st_size != entry.size:
                    problems.append(f"changed: {shown} (size {st.st_size}, expected {entry.size})")
                else:
                    fd = os.open(snapdir / entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    with open(fd, "rb", buffering=0) as f:
                        if _sha256_stream(f) != entry.sha256:
                            problems.append(f"changed: {shown} (content)")
        problems.extend(f"extra: {_show(rel)}" for rel in sorted(actual))
        return VerifyResult(ok=not problems, checked=checked, problems=problems)


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


def file_unchanged(entry: ManifestEntry, st: os.stat_result) -> bool:
    """The cheap check that a snapshot file is still what its manifest entry recorded: inode, mtime and size.

    ``True`` means content hashing may be skipped; ``False`` means hash it (a reflinked or copied file records
    the live file's inode, so it always takes the hash).
    """
    return entry.stat is not None and (st.st_ino, st.st_mtime_ns) == entry.stat and st.st_size == entry.size


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
