"""Local directory snapshots, laid out the way ONTAP / Azure NetApp Files expose theirs.

A *volume* is a directory. Snapshot ``<name>`` of it lives in ``<volume>/.snapshot/<name>/``: a read-only tree with
the volume's files as they were, plus a manifest ``.mlflow-anf-snapshot.json`` at its root (the volume's own
top-level ``.snapshot`` is never part of a snapshot). The manifest is JSON Lines: a header line (name, created,
labels, digest, counts), then one line per entry sorted by path — ``file`` (size, mode, sha256), ``dir`` (mode) or
``symlink`` (target). The snapshot digest is ``sha256:`` + the sha256 over the canonical form of those entries
(type, path, mode, size, sha256/target), so it names the content, not the time or the name.

How files are captured (never a byte copy):

* **reflink** (``FICLONE``; XFS, btrfs, ...): the snapshot gets its own copy-on-write clone, made read-only; the live
  file is untouched and stays writable.
* **hard link** (everything else, e.g. ext4, NFS): the snapshot shares the live file's inode. To keep the snapshot
  immutable the provider **removes the write permission bits from the live file** when it snapshots it. From then on
  the live tree is copy-on-write by convention: writers must *replace* a file (write a temp file, rename it over the
  old one — what Python's atomic writers, ``torch.save`` to a new path, rsync, git and most tools do) instead of
  rewriting it in place; a replaced file gets a new inode and the snapshot keeps the old one. An owner (or root) can
  still ``chmod u+w`` and rewrite in place, which would change the snapshot too: :meth:`LocalSnapshotProvider.verify`
  re-hashes every file and reports that as ``changed:``. Manifests record modes without write bits, so the digest
  does not depend on this chmod, and restore gives files back their owner write bit.

Repeated snapshots are cheap: a file whose inode, size and mtime equal those recorded by the volume's latest
snapshot (and which, for hard links, is still read-only as that snapshot left it) reuses the recorded sha256 instead
of being read again; a previous manifest that does not match its own digest is not trusted. This is the quick check
git and rsync use: an in-place rewrite that restores size *and* mtime is not noticed by ``create`` — only by
``verify``.

Atomicity: a snapshot is built in ``.snapshot/.tmp-<name>-<random>/`` (held with ``flock`` while it is built), its
manifest is fsynced, its directories are made read-only, the filesystem is synced (one ``syncfs``; an fsync per
directory where that call is missing), and one ``rename`` publishes it. A killed process
leaves only a dot-directory that ``list``/``get`` never show; the next ``create``/``list``/``delete`` removes it once
no live process holds its lock. ``delete`` renames the snapshot away first (``.del-...``), then removes it.
Snapshot consistency is per file (each file as it was when linked); pause writers for a cut across files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
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

Progress = Callable[[int, str], None]
_Known = tuple[tuple[int, ...], int, str]  # what digest reuse needs of a previous entry: (inode, mtime), size, sha


class InvalidRequest(SnapshotError, ValueError):
    """A request the local provider refuses as given (non-empty restore target, reserved file name, ...)."""


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


def _sha256_file(path: Path | str) -> str:
    with open(path, "rb", buffering=0) as f:
        return _sha256_stream(f)


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


class LocalSnapshotProvider:
    """Snapshots of local directories (see the module docstring for layout, immutability and atomicity)."""

    name: ClassVar[str] = "local"
    supports_labels: ClassVar[bool] = True

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
        path = vol / SNAPSHOT_DIR / validate_snapshot_name(name)
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
                    raise SnapshotVerificationError(f"{manifest}:{lineno}: bad manifest entry: {exc}") from exc
            raise SnapshotVerificationError(f"{manifest}: unreadable manifest entries") from None
        return data

    @classmethod
    def _read_entries(cls, snapdir: Path) -> list[ManifestEntry]:
        entries = []
        for lineno, data in enumerate(cls._read_entry_dicts(snapdir), start=2):
            try:
                entries.append(ManifestEntry.from_dict(data))
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                raise SnapshotVerificationError(
                    f"{snapdir / MANIFEST_NAME}:{lineno}: bad manifest entry: {exc!r}"
                ) from exc
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
    def _clean_stale(snaproot: Path) -> None:
        """Remove leftovers of killed creates/deletes, unless a live process still holds them."""
        try:
            children = list(os.scandir(snaproot))
        except FileNotFoundError:
            return
        for child in children:
            if not child.name.startswith((_TMP_PREFIX, _DEL_PREFIX)) or not child.is_dir(follow_symlinks=False):
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
        if not snaproot.is_dir():
            return
        with os.scandir(snaproot) as it:
            children = sorted(it, key=lambda c: c.name)
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
        validate_snapshot_name(name)
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
        try:
            builder = _TreeCapture(vol, tmp, previous, self.config.method, progress)
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
                    created = datetime.fromtimestamp(snapdir.stat().st_mtime, timezone.utc)
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

    def restore(self, snapshot: Snapshot, target: str, *, verify: bool = True) -> str:
        """Copy *snapshot* into directory *target* (new, or empty); returns its absolute path.

        The copy is independent and writable (reflink where possible, else a byte copy). With *verify*, every
        file's sha256 is checked against the manifest while it is copied; a mismatch aborts and removes the copy.
        """
        snapdir, header, entries = self._resolve_record(snapshot)
        if verify and manifest_digest(entries) != header.digest:
            raise SnapshotVerificationError(f"snapshot {snapshot.ref}: manifest entries do not match its digest")
        dest = Path(target).expanduser().absolute()
        snaproot = snapdir.parent.resolve()
        if dest.resolve() == snaproot or snaproot in dest.resolve().parents:
            raise InvalidRequest(f"target: {dest} is inside {snaproot}; restore to a new directory")
        in_place = dest.exists()
        if in_place:
            if not dest.is_dir() or any(os.scandir(dest)):
                raise InvalidRequest(f"target: {dest} exists and is not an empty directory")
            build, lock_fd = dest, None
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            build, lock_fd = _make_locked_dir(dest.parent, f"{_TMP_PREFIX}restore-{dest.name[:40]}-")
        try:
            _RestoreCopy(snapdir, build, verify).run(entries)
            if not in_place:  # the volume root gets the snapshot root's mode, plus the owner's write bit
                os.chmod(build, stat.S_IMODE(snapdir.stat().st_mode) | 0o700)
            if self.config.fsync and not _syncfs(build):
                os.sync()
            if not in_place:
                try:
                    os.rename(build, dest)
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        raise InvalidRequest(f"target: {dest} appeared while restoring; not overwriting it") from None
                    raise
                if self.config.fsync:
                    _fsync_path(dest.parent)
        except BaseException:
            if in_place:
                for child in list(os.scandir(dest)):
                    with contextlib.suppress(OSError):
                        _force_rmtree(Path(child.path))
            else:
                with contextlib.suppress(OSError):
                    _force_rmtree(build)
            raise
        finally:
            if lock_fd is not None:
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
        """Re-hash every file against the manifest; report ``changed:``, ``missing:``, ``extra:``, ``writable:``."""
        snapdir, header, entries = self._resolve_record(snapshot)
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
            if st is None:
                problems.append(f"missing: {entry.path}")
                continue
            kind = _kind(st.st_mode)
            if kind != entry.type:
                problems.append(f"changed: {entry.path} (was a {entry.type}, now a {kind})")
                continue
            if entry.type == "symlink":
                if os.readlink(snapdir / entry.path) != entry.target:
                    problems.append(f"changed: {entry.path} (symlink target)")
                continue
            if st.st_mode & _WRITE_BITS:
                problems.append(f"writable: {entry.path} (snapshot entries must be read-only)")
            if _ro_mode(st.st_mode) != entry.mode:
                problems.append(f"changed: {entry.path} (mode {_ro_mode(st.st_mode):04o}, expected {entry.mode:04o})")
            if entry.type == "file":
                if st.st_size != entry.size:
                    problems.append(f"changed: {entry.path} (size {st.st_size}, expected {entry.size})")
                elif _sha256_file(snapdir / entry.path) != entry.sha256:
                    problems.append(f"changed: {entry.path} (content)")
        problems.extend(f"extra: {rel}" for rel in sorted(actual))
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


class _TreeCapture:
    """Builds one snapshot tree in a private directory: reflink or hard-link each file, hash what is new."""

    def __init__(
        self,
        vol: Path,
        dest: Path,
        previous: dict[str, _Known],
        method: str,
        progress: Progress | None,
    ) -> None:
        self.vol, self.dest, self.previous, self.progress = vol, dest, previous, progress
        self.dest_str = str(dest)
        self.method = method
        self.reflink_ok: bool | None = {"auto": None, "reflink": True, "hardlink": False}[method]
        self.entries: list[ManifestEntry] = []
        self.dir_modes: list[tuple[str, int]] = []
        self.skipped: list[str] = []
        self.files = self.dirs = self.symlinks = self.bytes = self.reused = 0
        self.by_method = {"reflink": 0, "hardlink": 0}
        self.vol_dev = os.stat(vol).st_dev

    def method_used(self) -> str:
        used = [m for m, n in self.by_method.items() if n]
        return used[0] if len(used) == 1 else ("mixed" if used else "none")

    def run(self) -> None:
        stack = [("", str(self.vol))]
        while stack:
            rel_dir, abs_dir = stack.pop()
            try:
                with os.scandir(abs_dir) as it:
                    children = sorted(it, key=lambda c: c.name)
            except OSError as exc:
                raise SnapshotError(f"volume {self.vol}: cannot read {rel_dir or '.'}: {exc.strerror}") from exc
            for child in children:
                if not rel_dir and child.name == SNAPSHOT_DIR:
                    continue
                rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
                try:
                    st = child.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while we walked: not part of this point in time
                if stat.S_ISDIR(st.st_mode):
                    if st.st_dev != self.vol_dev:
                        raise SnapshotError(
                            f"volume {self.vol}: {rel} is another filesystem (a mount point inside the volume); "
                            "snapshot that volume separately"
                        )
                    os.mkdir(f"{self.dest_str}/{rel}", 0o700)
                    mode = _ro_mode(st.st_mode) | 0o500  # read-only, but the owner can still walk it
                    self.entries.append(ManifestEntry(path=rel, type="dir", mode=mode))
                    self.dir_modes.append((rel, mode))
                    self.dirs += 1
                    stack.append((rel, child.path))
                elif stat.S_ISREG(st.st_mode):
                    self._file(rel, child.path, st)
                elif stat.S_ISLNK(st.st_mode):
                    target = os.readlink(child.path)
                    os.symlink(target, f"{self.dest_str}/{rel}")
                    self.entries.append(ManifestEntry(path=rel, type="symlink", target=target))
                    self.symlinks += 1
                else:
                    self.skipped.append(rel)  # sockets, fifos, devices: no content to keep
        self.entries.sort(key=lambda e: e.path)

    def _file(self, rel: str, src: str, st: os.stat_result) -> None:
        dst = f"{self.dest_str}/{rel}"
        try:
            captured, how = self._capture(src, dst, st)
        except FileNotFoundError:
            return  # removed while we walked
        except OSError as exc:
            if exc.errno == errno.EMLINK:
                raise SnapshotLimitExceeded(
                    f"volume {self.vol}: {rel} has reached the filesystem's hard-link limit; delete old snapshots"
                ) from exc
            hint = " (hard links to files of other users need fs.protected_hardlinks=0 or ownership)" \
                if exc.errno == errno.EPERM else ""  # fmt: skip
            raise SnapshotError(f"volume {self.vol}: cannot snapshot {rel}: {exc.strerror}{hint}") from exc
        key = (captured.st_ino, captured.st_mtime_ns)
        prev = self.previous.get(rel)
        # A hard-linked file that is writable again may have been rewritten in place: hash it.
        trusted = not (how == "hardlink" and st.st_mode & _WRITE_BITS)
        if prev is not None and trusted and prev[0] == key and prev[1] == captured.st_size:
            digest = prev[2]
            self.reused += 1
        else:
            digest = _sha256_file(dst)
        self.entries.append(
            ManifestEntry(
                path=rel, type="file", mode=_ro_mode(st.st_mode), size=captured.st_size, sha256=digest, stat=key
            )
        )
        self.files += 1
        self.bytes += captured.st_size
        if self.progress is not None:
            self.progress(self.files, rel)

    def _capture(self, src: str, dst: str, st: os.stat_result) -> tuple[os.stat_result, str]:
        """Put *src* at *dst* without copying bytes; return (stat of the captured inode, method)."""
        if self.reflink_ok is not False:
            captured = self._reflink(src, dst, st)
            if captured is not None:
                self.by_method["reflink"] += 1
                return captured, "reflink"
        if st.st_mode & _WRITE_BITS:
            os.chmod(src, _ro_mode(st.st_mode))  # the shared inode: live file and snapshot both read-only
        os.link(src, dst, follow_symlinks=False)
        self.by_method["hardlink"] += 1
        return os.lstat(dst), "hardlink"

    def _reflink(self, src: str, dst: str, st: os.stat_result) -> os.stat_result | None:
        src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            captured = os.fstat(src_fd)  # before cloning: a write during the clone must not match next time
            dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                fcntl.ioctl(dst_fd, _FICLONE, src_fd)
            except OSError as exc:
                os.close(dst_fd)
                os.unlink(dst)
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
                os.utime(dst_fd, ns=(captured.st_atime_ns, captured.st_mtime_ns))
                os.fchmod(dst_fd, _ro_mode(st.st_mode))
            finally:
                os.close(dst_fd)
            self.reflink_ok = True
            return captured
        finally:
            os.close(src_fd)


class _RestoreCopy:
    """Copies a snapshot's entries into a fresh tree, checking sha256 on the way."""

    _BUF = 1 << 20

    def __init__(self, snapdir: Path, dest: Path, verify: bool) -> None:
        self.snapdir, self.dest, self.verify = snapdir, dest, verify
        self.reflink_ok: bool | None = None
        self._buf = bytearray(self._BUF)

    def run(self, entries: list[ManifestEntry]) -> None:
        dirs: list[tuple[Path, int]] = []
        for entry in entries:  # sorted by path: a directory precedes its contents
            src, dst = self.snapdir / entry.path, self.dest / entry.path
            try:
                if entry.type == "dir":
                    os.mkdir(dst, 0o700)
                    dirs.append((dst, entry.mode | 0o700))
                elif entry.type == "symlink":
                    os.symlink(entry.target or "", dst)
                else:
                    self._copy(entry, src, dst)
            except FileNotFoundError as exc:
                raise SnapshotVerificationError(
                    f"snapshot {self.snapdir}: {entry.path} is missing; the snapshot is damaged (see verify)"
                ) from exc
        for path, mode in reversed(dirs):
            os.chmod(path, mode)

    def _copy(self, entry: ManifestEntry, src: Path, dst: Path) -> None:
        with open(src, "rb", buffering=0) as fsrc, open(dst, "xb", buffering=0) as fdst:
            digest = None
            if self.reflink_ok is not False:
                try:
                    fcntl.ioctl(fdst.fileno(), _FICLONE, fsrc.fileno())
                    self.reflink_ok = True
                    if self.verify:
                        digest = _sha256_stream(fsrc, self._buf)
                except OSError as exc:
                    if exc.errno not in _NO_REFLINK_ERRNOS:
                        raise
                    self.reflink_ok = False
            if self.reflink_ok is False:
                h = hashlib.sha256() if self.verify else None
                view = memoryview(self._buf)
                while n := fsrc.readinto(self._buf):
                    chunk = view[:n]
                    if h is not None:
                        h.update(chunk)
                    fdst.write(chunk)
                digest = h.hexdigest() if h is not None else None
            st = os.fstat(fsrc.fileno())
            os.fchmod(fdst.fileno(), entry.mode | 0o200)
            os.utime(fdst.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
        if self.verify and digest != entry.sha256:
            raise SnapshotVerificationError(
                f"snapshot {self.snapdir}: {entry.path} does not match its manifest sha256; "
                "the snapshot is damaged (see verify)"
            )
