"""Reproduce a logged run from its snapshots, and compare two runs.

:func:`reproduce` re-runs the entry point of a run with the same params through the same backend, on a *new* volume
restored from the run's data snapshot:

1. read the run: params, tags, snapshot references (:func:`mlflow_anf.tracking.get_run_snapshots`) and its
   provenance (:mod:`mlflow_anf.provenance`);
2. check before creating anything: the entry point exists; the code is the recorded code (local backend: the project
   tree's content digest, or the same clean commit) or the recorded image is still there (``mpijob``); the backend
   config validates; the snapshot still exists;
3. restore the data snapshot - ``local``: a new directory; ``csi``: a new PVC whose ``dataSource`` is the
   VolumeSnapshot; ``anf``: a new volume from the snapshot (mount it, then ``--restored``);
4. point the run at it: params whose value is the recorded data (or model output) volume are rewritten to the new one;
   for ``mpijob`` the backend config's ``data_pvc`` too; user overrides (``-P``) apply last. All are recorded;
5. run it with :func:`mlflow.projects.run`, tag the new run ``mlflow_anf.reproduces=<run>`` and the old one
   ``mlflow_anf.reproduced_by=<runs>``; a finished local reproduction is compared with its source (final metrics
   without timing ones, data digest, code).

:func:`compare_runs` is the pure core of ``mlflow-anf diff``: params, code version, image, data digests, package
versions and metrics side by side. MLflow, Kubernetes and the providers are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import os
import re
import secrets
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.vocabulary import (  # noqa: F401  (the names stay importable from this module)
    ARTIFACT_BACKEND_CONFIG,
    ARTIFACT_MPIJOB,
    TAG_REPRODUCED_BY,
    TAG_REPRODUCES,
    TAG_REPRODUCE_CODE,
    TAG_REPRODUCE_IDENTICAL,
    TAG_REPRODUCE_IMAGE,
    TAG_REPRODUCE_NOTES,
    TAG_REPRODUCE_OVERRIDES,
    TAG_REPRODUCE_RESTORED,
    TAG_REPRODUCE_REWRITTEN,
    TAG_VALUE_MAX,
)
from mlflow_anf.provenance import (
    REDACTED,
    TAG_CODE_COMMIT,
    TAG_CODE_DIGEST,
    TAG_CODE_DIRTY,
    TAG_IMAGE,
    TAG_IMAGE_DIGEST,
    TAG_MLFLOW_ENTRY_POINT,
    CodeVersion,
    Provenance,
    ProvenanceError,
    backend_config_from_tags,
    backend_of,
    code_version,
    commit_exists,
    find_project_root,
    image_info,
    parse_backend_config,
    short_digest,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflow_anf.tracking import SnapshotRef

log = logging.getLogger(__name__)

TAG_OVERRIDES = TAG_REPRODUCE_OVERRIDES
TAG_REWRITTEN = TAG_REPRODUCE_REWRITTEN
TAG_RESTORED = TAG_REPRODUCE_RESTORED
TAG_CODE_CHECK = TAG_REPRODUCE_CODE
TAG_IMAGE_CHECK = TAG_REPRODUCE_IMAGE
TAG_IDENTICAL = TAG_REPRODUCE_IDENTICAL
TAG_LEGACY_ENTRY_POINT = "lanedet.entry_point"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_MAX = TAG_VALUE_MAX
MPIJOB_ARTIFACT = ARTIFACT_MPIJOB
BACKEND_CONFIG_ARTIFACT = ARTIFACT_BACKEND_CONFIG

#: metrics that measure time or the machine, not the model: never expected to be identical
TIMING_METRICS = ("system/*", "throughput", "*throughput*", "*_time", "*_time_*", "*duration*", "*_per_s*",
                  "*_seconds", "*_ms")

SUPPORTED_BACKENDS = ("local", "mpijob")
_PARAM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class ReproduceError(Exception):
    """A reproduction refused or failed; ``exit_code`` is the CLI's documented code for it."""

    exit_code = 2


class SourceGone(ReproduceError, LookupError):
    """The snapshot, code version or image the run needs no longer exists."""

    exit_code = 3


class CodeMismatch(ReproduceError, ValueError):
    """The project's code is not the code the run ran (and no ``allow_code_change``)."""


class ReproductionFailed(ReproduceError):
    """The reproduction ran and failed."""

    exit_code = 4


# ----------------------------------------------------------------------------------------------------- models
class ReproduceOptions(BaseModel):
    """What :func:`reproduce` may change; every field is recorded on the new run when it matters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str | None = Field(None, description="backend to run through (default: the run's own)")
    backend_config: dict[str, Any] = Field(default_factory=dict, description="merged over the recorded config")
    overrides: dict[str, str] = Field(default_factory=dict, description="param overrides (recorded)")
    project_dir: Path | None = Field(None, description="the MLproject directory (default: the recorded one)")
    workdir: Path | None = Field(None, description="local: where data/ and outputs/ of the reproduction go")
    target: str | None = Field(None, description="name of the restored volume (default: derived)")
    restored: str | None = Field(None, description="use this already restored volume instead of restoring")
    restore_only: bool = Field(False, description="restore the data, print the volume, run nothing")
    provider_options: dict[str, Any] = Field(default_factory=dict, description="snapshot provider options")
    allow_code_change: bool = Field(False, description="run even if the code differs from the recorded code")
    image_check: bool = Field(True, description="mpijob: check the registry still has the image")
    wait: bool | None = Field(None, description="mpijob: wait for the job (local runs always wait)")
    experiment_id: str | None = Field(None, description="default: the source run's experiment")
    ignore_metrics: tuple[str, ...] = Field(TIMING_METRICS, description="metric name patterns not compared")


class RunRecord(BaseModel):
    """What reproduce and diff read from one run."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    run_id: str
    experiment_id: str
    name: str = ""
    status: str = ""
    start_time: int | None = None
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    provenance: Provenance | None = None
    snapshots: dict[str, Any] = Field(default_factory=dict, description="role -> SnapshotRef")


class ImageCheck(BaseModel):
    status: Literal["present", "missing", "unknown"]
    ref: str
    digest: str | None = None
    detail: str = ""


class ReproduceResult(BaseModel):
    source_run_id: str
    run_id: str | None = None
    entry_point: str
    backend: str
    project_dir: str
    params: dict[str, str] = Field(default_factory=dict)
    overrides: dict[str, str] = Field(default_factory=dict)
    rewritten: dict[str, dict[str, str]] = Field(default_factory=dict)
    restored: dict[str, str] | None = None
    code: str = ""
    image: str | None = None
    status: str = ""
    comparison: RunDiff | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def identical(self) -> bool | None:
        """Same final (non-timing) metrics and data digest as the source; ``None`` when not compared."""
        if self.comparison is None:
            return None
        summary = self.comparison.summary
        return summary.metrics and summary.data is not False


# ------------------------------------------------------------------------------------------------------- diff
class Row(BaseModel):
    key: str
    a: str | None = None
    b: str | None = None
    status: Literal["same", "differs", "only_a", "only_b", "rewritten", "unknown"]


class MetricRow(BaseModel):
    key: str
    a: float | None = None
    b: float | None = None
    delta: float | None = None
    status: Literal["same", "differs", "only_a", "only_b"]
    timing: bool = False


class DiffSummary(BaseModel):
    params: bool
    code: bool | None
    data: bool | None
    metrics: bool
    reproduced: bool = Field(description="same code (or unknown), same data digest, same non-timing metrics")


class RunSide(BaseModel):
    run_id: str
    name: str = ""
    status: str = ""
    experiment_id: str = ""
    start_time: str | None = None
    reproduces: str | None = None


class RunDiff(BaseModel):
    a: RunSide
    b: RunSide
    params: list[Row]
    code: list[Row]
    image: list[Row]
    data: list[Row]
    packages: list[Row]
    metrics: list[MetricRow]
    summary: DiffSummary


ReproduceResult.model_rebuild()


def _row(key: str, a: str | None, b: str | None, rewritten: bool = False) -> Row:
    if a is None and b is None:
        status = "unknown"
    elif a is None:
        status = "only_b"
    elif b is None:
        status = "only_a"
    elif a == b:
        status = "same"
    else:
        status = "rewritten" if rewritten else "differs"
    return Row(key=key, a=a, b=b, status=status)


def is_timing_metric(key: str, patterns: Sequence[str] = TIMING_METRICS) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _code_of(rec: RunRecord) -> dict[str, str | None]:
    prov = rec.provenance
    if prov is not None:
        code = prov.code
        return {"commit": code.commit, "dirty": str(code.dirty).lower(), "digest": code.digest,
                "root": code.root, "kind": code.kind, "package": code.package, "distribution": code.distribution}
    return {"commit": rec.tags.get(TAG_CODE_COMMIT) or rec.tags.get(TAG_GIT_COMMIT),
            "dirty": rec.tags.get(TAG_CODE_DIRTY), "digest": rec.tags.get(TAG_CODE_DIGEST), "root": None,
            "kind": None, "package": None, "distribution": None}


def _image_of(rec: RunRecord) -> dict[str, str | None]:
    if rec.provenance is not None and rec.provenance.image is not None:
        return {"ref": rec.provenance.image.ref, "digest": rec.provenance.image.digest}
    info = image_info({}, rec.tags)
    return {"ref": rec.tags.get(TAG_IMAGE) or (info.ref if info else None),
            "digest": rec.tags.get(TAG_IMAGE_DIGEST) or (info.digest if info else None)}


def _time(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds") if ms else None


def _side(rec: RunRecord) -> RunSide:
    return RunSide(run_id=rec.run_id, name=rec.name, status=rec.status, experiment_id=rec.experiment_id,
                   start_time=_time(rec.start_time), reproduces=rec.tags.get(TAG_REPRODUCES))


def _rewritten_keys(a: RunRecord, b: RunRecord) -> set[str]:
    keys: set[str] = set()
    for rec in (a, b):
        raw = rec.tags.get(TAG_REWRITTEN)
        if raw:
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                keys.update(json.loads(raw))
    return keys


def compare_runs(a: RunRecord, b: RunRecord, ignore_metrics: Sequence[str] = TIMING_METRICS) -> RunDiff:
    """Params, code, image, data snapshots, packages and final metrics of two runs, side by side (pure).

    Params a reproduction rewrote (data and output paths pointing at its restored volume) have status
    ``rewritten`` and do not count as differences.
    """
    rewritten = _rewritten_keys(a, b)
    params = [_row(k, a.params.get(k), b.params.get(k), k in rewritten) for k in sorted(set(a.params) | set(b.params))]

    ca, cb = _code_of(a), _code_of(b)
    code = [_row(k, ca[k], cb[k]) for k in ("commit", "dirty", "digest")]
    code.append(_row("root", ca["root"], cb["root"], rewritten=True))
    if ca["digest"] and cb["digest"]:
        code_same: bool | None = ca["digest"] == cb["digest"]
    elif ca["commit"] and cb["commit"] and ca["dirty"] == cb["dirty"] == "false":
        code_same = ca["commit"] == cb["commit"]
    else:
        code_same = None

    ia, ib = _image_of(a), _image_of(b)
    image = [_row(k, ia[k], ib[k]) for k in ("ref", "digest")] if (ia["ref"] or ib["ref"]) else []

    data: list[Row] = []
    data_same: bool | None = None
    for role in sorted(set(a.snapshots) | set(b.snapshots)):
        ra, rb = a.snapshots.get(role), b.snapshots.get(role)
        data.append(_row(f"{role}.ref", ra.ref if ra else None, rb.ref if rb else None, rewritten=True))
        da, db = (ra.digest if ra else None), (rb.digest if rb else None)
        data.append(_row(f"{role}.digest", da, db))
        if role == "data":
            data_same = (da == db) if (da and db) else None

    pa = a.provenance.packages if a.provenance else {}
    pb = b.provenance.packages if b.provenance else {}
    packages = [_row(k, pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb))]

    metrics: list[MetricRow] = []
    for key in sorted(set(a.metrics) | set(b.metrics)):
        va, vb = a.metrics.get(key), b.metrics.get(key)
        timing = is_timing_metric(key, ignore_metrics)
        if va is None:
            metrics.append(MetricRow(key=key, b=vb, status="only_b", timing=timing))
        elif vb is None:
            metrics.append(MetricRow(key=key, a=va, status="only_a", timing=timing))
        else:
            metrics.append(MetricRow(key=key, a=va, b=vb, delta=vb - va, timing=timing,
                                     status="same" if _same_float(va, vb) else "differs"))

    params_same = all(r.status in ("same", "rewritten") for r in params)
    metrics_same = all(m.status == "same" for m in metrics if not m.timing)
    summary = DiffSummary(
        params=params_same, code=code_same, data=data_same, metrics=metrics_same,
        reproduced=metrics_same and data_same is not False and code_same is not False,
    )
    return RunDiff(a=_side(a), b=_side(b), params=params, code=code, image=image, data=data, packages=packages,
                   metrics=metrics, summary=summary)


# ------------------------------------------------------------------------------------------- reading a run
def _client(client: MlflowClient | None) -> MlflowClient:
    if client is not None:
        return client
    from mlflow import MlflowClient

    return MlflowClient()


def load_run_record(run_id: str, client: MlflowClient | None = None) -> RunRecord:
    """Read run *run_id* with its provenance and snapshot references (lenient about incomplete snapshot tags)."""
    from mlflow.exceptions import MlflowException

    from mlflow_anf.provenance import load_provenance
    from mlflow_anf.snapshots.base import SnapshotError
    from mlflow_anf.tracking import get_run_snapshots

    client = _client(client)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise SourceGone(f"run {run_id}: not found in the tracking store") from None
        raise
    try:
        snapshots: dict[str, Any] = dict(get_run_snapshots(run_id, client))
    except SnapshotError as exc:
        log.warning("run %s: %s", run_id, exc)
        snapshots = {}
    return RunRecord(
        run_id=run_id, experiment_id=str(run.info.experiment_id), name=run.info.run_name or "",
        status=run.info.status, start_time=run.info.start_time, params=dict(run.data.params),
        metrics=dict(run.data.metrics), tags=dict(run.data.tags), provenance=load_provenance(run_id, client),
        snapshots=snapshots,
    )


def diff_runs(run_a: str, run_b: str, client: MlflowClient | None = None,
              ignore_metrics: Sequence[str] = TIMING_METRICS) -> RunDiff:
    """:func:`compare_runs` of two runs read from the tracking store."""
    client = _client(client)
    return compare_runs(load_run_record(run_a, client), load_run_record(run_b, client), ignore_metrics)


# ------------------------------------------------------------------------------------------------- planning
def resolve_entry_point(rec: RunRecord) -> str:
    prov = rec.provenance
    for candidate in (prov.entry_point if prov else None, rec.tags.get(TAG_MLFLOW_ENTRY_POINT),
                      rec.tags.get(TAG_LEGACY_ENTRY_POINT)):
        if candidate:
            return candidate
    raise ReproduceError(
        f"run {rec.run_id}: no entry point recorded (provenance, tag {TAG_MLFLOW_ENTRY_POINT}); was it started "
        "outside an MLflow project?"
    )


def _has_mlproject(path: Path) -> bool:
    return (path / "MLproject").is_file()


def resolve_project_dir(rec: RunRecord, explicit: Path | None) -> Path:
    """The local MLproject directory: *explicit*, else the recorded project root, else ``mlflow.source.name``."""
    if explicit is not None:
        path = explicit.expanduser().resolve()
        if not _has_mlproject(path):
            raise ReproduceError(f"project_dir: {path} has no MLproject file")
        return path
    tried = []
    if rec.provenance is not None:
        tried.append(rec.provenance.code.root)
    source = rec.tags.get(TAG_SOURCE_NAME, "")
    if source and "://" not in source:
        tried.append(source)
    elif source.startswith("file://"):
        tried.append(urlsplit(source).path)
    for candidate in tried:
        path = find_project_root(candidate) if Path(candidate).exists() else None
        if path is not None and _has_mlproject(path):
            return path
    raise ReproduceError(
        f"project_dir: cannot find the project of run {rec.run_id} (tried {', '.join(tried) or 'nothing recorded'}); "
        "pass --project-dir"
    )


def check_code(rec: RunRecord, project_dir: Path, allow_change: bool) -> tuple[str, CodeVersion]:
    """Compare the project's code with the run's; returns (verdict, current version).

    Same content digest, or the same clean commit, is ``same``. A commit missing from the repository raises
    :class:`SourceGone`; other differences raise :class:`CodeMismatch` unless *allow_change*.
    """
    recorded = _code_of(rec)
    if recorded["kind"] == "dist" and recorded["package"]:
        return _check_installed_code(rec, recorded, allow_change)
    current = code_version(project_dir)
    if recorded["digest"] and recorded["digest"] == current.digest:
        return "same", current
    commit, dirty = recorded["commit"], recorded["dirty"]
    if commit and dirty == "false" and current.kind == "git" and current.commit == commit and not current.dirty:
        return "same", current
    if not (commit or recorded["digest"]):
        if allow_change:
            return "unknown (nothing recorded; allowed)", current
        raise CodeMismatch(
            f"code: run {rec.run_id} recorded no code version (no provenance, no git commit); pass "
            "--allow-code-change to run the current code anyway"
        )
    gone = bool(commit) and current.kind == "git" and current.commit != commit and not commit_exists(
        project_dir, commit or "")
    if gone and not allow_change:
        raise SourceGone(
            f"code: commit {commit} of run {rec.run_id} is not in the repository at {project_dir} (history "
            "rewritten, or another clone?); fetch it, pass --project-dir with a checkout of it, or pass "
            "--allow-code-change to run the current code (recorded)"
        )
    want = f"commit {commit[:12]}{' (no longer in the repository)' if gone else ''}" if commit else "the recorded tree"
    state = "dirty" if dirty == "true" else "clean"
    message = (
        f"code: run {rec.run_id} ran {want} ({state}, digest {short_digest(recorded['digest'])}); the project at "
        f"{project_dir} is {current.label()}, digest {short_digest(current.digest)}"
    )
    if allow_change:
        return f"changed (allowed): {message}", current
    hint = ""
    if commit and current.commit != commit:
        hint += f"check out {commit[:12]} (git -C {project_dir} checkout {commit[:12]}), "
    if dirty == "true":
        hint += "restore the uncommitted changes the run had (its provenance lists them), "
    elif current.dirty:
        hint += f"set the project's uncommitted changes aside (git -C {project_dir} stash -u), "
    hint = f"{hint}or " if hint else ""
    raise CodeMismatch(f"{message}\n{hint}pass --allow-code-change to run the current code (recorded)")


def _check_installed_code(
    rec: RunRecord, recorded: dict[str, str | None], allow_change: bool
) -> tuple[str, CodeVersion]:
    """A run whose code came from an installed distribution: the same package content must be installed here."""
    import importlib.util

    from mlflow_anf.provenance import installed_code_version

    package = recorded["package"] or ""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    current = installed_code_version(Path(locations[0]).resolve()) if locations else None
    if current is not None and recorded["digest"] and current.digest == recorded["digest"]:
        return "same", current
    here = current.label() if current is not None else f"package {package} is not installed from a distribution"
    message = (f"code: run {rec.run_id} ran the installed {recorded['distribution']} (digest "
               f"{short_digest(recorded['digest'])}); here: {here}")
    if current is None:
        current = CodeVersion(kind="dist", root=locations[0] if locations else "", package=package)
    if allow_change:
        return f"changed (allowed): {message}", current
    raise CodeMismatch(f"{message}\ninstall {recorded['distribution']} (the same build), or pass --allow-code-change "
                       "to run the current code (recorded)")


def _unquote(value: str) -> str:
    """Undo MLflow's shell quoting of logged project params (``''`` for empty, ``'a b'``)."""
    if value.startswith("'") and value.endswith("'") and len(value) >= 2:
        with contextlib.suppress(ValueError):
            parts = shlex.split(value)
            if len(parts) <= 1:
                return parts[0] if parts else ""
    return value


def entry_point_params(rec: RunRecord, declared: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The params to pass to the entry point, and the recorded params left out (with why).

    Declared params: the recorded values (MLflow's shell quoting undone). Others are passed the way MLflow passes
    extra params (``--key value``), spelled with ``-`` for ``_`` as click options are; for runs started as MLflow
    projects only those ``mlflow run -P`` could have passed (names without ``_``) - the rest were logged by the code
    from its defaults, which the same code has again.
    """
    started_as_project = rec.tags.get(TAG_SOURCE_TYPE) == "PROJECT"
    params: dict[str, str] = {}
    dropped: list[str] = []
    for key, raw in sorted(rec.params.items()):
        value = _unquote(raw)
        if key in declared:
            params[key] = value
        elif not _PARAM_NAME.match(key):
            dropped.append(f"{key} (not an option name)")
        elif started_as_project and "_" in key:
            dropped.append(f"{key} (logged by the code itself)")
        else:
            params[key.replace("_", "-")] = value
    return params, dropped


def _same_path(value: str, volume: str, base: Path) -> bool:
    if not value or "://" in value:
        return False
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    return os.path.normpath(path.resolve()) == os.path.normpath(Path(volume).resolve())


def rewrite_params(params: Mapping[str, str], replacements: Sequence[tuple[Callable[[str], bool], str]]
                   ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Replace each param value matched by a predicate with its new value; returns (params, {key: {from, to}})."""
    out = dict(params)
    changed: dict[str, dict[str, str]] = {}
    for key, value in params.items():
        for matches, new in replacements:
            if matches(value):
                out[key] = new
                changed[key] = {"from": value, "to": new}
                break
    return out, changed


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_entry_point(project_dir: Path, entry_point: str) -> Any:
    """MLflow's ``EntryPoint`` object of *entry_point* in the project at *project_dir*."""
    from mlflow.exceptions import MlflowException
    from mlflow.projects._project_spec import load_project

    try:
        project = load_project(str(project_dir))
        ep = project.get_entry_point(entry_point)
    except MlflowException as exc:
        raise ReproduceError(f"entry point {entry_point!r}: {exc.message} (project {project_dir})") from None
    if ep is None:
        raise ReproduceError(f"entry point {entry_point!r}: not runnable in project {project_dir}")
    return ep


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str | None:
    """The text of artifact *path* of run *run_id*, or ``None`` when the run has no such artifact."""
    import tempfile

    folder = path.rsplit("/", 1)[0] if "/" in path else None
    if path not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory(prefix="mlflow-anf-") as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text(encoding="utf-8")


def recorded_backend_config(client: MlflowClient, rec: RunRecord) -> dict[str, Any] | None:
    """The backend config the ``mpijob`` backend recorded: its tag, else its ``mlflow_anf/backend-config.json``."""
    from_tag = backend_config_from_tags(rec.tags)
    if from_tag is not None:
        return from_tag
    text = _artifact_text(client, rec.run_id, BACKEND_CONFIG_ARTIFACT)
    return None if text is None else parse_backend_config(text, f"artifact {BACKEND_CONFIG_ARTIFACT}")


def recorded_command(client: MlflowClient, run_id: str) -> str | None:
    """The entry-point command the ``mpijob`` backend ran for *run_id* (from its ``mlflow_anf/mpijob.yaml``)."""
    import yaml

    text = _artifact_text(client, run_id, MPIJOB_ARTIFACT)
    if text is None:
        return None
    manifest = yaml.safe_load(text)
    try:
        containers = manifest["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"]
        args = list(containers[0]["args"])
    except (KeyError, IndexError, TypeError):
        return None
    return args[args.index("--") + 1] if "--" in args[:-1] else None


# ----------------------------------------------------------------------------------------------------- image
def parse_image_ref(ref: str) -> tuple[str, str, str]:
    """``(registry, repository, tag-or-digest)`` of an image reference (Docker Hub defaults applied)."""
    name, _, digest = ref.partition("@")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = "registry-1.docker.io", name if "/" in name else f"library/{name}"
    return registry, repository, digest or tag or "latest"


def check_image(ref: str, timeout_s: float = 10.0) -> ImageCheck:
    """Ask the image's registry (OCI distribution API, anonymously) whether *ref* still exists.

    ``missing`` only on a definite ``404``; no network, credentials needed or anything else is ``unknown``.
    """
    import urllib.error
    import urllib.request

    registry, repository, reference = parse_image_ref(ref)
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    scheme = "http" if host in ("localhost", "127.0.0.1", "::1", "[::1]") else "https"
    url = f"{scheme}://{registry}/v2/{repository}/manifests/{reference}"
    accept = ", ".join([
        "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ])

    def head(token: str | None) -> tuple[int, Mapping[str, str]]:
        headers = {"Accept": accept}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, method="HEAD", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - registry URL
                return resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers or {})

    def anonymous_token(challenge: str) -> str | None:
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = fields.pop("realm", None)
        if not challenge.lower().startswith("bearer") or not realm:
            return None
        query = "&".join(f"{k}={v}" for k, v in fields.items() if k in ("service", "scope"))
        with urllib.request.urlopen(f"{realm}?{query}", timeout=timeout_s) as resp:  # noqa: S310
            body = json.loads(resp.read().decode())
        return body.get("token") or body.get("access_token")

    try:
        status, headers = head(None)
        if status == 401:
            challenge = next((v for k, v in headers.items() if k.lower() == "www-authenticate"), "")
            token = anonymous_token(challenge)
            if token:
                status, headers = head(token)
    except (OSError, ValueError) as exc:  # URLError, timeouts, bad JSON
        return ImageCheck(status="unknown", ref=ref, detail=f"registry {registry} not reachable: {exc}")
    digest = next((v for k, v in headers.items() if k.lower() == "docker-content-digest"), None)
    if status == 200:
        return ImageCheck(status="present", ref=ref, digest=digest, detail=f"{registry} has it")
    if status == 404:
        return ImageCheck(status="missing", ref=ref, detail=f"{registry} answered 404 for {repository}:{reference}")
    return ImageCheck(status="unknown", ref=ref, detail=f"{registry} answered HTTP {status}")


def pin_image(image: str, digest: str | None) -> str:
    """*image* pinned to *digest* (``repo:tag@sha256:...``) unless it already names one."""
    if not digest or "@" in image:
        return image
    return f"{image}@{digest}"


# ------------------------------------------------------------------------------------------------- restoring
def _provider_for(ref: SnapshotRef, rec: RunRecord, opts: ReproduceOptions, backend_config: Mapping[str, Any] | None
                  ) -> Any:
    """The provider that holds the run's snapshot, configured from the options, the provenance or the backend."""
    from mlflow_anf.snapshots import get_provider

    if opts.provider_options:
        return get_provider(ref.provider, **opts.provider_options)
    if ref.provider == "csi" and backend_config is not None:
        from mlflow_anf.backend.config import load_backend_config
        from mlflow_anf.backend.plugin import csi_provider

        return csi_provider(load_backend_config(dict(backend_config)))
    recorded = rec.provenance.provider_options if rec.provenance else {}
    redacted = _redacted_keys(recorded)
    if redacted:
        raise ReproduceError(f"provider {ref.provider!r}: option(s) {', '.join(redacted)} were not recorded "
                             "(secret-looking); pass the options with --option/--provider-config")
    return get_provider(ref.provider, **recorded)


def _short_id() -> str:
    return secrets.token_hex(3)


def restore_target(ref: SnapshotRef, opts: ReproduceOptions, workdir: Path) -> str:
    """Where the data snapshot goes: ``--target``, else ``<workdir>/data`` (local) or ``<volume>-repro-<id>``."""
    if opts.target:
        return opts.target
    if ref.provider == "local":
        return str(workdir / "data")
    base = ref.volume.rsplit("/", 1)[-1]
    return f"{base[:40].rstrip('-.')}-repro-{_short_id()}"


def _restore(ref: SnapshotRef, provider: Any, target: str, **options: Any) -> str:
    from mlflow_anf.snapshots.base import SnapshotError, SnapshotNotFound
    from mlflow_anf.tracking import restore

    try:
        return restore(ref, target, provider=provider, **options)
    except SnapshotNotFound as exc:
        raise SourceGone(f"data snapshot {ref.ref} of the run is gone: {exc}") from None
    except SnapshotError as exc:
        raise ReproduceError(f"data snapshot {ref.ref}: restore to {target} failed: {exc}") from None


# -------------------------------------------------------------------------------------------------- running
@contextlib.contextmanager
def _this_python_first() -> Iterator[None]:
    """Entry-point commands say ``python``: make that this interpreter (``--env-manager local`` semantics)."""
    old = os.environ.get("PATH")
    os.environ["PATH"] = str(Path(sys.executable).parent) + (os.pathsep + old if old else "")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = old


def _json_tag(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= TAG_MAX else text[: TAG_MAX - 3] + "..."


def _link(client: MlflowClient, source: RunRecord, new_run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(new_run_id, tags=[RunTag(k, v) for k, v in {TAG_REPRODUCES: source.run_id, **tags}.items()])
    previous = client.get_run(source.run_id).data.tags.get(TAG_REPRODUCED_BY, "")
    ids = [i for i in previous.split(",") if i and i != new_run_id] + [new_run_id]
    while len(",".join(ids)) > TAG_MAX:
        ids.pop(0)
    client.set_tag(source.run_id, TAG_REPRODUCED_BY, ",".join(ids))


def _create_local_run(client: MlflowClient, rec: RunRecord, experiment_id: str, project_dir: Path,
                      entry_point: str, current: CodeVersion) -> str:
    """The new run, made up front (as MLflow's project runner would) so its links exist before it starts."""
    import getpass

    tags = {
        TAG_SOURCE_NAME: str(project_dir), TAG_SOURCE_TYPE: "PROJECT", TAG_MLFLOW_ENTRY_POINT: entry_point,
        "mlflow.project.backend": "local", "mlflow.project.env": "local",
    }
    with contextlib.suppress(KeyError, OSError):
        tags["mlflow.user"] = getpass.getuser()
    if current.commit:
        tags[TAG_GIT_COMMIT] = current.commit
    name = f"reproduce-{rec.name or rec.run_id[:8]}"[:250]
    return client.create_run(experiment_id=experiment_id, tags=tags, run_name=name).info.run_id


def _log_missing_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    """Params the entry point did not log itself (MLflow's runner would have): log them, never overwrite."""
    from mlflow.entities import Param

    have = client.get_run(run_id).data.params
    missing = [Param(k, v) for k, v in params.items() if k not in have and "-" not in k]
    if missing:
        client.log_batch(run_id, params=missing)


class _Reproduction:
    """One reproduction in phases: :meth:`check` (creates nothing), :meth:`restore`, :meth:`point_at_restored`,
    then :meth:`launch_local` or :meth:`launch_backend`."""

    def __init__(self, rec: RunRecord, opts: ReproduceOptions, client: MlflowClient,
                 say: Callable[[str], None], image_checker: Callable[[str], ImageCheck]) -> None:
        self.rec, self.opts, self.client, self.say, self.image_checker = rec, opts, client, say, image_checker
        self.entry_point = resolve_entry_point(rec)
        self.backend = opts.backend or backend_of(rec.tags)
        self.project_dir = Path()
        self.data_ref: SnapshotRef | None = rec.snapshots.get("data")
        self.backend_config: dict[str, Any] | None = None
        self.current: CodeVersion | None = None
        self.params: dict[str, str] = {}
        self.target: str | None = None
        self.ep: Any = None  # MLflow's EntryPoint, loaded by check()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.workdir = (opts.workdir or Path.cwd() / "reproductions" / f"{rec.run_id[:8]}-{stamp}").resolve()
        self.result = ReproduceResult(source_run_id=rec.run_id, entry_point=self.entry_point, backend=self.backend,
                                      project_dir="")

    # ---- 1. checks ---------------------------------------------------------------------------------------------
    def check(self) -> None:
        rec, opts, ref = self.rec, self.opts, self.data_ref
        if self.backend not in SUPPORTED_BACKENDS:
            raise ReproduceError(f"backend: {self.backend!r} is not supported (supported: "
                                 f"{', '.join(SUPPORTED_BACKENDS)})")
        self.project_dir = resolve_project_dir(rec, opts.project_dir)
        self.result.project_dir = str(self.project_dir)
        self.ep = _load_entry_point(self.project_dir, self.entry_point)
        if ref is None and (opts.restore_only or not opts.restored):
            raise SourceGone(f"run {rec.run_id}: no data snapshot recorded (tags mlflow_anf.snapshot.data.*); nothing to "
                             "restore - pass --restored VOLUME to name the data to run on")
        self.params, dropped = entry_point_params(rec, {n: p.default for n, p in self.ep.parameters.items()})
        if dropped:
            self.result.notes.append("not passed: " + ", ".join(dropped))
        if self.backend == "local":
            self._check_local()
        else:
            self._check_backend()
            self._check_command()
        if ref is not None and not opts.restored:
            target = restore_target(ref, opts, self.workdir)
            if ref.provider == "local" and Path(target).exists():
                raise ReproduceError(f"target: {target} already exists; choose a new --workdir or --target")
            self.target = target

    def _check_local(self) -> None:
        ref = self.data_ref
        if ref is not None and ref.provider == "csi":
            raise ReproduceError(
                f"run {self.rec.run_id} read its data from PVC {ref.volume} (csi) through the local backend: a "
                "restored PVC must be mounted by a pod; reproduce it with --backend mpijob --backend-config ..."
            )
        if ref is not None and ref.provider == "anf" and not (self.opts.restored or self.opts.restore_only):
            raise ReproduceError(
                "anf: a volume restored from the snapshot must be mounted before it can be trained on; run "
                f"`mlflow-anf reproduce {self.rec.run_id} --restore-only`, mount the new volume, then `mlflow-anf "
                f"reproduce {self.rec.run_id} --restored POOL/VOLUME -P <data param>=<mount path>`"
            )
        self.result.code, self.current = check_code(self.rec, self.project_dir, self.opts.allow_code_change)

    def _check_backend(self) -> None:
        rec, opts = self.rec, self.opts
        try:
            recorded = recorded_backend_config(self.client, rec)
        except ProvenanceError as exc:
            if not opts.backend_config:
                raise ReproduceError(str(exc)) from None
            recorded = None
        if recorded is None and not opts.backend_config:
            raise ReproduceError(f"run {rec.run_id}: no backend config recorded (tag mlflow_anf.backend.config, "
                                 f"artifact {BACKEND_CONFIG_ARTIFACT}); pass --backend-config")
        config = _deep_merge(recorded or {}, opts.backend_config)
        redacted = _redacted_keys(config)
        if redacted:
            raise ReproduceError(f"backend config: {', '.join(redacted)} were not recorded (secret-looking); "
                                 "pass them with --backend-config")
        self.result.code = "in the image"
        config = _check_image(rec, config, opts, self.image_checker, self.result, self.say)
        _validate_backend_config(config, self.client)
        ref = self.data_ref
        if ref is not None and ref.provider == "csi" and not opts.restored:
            namespace = ref.volume.rpartition("/")[0]
            if namespace and config.get("namespace") != namespace:
                raise ReproduceError(f"backend config: namespace {config.get('namespace')!r} differs from the "
                                     f"snapshot's {namespace!r}; a PVC restores only in its snapshot's namespace")
        self.backend_config = config

    def _check_command(self) -> None:
        """The image runs the code, but the local MLproject makes the command: it must make the same one."""
        recorded = recorded_command(self.client, self.rec.run_id)
        if recorded is None:
            self.result.notes.append(f"the run logged no {MPIJOB_ARTIFACT}: its command could not be compared")
            return
        now = self.ep.compute_command(self.params, None)
        if now == recorded:
            return
        message = (f"entry point command: run {self.rec.run_id} ran `{recorded}`; the MLproject at "
                   f"{self.project_dir} now gives `{now}`")
        if not self.opts.allow_code_change:
            raise CodeMismatch(f"{message}\nuse the project version the run used, or pass --allow-code-change")
        self.result.notes.append(message)

    # ---- 2. restore --------------------------------------------------------------------------------------------
    def restore(self) -> str:
        if self.opts.restored:
            volume = self.opts.restored
        else:
            ref = self.data_ref
            assert ref is not None
            provider = _provider_for(ref, self.rec, self.opts, self.backend_config)
            options: dict[str, Any] = {}
            snapshot_settings = (self.backend_config or {}).get("snapshot") or {}
            if ref.provider == "csi" and snapshot_settings.get("data"):
                # the backend snapshots the data PVC before submitting: it must be Bound by then
                options = {"wait": True, "timeout_s": float(snapshot_settings.get("timeout_seconds", 600))}
            self.say(f"restoring {ref.ref} to {self.target} ...")
            volume = _restore(ref, provider, self.target, **options)
            self.say(f"restored data: {volume}")
        ref = self.data_ref
        self.result.restored = {"source": ref.ref if ref else "", "volume": volume,
                                "provider": ref.provider if ref else ""}
        return volume

    # ---- 3. point the run at the restored volume ----------------------------------------------------------------
    def point_at_restored(self, volume: str) -> None:
        rec, ref, result = self.rec, self.data_ref, self.result
        replacements: list[tuple[Callable[[str], bool], str]] = []
        base = Path(rec.provenance.cwd) if rec.provenance and rec.provenance.cwd else self.project_dir
        if ref is not None and ref.provider == "local":
            replacements.append((lambda v, vol=ref.volume: _same_path(v, vol, base), volume))
            model_ref = rec.snapshots.get("model")
            if model_ref is not None and model_ref.provider == "local":  # never overwrite the run's outputs
                outputs = str(self.workdir / "outputs")
                replacements.append((lambda v, vol=model_ref.volume: _same_path(v, vol, base), outputs))
        elif ref is not None and ref.provider == "csi":
            pvc, new_pvc = ref.volume.rpartition("/")[2], volume.rpartition("/")[2]
            replacements += [(lambda v: v == pvc, new_pvc), (lambda v: v == ref.volume, volume)]
            if self.backend_config is not None and self.backend_config.get("data_pvc") == pvc:
                self.backend_config["data_pvc"] = new_pvc
                result.rewritten["backend_config.data_pvc"] = {"from": pvc, "to": new_pvc}
        elif ref is not None:
            replacements.append((lambda v: v == ref.volume, volume))
        self.params, rewritten = rewrite_params(self.params, replacements)
        result.rewritten.update(rewritten)
        self.params.update(self.opts.overrides)
        result.params, result.overrides = dict(self.params), dict(self.opts.overrides)

    def _link_tags(self) -> dict[str, str]:
        result = self.result
        tags = {TAG_OVERRIDES: _json_tag(result.overrides), TAG_REWRITTEN: _json_tag(result.rewritten),
                TAG_RESTORED: (result.restored or {}).get("volume", ""), TAG_CODE_CHECK: result.code[:TAG_MAX]}
        if result.image:
            tags[TAG_IMAGE_CHECK] = result.image[:TAG_MAX]
        if result.notes:
            tags[TAG_REPRODUCE_NOTES] = "; ".join(result.notes)[:TAG_MAX]
        return tags

    # ---- 4. run --------------------------------------------------------------------------------------------------
    def launch_local(self) -> None:
        """Create the run (tagged and linked), run the entry point in it, compare it with its source."""
        import mlflow
        from mlflow.entities import Param
        from mlflow.exceptions import ExecutionException

        rec, result, client = self.rec, self.result, self.client
        assert self.current is not None
        experiment_id = self.opts.experiment_id or rec.experiment_id
        new_run_id = _create_local_run(client, rec, experiment_id, self.project_dir, self.entry_point, self.current)
        if rec.tags.get(TAG_SOURCE_TYPE) == "PROJECT":
            # log them as MLflow's project runner did on the source run, so both runs spell them alike
            final, extra = self.ep.compute_parameters(self.params, storage_dir=None)
            client.log_batch(new_run_id, params=[Param(k, v) for k, v in {**final, **extra}.items()])
        result.run_id = new_run_id
        _link(client, rec, new_run_id, self._link_tags())
        self.say(f"reproducing run {rec.run_id} as run {new_run_id} (entry point {self.entry_point}, local backend)")
        try:
            with _this_python_first(), _tracking_uri_of(client):
                mlflow.projects.run(str(self.project_dir), entry_point=self.entry_point, parameters=self.params,
                                    experiment_id=experiment_id, backend="local", env_manager="local",
                                    synchronous=True, run_id=new_run_id)
        except ExecutionException as exc:
            result.status = "FAILED"
            raise ReproductionFailed(f"reproduction run {new_run_id} of run {rec.run_id} failed: {exc}") from None
        _log_missing_params(client, new_run_id, self.params)
        result.status = client.get_run(new_run_id).info.status
        _compare_and_tag(client, rec, new_run_id, self.opts, result)

    def launch_backend(self) -> None:
        """Submit through the backend plugin, link the run it created, optionally wait and compare."""
        import mlflow
        from mlflow.exceptions import ExecutionException

        rec, result, client, opts = self.rec, self.result, self.client, self.opts
        assert self.backend_config is not None
        self.say(f"reproducing run {rec.run_id} through the {self.backend} backend (entry point {self.entry_point})")
        try:
            with _tracking_uri_of(client):
                submitted = mlflow.projects.run(
                    str(self.project_dir), entry_point=self.entry_point, parameters=self.params,
                    experiment_id=opts.experiment_id or rec.experiment_id, backend=self.backend,
                    backend_config=dict(self.backend_config), env_manager="local", synchronous=False,
                )
        except ExecutionException as exc:
            left = "" if opts.restored else (f" (restored volume {(result.restored or {}).get('volume')} is left in "
                                             "place; reuse it with --restored)")
            raise ReproductionFailed(f"reproduction of run {rec.run_id} was not submitted: {exc}{left}") from None
        result.run_id = submitted.run_id
        _link(client, rec, submitted.run_id, self._link_tags())
        self.say(f"submitted reproduction run {submitted.run_id} of run {rec.run_id}")
        if not opts.wait:
            result.status = "SUBMITTED"
            return
        ok = submitted.wait()
        result.status = client.get_run(submitted.run_id).info.status
        if not ok:
            raise ReproductionFailed(f"reproduction run {submitted.run_id} of run {rec.run_id} ended {result.status}")
        _compare_and_tag(client, rec, submitted.run_id, opts, result)


def reproduce(
    run_id: str,
    options: ReproduceOptions | None = None,
    *,
    client: MlflowClient | None = None,
    say: Callable[[str], None] = lambda msg: log.info("%s", msg),
    image_checker: Callable[[str], ImageCheck] = check_image,
) -> ReproduceResult:
    """Reproduce run *run_id* (see the module docstring). Raises :class:`ReproduceError` subclasses; nothing is
    created unless every check passed."""
    opts = options or ReproduceOptions()
    client = _client(client)
    job = _Reproduction(load_run_record(run_id, client), opts, client, say, image_checker)
    job.check()
    volume = job.restore()
    if opts.restore_only:
        job.result.status = "RESTORED"
        return job.result
    job.point_at_restored(volume)
    if job.backend == "local":
        job.launch_local()
    else:
        job.launch_backend()
    return job.result


def _redacted_keys(value: Any, prefix: str = "") -> list[str]:
    """Keys of *value* whose recorded value was redacted (they must be given again)."""
    if isinstance(value, Mapping):
        return [k for key, v in value.items() for k in _redacted_keys(v, f"{prefix}{key}.")]
    if isinstance(value, list):
        return [k for i, v in enumerate(value) for k in _redacted_keys(v, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if value == REDACTED else []


@contextlib.contextmanager
def _tracking_uri_of(client: MlflowClient) -> Iterator[None]:
    """Run MLflow's fluent project API against the store *client* talks to."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(_client_tracking_uri(client))
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _compare_and_tag(client: MlflowClient, rec: RunRecord, new_run_id: str, opts: ReproduceOptions,
                     result: ReproduceResult) -> None:
    new = load_run_record(new_run_id, client)
    result.comparison = compare_runs(rec, new, opts.ignore_metrics)
    client.set_tag(new_run_id, TAG_IDENTICAL, str(result.identical).lower())


def _check_image(rec: RunRecord, config: dict[str, Any], opts: ReproduceOptions,
                 checker: Callable[[str], ImageCheck], result: ReproduceResult, say: Callable[[str], None]
                 ) -> dict[str, Any]:
    """Pin the image to the recorded digest and make sure the registry still has it."""
    recorded = _image_of(rec)
    image = str(config.get("image") or recorded["ref"] or "")
    if not image:
        raise ReproduceError(f"run {rec.run_id}: no image recorded; set image in --backend-config")
    pinned = pin_image(image, recorded["digest"])
    config = {**config, "image": pinned}
    if "@" not in pinned:
        result.notes.append(f"image {pinned} is not pinned by digest: the tag may point at other code by now")
    if not opts.image_check:
        result.image = f"{pinned} (not checked)"
        return config
    check = checker(pinned)
    if check.status == "missing":
        raise SourceGone(f"image: {pinned} of run {rec.run_id} is gone from its registry ({check.detail})")
    if check.status == "unknown":
        say(f"could not check image {pinned}: {check.detail}")
    result.image = f"{pinned} ({check.status}{', ' + check.digest if check.digest else ''})"
    return config


def _validate_backend_config(config: Mapping[str, Any], client: MlflowClient) -> None:
    """What the backend checks when it is called, checked before anything is restored."""
    from mlflow_anf.backend.config import BackendConfigError, load_backend_config
    from mlflow_anf.backend.plugin import pod_tracking_uri

    try:
        pod_tracking_uri(load_backend_config(dict(config)), _client_tracking_uri(client))
    except BackendConfigError as exc:
        raise ReproduceError(f"backend config of the reproduction: {exc}") from None


def _client_tracking_uri(client: MlflowClient) -> str:
    import mlflow

    return getattr(getattr(client, "_tracking_client", None), "tracking_uri", None) or mlflow.get_tracking_uri()
