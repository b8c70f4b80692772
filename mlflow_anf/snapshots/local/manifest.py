"""The local provider's snapshot layout and manifest: names, the manifest model, its digest and its checks.

See :mod:`mlflow_anf.snapshots.local` for the layout. Nothing here touches a live volume; reading a manifest only
reads the snapshot's own manifest file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.snapshots.base import (
    InvalidSnapshotName,
    SnapshotInputError,
    SnapshotVerificationError,
    validate_snapshot_name,
)
from mlflow_anf.snapshots.files import SNAPSHOT_DIR  # noqa: F401  (part of the local layout; imported from here)


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


class InvalidRequest(SnapshotInputError):
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


def file_unchanged(entry: ManifestEntry, st: os.stat_result) -> bool:
    """The cheap check that a snapshot file is still what its manifest entry recorded: inode, mtime and size.

    ``True`` means content hashing may be skipped; ``False`` means hash it (a reflinked or copied file records
    the live file's inode, so it always takes the hash).
    """
    return entry.stat is not None and (st.st_ino, st.st_mtime_ns) == entry.stat and st.st_size == entry.size


def read_header(snapdir: Path) -> ManifestHeader:
    """The header line of the manifest in snapshot directory *snapdir*."""
    manifest = snapdir / MANIFEST_NAME
    try:
        with open(manifest, encoding="utf-8") as f:
            line = f.readline()
        return ManifestHeader.model_validate_json(line)
    except (OSError, ValueError) as exc:
        raise SnapshotVerificationError(f"{manifest}:1: unreadable snapshot manifest header: {exc}") from exc


def read_entry_dicts(snapdir: Path) -> list[dict[str, Any]]:
    """The manifest's entry lines as parsed JSON, unchecked."""
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


def read_entries(snapdir: Path) -> list[ManifestEntry]:
    """The manifest's entries, checked by :func:`check_entries` (none can lead outside the snapshot)."""
    entries = []
    for lineno, data in enumerate(read_entry_dicts(snapdir), start=2):
        try:
            entries.append(ManifestEntry.from_dict(data))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ManifestError(
                f"{snapdir / MANIFEST_NAME}:{lineno}: bad manifest entry: {exc!r}"
            ) from exc
    check_entries(entries, snapdir / MANIFEST_NAME)
    return entries
