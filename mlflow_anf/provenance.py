"""What a run records so that ``mlflow-anf reproduce`` can run it again: its provenance.

A :class:`Provenance` holds the entry point, params, the code version, the image (on Kubernetes), the backend config
(secret-free), the data snapshots known when it was taken, seeds, key package versions and the interpreter. It is
logged as the JSON artifact ``mlflow_anf/provenance.json`` plus a few searchable tags (``mlflow_anf.code.*``,
``mlflow_anf.image*``).

**Code version.** The *project root* is the directory holding ``MLproject`` above the code that ran (else that
code's directory). In a git work tree the version is the ``HEAD`` commit plus a *dirty* flag (tracked changes or
untracked, not ignored files under the root); everywhere (git or not, e.g. ``/workspace`` in an image) it is also a
*content digest*: ``sha256`` over the sorted ``(path, kind, exec bit, sha256 of content | link target)`` of the
project's files (git: ``git ls-files --cached --others --exclude-standard``; no git: a walk that skips
:data:`DEFAULT_IGNORES`). Two trees with the same digest hold the same code, dirty or not.

Code that runs from an *installed distribution* (no ``MLproject`` above it, e.g. ``lanedet train`` from a wheel) is
recorded as ``kind="dist"``: the distribution's name and version and the content digest of its top-level package, so
that a reproduction can tell whether the same code is installed. (``mlflow run`` never gets here for the reference
project: its entry points run the checkout's code, ``project/run.py``.)

**Dirty trees.** :class:`ProvenancePolicy` decides: ``warn`` (default: a loud warning and the tag
``mlflow_anf.code.dirty=true``), ``refuse`` (raise :class:`DirtyTreeError` before training starts) or ``ignore``.
``MLFLOW_ANF_DIRTY_TREE=warn|refuse|ignore`` sets it from the environment.

Layout: :func:`collect_provenance` and the helpers it uses know nothing of MLflow (they read files and run ``git``);
:func:`log_provenance` / :func:`load_provenance` are the MLflow adapter (MLflow imported inside them).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlflow_anf.vocabulary import (  # noqa: F401  (the names stay importable from this module)
    SnapshotRef,
    parse_snapshot_tags,
    ARTIFACT_DIR,
    ARTIFACT_PROVENANCE,
    MLFLOW_TAG_BACKEND,
    MLFLOW_TAG_ENTRY_POINT,
    TAG_BACKEND_CONFIG,
    TAG_BACKEND_IMAGE,
    TAG_BACKEND_JOB,
    TAG_CODE_COMMIT,
    TAG_CODE_DIGEST,
    TAG_CODE_DIRTY,
    TAG_CODE_KIND,
    TAG_IMAGE,
    TAG_IMAGE_DIGEST,
    TAG_PROVENANCE,
)
from mlflow_anf.secrets import REDACTED, is_secret_name, redact, url_without_userinfo

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

FORMAT = "mlflow-anf-provenance/1"
ARTIFACT_NAME = ARTIFACT_PROVENANCE.rsplit("/", 1)[1]
ARTIFACT_PATH = ARTIFACT_PROVENANCE
TAG_MLFLOW_ENTRY_POINT = MLFLOW_TAG_ENTRY_POINT
TAG_MLFLOW_BACKEND = MLFLOW_TAG_BACKEND

ENV_DIRTY_POLICY = "MLFLOW_ANF_DIRTY_TREE"
ENV_IMAGE = "MLFLOW_ANF_IMAGE"
ENV_IMAGE_DIGEST = "MLFLOW_ANF_IMAGE_DIGEST"
ENV_SEED_VARS = ("PYTHONHASHSEED", "PL_GLOBAL_SEED", "CUBLAS_WORKSPACE_CONFIG")

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
_IMAGE_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")


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


class ImageInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    ref: str
    digest: str | None = Field(None, description="sha256:... when the reference is pinned or the digest is known")
    source: str = Field(description="where it came from: env or the run's backend tag")


SnapshotRecord = SnapshotRef  # the one snapshot-reference model (mlflow_anf.vocabulary); old name kept


class Provenance(BaseModel):
    """Everything one run records for its reproduction (the ``mlflow_anf/provenance.json`` artifact)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: str = FORMAT
    created: datetime
    run_id: str | None = None
    entry_point: str | None = None
    backend: str | None = Field(None, description="local, mpijob, ... (as known when recorded)")
    params: dict[str, str] = Field(default_factory=dict)
    seeds: dict[str, str] = Field(default_factory=dict)
    code: CodeVersion
    image: ImageInfo | None = None
    backend_config: dict[str, Any] | None = Field(None, description="secret-free backend config")
    provider_options: dict[str, Any] = Field(default_factory=dict, description="snapshot provider options")
    snapshots: list[SnapshotRecord] = Field(default_factory=list, description="snapshots recorded so far")
    packages: dict[str, str] = Field(default_factory=dict)
    python: str = ""
    platform: str = ""
    cwd: str = ""
    warnings: list[str] = Field(default_factory=list)

    def tags(self) -> dict[str, str]:
        """The searchable summary tags of this record."""
        out = {TAG_PROVENANCE: ARTIFACT_PATH, TAG_CODE_KIND: self.code.kind,
               TAG_CODE_DIRTY: str(self.code.dirty).lower()}
        if self.code.commit:
            out[TAG_CODE_COMMIT] = self.code.commit
        if self.code.digest:
            out[TAG_CODE_DIGEST] = self.code.digest
        if self.image is not None:
            out[TAG_IMAGE] = self.image.ref
            if self.image.digest:
                out[TAG_IMAGE_DIGEST] = self.image.digest
        return out


def short_digest(digest: str | None, chars: int = 12) -> str:
    if not digest:
        return "-"
    algo, _, hexpart = digest.rpartition(":")
    return f"{algo + ':' if algo else ''}{hexpart[:chars]}"


# ------------------------------------------------------------------------------------------------ redaction
# One detector for the whole product (mlflow_anf.secrets); these names stay for the callers of this module.
is_secret_key = is_secret_name
_strip_userinfo = url_without_userinfo


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
    remote = _strip_userinfo(remote_proc.stdout.decode().strip()) if remote_proc.returncode == 0 else None
    return CodeVersion(
        kind="git", root=str(root), digest=digest, files=count, commit=commit, branch=branch or None,
        remote=remote or None, dirty=bool(dirty_files) or commit is None,
        dirty_files=dirty_files[: policy.max_listed], git_root=str(git_root),
    )


def commit_exists(root: str | os.PathLike[str], commit: str) -> bool:
    """Whether *commit* is an object of the git repository at *root*."""
    proc = _git(Path(root), "cat-file", "-e", f"{commit}^{{commit}}")
    return proc.returncode == 0


# --------------------------------------------------------------------------------------------- other facts
def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the distributions in *names* (missing ones are left out)."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def image_info(environ: Mapping[str, str], tags: Mapping[str, str]) -> ImageInfo | None:
    """The container image: ``MLFLOW_ANF_IMAGE`` (+ ``MLFLOW_ANF_IMAGE_DIGEST``) or the backend's run tag."""
    ref, source = environ.get(ENV_IMAGE, "").strip(), "env"
    if not ref:
        ref, source = tags.get(TAG_BACKEND_IMAGE, "").strip(), f"tag {TAG_BACKEND_IMAGE}"
    if not ref:
        return None
    match = _IMAGE_DIGEST.search(ref)
    digest = match.group(1) if match else (environ.get(ENV_IMAGE_DIGEST, "").strip() or None)
    return ImageInfo(ref=ref, digest=digest, source=source)


def seeds_from(params: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Seed-like params (``seed``, ``*_seed``, ``deterministic``) and the seed-related environment variables."""
    out = {k: v for k, v in params.items() if k == "seed" or k.endswith("_seed") or k == "deterministic"}
    for var in ENV_SEED_VARS:
        if environ.get(var):
            out[f"env.{var}"] = environ[var]
    return out


def backend_of(tags: Mapping[str, str]) -> str:
    """The backend a run ran through, from its tags (``local`` when nothing says otherwise)."""
    if tags.get(TAG_MLFLOW_BACKEND):
        return tags[TAG_MLFLOW_BACKEND]
    if tags.get(TAG_BACKEND_JOB):
        return "mpijob"
    return "local"


def backend_config_from_tags(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The secret-free backend config the ``mpijob`` backend recorded on the run (``None`` when absent).

    Raises :class:`ProvenanceError` when the tag is not a JSON object (e.g. cut at MLflow's tag length limit).
    """
    raw = tags.get(TAG_BACKEND_CONFIG)
    return parse_backend_config(raw, f"tag {TAG_BACKEND_CONFIG}") if raw else None


def parse_backend_config(text: str, source: str) -> dict[str, Any]:
    """A recorded backend config (JSON object) with secret-looking values redacted; errors name *source*."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProvenanceError(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; {len(text)} characters "
            "- cut at the tag length limit?); pass the backend config explicitly"
        ) from None
    if not isinstance(data, dict):
        raise ProvenanceError(f"{source}: expected a JSON object, got {type(data).__name__}")
    return redact(data)


def snapshot_records(tags: Mapping[str, str]) -> list[SnapshotRef]:
    """Snapshot references in a run's tags, either layout (lenient: incomplete groups are skipped)."""
    return list(parse_snapshot_tags(tags, strict=False).values())


def collect_provenance(
    *,
    code_path: str | os.PathLike[str],
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    entry_point: str | None = None,
    run_id: str | None = None,
    provider_options: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    policy: ProvenancePolicy | None = None,
) -> Provenance:
    """Collect the provenance of a run whose code is at *code_path*, given its *params* and *tags* so far.

    Pure with respect to MLflow. Applies the dirty-tree policy: ``refuse`` raises :class:`DirtyTreeError`,
    ``warn`` logs a loud warning and records it in ``warnings``.
    """
    policy = policy or ProvenancePolicy()
    env = dict(os.environ if environ is None else environ)
    params = {str(k): str(v) for k, v in (params or {}).items()}
    tags = dict(tags or {})
    code = code_version(code_path, policy)
    warnings: list[str] = []
    if code.dirty and policy.dirty != "ignore":
        listed = "\n  ".join(code.dirty_files) or "(no commit yet)"
        message = (
            f"the project at {code.root} has uncommitted changes; commit {code.commit or '-'} does not describe "
            f"the code that runs (a reproduction needs exactly this tree, digest {short_digest(code.digest)}):"
            f"\n  {listed}"
        )
        if policy.dirty == "refuse":
            raise DirtyTreeError(f"{message}\ncommit or stash them, or set {ENV_DIRTY_POLICY}=warn")
        warnings.append(message)
        banner = "!" * 100
        log.warning("\n%s\nUNCOMMITTED CODE: %s\n%s", banner, message, banner)
    redacted_params = {k: (REDACTED if is_secret_key(k) else v) for k, v in params.items()}
    backend_config = backend_config_from_tags(tags) if tags.get(TAG_BACKEND_CONFIG) else None
    return Provenance(
        created=datetime.now(timezone.utc),
        run_id=run_id,
        entry_point=entry_point or tags.get(TAG_MLFLOW_ENTRY_POINT) or None,
        backend=backend_of(tags),
        params=redacted_params,
        seeds=seeds_from(redacted_params, env),
        code=code,
        image=image_info(env, tags),
        backend_config=backend_config,
        provider_options=redact(dict(provider_options or {})),
        snapshots=snapshot_records(tags),
        packages=package_versions(policy.packages),
        python=sys.version.split()[0],
        platform=platform.platform(),
        cwd=os.getcwd(),
        warnings=warnings,
    )


# ------------------------------------------------------------------------------------------- MLflow adapter
def _client(client: MlflowClient | None) -> MlflowClient:
    if client is not None:
        return client
    from mlflow import MlflowClient

    return MlflowClient()


def _resolve_run_id(run_id: str | None, environ: Mapping[str, str]) -> str:
    if run_id:
        return run_id
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        return active.info.run_id
    if environ.get("MLFLOW_RUN_ID"):
        return environ["MLFLOW_RUN_ID"]
    raise ValueError("run_id: no active MLflow run and no MLFLOW_RUN_ID; pass run_id")


def log_provenance(
    run_id: str | None = None,
    *,
    code_path: str | os.PathLike[str] | None = None,
    entry_point: str | None = None,
    params: Mapping[str, str] | None = None,
    provider_options: Mapping[str, Any] | None = None,
    policy: ProvenancePolicy | None = None,
    client: MlflowClient | None = None,
    environ: Mapping[str, str] | None = None,
) -> Provenance:
    """Collect the provenance of run *run_id* (default: the active run / ``MLFLOW_RUN_ID``) and log it.

    *params* default to the run's logged params; *code_path* to the current directory; *provider_options* are the
    snapshot provider's options (a reproduction restores with them); the policy defaults to
    :meth:`ProvenancePolicy.from_env`. Logs ``mlflow_anf/provenance.json`` and the summary tags. Raises
    :class:`DirtyTreeError` (nothing logged) when the policy refuses the tree.
    """
    from mlflow.entities import RunTag

    env = dict(os.environ if environ is None else environ)
    policy = policy or ProvenancePolicy.from_env(env)
    client = _client(client)
    run_id = _resolve_run_id(run_id, env)
    run = client.get_run(run_id)
    merged = dict(run.data.params)
    merged.update({str(k): str(v) for k, v in (params or {}).items()})
    record = collect_provenance(
        code_path=code_path or os.getcwd(), params=merged, tags=run.data.tags, entry_point=entry_point,
        run_id=run_id, provider_options=provider_options, environ=env, policy=policy,
    )
    with tempfile.TemporaryDirectory(prefix="mlflow-anf-provenance-") as tmp:
        path = Path(tmp) / ARTIFACT_NAME
        path.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record.tags().items()])
    return record


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar for every download; one small JSON file does not need one."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def load_provenance(run_id: str, client: MlflowClient | None = None) -> Provenance | None:
    """The provenance run *run_id* logged, or ``None`` when it logged none."""
    client = _client(client)
    names = {a.path for a in client.list_artifacts(run_id, ARTIFACT_DIR)}
    if ARTIFACT_PATH not in names:
        return None
    with tempfile.TemporaryDirectory(prefix="mlflow-anf-provenance-") as tmp, _no_progress_bar():
        local = client.download_artifacts(run_id, ARTIFACT_PATH, tmp)
        text = Path(local).read_text(encoding="utf-8")
    try:
        return Provenance.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise ProvenanceError(f"run {run_id}: artifact {ARTIFACT_PATH}: {where}: {first['msg']}") from None
