"""Which VolumeSnapshotClass a snapshot of a PVC gets: one routine for the csi provider's ``create`` and for
``mlflow-anf doctor``, so that doctor says ok exactly when create would find a class.

The rules are external-snapshotter's (kubernetes-csi/external-snapshotter,
``pkg/common-controller/snapshot_controller.go`` ``SetDefaultSnapshotClass``, and ``pkg/utils/util.go``
``IsVolumeSnapshotClassDefaultAnnotation`` / ``IsDefaultAnnotation``): a snapshot without a class gets the one
class whose annotation ``snapshot.storage.kubernetes.io/is-default-class`` is exactly ``"true"`` and whose
``driver`` is the volume's CSI driver; none is "cannot find default snapshot class", several are "%d default
snapshot classes were found". A class named explicitly must exist, and its driver must be the volume's (the
driver's csi-snapshotter sidecar ignores contents of other drivers, so such a snapshot would never become ready).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

DEFAULT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"
PROVISIONER_ANNOTATIONS = ("volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner")

Problem = Literal["not_found", "wrong_driver", "no_default", "several_defaults"]


class SnapshotClassError(ValueError):
    """No usable VolumeSnapshotClass; ``problem`` says which rule failed, the message names the classes."""

    def __init__(self, problem: Problem, message: str) -> None:
        self.problem = problem
        super().__init__(message)


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def is_default_class(obj: Mapping[str, Any]) -> bool:
    """external-snapshotter's ``IsDefaultAnnotation``: the annotation's value is exactly ``"true"``."""
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"


def pvc_driver(pvc: Mapping[str, Any], storage_class: Mapping[str, Any] | None = None) -> str | None:
    """The CSI driver of a PVC: its ``storage-provisioner`` annotation (set by the PV controller), else the
    ``provisioner`` of its StorageClass when given; ``None`` when neither says."""
    annotations = (pvc.get("metadata") or {}).get("annotations") or {}
    for key in PROVISIONER_ANNOTATIONS:
        if annotations.get(key):
            return str(annotations[key])
    provisioner = (storage_class or {}).get("provisioner")
    return str(provisioner) if provisioner else None


def resolve_snapshot_class(classes: Iterable[Mapping[str, Any]], driver: str | None, wanted: str | None = None, *,
                           volume: str = "the volume") -> str:
    """The VolumeSnapshotClass for a snapshot of *volume* (whose CSI driver is *driver*; ``None``: unknown, then
    any driver fits) among *classes* (VolumeSnapshotClass objects as dicts). *wanted*: the configured class."""
    classes = list(classes)
    names = ", ".join(sorted(_name(c) for c in classes)) or "none"
    if wanted:
        klass = next((c for c in classes if _name(c) == wanted), None)
        if klass is None:
            raise SnapshotClassError("not_found", f"snapshot_class: VolumeSnapshotClass {wanted!r} not found "
                                                  f"(available: {names})")
        if driver and klass.get("driver") and klass["driver"] != driver:
            raise SnapshotClassError("wrong_driver", f"snapshot_class: VolumeSnapshotClass {wanted!r} is for driver "
                                                     f"{klass['driver']!r}, but {volume} was provisioned by {driver!r}")
        return wanted
    fitting = [c for c in classes if is_default_class(c) and (not driver or c.get("driver") == driver)]
    if len(fitting) == 1:
        return _name(fitting[0])
    if not fitting:
        raise SnapshotClassError("no_default", f"snapshot_class: not configured and no default VolumeSnapshotClass"
                                               f"{f' for driver {driver!r}' if driver else ''} (classes: {names}); "
                                               "set snapshot_class, or mark one class of that driver default")
    raise SnapshotClassError("several_defaults", f"snapshot_class: not configured and {len(fitting)} default "
                                                 f"VolumeSnapshotClasses fit {volume} "
                                                 f"({', '.join(sorted(_name(c) for c in fitting))}); set "
                                                 "snapshot_class")
