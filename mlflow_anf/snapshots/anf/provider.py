"""The snapshot protocol over Azure NetApp Files: :class:`AnfSnapshotProvider` (create, list, get, restore, delete,
verify). Restore and the volume commands (revert, service-level change, show) are :class:`~.volumes.AnfVolumes`'
work; the provider delegates to it.

ARM request budget of :meth:`AnfSnapshotProvider.create`: one list (name/limit check), at most one volume GET (only
when neither the config nor an existing snapshot tells the location), **one PUT** (the only write), LRO polls and the
final GET. A PUT that was applied server-side but whose answer was lost comes back as 409 and is adopted (idempotent
create).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlflow_anf.snapshots import ProviderConfigError
from mlflow_anf.snapshots.anf.arm import TRANSITIONAL_STATES, AnfArm, leaf, parse_time, props
from mlflow_anf.snapshots.anf.config import AnfConfig
from mlflow_anf.snapshots.anf.errors import AnfApiError, AnfInputError
from mlflow_anf.snapshots.anf.names import VolumeRef, generated_snapshot_name, parse_volume_id, snapshot_text
from mlflow_anf.snapshots.anf.volumes import (
    AnfVolumes,
    PoolChangeResult,
    RevertPlan,
    VolumeInfo,
    snapshot_identity_problems,
)
from mlflow_anf.snapshots.base import (
    ProviderTraits,
    Snapshot,
    SnapshotLimitExceeded,
    SnapshotNotFound,
    SnapshotTimeout,
    VerifyResult,
    validate_snapshot_name,
    validate_storage_name,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.netapp import NetAppManagementClient

_LOG = logging.getLogger(__name__)


class AnfSnapshotProvider(ProviderTraits):
    """Snapshots of Azure NetApp Files volumes; restore, revert and service-level change through :attr:`volumes`.

    Identifiers: a **volume id** is ``pool/volume`` (or ``volume`` when the config names a default ``pool``;
    ``account/pool/volume`` and the full ARM resource id are accepted when they match the configured account); a
    snapshot's :attr:`Snapshot.id` is its ARM resource id; ``details["snapshot_id"]`` is ANF's snapshot GUID.
    """

    mount_hint: ClassVar[str] = (
        "a volume restored from the snapshot must be mounted before it can be trained on; run `mlflow-anf reproduce "
        "RUN --restore-only`, mount the new volume, then `mlflow-anf reproduce RUN --restored POOL/VOLUME "
        "-P <data param>=<mount path>`"
    )

    name: ClassVar[str] = "anf"
    supports_labels: ClassVar[bool] = False  # ARM snapshot resources have no tags; MLflow tags keep the link
    Config: ClassVar[type[AnfConfig]] = AnfConfig

    @classmethod
    def default_restore_target(cls, volume: str, workdir: Path) -> str:
        """A new volume name that is also a creation token ANF takes (letters, digits, '-'; no '_'): the restored
        volume's export path is its name (:func:`~.names.creation_token`)."""
        base = re.sub(r"[^A-Za-z0-9-]+", "-", volume.rsplit("/", 1)[-1])[:40].strip("-") or "volume"
        base = base if base[0].isalpha() else f"v-{base}"
        return f"{base}-repro-{secrets.token_hex(3)}"

    def __init__(self, config: AnfConfig | None = None, *, credential: TokenCredential | None = None) -> None:
        """*credential*: any azure-core ``TokenCredential``; default: built from ``config.credential``."""
        if config is None:
            raise ProviderConfigError(
                "provider 'anf': options subscription_id, resource_group and account are required"
            )
        self.config = config
        self.arm = AnfArm(config, credential=credential)
        self.volumes = AnfVolumes(self.arm)
        self._location_cache: dict[str, str] = {}

    def __repr__(self) -> str:
        c = self.config
        return f"AnfSnapshotProvider(account={c.account!r}, resource_group={c.resource_group!r}, pool={c.pool!r})"

    @property
    def client(self) -> NetAppManagementClient:
        """The configured SDK client (built on first use)."""
        return self.arm.client

    # ------------------------------------------------------------------ records
    def _snapshot_record(self, ref: VolumeRef, resource: Mapping[str, Any], *, adopted: bool = False) -> Snapshot:
        p = props(resource)
        state = p.get("provisioningState")
        details: dict[str, Any] = {
            "snapshot_id": p.get("snapshotId"),
            "location": resource.get("location"),
            "provisioning_state": state,
            "subscription_id": self.config.subscription_id,
            "resource_group": self.config.resource_group,
            "account": self.config.account,
            "pool": ref.pool,
        }
        if adopted:
            details["adopted"] = True
        return Snapshot(
            provider=self.name,
            volume=ref.id,
            name=leaf(resource.get("name")),
            id=resource.get("id") or "",
            created=parse_time(p.get("created")) or datetime.now(timezone.utc),
            ready=state == "Succeeded",
            details=details,
        )

    def _volume_location(self, ref: VolumeRef) -> str:
        if ref.id not in self._location_cache:
            loc = self.arm.get_volume(ref).get("location")
            if not loc:
                raise AnfApiError(f"get volume anf:{ref.id}: ARM returned no location; set the 'location' option")
            self._location_cache[ref.id] = loc
        return self._location_cache[ref.id]

    def _settled(self, ref: VolumeRef, name: str, raw: dict[str, Any]) -> dict[str, Any]:
        """Wait (GET every polling_interval_s, at most lro_timeout_s) while an adopted snapshot is still being made."""
        deadline = time.monotonic() + self.config.lro_timeout_s
        while props(raw).get("provisioningState") in TRANSITIONAL_STATES:
            if time.monotonic() >= deadline:
                raise SnapshotTimeout(
                    f"{snapshot_text(ref, name)}: still {props(raw).get('provisioningState')!r} after "
                    f"lro_timeout_s={self.config.lro_timeout_s:g}s"
                )
            time.sleep(self.config.polling_interval_s)
            raw = self.arm.get_snapshot(ref, name)
        if props(raw).get("provisioningState") not in (None, "Succeeded"):
            raise AnfApiError(
                f"{snapshot_text(ref, name)}: a snapshot of that name exists but is "
                f"{props(raw).get('provisioningState')!r}; delete it (mlflow-anf snapshot delete) or use another name"
            )
        return raw

    def _adopt(self, ref: VolumeRef, name: str, raw: dict[str, Any], why: str) -> Snapshot:
        _LOG.info("anf: snapshot %s of %s %s, adopting it", name, ref.id, why)
        return self._snapshot_record(ref, self._settled(ref, name, raw), adopted=True)

    # ------------------------------------------------------------------ SnapshotProvider protocol
    def create(self, volume: str, name: str | None = None, *, labels: Mapping[str, str] | None = None) -> Snapshot:
        """Snapshot *volume*; an existing snapshot of that name is adopted (idempotent). One ARM write."""
        from azure.core.exceptions import ResourceExistsError

        if labels:
            raise AnfInputError("labels: ANF snapshots cannot carry labels (the ARM resource has no tags)")
        ref = parse_volume_id(volume, self.config)
        name = validate_snapshot_name(name) if name is not None else generated_snapshot_name()
        existing = self.arm.list_snapshots(ref)
        for snap in existing:
            if leaf(snap.get("name")) == name:
                return self._adopt(ref, name, snap, "exists")
        limit = self.config.max_snapshots_per_volume
        if len(existing) >= limit:
            raise SnapshotLimitExceeded(
                f"anf:{ref.id} already holds {len(existing)} snapshots (limit {limit} per volume); delete old "
                "snapshots first (mlflow-anf snapshot delete) — nothing was created"
            )
        location = self.config.location or (existing[0].get("location") if existing else None)
        location = location or self._volume_location(ref)
        what = f"create snapshot {snapshot_text(ref, name)}"
        _LOG.info("anf: creating snapshot %s of %s", name, ref.id)
        try:
            with self.arm.call(what, missing=f"volume {ref.id!r} not found"):
                poller = self.arm.client.snapshots.begin_create(*self.arm.names(ref), name, {"location": location})
            result = self.arm.wait_created(poller, what, lambda: self.arm.get_snapshot(ref, name))
        except AnfApiError as err:
            if not isinstance(err.__cause__, ResourceExistsError):
                raise
            # 409: our earlier PUT landed (its answer was lost) or someone else made it; adopt if it is there.
            try:
                snap = self.arm.get_snapshot(ref, name)
            except SnapshotNotFound:
                raise err from None
            return self._adopt(ref, name, snap, "already exists (409)")
        return self._snapshot_record(ref, result)

    def list(self, volume: str | None = None, *, labels: Mapping[str, str] | None = None) -> list[Snapshot]:
        """Snapshots of *volume*, or of every volume in the account, oldest first."""
        if labels:
            raise AnfInputError("labels: ANF snapshots cannot carry labels, so they cannot be filtered by them")
        if volume is not None:
            refs = [parse_volume_id(volume, self.config)]
        else:
            refs = []
            for pool in self.arm.list_pools():
                name = leaf(pool.get("name"))
                refs += [VolumeRef(pool=name, volume=leaf(v.get("name"))) for v in self.arm.list_volumes(name)]
        out = [self._snapshot_record(ref, s) for ref in refs for s in self.arm.list_snapshots(ref)]
        return sorted(out, key=lambda s: (s.created, s.volume, s.name))

    def get(self, volume: str, name: str) -> Snapshot:
        ref = parse_volume_id(volume, self.config)
        validate_storage_name(name)  # any name ANF gives its own snapshots
        return self._snapshot_record(ref, self.arm.get_snapshot(ref, name))

    def delete(self, volume: str, name: str) -> None:
        ref = parse_volume_id(volume, self.config)
        validate_storage_name(name)  # any name ANF gives its own snapshots
        what = f"delete snapshot {snapshot_text(ref, name)}"
        _LOG.info("anf: deleting snapshot %s of %s", name, ref.id)
        with self.arm.call(what, missing="no such snapshot"):
            self.arm.wait(self.arm.client.snapshots.begin_delete(*self.arm.names(ref), name), what)

    def verify(self, snapshot: Snapshot) -> VerifyResult:
        """The snapshot still exists, is ``Succeeded`` and is the same one (same ARM id and ANF snapshot GUID)."""
        ref = parse_volume_id(snapshot.volume, self.config, field="snapshot.volume")
        try:
            raw = self.arm.get_snapshot(ref, snapshot.name)
        except SnapshotNotFound as err:
            return VerifyResult(ok=False, checked=1, problems=[str(err)])
        problems: list[str] = []
        state = props(raw).get("provisioningState")
        if state != "Succeeded":
            problems.append(f"{snapshot.ref}: provisioningState is {state!r}, not 'Succeeded'")
        problems += snapshot_identity_problems(snapshot, raw)
        return VerifyResult(ok=not problems, checked=1, problems=problems)

    def restore(
        self,
        snapshot: Snapshot,
        target: str,
        *,
        wait: bool = True,
        timeout_s: float | None = None,
        verify: bool = True,
        pool: str | None = None,
        size_gib: int | None = None,
    ) -> str:
        """Create the new volume *target* (``name`` or ``pool/name``) from *snapshot*; returns its ``pool/name``.

        ``wait`` defaults to True here, unlike the protocol's False: creating an ANF volume is a long-running ARM
        operation (minutes), and until it has succeeded the new volume has no mount target, so a caller handed its
        id early could neither mount it nor learn that the create failed (capacity, quota, subnet). ``timeout_s``
        bounds that wait (default: the ``lro_timeout_s`` option); on expiry :class:`SnapshotTimeout` is raised and
        the operation continues server-side. ``wait=False`` returns as soon as ARM accepted the create.

        ``verify``: refuse (:class:`SnapshotVerificationError`, nothing created) when the snapshot of that name is no
        longer the recorded one (another ARM id or snapshot GUID: deleted and re-created). ``pool`` and ``size_gib``
        (ANF-only extras): the new volume's capacity pool (default: the source's) and quota; copied properties and
        the size rule: :meth:`AnfVolumes.restore`.
        """
        return self.volumes.restore(snapshot, target, pool=pool, size_gib=size_gib, wait=wait, timeout_s=timeout_s,
                                    verify=verify)

    # ------------------------------------------------------------------ volume administration (kept for callers)
    def plan_revert(self, volume: str, snapshot: str) -> RevertPlan:
        """See :meth:`AnfVolumes.plan_revert`."""
        return self.volumes.plan_revert(volume, snapshot)

    def revert(self, volume: str, snapshot: str, *, confirm: str | None, wait: bool = True,
               timeout_s: float | None = None) -> RevertPlan:
        """See :meth:`AnfVolumes.revert` (destructive; ``confirm`` must be the volume's name)."""
        return self.volumes.revert(volume, snapshot, confirm=confirm, wait=wait, timeout_s=timeout_s)

    def change_service_level(self, volume: str, target_pool: str, *, wait: bool = True,
                             timeout_s: float | None = None) -> PoolChangeResult:
        """See :meth:`AnfVolumes.change_service_level`."""
        return self.volumes.change_service_level(volume, target_pool, wait=wait, timeout_s=timeout_s)

    def describe_volume(self, volume: str) -> VolumeInfo:
        """See :meth:`AnfVolumes.describe_volume`."""
        return self.volumes.describe_volume(volume)

    def volume_id_for_pv(self, pv: Mapping[str, Any]) -> str:
        """See :meth:`AnfVolumes.volume_id_for_pv`."""
        return self.volumes.volume_id_for_pv(pv)
