"""The version of the code a run ran, and how it is found: git commit, dirty state, content digest.

The *project root* is the directory holding ``MLproject`` above the code that ran (else that code's directory). In
a git work tree the version is the ``HEAD`` commit plus a *dirty* flag (tracked changes or untracked, not ignored
files under the root); everywhere (git or not) it is also a *content digest*: ``sha256`` over the sorted ``(path,
kind, exec bit, sha256 of content | link target)`` of the project's files. Code that runs from an installed
distribution is ``kind="dist"``. See :mod:`mlflow_anf.provenance` for what a run records. No MLflow here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.secrets import url_without_userinfo

log = logging.getLogger(__name__)

ENV_DIRTY_POLICY = "MLFLOW_ANF_DIRTY_TREE"
DEFAULT_PACKAGES = (
    "mlflow-anf", "torch", "pytorch-lightning", "lightning", "numpy", "pillow", "mlflow", "pydantic",
    "mpi4py", "horovod", "kubernetes", "azure-mgmt-netapp",
)
DEFAULT_IGNORES = (
    ".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox",
    ".nox", "node_modules", "mlruns", ".snapshot", ".ipynb_checkpoints", "build", "dist", "*.egg-info", "*.pyc",
    "*.pyo", ".DS_Store",
)
MAX_WALK_FILES = 50_000


class ProvenanceError(Exception):
    """Provenance could not be collected or read; the message names the file, run or command."""


class DirtyTreeError(ProvenanceError, ValueError):
    """The project has uncommitted changes and the policy is ``refuse``."""


# --------------------------------------------------------------------------------------------------- models
class ProvenancePolicy(BaseModel):
    """How provenance is collected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dirty: Literal["warn", "refuse", "ignore"] = Field("warn", description="what an uncommitted project does")
    packages: tuple[str, ...] = Field(DEFAULT_PACKAGES, description="distributions whose versions are recorded")
    ignore: tuple[str, ...] = Field(DEFAULT_IGNORES, description="names skipped when digesting a tree without git")
    max_files: int = Field(MAX_WALK_FILES, ge=1, description="digest no larger tree than this (files)")
    max_listed: int = Field(50, ge=0, description="dirty files listed in the record")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ProvenancePolicy:
        """The policy with ``dirty`` from ``MLFLOW_ANF_DIRTY_TREE`` when set (an unknown value names the variable)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        raw = env.get(ENV_DIRTY_POLICY, "").strip().lower()
        if raw:
            if raw not in ("warn", "refuse", "ignore"):
                raise ValueError(f"{ENV_DIRTY_POLICY}: expected warn, refuse or ignore, got {raw!r}")
            values["dirty"] = raw
        values.update(overrides)
        return cls(**values)


class CodeVersion(BaseModel):
    """The code a run ran: a git commit (+ dirty state) and/or a content digest of the project tree."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["git", "tree", "dist"]
    root: str = Field(description="project root (directory with MLproject) as seen where the run ran; for an "
                                  "installed distribution its top-level package directory")
    digest: str | None = Field(None, description="sha256 over the project's files; None when too large")
    files: int = 0
    commit: str | None = None
    branch: str | None = None
    remote: str | None = Field(None, description="origin URL without credentials")
    dirty: bool = False
    dirty_files: list[str] = Field(default_factory=list, description="git status lines (first N)")
    git_root: str | None = None
    package: str | None = Field(None, description="kind dist: the top-level package that ran")
    distribution: str | None = Field(None, description="kind dist: name==version of the installed distribution")

    def label(self) -> str:
        """Short human form: ``git 1a2b3c4d5e6f (dirty)``, ``tree sha256:abcdef012345`` or
        ``installed mlflow-anf-lanedet==0.1.0 sha256:abcdef012345``."""
        if self.kind == "git" and self.commit:
            return f"git {self.commit[:12]}{' (dirty)' if self.dirty else ''}"
        if self.kind == "dist":
            return f"installed {self.distribution} {short_digest(self.digest)}"
        return f"tree {short_digest(self.digest)}"


def short_digest(digest: str | None, chars: int = 12) -> str:
    if not digest:
        return "-"
    algo, _, hexpart = digest.rpartition(":")
    return f"{algo + ':' if algo else ''}{hexpart[:chars]}"


# ---------------------------------------------------------------------------------------------- code version
def find_project_root(path: str | os.PathLike[str]) -> Path:
    """The nearest directory at or above *path* holding an ``MLproject``; else *path*'s directory."""
    start = Path(path).resolve()
    if not start.is_dir():
        start = start.parent
    for candidate in (start, *start.parents):
        if (candidate / "MLproject").is_file():
            return candidate
    return start


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=60, check=False)


def _git_ok(root: Path, *args: str) -> bytes:
    proc = _git(root, *args)
    if proc.returncode != 0:
        raise ProvenanceError(f"git {' '.join(args)} in {root} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _git_root(root: Path) -> Path | None:
    if shutil.which("git") is None:
        return None
    proc = _git(root, "rev-parse", "--show-toplevel")
    if proc.returncode != 0:
        return None
    return Path(proc.stdout.decode().strip()).resolve()


def _file_line(root: Path, rel: str) -> str | None:
    """One digest line for *rel* (``None`` when it does not exist, e.g. a tracked file deleted in the tree)."""
    path = root / rel
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return f"L\0{rel}\0{os.readlink(path)}\n"
    if not stat.S_ISREG(st.st_mode):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    executable = "x" if st.st_mode & 0o111 else "-"
    return f"F\0{rel}\0{executable}\0{h.hexdigest()}\n"


def tree_digest(root: str | os.PathLike[str], files: Iterable[str]) -> tuple[str, int]:
    """``sha256:`` over the digest lines of *files* (paths relative to *root*, ``/``-separated), and their count."""
    base = Path(root)
    h = hashlib.sha256()
    count = 0
    for rel in sorted(set(files)):
        line = _file_line(base, rel)
        if line is not None:
            h.update(line.encode("utf-8", "surrogateescape"))
            count += 1
    return f"sha256:{h.hexdigest()}", count


def _ignored(name: str, patterns: Sequence[str]) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(name, p) for p in patterns)


def walk_files(root: Path, ignore: Sequence[str], max_files: int) -> list[str] | None:
    """Files under *root* (relative, sorted), skipping *ignore* names; ``None`` past *max_files*."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _ignored(d, ignore))
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if _ignored(name, ignore):
                continue
            out.append(name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/"))
            if len(out) > max_files:
                return None
        # symlinked directories are recorded as links, not followed
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                dirnames.remove(d)
                out.append(d if rel_dir == "." else f"{rel_dir}/{d}".replace(os.sep, "/"))
    return sorted(out)


def _top_package(path: str | os.PathLike[str]) -> Path | None:
    """The top-level package directory holding *path* (the outermost parent with an ``__init__.py``)."""
    start = Path(path).resolve()
    here = start if start.is_dir() else start.parent
    if not (here / "__init__.py").is_file():
        return None
    while (here.parent / "__init__.py").is_file():
        here = here.parent
    return here


def installed_code_version(package_dir: Path, policy: ProvenancePolicy | None = None) -> CodeVersion | None:
    """``kind="dist"`` for a top-level package that an installed distribution provides (``None`` if none does)."""
    policy = policy or ProvenancePolicy()
    names = importlib.metadata.packages_distributions().get(package_dir.name) or []
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        where = {Path(str(dist.locate_file(f))).resolve().parent for f in (dist.files or []) if f.suffix == ".py"}
        if not any(p == package_dir or package_dir in p.parents for p in where):
            continue  # another copy of that package name (e.g. a checkout on sys.path)
        files = walk_files(package_dir, policy.ignore, policy.max_files)
        digest, count = tree_digest(package_dir, files) if files is not None else (None, 0)
        return CodeVersion(kind="dist", root=str(package_dir), digest=digest, files=count, package=package_dir.name,
                           distribution=f"{dist.metadata['Name']}=={dist.version}")
    return None


def code_version(path: str | os.PathLike[str], policy: ProvenancePolicy | None = None) -> CodeVersion:
    """The :class:`CodeVersion` of the project containing *path* (see the module docstring)."""
    policy = policy or ProvenancePolicy()
    root = find_project_root(path)
    if not (root / "MLproject").is_file():
        package = _top_package(path)
        installed = installed_code_version(package, policy) if package is not None else None
        if installed is not None:
            return installed
    git_root = _git_root(root)
    if git_root is None:
        files = walk_files(root, policy.ignore, policy.max_files)
        if files is None:
            log.warning("provenance: %s holds more than %d files; no content digest recorded", root, policy.max_files)
            return CodeVersion(kind="tree", root=str(root))
        digest, count = tree_digest(root, files)
        return CodeVersion(kind="tree", root=str(root), digest=digest, files=count)

    listed = _git_ok(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ".")
    files = [f for f in listed.decode("utf-8", "surrogateescape").split("\0") if f]
    digest, count = tree_digest(root, files)
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    commit = head.stdout.decode().strip() if head.returncode == 0 else None
    branch_proc = _git(root, "symbolic-ref", "-q", "--short", "HEAD")
    branch = branch_proc.stdout.decode().strip() if branch_proc.returncode == 0 else None
    status = _git_ok(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", ".")
    entries = [e for e in status.decode("utf-8", "surrogateescape").split("\0") if e]
    # porcelain -z: a rename ("R  new\0old") carries its old path as the next entry
    dirty_files: list[str] = []
    skip = False
    for entry in entries:
        if skip:
            skip = False
            continue
        dirty_files.append(entry)
        skip = entry[:1] in ("R", "C")
    remote_proc = _git(root, "config", "--get", "remote.origin.url")
    remote = url_without_userinfo(remote_proc.stdout.decode().strip()) if remote_proc.returncode == 0 else None
    return CodeVersion(
        kind="git", root=str(root), digest=digest, files=count, commit=commit, branch=branch or None,
        remote=remote or None, dirty=bool(dirty_files) or commit is None,
        dirty_files=dirty_files[: policy.max_listed], git_root=str(git_root),
    )


def commit_exists(root: str | os.PathLike[str], commit: str) -> bool:
    """Whether *commit* is an object of the git repository at *root*."""
    proc = _git(Path(root), "cat-file", "-e", f"{commit}^{{commit}}")
    return proc.returncode == 0
