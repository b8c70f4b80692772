"""The ``csi`` provider's API calls: a thin client over ``CoreV1Api``/``CustomObjectsApi`` with the configured
retry policy, that turns the server's answers into the provider's errors (``SnapshotNotFound``, ``SnapshotError``
with an RBAC hint, ``InvalidInput`` for a bad selector). No decisions are made here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlflow_anf.k8s import (
    KubeApiError,
    KubeConfigError,
    api_client,
    call_with_retries,
    follow,
    list_watch,
    resolve_namespace,
)
from mlflow_anf.k8s.follow import Followed, State
from mlflow_anf.snapshots.base import SnapshotError, SnapshotNotFound
from mlflow_anf.snapshots.csi.config import (
    API_VERSION,
    CLASSES,
    CONTENTS,
    GROUP,
    SNAPSHOTS,
    VERSION,
    CsiConfig,
    InvalidInput,
)
from mlflow_anf.snapshots.csi.manifests import meta

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

RBAC_HINT = (
    "check the credentials and RBAC: mlflow-anf needs get/list/watch/create/delete on volumesnapshots, "
    "get/list on volumesnapshotclasses and volumesnapshotcontents, get/create/list on persistentvolumeclaims (and "
    "watch, else restores poll)"
)
_NOT_SERVED = f"the {API_VERSION} API is not served - install the external-snapshotter CRDs and snapshot controller"


def api_error(exc: KubeApiError) -> SnapshotError:
    """A failed call as the provider's error (with the RBAC hint for 401/403)."""
    if exc.status in (401, 403):
        return SnapshotError(f"{exc}; {RBAC_HINT}")
    return SnapshotError(str(exc))


class CsiApi:
    """The calls the provider makes, each with retries; built lazily (no I/O until the first call)."""

    def __init__(self, config: CsiConfig, client: ApiClient | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.client = client
        self.sleep = sleep
        self.clock = clock
        self._namespace: str | None = None
        self._core: Any = None
        self._custom: Any = None

    @property
    def namespace(self) -> str:
        """The namespace of bare PVC names: configured, else the kubeconfig context's / the pod's."""
        if self._namespace is None:
            self._namespace = resolve_namespace(self.config.kube())
        return self._namespace

    def apis(self) -> tuple[Any, Any]:
        if self._core is None:
            from mlflow_anf.extras import require_extra

            client = require_extra("k8s", "kubernetes.client", "the csi snapshot provider")
            if self.client is None:
                try:
                    self.client = api_client(self.config.kube())
                except KubeConfigError as exc:
                    raise SnapshotError(str(exc)) from None
            self._core = client.CoreV1Api(self.client)
            self._custom = client.CustomObjectsApi(self.client)
        return self._core, self._custom

    def call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self.config.request_timeout_s)
        return call_with_retries(fn, *args, op=op, policy=self.config.retry, sleep=self.sleep, **kwargs)

    def to_dict(self, model: Any) -> dict[str, Any]:
        if isinstance(model, dict):
            return model
        assert self.client is not None
        return self.client.sanitize_for_serialization(model)

    # ---- VolumeSnapshots ----------------------------------------------------------------------------------------

    def get_snapshot(self, namespace: str, name: str) -> dict[str, Any] | None:
        _, custom = self.apis()
        try:
            return self.call(f"get VolumeSnapshot {namespace}/{name}", custom.get_namespaced_custom_object,
                             GROUP, VERSION, namespace, SNAPSHOTS, name)
        except KubeApiError as exc:
            if exc.not_found and exc.details:
                return None
            if exc.not_found:
                raise SnapshotError(f"{exc}; is the {API_VERSION} API installed (external-snapshotter CRDs)?") from None
            raise api_error(exc) from None

    def list_snapshots(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        _, custom = self.apis()
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.config.page_size}
            if selector:
                kwargs["label_selector"] = selector
            if token:
                kwargs["_continue"] = token
            try:
                page = self.call(f"list VolumeSnapshots in {namespace}", custom.list_namespaced_custom_object,
                                 GROUP, VERSION, namespace, SNAPSHOTS, **kwargs)
            except KubeApiError as exc:
                if exc.status == 400 and selector:
                    raise InvalidInput(f"label selector {selector!r}: {exc.message or exc.reason}") from None
                if exc.not_found and not exc.details:
                    raise SnapshotError(f"{exc}; is the {API_VERSION} API installed (external-snapshotter "
                                        "CRDs)?") from None
                raise api_error(exc) from None
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def create_snapshot(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create it; a 409 propagates as :class:`KubeApiError` (the caller adopts or refuses)."""
        _, custom = self.apis()
        name = body["metadata"]["name"]
        try:
            return self.call(f"create VolumeSnapshot {namespace}/{name}", custom.create_namespaced_custom_object,
                             GROUP, VERSION, namespace, SNAPSHOTS, body)
        except KubeApiError as exc:
            if exc.conflict:
                raise
            raise api_error(exc) from None

    def delete_snapshot(self, namespace: str, name: str, uid: str | None) -> bool:
        """Delete it (only that uid); ``False`` when it was gone already."""
        _, custom = self.apis()
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}} if uid else None
        try:
            self.call(f"delete VolumeSnapshot {namespace}/{name}", custom.delete_namespaced_custom_object,
                      GROUP, VERSION, namespace, SNAPSHOTS, name, body=body)
        except KubeApiError as exc:
            if exc.not_found:
                return False  # already gone (e.g. a retried delete)
            if exc.conflict:
                raise SnapshotError(f"VolumeSnapshot {namespace}/{name} was replaced while deleting it (uid "
                                    f"changed); not deleted") from None
            raise api_error(exc) from None
        return True

    # ---- contents and classes -----------------------------------------------------------------------------------

    def get_content(self, name: str | None) -> dict[str, Any] | None:
        """The bound VolumeSnapshotContent, or ``None`` if absent or not readable (RBAC)."""
        if not name:
            return None
        _, custom = self.apis()
        try:
            return self.call(f"get VolumeSnapshotContent {name}", custom.get_cluster_custom_object,
                             GROUP, VERSION, CONTENTS, name)
        except KubeApiError as exc:
            if exc.status in (403, 404):
                log.debug("VolumeSnapshotContent %s not readable: %s", name, exc)
                return None
            raise api_error(exc) from None

    def content_map(self, snapshots: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Bound contents by name with one list call (cluster-scoped; skipped when RBAC forbids it)."""
        if not any((s.get("status") or {}).get("boundVolumeSnapshotContentName") for s in snapshots):
            return {}
        _, custom = self.apis()
        try:
            page = self.call("list VolumeSnapshotContents", custom.list_cluster_custom_object, GROUP, VERSION,
                             CONTENTS)
        except KubeApiError as exc:
            if exc.status in (403, 404):
                return {}
            raise api_error(exc) from None
        return {meta(c).get("name", ""): c for c in page.get("items") or []}

    def list_classes(self) -> list[dict[str, Any]]:
        _, custom = self.apis()
        try:
            return self.call("list VolumeSnapshotClasses", custom.list_cluster_custom_object, GROUP, VERSION,
                             CLASSES).get("items") or []
        except KubeApiError as exc:
            if exc.not_found and not exc.details:
                raise SnapshotError(f"{exc}; {_NOT_SERVED}") from None
            raise api_error(exc) from None

    def get_storage_class(self, name: str | None) -> dict[str, Any] | None:
        """StorageClass *name*, or ``None`` when absent or not readable (it only tells a PVC's driver)."""
        if not name:
            return None
        from kubernetes import client

        self.apis()
        try:
            return self.to_dict(self.call(f"get StorageClass {name}", client.StorageV1Api(self.client)
                                          .read_storage_class, name))
        except KubeApiError as exc:
            if exc.status in (403, 404):
                return None
            raise api_error(exc) from None

    # ---- PVCs and namespaces ------------------------------------------------------------------------------------

    def get_pvc(self, namespace: str, pvc: str) -> dict[str, Any]:
        core, _ = self.apis()
        try:
            return self.to_dict(self.call(f"get PVC {namespace}/{pvc}", core.read_namespaced_persistent_volume_claim,
                                          pvc, namespace))
        except KubeApiError as exc:
            if not exc.not_found:
                raise api_error(exc) from None
        if self.namespace_missing(namespace):
            raise SnapshotNotFound(f"volume {namespace}/{pvc}: namespace {namespace!r} not found")
        raise SnapshotNotFound(f"volume {namespace}/{pvc}: PersistentVolumeClaim {pvc!r} not found in namespace "
                               f"{namespace!r}")

    def create_pvc(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Create it; a 409 propagates as :class:`KubeApiError`."""
        core, _ = self.apis()
        try:
            self.call(f"create PVC {namespace}/{body['metadata']['name']}",
                      core.create_namespaced_persistent_volume_claim, namespace, body)
        except KubeApiError as exc:
            if exc.conflict:
                raise
            raise api_error(exc) from None

    def namespace_missing(self, namespace: str) -> bool:
        core, _ = self.apis()
        try:
            self.call(f"get Namespace {namespace}", core.read_namespace, namespace)
        except KubeApiError as exc:
            return exc.not_found
        return False

    # ---- following ----------------------------------------------------------------------------------------------

    def follow_snapshot(self, namespace: str, name: str, initial: Mapping[str, Any] | None,
                        until: Callable[[State], bool], timeout_s: float) -> Followed:
        """Follow VolumeSnapshot *name* (see :func:`mlflow_anf.k8s.follow`) until *until* or *timeout_s*."""
        _, custom = self.apis()
        return self._follow(lambda ns, **kw: custom.list_namespaced_custom_object(GROUP, VERSION, ns, SNAPSHOTS, **kw),
                            f"VolumeSnapshot {namespace}/{name}", namespace, name, initial, until, timeout_s)

    def follow_pvc(self, namespace: str, name: str, until: Callable[[State], bool], timeout_s: float) -> Followed:
        core, _ = self.apis()
        return self._follow(core.list_namespaced_persistent_volume_claim, f"PVC {namespace}/{name}", namespace,
                            name, None, until, timeout_s)

    def _follow(self, method: Callable[..., Any], what: str, namespace: str, name: str,
                initial: Mapping[str, Any] | None, until: Callable[[State], bool], timeout_s: float) -> Followed:
        list_fn, watch_fn = list_watch(method, call=self.call, what=what,
                                       request_timeout_s=self.config.request_timeout_s)
        try:
            return follow(list_fn, watch_fn if self.config.watch else None, namespace=namespace, name=name,
                          until=until, timeout_s=timeout_s, poll_interval_s=self.config.poll_interval_s,
                          watch_timeout_s=self.config.watch_timeout_s, initial=initial, what=what, sleep=self.sleep,
                          clock=self.clock)
        except KubeApiError as exc:
            raise api_error(exc) from None
