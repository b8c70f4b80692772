"""The checks of a reproduction plan, each a function of what it checks: the entry point and project, the code,
the params to pass, the backend config. They read (the project, the tracking store's URI) and create nothing."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlflow_anf.provenance import (
    REDACTED,
    CodeVersion,
    code_version,
    commit_exists,
    find_project_root,
    short_digest,
)
from mlflow_anf.reproduce.diff import code_of
from mlflow_anf.reproduce.errors import CodeMismatch, ReproduceError, SourceGone
from mlflow_anf.reproduce.names import PARAM_NAME, TAG_LEGACY_ENTRY_POINT, TAG_SOURCE_NAME, TAG_SOURCE_TYPE
from mlflow_anf.reproduce.record import RunRecord
from mlflow_anf.vocabulary import MLFLOW_TAG_ENTRY_POINT as TAG_MLFLOW_ENTRY_POINT
from mlflow_anf.vocabulary import PARAM_PREFIX

if TYPE_CHECKING:
    from mlflow import MlflowClient


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
    recorded = code_of(rec)
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
        if key.startswith(PARAM_PREFIX):  # lineage mlflow-anf recorded (the data snapshot), never an input
            continue
        if key in declared:
            params[key] = value
        elif not PARAM_NAME.match(key):
            dropped.append(f"{key} (not an option name)")
        elif started_as_project and "_" in key:
            dropped.append(f"{key} (logged by the code itself)")
        else:
            params[key.replace("_", "-")] = value
    return params, dropped


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_entry_point(project_dir: Path, entry_point: str) -> Any:
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


def redacted_keys(value: Any, prefix: str = "") -> list[str]:
    """Keys of *value* whose recorded value was redacted (they must be given again)."""
    if isinstance(value, Mapping):
        return [k for key, v in value.items() for k in redacted_keys(v, f"{prefix}{key}.")]
    if isinstance(value, list):
        return [k for i, v in enumerate(value) for k in redacted_keys(v, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if value == REDACTED else []


def validate_backend_config(config: Mapping[str, Any], client: MlflowClient) -> Any:
    """What the backend checks when it is called, checked before anything is restored; returns the backend's
    config model (:class:`~mlflow_anf.backend.config.MPIJobBackendConfig`)."""
    from mlflow_anf.backend.config import BackendConfigError, load_backend_config
    from mlflow_anf.backend.plugin import pod_tracking_uri

    try:
        loaded = load_backend_config(dict(config))
        pod_tracking_uri(loaded, client_tracking_uri(client))
    except BackendConfigError as exc:
        raise ReproduceError(f"backend config of the reproduction: {exc}") from None
    return loaded


def client_tracking_uri(client: MlflowClient) -> str:
    import mlflow

    return getattr(getattr(client, "_tracking_client", None), "tracking_uri", None) or mlflow.get_tracking_uri()
