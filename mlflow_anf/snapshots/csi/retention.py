"""Which VolumeSnapshots a ``keep_last`` prune must never delete - one rule for the csi provider's own
``keep_last`` (after each create) and the ``mpijob`` backend's ``snapshot.keep_last`` (after a successful run,
:mod:`mlflow_anf.backend.budget`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlflow_anf.k8s import sanitize_label_value
from mlflow_anf.vocabulary import LABEL_RUN_ID


def prune_candidates(snapshots: Iterable[Mapping[str, Any]], run_id: str | None) -> list[str]:
    """Names keep_last must never delete: the snapshots of run *run_id* (its data and model snapshots may be of the
    same PVC) and those not ready (or failed) yet - another run may be taking them. Pure."""
    protect, label = [], sanitize_label_value(run_id) if run_id else None
    for snap in snapshots:
        meta = snap.get("metadata") or {}
        ready = (snap.get("status") or {}).get("readyToUse") is True
        if (label and (meta.get("labels") or {}).get(LABEL_RUN_ID) == label) or not ready:
            protect.append(meta.get("name", ""))
    return protect
