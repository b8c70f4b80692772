"""Publishing a prepared root atomically, and recovering what an interrupted prepare left behind.

``out/.snapshot`` (the local snapshot provider's snapshots of the volume) is not the dataset's: it survives a
re-prepare, moved from the old root to the new one by ``rename``. Each step (old root renamed aside, new root renamed
in, ``.snapshot`` renamed across, old root removed) leaves the snapshots whole somewhere; a run killed in between
leaves them in ``.<out>.old-<random>/``, and :func:`recover` moves them back (see :mod:`.prepare`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from mlflow_anf_lanedet.data.errors import PrepareError

MANIFEST_NAME = "lanedet_dataset.json"
MANIFEST_FORMAT = "lanedet-tusimple/1"
SNAPSHOT_DIR = ".snapshot"


def _is_prepared_root(path: Path) -> bool:
    """``path`` holds the manifest that :func:`prepare` writes (a regular file, of our format)."""
    manifest = path / MANIFEST_NAME
    if manifest.is_symlink() or not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_bytes()[: 1 << 20])
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT




def _leftover_re(out: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(out.name)}\.(old|prepare)-[0-9a-f]{{8}}")


def _lock(path: Path) -> int | None:
    """An fd holding an exclusive ``flock`` on directory ``path``; None when another process holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _publish(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` (already checked: empty but for ``.snapshot``, or a prepared
    root with overwrite) is replaced, and its ``.snapshot`` moves into the new root.

    Order: ``out`` → ``.<out>.old-<random>`` (locked, so a concurrent :func:`_recover` leaves it alone), ``tmp`` →
    ``out``, ``old/.snapshot`` → ``out/.snapshot``, remove ``old``. Every step is one rename, so the snapshots are
    always whole in ``out`` or in ``old``; :func:`_recover` finishes the job after a crash.
    """
    if not os.path.lexists(out):
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    lock = _lock(out)
    if lock is None:
        raise PrepareError(f"{out}: another lanedet prepare is replacing it right now")
    try:
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        _move_snapshots(old, out)
    finally:
        os.close(lock)
    _remove_tree(old)


def _move_snapshots(old: Path, out: Path) -> None:
    """Move ``old/.snapshot`` into ``out`` (whole, or snapshot by snapshot when ``out`` already has some)."""
    src = old / SNAPSHOT_DIR
    if not os.path.lexists(src):
        return
    dst = out / SNAPSHOT_DIR
    try:
        if not os.path.lexists(dst):
            _rename_dir(src, dst)
            return
        clash = sorted(p.name for p in src.iterdir() if os.path.lexists(dst / p.name))
        if clash:
            raise PrepareError(
                f"{src}: snapshot(s) {', '.join(clash)} also exist in {dst}; left in place, move them yourself"
            )
        with _owner_writable(src), _owner_writable(dst):  # entries leave one folder and enter the other
            for child in sorted(src.iterdir()):
                _rename_dir(child, dst / child.name)
        src.rmdir()
    except OSError as exc:
        raise PrepareError(f"{src}: cannot move the snapshots to {dst}: {exc.strerror or exc}; they stay in "
                           f"{old}") from None


@contextlib.contextmanager
def _owner_writable(folder: Path) -> Iterator[None]:
    """Lend ``folder`` its owner write bit (a snapshot folder is read-only) and put its mode back after."""
    mode = stat.S_IMODE(folder.lstat().st_mode)
    if mode & stat.S_IWUSR:
        yield
        return
    os.chmod(folder, mode | stat.S_IWUSR)
    try:
        yield
    finally:
        os.chmod(folder, mode)


def _rename_dir(src: Path, dst: Path) -> None:
    """``rename``, also for a read-only folder (snapshots are): moving a folder to another parent rewrites its
    ``..`` entry, which needs its write bit, so that bit is lent for the rename and its mode put back after."""
    mode = src.lstat().st_mode
    if not stat.S_ISDIR(mode) or mode & stat.S_IWUSR:
        os.rename(src, dst)
        return
    os.chmod(src, stat.S_IMODE(mode) | stat.S_IWUSR)
    try:
        os.rename(src, dst)
    except BaseException:
        os.chmod(src, stat.S_IMODE(mode))
        raise
    os.chmod(dst, stat.S_IMODE(mode))


def _remove_tree(path: Path) -> None:
    """Remove ``path`` whole, giving its folders back their owner write bit first (a read-only folder would
    otherwise leave a hidden leftover behind for an ordinary user)."""
    for dirpath, _, _ in os.walk(path):
        mode = os.lstat(dirpath).st_mode
        if mode & stat.S_IRWXU != stat.S_IRWXU:
            os.chmod(dirpath, stat.S_IMODE(mode) | stat.S_IRWXU)
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise PrepareError(f"{path}: cannot remove the previous root: {exc.strerror or exc}") from None


def _recover(out: Path) -> list[str]:
    """Finish what a killed prepare of ``out`` left beside it: a previous root renamed aside comes back when ``out``
    is missing, snapshots left in it move into ``out/.snapshot``, the rest is removed. Directories a live prepare
    holds (locked) are left alone. Returns the leftovers handled."""
    parent = out.parent
    if not parent.is_dir():
        return []
    pattern = _leftover_re(out)
    names = sorted(e.name for e in os.scandir(parent) if pattern.fullmatch(e.name) and e.is_dir(follow_symlinks=False))
    done: list[str] = []
    for name in names:
        path = parent / name
        lock = _lock(path)
        if lock is None:
            continue
        try:
            if ".old-" in name and not os.path.lexists(out) and _is_prepared_root(path):
                os.rename(path, out)  # killed between the two renames of _publish: the previous root comes back
                done.append(str(path))
                continue
            if os.path.lexists(path / SNAPSHOT_DIR):
                if not os.path.lexists(out):
                    out.mkdir()
                _move_snapshots(path, out)
        finally:
            os.close(lock)
        _remove_tree(path)
        done.append(str(path))
    return done
