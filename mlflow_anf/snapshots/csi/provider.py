"""The ``csi`` provider's protocol class: :class:`CsiSnapshotProvider` (create, list, get, delete, prune, restore,
verify) over the API client of :mod:`~mlflow_anf.snapshots.csi.api` and the pure manifests of
:mod:`~mlflow_anf.snapshots.csi.manifests`. Waits follow objects with :func:`mlflow_anf.k8s.follow`; the snapshot
class comes from :func:`mlflow_anf.k8s.resolve_snapshot_class` (the routine ``mlflow-anf doctor`` uses too)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlflow_anf.k8s import (
    KubeApiError,
    SnapshotClassError,
    derive_name,
    format_quantity,
    parse_quantity,
    pvc_driver,
    resolve_snapshot_class,
    sanitize_label_value,
    validate_dns1123_label,
    validate_dns1123_subdomain,
)
from mlflow_anf.snapshots.base import (
    ProviderTraits,
    Snapshot,
    SnapshotError,
    SnapshotExists,
    SnapshotInputError,
    SnapshotLimitExceeded,
    SnapshotNotFound,
    SnapshotTimeout,
    SnapshotVerificationError,
    VerifyResult,
    validate_snapshot_name,
    validate_storage_name,
)
from mlflow_anf.snapshots.csi.api import CsiApi, api_error
from mlflow_anf.snapshots.csi.config import (
    ANF_MAX_SNAPSHOTS_PER_VOLUME,
    LABEL_MANAGED_BY,
    CsiConfig,
    InvalidInput,
    SnapshotProgress,
)
from mlflow_anf.snapshots.csi.manifests import (
    age_key,
    bound_content,
    error_message,
    is_ready,
    label_selector,
    meta,
    phase,
    render_restore_pvc,
    render_volume_snapshot,
    snapshot_annotations,
    snapshot_labels,
    snapshot_record,
    source_pvc,
)
from mlflow_anf.snapshots.csi.retention import prune_candidates
from mlflow_anf.vocabulary import (
    ANNOTATION_RESTORED_FROM,
    ANNOTATION_SOURCE_STORAGE_CLASS,
    LABEL_RUN_ID,
    LABEL_SOURCE_PVC,
    MANAGED_BY,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)


class CsiSnapshotProvider(ProviderTraits):
    """Snapshots of PVCs as CSI ``VolumeSnapshot`` objects. See :mod:`mlflow_anf.snapshots.csi`."""

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
        self.api = CsiApi(self.config, api_client, sleep)

    def __repr__(self) -> str:
        cfg = self.config
        return f"CsiSnapshotProvider(namespace={cfg.namespace!r}, snapshot_class={cfg.snapshot_class!r})"

    # ---- plumbing ---------------------------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        """The namespace of bare PVC names: configured, else the kubeconfig context's / the pod's."""
        return self.api.namespace

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

    def _record(self, obj: Mapping[str, Any], content: Mapping[str, Any] | None = None) -> Snapshot:
        return snapshot_record(obj, content, default_namespace=self.namespace)

    def _progress(self, step: str, volume: str, name: str, started: float, obj: Mapping[str, Any] | None = None,
                  message: str = "") -> None:
        status = (obj or {}).get("status") or {}
        event = SnapshotProgress(
            volume=volume, name=name, phase=step, elapsed_s=round(time.monotonic() - started, 3),
            ready=status.get("readyToUse") is True, content=status.get("boundVolumeSnapshotContentName"),
            restore_size=str(status["restoreSize"]) if status.get("restoreSize") is not None else None,
            message=message,
        )
        if self.config.progress is None:
            log.info("VolumeSnapshot %s@%s: %s after %.1fs%s", volume, name, step, event.elapsed_s,
                     f" ({message})" if message else "")
            return
        try:
            self.config.progress(event)
        except Exception:  # noqa: BLE001 - a broken progress display must not break a snapshot
            log.warning("progress callback failed for %s@%s", volume, name, exc_info=True)

    def _snapshot_class(self, pvc_obj: Mapping[str, Any]) -> str:
        """The class to use (:func:`mlflow_anf.k8s.resolve_snapshot_class`: the configured one, checked, else the
        one default class of the PVC's driver)."""
        storage_class = None
        if pvc_driver(pvc_obj) is None:
            storage_class = self.api.get_storage_class((pvc_obj.get("spec") or {}).get("storageClassName"))
        where = f"PVC {meta(pvc_obj).get('namespace')}/{meta(pvc_obj).get('name')}"
        try:
            return resolve_snapshot_class(self.api.list_classes(), pvc_driver(pvc_obj, storage_class),
                                          self.config.snapshot_class, volume=where)
        except SnapshotClassError as exc:
            missing = exc.problem in ("not_found", "no_default")
            raise (SnapshotNotFound if missing else SnapshotError)(str(exc)) from None

    # ---- waiting ----------------------------------------------------------------------------------------------

    def _wait_ready(self, namespace: str, name: str, obj: Mapping[str, Any], started: float) -> dict[str, Any]:
        """Follow the VolumeSnapshot until ``readyToUse``, for up to ``ready_timeout_s``. A ``status.error`` does not
        end the wait: it is the *last observed* error, the controller keeps retrying and clears it on success
        (kubernetes-csi/external-snapshotter client/apis/volumesnapshot/v1/types.go:184-191); both controllers
        requeue every failed sync, a "final" CSI error included (pkg/common-controller/snapshot_controller_base.go:
        363-373, pkg/sidecar-controller/snapshot_controller_base.go:250-265), so no error is known to be final. The
        timeout names the last error seen."""
        volume = f"{namespace}/{source_pvc(obj)}"
        seen = [(phase(obj), error_message(obj))]
        last_error = [error_message(obj)]

        def done(state: Mapping[str, Any] | None) -> bool:
            if state is None:
                return True
            now = (phase(state), error_message(state))
            if now[1]:
                last_error[0] = now[1]
            if now != seen[0]:
                seen[0] = now
                self._progress(now[0], volume, name, started, state, now[1] or "")
            return now[0] == "ready"

        remaining = started + self.config.ready_timeout_s - time.monotonic()
        final = self.api.follow_snapshot(namespace, name, obj, done, remaining).state
        if final is None:
            raise SnapshotError(f"VolumeSnapshot {namespace}/{name} was deleted while waiting for it to become ready"
                                + (f" (last observed error: {last_error[0]})" if last_error[0] else ""))
        if is_ready(final):
            return dict(final)
        content = bound_content(final)
        current = error_message(final)
        if current:
            error = f"; last observed error: {current}"
        elif last_error[0]:
            error = f"; last observed error (since cleared): {last_error[0]}"
        else:
            error = ""
        raise SnapshotTimeout(
            f"VolumeSnapshot {namespace}/{name} not ready after {time.monotonic() - started:.1f}s (ready_timeout_s="
            f"{self.config.ready_timeout_s:g}; {'bound to ' + content if content else 'no VolumeSnapshotContent bound'}"
            f"){error}; it is kept for inspection (kubectl -n {namespace} describe volumesnapshot {name}) - wait "
            "longer or delete it"
        )

    def _wait_gone(self, namespace: str, name: str, obj: Mapping[str, Any]) -> None:
        uid = meta(obj).get("uid")
        final = self.api.follow_snapshot(namespace, name, obj,
                                         lambda state: state is None or meta(state).get("uid") != uid,
                                         self.config.delete_timeout_s).state
        if final is not None and meta(final).get("uid") == uid:
            finalizers = meta(final).get("finalizers") or []
            raise SnapshotTimeout(f"VolumeSnapshot {namespace}/{name} still exists {self.config.delete_timeout_s:g}s "
                                  f"after deletion (finalizers: {', '.join(finalizers) or 'none'})")

    def _wait_bound(self, namespace: str, pvc: str, timeout_s: float) -> None:
        def bound(state: Mapping[str, Any] | None) -> bool:
            return ((state or {}).get("status") or {}).get("phase") == "Bound"

        followed = self.api.follow_pvc(namespace, pvc, bound, timeout_s)
        if not followed.done:
            phase_now = ((followed.state or {}).get("status") or {}).get("phase")
            raise SnapshotTimeout(f"PersistentVolumeClaim {namespace}/{pvc} still {phase_now or 'Pending'} after "
                                  f"{timeout_s:g}s; see its events (kubectl -n {namespace} describe pvc {pvc})")

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
            name = derive_name(pvc, f"{stamp}-{secrets.token_hex(2)}")
        validate_snapshot_name(name, "name")
        all_labels = snapshot_labels(labels, pvc)
        started = time.monotonic()
        volume_id = f"{namespace}/{pvc}"

        pvc_obj = self.api.get_pvc(namespace, pvc)
        pvc_phase = (pvc_obj.get("status") or {}).get("phase")
        if pvc_phase != "Bound":
            raise SnapshotError(f"volume {volume_id}: PersistentVolumeClaim is {pvc_phase or 'not bound'}, not Bound; "
                                "there is nothing to snapshot yet")
        snapshot_class = self._snapshot_class(pvc_obj)
        existing = self.api.list_snapshots(namespace)
        same_name = next((s for s in existing if meta(s).get("name") == name), None)
        if same_name is not None:
            return self._adopt(same_name, namespace, pvc, started, wait)
        count = sum(1 for s in existing if source_pvc(s) == pvc)
        limit = self.config.max_snapshots_per_volume
        if count >= limit:
            raise SnapshotLimitExceeded(
                f"volume {volume_id}: {count} VolumeSnapshots exist, the limit is {limit} per volume "
                f"(max_snapshots_per_volume; Azure NetApp Files allows {ANF_MAX_SNAPSHOTS_PER_VOLUME}); delete old "
                "ones or set keep_last"
            )
        annotations = snapshot_annotations(pvc, (pvc_obj.get("spec") or {}).get("storageClassName"),
                                           datetime.now(timezone.utc))
        body = render_volume_snapshot(name, namespace, pvc, snapshot_class, labels=all_labels,
                                      annotations=annotations)
        try:
            created = self.api.create_snapshot(namespace, body)
        except KubeApiError as exc:  # 409: created by an earlier attempt, or by someone else
            current = self.api.get_snapshot(namespace, name)
            if current is None:
                raise SnapshotError(f"{exc}; and it is gone again - retry") from None
            return self._adopt(current, namespace, pvc, started, wait)
        self._progress("submitted", volume_id, name, started, created)
        if not wait:
            return self._record(created)
        ready = self._wait_ready(namespace, name, created, started)
        snapshot = self._record(ready, self.api.get_content(bound_content(ready)))
        if self.config.keep_last:  # the run's other snapshots (data and model of one PVC) are spared too
            self.prune(volume_id, self.config.keep_last, protect=(name,), run_id=all_labels.get(LABEL_RUN_ID))
        return snapshot

    def _adopt(self, obj: Mapping[str, Any], namespace: str, pvc: str, started: float, wait: bool) -> Snapshot:
        name = meta(obj).get("name", "")
        source = source_pvc(obj)
        if source != pvc:
            raise SnapshotExists(f"VolumeSnapshot {namespace}/{name} already exists and is a snapshot of "
                                 f"{'PVC ' + repr(source) if source else 'a pre-provisioned content'}, not of "
                                 f"{pvc!r}; choose another name")
        if meta(obj).get("deletionTimestamp"):
            raise SnapshotExists(f"VolumeSnapshot {namespace}/{name} exists but is being deleted; retry later or "
                                 "choose another name")
        self._progress("adopted", f"{namespace}/{pvc}", name, started, obj, "already exists with the same source")
        if not wait:
            return self._record(obj)
        ready = self._wait_ready(namespace, name, obj, started)
        return self._record(ready, self.api.get_content(bound_content(ready)))

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
        items = self.api.list_snapshots(namespace, label_selector(labels, extra))
        if pvc is not None:
            items = [s for s in items if source_pvc(s) == pvc]
        contents = self.api.content_map(items)
        records = [self._record(s, contents.get(bound_content(s) or "")) for s in items]
        return sorted(records, key=lambda s: (s.created, s.name))

    def get(self, volume: str, name: str) -> Snapshot:
        namespace, pvc = self._parse_volume(volume)
        validate_snapshot_name(name, "name")
        obj = self.api.get_snapshot(namespace, name)
        if obj is None:
            raise SnapshotNotFound(f"VolumeSnapshot {namespace}/{name} not found")
        source = source_pvc(obj)
        if source != pvc:
            raise SnapshotNotFound(f"VolumeSnapshot {namespace}/{name} is a snapshot of PVC {source!r}, not {pvc!r}")
        return self._record(obj, self.api.get_content(bound_content(obj)))

    def delete(self, volume: str, name: str, *, wait: bool | None = None) -> None:
        """Delete VolumeSnapshot *name* of PVC *volume* (only if it is a snapshot of that PVC); with ``wait``
        (default ``Config.delete_wait``) until the controller has released it."""
        namespace, pvc = self._parse_volume(volume)
        validate_snapshot_name(name, "name")
        obj = self.api.get_snapshot(namespace, name)
        if obj is None:
            raise SnapshotNotFound(f"VolumeSnapshot {namespace}/{name} not found")
        source = source_pvc(obj)
        if source != pvc:
            raise SnapshotError(f"refusing to delete VolumeSnapshot {namespace}/{name}: it is a snapshot of PVC "
                                f"{source!r}, not {pvc!r}")
        self.api.delete_snapshot(namespace, name, meta(obj).get("uid"))
        if self.config.delete_wait if wait is None else wait:
            self._wait_gone(namespace, name, obj)

    def prune(self, volume: str, keep_last: int | None = None, *, protect: Iterable[str] = (),
              run_id: str | None = None) -> list[str]:
        """Delete the oldest snapshots of *volume* that this tool made (``managed-by=mlflow-anf``) beyond the
        newest *keep_last* (default ``Config.keep_last``); never those in *protect*, of run *run_id*, not ready
        (:func:`~mlflow_anf.snapshots.csi.retention.prune_candidates`), being deleted, nor unmanaged ones.
        Returns the deleted names, oldest first."""
        keep = keep_last if keep_last is not None else self.config.keep_last
        if keep is None or keep < 1:
            raise InvalidInput(f"keep_last: expected a positive number, got {keep!r}")
        namespace, pvc = self._parse_volume(volume)
        managed = [s for s in self.api.list_snapshots(namespace, f"{LABEL_MANAGED_BY}={MANAGED_BY}")
                   if source_pvc(s) == pvc and not meta(s).get("deletionTimestamp")]
        managed.sort(key=age_key)
        keep_set = set(protect) | set(prune_candidates(managed, run_id))
        victims = [s for s in managed[:max(0, len(managed) - keep)] if meta(s).get("name") not in keep_set]
        deleted = [meta(v)["name"] for v in victims if self.api.delete_snapshot(namespace, meta(v)["name"],
                                                                               meta(v).get("uid"))]
        if deleted:
            log.info("keep_last=%d: deleted %d old snapshot(s) of %s/%s: %s", keep, len(deleted), namespace, pvc,
                     ", ".join(deleted))
        return deleted

    def restore(
        self,
        snapshot: Snapshot,
        target: str,
        *,
        wait: bool = False,
        timeout_s: float | None = None,
        verify: bool = True,
        storage_class: str | None = None,
        size: str | int | None = None,
        access_modes: Sequence[str] | None = None,
    ) -> str:
        """Create PVC *target* (``namespace/pvc`` or ``pvc``, in the snapshot's namespace) from *snapshot*.

        The protocol's keywords: ``verify`` checks the snapshot is still the recorded one (same uid); ``wait`` waits
        (up to ``timeout_s``, default ``ready_timeout_s``) until the new PVC is Bound. csi's own, all optional:
        ``size`` defaults to the snapshot's ``restoreSize`` and may not be smaller; ``storage_class`` defaults to
        ``Config.restore_storage_class``, else the source PVC's class (recorded on the snapshot, so a deleted
        source PVC does not matter); ``access_modes`` to ``Config.restore_access_modes``. Returns
        ``namespace/pvc``."""
        if snapshot.provider != self.name:
            raise InvalidInput(f"snapshot: {snapshot.ref} belongs to provider {snapshot.provider!r}, not 'csi'")
        namespace = snapshot.details.get("namespace") or self._parse_volume(snapshot.volume)[0]
        target_ns, target_pvc = self._restore_target(target, namespace, snapshot.name)
        obj = self._restorable(namespace, snapshot, verify)
        source = _SourcePvc(self.api, namespace, source_pvc(obj))
        request = self._restore_size(obj, snapshot.name, namespace, size, source)
        klass = self._restore_class(obj, snapshot.name, namespace, storage_class, source)
        body = render_restore_pvc(
            target_pvc, target_ns, snapshot.name, request, storage_class=klass,
            access_modes=tuple(access_modes or self.config.restore_access_modes),
            labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_SOURCE_PVC: sanitize_label_value(source.name or "")},
            annotations={ANNOTATION_RESTORED_FROM: f"{namespace}/{snapshot.name}@{meta(obj).get('uid')}"},
        )
        try:
            self.api.create_pvc(target_ns, body)
        except KubeApiError as exc:
            if not exc.conflict:
                raise api_error(exc) from None
            existing = self.api.get_pvc(target_ns, target_pvc)
            marker = (meta(existing).get("annotations") or {}).get(ANNOTATION_RESTORED_FROM)
            if marker != body["metadata"]["annotations"][ANNOTATION_RESTORED_FROM]:
                raise SnapshotExists(f"target: PersistentVolumeClaim {target_ns}/{target_pvc} already exists; choose "
                                     "another target") from None
        if wait:
            self._wait_bound(target_ns, target_pvc, timeout_s or self.config.ready_timeout_s)
        return f"{target_ns}/{target_pvc}"

    def _restore_target(self, target: str, namespace: str, snapshot_name: str) -> tuple[str, str]:
        if "/" not in target:
            return self._parse_volume(f"{namespace}/{target}", "target")
        target_ns, target_pvc = self._parse_volume(target, "target")
        if target_ns != namespace:
            raise InvalidInput(f"target: {target!r} is in namespace {target_ns!r}, but VolumeSnapshot "
                               f"{namespace}/{snapshot_name} is in {namespace!r}; a PVC can only be restored "
                               "from a snapshot in its own namespace")
        return target_ns, target_pvc

    def _restorable(self, namespace: str, snapshot: Snapshot, verify: bool) -> dict[str, Any]:
        """The VolumeSnapshot, checked: present, the recorded one (``verify``), no error, ready."""
        where = f"VolumeSnapshot {namespace}/{snapshot.name}"
        obj = self.api.get_snapshot(namespace, snapshot.name)
        if obj is None:
            raise SnapshotNotFound(f"{where} not found")
        if verify and meta(obj).get("uid") != snapshot.id:
            raise SnapshotVerificationError(f"{where} is now uid {meta(obj).get('uid')}, not the recorded "
                                            f"{snapshot.id} (name reused?)")
        # only readiness counts: a ready snapshot whose class was deleted gets an error but stays readyToUse
        # (external-snapshotter pkg/common-controller/snapshot_controller_base.go:509) and restores fine
        if not is_ready(obj):
            error = error_message(obj)
            raise SnapshotError(f"{where} is not ready to use yet; wait for readyToUse before restoring"
                                + (f" (last observed error: {error})" if error else ""))
        return obj

    @staticmethod
    def _restore_size(obj: Mapping[str, Any], name: str, namespace: str, size: str | int | None,
                      source: _SourcePvc) -> str:
        restore_size = (obj.get("status") or {}).get("restoreSize")
        if size is None:
            if restore_size is not None:
                return format_quantity(parse_quantity(restore_size))
            request = (((source.get() or {}).get("spec") or {}).get("resources") or {}).get("requests", {}).get(
                "storage")
            if not request:
                raise InvalidInput(f"size: VolumeSnapshot {namespace}/{name} reports no restoreSize and its source "
                                   "PVC is gone; pass size=")
            return str(request)
        try:
            wanted = parse_quantity(size, "size")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if restore_size is not None and wanted < parse_quantity(restore_size):
            raise InvalidInput(f"size: {size} is smaller than the snapshot's restoreSize {restore_size}; a volume "
                               "restored from a snapshot must be at least as large")
        return format_quantity(wanted) if isinstance(size, int) else str(size)

    def _restore_class(self, obj: Mapping[str, Any], name: str, namespace: str, storage_class: str | None,
                       source: _SourcePvc) -> str:
        annotations = meta(obj).get("annotations") or {}
        klass = storage_class or self.config.restore_storage_class or annotations.get(ANNOTATION_SOURCE_STORAGE_CLASS)
        if not klass:
            klass = ((source.get() or {}).get("spec") or {}).get("storageClassName")
        if not klass:
            raise InvalidInput(f"storage_class: source PVC {namespace}/{source.name} is gone and VolumeSnapshot "
                               f"{name} records no storage class; pass storage_class=")
        try:
            return validate_dns1123_subdomain(klass, "storage_class")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

    def verify(self, snapshot: Snapshot) -> VerifyResult:
        """Check that the snapshot still exists as recorded, is ready, has no error and is bound to a ready
        VolumeSnapshotContent that points back at it with a snapshot handle."""
        namespace = snapshot.details.get("namespace") or self._parse_volume(snapshot.volume)[0]
        where = f"VolumeSnapshot {namespace}/{snapshot.name}"
        obj = self.api.get_snapshot(namespace, snapshot.name)
        if obj is None:
            return VerifyResult(ok=False, checked=1, problems=[f"{where} no longer exists"])
        checks: list[tuple[bool, str]] = []
        uid = meta(obj).get("uid")
        checks.append((uid == snapshot.id, f"{where} is uid {uid}, not the recorded {snapshot.id} (name reused?)"))
        recorded_pvc = snapshot.details.get("pvc")
        if recorded_pvc:
            checks.append((source_pvc(obj) == recorded_pvc, f"{where} is a snapshot of {source_pvc(obj)!r}, not "
                                                            f"{recorded_pvc!r}"))
        message = error_message(obj)
        checks.append((message is None, f"{where} reports an error: {message}"))
        checks.append((is_ready(obj), f"{where} is not readyToUse"))
        content_name = bound_content(obj)
        checks.append((bool(content_name), f"{where} is not bound to a VolumeSnapshotContent"))
        if content_name:
            checks += self._content_checks(content_name, where, uid, snapshot.details.get("snapshot_handle"))
        problems = [problem for ok, problem in checks if not ok]
        return VerifyResult(ok=not problems, checked=len(checks) + 1, problems=problems)

    def _content_checks(self, content_name: str, where: str, uid: str | None, recorded: str | None,
                        ) -> list[tuple[bool, str]]:
        content = self.api.get_content(content_name)
        checks = [(content is not None, f"VolumeSnapshotContent {content_name} of {where} is missing or unreadable")]
        if content is None:
            return checks
        ref_uid = ((content.get("spec") or {}).get("volumeSnapshotRef") or {}).get("uid")
        checks.append((ref_uid in (None, uid), f"VolumeSnapshotContent {content_name} is bound to uid {ref_uid}, "
                                               f"not {uid}"))
        c_status = content.get("status") or {}
        checks.append((c_status.get("readyToUse") is True, f"VolumeSnapshotContent {content_name} is not readyToUse"))
        handle = c_status.get("snapshotHandle")
        checks.append((bool(handle), f"VolumeSnapshotContent {content_name} has no snapshotHandle"))
        if recorded and handle:
            checks.append((handle == recorded, f"VolumeSnapshotContent {content_name} has handle {handle}, not the "
                                               f"recorded {recorded}"))
        return checks


class _SourcePvc:
    """The snapshot's source PVC, read at most once and only when a restore needs it (it may be gone)."""

    def __init__(self, api: CsiApi, namespace: str, name: str | None) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self._obj: dict[str, Any] | None = None
        self._read = False

    def get(self) -> dict[str, Any] | None:
        if not self._read and self.name:
            self._read = True
            try:
                self._obj = self.api.get_pvc(self.namespace, self.name)
            except SnapshotNotFound:
                self._obj = None
        return self._obj
