"""Local snapshot provider: layout, immutability, atomicity, digests, restore, verify, registry."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlflow_anf.snapshots import (
    InvalidSnapshotName,
    ProviderConfigError,
    SnapshotError,
    SnapshotExists,
    SnapshotNotFound,
    SnapshotProvider,
    SnapshotVerificationError,
    available_providers,
    get_provider,
    validate_snapshot_name,
)
from mlflow_anf.snapshots.local import MANIFEST_NAME, InvalidRequest, LocalSnapshotProvider, manifest_digest

WRITE = 0o222


def _write(path: Path, data: bytes | str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        path.chmod(mode)
    return path


def _replace(path: Path, data: str) -> None:
    """What well-behaved writers do: write a temp file, rename it over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


@pytest.fixture()
def volume(tmp_path: Path) -> Path:
    vol = tmp_path / "vol"
    _write(vol / "labels.json", '{"lanes": [1, 2]}')
    _write(vol / "clips" / "0001" / "20.jpg", os.urandom(70_000))
    _write(vol / "clips" / "0002" / "20.jpg", os.urandom(3_000))
    _write(vol / "tools" / "run.sh", "#!/bin/sh\necho hi\n", mode=0o755)
    (vol / "empty").mkdir()
    (vol / "latest").symlink_to("clips/0002")
    return vol


@pytest.fixture()
def hardlink() -> LocalSnapshotProvider:
    return LocalSnapshotProvider(LocalSnapshotProvider.Config(method="hardlink"))


@pytest.fixture()
def provider() -> LocalSnapshotProvider:
    return LocalSnapshotProvider()


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not p.is_symlink() and str(rel) != MANIFEST_NAME and rel.parts[0] != ".snapshot":
            out[str(rel)] = p.read_bytes()
    return out


def _manifest_entries(snapdir: Path) -> list[dict]:
    lines = (snapdir / MANIFEST_NAME).read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]


# ------------------------------------------------------------------------------------------------ basics
def test_provider_satisfies_protocol(provider: LocalSnapshotProvider) -> None:
    assert isinstance(provider, SnapshotProvider)
    assert provider.name == "local"


def test_create_lays_out_snapshot_like_ontap(provider: LocalSnapshotProvider, volume: Path) -> None:
    snap = provider.create(str(volume), "first", labels={"team": "lanes"})
    snapdir = volume / ".snapshot" / "first"
    assert snap.details["path"] == str(snapdir)
    assert snap.volume == str(volume.resolve())
    assert snap.ref == f"local:{volume.resolve()}@first"
    assert snap.labels == {"team": "lanes"}
    assert snap.details["files"] == 4 and snap.details["symlinks"] == 1
    assert snap.size_bytes == snap.details["bytes"] == sum(len(b) for b in _files(volume).values())
    assert _files(snapdir) == _files(volume)
    assert os.readlink(snapdir / "latest") == "clips/0002"
    assert (snapdir / "empty").is_dir()
    assert snap.digest is not None and snap.digest.startswith("sha256:")

    entries = {e["path"]: e for e in _manifest_entries(snapdir)}
    assert entries["tools/run.sh"]["mode"] == "0555"  # exec bits kept, write bits never recorded
    assert entries["labels.json"]["size"] == len('{"lanes": [1, 2]}')
    assert entries["latest"] == {"path": "latest", "type": "symlink", "target": "clips/0002"}

    # .snapshot itself is never part of a snapshot
    second = provider.create(str(volume), "second")
    assert not (volume / ".snapshot" / "second" / ".snapshot").exists()
    assert second.digest == snap.digest
    assert [s.name for s in provider.list(str(volume))] == ["first", "second"]
    assert provider.get(str(volume), "first") == snap


def test_default_name_is_a_valid_timestamp_name(provider: LocalSnapshotProvider, volume: Path) -> None:
    snap = provider.create(str(volume))
    assert snap.name.startswith("snap-")
    assert validate_snapshot_name(snap.name) == snap.name
    assert snap.created.tzinfo is not None


@pytest.mark.parametrize("bad", ["UPPER", "-dash", "dot.", "a/b", "../escape", "", "x" * 254, "snap_1"])
def test_invalid_names_are_rejected_everywhere(provider: LocalSnapshotProvider, volume: Path, bad: str) -> None:
    with pytest.raises(InvalidSnapshotName, match="name"):
        provider.create(str(volume), bad)
    with pytest.raises(InvalidSnapshotName):
        provider.get(str(volume), bad)
    with pytest.raises(InvalidSnapshotName):
        provider.delete(str(volume), bad)
    assert not (volume / ".snapshot").exists() or not any((volume / ".snapshot").iterdir())


def test_existing_name_is_refused_and_first_snapshot_kept(provider: LocalSnapshotProvider, volume: Path) -> None:
    first = provider.create(str(volume), "dup")
    _replace(volume / "labels.json", "changed")
    with pytest.raises(SnapshotExists, match="dup"):
        provider.create(str(volume), "dup")
    assert provider.get(str(volume), "dup") == first
    assert provider.verify(first).ok
    assert [p.name for p in (volume / ".snapshot").iterdir()] == ["dup"]


def test_not_found(provider: LocalSnapshotProvider, volume: Path, tmp_path: Path) -> None:
    with pytest.raises(SnapshotNotFound, match="ghost"):
        provider.get(str(volume), "ghost")
    with pytest.raises(SnapshotNotFound):
        provider.delete(str(volume), "ghost")
    with pytest.raises(SnapshotNotFound, match="not an existing directory"):
        provider.create(str(tmp_path / "no-such-volume"))
    snap = provider.create(str(volume), "here")
    provider.delete(str(volume), "here")
    with pytest.raises(SnapshotNotFound):
        provider.verify(snap)
    with pytest.raises(SnapshotNotFound):
        provider.restore(snap, str(tmp_path / "out"))
    assert provider.list(str(volume)) == []


def test_bad_volumes_are_refused_with_their_reason(provider: LocalSnapshotProvider, volume: Path) -> None:
    _write(volume / MANIFEST_NAME, "{}")
    with pytest.raises(InvalidRequest, match="reserved"):
        provider.create(str(volume), "x")
    (volume / MANIFEST_NAME).unlink()
    _write(volume / ".snapshot", "not a directory")
    with pytest.raises(SnapshotError, match="not a directory"):
        provider.create(str(volume), "x")


# ----------------------------------------------------------------------------------------- immutability
def test_hardlink_snapshot_is_read_only_and_survives_replace(hardlink: LocalSnapshotProvider, volume: Path) -> None:
    old = (volume / "labels.json").read_bytes()
    snap = hardlink.create(str(volume), "ro")
    snapdir = Path(snap.details["path"])
    assert snap.details["method"] == "hardlink"
    for path in [snapdir, *snapdir.rglob("*")]:
        if not path.is_symlink():
            assert path.lstat().st_mode & WRITE == 0, path
    # The live file shares the inode, so it became read-only too (the documented copy-on-write convention).
    live = volume / "labels.json"
    assert live.stat().st_ino == (snapdir / "labels.json").stat().st_ino
    assert live.stat().st_mode & WRITE == 0

    _replace(live, "new labels")
    assert (snapdir / "labels.json").read_bytes() == old
    assert hardlink.verify(snap).ok
    newer = hardlink.create(str(volume), "after-replace")
    assert newer.digest != snap.digest
    assert (Path(newer.details["path"]) / "labels.json").read_text() == "new labels"


def test_verify_reports_changed_missing_and_extra(provider: LocalSnapshotProvider, volume: Path) -> None:
    snap = provider.create(str(volume), "v")
    snapdir = Path(snap.details["path"])
    assert provider.verify(snap).ok

    victim = snapdir / "clips" / "0001" / "20.jpg"
    victim.chmod(0o644)  # an owner (or root) can always do this, then rewrite in place
    with open(victim, "r+b") as f:
        f.write(b"X")
    (snapdir / "clips" / "0002").chmod(0o755)
    (snapdir / "clips" / "0002" / "20.jpg").unlink()
    _write(snapdir / "clips" / "0002" / "intruder.txt", "x")
    snapdir.chmod(0o755)

    result = provider.verify(snap)
    assert not result.ok
    assert result.checked == len(_manifest_entries(snapdir))
    assert "changed: clips/0001/20.jpg (content)" in result.problems
    assert "writable: clips/0001/20.jpg (snapshot entries must be read-only)" in result.problems
    assert "missing: clips/0002/20.jpg" in result.problems
    assert "extra: clips/0002/intruder.txt" in result.problems
    assert any(p.startswith("writable: clips/0002") for p in result.problems)
    assert "writable: . (snapshot entries must be read-only)" in result.problems


def test_verify_detects_edited_manifest(provider: LocalSnapshotProvider, volume: Path) -> None:
    snap = provider.create(str(volume), "m")
    manifest = Path(snap.details["path"]) / MANIFEST_NAME
    manifest.chmod(0o644)
    text = manifest.read_text().replace('"size":3000', '"size":3001')
    manifest.write_text(text)
    problems = provider.verify(snap).problems
    assert any(p.startswith("manifest:") for p in problems)
    assert "changed: clips/0002/20.jpg (size 3000, expected 3001)" in problems


def test_in_place_write_to_live_file_is_caught(hardlink: LocalSnapshotProvider, volume: Path) -> None:
    """The hard-link caveat: rewriting a live file in place (after chmod u+w) also changes the snapshot."""
    before = hardlink.create(str(volume), "before")
    live = volume / "labels.json"
    live.chmod(0o644)
    with open(live, "r+b") as f:  # same size, in place
        f.write(b"[")
    result = hardlink.verify(before)
    assert result.problems == [
        "writable: labels.json (snapshot entries must be read-only)",
        "changed: labels.json (content)",
    ]
    # The next snapshot does not trust the recorded digest of a file that became writable: it re-reads it.
    after = hardlink.create(str(volume), "after")
    assert after.details["reused_digests"] == after.details["files"] - 1
    assert hardlink.verify(after).ok
    assert after.digest != before.digest


# ---------------------------------------------------------------------------------------------- digests
def test_digests_are_reused_stable_and_follow_content(provider: LocalSnapshotProvider, volume: Path) -> None:
    a = provider.create(str(volume), "a")
    b = provider.create(str(volume), "b")
    assert a.details["reused_digests"] == 0
    assert b.details["reused_digests"] == b.details["files"] == 4
    assert a.digest == b.digest
    assert provider.verify(b).ok  # reused digests are right

    _replace(volume / "clips" / "0002" / "20.jpg", "other bytes")
    c = provider.create(str(volume), "c")
    assert c.digest != b.digest
    assert c.details["reused_digests"] == 3

    (volume / "clips" / "0002" / "20.jpg").rename(volume / "clips" / "0002" / "21.jpg")
    d = provider.create(str(volume), "d")
    assert d.digest != c.digest

    (volume / "labels.json").chmod(0o555)  # an exec bit is content too
    e = provider.create(str(volume), "e")
    assert e.digest != d.digest
    entries = [json.loads(line) for line in (Path(e.details["path"]) / MANIFEST_NAME).read_text().splitlines()[1:]]
    assert e.digest == _digest_of(entries)


def _digest_of(entries: list[dict]) -> str:
    from mlflow_anf.snapshots.local import ManifestEntry

    return manifest_digest([ManifestEntry.from_json(json.dumps(e)) for e in entries])


def test_digest_does_not_depend_on_name_time_or_location(provider: LocalSnapshotProvider, volume: Path) -> None:
    other = volume.parent / "copy"
    snap = provider.create(str(volume), "one")
    provider.restore(snap, str(other))
    assert provider.create(str(other), "two").digest == snap.digest


# ---------------------------------------------------------------------------------------------- restore
def test_restore_is_independent_and_writable(provider: LocalSnapshotProvider, volume: Path, tmp_path: Path) -> None:
    snap = provider.create(str(volume), "r")
    snapdir = Path(snap.details["path"])
    out = provider.restore(snap, str(tmp_path / "restored" / "vol"))
    target = Path(out)
    assert out == str((tmp_path / "restored" / "vol").absolute())
    assert _files(target) == _files(snapdir)
    assert os.readlink(target / "latest") == "clips/0002"
    assert (target / "empty").is_dir()
    assert (target / "tools" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (target / "labels.json").stat().st_mode & 0o200
    assert not (target / MANIFEST_NAME).exists()
    assert (target / "labels.json").stat().st_ino != (snapdir / "labels.json").stat().st_ino

    with open(target / "labels.json", "r+b") as f:  # in place: must touch neither snapshot nor volume
        f.write(b"{{")
    _write(target / "clips" / "new.txt", "added")
    assert provider.verify(snap).ok
    assert (volume / "labels.json").read_text() == '{"lanes": [1, 2]}'
    assert not [p for p in (tmp_path / "restored").iterdir() if p.name.startswith(".tmp-")]


def test_restore_target_rules(provider: LocalSnapshotProvider, volume: Path, tmp_path: Path) -> None:
    snap = provider.create(str(volume), "t")
    busy = tmp_path / "busy"
    _write(busy / "keep.txt", "mine")
    with pytest.raises(InvalidRequest, match="not an empty directory"):
        provider.restore(snap, str(busy))
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(InvalidRequest, match="inside"):
        provider.restore(snap, str(volume / ".snapshot" / "t" / "again"))
    empty = tmp_path / "empty-mount"
    empty.mkdir()
    assert provider.restore(snap, str(empty)) == str(empty)
    assert _files(empty) == _files(volume)


def test_restore_of_damaged_snapshot_leaves_nothing(provider: LocalSnapshotProvider, volume: Path, tmp_path: Path):
    snap = provider.create(str(volume), "d")
    victim = Path(snap.details["path"]) / "clips" / "0002" / "20.jpg"
    victim.chmod(0o644)
    victim.write_bytes(b"\0" * 3000)
    with pytest.raises(SnapshotVerificationError, match="clips/0002/20.jpg"):
        provider.restore(snap, str(tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SnapshotVerificationError):
        provider.restore(snap, str(empty))
    assert list(empty.iterdir()) == []
    # --no-verify skips hashing only what is unchanged (inode, mtime, size): an in-place rewrite is still refused
    with pytest.raises(SnapshotVerificationError, match="clips/0002/20.jpg"):
        provider.restore(snap, str(tmp_path / "anyway"), verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "vol"]


def test_restore_refuses_a_record_whose_name_was_reused(provider: LocalSnapshotProvider, volume: Path, tmp_path: Path):
    old = provider.create(str(volume), "reused")
    provider.delete(str(volume), "reused")
    _replace(volume / "labels.json", "different")
    provider.create(str(volume), "reused")
    with pytest.raises(SnapshotVerificationError, match="reused"):
        provider.restore(old, str(tmp_path / "out"))


# ----------------------------------------------------------------------------------------------- delete
def test_delete_keeps_live_data_and_other_snapshots(hardlink: LocalSnapshotProvider, volume: Path) -> None:
    live_before = _files(volume)
    keep = hardlink.create(str(volume), "keep")
    hardlink.create(str(volume), "drop")
    hardlink.delete(str(volume), "drop")
    assert [s.name for s in hardlink.list(str(volume))] == ["keep"]
    assert sorted(p.name for p in (volume / ".snapshot").iterdir()) == ["keep"]
    assert _files(volume) == live_before
    assert hardlink.verify(keep).ok


# ------------------------------------------------------------------------------------------- atomicity
def test_killed_create_leaves_no_half_snapshot(provider: LocalSnapshotProvider, volume: Path) -> None:
    for i in range(12):
        _write(volume / "many" / f"{i:02d}.txt", f"file {i}")
    provider.create(str(volume), "before")
    script = textwrap.dedent(
        """
        import sys, time
        from mlflow_anf.snapshots.local import LocalSnapshotProvider

        def progress(done, path):
            if done == 5:
                print("half-way", flush=True)
                time.sleep(300)

        LocalSnapshotProvider().create(sys.argv[1], "nightly", progress=progress)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(volume)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "half-way"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    snaproot = volume / ".snapshot"
    leftovers = [p.name for p in snaproot.iterdir() if p.name.startswith(".tmp-nightly-")]
    assert len(leftovers) == 1  # it really died half-way through building

    assert [s.name for s in provider.list(str(volume))] == ["before"]
    with pytest.raises(SnapshotNotFound):
        provider.get(str(volume), "nightly")
    assert sorted(p.name for p in snaproot.iterdir()) == ["before"]  # list removed the dead process's leftovers

    nightly = provider.create(str(volume), "nightly")
    assert provider.verify(nightly).ok
    assert nightly.details["files"] == 4 + 12


def test_failed_create_removes_its_work_dir(provider: LocalSnapshotProvider, volume: Path) -> None:
    def explode(done: int, path: str) -> None:
        if done == 2:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        provider.create(str(volume), "boom", progress=explode)
    assert list((volume / ".snapshot").iterdir()) == []


def test_reflink_method_either_clones_or_fails_cleanly(volume: Path) -> None:
    reflink = LocalSnapshotProvider(LocalSnapshotProvider.Config(method="reflink"))
    try:
        snap = reflink.create(str(volume), "cow")
    except SnapshotError as exc:  # e.g. ext4, tmpfs, overlayfs
        assert "FICLONE" in str(exc) and "method" in str(exc)
        assert list((volume / ".snapshot").iterdir()) == []
        assert (volume / "labels.json").stat().st_mode & 0o200  # the live tree was left alone
    else:  # XFS, btrfs: independent clones, the live file stays writable
        assert snap.details["method"] == "reflink"
        assert (volume / "labels.json").stat().st_mode & 0o200
        assert (volume / "labels.json").stat().st_ino != (Path(snap.details["path"]) / "labels.json").stat().st_ino
        assert reflink.verify(snap).ok


def test_special_files_are_skipped_and_reported(provider: LocalSnapshotProvider, volume: Path) -> None:
    os.mkfifo(volume / "pipe")
    snap = provider.create(str(volume), "fifo")
    assert snap.details["skipped"] == ["pipe"]
    assert not os.path.lexists(Path(snap.details["path"]) / "pipe")
    assert provider.verify(snap).ok


# ------------------------------------------------------------------------------------- listing, labels
def test_list_filters_by_labels_and_root_option(volume: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    _write(other / "x.txt", "x")
    provider = LocalSnapshotProvider(LocalSnapshotProvider.Config(root=tmp_path))
    provider.create("vol", "a", labels={"role": "data"})
    provider.create("vol", "b", labels={"role": "model"})
    provider.create(str(other), "c", labels={"role": "data"})
    assert [s.name for s in provider.list("vol", labels={"role": "data"})] == ["a"]
    assert [(Path(s.volume).name, s.name) for s in provider.list(labels={"role": "data"})] == [
        ("other", "c"),
        ("vol", "a"),
    ]
    with pytest.raises(InvalidRequest, match="root"):
        LocalSnapshotProvider().list()


def test_unreadable_manifest_is_listed_as_not_ready(provider: LocalSnapshotProvider, volume: Path) -> None:
    snap = provider.create(str(volume), "broken")
    manifest = Path(snap.details["path"]) / MANIFEST_NAME
    manifest.chmod(0o644)
    manifest.write_text("not json\n")
    [listed] = provider.list(str(volume))
    assert listed.name == "broken" and not listed.ready
    assert MANIFEST_NAME in listed.details["error"] and ":1:" in listed.details["error"]
    with pytest.raises(SnapshotVerificationError, match=":1:"):
        provider.get(str(volume), "broken")


# ---------------------------------------------------------------------------------------------- registry
def test_registry_builds_providers_from_options(volume: Path) -> None:
    assert available_providers() == ["anf", "csi", "local"]
    local = get_provider("local", method="hardlink", fsync="false")
    assert isinstance(local, LocalSnapshotProvider)
    assert local.config.method == "hardlink" and local.config.fsync is False
    assert local.create(str(volume), "via-registry").details["method"] == "hardlink"


def test_registry_errors_name_the_option_not_the_value() -> None:
    with pytest.raises(ProviderConfigError, match=r"unknown option 'colour'.*known options: fsync, method, root"):
        get_provider("local", colour="blue")
    with pytest.raises(ProviderConfigError, match="option 'method'") as exc_info:
        get_provider("local", method="hunter2-secret")
    assert "hunter2" not in str(exc_info.value)
    with pytest.raises(ProviderConfigError, match="unknown provider 'nfs'.*anf, csi, local"):
        get_provider("nfs")


def test_manifest_lines_are_the_json_they_claim_to_be() -> None:
    """The hand-formatted manifest/canonical lines equal json.dumps output, for awkward names too."""
    from mlflow_anf.snapshots.local import ManifestEntry

    odd = 'dir/ü "quoted"\\back\tslash\udcff'
    entries = [
        ManifestEntry(path=odd, type="file", mode=0o444, size=7, sha256="ab" * 32, stat=(12, 34)),
        ManifestEntry(path=odd, type="dir", mode=0o555),
        ManifestEntry(path=odd, type="symlink", target='../"x"'),
    ]
    for entry in entries:
        value = entry.target if entry.type == "symlink" else entry.sha256
        expected = json.dumps([entry.type, odd, entry.mode, entry.size, value], separators=(",", ":")) + "\n"
        assert entry.canonical() == expected
        assert ManifestEntry.from_json(entry.to_json()) == entry
    assert json.loads(entries[0].to_json()) == {
        "path": odd, "type": "file", "mode": "0444", "size": 7, "sha256": "ab" * 32, "stat": [12, 34],
    }  # fmt: skip


def test_digests_of_an_edited_manifest_are_not_inherited(provider: LocalSnapshotProvider, volume: Path) -> None:
    first = provider.create(str(volume), "first")
    manifest = Path(first.details["path"]) / MANIFEST_NAME
    manifest.chmod(0o644)
    lines = manifest.read_text().splitlines()
    forged = [line.replace('"sha256":"', '"sha256":"0') if '"labels.json"' in line else line for line in lines]
    manifest.write_text("\n".join(forged) + "\n")
    second = provider.create(str(volume), "second")
    assert second.details["reused_digests"] == 0
    assert second.digest == first.digest  # recomputed from content, equal to what the first header recorded
    assert provider.verify(second).ok
    assert provider.verify(first).problems[0].startswith("manifest:")


# --------------------------------------------------------------------------------- issue #11: data safety
_SWAPPER = textwrap.dedent(
    """
    import os, sys
    vol, outside_file, outside_dir, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    dirs = [os.path.join(vol, f"d{k}") for k in range(4)]
    linked = False
    for i in range(rounds):
        for n in range(20):
            name = os.path.join(vol, f"f{n:02d}")
            os.symlink(outside_file, name + ".lnk")
            os.replace(name + ".lnk", name)          # the file becomes a link to a file outside the volume
            with open(name + ".new", "w") as f:
                f.write("inside")
            os.chmod(name + ".new", 0o644)
            os.replace(name + ".new", name)          # and a fresh writable file again
            if n % 5 == 4:  # every few files the directories become links to a directory outside, or come back
                for d in dirs:
                    if linked:
                        os.unlink(d)
                        os.rename(d + ".real", d)
                    else:
                        os.rename(d, d + ".real")
                        os.symlink(outside_dir, d)
                linked = not linked
    """
)


def test_links_swapped_in_during_a_walk_never_touch_or_capture_outside_files(
    hardlink: LocalSnapshotProvider, tmp_path: Path
) -> None:
    """Red team: root's chmod followed a link swapped in mid-walk (an outside file became read-only/setuid) and a
    directory swapped for a link captured outside files. Bounded race: a swapper process against 60 snapshots."""
    from tests.support.fs_state import state_diff, tree_state

    vol, outside = tmp_path / "vol", tmp_path / "outside"
    for n in range(20):
        _write(vol / f"f{n:02d}", "inside", mode=0o644)
    for k in range(4):
        _write(vol / f"d{k}" / "in.txt", "inside")
    _write(outside / "secret.txt", "OUTSIDE", mode=0o4755)
    _write(outside / "dir" / "private.txt", "OUTSIDE", mode=0o644)
    before = tree_state(outside)
    swapper = subprocess.Popen(
        [sys.executable, "-c", _SWAPPER, str(vol), str(outside / "secret.txt"), str(outside / "dir"), "400"]
    )
    try:
        for i in range(60):
            if swapper.poll() is not None:
                break
            with contextlib.suppress(SnapshotError):  # "kept being replaced" is a fair answer to this writer
                hardlink.create(str(vol), f"race-{i}")
    finally:
        swapper.kill()
        swapper.wait()
    assert hardlink.list(str(vol)), "no snapshot was taken: the race proved nothing"
    for p in (vol / ".snapshot").rglob("*"):
        if p.is_file() and not p.is_symlink() and p.name != MANIFEST_NAME:
            assert p.read_text() == "inside", f"{p} was captured from outside the volume"
    assert tree_state(outside) == before, state_diff(before, tree_state(outside))


def test_a_file_hard_linked_from_outside_the_volume_is_copied_not_chmodded(
    hardlink: LocalSnapshotProvider, tmp_path: Path
) -> None:
    """A snapshot never changes permissions outside the volume: `prepare` hard-links the download into it."""
    download = _write(tmp_path / "download" / "frame.jpg", b"jpeg bytes", mode=0o644)
    vol = tmp_path / "vol"
    vol.mkdir()
    os.link(download, vol / "frame.jpg")
    _write(vol / "own.txt", "own", mode=0o644)
    snap = hardlink.create(str(vol), "s1")
    assert stat.S_IMODE(download.stat().st_mode) == 0o644  # the download (and the volume's name for it) untouched
    captured = Path(snap.details["path"]) / "frame.jpg"
    assert captured.stat().st_ino != download.stat().st_ino and captured.read_bytes() == b"jpeg bytes"
    assert not captured.stat().st_mode & WRITE
    assert snap.details["method"] == "mixed"  # own.txt is still hard-linked
    assert hardlink.verify(snap).ok
    download.write_bytes(b"rewritten!")  # in place, through the other name: the snapshot keeps its copy
    assert hardlink.verify(snap).ok


def _as_nobody(func) -> int:  # type: ignore[no-untyped-def]
    """Run *func* in a child process with uid/gid 65534 (when root), return its exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            if os.getuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            code = func()
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_an_unreadable_file_is_named_and_no_chmod_is_left_behind() -> None:
    """Red team: the error named a temp path and the files linked before it stayed read-only."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="snap-unreadable-"))  # /tmp: reachable for an unprivileged uid
    try:
        vol = base / "vol"
        _write(vol / "a.txt", "a", mode=0o644)
        _write(vol / "b.txt", "b", mode=0o000)  # not even its owner may read it
        _write(vol / "c.txt", "c", mode=0o644)
        report = base / "report.txt"
        if os.getuid() == 0:
            os.chmod(base, 0o777)
            for p in [vol, *vol.iterdir()]:
                os.chown(p, 65534, 65534)

        def attempt() -> int:
            try:
                LocalSnapshotProvider(LocalSnapshotProvider.Config(method="hardlink")).create(str(vol), "s1")
            except SnapshotError as exc:
                report.write_text(f"{type(exc).__name__}: {exc}")
                return 0
            except Exception as exc:  # noqa: BLE001
                report.write_text(f"RAW {type(exc).__name__}: {exc}")
                return 0
            report.write_text("no error")
            return 0

        assert _as_nobody(attempt) == 0
        message = report.read_text()
        assert message.startswith("SnapshotError: ") and "cannot read b.txt" in message and ".tmp-" not in message
        assert stat.S_IMODE((vol / "a.txt").stat().st_mode) == 0o644  # no chmod left behind
        assert stat.S_IMODE((vol / "c.txt").stat().st_mode) == 0o644
        assert [p.name for p in (vol / ".snapshot").iterdir()] == []
    finally:
        for p in base.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(base)


_KILL_AFTER_TWO_FILES = textwrap.dedent(
    """
    import os, signal, sys
    from mlflow_anf.snapshots import local

    copy, done = local._RestoreCopy._copy, []
    def _copy(self, *args):
        copy(self, *args)
        done.append(1)
        if len(done) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    local._RestoreCopy._copy = _copy
    provider = local.LocalSnapshotProvider()
    provider.restore(provider.get(sys.argv[1], "s1"), sys.argv[2])
    """
)


@pytest.mark.parametrize("existing", [False, True], ids=["new-target", "empty-target"])
def test_a_killed_restore_is_never_mistaken_for_a_complete_one(
    provider: LocalSnapshotProvider, volume: Path, tmp_path: Path, existing: bool
) -> None:
    """Red team: kill -9 during restore left .tmp-restore-* forever and could half-fill an existing empty target."""
    snap = provider.create(str(volume), "s1")
    parent = tmp_path / "restores"
    target = parent / "t"
    target.mkdir(parents=True) if existing else parent.mkdir()
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_TWO_FILES, str(volume), str(target)], timeout=120)
    assert proc.returncode == -signal.SIGKILL  # it died half-way through copying
    if existing:  # only the hidden work directory, no restored file in sight
        assert [p.name.startswith(".tmp-restore-") for p in target.iterdir()] == [True]
    else:
        assert [p.name.startswith(".tmp-restore-t-") for p in parent.iterdir()] == [True]
    provider.restore(snap, str(target))  # the next restore cleans up and publishes a complete copy
    assert sorted(p.name for p in parent.iterdir()) == ["t"]
    assert _files(target) == _files(volume)
    assert not [p for p in target.iterdir() if p.name.startswith(".tmp-")]


def test_list_while_a_snapshot_is_deleted_skips_it(
    provider: LocalSnapshotProvider, volume: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: `list` during a `delete` died with FileNotFoundError. The delete lands between the scan of
    .snapshot/ and the read of the manifest (where a concurrent delete removes it)."""
    provider.create(str(volume), "keep")
    provider.create(str(volume), "gone")
    scan = LocalSnapshotProvider._snapshot_dirs

    def scan_then_delete(self: LocalSnapshotProvider, vol: Path):  # type: ignore[no-untyped-def]
        dirs = list(scan(self, vol))
        LocalSnapshotProvider().delete(str(vol), "gone")
        yield from dirs

    monkeypatch.setattr(LocalSnapshotProvider, "_snapshot_dirs", scan_then_delete)
    assert [s.name for s in provider.list(str(volume))] == ["keep"]


def test_a_snapshot_deleted_during_restore_or_verify_is_reported_as_deleted(
    provider: LocalSnapshotProvider, volume: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: restoring a snapshot deleted meanwhile said "the snapshot is damaged"."""
    snap = provider.create(str(volume), "s1")
    resolve = LocalSnapshotProvider._resolve_record

    def resolve_then_delete(self: LocalSnapshotProvider, record):  # type: ignore[no-untyped-def]
        found = resolve(self, record)
        if os.path.lexists(found[0]):
            LocalSnapshotProvider().delete(record.volume, record.name)
        return found

    monkeypatch.setattr(LocalSnapshotProvider, "_resolve_record", resolve_then_delete)
    with pytest.raises(SnapshotNotFound, match="was deleted") as info:
        provider.restore(snap, str(tmp_path / "t"))
    assert "damaged" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol"]
    provider.create(str(volume), "s2")
    with pytest.raises(SnapshotNotFound, match="was deleted"):
        provider.verify(provider.get(str(volume), "s2"))


@pytest.mark.parametrize("length", [238, 253])
def test_names_too_long_for_the_work_directory_are_refused_up_front(
    provider: LocalSnapshotProvider, volume: Path, length: int
) -> None:
    """Red team: names of 238-253 characters passed validation and failed with `[Errno 36] File name too long`."""
    with pytest.raises(InvalidSnapshotName, match="at most 237"):
        provider.create(str(volume), "a" * length)
    assert not (volume / ".snapshot").exists() or list((volume / ".snapshot").iterdir()) == []
    provider.create(str(volume), "a" * 237)
