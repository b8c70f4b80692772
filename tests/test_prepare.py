"""`lanedet prepare`: official layout, merged root and archives → a prepared root, atomically and validated."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mlflow_anf_lanedet.cli import main as lanedet_main
from mlflow_anf_lanedet.data.prepare import MANIFEST_NAME, PrepareError, prepare, prepare_command
from mlflow_anf_lanedet.data.tusimple import TuSimpleDataset, read_labels
from tests.support.fs_state import state_diff, tree_state

TRAIN_FILES = ("label_data_0313.json", "label_data_0531.json", "label_data_0601.json")


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.kron(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8), np.ones((80, 80, 1), np.uint8))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


@pytest.fixture(scope="module")
def real_lines(tusimple_fixtures: Path) -> list[dict]:
    with open(tusimple_fixtures / "label_data_0313.json") as f:
        return [json.loads(next(f)) for _ in range(6)]


def make_download(root: Path, real_lines: list[dict], jpeg: bytes | None = None) -> Path:
    """Official layout: train_set/ (3 label files, clips with 2 frames each), test_set/, test_label.json."""
    plan = {
        "train_set/label_data_0313.json": ["clips/0313-1/10/20.jpg", "clips/0313-2/20/20.jpg"],
        "train_set/label_data_0531.json": ["clips/0531/30/20.jpg"],
        "train_set/label_data_0601.json": ["clips/0601/40/20.jpg"],
        "test_label.json": ["clips/0530/50_0/20.jpg", "clips/0601/60/20.jpg"],
    }
    lines = iter(real_lines)
    for name, raw_files in plan.items():
        set_dir = root / ("test_set" if name == "test_label.json" else "train_set")
        set_dir.mkdir(parents=True, exist_ok=True)
        with open(root / name, "w") as f:
            for j, raw in enumerate(raw_files):
                f.write(json.dumps({**next(lines), "raw_file": raw}) + "\n")
                for frame in ("1.jpg", "20.jpg"):
                    path = set_dir / Path(raw).parent / frame
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(jpeg if jpeg is not None else f"{raw}/{frame}".encode())
    (root / "test_set" / "test_tasks_0627.json").write_text('{"raw_file": "clips/0530/50_0/20.jpg"}\n')
    return root


@pytest.fixture
def download(tmp_path: Path, real_lines: list[dict]) -> Path:
    return make_download(tmp_path / "download", real_lines)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_prepare_from_the_official_layout(download: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    report = prepare(download, out)
    assert report.layout == "download"
    assert report.splits == {"train": 3, "val": 1, "test": 2}
    assert report.label_files == {"label_data_0313.json": 2, "label_data_0531.json": 1,
                                  "label_data_0601.json": 1, "test_label.json": 2}
    assert report.images == 12 and report.linked == 12 and report.copied == report.moved == 0
    assert report.digest.startswith("sha256:") and len(report.digest) == 7 + 64
    for name in (*TRAIN_FILES, "test_label.json", "test_tasks_0627.json"):
        assert (out / name).is_file()
    # train and test clips of the same day are merged under one clips/ tree, hard-linked to the source
    assert (out / "clips/0601/40/20.jpg").read_bytes() == b"clips/0601/40/20.jpg/20.jpg"
    assert (out / "clips/0601/60/1.jpg").stat().st_ino == (download / "test_set/clips/0601/60/1.jpg").stat().st_ino
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["splits"] == report.splits and manifest["digest"] == report.digest
    assert manifest["images"] == 12 and "format" in manifest
    assert [lab.raw_file for lab in read_labels(out / "test_label.json")] == [
        "clips/0530/50_0/20.jpg", "clips/0601/60/20.jpg"]
    assert leftovers(tmp_path) == []


def test_digest_follows_content(download: Path, tmp_path: Path) -> None:
    first = prepare(download, tmp_path / "a").digest
    assert prepare(download, tmp_path / "b").digest == first
    # an unlabelled frame counts by size, a labelled frame by content
    (download / "train_set/clips/0531/30/20.jpg").unlink()
    (download / "train_set/clips/0531/30/20.jpg").write_bytes(b"clips/0531/30/20.jpg/20.jpX")
    assert prepare(download, tmp_path / "c").digest != first


def test_prepare_from_a_merged_root_reproduces_it(download: Path, tmp_path: Path) -> None:
    first = prepare(download, tmp_path / "a")
    again = prepare(tmp_path / "a", tmp_path / "b")
    assert again.layout == "merged" and again.digest == first.digest and again.splits == first.splits


def _zip_dir(directory: Path, archive: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(directory.rglob("*")):
            zf.write(path, prefix + path.relative_to(directory).as_posix())


def test_prepare_from_zip_archives(download: Path, tmp_path: Path) -> None:
    expected = prepare(download, tmp_path / "from_dirs")
    archives = tmp_path / "archives"
    archives.mkdir()
    _zip_dir(download / "train_set", archives / "train_set.zip", prefix="train_set/")  # one folder down
    _zip_dir(download / "test_set", archives / "test_set.zip")  # at the top level
    (archives / "test_label.json").write_bytes((download / "test_label.json").read_bytes())
    report = prepare(archives, tmp_path / "from_zips")
    assert report.layout == "archives" and report.moved == 12 and report.linked == 0
    assert report.digest == expected.digest and report.splits == expected.splits
    assert leftovers(tmp_path) == []


def test_prepare_from_tar_gz_archives(download: Path, tmp_path: Path) -> None:
    expected = prepare(download, tmp_path / "from_dirs")
    archives = tmp_path / "archives"
    archives.mkdir()
    for name in ("train_set", "test_set"):
        with tarfile.open(archives / f"{name}.tar.gz", "w:gz") as tf:
            tf.add(download / name, arcname=".")
    (archives / "test_label.json").write_bytes((download / "test_label.json").read_bytes())
    report = prepare(archives, tmp_path / "from_tars")
    assert report.digest == expected.digest


def test_zip_member_escaping_the_root_is_refused(download: Path, tmp_path: Path) -> None:
    archives = tmp_path / "archives"
    archives.mkdir()
    _zip_dir(download / "train_set", archives / "train_set.zip")
    with zipfile.ZipFile(archives / "train_set.zip", "a") as zf:
        zf.writestr("../../escaped.txt", b"gotcha")
    _zip_dir(download / "test_set", archives / "test_set.zip")
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match=r"train_set.zip: member '\.\./\.\./escaped.txt' escapes"):
        prepare(archives, out)
    assert not out.exists() and leftovers(tmp_path) == []
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path.parent / "escaped.txt").exists()


@pytest.mark.parametrize("kind", ["symlink", "absolute"])
def test_tar_links_and_absolute_members_are_refused(download: Path, tmp_path: Path, kind: str) -> None:
    archives = tmp_path / "archives"
    archives.mkdir()
    with tarfile.open(archives / "train_set.tar.gz", "w:gz") as tf:
        tf.add(download / "train_set", arcname="train_set")
        info = tarfile.TarInfo("train_set/clips/link.jpg" if kind == "symlink" else "/tmp/abs.jpg")
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
        else:
            tf.addfile(info, io.BytesIO(b""))
    _zip_dir(download / "test_set", archives / "test_set.zip")
    with pytest.raises(PrepareError, match="not a regular file" if kind == "symlink" else "escapes"):
        prepare(archives, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_missing_image_names_label_file_and_line_and_leaves_nothing(download: Path, tmp_path: Path) -> None:
    (download / "train_set/clips/0313-2/20/20.jpg").unlink()
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match=r"label_data_0313.json:2: raw_file 'clips/0313-2/20/20.jpg' not found"):
        prepare(download, out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_malformed_label_line_is_reported(download: Path, tmp_path: Path) -> None:
    with open(download / "test_label.json", "a") as f:
        f.write('{"lanes": [[1]], "h_samples": [1, 2], "raw_file": "clips/0601/60/20.jpg"}\n')
    with pytest.raises(PrepareError, match=r"test_label.json:3: lanes\[0\] has 1 points"):
        prepare(download, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_pieces_are_named(download: Path, tmp_path: Path) -> None:
    (download / "train_set/label_data_0531.json").unlink()
    with pytest.raises(PrepareError, match=r"train_set/label_data_0531.json: label file missing"):
        prepare(download, tmp_path / "out")
    with pytest.raises(PrepareError, match=r"test_set/label_data_0313.json: label file missing"):
        prepare(download / "test_set", tmp_path / "out")  # has clips/: taken for a merged root
    (download / "train_set").rename(tmp_path / "elsewhere")
    with pytest.raises(PrepareError, match="not a TuSimple source"):
        prepare(download, tmp_path / "out")
    with pytest.raises(PrepareError, match="not a directory"):
        prepare(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_empty_out_is_refused_unless_overwrite(download: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(download, out)
    (out / "keep.txt").write_text("stale")
    with pytest.raises(PrepareError, match="not empty"):
        prepare(download, out)
    assert (out / "keep.txt").read_text() == "stale"
    prepare(download, out, overwrite=True)  # a prepared root is replaced whole
    assert not (out / "keep.txt").exists() and (out / MANIFEST_NAME).is_file()
    # a failing overwrite keeps the previous root intact
    (download / "train_set/clips/0601/40/20.jpg").unlink()
    with pytest.raises(PrepareError):
        prepare(download, out, overwrite=True)
    assert (out / MANIFEST_NAME).is_file() and leftovers(tmp_path) == []
    with pytest.raises(PrepareError, match="must not be the source, contain it"):
        prepare(download, download.parent, overwrite=True)


def test_prepared_root_feeds_the_dataset(tmp_path: Path, real_lines: list[dict]) -> None:
    torch.set_num_threads(1)
    download = make_download(tmp_path / "download", real_lines, jpeg=_jpeg(0))
    prepare(download, tmp_path / "prepared")
    ds = TuSimpleDataset(tmp_path / "prepared", "test")
    item = ds[1]
    assert item["image"].shape == (3, 288, 512) and ds.labels[1].raw_file == "clips/0601/60/20.jpg"
    assert item["exist"].sum() >= 2


def test_cli_summary_and_exit_code(download: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(lanedet_main, ["prepare", "--src", str(download), "--out", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert "train 3, val 1, test 2" in ok.output and "sha256:" in ok.output
    again = runner.invoke(prepare_command, ["--src", str(download), "--out", str(tmp_path / "out")])
    assert again.exit_code == 2 and "not empty" in again.output
    forced = runner.invoke(prepare_command, ["--src", str(download), "--out", str(tmp_path / "out"), "--overwrite"])
    assert forced.exit_code == 0, forced.output


def test_errors_inside_an_archive_name_archive_and_member(download: Path, tmp_path: Path) -> None:
    with open(download / "train_set/label_data_0601.json", "a") as f:
        f.write("{oops\n")
    archives = tmp_path / "archives"
    archives.mkdir()
    _zip_dir(download / "train_set", archives / "train_set.zip", prefix="train_set/")
    _zip_dir(download / "test_set", archives / "test_set.zip")
    (archives / "test_label.json").write_bytes((download / "test_label.json").read_bytes())
    with pytest.raises(PrepareError, match=r"train_set.zip:train_set/label_data_0601.json:2: invalid JSON"):
        prepare(archives, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ links (issue #11)


def test_a_link_to_a_file_outside_the_source_is_refused_naming_it(download: Path, tmp_path: Path) -> None:
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    link = download / "train_set/clips/0313-1/10/id_rsa"
    link.symlink_to(secret)
    out = tmp_path / "out"
    with pytest.raises(PrepareError, match=rf"^{link}: is a symbolic link; prepare does not follow links"):
        prepare(download, out)
    assert not out.exists() and leftovers(tmp_path) == []
    assert not [p for p in tmp_path.rglob("id_rsa") if p not in (secret, link)]


def test_a_link_loop_is_refused_without_running_away(download: Path, tmp_path: Path) -> None:
    loop = download / "test_set/clips/0601/loop"
    loop.symlink_to("..", target_is_directory=True)
    with pytest.raises(PrepareError, match=rf"^{loop}: is a symbolic link"):
        prepare(download, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("which", ["train_set", "train_set/label_data_0531.json", "test_label.json", "test_set/clips"])
def test_links_among_the_top_level_pieces_are_refused(download: Path, tmp_path: Path, which: str) -> None:
    real = tmp_path / "elsewhere"
    (download / which).rename(real)
    (download / which).symlink_to(real)
    with pytest.raises(PrepareError, match=rf"^{download / which}: is a symbolic link"):
        prepare(download, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_source_itself_may_be_a_link(download: Path, tmp_path: Path) -> None:
    (tmp_path / "src-link").symlink_to(download, target_is_directory=True)
    assert prepare(tmp_path / "src-link", tmp_path / "out").splits == {"train": 3, "val": 1, "test": 2}


# ------------------------------------------------------------------------------------------------ labels (issue #11)


@pytest.mark.parametrize(
    ("file", "raw_file", "reported", "first"),
    [  # label files are read 0313, 0531, 0601, test: the later line is the one reported
        ("test_label.json", "clips/0313-1/10/20.jpg", "test_label.json:3", "train_set/label_data_0313.json:1"),
        ("train_set/label_data_0531.json", "clips/0601/40/20.jpg", "train_set/label_data_0601.json:1",
         "train_set/label_data_0531.json:2"),  # a val frame also in train
        ("train_set/label_data_0313.json", "clips/0313-1/10/20.jpg", "train_set/label_data_0313.json:3",
         "train_set/label_data_0313.json:1"),
    ],
    ids=["train-in-test", "train-in-val", "twice-in-one-file"],
)
def test_a_frame_labelled_twice_is_refused_with_both_places(download: Path, tmp_path: Path, real_lines, file,
                                                            raw_file, reported, first) -> None:
    with open(download / file, "a") as f:
        f.write(json.dumps({**real_lines[0], "raw_file": raw_file}) + "\n")
    with pytest.raises(PrepareError) as info:
        prepare(download, tmp_path / "out")
    assert str(info.value) == (f"{download / reported}: raw_file {raw_file!r} is already labelled at "
                               f"{download / first} (a frame has one label, in one split)")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_coordinates_far_outside_the_frame_are_refused(download: Path, tmp_path: Path, real_lines) -> None:
    bad = {**real_lines[0], "raw_file": "clips/0601/60/1.jpg"}
    bad["lanes"] = [[10**9 if x >= 0 else x for x in lane] for lane in bad["lanes"]]
    with open(download / "test_label.json", "a") as f:
        f.write(json.dumps(bad) + "\n")
    expected = rf"^{download / 'test_label.json'}:3: lanes\[0\]\[\d+\]: Input should be less than 10000"
    with pytest.raises(PrepareError, match=expected):
        prepare(download, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ snapshots (issue #11)


def _snapshots(volume: Path):
    from mlflow_anf.snapshots.local import LocalSnapshotProvider

    del volume
    return LocalSnapshotProvider(LocalSnapshotProvider.Config(fsync=False))


def test_overwrite_keeps_the_snapshots_of_the_previous_root(download: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare(download, out)
    provider = _snapshots(out)
    snap = provider.create(str(out), "run-1-data")
    before = tree_state(out / ".snapshot")
    prepare(download, out, overwrite=True)
    assert tree_state(out / ".snapshot") == before, state_diff(before, tree_state(out / ".snapshot"))
    assert provider.verify(provider.get(str(out), "run-1-data")).ok
    restored = provider.restore(snap, str(tmp_path / "restored"))
    assert (Path(restored) / MANIFEST_NAME).is_file()
    assert leftovers(tmp_path) == []


def test_a_volume_with_only_snapshots_counts_as_empty(download: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    (out / ".snapshot" / "old").mkdir(parents=True)
    prepare(download, out)
    assert (out / ".snapshot" / "old").is_dir() and (out / MANIFEST_NAME).is_file()


def test_overwrite_refuses_a_directory_that_is_not_a_prepared_root(download: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "thesis").mkdir(parents=True)
    (home / "thesis" / "draft.tex").write_text("precious")
    before = tree_state(tmp_path)
    with pytest.raises(PrepareError, match=rf"^{home}: not a prepared root \(no lanedet_dataset.json"):
        prepare(download, home, overwrite=True)
    (home / MANIFEST_NAME).write_text('{"format": "something else"}')  # a marker that is not ours does not count
    with pytest.raises(PrepareError, match="not a prepared root"):
        prepare(download, home, overwrite=True)
    (home / MANIFEST_NAME).unlink()
    assert tree_state(tmp_path) == before, state_diff(before, tree_state(tmp_path))


_CRASH = """
import os, sys
from mlflow_anf_lanedet.data import prepare as p
step = int(sys.argv[3])
real_rename, calls = os.rename, []
def rename(a, b):
    calls.append(1)
    if len(calls) == step:
        os._exit(9)  # killed: no except/finally runs
    real_rename(a, b)
p.os.rename = rename
p.prepare(sys.argv[1], sys.argv[2], overwrite=True)
os._exit(0)
"""


@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_a_prepare_killed_while_publishing_loses_no_snapshot(download: Path, tmp_path: Path, step: int) -> None:
    """Killed at each rename of the publish (old root aside, new root in, snapshots across), then run again."""
    out = tmp_path / "data"
    prepare(download, out)
    provider = _snapshots(out)
    provider.create(str(out), "run-1-data")
    before = tree_state(out / ".snapshot")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", _CRASH, str(download), str(out), str(step)], env=env)
    assert killed.returncode == (9 if step <= 3 else 0)
    report = prepare(download, out, overwrite=True)
    assert (report.recovered != []) == (step <= 3), report.recovered
    assert tree_state(out / ".snapshot") == before, state_diff(before, tree_state(out / ".snapshot"))
    assert provider.verify(provider.get(str(out), "run-1-data")).ok
    assert (out / MANIFEST_NAME).is_file() and leftovers(tmp_path) == []


def test_the_old_root_is_removed_for_an_ordinary_user_too(download: Path, tmp_path: Path) -> None:
    """Snapshot folders are read-only: the old code's rmtree(ignore_errors=True) left `.data.old-*` for non-root."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(download, work / "download", symlinks=True)
    script = (
        "import sys; from mlflow_anf_lanedet.data.prepare import prepare\n"
        "from mlflow_anf.snapshots.local import LocalSnapshotProvider as P\n"
        "src, out = sys.argv[1], sys.argv[2]\n"
        "prepare(src, out); P(P.Config(fsync=False)).create(out, 's1'); prepare(src, out, overwrite=True)\n"
        # what a run killed after publishing leaves: its old root, snapshot s0 (read-only) still inside
        "import os; from pathlib import Path; old = Path(out).parent / '.data.old-0123abcd'\n"
        "(old / '.snapshot' / 's0').mkdir(parents=True); os.chmod(old / '.snapshot' / 's0', 0o555)\n"
        "os.chmod(old / '.snapshot', 0o555); (old / 'clips').mkdir(); os.chmod(old / 'clips', 0o555)\n"
        "prepare(src, out, overwrite=True)\n"
    )

    # root ignores permission bits: drop the capabilities that let it (it then acts like the files' owner)
    as_user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"] if os.geteuid() == 0 else []
    if as_user and shutil.which("setpriv") is None:
        pytest.fail("tests run as root need setpriv (util-linux) to act as an ordinary user")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([*as_user, sys.executable, "-c", script, str(work / "download"), str(work / "data")],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in work.iterdir()) == ["data", "download"]
    assert sorted(p.name for p in (work / "data" / ".snapshot").iterdir()) == ["s0", "s1"]
    assert stat.S_IMODE((work / "data" / ".snapshot" / "s0").stat().st_mode) == 0o555


def test_zip_members_with_permission_bits_only_are_regular_files(download: Path, tmp_path: Path) -> None:
    """zipfile.writestr (and other archivers) store 0o600 without a file type: that is a plain file, not a special."""
    archives = tmp_path / "archives"
    archives.mkdir()
    for name in ("train_set", "test_set"):
        with zipfile.ZipFile(archives / f"{name}.zip", "w") as zf:
            for path in sorted((download / name).rglob("*")):
                if path.is_file():
                    zf.writestr(path.relative_to(download / name).as_posix(), path.read_bytes())
    (archives / "test_label.json").write_bytes((download / "test_label.json").read_bytes())
    with zipfile.ZipFile(archives / "train_set.zip") as zf:
        assert {info.external_attr >> 16 for info in zf.infolist()} == {0o600}
    assert prepare(archives, tmp_path / "out").splits == {"train": 3, "val": 1, "test": 2}


def test_a_restored_root_without_overwrite_says_where_it_came_from(download: Path, tmp_path: Path) -> None:
    """Killed between 'old root aside' and 'new root in': the next run puts the previous root back first."""
    out = tmp_path / "data"
    prepare(download, out)
    (out / ".snapshot" / "s1").mkdir(parents=True)
    aside = tmp_path / ".data.old-0123abcd"
    out.rename(aside)
    with pytest.raises(PrepareError, match=rf"output directory is not empty .*restored from an interrupted prepare: "
                                           rf"{aside}\)"):
        prepare(download, out)
    assert (out / MANIFEST_NAME).is_file() and (out / ".snapshot" / "s1").is_dir() and leftovers(tmp_path) == []


def test_a_live_prepare_s_directories_are_not_taken_for_leftovers(download: Path, tmp_path: Path) -> None:
    import fcntl

    live = tmp_path / ".data.prepare-0123abcd"  # what a prepare still running beside us holds (locked)
    (live / "clips").mkdir(parents=True)
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert prepare(download, tmp_path / "data").recovered == []
        assert (live / "clips").is_dir()
    finally:
        os.close(fd)
    assert prepare(download, tmp_path / "data", overwrite=True).recovered == [str(live)]
    assert leftovers(tmp_path) == []
