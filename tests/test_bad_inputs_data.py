"""Bad-input corpus, data share: `lanedet prepare` sources and outputs, `lanedet eval` prediction / label files.

Every case builds its input under ``tmp_path`` (source, output and their parent all live there), runs the command
line, and checks the three promises of issue #11: exit code 2, a message that names the file:line, the file / link /
archive member or the option at fault, and a file system left exactly as it was (``tree_state`` before and after).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_anf_lanedet.cli import main as lanedet_main
from tests.support.fs_state import state_diff, tree_state

ROWS = list(range(160, 720, 10))  # TuSimple's 56 h_samples
LANE = [-2] * 10 + [400 + 5 * i for i in range(46)]
RIGHT = [-2] * 10 + [800 - 5 * i for i in range(46)]
PLAN = {  # label file (download layout) -> its frames
    "train_set/label_data_0313.json": ["clips/0313-1/10/20.jpg", "clips/0313-2/20/20.jpg"],
    "train_set/label_data_0531.json": ["clips/0531/30/20.jpg"],
    "train_set/label_data_0601.json": ["clips/0601/40/20.jpg"],
    "test_label.json": ["clips/0530/50_0/20.jpg", "clips/0601/60/20.jpg"],
}


def label(raw_file: str, **extra) -> dict:
    return {"lanes": [LANE, RIGHT], "h_samples": ROWS, "raw_file": raw_file, **extra}


def make_download(root: Path) -> Path:
    """A small source in the official layout (frames are a few bytes: prepare does not decode them)."""
    for name, raw_files in PLAN.items():
        set_dir = root / ("test_set" if name == "test_label.json" else "train_set")
        set_dir.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("".join(json.dumps(label(r)) + "\n" for r in raw_files))
        for raw in raw_files:
            (set_dir / raw).parent.mkdir(parents=True, exist_ok=True)
            (set_dir / raw).write_bytes(raw.encode())
    return root


def append_line(path: Path, line: str | bytes) -> int:
    """Append one line to a label file; returns its line number."""
    data = path.read_bytes()
    path.write_bytes(data + (line if isinstance(line, bytes) else line.encode()) + b"\n")
    return data.count(b"\n") + 1


def zip_dir(directory: Path, archive: Path, extra: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(directory.rglob("*")):
            zf.write(path, path.relative_to(directory).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)


def make_archives(tmp: Path, train_extra: dict[str, bytes] | None = None) -> Path:
    download = make_download(tmp / "download-for-archives")
    src = tmp / "src"
    src.mkdir()
    zip_dir(download / "train_set", src / "train_set.zip", train_extra)
    zip_dir(download / "test_set", src / "test_set.zip")
    (src / "test_label.json").write_bytes((download / "test_label.json").read_bytes())
    return src


def tar_with(tmp: Path, member: tarfile.TarInfo, data: bytes | None = None) -> Path:
    """Archives source whose train_set.tar holds the real train set plus ``member``."""
    download = make_download(tmp / "download-for-archives")
    src = tmp / "src"
    src.mkdir()
    with tarfile.open(src / "train_set.tar", "w") as tf:
        tf.add(download / "train_set", arcname=".")
        tf.addfile(member, io.BytesIO(data) if data is not None else None)
    zip_dir(download / "test_set", src / "test_set.zip")
    (src / "test_label.json").write_bytes((download / "test_label.json").read_bytes())
    return src


# --------------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], tuple[list[str], str]]
    """Builds the input under the given directory; returns (command line, text the message must contain)."""


def prep(src: Path, out: Path, *more: str) -> list[str]:
    return ["prepare", "--src", str(src), "--out", str(out), *more]


def bad_label_line(line: str | bytes, what: str, file: str = "train_set/label_data_0531.json") -> Callable:
    def build(tmp: Path) -> tuple[list[str], str]:
        src = make_download(tmp / "src")
        n = append_line(src / file, line)
        return prep(src, tmp / "out"), f"{src / file}:{n}: {what}"

    return build


def with_download(change: Callable[[Path, Path], str], *more: str) -> Callable:
    """A valid download changed by ``change(src, tmp)``, which returns the expected text."""

    def build(tmp: Path) -> tuple[list[str], str]:
        src = make_download(tmp / "src")
        return prep(src, tmp / "out", *more), change(src, tmp)

    return build


def unlink(rel: str, what: str) -> Callable[[Path, Path], str]:
    def change(src: Path, tmp: Path) -> str:
        path = src / rel
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        return what.format(src=src, tmp=tmp)

    return change


def link(rel: str, target: Callable[[Path, Path], Path], *, move: bool = False) -> Callable[[Path, Path], str]:
    """Replace ``rel`` (or add it) by a symbolic link to ``target(src, tmp)``."""

    def change(src: Path, tmp: Path) -> str:
        path = src / rel
        dest = target(src, tmp)
        if move:
            path.rename(dest)
        path.symlink_to(dest)
        return f"{path}: is a symbolic link"

    return change


def secret(src: Path, tmp: Path) -> Path:
    key = tmp / "home" / ".ssh" / "id_rsa"
    key.parent.mkdir(parents=True)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    return key


def out_case(prepare_out: Callable[[Path, Path], tuple[Path, str]], *more: str) -> Callable:
    def build(tmp: Path) -> tuple[list[str], str]:
        src = make_download(tmp / "src")
        out, what = prepare_out(src, tmp)
        return prep(src, out, *more), what

    return build


def not_a_dataset(src: Path, tmp: Path) -> tuple[Path, str]:
    out = tmp / "home"
    (out / "thesis").mkdir(parents=True)
    (out / "thesis" / "draft.tex").write_text("precious")
    return out, f"{out}: not a prepared root"


def foreign_marker(content: str, *, as_link: bool = False) -> Callable[[Path, Path], tuple[Path, str]]:
    def make(src: Path, tmp: Path) -> tuple[Path, str]:
        out = tmp / "data"
        out.mkdir()
        (out / "clips").mkdir()
        if as_link:
            (tmp / "real.json").write_text(content)
            (out / "lanedet_dataset.json").symlink_to(tmp / "real.json")
        else:
            (out / "lanedet_dataset.json").write_text(content)
        return out, f"{out}: not a prepared root"

    return make


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes | None = b"x") -> Callable:
    def build(tmp: Path) -> tuple[list[str], str]:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        if kind == tarfile.REGTYPE and data is not None:
            info.size = len(data)
        src = tar_with(tmp, info, data if kind == tarfile.REGTYPE else None)
        return prep(src, tmp / "out"), f"{src / 'train_set.tar'}: member {name!r}"

    return build


def zip_member(name: str, what: str, data: bytes = b"x", mode: int | None = None) -> Callable:
    def build(tmp: Path) -> tuple[list[str], str]:
        download = make_download(tmp / "download-for-archives")
        src = tmp / "src"
        src.mkdir()
        zip_dir(download / "train_set", src / "train_set.zip")
        with zipfile.ZipFile(src / "train_set.zip", "a") as zf:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
        zip_dir(download / "test_set", src / "test_set.zip")
        (src / "test_label.json").write_bytes((download / "test_label.json").read_bytes())
        return prep(src, tmp / "out"), f"{src / 'train_set.zip'}: member {name!r} {what}"

    return build


def duplicate(file: str, raw_file: str, first: str) -> Callable:
    def build(tmp: Path) -> tuple[list[str], str]:
        src = make_download(tmp / "src")
        append_line(src / file, json.dumps(label(raw_file)))
        return prep(src, tmp / "out"), f"raw_file {raw_file!r} is already labelled at {src / first}"

    return build


def fifo_in_clips(src: Path, tmp: Path) -> str:
    path = src / "train_set/clips/0531/30/pipe"
    os.mkfifo(path)
    return f"{path}: not a regular file or folder"


PREPARE_CASES = [
    # ---- source layouts
    Case("src-missing", lambda t: (prep(t / "nowhere", t / "out"), f"{t / 'nowhere'}: source is not a directory")),
    Case("src-is-a-file", lambda t: _src_file(t)),
    Case("src-empty", lambda t: _src_empty(t)),
    Case("no-test-set", with_download(unlink("test_set", "{src}/test_set/clips: missing"))),
    Case("no-train-clips", with_download(unlink("train_set/clips", "{src}/train_set/clips: missing"))),
    Case("no-0531-labels", with_download(unlink("train_set/label_data_0531.json",
                                                "{src}/train_set/label_data_0531.json: label file missing"))),
    Case("no-test-labels", with_download(unlink("test_label.json", "{src}/test_label.json: label file missing"))),
    Case("labelled-frame-missing", with_download(unlink(
        "train_set/clips/0313-2/20/20.jpg",
        "{src}/train_set/label_data_0313.json:2: raw_file 'clips/0313-2/20/20.jpg' not found"))),
    # ---- bad label lines
    Case("label-invalid-json", bad_label_line('{"lanes": [[1', "invalid JSON")),
    Case("label-not-object", bad_label_line("[1, 2, 3]", "Input should be an object")),
    Case("label-no-raw-file", bad_label_line(json.dumps({"lanes": [], "h_samples": [1]}), "raw_file: Field required")),
    Case("label-no-h-samples", bad_label_line(json.dumps({"lanes": [], "raw_file": "clips/0531/30/20.jpg"}),
                                              "h_samples: Field required")),
    Case("label-empty-h-samples", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", h_samples=[])),
                                                 "h_samples: List should have at least 1 item")),
    Case("label-lane-length", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", lanes=[LANE[1:]])),
                                             "lanes[0] has 55 points but h_samples has 56 rows")),
    Case("label-float-x", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", lanes=[[1.5] * 56])),
                                         "lanes[0][0]")),
    Case("label-string-x", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", lanes=[["7"] * 56])),
                                          "lanes[0][0]")),
    Case("label-bool-x", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", lanes=[[True] * 56])),
                                        "lanes[0][0]")),
    Case("label-huge-x", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", lanes=[[10**9] * 56])),
                                        "lanes[0][0]: Input should be less than 10000")),
    Case("label-huge-negative-x", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", lanes=[[-(10**12)] * 56])),
                                                 "lanes[0][0]: Input should be greater than -10000")),
    Case("label-huge-row", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", h_samples=ROWS[:-1] + [10**9])),
                                          "h_samples: rows must be < 10000")),
    Case("label-rows-decreasing", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", h_samples=ROWS[::-1])),
                                                 "h_samples: rows must be strictly increasing")),
    Case("label-negative-row", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", h_samples=[-10] + ROWS[1:])),
                                              "h_samples: rows must be >= 0")),
    Case("label-raw-file-traversal", bad_label_line(json.dumps(label("../../etc/passwd")),
                                                    "raw_file: must be a relative path")),
    Case("label-raw-file-absolute", bad_label_line(json.dumps(label("/etc/passwd")),
                                                   "raw_file: must be a relative path")),
    Case("label-raw-file-unknown", bad_label_line(json.dumps(label("clips/none/1/20.jpg")),
                                                  "raw_file 'clips/none/1/20.jpg' not found in the clips")),
    Case("label-negative-run-time", bad_label_line(json.dumps(label("clips/0531/30/20.jpg", run_time=-1)),
                                                   "run_time")),
    Case("label-invalid-utf8", bad_label_line(b'{"raw_file": "\xff\xfe", "lanes": [], "h_samples": [1]}',
                                              "invalid JSON")),
    Case("label-deep-nesting", bad_label_line('{"raw_file": "a", "h_samples": [1], "lanes": '
                                              + "[" * 100_000 + "]" * 100_000 + "}", "invalid JSON")),
    Case("label-test-file", bad_label_line("{oops", "invalid JSON", file="test_label.json")),
    # ---- a frame labelled twice
    Case("dup-train-in-test", duplicate("test_label.json", "clips/0313-1/10/20.jpg",
                                        "train_set/label_data_0313.json:1")),
    Case("dup-val-in-train", duplicate("train_set/label_data_0531.json", "clips/0601/40/20.jpg",
                                       "train_set/label_data_0531.json:2")),
    Case("dup-in-one-file", duplicate("train_set/label_data_0313.json", "clips/0313-2/20/20.jpg",
                                      "train_set/label_data_0313.json:2")),
    # ---- links and special files in the source
    Case("link-to-secret", with_download(link("train_set/clips/0313-1/10/id_rsa", secret))),
    Case("link-loop", with_download(link("test_set/clips/0601/loop", lambda s, t: Path("..")))),
    Case("link-dangling", with_download(link("train_set/clips/0531/30/1.jpg", lambda s, t: t / "gone.jpg"))),
    Case("link-frame-outside", with_download(link("train_set/clips/0531/30/20.jpg", lambda s, t: t / "moved.jpg",
                                                  move=True))),
    Case("link-label-file", with_download(link("train_set/label_data_0601.json", lambda s, t: t / "l.json",
                                               move=True))),
    Case("link-test-labels", with_download(link("test_label.json", lambda s, t: t / "tl.json", move=True))),
    Case("link-set-folder", with_download(link("train_set", lambda s, t: t / "elsewhere", move=True))),
    Case("link-clips-folder", with_download(link("test_set/clips", lambda s, t: t / "clips-elsewhere", move=True))),
    Case("fifo-in-clips", with_download(fifo_in_clips)),
    # ---- archives
    Case("zip-traversal", zip_member("../../escaped.txt", "escapes the archive root")),
    Case("zip-absolute", zip_member("/tmp/abs.txt", "escapes the archive root")),
    Case("zip-drive-letter", zip_member("C:/evil.txt", "escapes the archive root")),
    Case("zip-backslash-traversal", zip_member("..\\..\\evil.txt", "escapes the archive root")),
    Case("zip-symlink", zip_member("clips/link.jpg", "is not a regular file", b"/etc/passwd",
                                   mode=stat.S_IFLNK | 0o777)),
    Case("zip-duplicate-member", lambda t: _zip_duplicate(t)),
    Case("tar-traversal", tar_member("../escaped.txt")),
    Case("tar-symlink", tar_member("clips/link.jpg", tarfile.SYMTYPE, "/etc/passwd")),
    Case("tar-hardlink", tar_member("clips/hard.jpg", tarfile.LNKTYPE, "/etc/passwd")),
    Case("tar-device", tar_member("clips/dev", tarfile.CHRTYPE)),
    Case("tar-fifo", tar_member("clips/fifo", tarfile.FIFOTYPE)),
    Case("archive-corrupt", lambda t: _corrupt_archive(t)),
    Case("archive-no-clips", lambda t: _archive_without_clips(t)),
    Case("archive-test-set-missing", lambda t: _archive_test_set_missing(t)),
    Case("archive-is-a-link", lambda t: _archive_link(t)),
    # ---- outputs
    Case("out-not-a-dataset", out_case(not_a_dataset, "--overwrite")),
    Case("out-not-empty", out_case(lambda s, t: _non_empty(t))),
    Case("out-foreign-marker", out_case(foreign_marker('{"format": "other/1"}'), "--overwrite")),
    Case("out-marker-not-json", out_case(foreign_marker("not json"), "--overwrite")),
    Case("out-marker-is-a-link", out_case(foreign_marker('{"format": "lanedet-tusimple/1"}', as_link=True),
                                          "--overwrite")),
    Case("out-is-a-file", out_case(lambda s, t: _out_file(t))),
    Case("out-is-a-link", out_case(lambda s, t: _out_link(t))),
    Case("out-is-src", out_case(lambda s, t: (s, f"{s}: output must not be the source"), "--overwrite")),
    Case("out-inside-src", out_case(lambda s, t: (s / "prepared", f"{s / 'prepared'}: output must not be the source"))),
    Case("out-parent-missing", lambda t: _out_parent_missing(t)),
    Case("out-contains-src", out_case(lambda s, t: (t, f"{t}: output must not be the source"), "--overwrite")),
]


def _src_file(tmp: Path) -> tuple[list[str], str]:
    (tmp / "f").write_text("x")
    return prep(tmp / "f", tmp / "out"), "'--src'"


def _src_empty(tmp: Path) -> tuple[list[str], str]:
    (tmp / "src").mkdir()
    return prep(tmp / "src", tmp / "out"), f"{tmp / 'src'}: not a TuSimple source"


def _out_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "f").write_text("x")
    return tmp / "f", f"{tmp / 'f'}: output exists and is not a directory"


def _pred_folder(tmp: Path) -> tuple[list[str], str]:
    (tmp / "preds").mkdir()
    return ["eval", str(tmp / "preds"), str(tmp / "preds")], "'PRED_JSON'"


def _zip_duplicate(tmp: Path) -> tuple[list[str], str]:
    download = make_download(tmp / "download-for-archives")
    src = tmp / "src"
    src.mkdir()
    zip_dir(download / "train_set", src / "train_set.zip")
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(src / "train_set.zip", "a") as zf:
        zf.writestr("label_data_0313.json", b"{}")
    zip_dir(download / "test_set", src / "test_set.zip")
    (src / "test_label.json").write_bytes((download / "test_label.json").read_bytes())
    return prep(src, tmp / "out"), f"{src / 'train_set.zip'}: member "


def _corrupt_archive(tmp: Path) -> tuple[list[str], str]:
    src = make_archives(tmp)
    (src / "train_set.zip").write_bytes(b"PK\x03\x04 not really a zip")
    return prep(src, tmp / "out"), f"{src / 'train_set.zip'}: cannot read archive"


def _archive_without_clips(tmp: Path) -> tuple[list[str], str]:
    src = tmp / "src"
    src.mkdir()
    with zipfile.ZipFile(src / "train_set.zip", "w") as zf:
        zf.writestr("readme.txt", b"no clips here")
    with zipfile.ZipFile(src / "test_set.zip", "w") as zf:
        zf.writestr("clips/a/1/20.jpg", b"x")
    return prep(src, tmp / "out"), f"{src / 'train_set.zip'}: expected one clips/ folder"


def _archive_test_set_missing(tmp: Path) -> tuple[list[str], str]:
    src = make_archives(tmp)
    (src / "test_set.zip").unlink()
    return prep(src, tmp / "out"), f"{src / 'test_set.zip'}: missing"


def _archive_link(tmp: Path) -> tuple[list[str], str]:
    src = make_archives(tmp)
    (src / "train_set.zip").rename(tmp / "train_set.zip")
    (src / "train_set.zip").symlink_to(tmp / "train_set.zip")
    return prep(src, tmp / "out"), f"{src / 'train_set.zip'}: is a symbolic link"


def _non_empty(tmp: Path) -> tuple[Path, str]:
    out = tmp / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    return out, f"{out}: output directory is not empty"


def _out_parent_missing(tmp: Path) -> tuple[list[str], str]:
    """A label error found after the output's missing parents were made: they go again."""
    src = make_download(tmp / "src")
    n = append_line(src / "test_label.json", "{oops")
    return prep(src, tmp / "new" / "deeper" / "out"), f"{src / 'test_label.json'}:{n}: invalid JSON"


def _out_link(tmp: Path) -> tuple[Path, str]:
    (tmp / "real-out").mkdir()
    (tmp / "data").symlink_to(tmp / "real-out")
    return tmp / "data", f"{tmp / 'data'}: output exists and is not a directory"


# --------------------------------------------------------------------------------------------------- eval cases


def pred(raw_file: str, **extra) -> dict:
    return {"raw_file": raw_file, "lanes": [LANE], "run_time": 10, **extra}


def gt(raw_file: str, **extra) -> dict:
    return {"raw_file": raw_file, "lanes": [LANE], "h_samples": ROWS, **extra}


def write_lines(path: Path, lines: list) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode())
                              + b"\n" for x in lines))
    return path


def eval_case(pred_lines: list, gt_lines: list, where: str, what: str) -> Callable:
    """``where`` is ``pred.json:<line>`` or ``gt.json:<line>``."""

    def build(tmp: Path) -> tuple[list[str], str]:
        p = write_lines(tmp / "pred.json", pred_lines)
        g = write_lines(tmp / "gt.json", gt_lines)
        return ["eval", str(p), str(g)], f"{tmp / where}: {what}"

    return build


DEEP = "[" * 100_000 + "]" * 100_000
A, B = "clips/a/1/20.jpg", "clips/b/1/20.jpg"

EVAL_CASES = [
    Case("eval-invalid-json", eval_case([pred(A), "{oops"], [gt(A), gt(B)], "pred.json:2", "invalid JSON")),
    Case("eval-invalid-utf8", eval_case([b'{"raw_file": "\xff"}'], [gt(A)], "pred.json:1", "invalid JSON")),
    Case("eval-run-time-true", eval_case([pred(A, run_time=True)], [gt(A)], "pred.json:1", "'run_time' must be")),
    Case("eval-run-time-negative", eval_case([pred(A, run_time=-5)], [gt(A)], "pred.json:1", "'run_time' must be")),
    Case("eval-run-time-string", eval_case([pred(A, run_time="9")], [gt(A)], "pred.json:1", "'run_time' must be")),
    Case("eval-run-time-nan", eval_case(['{"raw_file": "%s", "lanes": [], "run_time": NaN}' % A], [gt(A)],
                                        "pred.json:1", "'run_time' must be")),
    Case("eval-no-run-time", eval_case([{"raw_file": A, "lanes": []}], [gt(A)], "pred.json:1",
                                       "missing key(s) 'run_time'")),
    Case("eval-bool-x", eval_case([pred(A, lanes=[[False] * 56])], [gt(A)], "pred.json:1",
                                  "predicted lane 0 must contain finite numbers only, got False")),
    Case("eval-infinite-x", eval_case(['{"raw_file": "%s", "lanes": [[Infinity]], "run_time": 1}' % A],
                                      [gt(A, h_samples=[1], lanes=[[1]])], "pred.json:1",
                                      "predicted lane 0 must contain finite numbers only")),
    Case("eval-int-too-large", eval_case(['{"raw_file": "%s", "lanes": [[1%s]], "run_time": 1}' % (A, "0" * 400)],
                                         [gt(A, h_samples=[1], lanes=[[1]])], "pred.json:1",
                                      "predicted lane 0 must contain finite numbers only")),
    Case("eval-lanes-not-list", eval_case([pred(A, lanes="left")], [gt(A)], "pred.json:1", "'lanes' must be a list")),
    Case("eval-lane-length", eval_case([pred(A, lanes=[LANE[1:]])], [gt(A)], "pred.json:1",
                                       "predicted lane 0 has 55 values")),
    Case("eval-deep-pred", eval_case(['{"raw_file": "a", "run_time": 1, "lanes": %s}' % DEEP], [gt(A)],
                                     "pred.json:1", "invalid JSON (nested too deeply)")),
    Case("eval-deep-gt", eval_case([pred(A)], [gt(A), '{"raw_file": "b", "lanes": %s}' % DEEP], "gt.json:2",
                                   "invalid JSON (nested too deeply)")),
    Case("eval-unknown-frame", eval_case([pred(B)], [gt(A)], "pred.json:1", f"raw_file {B!r} is not in the ground")),
    Case("eval-duplicate-pred", eval_case([pred(A), pred(A)], [gt(A), gt(B)], "pred.json:2", "duplicate prediction")),
    Case("eval-missing-pred", eval_case([pred(A)], [gt(A), gt(B)], "gt.json:2", f"no prediction for raw_file {B!r}")),
    Case("eval-gt-duplicate", eval_case([pred(A)], [gt(A), gt(A)], "gt.json:2", "duplicate raw_file")),
    Case("eval-gt-bool-row", eval_case([pred(A)], [gt(A, h_samples=[True] + ROWS[1:])], "gt.json:1",
                                       "'h_samples' must contain finite numbers only")),
    Case("eval-gt-no-h-samples", eval_case([pred(A)], [{"raw_file": A, "lanes": []}], "gt.json:1",
                                           "missing key(s) 'h_samples'")),
    Case("eval-gt-not-object", eval_case([pred(A)], ["[1, 2]"], "gt.json:1", "expected a JSON object")),
    Case("eval-gt-raw-file-number", eval_case([pred(A)], [gt(7)], "gt.json:1", "'raw_file' must be a string")),
    Case("eval-pred-file-missing", lambda t: (["eval", str(t / "none.json"), str(write_lines(t / "gt.json", [gt(A)]))],
                                              f"{t / 'none.json'}: cannot read")),
    Case("eval-pred-is-a-folder", lambda t: _pred_folder(t)),
]

CASES = PREPARE_CASES + EVAL_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_names_the_place_and_changes_nothing(tmp_path: Path, case: Case) -> None:
    args, expected = case.build(tmp_path)
    before = tree_state(tmp_path)
    result = CliRunner().invoke(lanedet_main, args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert expected in result.output, result.output
    after = tree_state(tmp_path)
    assert after == before, state_diff(before, after)


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)
