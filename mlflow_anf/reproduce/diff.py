"""Two runs side by side: the pure core of ``mlflow-anf diff`` (:func:`compare_runs`) and its reader
(:func:`diff_runs`). Params, code version, image, data digests, package versions and final metrics."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from mlflow_anf.provenance import image_info
from mlflow_anf.reproduce.names import TAG_GIT_COMMIT, TAG_REWRITTEN
from mlflow_anf.reproduce.record import RunRecord, client_or_default, load_run_record
from mlflow_anf.vocabulary import (
    PARAM_PREFIX,
    TAG_CODE_COMMIT,
    TAG_CODE_DIGEST,
    TAG_CODE_DIRTY,
    TAG_IMAGE,
    TAG_IMAGE_DIGEST,
    TAG_REPRODUCES,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: metrics that measure time or the machine, not the model: never expected to be identical
TIMING_METRICS = ("system/*", "throughput", "*throughput*", "*_time", "*_time_*", "*duration*", "*_per_s*",
                  "*_seconds", "*_ms")


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


def code_of(rec: RunRecord) -> dict[str, str | None]:
    prov = rec.provenance
    if prov is not None:
        code = prov.code
        return {"commit": code.commit, "dirty": str(code.dirty).lower(), "digest": code.digest,
                "root": code.root, "kind": code.kind, "package": code.package, "distribution": code.distribution}
    return {"commit": rec.tags.get(TAG_CODE_COMMIT) or rec.tags.get(TAG_GIT_COMMIT),
            "dirty": rec.tags.get(TAG_CODE_DIRTY), "digest": rec.tags.get(TAG_CODE_DIGEST), "root": None,
            "kind": None, "package": None, "distribution": None}


def image_of(rec: RunRecord) -> dict[str, str | None]:
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
    # mlflow-anf's own params repeat the data snapshot for MLflow's compare view; the data rows below compare it
    keys = sorted(k for k in set(a.params) | set(b.params) if not k.startswith(PARAM_PREFIX))
    params = [_row(k, a.params.get(k), b.params.get(k), k in rewritten) for k in keys]

    ca, cb = code_of(a), code_of(b)
    code = [_row(k, ca[k], cb[k]) for k in ("commit", "dirty", "digest")]
    code.append(_row("root", ca["root"], cb["root"], rewritten=True))
    if ca["digest"] and cb["digest"]:
        code_same: bool | None = ca["digest"] == cb["digest"]
    elif ca["commit"] and cb["commit"] and ca["dirty"] == cb["dirty"] == "false":
        code_same = ca["commit"] == cb["commit"]
    else:
        code_same = None

    ia, ib = image_of(a), image_of(b)
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



def diff_runs(run_a: str, run_b: str, client: MlflowClient | None = None,
              ignore_metrics: Sequence[str] = TIMING_METRICS) -> RunDiff:
    """:func:`compare_runs` of two runs read from the tracking store."""
    client = client_or_default(client)
    return compare_runs(load_run_record(run_a, client), load_run_record(run_b, client), ignore_metrics)
