"""Tests read a run's snapshot records field by field: ``snapshot_fields(tags)`` is the run's tags plus, for every
snapshot record the one parser (:func:`mlflow_anf.vocabulary.parse_snapshot_tags`) reads from them, the per-field keys
``mlflow_anf.snapshot.<role>.<field>`` - whichever layout the run was written in (one JSON tag per role since the
tags were grouped, one tag per field before)."""

from __future__ import annotations

from collections.abc import Mapping

from mlflow_anf.vocabulary import parse_snapshot_tags


def snapshot_fields(tags: Mapping[str, str]) -> dict[str, str]:
    out = dict(tags)
    for ref in parse_snapshot_tags(tags, strict=True).values():
        out.update(ref.field_tags())
    return out
