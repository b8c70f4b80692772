"""``mlflow-anf doctor`` and the csi provider's ``create`` choose the VolumeSnapshotClass with one routine
(:func:`mlflow_anf.k8s.resolve_snapshot_class`, external-snapshotter's rules), so doctor says ok exactly when create
finds a class, and says the same thing when it does not. Each case is set up in the Kubernetes API emulator and put
to both."""

from __future__ import annotations

from typing import Any

import pytest

from mlflow_anf.backend.config import load_backend_config
from mlflow_anf.backend.doctor import Doctor
from mlflow_anf.backend.plugin import csi_provider, kube_config
from mlflow_anf.k8s import SnapshotClassError, api_client, resolve_snapshot_class
from mlflow_anf.snapshots import SnapshotError

NS = "lane"
TRIDENT = "csi.trident.netapp.io"
DISK = "disk.csi.azure.com"

# (case, classes as (name, driver, default annotation value or None), configured class, PVC annotated with driver,
#  expected: the class, or the SnapshotClassError.problem)
CASES = [
    ("one default of the driver", [("anf", TRIDENT, "true")], None, True, "anf"),
    ("defaults of two drivers", [("anf", TRIDENT, "true"), ("disk", DISK, "true")], None, True, "anf"),
    ("no class at all", [], None, True, "no_default"),
    ("default of another driver only", [("disk", DISK, "true")], None, True, "no_default"),
    ("two defaults of the driver", [("a", TRIDENT, "true"), ("b", TRIDENT, "true")], None, True, "several_defaults"),
    ("annotation not exactly true", [("anf", TRIDENT, "True")], None, True, "no_default"),
    ("configured and of the driver", [("anf", TRIDENT, None)], "anf", True, "anf"),
    ("configured but missing", [("anf", TRIDENT, "true")], "nope", True, "not_found"),
    ("configured of another driver", [("anf", TRIDENT, "true"), ("disk", DISK, None)], "disk", True, "wrong_driver"),
    ("driver from the StorageClass", [("disk", DISK, "true")], None, False, "no_default"),
    ("driver from the StorageClass, fits", [("anf", TRIDENT, "true")], None, False, "anf"),
]


def _class(name: str, driver: str, default: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if default is not None:
        meta["annotations"] = {"snapshot.storage.kubernetes.io/is-default-class": default}
    return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass", "metadata": meta,
            "driver": driver, "deletionPolicy": "Delete"}


@pytest.mark.parametrize(("classes", "configured", "annotated", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_doctor_and_create_agree(k8s_objects, kubeconfig_path, snapshot_controller,
                                 classes, configured, annotated, expected) -> None:
    k8s_objects.namespace(NS)
    k8s_objects.storage_class("azurenetappfiles", provisioner=TRIDENT)
    k8s_objects.pvc("tusimple-data", NS, storage_class="azurenetappfiles", provisioner=TRIDENT if annotated else None)
    for name, driver, default in classes:
        k8s_objects.create(_class(name, driver, default), validate=True)
    snapshot: dict[str, Any] = {"data": True, "timeout_seconds": 10}
    if configured:
        snapshot["snapshot_class"] = configured
    config = load_backend_config({"namespace": NS, "image": "registry.example.com/lanedet:0.1.0",
                                  "kubeconfig": str(kubeconfig_path), "data_pvc": "tusimple-data",
                                  "tracking_uri": "http://mlflow:5000", "snapshot": snapshot,
                                  "api_backoff_seconds": 0.01})
    check = Doctor(config, api_client(kube_config(config))).snapshot_class()
    try:
        created = csi_provider(config).create(f"{NS}/tusimple-data", "probe")
    except SnapshotError as exc:
        created, error = None, str(exc)
    else:
        error = ""

    if expected in ("no_default", "several_defaults", "not_found", "wrong_driver"):
        assert created is None and check.status == "fail"
        assert check.detail == error  # the same words
        with pytest.raises(SnapshotClassError) as info:
            resolve_snapshot_class([_class(*c) for c in classes], TRIDENT, configured,
                                   volume=f"PVC {NS}/tusimple-data")
        assert info.value.problem == expected and str(info.value) == error
        assert k8s_objects.list("VolumeSnapshot", NS) == []  # nothing was written
    else:
        assert check.status == "ok", check.detail
        assert created is not None and created.details["snapshot_class"] == expected
        assert repr(expected) in check.detail
