"""Turn a TuSimple download into a *prepared root* that
:class:`~mlflow_anf_lanedet.data.tusimple.TuSimpleDataset` reads.

Accepted sources (``src`` is a directory):

* **download** – the official layout: ``train_set/{clips/, label_data_0313.json, label_data_0531.json,
  label_data_0601.json}``, ``test_set/{clips/, test_tasks_0627.json}``, ``test_label.json``;
* **merged** – an already merged root: ``clips/``, the three ``label_data_*.json`` and ``test_label.json``;
* **archives** – ``train_set.zip``, ``test_set.zip`` (or ``.tar.gz`` / ``.tgz`` / ``.tar``) and ``test_label.json``.

The prepared root holds ``clips/`` (train and test clips merged), the four label files, ``test_tasks_0627.json`` when
the source has it, and ``lanedet_dataset.json`` (labelled frames per split and a content digest). It is built in a
temporary directory next to ``out`` and renamed into place at the end, so a failure leaves nothing at ``out``.
Images are hard-linked from a directory source when the file system allows it (copied otherwise) and moved out of
the extracted archives. Every label line is validated, every labelled ``raw_file`` must exist and be labelled once
(a frame in two label files would sit in two splits, e.g. train and test).

Symbolic links in the source are refused, naming the link: prepare never follows a link, so nothing outside the
source can be pulled into the dataset, and a link loop cannot run away. (``src`` itself may be a link.)

``out`` may be missing, empty, or (with ``overwrite``) a prepared root, recognised by its ``lanedet_dataset.json``;
any other directory is refused. ``out/.snapshot`` survives a re-prepare, and what a killed prepare left is recovered
by the next one (``PrepareReport.recovered``): see :mod:`.publish`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Literal, NamedTuple

import click
from pydantic import BaseModel, ConfigDict

from mlflow_anf.progress import SILENT, Progress, Step, for_cli, quiet_option
from mlflow_anf_lanedet.data.errors import PrepareError
from mlflow_anf_lanedet.data.publish import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SNAPSHOT_DIR,
    _is_prepared_root,
    _lock,
    _publish,
    _recover,
)
from mlflow_anf_lanedet.data.tusimple import SPLIT_FILES, DataError, LabelError, iter_labels

__all__ = ["MANIFEST_NAME", "PrepareError", "PrepareReport", "prepare", "prepare_command"]

TRAIN_LABEL_FILES = ("label_data_0313.json", "label_data_0531.json", "label_data_0601.json")
TEST_LABEL_FILE = "test_label.json"
TEST_TASKS_FILE = "test_tasks_0627.json"
"""Where the local snapshot provider keeps a volume's snapshots (``mlflow_anf.snapshots.local``): kept across a
re-prepare, never part of the dataset."""
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")

Layout = Literal["download", "merged", "archives"]




class PrepareReport(BaseModel):
    """What :func:`prepare` wrote."""

    model_config = ConfigDict(frozen=True)

    out: str
    layout: Layout
    splits: dict[str, int]
    """Labelled frames per split (train, val, test)."""
    label_files: dict[str, int]
    """Labelled frames per label file."""
    images: int
    """Files under ``clips/`` (all frames of every clip, labelled or not)."""
    linked: int
    copied: int
    moved: int
    digest: str
    """``sha256:<hex>`` over the label files and labelled images (contents) and the other clip files (path, size)."""
    recovered: list[str] = []
    """What an interrupted earlier prepare of ``out`` had left beside it and this run cleaned up (snapshots moved
    back into ``out/.snapshot``, the rest removed)."""


class _SetRoot(NamedTuple):
    """A directory with ``clips/`` to merge; ``move`` when it is our own extraction (else link/copy)."""

    path: Path
    display: str
    move: bool


def prepare(src: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool = False,
            progress: Progress = SILENT) -> PrepareReport:
    """Build the prepared root ``out`` from ``src`` (see the module docstring); raises :class:`PrepareError`.
    *progress* shows each step (unpacking, clips, labels, digest) while it runs."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise PrepareError(f"{src}: source is not a directory (give --src the folder of the TuSimple download: "
                           "train_set/, test_set/ and test_label.json, or their .zip files)")
    _check_out(src, out, overwrite)
    layout = _detect_layout(src)
    recovered = _recover(out)
    if recovered:
        try:
            _check_out(src, out, overwrite)  # a restored previous root is checked like any other
        except PrepareError as exc:
            raise PrepareError(f"{exc} (restored from an interrupted prepare: {', '.join(recovered)})") from None
    made = [d for d in (out.parent, *out.parent.parents) if not os.path.lexists(d)]  # removed again on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.prepare-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    lock = _lock(tmp)  # held until the end: _recover never takes a live run's directory for a leftover
    if lock is None:  # nobody else knows this fresh random name
        raise PrepareError(f"{tmp}: locked by another process")
    try:
        with progress.step(f"read {src} ({layout} layout)"):
            sets, label_sources = _collect(src, layout, tmp)
        counts = {"linked": 0, "copied": 0, "moved": 0}
        with progress.step("clips") as step:
            for set_root in sets:
                _merge_clips(set_root, tmp / "clips", counts, step)
        with progress.step("check labels"):
            label_counts, labelled = _write_labels(label_sources, tmp)
        images = sum(counts.values())
        shutil.rmtree(tmp / ".extract", ignore_errors=True)
        splits = {split: sum(label_counts[name] for name in names) for split, names in SPLIT_FILES.items()}
        with progress.step("digest"):
            digest = _digest(tmp, labelled)
        manifest = {
            "format": MANIFEST_FORMAT,
            "splits": splits,
            "label_files": label_counts,
            "images": images,
            "digest": digest,
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _publish(tmp, out)
    except BaseException:
        if tmp.is_dir():  # _publish renames it to out; it never holds the snapshots
            shutil.rmtree(tmp, ignore_errors=True)
        for d in made:  # deepest first; only while empty (out may already be published)
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    finally:
        os.close(lock)
    return PrepareReport(
        out=str(out), layout=layout, splits=splits, label_files=label_counts, images=images, digest=digest,
        recovered=recovered, **counts
    )


# --------------------------------------------------------------------------------------------------------------------
# source layouts


def _check_out(src: Path, out: Path, overwrite: bool) -> None:
    """``out`` is missing, empty (but for ``.snapshot``), or with ``overwrite`` a prepared root; apart from ``src``."""
    src_r, out_r = src.resolve(), out.resolve()
    if src_r == out_r or out_r in src_r.parents or src_r in out_r.parents:
        raise PrepareError(f"{out}: output must not be the source, contain it or lie inside it ({src})")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise PrepareError(f"{out}: output exists and is not a directory")
        if any(p.name != SNAPSHOT_DIR for p in out.iterdir()):
            if not overwrite:
                raise PrepareError(f"{out}: output directory is not empty (use --overwrite to replace a prepared root)")
            if not _is_prepared_root(out):
                raise PrepareError(
                    f"{out}: not a prepared root (no {MANIFEST_NAME} from lanedet prepare): --overwrite only replaces "
                    f"a prepared root; move or empty this directory yourself"
                )


def _kind(path: Path) -> Literal["dir", "file"] | None:
    """``"dir"``, ``"file"`` or ``None`` (missing) for a path in the source, which is never followed if a link."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PrepareError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISLNK(mode):
        raise PrepareError(f"{path}: is a symbolic link; prepare does not follow links (put the file or folder itself "
                           f"in the source)")
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    raise PrepareError(f"{path}: not a regular file or folder")


def _find_archive(src: Path, stem: str) -> Path | None:
    for suffix in ARCHIVE_SUFFIXES:
        if _kind(src / f"{stem}{suffix}") == "file":
            return src / f"{stem}{suffix}"
    return None


def _detect_layout(src: Path) -> Layout:
    if _kind(src / "train_set") == "dir":
        return "download"
    if _kind(src / "clips") == "dir":
        return "merged"
    if _find_archive(src, "train_set") is not None:
        return "archives"
    raise PrepareError(
        f"{src}: not a TuSimple source: expected train_set/ and test_set/ (official download), clips/ (merged root) "
        f"or train_set.zip and test_set.zip (archives)"
    )


def _collect(src: Path, layout: Layout, tmp: Path) -> tuple[list[_SetRoot], dict[str, tuple[Path, str]]]:
    """The clip directories to merge and, per label file name, (path to read, name for errors)."""
    if layout == "merged":
        sets = [_SetRoot(src, str(src), move=False)]
        train_dir = test_dir = src
    elif layout == "download":
        train_dir, test_dir = src / "train_set", src / "test_set"
        for d in (train_dir, test_dir):
            if _kind(d) != "dir" or _kind(d / "clips") != "dir":
                raise PrepareError(f"{d / 'clips'}: missing (official layout needs train_set/clips and test_set/clips)")
        sets = [_SetRoot(d, str(d), move=False) for d in (train_dir, test_dir)]
    else:
        sets = []
        for stem in ("train_set", "test_set"):
            archive = _find_archive(src, stem)
            if archive is None:
                raise PrepareError(f"{src / (stem + '.zip')}: missing (also looked for .tar.gz, .tgz, .tar)")
            dest = tmp / ".extract" / stem
            _extract(archive, dest)
            sets.append(_SetRoot(_set_root(dest, archive), str(archive), move=True))
        train_dir, test_dir = sets[0].path, sets[1].path

    def pick(name: str, *dirs: Path) -> tuple[Path, str]:
        for d in dirs:
            if _kind(d / name) == "file":
                return d / name, _display(d / name, tmp, sets)
        raise PrepareError(f"{dirs[0] / name}: label file missing")

    labels = {name: pick(name, train_dir) for name in TRAIN_LABEL_FILES}
    labels[TEST_LABEL_FILE] = pick(TEST_LABEL_FILE, src, test_dir)
    tasks = [d / TEST_TASKS_FILE for d in (test_dir, src) if _kind(d / TEST_TASKS_FILE) == "file"]
    if tasks:
        labels[TEST_TASKS_FILE] = (tasks[0], _display(tasks[0], tmp, sets))
    return sets, labels


def _display(path: Path, tmp: Path, sets: list[_SetRoot]) -> str:
    """Name a file for error messages: extracted files are named ``<archive>:<member>``."""
    for s in sets:
        if s.move and path.is_relative_to(s.path):
            return f"{s.display}:{path.relative_to(tmp / '.extract').as_posix().split('/', 1)[1]}"
    return str(path)


def _set_root(dest: Path, archive: Path) -> Path:
    """The directory holding ``clips/`` inside an extracted archive: its top level or one folder down."""
    if (dest / "clips").is_dir():
        return dest
    candidates = sorted(p for p in dest.iterdir() if p.is_dir() and (p / "clips").is_dir()) if dest.is_dir() else []
    if len(candidates) != 1:
        raise PrepareError(f"{archive}: expected one clips/ folder at the top level or one folder down")
    return candidates[0]


# --------------------------------------------------------------------------------------------------------------------
# archives


def _safe_member(archive: Path, name: str) -> PurePosixPath:
    """Reject member names that would land outside the extraction directory."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise PrepareError(f"{archive}: member {name!r} escapes the archive root (absolute path or '..')")
    return path


def _extract(archive: Path, dest: Path) -> None:
    """Extract regular files and folders only; links, devices and traversal are refused with the member's name."""
    dest.mkdir(parents=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    rel = _safe_member(archive, info.filename)
                    mode = info.external_attr >> 16  # Unix mode when the archiver stored one
                    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # bits only: a file
                        raise PrepareError(f"{archive}: member {info.filename!r} is not a regular file or folder")
                    target = dest / rel
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as fin, open(target, "xb") as fout:
                        shutil.copyfileobj(fin, fout, 1 << 20)
        else:
            with tarfile.open(archive, mode="r|*") as tf:  # stream: one pass over a compressed archive
                for member in tf:
                    rel = _safe_member(archive, member.name)
                    target = dest / rel
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                    elif member.isreg():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        fin = tf.extractfile(member)
                        assert fin is not None  # a regular member always has data
                        with fin, open(target, "xb") as fout:
                            shutil.copyfileobj(fin, fout, 1 << 20)
                    else:
                        raise PrepareError(f"{archive}: member {member.name!r} is not a regular file or folder")
    except FileExistsError as exc:
        raise PrepareError(f"{archive}: member {exc.filename} appears twice") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise PrepareError(f"{archive}: cannot read archive: {exc}") from None


# --------------------------------------------------------------------------------------------------------------------
# clips and labels


def _walk_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (depth first, sorted); a link or special file is refused, naming it: never
    followed, so nothing outside ``root`` is reached and a link loop cannot run away."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise PrepareError(f"{folder}: cannot list: {exc.strerror or exc}") from None
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                _kind(path)  # raises, naming the link
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(path)
            elif entry.is_file(follow_symlinks=False):
                yield path
            else:
                _kind(path)  # raises for a socket, FIFO or device (a file that vanished meanwhile is skipped)
        stack.extend(reversed(subdirs))


def _same_file(a: Path, b: Path) -> bool:
    sa, sb = a.stat(), b.stat()
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    if sa.st_size != sb.st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def _merge_clips(set_root: _SetRoot, dest_clips: Path, counts: dict[str, int], step: Step) -> None:
    src_clips = set_root.path / "clips"
    for path in _walk_files(src_clips):
        step.advance()
        rel = path.relative_to(src_clips)
        target = dest_clips / rel
        if target.exists():
            if not _same_file(path, target):
                raise PrepareError(f"{set_root.display}: clips/{rel.as_posix()} differs from a file of the same name")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if set_root.move:
            os.replace(path, target)
            counts["moved"] += 1
            continue
        try:
            os.link(path, target)
            counts["linked"] += 1
        except OSError:  # other file system, or links not permitted: copy
            shutil.copy2(path, target)
            counts["copied"] += 1


def _write_labels(sources: dict[str, tuple[Path, str]], tmp: Path) -> tuple[dict[str, int], set[str]]:
    """Validate each label file (lines, and that each raw_file exists) and copy it into ``tmp``."""
    counts: dict[str, int] = {}
    labelled: set[str] = set()
    first_at: dict[str, str] = {}  # raw_file -> "<file>:<line>" of its label
    for name, (path, display) in sources.items():
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PrepareError(f"{display}: cannot read: {exc.strerror or exc}") from None
        if name == TEST_TASKS_FILE:
            (tmp / name).write_bytes(data)
            continue
        n = 0
        try:
            for lineno, label in iter_labels(data, display):
                if not (tmp / label.raw_file).is_file():
                    raise PrepareError(f"{display}:{lineno}: raw_file {label.raw_file!r} not found in the clips")
                first = first_at.setdefault(label.raw_file, f"{display}:{lineno}")
                if first != f"{display}:{lineno}":
                    raise PrepareError(
                        f"{display}:{lineno}: raw_file {label.raw_file!r} is already labelled at {first} "
                        f"(a frame has one label, in one split)"
                    )
                labelled.add(label.raw_file)
                n += 1
        except LabelError as exc:
            raise PrepareError(str(exc)) from None
        (tmp / name).write_bytes(data)
        counts[name] = n
    return counts, labelled


def _digest(root: Path, labelled: set[str]) -> str:
    """Content digest of a prepared root (the manifest excluded); see :attr:`PrepareReport.digest`."""
    entries: list[tuple[str, str]] = []
    for name in sorted(p.name for p in root.iterdir() if p.is_file() and p.name != MANIFEST_NAME):
        entries.append((name, _sha256(root / name)))
    clips = root / "clips"
    if clips.is_dir():
        for path in _walk_files(clips):
            rel = path.relative_to(root).as_posix()
            entries.append((rel, _sha256(path) if rel in labelled else f"size={path.stat().st_size}"))
    h = hashlib.sha256()
    for rel, value in sorted(entries):
        h.update(f"{rel}\t{value}\n".encode())
    return f"sha256:{h.hexdigest()}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# command line


class _Failed(click.ClickException):
    exit_code = 2


@click.command("prepare")
@click.option(
    "--src",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Official download folder, merged root, or folder with train_set.zip/test_set.zip/test_label.json.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Prepared root to write.")
@click.option(
    "--overwrite", is_flag=True, help="Replace --out when it is a prepared root (its .snapshot folder is kept)."
)
@quiet_option
def prepare_command(src: Path, out: Path, overwrite: bool, quiet: bool) -> None:
    """Unpack/validate a TuSimple download into a prepared root."""
    try:
        report = prepare(src, out, overwrite=overwrite, progress=for_cli(quiet))
    except DataError as exc:
        raise _Failed(str(exc)) from None
    for path in report.recovered:
        click.echo(f"cleaned up after an interrupted prepare: {path}")
    splits = ", ".join(f"{k} {v}" for k, v in report.splits.items())
    click.echo(f"prepared {report.out} from {report.layout} layout: {splits} labelled frames")
    click.echo(
        f"clips: {report.images} files ({report.linked} linked, {report.copied} copied, {report.moved} moved); "
        f"digest {report.digest}"
    )
