"""The ``csi`` snapshot provider: Kubernetes ``snapshot.storage.k8s.io/v1`` VolumeSnapshots.

A volume is a PersistentVolumeClaim, named ``namespace/pvc`` (or ``pvc`` in the configured namespace). A snapshot
is a ``VolumeSnapshot`` of that PVC taken by the cluster's CSI driver (e.g. NetApp Trident on Azure NetApp Files,
where a snapshot is near-instant and costs no copy). Per snapshot the provider makes one write (the create; plus
one delete per snapshot pruned by ``keep_last``) and a handful of reads, whatever the data size.

``create`` checks everything it can before writing (names, the PVC exists and is Bound, the snapshot class, the
per-volume limit - 255 on ANF), labels the snapshot with the MLflow run/experiment/role it belongs to, then
follows it with a watch (resuming from its ``resourceVersion``, re-listing after ``410 Gone``, falling back to
polling) until ``status.readyToUse``, a controller error (reported verbatim) or ``ready_timeout_s``.

:func:`render_volume_snapshot` and :func:`render_restore_pvc` are pure and shared with the MPIJob backend and the
``k8s/`` examples. The ``kubernetes`` package is imported only when the provider first talks to a cluster.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlflow_anf.vocabulary import (  # noqa: F401  (the names stay importable from this module)
    ANNOTATION_CREATED_AT,
    ANNOTATION_RESTORED_FROM,
    ANNOTATION_SOURCE_PVC,
    ANNOTATION_SOURCE_STORAGE_CLASS,
    LABEL_EXPERIMENT_ID,
    LABEL_ROLE,
    LABEL_RUN_ID,
    LABEL_SOURCE_PVC,
    MANAGED_BY,
)
from mlflow_anf.k8s import (
    SERVICE_ACCOUNT_DIR,
    KubeApiError,
    KubeConfig,
    KubeConfigError,
    RetryPolicy,
    api_client,
    call_with_retries,
    connection_errors,
    format_quantity,
    normalize_in_cluster,
    parse_quantity,
    parse_time,
    resolve_namespace,
    sanitize_label_value,
    to_api_error,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_label_key,
)
from mlflow_anf.snapshots.base import (
    ProviderTraits,
    Snapshot,
    SnapshotError,
    SnapshotExists,
    SnapshotLimitExceeded,
    SnapshotNotFound,
    SnapshotTimeout,
    SnapshotVerificationError,
    SnapshotInputError,
    VerifyResult,
    validate_snapshot_name,
    validate_storage_name,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

GROUP = "snapshot.storage.k8s.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
SNAPSHOTS = "volumesnapshots"
CONTENTS = "volumesnapshotcontents"
CLASSES = "volumesnapshotclasses"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
DEFAULT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"
PROVISIONER_ANNOTATIONS = ("volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner")
ANF_MAX_SNAPSHOTS_PER_VOLUME = 255

_RBAC_HINT = (
    "check the credentials and RBAC: mlflow-anf needs get/list/watch/create/delete on volumesnapshots, "
    "get/list on volumesnapshotclasses and volumesnapshotcontents, get/create on persistentvolumeclaims"
)


class InvalidInput(SnapshotError, ValueError):
    """A volume id, target, label or size that cannot be used; the message names it."""


# --------------------------------------------------------------------------------------------------------------
# configuration and progress


class SnapshotProgress(BaseModel):
    """One step of a snapshot's life, as reported to ``Config.progress``."""

    model_config = ConfigDict(frozen=True)

    volume: str
    name: str
    phase: Literal["submitted", "adopted", "pending", "bound", "ready", "failed"]
    elapsed_s: float
    ready: bool = False
    content: str | None = None
    restore_size: str | None = None
    message: str = ""


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


# --------------------------------------------------------------------------------------------------------------
# pure renderers


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


# --------------------------------------------------------------------------------------------------------------
# small readers of API objects


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _source_pvc(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName")


def _error_message(obj: Mapping[str, Any]) -> str | None:
    error = (obj.get("status") or {}).get("error") or {}
    return error.get("message") if isinstance(error, Mapping) else None


def _is_ready(obj: Mapping[str, Any]) -> bool:
    return (obj.get("status") or {}).get("readyToUse") is True


def _phase(obj: Mapping[str, Any]) -> str:
    if _is_ready(obj):
        return "ready"
    if _error_message(obj):
        return "failed"
    if (obj.get("status") or {}).get("boundVolumeSnapshotContentName"):
        return "bound"
    return "pending"


def _age_key(obj: Mapping[str, Any]) -> tuple[datetime, datetime, str]:
    """Oldest first: our precise creation stamp, then the server's, then the name."""
    meta = _meta(obj)
    epoch = datetime.fromtimestamp(0, tz=timezone.utc)
    server = parse_time(meta.get("creationTimestamp")) or epoch
    ours = parse_time((meta.get("annotations") or {}).get(ANNOTATION_CREATED_AT)) or server
    return ours, server, meta.get("name", "")


# --------------------------------------------------------------------------------------------------------------
# the provider


class CsiSnapshotProvider(ProviderTraits):
    """Snapshots of PVCs as CSI ``VolumeSnapshot`` objects. See the module docstring."""

    name: ClassVar[str] = "csi"
    supports_labels: ClassVar[bool] = True
    Config: ClassVar[type[CsiConfig]] = CsiConfig
    mount_hint: ClassVar[str] = (
        "a restored PVC must be mounted by a pod; reproduce it with --backend mpijob --backend-config ..."
    )

    # ---- traits (see ProviderTraits): what callers may ask without building a provider
    @classmethod
    def storage_dir(cls, snapshot: Snapshot) -> str | None:
        """The last part of the VolumeSnapshotContent's ``snapshotHandle`` (Trident: ``snapshot-<uid>``)."""
        handle = snapshot.details.get("snapshot_handle")
        if not handle:
            raise SnapshotInputError(
                f"snapshot {snapshot.ref}: details.snapshot_handle is missing (is the VolumeSnapshot ready?); without "
                "it the snapshot's directory on the volume is unknown"
            )
        leaf = str(handle).rstrip("/").rsplit("/", 1)[-1]
        return None if leaf == snapshot.name else validate_storage_name(leaf, "details.snapshot_handle")

    @classmethod
    def refers_to(cls, value: str, volume: str, *, base: Path) -> bool:
        """A parameter names a PVC as ``namespace/pvc`` or as the bare PVC name."""
        return value in (volume, volume.rpartition("/")[2])

    @classmethod
    def param_value(cls, value: str, volume: str, restored: str) -> str:
        return restored.rpartition("/")[2] if "/" not in value else restored

    @classmethod
    def restore_scope(cls, volume: str) -> str | None:
        return volume.rpartition("/")[0] or None

    def __init__(
        self,
        config: CsiConfig | None = None,
        /,
        *,
        api_client: ApiClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise TypeError("pass either a CsiConfig or keyword options, not both")
        self.config = config if config is not None else CsiConfig(**options)
        self._api_client = api_client
        self._sleep = sleep
        self._namespace: str | None = None
        self._core: Any = None
        self._custom: Any = None

    def __repr__(self) -> str:
        return f"CsiSnapshotProvider(namespace={self.config.namespace!r}, snapshot_class={self.config.snapshot_class!r})"

    # ---- plumbing ---------------------------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        """The namespace of bare PVC names: configured, else the kubeconfig context's / the pod's."""
        if self._namespace is None:
            self._namespace = resolve_namespace(self.config.kube())
        return self._namespace

    def _apis(self) -> tuple[Any, Any]:
        if self._core is None:
            from kubernetes import client

            if self._api_client is None:
                try:
                    self._api_client = api_client(self.config.kube())
                except KubeConfigError as exc:
                    raise SnapshotError(str(exc)) from None
            self._core = client.CoreV1Api(self._api_client)
            self._custom = client.CustomObjectsApi(self._api_client)
        return self._core, self._custom

    def _call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self.config.request_timeout_s)
        return call_with_retries(fn, *args, op=op, policy=self.config.retry, sleep=self._sleep, **kwargs)

    def _to_dict(self, model: Any) -> dict[str, Any]:
        if isinstance(model, dict):
            return model
        assert self._api_client is not None
        return self._api_client.sanitize_for_serialization(model)

    @staticmethod
    def _error(exc: KubeApiError) -> SnapshotError:
        if exc.status in (401, 403):
            return SnapshotError(f"{exc}; {_RBAC_HINT}")
        return SnapshotError(str(exc))

    def _parse_volume(self, volume: str, field: str = "volume") -> tuple[str, str]:
        if not isinstance(volume, str) or not volume.strip():
            raise InvalidInput(f"{field}: expected 'namespace/pvc' or 'pvc', got {volume!r}")
        parts = volume.strip().split("/")
        if len(parts) == 1:
            namespace, pvc = self.namespace, parts[0]
        elif len(parts) == 2:
            namespace, pvc = parts
        else:
            raise InvalidInput(f"{field}: {volume!r} has more than one '/'; expected 'namespace/pvc' or 'pvc'")
        try:
            validate_dns1123_label(namespace, f"{field} (namespace)")
            validate_dns1123_subdomain(pvc, f"{field} (PVC name)")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return namespace, pvc

    def _labels(self, labels: Mapping[str, Any] | None, pvc: str) -> dict[str, str]:
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

    def _selector(self, labels: Mapping[str, Any] | None, extra: Iterable[str] = ()) -> str:
        parts = []
        for key, value in (labels or {}).items():
            try:
                validate_label_key(str(key), f"labels[{key!r}]")
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
            parts.append(f"{key}={sanitize_label_value(value)}")
        parts.extend(p for p in extra if p)
        return ",".join(parts)

    def _progress(self, phase: str, volume: str, name: str, started: float, obj: Mapping[str, Any] | None = None,
                  message: str = "") -> None:
        status = (obj or {}).get("status") or {}
        event = SnapshotProgress(
            volume=volume, name=name, phase=phase, elapsed_s=round(time.monotonic() - started, 3),
            ready=status.get("readyToUse") is True, content=status.get("boundVolumeSnapshotContentName"),
            restore_size=str(status["restoreSize"]) if status.get("restoreSize") is not None else None,
            message=message,
        )
        if self.config.progress is None:
            log.info("VolumeSnapshot %s@%s: %s after %.1fs%s", volume, name, phase, event.elapsed_s,
                     f" ({message})" if message else "")
            return
        try:
            self.config.progress(event)
        except Exception:  # noqa: BLE001 - a broken progress display must not break a snapshot
            log.warning("progress callback failed for %s@%s", volume, name, exc_info=True)

    # ---- reads ------------------------------------------------------------------------------------------------

    def _get_snapshot(self, namespace: str, name: str) -> dict[str, Any] | None:
        _, custom = self._apis()
        try:
            return self._call(f"get VolumeSnapshot {namespace}/{name}", custom.get_namespaced_custom_object,
                              GROUP, VERSION, namespace, SNAPSHOTS, name)
        except KubeApiError as exc:
            if exc.not_found and exc.details:
                return None
            if exc.not_found:
                raise SnapshotError(f"{exc}; is the {API_VERSION} API installed (external-snapshotter CRDs)?") from None
            raise self._error(exc) from None

    def _list_snapshots(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        _, custom = self._apis()
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.config.page_size}
            if selector:
                kwargs["label_selector"] = selector
            if token:
                kwargs["_continue"] = token
            try:
                page = self._call(f"list VolumeSnapshots in {namespace}", custom.list_namespaced_custom_object,
                                  GROUP, VERSION, namespace, SNAPSHOTS, **kwargs)
            except KubeApiError as exc:
                if exc.status == 400 and selector:
                    raise InvalidInput(f"label selector {selector!r}: {exc.message or exc.reason}") from None
                if exc.not_found and not exc.details:
                    raise SnapshotError(f"{exc}; is the {API_VERSION} API installed (external-snapshotter "
                                        "CRDs)?") from None
                raise self._error(exc) from None
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _get_content(self, name: str | None) -> dict[str, Any] | None:
        """The bound VolumeSnapshotContent, or ``None`` if absent or not readable (RBAC)."""
        if not name:
            return None
        _, custom = self._apis()
        try:
            return self._call(f"get VolumeSnapshotContent {name}", custom.get_cluster_custom_object,
                              GROUP, VERSION, CONTENTS, name)
        except KubeApiError as exc:
            if exc.status in (403, 404):
                log.debug("VolumeSnapshotContent %s not readable: %s", name, exc)
                return None
            raise self._error(exc) from None

    def _content_map(self, snapshots: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Bound contents by name with one list call (cluster-scoped; skipped when RBAC forbids it)."""
        if not any((s.get("status") or {}).get("boundVolumeSnapshotContentName") for s in snapshots):
            return {}
        _, custom = self._apis()
        try:
            page = self._call("list VolumeSnapshotContents", custom.list_cluster_custom_object, GROUP, VERSION,
                              CONTENTS)
        except KubeApiError as exc:
            if exc.status in (403, 404):
                return {}
            raise self._error(exc) from None
        return {_meta(c).get("name", ""): c for c in page.get("items") or []}

    def _get_pvc(self, namespace: str, pvc: str) -> dict[str, Any]:
        core, _ = self._apis()
        try:
            return self._to_dict(self._call(f"get PVC {namespace}/{pvc}",
                                            core.read_namespaced_persistent_volume_claim, pvc, namespace))
        except KubeApiError as exc:
            if not exc.not_found:
                raise self._error(exc) from None
        if self._namespace_missing(namespace):
            raise SnapshotNotFound(f"volume {namespace}/{pvc}: namespace {namespace!r} not found")
        raise SnapshotNotFound(f"volume {namespace}/{pvc}: PersistentVolumeClaim {pvc!r} not found in namespace "
                               f"{namespace!r}")

    def _namespace_missing(self, namespace: str) -> bool:
        core, _ = self._apis()
        try:
            self._call(f"get Namespace {namespace}", core.read_namespace, namespace)
        except KubeApiError as exc:
            return exc.not_found
        return False

    def _snapshot_class(self, pvc_obj: Mapping[str, Any]) -> str:
        """The class to use: the configured one (checked), else the single default class for the PVC's driver."""
        _, custom = self._apis()
        annotations = _meta(pvc_obj).get("annotations") or {}
        driver = next((annotations[a] for a in PROVISIONER_ANNOTATIONS if annotations.get(a)), None)
        where = f"{_meta(pvc_obj).get('namespace')}/{_meta(pvc_obj).get('name')}"
        wanted = self.config.snapshot_class
        if wanted:
            try:
                klass = self._call(f"get VolumeSnapshotClass {wanted}", custom.get_cluster_custom_object,
                                   GROUP, VERSION, CLASSES, wanted)
            except KubeApiError as exc:
                if exc.not_found and exc.details:
                    names = sorted(_meta(c).get("name", "") for c in self._list_classes())
                    raise SnapshotNotFound(f"snapshot_class: VolumeSnapshotClass {wanted!r} not found (available: "
                                           f"{', '.join(names) or 'none'})") from None
                if exc.not_found:
                    raise SnapshotError(f"{exc}; the {API_VERSION} API is not served - install the "
                                        "external-snapshotter CRDs and snapshot controller") from None
                raise self._error(exc) from None
            if driver and klass.get("driver") and klass["driver"] != driver:
                raise SnapshotError(f"snapshot_class: VolumeSnapshotClass {wanted!r} is for driver "
                                    f"{klass['driver']!r}, but PVC {where} was provisioned by {driver!r}")
            return wanted
        classes = self._list_classes()
        defaults = [c for c in classes if (_meta(c).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
        fitting = [c for c in defaults if not driver or c.get("driver") == driver]
        if len(fitting) == 1:
            return _meta(fitting[0])["name"]
        names = ", ".join(sorted(_meta(c).get("name", "") for c in classes)) or "none"
        if not fitting:
            raise SnapshotNotFound(f"snapshot_class: not configured and no default VolumeSnapshotClass"
                                   f"{f' for driver {driver!r}' if driver else ''} (classes: {names}); set "
                                   "snapshot_class")
        raise SnapshotError(f"snapshot_class: not configured and {len(fitting)} default VolumeSnapshotClasses "
                            f"fit PVC {where} ({', '.join(_meta(c)['name'] for c in fitting)}); set snapshot_class")

    def _list_classes(self) -> list[dict[str, Any]]:
        _, custom = self._apis()
        try:
            return self._call("list VolumeSnapshotClasses", custom.list_cluster_custom_object, GROUP, VERSION,
                              CLASSES).get("items") or []
        except KubeApiError as exc:
            if exc.not_found and not exc.details:
                raise SnapshotError(f"{exc}; the {API_VERSION} API is not served - install the external-snapshotter "
                                    "CRDs and snapshot controller") from None
            raise self._error(exc) from None

    def _record(self, obj: Mapping[str, Any], content: Mapping[str, Any] | None = None) -> Snapshot:
        meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
        annotations = meta.get("annotations") or {}
        namespace = meta.get("namespace") or self.namespace
        pvc = _source_pvc(obj) or annotations.get(ANNOTATION_SOURCE_PVC) or ""
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
            "error": _error_message(obj),
            "managed": (meta.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY,
        }
        created = (parse_time(status.get("creationTime")) or parse_time(meta.get("creationTimestamp"))
                   or datetime.now(timezone.utc))
        return Snapshot(
            provider=self.name, volume=f"{namespace}/{pvc}", name=meta.get("name", ""), id=meta.get("uid", ""),
            created=created, ready=_is_ready(obj), size_bytes=size_bytes, labels=dict(meta.get("labels") or {}),
            details={k: v for k, v in details.items() if v is not None},
        )

    # ---- following a snapshot -----------------------------------------------------------------------------------

    def _follow(
        self,
        namespace: str,
        name: str,
        obj: Mapping[str, Any] | None,
        deadline: float,
        done: Callable[[Mapping[str, Any] | None], bool],
    ) -> Mapping[str, Any] | None:
        """Follow one VolumeSnapshot until ``done(state)`` (``None`` = it is gone) or *deadline* (monotonic);
        returns the last state seen. Watches from the last resourceVersion seen; after ``410 Gone`` re-lists and
        watches from the list's resourceVersion; on any other watch failure polls every ``poll_interval_s``."""
        state = obj
        since = _meta(obj or {}).get("resourceVersion")
        watching = self.config.watch
        expiries = 0
        while True:
            if done(state):
                return state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return state
            if watching and state is not None and since:
                try:
                    state, finished, since = self._watch_once(namespace, name, state, since, remaining, done)
                except KubeApiError as exc:
                    if exc.expired and expiries < 3:
                        expiries += 1
                        log.info("watch of VolumeSnapshot %s/%s expired (410); re-listing", namespace, name)
                        state, since = self._relist(namespace, name)
                        continue
                    log.warning("cannot watch VolumeSnapshot %s/%s (%s); polling every %gs instead",
                                namespace, name, exc, self.config.poll_interval_s)
                    watching = False
                    state = self._get_snapshot(namespace, name)
                    continue
                if finished:
                    return state
                expiries = 0
                continue
            self._sleep(min(self.config.poll_interval_s, max(0.0, deadline - time.monotonic())))
            state = self._get_snapshot(namespace, name)

    def _relist(self, namespace: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """The snapshot (or ``None``) and the list's resourceVersion - a safe point to watch from again."""
        _, custom = self._apis()
        try:
            page = self._call(f"list VolumeSnapshot {namespace}/{name}", custom.list_namespaced_custom_object,
                              GROUP, VERSION, namespace, SNAPSHOTS, field_selector=f"metadata.name={name}")
        except KubeApiError as exc:
            raise self._error(exc) from None
        items = page.get("items") or []
        return (items[0] if items else None), (page.get("metadata") or {}).get("resourceVersion")

    def _watch_once(
        self,
        namespace: str,
        name: str,
        state: Mapping[str, Any],
        since: str,
        remaining: float,
        done: Callable[[Mapping[str, Any] | None], bool],
    ) -> tuple[Mapping[str, Any] | None, bool, str]:
        """One watch request from resourceVersion *since*: ``(last state, done?, last resourceVersion)``.
        Failures raise :class:`KubeApiError` (status 410 when *since* is too old)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        _, custom = self._apis()
        uid = _meta(state).get("uid")
        timeout = max(1, int(min(remaining, self.config.watch_timeout_s)))
        op = f"watch VolumeSnapshot {namespace}/{name}"
        watcher = watch.Watch()
        stream = watcher.stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, namespace, SNAPSHOTS,
            field_selector=f"metadata.name={name}", resource_version=since, timeout_seconds=timeout,
            _request_timeout=(self.config.request_timeout_s, timeout + self.config.request_timeout_s),
        )
        try:
            for event in stream:
                kind, item = event.get("type"), event.get("raw_object") or {}
                since = _meta(item).get("resourceVersion") or since
                if kind == "BOOKMARK":
                    continue
                if uid and _meta(item).get("uid") not in (None, uid):
                    kind = "DELETED"  # a new object under the same name is not ours
                new_state = None if kind == "DELETED" else item
                if new_state is not None:
                    state = new_state
                if done(new_state):
                    return new_state, True, since
                if new_state is None:
                    return None, False, since
        except ApiException as exc:
            raise to_api_error(exc, op) from None
        except connection_errors() as exc:
            raise to_api_error(exc, op) from None
        finally:
            watcher.stop()
        return state, False, since

    def _wait_ready(self, namespace: str, name: str, obj: Mapping[str, Any], started: float) -> dict[str, Any]:
        volume = f"{namespace}/{_source_pvc(obj)}"
        deadline = started + self.config.ready_timeout_s
        last_phase = [_phase(obj)]

        def done(state: Mapping[str, Any] | None) -> bool:
            if state is None:
                return True
            phase = _phase(state)
            if phase != last_phase[0]:
                last_phase[0] = phase
                self._progress(phase, volume, name, started, state, _error_message(state) or "")
            return phase in ("ready", "failed")

        final = self._follow(namespace, name, obj, deadline, done)
        if final is None:
            raise SnapshotError(f"VolumeSnapshot {namespace}/{name} was deleted while waiting for it to become ready")
        if _is_ready(final):
            return dict(final)
        message = _error_message(final)
        if message:
            raise SnapshotError(f"VolumeSnapshot {namespace}/{name} failed: {message} (the object is kept for "
                                f"inspection: kubectl -n {namespace} describe volumesnapshot {name})")
        content = (final.get("status") or {}).get("boundVolumeSnapshotContentName")
        raise SnapshotTimeout(
            f"VolumeSnapshot {namespace}/{name} not ready after {time.monotonic() - started:.1f}s (ready_timeout_s="
            f"{self.config.ready_timeout_s:g}; {'bound to ' + content if content else 'no VolumeSnapshotContent bound'}"
            f"); it is kept - wait longer or delete it"
        )

    # ---- the protocol -----------------------------------------------------------------------------------------

    def create(
        self,
        volume: str,
        name: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Snapshot:
        """Snapshot PVC *volume* as VolumeSnapshot *name* (default ``<pvc>-<UTC time>-<random>``) and wait until
        it is ready (unless ``wait=False``). Labels are sanitised into label values; the snapshot also gets
        ``app.kubernetes.io/managed-by=mlflow-anf`` and ``mlflow-anf/source-pvc``. A snapshot of the same name and
        source that exists already is adopted (idempotent retries); one of another PVC raises SnapshotExists."""
        namespace, pvc = self._parse_volume(volume)
        if name is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            name = f"{pvc[:253 - 21].rstrip('.-')}-{stamp}-{secrets.token_hex(2)}"
        validate_snapshot_name(name, "name")
        all_labels = self._labels(labels, pvc)
        started = time.monotonic()
        volume_id = f"{namespace}/{pvc}"

        pvc_obj = self._get_pvc(namespace, pvc)
        phase = (pvc_obj.get("status") or {}).get("phase")
        if phase != "Bound":
            raise SnapshotError(f"volume {volume_id}: PersistentVolumeClaim is {phase or 'not bound'}, not Bound; "
                                "there is nothing to snapshot yet")
        snapshot_class = self._snapshot_class(pvc_obj)
        existing = self._list_snapshots(namespace)
        same_name = next((s for s in existing if _meta(s).get("name") == name), None)
        if same_name is not None:
            return self._adopt(same_name, namespace, pvc, started, wait)
        count = sum(1 for s in existing if _source_pvc(s) == pvc)
        limit = self.config.max_snapshots_per_volume
        if count >= limit:
            raise SnapshotLimitExceeded(
                f"volume {volume_id}: {count} VolumeSnapshots exist, the limit is {limit} per volume "
                f"(max_snapshots_per_volume; Azure NetApp Files allows {ANF_MAX_SNAPSHOTS_PER_VOLUME}); delete old "
                "ones or set keep_last"
            )
        annotations = {
            ANNOTATION_CREATED_AT: datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            ANNOTATION_SOURCE_PVC: pvc,
        }
        storage_class = (pvc_obj.get("spec") or {}).get("storageClassName")
        if storage_class:
            annotations[ANNOTATION_SOURCE_STORAGE_CLASS] = storage_class
        body = render_volume_snapshot(name, namespace, pvc, snapshot_class, labels=all_labels,
                                      annotations=annotations)
        _, custom = self._apis()
        try:
            created = self._call(f"create VolumeSnapshot {namespace}/{name}", custom.create_namespaced_custom_object,
                                 GROUP, VERSION, namespace, SNAPSHOTS, body)
        except KubeApiError as exc:
            if not exc.conflict:
                raise self._error(exc) from None
            current = self._get_snapshot(namespace, name)  # created by an earlier attempt, or by someone else
            if current is None:
                raise SnapshotError(f"{exc}; and it is gone again - retry") from None
            return self._adopt(current, namespace, pvc, started, wait)
        self._progress("submitted", volume_id, name, started, created)
        if not wait:
            return self._record(created)
        ready = self._wait_ready(namespace, name, created, started)
        snapshot = self._record(ready, self._get_content((ready.get("status") or {}).get(
            "boundVolumeSnapshotContentName")))
        if self.config.keep_last:
            self.prune(volume_id, self.config.keep_last, protect=(name,))
        return snapshot

    def _adopt(self, obj: Mapping[str, Any], namespace: str, pvc: str, started: float, wait: bool) -> Snapshot:
        name = _meta(obj).get("name", "")
        source = _source_pvc(obj)
        if source != pvc:
            raise SnapshotExists(f"VolumeSnapshot {namespace}/{name} already exists and is a snapshot of "
                                 f"{'PVC ' + repr(source) if source else 'a pre-provisioned content'}, not of "
                                 f"{pvc!r}; choose another name")
        if _meta(obj).get("deletionTimestamp"):
            raise SnapshotExists(f"VolumeSnapshot {namespace}/{name} exists but is being deleted; retry later or "
                                 "choose another name")
        self._progress("adopted", f"{namespace}/{pvc}", name, started, obj, "already exists with the same source")
        if not wait:
            return self._record(obj)
        ready = self._wait_ready(namespace, name, obj, started)
        return self._record(ready, self._get_content((ready.get("status") or {}).get("boundVolumeSnapshotContentName")))

    def list(
        self,
        volume: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        run_id: str | None = None,
        selector: str | None = None,
        managed_only: bool = False,
    ) -> list[Snapshot]:
        """Snapshots of PVC *volume* (or all in the namespace), filtered by *labels* (values sanitised as at
        create), the MLflow *run_id*, and/or a raw label *selector*; oldest first."""
        if volume is not None:
            namespace, pvc = self._parse_volume(volume)
        else:
            namespace, pvc = self.namespace, None
        extra = [selector or ""]
        if run_id:
            extra.append(f"{LABEL_RUN_ID}={sanitize_label_value(run_id)}")
        if managed_only:
            extra.append(f"{LABEL_MANAGED_BY}={MANAGED_BY}")
        items = self._list_snapshots(namespace, self._selector(labels, extra))
        if pvc is not None:
            items = [s for s in items if _source_pvc(s) == pvc]
        contents = self._content_map(items)
        records = [self._record(s, contents.get((s.get("status") or {}).get("boundVolumeSnapshotContentName") or ""))
                   for s in items]
        return sorted(records, key=lambda s: (s.created, s.name))

    def get(self, volume: str, name: str) -> Snapshot:
        namespace, pvc = self._parse_volume(volume)
        validate_snapshot_name(name, "name")
        obj = self._get_snapshot(namespace, name)
        if obj is None:
            raise SnapshotNotFound(f"VolumeSnapshot {namespace}/{name} not found")
        source = _source_pvc(obj)
        if source != pvc:
            raise SnapshotNotFound(f"VolumeSnapshot {namespace}/{name} is a snapshot of PVC {source!r}, not {pvc!r}")
        return self._record(obj, self._get_content((obj.get("status") or {}).get("boundVolumeSnapshotContentName")))

    def delete(self, volume: str, name: str, *, wait: bool | None = None) -> None:
        """Delete VolumeSnapshot *name* of PVC *volume* (only if it is a snapshot of that PVC); with ``wait``
        (default ``Config.delete_wait``) until the controller has released it."""
        namespace, pvc = self._parse_volume(volume)
        validate_snapshot_name(name, "name")
        obj = self._get_snapshot(namespace, name)
        if obj is None:
            raise SnapshotNotFound(f"VolumeSnapshot {namespace}/{name} not found")
        source = _source_pvc(obj)
        if source != pvc:
            raise SnapshotError(f"refusing to delete VolumeSnapshot {namespace}/{name}: it is a snapshot of PVC "
                                f"{source!r}, not {pvc!r}")
        self._delete_object(namespace, name, _meta(obj).get("uid"))
        if self.config.delete_wait if wait is None else wait:
            self._wait_gone(namespace, name, obj)

    def _delete_object(self, namespace: str, name: str, uid: str | None) -> bool:
        _, custom = self._apis()
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}} if uid else None
        try:
            self._call(f"delete VolumeSnapshot {namespace}/{name}", custom.delete_namespaced_custom_object,
                       GROUP, VERSION, namespace, SNAPSHOTS, name, body=body)
        except KubeApiError as exc:
            if exc.not_found:
                return False  # already gone (e.g. a retried delete)
            if exc.conflict:
                raise SnapshotError(f"VolumeSnapshot {namespace}/{name} was replaced while deleting it (uid "
                                    f"changed); not deleted") from None
            raise self._error(exc) from None
        return True

    def _wait_gone(self, namespace: str, name: str, obj: Mapping[str, Any]) -> None:
        started = time.monotonic()
        uid = _meta(obj).get("uid")
        final = self._follow(namespace, name, obj, started + self.config.delete_timeout_s,
                             lambda state: state is None or _meta(state).get("uid") != uid)
        if final is not None and _meta(final).get("uid") == uid:
            finalizers = _meta(final).get("finalizers") or []
            raise SnapshotTimeout(f"VolumeSnapshot {namespace}/{name} still exists {self.config.delete_timeout_s:g}s "
                                  f"after deletion (finalizers: {', '.join(finalizers) or 'none'})")

    def prune(self, volume: str, keep_last: int | None = None, *, protect: Iterable[str] = ()) -> list[str]:
        """Delete the oldest snapshots of *volume* that this tool made (``managed-by=mlflow-anf``) beyond the
        newest *keep_last* (default ``Config.keep_last``); never those in *protect* nor unmanaged ones.
        Returns the deleted names, oldest first."""
        keep = keep_last if keep_last is not None else self.config.keep_last
        if keep is None or keep < 1:
            raise InvalidInput(f"keep_last: expected a positive number, got {keep!r}")
        namespace, pvc = self._parse_volume(volume)
        managed = [s for s in self._list_snapshots(namespace, f"{LABEL_MANAGED_BY}={MANAGED_BY}")
                   if _source_pvc(s) == pvc and not _meta(s).get("deletionTimestamp")]
        managed.sort(key=_age_key)
        keep_set = set(protect)
        victims = [s for s in managed[:max(0, len(managed) - keep)] if _meta(s).get("name") not in keep_set]
        deleted = []
        for victim in victims:
            name = _meta(victim)["name"]
            if self._delete_object(namespace, name, _meta(victim).get("uid")):
                deleted.append(name)
        if deleted:
            log.info("keep_last=%d: deleted %d old snapshot(s) of %s/%s: %s", keep, len(deleted), namespace, pvc,
                     ", ".join(deleted))
        return deleted

    def restore(
        self,
        snapshot: Snapshot,
        target: str,
        storage_class: str | None = None,
        size: str | int | None = None,
        access_modes: Sequence[str] | None = None,
        *,
        verify: bool = True,
        wait: bool = False,
        timeout_s: float | None = None,
    ) -> str:
        """Create PVC *target* (``namespace/pvc`` or ``pvc``, in the snapshot's namespace) from *snapshot*.

        ``size`` defaults to the snapshot's ``restoreSize`` and may not be smaller; ``storage_class`` defaults to
        ``Config.restore_storage_class``, else the source PVC's class (recorded on the snapshot, so a deleted
        source PVC does not matter). ``verify`` checks the snapshot is still the recorded one (same uid).
        ``wait`` waits until the new PVC is Bound. Returns ``namespace/pvc``."""
        if snapshot.provider != self.name:
            raise InvalidInput(f"snapshot: {snapshot.ref} belongs to provider {snapshot.provider!r}, not 'csi'")
        namespace = snapshot.details.get("namespace") or self._parse_volume(snapshot.volume)[0]
        if "/" in target:
            target_ns, target_pvc = self._parse_volume(target, "target")
            if target_ns != namespace:
                raise InvalidInput(f"target: {target!r} is in namespace {target_ns!r}, but VolumeSnapshot "
                                   f"{namespace}/{snapshot.name} is in {namespace!r}; a PVC can only be restored "
                                   "from a snapshot in its own namespace")
        else:
            target_ns, target_pvc = self._parse_volume(f"{namespace}/{target}", "target")
        obj = self._get_snapshot(namespace, snapshot.name)
        if obj is None:
            raise SnapshotNotFound(f"VolumeSnapshot {namespace}/{snapshot.name} not found")
        if verify and _meta(obj).get("uid") != snapshot.id:
            raise SnapshotVerificationError(f"VolumeSnapshot {namespace}/{snapshot.name} is now uid "
                                            f"{_meta(obj).get('uid')}, not the recorded {snapshot.id} (name reused?)")
        if _error_message(obj):
            raise SnapshotError(f"VolumeSnapshot {namespace}/{snapshot.name} failed: {_error_message(obj)}")
        if not _is_ready(obj):
            raise SnapshotError(f"VolumeSnapshot {namespace}/{snapshot.name} is not ready to use yet; wait for "
                                "readyToUse before restoring")
        restore_size = (obj.get("status") or {}).get("restoreSize")
        source_pvc = _source_pvc(obj)
        source_obj: dict[str, Any] | None = None

        def source() -> dict[str, Any] | None:
            nonlocal source_obj
            if source_obj is None and source_pvc:
                try:
                    source_obj = self._get_pvc(namespace, source_pvc)
                except SnapshotNotFound:
                    source_obj = {}
            return source_obj or None

        if size is None:
            if restore_size is not None:
                request = format_quantity(parse_quantity(restore_size))
            else:
                src = source()
                request = (((src or {}).get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
                if not request:
                    raise InvalidInput(f"size: VolumeSnapshot {namespace}/{snapshot.name} reports no restoreSize and "
                                       "its source PVC is gone; pass size=")
        else:
            try:
                wanted = parse_quantity(size, "size")
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
            if restore_size is not None and wanted < parse_quantity(restore_size):
                raise InvalidInput(f"size: {size} is smaller than the snapshot's restoreSize {restore_size}; a volume "
                                   "restored from a snapshot must be at least as large")
            request = format_quantity(wanted) if isinstance(size, int) else str(size)
        annotations = _meta(obj).get("annotations") or {}
        klass = storage_class or self.config.restore_storage_class or annotations.get(ANNOTATION_SOURCE_STORAGE_CLASS)
        if not klass:
            klass = (((source() or {}).get("spec")) or {}).get("storageClassName")
        if not klass:
            raise InvalidInput(f"storage_class: source PVC {namespace}/{source_pvc} is gone and VolumeSnapshot "
                               f"{snapshot.name} records no storage class; pass storage_class=")
        try:
            validate_dns1123_subdomain(klass, "storage_class")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        modes = tuple(access_modes or self.config.restore_access_modes)
        body = render_restore_pvc(
            target_pvc, target_ns, snapshot.name, request, storage_class=klass, access_modes=modes,
            labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_SOURCE_PVC: sanitize_label_value(source_pvc or "")},
            annotations={ANNOTATION_RESTORED_FROM: f"{namespace}/{snapshot.name}@{_meta(obj).get('uid')}"},
        )
        core, _ = self._apis()
        try:
            self._call(f"create PVC {target_ns}/{target_pvc}", core.create_namespaced_persistent_volume_claim,
                       target_ns, body)
        except KubeApiError as exc:
            if not exc.conflict:
                raise self._error(exc) from None
            existing = self._get_pvc(target_ns, target_pvc)
            marker = (_meta(existing).get("annotations") or {}).get(ANNOTATION_RESTORED_FROM)
            if marker != body["metadata"]["annotations"][ANNOTATION_RESTORED_FROM]:
                raise SnapshotExists(f"target: PersistentVolumeClaim {target_ns}/{target_pvc} already exists; choose "
                                     "another target") from None
        if wait:
            self._wait_bound(target_ns, target_pvc, timeout_s or self.config.ready_timeout_s)
        return f"{target_ns}/{target_pvc}"

    def _wait_bound(self, namespace: str, pvc: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            phase = (self._get_pvc(namespace, pvc).get("status") or {}).get("phase")
            if phase == "Bound":
                return
            if time.monotonic() >= deadline:
                raise SnapshotTimeout(f"PersistentVolumeClaim {namespace}/{pvc} still {phase or 'Pending'} after "
                                      f"{timeout_s:g}s; see its events (kubectl -n {namespace} describe pvc {pvc})")
            self._sleep(min(self.config.poll_interval_s, max(0.0, deadline - time.monotonic())))

    def verify(self, snapshot: Snapshot) -> VerifyResult:
        """Check that the snapshot still exists as recorded, is ready, has no error and is bound to a ready
        VolumeSnapshotContent that points back at it with a snapshot handle."""
        namespace = snapshot.details.get("namespace") or self._parse_volume(snapshot.volume)[0]
        where = f"VolumeSnapshot {namespace}/{snapshot.name}"
        obj = self._get_snapshot(namespace, snapshot.name)
        if obj is None:
            return VerifyResult(ok=False, checked=1, problems=[f"{where} no longer exists"])
        problems: list[str] = []
        checks = 0

        def check(ok: bool, problem: str) -> None:
            nonlocal checks
            checks += 1
            if not ok:
                problems.append(problem)

        uid = _meta(obj).get("uid")
        check(uid == snapshot.id, f"{where} is uid {uid}, not the recorded {snapshot.id} (name reused?)")
        recorded_pvc = snapshot.details.get("pvc")
        if recorded_pvc:
            check(_source_pvc(obj) == recorded_pvc, f"{where} is a snapshot of {_source_pvc(obj)!r}, not "
                                                    f"{recorded_pvc!r}")
        message = _error_message(obj)
        check(message is None, f"{where} reports an error: {message}")
        check(_is_ready(obj), f"{where} is not readyToUse")
        content_name = (obj.get("status") or {}).get("boundVolumeSnapshotContentName")
        check(bool(content_name), f"{where} is not bound to a VolumeSnapshotContent")
        if content_name:
            content = self._get_content(content_name)
            check(content is not None, f"VolumeSnapshotContent {content_name} of {where} is missing or unreadable")
            if content is not None:
                ref_uid = ((content.get("spec") or {}).get("volumeSnapshotRef") or {}).get("uid")
                check(ref_uid in (None, uid), f"VolumeSnapshotContent {content_name} is bound to uid {ref_uid}, "
                                              f"not {uid}")
                c_status = content.get("status") or {}
                check(c_status.get("readyToUse") is True, f"VolumeSnapshotContent {content_name} is not readyToUse")
                handle = c_status.get("snapshotHandle")
                check(bool(handle), f"VolumeSnapshotContent {content_name} has no snapshotHandle")
                recorded = snapshot.details.get("snapshot_handle")
                if recorded and handle:
                    check(handle == recorded, f"VolumeSnapshotContent {content_name} has handle {handle}, not the "
                                              f"recorded {recorded}")
        return VerifyResult(ok=not problems, checked=checks + 1, problems=problems)
