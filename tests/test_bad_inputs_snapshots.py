"""Bad-input corpus (issue #11), local snapshots: snapshot names, volumes, labels, ``snapshot://`` URIs, restore
targets and doctored manifests. Every case must raise the documented exception with a message naming the field,
file or line, and leave the file system as it was (``tree_state`` before and after)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlflow_anf.snapshots import (
    InvalidSnapshotName,
    SnapshotError,
    SnapshotNotFound,
    SnapshotVerificationError,
)
from mlflow_anf.snapshots.local import MANIFEST_NAME, InvalidRequest, LocalSnapshotProvider
from tests.support.fs_state import state_diff, tree_state


def doctor_manifest(snapdir: Path, edit: Callable[[list[str]], list[str]]) -> None:
    """Rewrite a snapshot's manifest lines with *edit* (as an attacker with write access to the snapshot would)."""
    manifest = snapdir / MANIFEST_NAME
    snapdir.chmod(0o755)
    manifest.chmod(0o644)
    manifest.write_text("\n".join(edit(manifest.read_text().splitlines())) + "\n")
    manifest.chmod(0o444)
    snapdir.chmod(0o555)


def add_entry(**entry: Any) -> Callable[[list[str]], list[str]]:
    return lambda lines: [*lines, json.dumps(entry)]


def edit_entry(path: str, **changes: Any) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        out = [lines[0]]
        for line in lines[1:]:
            data = json.loads(line)
            if data["path"] == path:
                data.update(changes)
                data = {k: v for k, v in data.items() if v is not None}
            out.append(json.dumps(data))
        return out

    return edit


SHA = "0" * 64


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Any]:
    """A volume with one snapshot, and the directory around it (whose state every case compares)."""
    vol = tmp_path / "vol"
    (vol / "clips").mkdir(parents=True)
    (vol / "clips" / "1.jpg").write_bytes(b"jpeg")
    (vol / "labels.json").write_text("[]\n")
    (vol / "latest").symlink_to("clips")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("keep")
    provider = LocalSnapshotProvider()
    snap = provider.create(str(vol), "s1")
    return {"root": tmp_path, "vol": vol, "provider": provider, "snap": snap}


def _expect(world: dict[str, Any], call: Callable[[], object], exc: type[BaseException], *needles: str) -> None:
    before = tree_state(world["root"])
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    after = tree_state(world["root"])
    assert after == before, state_diff(before, after)


# ------------------------------------------------------------------------------------------- snapshot names
BAD_NAMES = {
    "empty": "",
    "upper-case": "Snap",
    "leading-dash": "-snap",
    "trailing-dash": "snap-",
    "underscore": "snap_1",
    "slash": "a/b",
    "dot-dot-slash": "../x",
    "dot": ".",
    "dot-dot": "..",
    "space": "a b",
    "newline": "a\nb",
    "nul": "a\x00b",
    "non-ascii": "snäp",
    "hidden": ".snap",
    "238-chars": "a" * 238,
    "253-chars": "a" * 253,
    "254-chars": "a" * 254,
}


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_create_refuses_a_bad_name(world: dict[str, Any], name: str) -> None:
    _expect(world, lambda: world["provider"].create(str(world["vol"]), name), InvalidSnapshotName, "name")


@pytest.mark.parametrize("op", ["get", "delete", "restore-by-name"])
def test_other_operations_refuse_an_over_long_name(world: dict[str, Any], op: str) -> None:
    provider, vol = world["provider"], str(world["vol"])
    name = "b" * 240
    calls = {
        "get": lambda: provider.get(vol, name),
        "delete": lambda: provider.delete(vol, name),
        "restore-by-name": lambda: provider.restore(provider.get(vol, name), str(world["root"] / "t")),
    }
    _expect(world, calls[op], InvalidSnapshotName, "name", "237")


@pytest.mark.parametrize("op", ["get", "delete"])
def test_an_unknown_snapshot_is_not_found(world: dict[str, Any], op: str) -> None:
    provider, vol = world["provider"], str(world["vol"])
    _expect(world, lambda: getattr(provider, op)(vol, "nope"), SnapshotNotFound, "'nope'", "not found")


# -------------------------------------------------------------------------------------------------- volumes
def _volume_case(world: dict[str, Any], case: str) -> tuple[str, type[BaseException], str]:
    root = world["root"]
    if case == "empty":
        return "", InvalidRequest, "volume"
    if case == "missing":
        return str(root / "missing"), SnapshotNotFound, "volume"
    if case == "a-file":
        return str(root / "outside" / "keep.txt"), SnapshotNotFound, "volume"
    if case == "holds-a-manifest-name":
        vol = root / "outside" / "v2"
        vol.mkdir()
        (vol / MANIFEST_NAME).write_text("{}")
        return str(vol), InvalidRequest, MANIFEST_NAME
    if case == "snapshot-dir-is-a-file":
        vol = root / "outside" / "v3"
        vol.mkdir()
        (vol / ".snapshot").write_text("x")
        return str(vol), SnapshotError, ".snapshot exists but is not a directory"
    if case == "snapshot-dir-is-a-link":
        vol = root / "outside" / "v4"
        vol.mkdir()
        (vol / ".snapshot").symlink_to(root / "outside")
        return str(vol), SnapshotError, ".snapshot exists but is not a directory"
    raise AssertionError(case)


VOLUME_CASES = [
    "empty", "missing", "a-file", "holds-a-manifest-name", "snapshot-dir-is-a-file", "snapshot-dir-is-a-link",
]  # fmt: skip


@pytest.mark.parametrize("case", VOLUME_CASES)
def test_create_refuses_a_bad_volume(world: dict[str, Any], case: str) -> None:
    volume, exc, needle = _volume_case(world, case)
    _expect(world, lambda: world["provider"].create(volume, "s2"), exc, needle)


BAD_LABELS = {
    "empty-key": {"": "v"},
    "newline-in-value": {"run": "abc\nNAME  CREATED"},
    "carriage-return-in-key": {"a\rb": "v"},
    "escape-in-value": {"k": "\x1b[2J"},
    "non-string-value": {"k": 3},
}


@pytest.mark.parametrize("labels", list(BAD_LABELS.values()), ids=list(BAD_LABELS))
def test_create_refuses_bad_labels(world: dict[str, Any], labels: dict[str, Any]) -> None:
    _expect(world, lambda: world["provider"].create(str(world["vol"]), "s2", labels=labels), InvalidRequest, "labels")


# --------------------------------------------------------------------------------------------- restore targets
def _target_case(world: dict[str, Any], case: str) -> tuple[str, type[BaseException], str]:
    root, vol = world["root"], world["vol"]
    if case == "non-empty-dir":
        return str(root / "outside"), InvalidRequest, "not an empty directory"
    if case == "a-file":
        return str(root / "outside" / "keep.txt"), InvalidRequest, "is not a directory"
    if case == "inside-the-snapshot-dir":
        return str(vol / ".snapshot" / "new"), InvalidRequest, "target"
    if case == "the-snapshot-dir":
        return str(vol / ".snapshot"), InvalidRequest, "target"
    if case == "parent-is-a-file":
        return str(root / "outside" / "keep.txt" / "new"), InvalidRequest, "target"
    if case == "empty-string":
        return "", InvalidRequest, "target"
    if case == "nul":
        return str(root / "a\x00b"), InvalidRequest, "target"
    if case == "dangling-link":
        (root / "outside" / "dangling").symlink_to(root / "nowhere")
        return str(root / "outside" / "dangling"), InvalidRequest, "target"
    if case == "unfinished-restore":
        target = root / "outside" / "half"
        (target / ".tmp-restore-half-0123456789ab").mkdir(parents=True)
        (target / "labels.json").write_text("[]")  # published part of a killed restore
        return str(target), InvalidRequest, "unfinished restore"
    raise AssertionError(case)


TARGET_CASES = [
    "non-empty-dir", "a-file", "inside-the-snapshot-dir", "the-snapshot-dir", "parent-is-a-file", "empty-string",
    "nul", "dangling-link", "unfinished-restore",
]  # fmt: skip


@pytest.mark.parametrize("case", TARGET_CASES)
def test_restore_refuses_a_bad_target(world: dict[str, Any], case: str) -> None:
    target, exc, needle = _target_case(world, case)
    _expect(world, lambda: world["provider"].restore(world["snap"], target), exc, needle)


# ------------------------------------------------------------------------------------------ doctored manifests
def _escape_source(world: dict[str, Any]) -> None:
    (world["vol"] / ".snapshot" / "escaped.txt").write_text("escaped")  # so a naive restore has bytes to copy


MANIFESTS: dict[str, tuple[Callable[[list[str]], list[str]], str]] = {
    "dot-dot-escape": (add_entry(path="../escaped.txt", type="file", mode="0444", size=7, sha256=SHA), ":6:"),
    "absolute-path": (add_entry(path="/tmp/authorized_keys", type="file", mode="0444", size=1, sha256=SHA), ":6:"),
    "inner-dot-dot": (add_entry(path="clips/../../x", type="file", mode="0444", size=1, sha256=SHA), ":6:"),
    "dot-segment": (add_entry(path="./labels2.json", type="file", mode="0444", size=1, sha256=SHA), ":6:"),
    "double-slash": (add_entry(path="clips//2.jpg", type="file", mode="0444", size=1, sha256=SHA), ":6:"),
    "empty-path": (add_entry(path="", type="file", mode="0444", size=1, sha256=SHA), ":6:"),
    "through-a-symlink": (add_entry(path="latest/2.jpg", type="file", mode="0444", size=1, sha256=SHA), ":6:"),
    "parent-not-listed": (add_entry(path="zz/new.txt", type="file", mode="0444", size=1, sha256=SHA), ":6:"),
    "duplicate-path": (add_entry(path="latest", type="symlink", target="clips"), ":6:"),
    "manifest-name": (add_entry(path=MANIFEST_NAME, type="file", mode="0444", size=1, sha256=SHA), ":6:"),
    "nul-in-path": (add_entry(path="x\u0000y", type="file", mode="0444", size=1, sha256=SHA), ":6:"),
    "unknown-type": (add_entry(path="zz", type="fifo", mode="0444"), ":6:"),
    "mode-out-of-range": (edit_entry("labels.json", mode="77777"), ":4:"),
    "mode-not-octal": (edit_entry("labels.json", mode="rwx"), ":4:"),
    "sha256-not-hex": (edit_entry("labels.json", sha256="zz"), ":4:"),
    "sha256-missing": (edit_entry("labels.json", sha256=None), ":4:"),
    "negative-size": (edit_entry("labels.json", size=-1), ":4:"),
    "empty-symlink-target": (edit_entry("latest", target=""), ":5:"),
    "path-missing": (lambda lines: [*lines, '{"type": "file"}'], ":6:"),
    "not-json": (lambda lines: [*lines, "{not json"], ":6:"),
    "header-not-json": (lambda lines: ["garbage", *lines[1:]], ":1:"),
}


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize("case", list(MANIFESTS))
def test_restore_refuses_a_doctored_manifest(world: dict[str, Any], case: str, verify: bool) -> None:
    edit, line = MANIFESTS[case]
    snapdir = Path(world["snap"].details["path"])
    _escape_source(world)
    doctor_manifest(snapdir, edit)
    provider = world["provider"]
    target = world["root"] / "restored"
    exc = SnapshotVerificationError
    _expect(world, lambda: provider.restore(provider.get(str(world["vol"]), "s1"), str(target), verify=verify),
            exc, MANIFEST_NAME + line)  # fmt: skip
    assert not (world["root"] / "escaped.txt").exists()


# -------------------------------------------------------------------------------------------- snapshot:// URIs
def _uri(world: dict[str, Any], tail: str = "s1/labels.json", **query: str) -> str:
    from urllib.parse import quote

    q = {"volume": quote(str(world["vol"]), safe=""), **query}
    return f"snapshot://local/{tail}?" + "&".join(f"{k}={v}" for k, v in q.items())


URIS: dict[str, tuple[Callable[[dict[str, Any]], str], str, str]] = {
    # case: (uri builder, exception name, text the message must contain)
    "wrong-scheme": (lambda w: "file:///etc/passwd", "InvalidSnapshotUri", "scheme"),
    "no-provider": (lambda w: _uri(w).replace("//local/", "///"), "InvalidSnapshotUri", "provider"),
    "upper-provider": (lambda w: _uri(w).replace("//local/", "//Local/"), "InvalidSnapshotUri", "provider"),
    "no-volume": (lambda w: "snapshot://local/s1/labels.json", "InvalidSnapshotUri", "volume"),
    "relative-volume": (lambda w: "snapshot://local/s1?volume=vol", "InvalidSnapshotUri", "volume"),
    "nul-in-volume": (lambda w: "snapshot://local/s1?volume=%2Fv%00x", "InvalidSnapshotUri", "volume"),
    "unknown-key": (lambda w: _uri(w, colour="red"), "InvalidSnapshotUri", "colour"),
    "bad-digest": (lambda w: _uri(w, digest="nohex"), "InvalidSnapshotUri", "digest"),
    "fragment": (lambda w: _uri(w) + "#x", "InvalidSnapshotUri", "fragment"),
    "bad-snapshot-name": (lambda w: _uri(w, "Bad_Name/labels.json"), "InvalidSnapshotUri", "snapshot"),
    "over-long-snapshot-name": (lambda w: _uri(w, "c" * 240 + "/x"), "InvalidSnapshotName", "237"),
    "dot-dot": (lambda w: _uri(w, "s1/../../outside/keep.txt"), "InvalidSnapshotUri", "'..'"),
    "backslash": (lambda w: _uri(w, "s1/clips\\1.jpg"), "InvalidSnapshotUri", "path"),
    "control-char": (lambda w: _uri(w, "s1/a\x01b"), "InvalidSnapshotUri", "path"),
    "unknown-snapshot": (lambda w: _uri(w, "s9/labels.json"), "SnapshotNotFound", "'s9'"),
    "missing-volume": (lambda w: "snapshot://local/s1?volume=%2Fno%2Fsuch", "SnapshotNotFound", "volume"),
    "reused-digest": (lambda w: _uri(w, digest="sha256:" + "ab" * 32), "SnapshotVerificationError", "digest"),
    "missing-path": (lambda w: _uri(w, "s1/nothing.txt"), "SnapshotArtifactNotFound", "nothing.txt"),
    "the-manifest": (lambda w: _uri(w, f"s1/{MANIFEST_NAME}"), "SnapshotArtifactNotFound", "manifest"),
}


@pytest.mark.parametrize("case", list(URIS))
def test_a_bad_snapshot_uri_is_refused(world: dict[str, Any], case: str) -> None:
    from mlflow import artifacts

    from mlflow_anf.artifact_repo import SnapshotArtifactRepository

    build, exc_name, needle = URIS[case]
    uri = build(world)
    dst = world["root"] / "dst"
    dst.mkdir()
    before = tree_state(world["root"])
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked by name below
        if case == "wrong-scheme":  # MLflow itself would read a file:// URI; the repository must refuse it
            SnapshotArtifactRepository(uri)
        else:
            artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    assert type(info.value).__name__ == exc_name or exc_name in [c.__name__ for c in type(info.value).__mro__], (
        f"{type(info.value).__name__}: {info.value}"
    )
    assert needle in str(info.value), str(info.value)
    after = tree_state(world["root"])
    assert after == before, state_diff(before, after)
