"""The local snapshot provider: snapshots of a local directory (see :mod:`mlflow_anf.snapshots.local`)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.snapshots.base import (
    ProviderTraits,
    Snapshot,
    SnapshotError,
    SnapshotExists,
    SnapshotInputError,
    SnapshotNotFound,
    SnapshotVerificationError,
    VerifyResult,
    validate_snapshot_name,
)
from mlflow_anf.snapshots.files import SnapshotFiles
from mlflow_anf.snapshots.local.capture import _TreeCapture
from mlflow_anf.snapshots.local.fsops import (
    _force_rmtree,
    _fsync_path,
    _kind,
    _make_locked_dir,
    _RestoreCopy,
    _syncfs,
    _try_lock,
    _walk_lstat,
)
from mlflow_anf.snapshots.local.manifest import (
    _DEL_PREFIX,
    _RESTORE_PREFIX,
    _RESTORE_WORK_RE,
    _TMP_PREFIX,
    _WRITE_BITS,
    FORMAT,
    MANIFEST_NAME,
    SNAPSHOT_DIR,
    InvalidRequest,
    ManifestEntry,
    ManifestError,
    ManifestHeader,
    Progress,
    _Known,
    _ro_mode,
    _sha256_stream,
    _show,
    manifest_digest,
    read_entries,
    read_entry_dicts,
    read_header,
    validate_local_name,
)


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
        """The snapshot's files checked against its manifest: each file's sha256, and the snapshot's *digest*."""
        from mlflow_anf.snapshots.local.files import LocalSnapshotFiles

        reader = cls()
        record = reader.get(str(volume_root), dir_name or name)
        if digest is not None and record.digest != digest:
            raise SnapshotVerificationError(
                f"snapshot {record.ref}: its digest {record.digest} differs from {digest} in the URI "
                "(the name was reused for another snapshot); the snapshot this URI pinned is gone"
            )
        entries = reader.entries(record)  # checked: no path leaves the snapshot
        return LocalSnapshotFiles(Path(str(record.details["path"])).resolve(), name, entries)

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
                header = read_header(snapdir)
            except SnapshotVerificationError:
                continue
            if latest is None or header.created > latest[0]:
                latest = (header.created, snapdir, header.digest)
        if latest is None:
            return {}
        try:
            dicts = read_entry_dicts(latest[1])
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
                    snap = self._record(vol, snapdir, read_header(snapdir))
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
        return self._record(vol, snapdir, read_header(snapdir))

    def _resolve_record(self, snapshot: Snapshot) -> tuple[Path, ManifestHeader, list[ManifestEntry]]:
        if snapshot.provider != self.name:
            raise InvalidRequest(f"snapshot {snapshot.ref} belongs to provider {snapshot.provider!r}, not 'local'")
        vol = self._volume_path(snapshot.volume)
        snapdir = self._snapshot_dir(vol, snapshot.name)
        header = read_header(snapdir)
        if snapshot.digest is not None and header.digest != snapshot.digest:
            raise SnapshotVerificationError(
                f"snapshot {snapshot.ref}: on-disk digest {header.digest} differs from the record's {snapshot.digest} "
                "(was the name reused for a new snapshot?)"
            )
        return snapdir, header, read_entries(snapdir)

    def entries(self, snapshot: Snapshot) -> list[ManifestEntry]:
        """The manifest entries of *snapshot*, checked (:func:`check_entries`) and matched to its digest."""
        _snapdir, header, entries = self._resolve_record(snapshot)
        if manifest_digest(entries) != header.digest:
            raise SnapshotVerificationError(
                f"snapshot {snapshot.ref}: its manifest does not match its own digest {header.digest} (edited?); "
                "see verify"
            )
        return entries

    def restore(
        self,
        snapshot: Snapshot,
        target: str,
        *,
        wait: bool = False,
        timeout_s: float | None = None,
        verify: bool = True,
    ) -> str:
        """Copy *snapshot* into directory *target* (new, or empty); returns its absolute path.

        The copy is independent and writable (reflink where possible, else a byte copy). With *verify*, every
        file's sha256 is checked against the manifest while it is copied; a mismatch aborts and removes the copy.
        Without it, a file whose inode, mtime or size differs from its manifest entry is still hashed. *wait* and
        *timeout_s* (the protocol's) change nothing here: the copy is complete, and usable, when this returns.
        """
        del wait, timeout_s  # a local copy is usable as soon as it is published
        snapdir, header, entries = self._resolve_record(snapshot)
        if verify and manifest_digest(entries) != header.digest:
            raise SnapshotVerificationError(f"snapshot {snapshot.ref}: manifest entries do not match its digest")
        if not isinstance(target, (str, os.PathLike)) or not str(target).strip() or "\x00" in str(target):
            raise InvalidRequest(f"target: {target!r} is not a directory path")
        dest = Path(target).expanduser().absolute()
        snaproot = snapdir.parent.resolve()
        if dest.resolve() == snaproot or snaproot in dest.resolve().parents:
            raise InvalidRequest(f"target: {dest} is inside {snaproot}; restore to a new directory")
        in_place = self._prepare_target(dest)
        parent = dest if in_place else dest.parent
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
            self._publish(build, dest, in_place)
        except BaseException:
            with contextlib.suppress(OSError):
                _force_rmtree(build)
            raise
        finally:
            os.close(lock_fd)
        return str(dest)

    def _prepare_target(self, dest: Path) -> bool:
        """Check restore target *dest* (an empty directory, or a new one whose parent this creates) and remove what
        a killed restore into the same place left; returns whether *dest* exists (the restore fills it in place)."""
        if not dest.exists():
            if os.path.lexists(dest):
                raise InvalidRequest(f"target: {dest} is a dangling symbolic link")
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise InvalidRequest(f"target: {dest.parent} (the target's parent) is not a directory") from None
            self._clean_stale(dest.parent, _RESTORE_WORK_RE)  # leftovers of a killed restore next to this target
            return False
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
        return True

    def _publish(self, build: Path, dest: Path, in_place: bool) -> None:
        """Move the complete copy in *build* to *dest* (its contents into the existing *dest* when *in_place*)."""
        if in_place:
            for child in sorted(os.listdir(build)):
                if os.path.lexists(dest / child):
                    raise InvalidRequest(f"target: {dest / child} appeared while restoring; not overwriting it")
                os.rename(build / child, dest / child)
            os.rmdir(build)
            if self.config.fsync:
                _fsync_path(dest)
            return
        try:
            os.rename(build, dest)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise InvalidRequest(f"target: {dest} appeared while restoring; not overwriting it") from None
            raise
        if self.config.fsync:
            _fsync_path(dest.parent)

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


