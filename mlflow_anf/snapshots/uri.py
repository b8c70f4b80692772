"""The ``snapshot://`` URI grammar: the one place that builds and parses it (no MLflow, no provider SDK).

    snapshot://<provider>/<snapshot>/<path>?volume=<quoted volume>[&digest=<digest>][&dir=<storage name>]

See :mod:`mlflow_anf.artifact_repo` (the MLflow repository that reads these URIs) for what each part means.
Per-provider rules (is a volume id valid, which snapshot names can exist, which directory under ``.snapshot/`` holds
a snapshot) come from the provider's traits (:class:`mlflow_anf.snapshots.base.ProviderTraits`), never from a
branch on the provider's name here. ``MLFLOW_ANF_SNAPSHOT_MOUNTS`` (``[provider:]volume=/mount/point,...``) is parsed
here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict

from mlflow_anf.snapshots import traits_for
from mlflow_anf.snapshots.base import (
    InvalidSnapshotName,
    Snapshot,
    SnapshotError,
    SnapshotInputError,
    validate_storage_name,
)

SCHEME = "snapshot"
MOUNTS_ENV = "MLFLOW_ANF_SNAPSHOT_MOUNTS"

_PROVIDER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_DIGEST_RE = re.compile(r"^[A-Za-z0-9.+-]+:[A-Za-z0-9]+$")
_QUERY_KEYS = ("volume", "digest", "dir")


class InvalidSnapshotUri(SnapshotInputError):
    """A ``snapshot://`` URI (or a part given to build one) that is malformed; the message names the part."""


# ------------------------------------------------------------------------------------------------ URI value object
def check_path(path: str, what: str) -> tuple[str, ...]:
    """Split a relative POSIX path into segments; refuse traversal, absolute paths and characters a URI mangles."""
    if not isinstance(path, str):
        raise InvalidSnapshotUri(f"{what}: must be a string, got {type(path).__name__}")
    if path.startswith("/"):
        raise InvalidSnapshotUri(f"{what}: {path!r} is absolute; give a path relative to the snapshot root")
    segments = tuple(s for s in path.split("/") if s)  # a trailing or doubled '/' is harmless
    for seg in segments:
        if seg in (".", ".."):
            raise InvalidSnapshotUri(f"{what}: {path!r} contains {seg!r}; paths must stay inside the snapshot")
        bad = next((c for c in seg if c in "\\?#" or ord(c) < 0x20 or ord(c) == 0x7F), None)
        if bad is not None:
            raise InvalidSnapshotUri(f"{what}: {path!r} contains the character {bad!r}, not allowed in a snapshot path")
    return segments


def _check_dir_name(name: str, what: str) -> str:
    try:
        return validate_storage_name(name, what)
    except InvalidSnapshotName as exc:
        raise InvalidSnapshotUri(str(exc)) from None


def check_snapshot_name(provider: str, name: str, what: str) -> str:
    try:
        return traits_for(provider).check_name(name, what)
    except InvalidSnapshotName as exc:
        raise InvalidSnapshotUri(str(exc)) from None


@dataclass(frozen=True)
class SnapshotLocation:
    """A parsed ``snapshot://`` URI. ``snapshot`` is ``None`` only for a bare volume URI (the parent MLflow splits
    off ``snapshot://<provider>/<snapshot>``); then the first segment of every artifact path names the snapshot."""

    provider: str
    volume: str
    snapshot: str | None = None
    path: str = ""
    digest: str | None = None
    dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.provider, str) or not _PROVIDER_RE.match(self.provider):
            raise InvalidSnapshotUri(
                f"provider: {self.provider!r} is not a provider name (lower-case letter, then letters, digits, "
                "'-' or '_')"
            )
        try:
            traits_for(self.provider).check_volume(self.volume, "volume")
        except SnapshotInputError as exc:
            raise InvalidSnapshotUri(str(exc)) from None
        if self.snapshot is not None:
            check_snapshot_name(self.provider, self.snapshot, "snapshot")
        elif self.path:
            raise InvalidSnapshotUri("path: a path needs a snapshot name before it")
        object.__setattr__(self, "path", "/".join(check_path(self.path, "path")))
        if self.dir is not None:
            _check_dir_name(self.dir, "dir")
        if self.digest is not None and not (isinstance(self.digest, str) and _DIGEST_RE.match(self.digest)):
            raise InvalidSnapshotUri(f"digest: {self.digest!r} is not '<algorithm>:<hex>'")

    @property
    def segments(self) -> tuple[str, ...]:
        """Snapshot name (when given) followed by the path's segments."""
        head = (self.snapshot,) if self.snapshot is not None else ()
        return head + tuple(s for s in self.path.split("/") if s)

    def uri(self) -> str:
        """The canonical URI; a whole-snapshot URI ends in ``/`` so MLflow's parent/basename split keeps the name."""
        query = "volume=" + quote(self.volume, safe="")
        if self.digest:
            query += "&digest=" + quote(self.digest, safe=":")
        if self.dir:
            query += "&dir=" + quote(self.dir, safe="")
        if self.snapshot is None:
            return f"{SCHEME}://{self.provider}/?{query}"
        path = f"{self.snapshot}/{self.path}" if self.path else f"{self.snapshot}/"
        return f"{SCHEME}://{self.provider}/{path}?{query}"


def _storage_dir(snapshot: Snapshot) -> str | None:
    """The snapshot's directory under ``.snapshot/`` when it is not the snapshot's name (csi)."""
    try:
        return traits_for(snapshot.provider).storage_dir(snapshot)
    except SnapshotInputError as exc:
        raise InvalidSnapshotUri(str(exc)) from None


def snapshot_artifact_uri(snapshot: Snapshot, path: str = "") -> str:
    """The ``snapshot://`` URI of *path* (relative, POSIX; ``""`` = the whole snapshot) inside *snapshot*."""
    return SnapshotLocation(
        provider=snapshot.provider,
        volume=snapshot.volume,
        snapshot=snapshot.name,
        path=path,
        digest=snapshot.digest,
        dir=_storage_dir(snapshot),
    ).uri()


def _parse_query(query: str, where: str) -> dict[str, str]:
    """``key=value&...`` with percent-decoding only (a ``+`` stays a ``+``); unknown or repeated keys are errors."""
    out: dict[str, str] = {}
    for item in query.split("&") if query else []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidSnapshotUri(f"{where}: query string: {item!r} is not 'key=value'")
        if key not in _QUERY_KEYS:
            raise InvalidSnapshotUri(f"{where}: unknown query parameter {key!r} (known: {', '.join(_QUERY_KEYS)})")
        if key in out:
            raise InvalidSnapshotUri(f"{where}: query parameter {key!r} is given more than once")
        try:
            out[key] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise InvalidSnapshotUri(f"{where}: query parameter {key!r} is not percent-quoted UTF-8") from None
    return out


def parse_snapshot_uri(uri: str) -> SnapshotLocation:
    """Parse a ``snapshot://`` URI; :class:`InvalidSnapshotUri` names the part that is wrong."""
    if not isinstance(uri, str):
        raise InvalidSnapshotUri(f"snapshot URI: must be a string, got {type(uri).__name__}")
    where = f"snapshot URI {uri!r}"
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise InvalidSnapshotUri(f"{where}: {exc}") from None
    if parts.scheme != SCHEME:
        got = f"{parts.scheme}://" if parts.scheme else "none"
        raise InvalidSnapshotUri(f"{where}: scheme must be '{SCHEME}://', got {got}")
    if parts.fragment or uri.endswith("#"):
        raise InvalidSnapshotUri(f"{where}: a fragment ('#...') is not allowed")
    if not parts.netloc:
        raise InvalidSnapshotUri(
            f"{where}: provider missing; expected {SCHEME}://<provider>/<snapshot>/<path>?volume=..."
        )
    if not _PROVIDER_RE.match(parts.netloc):
        raise InvalidSnapshotUri(f"{where}: provider {parts.netloc!r} is not a provider name (e.g. local, csi, anf)")
    query = _parse_query(parts.query, where)
    if not query.get("volume"):
        raise InvalidSnapshotUri(
            f"{where}: query parameter 'volume' (the snapshot's volume id, percent-quoted) is missing"
        )
    segments = tuple(s for s in parts.path.split("/") if s)
    snapshot, rest = (segments[0], "/".join(segments[1:])) if segments else (None, "")
    try:
        return SnapshotLocation(
            provider=parts.netloc,
            volume=query["volume"],
            snapshot=snapshot,
            path=rest,
            digest=query.get("digest"),
            dir=query.get("dir"),
        )
    except InvalidSnapshotUri as exc:
        raise InvalidSnapshotUri(f"{where}: {exc}") from None


# ----------------------------------------------------------------------------------------------------- mounts
class SnapshotMount(BaseModel):
    """One entry of ``MLFLOW_ANF_SNAPSHOT_MOUNTS``: volume (of one provider, or of any) → its mount point here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str | None = None
    volume: str
    path: Path


def parse_mounts(value: str | None, source: str = MOUNTS_ENV) -> list[SnapshotMount]:
    """Parse ``[provider:]volume=/mount/point,...``; errors name *source* and the entry."""
    mounts: list[SnapshotMount] = []
    seen: set[tuple[str | None, str]] = set()
    for index, raw in enumerate((value or "").split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        key, sep, mount = entry.partition("=")
        key, mount = key.strip(), mount.strip()
        if not sep or not key or not mount:
            raise SnapshotError(f"{source}: entry {index} {entry!r} is not '[provider:]volume=/mount/point'")
        provider: str | None = None
        head, colon, tail = key.partition(":")
        if colon and _PROVIDER_RE.match(head):
            provider, key = head, tail
            if not key:
                raise SnapshotError(f"{source}: entry {index} {entry!r} names no volume after {head + ':'!r}")
        if not mount.startswith("/"):
            raise SnapshotError(f"{source}: entry {index} {entry!r}: the mount point must be an absolute path")
        if (provider, key) in seen:
            raise SnapshotError(f"{source}: entry {index} maps volume {key!r} a second time")
        seen.add((provider, key))
        mounts.append(SnapshotMount(provider=provider, volume=key, path=Path(mount)))
    return mounts


def find_mount(mounts: list[SnapshotMount], provider: str, volume: str) -> SnapshotMount | None:
    """The entry for *volume* of *provider*: a provider-qualified entry first, then an unqualified one."""
    for wanted in (provider, None):
        for mount in mounts:
            if mount.provider == wanted and mount.volume == volume:
                return mount
    return None
