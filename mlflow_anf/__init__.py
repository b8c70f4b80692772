"""mlflow-anf: reproducible distributed training on Kubernetes from storage snapshots, as an MLflow plugin.

The public functions are loaded on first use, so ``import mlflow_anf`` imports neither MLflow nor any provider SDK::

    import mlflow_anf
    snap = mlflow_anf.snapshot_and_log("local", "/data/tusimple", role="data")   # inside mlflow.start_run()
    mlflow_anf.get_run_snapshots(run_id)["data"].ref
    mlflow_anf.restore(run_id, target="/scratch/tusimple-again")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflow_anf._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "log_snapshot": "mlflow_anf.tracking",
    "snapshot_and_log": "mlflow_anf.tracking",
    "get_run_snapshots": "mlflow_anf.tracking",
    "restore": "mlflow_anf.tracking",
    "SnapshotRef": "mlflow_anf.tracking",
    "get_provider": "mlflow_anf.snapshots",
    "available_providers": "mlflow_anf.snapshots",
    "Snapshot": "mlflow_anf.snapshots.base",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from mlflow_anf.snapshots import available_providers, get_provider
    from mlflow_anf.snapshots.base import Snapshot
    from mlflow_anf.tracking import SnapshotRef, get_run_snapshots, log_snapshot, restore, snapshot_and_log


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
