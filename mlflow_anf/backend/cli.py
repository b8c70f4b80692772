"""``mlflow-anf render`` and ``mlflow-anf doctor`` (registered lazily by :mod:`mlflow_anf.cli`).

Exit codes follow ``mlflow-anf``'s: 0 ok, 1 a doctor check failed, 2 bad input (backend config, project, params).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


def _params(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: use NAME=VALUE", param_hint="-P/--param")
        if name in out:
            raise click.BadParameter(f"{name!r} given twice", param_hint="-P/--param")
        out[name] = value
    return out


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _load(backend_config: str) -> Any:
    from mlflow_anf.backend.config import BackendConfigError, load_backend_config

    try:
        return load_backend_config(backend_config)
    except BackendConfigError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)


_CONFIG_HELP = "Backend config: a .json file or a JSON string (the same as `mlflow run --backend-config`)."
MLFLOW_DEFAULT_ENTRY_POINT = "main"  # `mlflow run`'s -e default (mlflow/cli/__init__.py, option --entry-point)
_SCRIPT_SUFFIXES = (".py", ".sh", ".R")  # what MLflow runs as a script entry point (Project.get_entry_point)


def project_entry_points(project_uri: str, version: str | None) -> list[str]:
    """The entry points of the project's MLproject, read by MLflow's own loader (fetching a Git URI as
    ``mlflow run`` does)."""
    from mlflow.projects._project_spec import load_project
    from mlflow.projects.utils import _fetch_project

    looks_local = "://" not in project_uri and not project_uri.startswith("git@")
    if looks_local and not os.path.isdir(project_uri):
        raise click.UsageError(f"project {project_uri!r}: no such directory (give the folder that holds the MLproject "
                               "file, or a Git URI)")
    try:
        work_dir = _fetch_project(uri=project_uri, version=version)
    except Exception as exc:  # noqa: BLE001 - git's errors (GitCommandError) run to many lines: keep the first
        summary = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.UsageError(f"project {project_uri!r}: cannot fetch it ({summary}); check the URI and --version"
                               ) from None
    project = load_project(work_dir)
    return sorted(project._entry_points)  # MLflow keeps them there (mlflow/projects/_project_spec.py, Project)


def resolve_entry_point(entry_point: str | None, available: list[str], project_uri: str) -> str:
    """The entry point to render: the one given (an MLproject entry point or a script, as ``mlflow run`` takes it);
    without ``-e``, ``main`` as ``mlflow run`` does, else the project's only entry point. Otherwise a
    :class:`click.UsageError` listing the project's entry points."""
    listed = ", ".join(available) or "none"
    if entry_point is not None:
        if entry_point in available or entry_point.endswith(_SCRIPT_SUFFIXES):
            return entry_point
        raise click.UsageError(f"entry point {entry_point!r} is not in project {project_uri!r}; its entry points: "
                               f"{listed} (or a .py/.sh script): pass one with -e")
    if MLFLOW_DEFAULT_ENTRY_POINT in available:
        return MLFLOW_DEFAULT_ENTRY_POINT
    if len(available) == 1:
        return available[0]
    example = next((n for n in ("train", *available) if n in available), "NAME")
    raise click.UsageError(f"project {project_uri!r} has no entry point {MLFLOW_DEFAULT_ENTRY_POINT!r} (what "
                           f"`mlflow run` runs without -e); pick one of {listed} with -e, e.g. -e {example}")


@click.command("render")
@click.argument("project_uri", default=".")
@click.option("-e", "--entry-point", default=None,
              help="MLproject entry point  [default: main, as for `mlflow run`; else the project's only one]")
@click.option("-P", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Entry-point parameter.")
@click.option("-c", "--backend-config", required=True, help=_CONFIG_HELP)
@click.option("--version", default=None, help="Git commit or branch of a Git project URI.")
@click.option("--run-id", default="dry-run", show_default=True,
              help="MLflow run id to render for: with a run's id (and --experiment-id) the output is the objects "
                   "`mlflow run` created for it, up to what the cluster adds (see mlflow_anf.backend.plan).")
@click.option("--experiment-id", default="0", show_default=True)
@click.option("--tracking-uri", default=None,
              help="This client's tracking URI (default: MLflow's); the pods use the config's tracking_uri if set.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def render(project_uri: str, entry_point: str | None, params: tuple[str, ...], backend_config: str,
           version: str | None, run_id: str, experiment_id: str, tracking_uri: str | None, output: str) -> None:
    """Print the manifests `mlflow run PROJECT_URI --backend mpijob` would create (nothing is submitted):
    the data VolumeSnapshot (when snapshot.data is set) and the MPIJob - the backend's own job plan."""
    from mlflow.exceptions import MlflowException

    from mlflow_anf.backend.config import BackendConfigError
    from mlflow_anf.backend.params import EntryPointParamError, model_location
    from mlflow_anf.backend.plan import plan_job
    from mlflow_anf.backend.plugin import load_job_entry_point, pod_tracking_uri
    from mlflow_anf.backend.render import JobRequest

    config = _load(backend_config)
    values = _params(params)
    try:
        entry_point = resolve_entry_point(entry_point, project_entry_points(project_uri, version), project_uri)
    except (MlflowException, OSError) as exc:
        _fail(f"project {project_uri!r}: {exc}", EXIT_BAD_INPUT)
    try:
        command, project_name, work_dir, ep = load_job_entry_point(project_uri, entry_point, values, version)
        model_path = model_location(work_dir, ep, values, config)
    except EntryPointParamError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except (MlflowException, OSError) as exc:
        _fail(f"project {project_uri!r}, entry point {entry_point!r}: {exc}", EXIT_BAD_INPUT)
    if tracking_uri is None:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    try:
        pod_uri = pod_tracking_uri(config, tracking_uri)
    except BackendConfigError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    req = JobRequest(run_id=run_id, experiment_id=experiment_id, tracking_uri=pod_uri, command=command,
                     entry_point=entry_point, project_name=project_name, model_path=model_path)
    manifests = plan_job(config, req).manifests()
    if output == "json":
        click.echo(json.dumps(manifests if len(manifests) > 1 else manifests[0], indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump_all(manifests, sort_keys=False), nl=False)


@click.command("doctor")
@click.option("-c", "--backend-config", required=True, help=_CONFIG_HELP)
@click.option("--tracking-uri", default=None, help="This client's tracking URI (default: MLflow's).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def doctor(backend_config: str, tracking_uri: str | None, output: str) -> None:
    """Check that the cluster is ready for `mlflow run --backend mpijob` with this backend config: MPIJob and
    VolumeSnapshot APIs, snapshot and storage classes, the data PVC (Bound, ReadWriteMany), your RBAC, and a
    tracking URI the pods can reach. One line per check, with the fix; exit 1 when one fails."""
    from mlflow_anf.backend.doctor import run_doctor

    config = _load(backend_config)
    if tracking_uri is None:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    checks = run_doctor(config, tracking_uri=tracking_uri)
    if output == "json":
        click.echo(json.dumps([c.model_dump() for c in checks], indent=2))
    else:
        for check in checks:
            click.echo(check.line())
        failed = sum(c.status == "fail" for c in checks)
        warned = sum(c.status == "warn" for c in checks)
        click.echo(f"{len(checks) - failed - warned} ok, {warned} warning(s), {failed} failed")
    if any(c.status == "fail" for c in checks):
        sys.exit(EXIT_CHECK_FAILED)
