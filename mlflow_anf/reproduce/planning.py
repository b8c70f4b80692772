"""Step 2 of a reproduction: a frozen :class:`ReproductionPlan`, everything decided and checked, nothing created.

:func:`plan` resolves the backend, the project directory and the entry point, the params to pass, checks the code
(local backend: the project tree; ``mpijob``: the command the local MLproject makes and the image in the registry),
merges and validates the backend config and picks the restore target. It reads the run, the project and the
registry; it creates no MLflow run, no volume, no snapshot and no Kubernetes object. What a provider needs is asked
of its traits (:func:`mlflow_anf.snapshots.traits_for`), never of its name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.provenance import CodeVersion, ProvenanceError, backend_of
from mlflow_anf.reproduce.checks import (
    check_code,
    deep_merge,
    entry_point_params,
    load_entry_point,
    redacted_keys,
    resolve_entry_point,
    resolve_project_dir,
    validate_backend_config,
)
from mlflow_anf.reproduce.diff import image_of
from mlflow_anf.reproduce.errors import CodeMismatch, ReproduceError, SourceGone
from mlflow_anf.reproduce.image import ImageCheck, check_image, pin_and_check
from mlflow_anf.reproduce.models import ReproduceOptions
from mlflow_anf.reproduce.names import BACKEND_CONFIG_ARTIFACT, MPIJOB_ARTIFACT, SUPPORTED_BACKENDS
from mlflow_anf.reproduce.record import RunRecord, client_or_default, recorded_backend_config, recorded_command
from mlflow_anf.snapshots import traits_for
from mlflow_anf.vocabulary import ROLE_DATA, SNAPSHOT_LEVEL, TAG_BACKEND_CONFIG, SnapshotRef, tag

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


class ReproductionPlan(BaseModel):
    """What a reproduction will do, decided and checked up front; the later steps only read it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    source: RunRecord
    options: ReproduceOptions
    entry_point: str
    backend: str
    project_dir: Path
    workdir: Path = Field(description="local: where the restored data/ and the new outputs/ go")
    params: dict[str, str] = Field(description="the recorded params to pass, before pointing them at the restore")
    param_base: Path = Field(description="relative path params are taken from here (the run's recorded cwd)")
    data: SnapshotRef | None = Field(None, description="the run's data snapshot (None: --restored names the data)")
    target: str | None = Field(None, description="the new volume to restore into (None: --restored)")
    code: str = Field("", description="the code check's verdict")
    current_code: CodeVersion | None = Field(None, description="local backend: the project's code version now")
    backend_config: dict[str, Any] | None = Field(None, description="mpijob: merged, image pinned, validated")
    image: str | None = Field(None, description="mpijob: the image check's verdict")
    restore_wait: bool = Field(False, description="the restored volume must be usable when restore returns")
    restore_timeout_s: float | None = None
    notes: tuple[str, ...] = ()


def _default_workdir(rec: RunRecord) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path.cwd() / "reproductions" / f"{rec.run_id[:8]}-{stamp}"


def restore_target(ref: SnapshotRef, opts: ReproduceOptions, workdir: Path) -> str:
    """Where the data snapshot goes: ``--target``, else the provider's default (local: ``<workdir>/data``; others: a
    new ``<volume>-repro-<id>``)."""
    return opts.target or traits_for(ref.provider).default_restore_target(ref.volume, workdir)


def _checked_target(ref: SnapshotRef, opts: ReproduceOptions, workdir: Path) -> str:
    target = restore_target(ref, opts, workdir)
    root = traits_for(ref.provider).local_root(target)
    if root is not None and root.exists():
        raise ReproduceError(f"target: {target} already exists; choose a new --workdir or --target")
    return target


def _check_local(rec: RunRecord, ref: SnapshotRef | None, opts: ReproduceOptions, project_dir: Path
                 ) -> tuple[str, CodeVersion]:
    """The local backend runs here: the data must be a directory here, and the code the recorded code."""
    if ref is not None and not (opts.restored or opts.restore_only):
        traits = traits_for(ref.provider)
        if traits.restore_needs_mount:
            raise ReproduceError(
                f"run {rec.run_id} read its data from {ref.volume} ({ref.provider}) and reproduces through the local "
                f"backend: {traits.mount_hint}"
            )
    return check_code(rec, project_dir, opts.allow_code_change)


def _backend_config(rec: RunRecord, opts: ReproduceOptions, client: MlflowClient) -> dict[str, Any]:
    """The recorded backend config with ``--backend-config`` merged over it."""
    try:
        recorded = recorded_backend_config(client, rec)
    except ProvenanceError as exc:
        if not opts.backend_config:
            raise ReproduceError(str(exc)) from None
        recorded = None
    if recorded is None and not opts.backend_config:
        raise ReproduceError(f"run {rec.run_id}: no backend config recorded (tag {TAG_BACKEND_CONFIG}, "
                             f"artifact {BACKEND_CONFIG_ARTIFACT}); pass --backend-config")
    config = deep_merge(recorded or {}, opts.backend_config)
    redacted = redacted_keys(config)
    if redacted:
        raise ReproduceError(f"backend config: {', '.join(redacted)} were not recorded (secret-looking); "
                             "pass them with --backend-config")
    return config


def _check_backend(rec: RunRecord, ref: SnapshotRef | None, opts: ReproduceOptions, client: MlflowClient,
                   image_checker: Callable[[str], ImageCheck], say: Callable[[str], None]) -> dict[str, Any]:
    """The plan fields of a run through the ``mpijob`` backend: its config, the image, how to restore for it."""
    config, image, notes = pin_and_check(rec, _backend_config(rec, opts, client), image_of(rec),
                                         check=opts.image_check, checker=image_checker, say=say)
    loaded = validate_backend_config(config, client)
    if ref is not None and not opts.restored:
        scope = traits_for(ref.provider).restore_scope(ref.volume)
        if scope is not None and loaded.namespace != scope:
            raise ReproduceError(f"backend config: namespace {loaded.namespace!r} differs from the snapshot's "
                                 f"{scope!r}; a {ref.provider} snapshot restores only in its own namespace ({scope})")
    # the backend snapshots the data volume before it submits: a restored volume must be usable by then (one that is
    # a directory here is, when the restore returns)
    wait = bool(loaded.snapshot.data) and ref is not None and traits_for(ref.provider).restore_needs_mount
    return {"backend_config": config, "image": image, "notes": notes, "code": "in the image", "restore_wait": wait,
            "restore_timeout_s": float(loaded.snapshot.timeout_seconds) if wait else None}


def _check_command(rec: RunRecord, ep: Any, params: dict[str, str], project_dir: Path, opts: ReproduceOptions,
                   client: MlflowClient) -> list[str]:
    """The image runs the code, but the local MLproject makes the command: it must make the same one."""
    recorded = recorded_command(client, rec.run_id)
    if recorded is None:
        return [f"the run logged no {MPIJOB_ARTIFACT}: its command could not be compared"]
    now = ep.compute_command(dict(params), None)
    if now == recorded:
        return []
    message = (f"entry point command: run {rec.run_id} ran `{recorded}`; the MLproject at {project_dir} now gives "
               f"`{now}`")
    if not opts.allow_code_change:
        raise CodeMismatch(f"{message}\nuse the project version the run used, or pass --allow-code-change")
    return [message]


def plan(record: RunRecord, options: ReproduceOptions | None = None, *, client: MlflowClient | None = None,
         image_checker: Callable[[str], ImageCheck] = check_image,
         say: Callable[[str], None] = lambda msg: log.info("%s", msg)) -> ReproductionPlan:
    """Step 2: decide and check everything about reproducing *record*; creates nothing (see the module docstring).

    Raises :class:`ReproduceError` subclasses: :class:`SourceGone` (no data snapshot, a gone commit or image),
    :class:`CodeMismatch`, or a plain :class:`ReproduceError` for a bad backend, config or target.
    """
    opts = options or ReproduceOptions()
    client = client_or_default(client)
    entry_point = resolve_entry_point(record)
    backend = opts.backend or backend_of(record.tags)
    if backend not in SUPPORTED_BACKENDS:
        raise ReproduceError(f"backend: {backend!r} is not supported (supported: {', '.join(SUPPORTED_BACKENDS)})")
    project_dir = resolve_project_dir(record, opts.project_dir)
    ep = load_entry_point(project_dir, entry_point)
    ref = record.snapshots.get(ROLE_DATA)
    if ref is None and (opts.restore_only or not opts.restored):
        raise SourceGone(f"run {record.run_id}: no data snapshot recorded (tags {tag(SNAPSHOT_LEVEL, ROLE_DATA)}.*); "
                         "nothing to restore - pass --restored VOLUME to name the data to run on")
    params, dropped = entry_point_params(record, {n: p.default for n, p in ep.parameters.items()})
    notes = ["not passed: " + ", ".join(dropped)] if dropped else []
    fields: dict[str, Any] = {}
    if backend == "local":
        fields["code"], fields["current_code"] = _check_local(record, ref, opts, project_dir)
    else:
        fields = _check_backend(record, ref, opts, client, image_checker, say)
        notes += fields.pop("notes") + _check_command(record, ep, params, project_dir, opts, client)
    workdir = (opts.workdir or _default_workdir(record)).resolve()
    prov = record.provenance
    return ReproductionPlan(
        source=record, options=opts, entry_point=entry_point, backend=backend, project_dir=project_dir,
        workdir=workdir, params=params, param_base=Path(prov.cwd) if prov and prov.cwd else project_dir, data=ref,
        target=_checked_target(ref, opts, workdir) if ref is not None and not opts.restored else None,
        notes=tuple(notes), **fields,
    )
