"""The volume the ``mpijob`` backend's model snapshot is taken of, and where it is mounted (issue #13).

The model snapshot (``snapshot.model``) is of ``snapshot.model_pvc``, else of ``data_pvc``. So that it holds the
model, the entry point must write the model to that volume: its output directory (``-P output_dir``, else the
MLproject's default; see :func:`mlflow_anf.backend.params.model_location`) must lie under the volume's mount path
in the pods - ``data_mount_path`` when the model is on ``data_pvc`` (``-P output_dir=/mnt/models``), else
``snapshot.model_mount_path`` (default :data:`DEFAULT_MODEL_MOUNT_PATH`: ``-P output_dir=/models/<dir>``). A relative
output directory is resolved against ``project_dir`` (the containers' working directory, in the image) and is
refused - unless ``snapshot.model_mount_path`` is ``<project_dir>/outputs``, which keeps an MLproject default such as
``output_dir: outputs`` working. The model volume is mounted in the launcher and in every worker
(:func:`mlflow_anf.backend.render.render_mpijob`). Pure functions of the config; no I/O.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mlflow_anf.backend.config import MPIJobBackendConfig

log = logging.getLogger("mlflow_anf.backend.config")

#: where a separate ``snapshot.model_pvc`` is mounted unless ``snapshot.model_mount_path`` says otherwise
DEFAULT_MODEL_MOUNT_PATH = "/models"


def under(path: str, root: str) -> bool:
    """*path* is *root* or inside it (absolute, normalised paths)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def model_volume(config: MPIJobBackendConfig) -> tuple[str, str] | None:
    """``(pvc, mount path in the pods)`` of the volume the model snapshot is taken of; ``None`` without one."""
    if not config.snapshot.model:
        return None
    pvc = config.snapshot.model_pvc or config.data_pvc
    if pvc is None:
        return None
    if pvc == config.data_pvc:
        return pvc, config.data_mount_path
    return pvc, config.snapshot.model_mount_path or DEFAULT_MODEL_MOUNT_PATH


def mount_problems(config: MPIJobBackendConfig) -> list[tuple[str, str]]:
    """``snapshot.model_mount_path``: only for a model PVC of its own, apart from the pods' other mounts."""
    key, mount = "snapshot.model_mount_path", config.snapshot.model_mount_path
    if mount is None:
        return []
    if config.snapshot.model_pvc is None or config.snapshot.model_pvc == config.data_pvc:
        return [(key, "set but snapshot.model_pvc is not a PVC of its own (the model is then on data_pvc, "
                      "mounted at data_mount_path)")]
    if mount == "/dev/shm" and config.shm_size:
        return [(key, "collides with the /dev/shm volume")]
    data = config.data_mount_path
    if config.data_pvc and (under(mount, data) or under(data, mount)):
        where = "is inside" if under(mount, data) else "contains"
        return [(key, f"{mount!r} {where} data_mount_path {data!r}; mount the two volumes apart")]
    if under(config.project_dir, mount):
        return [(key, f"{mount!r} would hide project_dir {config.project_dir!r} (the project in the image)")]
    return []


def warn_runai_namespace(project: str, namespace: str) -> None:
    """A Run:AI project in a namespace other than ``runai-<project>``: accepted, with a warning naming both.

    Run:AI creates namespace ``runai-<project>`` for a project by default, but a project can be associated with any
    existing namespace: docs.run.ai, "Manually Create Projects" (admin/runai-setup/self-hosted/k8s/
    project-management, v2.16 to v2.20: ``kubectl label ns <NAMESPACE> runai/queue=<PROJECT_NAME>``); NVIDIA Run:ai
    v3.0 CLI reference, ``runai project create`` ("Project with Custom Namespace": ``--namespace research-ns``)."""
    log.warning("namespace %r is not Run:AI's default namespace 'runai-%s' of project %r; accepted, since a project "
                "can be bound to an existing namespace (label runai/queue=%s on it); check with `kubectl get ns %s "
                "--show-labels`", namespace, project, project, project, namespace)
