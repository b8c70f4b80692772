"""Step 5 of a reproduction: run the plan's entry point on the pointed params through its backend, link the new run
to its source (``mlflow_anf.reproduces`` / ``mlflow_anf.reproduced_by``) and compare a finished one with it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_anf.provenance import CodeVersion
from mlflow_anf.reproduce.checks import client_tracking_uri, load_entry_point
from mlflow_anf.reproduce.diff import compare_runs
from mlflow_anf.reproduce.errors import ReproductionFailed
from mlflow_anf.reproduce.models import ReproduceResult
from mlflow_anf.reproduce.names import (
    TAG_CODE_CHECK,
    TAG_GIT_COMMIT,
    TAG_IDENTICAL,
    TAG_IMAGE_CHECK,
    TAG_MAX,
    TAG_OVERRIDES,
    TAG_RESTORED,
    TAG_REWRITTEN,
    TAG_SOURCE_NAME,
    TAG_SOURCE_TYPE,
)
from mlflow_anf.reproduce.planning import ReproductionPlan
from mlflow_anf.reproduce.record import RunRecord, client_or_default, load_run_record
from mlflow_anf.reproduce.restoring import PointedRun, RestoredData
from mlflow_anf.vocabulary import (
    MLFLOW_TAG_BACKEND,
    MLFLOW_TAG_ENTRY_POINT,
    MLFLOW_TAG_ENV,
    MLFLOW_TAG_USER,
    TAG_REPRODUCE_NOTES,
    TAG_REPRODUCED_BY,
    TAG_REPRODUCES,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def result_of(plan: ReproductionPlan, restored: RestoredData | None = None, pointed: PointedRun | None = None,
              **fields: Any) -> ReproduceResult:
    """The report of a reproduction from what its steps returned."""
    values: dict[str, Any] = {
        "source_run_id": plan.source.run_id, "entry_point": plan.entry_point, "backend": plan.backend,
        "project_dir": str(plan.project_dir), "code": plan.code, "image": plan.image, "notes": list(plan.notes),
        "restored": restored.report() if restored is not None else None,
    }
    if pointed is not None:
        values.update(params=dict(pointed.params), overrides=dict(pointed.overrides), rewritten=dict(pointed.rewritten))
    return ReproduceResult(**{**values, **fields})


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


@contextlib.contextmanager
def _tracking_uri_of(client: MlflowClient) -> Iterator[None]:
    """Run MLflow's fluent project API against the store *client* talks to."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client_tracking_uri(client))
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _json_tag(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= TAG_MAX else text[: TAG_MAX - 3] + "..."


def _link_tags(plan: ReproductionPlan, restored: RestoredData, pointed: PointedRun) -> dict[str, str]:
    tags = {TAG_OVERRIDES: _json_tag(pointed.overrides), TAG_REWRITTEN: _json_tag(pointed.rewritten),
            TAG_RESTORED: restored.volume, TAG_CODE_CHECK: plan.code[:TAG_MAX]}
    if plan.image:
        tags[TAG_IMAGE_CHECK] = plan.image[:TAG_MAX]
    if plan.notes:
        tags[TAG_REPRODUCE_NOTES] = "; ".join(plan.notes)[:TAG_MAX]
    return tags


def _link(client: MlflowClient, source: RunRecord, new_run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(new_run_id, tags=[RunTag(k, v) for k, v in {TAG_REPRODUCES: source.run_id, **tags}.items()])
    previous = client.get_run(source.run_id).data.tags.get(TAG_REPRODUCED_BY, "")
    ids = [i for i in previous.split(",") if i and i != new_run_id] + [new_run_id]
    while len(",".join(ids)) > TAG_MAX:
        ids.pop(0)
    client.set_tag(source.run_id, TAG_REPRODUCED_BY, ",".join(ids))


def _create_local_run(client: MlflowClient, plan: ReproductionPlan, experiment_id: str, current: CodeVersion) -> str:
    """The new run, made up front (as MLflow's project runner would) so its links exist before it starts."""
    import getpass

    tags = {
        TAG_SOURCE_NAME: str(plan.project_dir), TAG_SOURCE_TYPE: "PROJECT", MLFLOW_TAG_ENTRY_POINT: plan.entry_point,
        MLFLOW_TAG_BACKEND: "local", MLFLOW_TAG_ENV: "local",
    }
    with contextlib.suppress(KeyError, OSError):
        tags[MLFLOW_TAG_USER] = getpass.getuser()
    if current.commit:
        tags[TAG_GIT_COMMIT] = current.commit
    name = f"reproduce-{plan.source.name or plan.source.run_id[:8]}"[:250]
    return client.create_run(experiment_id=experiment_id, tags=tags, run_name=name).info.run_id


def _log_missing_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    """Params the entry point did not log itself (MLflow's runner would have): log them, never overwrite."""
    from mlflow.entities import Param

    have = client.get_run(run_id).data.params
    missing = [Param(k, v) for k, v in params.items() if k not in have and "-" not in k]
    if missing:
        client.log_batch(run_id, params=missing)


def _compare(client: MlflowClient, plan: ReproductionPlan, new_run_id: str, result: ReproduceResult
             ) -> ReproduceResult:
    comparison = compare_runs(plan.source, load_run_record(new_run_id, client), plan.options.ignore_metrics)
    result = result.model_copy(update={"comparison": comparison})
    client.set_tag(new_run_id, TAG_IDENTICAL, str(result.identical).lower())
    return result


def _launch_local(plan: ReproductionPlan, pointed: PointedRun, restored: RestoredData, client: MlflowClient,
                  say: Callable[[str], None]) -> ReproduceResult:
    """Create the run (tagged and linked), run the entry point in it, compare it with its source."""
    import mlflow
    from mlflow.entities import Param
    from mlflow.exceptions import ExecutionException

    rec = plan.source
    assert plan.current_code is not None
    experiment_id = plan.options.experiment_id or rec.experiment_id
    new_run_id = _create_local_run(client, plan, experiment_id, plan.current_code)
    if rec.tags.get(TAG_SOURCE_TYPE) == "PROJECT":
        # log them as MLflow's project runner did on the source run, so both runs spell them alike
        ep = load_entry_point(plan.project_dir, plan.entry_point)
        final, extra = ep.compute_parameters(dict(pointed.params), storage_dir=None)
        client.log_batch(new_run_id, params=[Param(k, v) for k, v in {**final, **extra}.items()])
    _link(client, rec, new_run_id, _link_tags(plan, restored, pointed))
    say(f"reproducing run {rec.run_id} as run {new_run_id} (entry point {plan.entry_point}, local backend)")
    try:
        with _this_python_first(), _tracking_uri_of(client):
            mlflow.projects.run(str(plan.project_dir), entry_point=plan.entry_point, parameters=dict(pointed.params),
                                experiment_id=experiment_id, backend="local", env_manager="local",
                                synchronous=True, run_id=new_run_id)
    except ExecutionException as exc:
        raise ReproductionFailed(f"reproduction run {new_run_id} of run {rec.run_id} failed: {exc}") from None
    _log_missing_params(client, new_run_id, pointed.params)
    result = result_of(plan, restored, pointed, run_id=new_run_id, status=client.get_run(new_run_id).info.status)
    return _compare(client, plan, new_run_id, result)


def _launch_backend(plan: ReproductionPlan, pointed: PointedRun, restored: RestoredData, client: MlflowClient,
                    say: Callable[[str], None]) -> ReproduceResult:
    """Submit through the backend plugin, link the run it created, optionally wait and compare."""
    import mlflow
    from mlflow.exceptions import ExecutionException

    rec, opts = plan.source, plan.options
    assert pointed.backend_config is not None
    say(f"reproducing run {rec.run_id} through the {plan.backend} backend (entry point {plan.entry_point})")
    try:
        with _tracking_uri_of(client):
            submitted = mlflow.projects.run(
                str(plan.project_dir), entry_point=plan.entry_point, parameters=dict(pointed.params),
                experiment_id=opts.experiment_id or rec.experiment_id, backend=plan.backend,
                backend_config=dict(pointed.backend_config), env_manager="local", synchronous=False,
            )
    except ExecutionException as exc:
        left = (f" (restored volume {restored.volume} is left in place; reuse it with --restored)"
                if restored.restored_now else "")
        raise ReproductionFailed(f"reproduction of run {rec.run_id} was not submitted: {exc}{left}") from None
    _link(client, rec, submitted.run_id, _link_tags(plan, restored, pointed))
    say(f"submitted reproduction run {submitted.run_id} of run {rec.run_id}")
    if not opts.wait:
        return result_of(plan, restored, pointed, run_id=submitted.run_id, status="SUBMITTED")
    ok = submitted.wait()
    status = client.get_run(submitted.run_id).info.status
    if not ok:
        raise ReproductionFailed(f"reproduction run {submitted.run_id} of run {rec.run_id} ended {status}")
    return _compare(client, plan, submitted.run_id, result_of(plan, restored, pointed, run_id=submitted.run_id,
                                                              status=status))


def launch(plan: ReproductionPlan, pointed: PointedRun, restored: RestoredData, *,
           client: MlflowClient | None = None,
           say: Callable[[str], None] = lambda msg: log.info("%s", msg)) -> ReproduceResult:
    """Step 5: run the reproduction through the plan's backend (local: waits; ``mpijob``: waits with ``--wait``).

    Raises :class:`ReproductionFailed` when the run fails or cannot be submitted.
    """
    client = client_or_default(client)
    run = _launch_local if plan.backend == "local" else _launch_backend
    return run(plan, pointed, restored, client, say)
