"""The snapshot provider the MPIJob backend and its launcher use, built in one place.

The job's volumes are PVCs, snapshotted as CSI VolumeSnapshots; the backend (data snapshot, before submitting) and
the launcher pod (model snapshot, after training) reach the cluster differently (kubeconfig/context vs. the pod's
service account, or ``KUBECONFIG``) but build the provider with the same function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The snapshot provider the backend uses: the job's volumes are PVCs, snapshotted as CSI VolumeSnapshots.
SNAPSHOT_PROVIDER = "csi"


def job_snapshot_provider(
    namespace: str,
    *,
    timeout_s: float,
    snapshot_class: str | None = None,
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    in_cluster: str | None = None,
    retry: Any = None,
) -> Any:
    """The provider for snapshots of PVCs in *namespace*, waiting up to *timeout_s* for readyToUse. Unset options
    keep the provider's defaults (in a pod: its service account)."""
    from mlflow_anf.snapshots import get_provider

    options: dict[str, Any] = {"namespace": namespace, "ready_timeout_s": timeout_s}
    for key, value in (("snapshot_class", snapshot_class), ("kubeconfig", kubeconfig), ("context", context),
                       ("in_cluster", in_cluster), ("retry", retry)):
        if value is not None and value != "":
            options[key] = value
    return get_provider(SNAPSHOT_PROVIDER, **options)
