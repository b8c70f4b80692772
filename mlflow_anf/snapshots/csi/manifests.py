"""Pure pieces of the ``csi`` provider: the manifests it writes and how it reads the objects it gets back.

:func:`render_volume_snapshot` and :func:`render_restore_pvc` are shared with the MPIJob backend's job plan and
the ``k8s/`` examples; :func:`snapshot_labels` and :func:`snapshot_annotations` are what ``create`` puts on a
VolumeSnapshot; :func:`snapshot_record` turns a VolumeSnapshot (and its content) into a :class:`Snapshot`.
No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from mlflow_anf.k8s import format_quantity, parse_quantity, parse_time, sanitize_label_value, validate_label_key
from mlflow_anf.snapshots.base import Snapshot
from mlflow_anf.snapshots.csi.config import API_VERSION, GROUP, LABEL_MANAGED_BY, InvalidInput
from mlflow_anf.vocabulary import (
    ANNOTATION_CREATED_AT,
    ANNOTATION_SOURCE_PVC,
    ANNOTATION_SOURCE_STORAGE_CLASS,
    LABEL_SOURCE_PVC,
    MANAGED_BY,
)

PROVIDER_NAME = "csi"


def _metadata(
    name: str, namespace: str, labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None
) -> dict[str, Any]:
    """Object metadata with labels/annotations only where given (empty maps are left out, as kubectl does)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return metadata


def render_volume_snapshot(
    name: str,
    namespace: str,
    pvc: str,
    snapshot_class: str | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``VolumeSnapshot`` manifest of PVC *pvc* (``snapshot_class=None``: the cluster's default class)."""
    metadata = _metadata(name, namespace, labels, annotations)
    spec: dict[str, Any] = {"source": {"persistentVolumeClaimName": pvc}}
    if snapshot_class:
        spec["volumeSnapshotClassName"] = snapshot_class
    return {"apiVersion": API_VERSION, "kind": "VolumeSnapshot", "metadata": metadata, "spec": spec}


def render_restore_pvc(
    name: str,
    namespace: str,
    snapshot_name: str,
    size: str | int,
    *,
    storage_class: str | None = None,
    access_modes: Sequence[str] = ("ReadWriteMany",),
    volume_mode: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ``PersistentVolumeClaim`` that the CSI driver fills from VolumeSnapshot *snapshot_name*."""
    metadata = _metadata(name, namespace, labels, annotations)
    spec: dict[str, Any] = {
        "accessModes": list(access_modes),
        "resources": {"requests": {"storage": format_quantity(size) if isinstance(size, int) else str(size)}},
        "dataSource": {"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": snapshot_name},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    if volume_mode:
        spec["volumeMode"] = volume_mode
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


# ---- what create writes ---------------------------------------------------------------------------------------------


def snapshot_labels(labels: Mapping[str, Any] | None, pvc: str) -> dict[str, str]:
    """The labels ``create`` gives a snapshot of *pvc*: *labels* (keys checked, values sanitised), plus
    ``app.kubernetes.io/managed-by=mlflow-anf`` and the source PVC."""
    out: dict[str, str] = {}
    for key, value in (labels or {}).items():
        try:
            validate_label_key(str(key), f"labels[{key!r}]")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        out[str(key)] = sanitize_label_value(value)
    out[LABEL_MANAGED_BY] = MANAGED_BY
    out[LABEL_SOURCE_PVC] = sanitize_label_value(pvc)
    return out


def snapshot_annotations(pvc: str, storage_class: str | None = None, created_at: datetime | None = None,
                         ) -> dict[str, str]:
    """The annotations ``create`` gives a snapshot of *pvc*: its source PVC, the PVC's StorageClass (what a restore
    uses once the PVC is gone) and, when given, the precise creation time (orders snapshots for ``keep_last``)."""
    annotations: dict[str, str] = {}
    if created_at is not None:
        annotations[ANNOTATION_CREATED_AT] = created_at.isoformat(timespec="microseconds")
    annotations[ANNOTATION_SOURCE_PVC] = pvc
    if storage_class:
        annotations[ANNOTATION_SOURCE_STORAGE_CLASS] = storage_class
    return annotations


def label_selector(labels: Mapping[str, Any] | None, extra: Iterable[str] = ()) -> str:
    """A label selector matching *labels* as ``create`` stored them (values sanitised), plus raw *extra* terms."""
    parts = []
    for key, value in (labels or {}).items():
        try:
            validate_label_key(str(key), f"labels[{key!r}]")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        parts.append(f"{key}={sanitize_label_value(value)}")
    parts.extend(p for p in extra if p)
    return ",".join(parts)


# ---- reading API objects ------------------------------------------------------------------------------------------


def meta(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("metadata") or {}


def source_pvc(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName")


def error_message(obj: Mapping[str, Any]) -> str | None:
    error = (obj.get("status") or {}).get("error") or {}
    return error.get("message") if isinstance(error, Mapping) else None


def is_ready(obj: Mapping[str, Any]) -> bool:
    return (obj.get("status") or {}).get("readyToUse") is True


def bound_content(obj: Mapping[str, Any] | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("boundVolumeSnapshotContentName")


def phase(obj: Mapping[str, Any]) -> str:
    """``ready``, ``retrying`` (not ready, the controller reports an error), ``bound`` or ``pending``. An error is
    never final: the snapshot controller keeps retrying and clears ``status.error`` on success
    (kubernetes-csi/external-snapshotter client/apis/volumesnapshot/v1/types.go:184-191)."""
    if is_ready(obj):
        return "ready"
    if error_message(obj):
        return "retrying"
    if bound_content(obj):
        return "bound"
    return "pending"


def age_key(obj: Mapping[str, Any]) -> tuple[datetime, datetime, str]:
    """Oldest first: our precise creation stamp, then the server's, then the name."""
    m = meta(obj)
    epoch = datetime.fromtimestamp(0, tz=timezone.utc)
    server = parse_time(m.get("creationTimestamp")) or epoch
    ours = parse_time((m.get("annotations") or {}).get(ANNOTATION_CREATED_AT)) or server
    return ours, server, m.get("name", "")


def snapshot_record(obj: Mapping[str, Any], content: Mapping[str, Any] | None = None, *,
                    default_namespace: str = "default") -> Snapshot:
    """A VolumeSnapshot (and its bound VolumeSnapshotContent, when read) as a :class:`Snapshot`."""
    m, spec, status = meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    annotations = m.get("annotations") or {}
    namespace = m.get("namespace") or default_namespace
    pvc = source_pvc(obj) or annotations.get(ANNOTATION_SOURCE_PVC) or ""
    restore_size = status.get("restoreSize")
    try:
        size_bytes = parse_quantity(restore_size) if restore_size is not None else None
    except ValueError:
        size_bytes = None
    content_status = (content or {}).get("status") or {}
    content_spec = (content or {}).get("spec") or {}
    details = {
        "namespace": namespace,
        "pvc": pvc,
        "content": status.get("boundVolumeSnapshotContentName"),
        "snapshot_handle": content_status.get("snapshotHandle"),
        "restore_size": str(restore_size) if restore_size is not None else None,
        "creation_time": status.get("creationTime"),
        "snapshot_class": spec.get("volumeSnapshotClassName"),
        "driver": content_spec.get("driver"),
        "deletion_policy": content_spec.get("deletionPolicy"),
        "source_storage_class": annotations.get(ANNOTATION_SOURCE_STORAGE_CLASS),
        "error": error_message(obj),
        "managed": (m.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY,
    }
    created = (parse_time(status.get("creationTime")) or parse_time(m.get("creationTimestamp"))
               or datetime.now(timezone.utc))
    return Snapshot(
        provider=PROVIDER_NAME, volume=f"{namespace}/{pvc}", name=m.get("name", ""), id=m.get("uid", ""),
        created=created, ready=is_ready(obj), size_bytes=size_bytes, labels=dict(m.get("labels") or {}),
        details={k: v for k, v in details.items() if v is not None},
    )
