"""Options, progress events, input errors and constants of the ``csi`` provider."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlflow_anf.k8s import (
    SERVICE_ACCOUNT_DIR,
    KubeConfig,
    RetryPolicy,
    normalize_in_cluster,
    validate_dns1123_label,
    validate_dns1123_subdomain,
)
from mlflow_anf.k8s.snapshot_classes import DEFAULT_CLASS_ANNOTATION, PROVISIONER_ANNOTATIONS  # noqa: F401
from mlflow_anf.snapshots.base import SnapshotInputError
from mlflow_anf.vocabulary import LABEL_MANAGED_BY  # noqa: F401  (re-exported)

GROUP = "snapshot.storage.k8s.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
SNAPSHOTS = "volumesnapshots"
CONTENTS = "volumesnapshotcontents"
CLASSES = "volumesnapshotclasses"

ANF_MAX_SNAPSHOTS_PER_VOLUME = 255


class InvalidInput(SnapshotInputError):
    """A volume id, target, label or size that cannot be used; the message names it."""


class SnapshotProgress(BaseModel):
    """One step of a snapshot's life, as reported to ``Config.progress``."""

    model_config = ConfigDict(frozen=True)

    volume: str
    name: str
    phase: Literal["submitted", "adopted", "pending", "bound", "retrying", "ready"]
    elapsed_s: float
    ready: bool = False
    content: str | None = None
    restore_size: str | None = None
    message: str = ""

    def __str__(self) -> str:
        """One line for a progress display: ``VolumeSnapshot ns/pvc@name: pending (the last error)``."""
        return f"VolumeSnapshot {self.volume}@{self.name}: {self.phase}" + (f" ({self.message})" if self.message else "")


class CsiConfig(BaseModel):
    """Options of the ``csi`` provider (``get_provider("csi", **options)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    namespace: str | None = Field(default=None, description="default namespace; else the context's/pod's")
    snapshot_class: str | None = Field(default=None, description="VolumeSnapshotClass; default: the cluster default")
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: Literal["auto", "true", "false"] = "auto"
    service_account_dir: Path = SERVICE_ACCOUNT_DIR
    request_timeout_s: float = Field(default=30.0, gt=0)
    ready_timeout_s: float = Field(default=600.0, gt=0, description="how long create waits for readyToUse")
    poll_interval_s: float = Field(default=2.0, gt=0, description="polling period when watching is impossible")
    watch: bool = Field(default=True, description="follow snapshots with watches (else poll)")
    watch_timeout_s: int = Field(default=60, ge=1, description="server-side timeout of one watch request")
    max_snapshots_per_volume: int = Field(default=ANF_MAX_SNAPSHOTS_PER_VOLUME, ge=1)
    keep_last: int | None = Field(default=None, ge=1, description="after a create, prune managed snapshots beyond N")
    delete_wait: bool = Field(default=False, description="delete() waits until the snapshot is gone")
    delete_timeout_s: float = Field(default=120.0, gt=0)
    restore_storage_class: str | None = Field(default=None, description="default StorageClass of restored PVCs")
    restore_access_modes: tuple[str, ...] = ("ReadWriteMany",)
    page_size: int = Field(default=250, ge=1, le=5000, description="list page size")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    progress: Callable[[SnapshotProgress], None] | None = Field(default=None, exclude=True, repr=False)

    @field_validator("in_cluster", mode="before")
    @classmethod
    def _in_cluster_words(cls, value: Any) -> Any:
        return normalize_in_cluster(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        return validate_dns1123_label(value, "namespace") if value is not None else None

    @field_validator("snapshot_class", "restore_storage_class")
    @classmethod
    def _object_name(cls, value: str | None, info: Any) -> str | None:
        return validate_dns1123_subdomain(value, info.field_name) if value is not None else None

    def kube(self) -> KubeConfig:
        return KubeConfig(
            kubeconfig=self.kubeconfig, context=self.context, in_cluster=self.in_cluster, namespace=self.namespace,
            request_timeout_s=self.request_timeout_s, service_account_dir=self.service_account_dir, retry=self.retry,
        )
