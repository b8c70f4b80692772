"""What a run records so that ``mlflow-anf reproduce`` can run it again: its provenance.

A :class:`Provenance` holds the entry point, params, the code version, the image (on Kubernetes), the backend config
(secret-free), the data snapshots known when it was taken, seeds, key package versions and the interpreter. It is
logged as the JSON artifact ``mlflow_anf/provenance.json`` plus a few searchable tags (``mlflow_anf.code.*``,
``mlflow_anf.image*``).

**Code version** (:mod:`mlflow_anf.code_version`): a git commit with a dirty flag and/or a content digest of the
project tree, or an installed distribution (``kind="dist"``); its names stay importable from here.

**Dirty trees.** :class:`ProvenancePolicy` decides: ``warn`` (default: a loud warning and the tag
``mlflow_anf.code.dirty=true``), ``refuse`` (raise :class:`DirtyTreeError` before training starts) or ``ignore``.
``MLFLOW_ANF_DIRTY_TREE=warn|refuse|ignore`` sets it from the environment.

Layout: :func:`collect_provenance` and the helpers it uses know nothing of MLflow (they read files and run ``git``);
:func:`log_provenance` / :func:`load_provenance` are the MLflow adapter (MLflow imported inside them).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from mlflow_anf.code_version import (  # noqa: F401  (the code-version names stay importable from here)
    DEFAULT_IGNORES,
    DEFAULT_PACKAGES,
    ENV_DIRTY_POLICY,
    MAX_WALK_FILES,
    CodeVersion,
    DirtyTreeError,
    ProvenanceError,
    ProvenancePolicy,
    code_version,
    commit_exists,
    find_project_root,
    installed_code_version,
    short_digest,
    tree_digest,
    walk_files,
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

ENV_IMAGE = "MLFLOW_ANF_IMAGE"
ENV_IMAGE_DIGEST = "MLFLOW_ANF_IMAGE_DIGEST"
ENV_SEED_VARS = ("PYTHONHASHSEED", "PL_GLOBAL_SEED", "CUBLAS_WORKSPACE_CONFIG")


_IMAGE_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")


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


# ------------------------------------------------------------------------------------------------ redaction
# One detector for the whole product (mlflow_anf.secrets); these names stay for the callers of this module.
is_secret_key = is_secret_name
_strip_userinfo = url_without_userinfo


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
