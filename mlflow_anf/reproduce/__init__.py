"""Reproduce a logged run from its snapshots, and compare two runs.

:func:`reproduce` re-runs the entry point of a run with the same params through the same backend, on a *new* volume
restored from the run's data snapshot. It is five functions, each returning a value the next one takes; nothing is
changed in place between them:

1. :func:`read` -> :class:`RunRecord`: the run's params, tags, snapshot references and provenance
   (:mod:`~mlflow_anf.reproduce.record`);
2. :func:`plan` -> :class:`ReproductionPlan` (frozen): backend, project, entry point, params, the code check (local
   backend: the project tree's content digest or the same clean commit; ``mpijob``: the command and the image in its
   registry), the backend config, the restore target. It checks everything and **creates nothing**
   (:mod:`~mlflow_anf.reproduce.planning`);
3. :func:`restore` -> :class:`RestoredData`: the data snapshot restored to the new volume - a directory, a PVC whose
   ``dataSource`` is the VolumeSnapshot, an ANF volume (mount it, then ``--restored``) - whatever the provider makes;
4. :func:`point_at` -> :class:`PointedRun`: params naming the recorded data (or model output) volume rewritten to the
   new one, and the backend config's ``data_pvc``; user overrides (``-P``) last; all recorded
   (:mod:`~mlflow_anf.reproduce.restoring`);
5. :func:`launch` -> :class:`ReproduceResult`: :func:`mlflow.projects.run`, the new run tagged
   ``mlflow_anf.reproduces=<run>`` and the old one ``mlflow_anf.reproduced_by=<runs>``; a finished reproduction is
   compared with its source (final metrics without timing ones, data digest, code)
   (:mod:`~mlflow_anf.reproduce.running`).

:func:`compare_runs` is the pure core of ``mlflow-anf diff`` (:mod:`~mlflow_anf.reproduce.diff`); the registry check is
:mod:`~mlflow_anf.reproduce.image`. MLflow, Kubernetes and the providers are imported inside the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlflow_anf.progress import SILENT, Progress
from mlflow_anf.reproduce.checks import (
    check_code,
    entry_point_params,
    resolve_entry_point,
    resolve_project_dir,
)
from mlflow_anf.reproduce.diff import (
    TIMING_METRICS,
    DiffSummary,
    MetricRow,
    Row,
    RunDiff,
    RunSide,
    compare_runs,
    diff_runs,
    is_timing_metric,
)
from mlflow_anf.reproduce.errors import CodeMismatch, ReproduceError, ReproductionFailed, SourceGone
from mlflow_anf.reproduce.image import ImageCheck, check_image, parse_image_ref, pin_image
from mlflow_anf.reproduce.running import launch, result_of
from mlflow_anf.reproduce.models import ReproduceOptions, ReproduceResult
from mlflow_anf.reproduce.names import (
    BACKEND_CONFIG_ARTIFACT,
    MPIJOB_ARTIFACT,
    SUPPORTED_BACKENDS,
    TAG_CODE_CHECK,
    TAG_GIT_COMMIT,
    TAG_IDENTICAL,
    TAG_IMAGE_CHECK,
    TAG_LEGACY_ENTRY_POINT,
    TAG_MAX,
    TAG_OVERRIDES,
    TAG_RESTORED,
    TAG_REWRITTEN,
    TAG_SOURCE_NAME,
    TAG_SOURCE_TYPE,
)
from mlflow_anf.reproduce.planning import ReproductionPlan, plan, restore_target
from mlflow_anf.reproduce.record import RunRecord, load_run_record, read, recorded_backend_config, recorded_command
from mlflow_anf.reproduce.restoring import PointedRun, RestoredData, point_at, restore, rewrite_params
from mlflow_anf.vocabulary import (
    ARTIFACT_BACKEND_CONFIG,
    ARTIFACT_MPIJOB,
    TAG_REPRODUCE_CODE,
    TAG_REPRODUCE_IDENTICAL,
    TAG_REPRODUCE_IMAGE,
    TAG_REPRODUCE_NOTES,
    TAG_REPRODUCE_OVERRIDES,
    TAG_REPRODUCE_RESTORED,
    TAG_REPRODUCE_REWRITTEN,
    TAG_REPRODUCED_BY,
    TAG_REPRODUCES,
    TAG_VALUE_MAX,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def reproduce(
    run_id: str,
    options: ReproduceOptions | None = None,
    *,
    client: MlflowClient | None = None,
    say: Callable[[str], None] = lambda msg: log.info("%s", msg),
    image_checker: Callable[[str], ImageCheck] = check_image,
    progress: Progress = SILENT,
) -> ReproduceResult:
    """Reproduce run *run_id* (see the module docstring). Raises :class:`ReproduceError` subclasses; nothing is
    created unless every check passed. *progress* shows the restore while it runs (a CLI's display)."""
    from mlflow_anf.reproduce.record import client_or_default

    opts = options or ReproduceOptions()
    client = client_or_default(client)
    the_plan = plan(read(run_id, client), opts, client=client, image_checker=image_checker, say=say)
    restored = restore(the_plan, say=say, progress=progress)
    if opts.restore_only:
        return result_of(the_plan, restored, status="RESTORED")
    return launch(the_plan, point_at(the_plan, restored), restored, client=client, say=say)


__all__ = [
    "ARTIFACT_BACKEND_CONFIG", "ARTIFACT_MPIJOB", "BACKEND_CONFIG_ARTIFACT", "MPIJOB_ARTIFACT", "SUPPORTED_BACKENDS",
    "TAG_CODE_CHECK", "TAG_GIT_COMMIT", "TAG_IDENTICAL", "TAG_IMAGE_CHECK", "TAG_LEGACY_ENTRY_POINT", "TAG_MAX",
    "TAG_OVERRIDES", "TAG_REPRODUCED_BY", "TAG_REPRODUCES", "TAG_REPRODUCE_CODE", "TAG_REPRODUCE_IDENTICAL",
    "TAG_REPRODUCE_IMAGE", "TAG_REPRODUCE_NOTES", "TAG_REPRODUCE_OVERRIDES", "TAG_REPRODUCE_RESTORED",
    "TAG_REPRODUCE_REWRITTEN", "TAG_RESTORED", "TAG_REWRITTEN", "TAG_SOURCE_NAME", "TAG_SOURCE_TYPE", "TAG_VALUE_MAX",
    "TIMING_METRICS", "CodeMismatch", "DiffSummary", "ImageCheck", "MetricRow", "PointedRun", "ReproduceError",
    "ReproduceOptions", "ReproduceResult", "ReproductionFailed", "ReproductionPlan", "RestoredData", "Row", "RunDiff",
    "RunRecord", "RunSide", "SourceGone", "check_code", "check_image", "compare_runs", "diff_runs",
    "entry_point_params", "is_timing_metric", "launch", "load_run_record", "parse_image_ref", "pin_image", "plan",
    "point_at", "read", "recorded_backend_config", "recorded_command", "reproduce", "resolve_entry_point",
    "resolve_project_dir", "restore", "restore_target", "result_of", "rewrite_params",
]
