"""The state of a directory tree, to show that a refused input left the file system as it was.

``tree_state(root)`` records every entry under *root* (the root itself included) without following links: type,
mode, size, content digest of regular files, link target. Compare two states with ``==``; ``state_diff`` names what
changed, for an assertion message.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def _entry(path: Path) -> tuple:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return ("link", stat.S_IMODE(st.st_mode), os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", stat.S_IMODE(st.st_mode))
    if stat.S_ISREG(st.st_mode):
        return ("file", stat.S_IMODE(st.st_mode), st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return ("other", st.st_mode)


def tree_state(root: str | os.PathLike[str]) -> dict[str, tuple]:
    """Relative path -> entry for *root* and everything below it (``{}`` when *root* does not exist)."""
    base = Path(root)
    if not os.path.lexists(base):
        return {}
    out = {".": _entry(base)}
    if base.is_dir() and not base.is_symlink():
        for dirpath, dirnames, filenames in os.walk(base):  # os.walk does not follow directory links
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                out[str(path.relative_to(base))] = _entry(path)
    return out


def state_diff(before: dict[str, tuple], after: dict[str, tuple]) -> str:
    """What changed between two :func:`tree_state` results, one line each ('' when nothing did)."""
    lines = [f"- {k}" for k in sorted(before.keys() - after.keys())]
    lines += [f"+ {k}" for k in sorted(after.keys() - before.keys())]
    lines += [f"~ {k}: {before[k]} -> {after[k]}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return "\n".join(lines)
