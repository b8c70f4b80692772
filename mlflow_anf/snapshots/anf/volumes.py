"""ANF volume administration: a new volume from a snapshot (size floor, pool capacity, copied properties), revert
in place, service-level change (pool change), volume inspection and Trident PV lookup. ``mlflow-anf volume`` is a
thin CLI over :class:`AnfVolumes`; the snapshot provider delegates its ``restore`` here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlflow_anf.snapshots.anf.arm import AnfArm, leaf, parse_time, props
from mlflow_anf.snapshots.anf.errors import (
    AnfInputError,
    AnfNotFound,
    RevertNotConfirmed,
)
from mlflow_anf.snapshots.anf.names import (
    VolumeRef,
    check_new_volume,
    check_pool_name,
    creation_token,
    new_volume_ref,
    parse_volume_id,
    snapshot_text,
    volume_for_pv,
)
from mlflow_anf.snapshots.anf.trident import (
    BackendPools,
    TridentManagedVolume,
    is_trident_volume,
    pool_change_steps,
)
from mlflow_anf.snapshots.base import (
    Snapshot,
    SnapshotVerificationError,
    validate_storage_name,
)
from mlflow_anf.vocabulary import ARM_TAG_RESTORED_FROM

_LOG = logging.getLogger(__name__)

GIB = 1024**3
MIN_VOLUME_BYTES = 50 * GIB  # ANF minimum quota of a regular volume

# Volume properties a restore copies from the source volume (documented in AnfVolumes.restore()).
RESTORE_COPIED_PROPERTIES: tuple[str, ...] = (
    "subnetId",
    "protocolTypes",
    "exportPolicy",
    "networkFeatures",
    "securityStyle",
    "unixPermissions",
    "snapshotDirectoryVisible",
    "kerberosEnabled",
    "ldapEnabled",
    "smbEncryption",
    "smbContinuouslyAvailable",
    "smbAccessBasedEnumeration",
    "smbNonBrowsable",
    "encryptionKeySource",
    "keyVaultPrivateEndpointResourceId",
    "isLargeVolume",
)
_COOL_ACCESS_PROPERTIES = ("coolAccess", "coolnessPeriod", "coolAccessRetrievalPolicy", "coolAccessTieringPolicy")


class SnapshotSummary(BaseModel):
    name: str
    created: datetime | None
    snapshot_id: str | None = None


class RevertPlan(BaseModel):
    """What reverting *volume* to *snapshot* destroys (ANF cannot undo a revert)."""

    volume: str
    snapshot: str
    snapshot_created: datetime | None
    snapshots_lost: list[SnapshotSummary] = Field(description="newer snapshots ANF deletes with the revert")
    data_lost_since: datetime | None = Field(description="every write to the volume after this instant is lost")
    warnings: list[str] = Field(default_factory=list)
    status: Literal["planned", "started", "succeeded"] = "planned"


class PoolChangeResult(BaseModel):
    volume: str = Field(description="volume id before the move")
    new_volume: str = Field(description="volume id after the move (pool/volume)")
    from_pool: str
    from_service_level: str | None
    to_pool: str
    to_service_level: str | None
    volume_quota_bytes: int
    target_free_bytes: int = Field(description="target pool's unallocated capacity before the move")
    status: Literal["started", "succeeded"]


class VolumeInfo(BaseModel):
    id: str
    arm_id: str
    location: str | None
    provisioning_state: str | None
    service_level: str | None
    pool: str
    quota_bytes: int | None
    protocol_types: list[str] = Field(default_factory=list)
    creation_token: str | None = None
    mount_ips: list[str] = Field(default_factory=list)
    subnet_id: str | None = None
    throughput_mibps: float | None = None
    restored_from_snapshot: str | None = None
    snapshot_count: int
    latest_snapshot: SnapshotSummary | None = None
    pool_size_bytes: int | None = None
    pool_free_bytes: int | None = None


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:,.0f} GiB"


def _check_timeout(timeout_s: float | None) -> None:
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                  or timeout_s <= 0):
        raise AnfInputError(f"timeout_s: must be a positive number of seconds, got {timeout_s!r}")


def _created_key(resource: Mapping[str, Any]) -> datetime:
    return parse_time(props(resource).get("created")) or datetime.min.replace(tzinfo=timezone.utc)


def snapshot_identity_problems(snapshot: Snapshot, raw: Mapping[str, Any]) -> list[str]:
    """Why the snapshot resource *raw* (as ARM returns it now) is not the recorded *snapshot*: another ARM resource
    id, or the same name holding another snapshot (ANF's snapshot GUID ``snapshotId`` changed: it was deleted and
    re-created). Empty when it is the same one, or when the record carries nothing to compare."""
    problems = []
    arm_id = raw.get("id")
    if snapshot.id and arm_id and snapshot.id.lower() != str(arm_id).lower():
        problems.append(f"{snapshot.ref}: ARM resource id is now {arm_id}, the record says {snapshot.id}")
    recorded, current = snapshot.details.get("snapshot_id"), props(raw).get("snapshotId")
    if recorded and current and recorded != current:
        problems.append(f"{snapshot.ref}: snapshot id changed ({recorded} → {current}): it was deleted and "
                        "re-created under the same name")
    return problems


class AnfVolumes:
    """Administration of the volumes of one NetApp account (the one :class:`AnfArm` is configured for)."""

    def __init__(self, arm: AnfArm) -> None:
        self.arm = arm
        self.config = arm.config

    def __repr__(self) -> str:
        c = self.config
        return f"AnfVolumes(account={c.account!r}, resource_group={c.resource_group!r}, pool={c.pool!r})"

    def _ref(self, volume: str, field: str = "volume") -> VolumeRef:
        return parse_volume_id(volume, self.config, field=field)

    def _free_bytes(self, pool: Mapping[str, Any], name: str, what: str) -> int:
        return int(props(pool).get("size") or 0) - self.arm.pool_allocation(name, what)

    # ------------------------------------------------------------------ new volume from a snapshot
    def restore(
        self,
        snapshot: Snapshot,
        target: str,
        *,
        pool: str | None = None,
        size_gib: int | None = None,
        wait: bool = True,
        timeout_s: float | None = None,
        verify: bool = True,
    ) -> str:
        """Create the new volume *target* (``name`` or ``pool/name``) from *snapshot*; returns ``pool/name``.

        Copied from the source volume: location, zones, tags (plus :data:`ARM_TAG_RESTORED_FROM`), and the
        properties in :data:`RESTORE_COPIED_PROPERTIES` (subnet, protocol types, export policy, network features,
        security style, unix permissions, snapshot-directory visibility, Kerberos/LDAP/SMB flags, encryption key
        source, large-volume flag); cool-access settings only into a cool-access pool and the throughput only into a
        manual-QoS pool. The service level is the target pool's (a volume's service level is its pool's). The
        creation token (export path) is the new volume name. Not copied: data protection (replication, backup,
        snapshot policies), volume type, placement/group settings.

        Size rule: the quota defaults to the source volume's quota, is rounded up to whole GiB and at least
        50 GiB; it may not be smaller than the snapshot (ARM exposes no snapshot size, so the floor is the
        snapshot's recorded ``size_bytes`` or else the source quota) and must fit the target pool's free capacity.

        ``verify``: refuse when the snapshot under that name is no longer the recorded one
        (:func:`snapshot_identity_problems`). ``wait``: return once ARM reports the volume ``Succeeded``, within
        ``timeout_s`` (default ``lro_timeout_s``); without it, return when ARM accepted the create.
        """
        src = self._ref(snapshot.volume, "snapshot.volume")
        dest = check_new_volume(new_volume_ref(target, self.config, pool=pool, default_pool=src.pool))
        if size_gib is not None and (isinstance(size_gib, bool) or not isinstance(size_gib, int) or size_gib <= 0):
            raise AnfInputError(f"size_gib: must be a positive whole number of GiB, got {size_gib!r}")
        _check_timeout(timeout_s)
        what = f"restore {snapshot_text(src, snapshot.name)} to new volume {dest.id}"

        snap = self.arm.get_snapshot(src, snapshot.name)
        if verify and (problems := snapshot_identity_problems(snapshot, snap)):
            raise SnapshotVerificationError(f"{what}: {'; '.join(problems)} — nothing was created")
        if props(snap).get("provisioningState") != "Succeeded":
            raise AnfInputError(f"{what}: snapshot is {props(snap).get('provisioningState')!r}, not 'Succeeded'")
        source = self.arm.get_volume(src)
        target_pool = self.arm.get_pool(dest.pool, what)
        if self.arm.volume_exists(dest):
            raise AnfInputError(f"{what}: volume {dest.id!r} already exists; choose another --to name")
        quota = self._restore_quota(snapshot, source, size_gib, what)
        free = self._free_bytes(target_pool, dest.pool, what)
        if quota > free:
            raise AnfInputError(
                f"{what}: pool {dest.pool!r} has {_gib(free)} unallocated, the new volume needs {_gib(quota)}; "
                "grow the pool or pick another with pool=..."
            )
        body = restore_body(source, target_pool, snap, dest, quota, restored_from=f"{src.id}@{snapshot.name}")
        _LOG.info("anf: %s (quota %s)", what, _gib(quota))
        with self.arm.call(what):
            poller = self.arm.client.volumes.begin_create_or_update(*self.arm.names(dest), body, polling=wait)
        if wait:
            self.arm.wait_created(poller, what, lambda: self.arm.get_volume(dest), timeout_s)
        return dest.id

    @staticmethod
    def _restore_quota(snapshot: Snapshot, source: Mapping[str, Any], size_gib: int | None, what: str) -> int:
        """The new volume's quota in bytes (the size rule of :meth:`restore`)."""
        source_quota = int(props(source).get("usageThreshold") or 0)
        floor = snapshot.size_bytes if snapshot.size_bytes is not None else source_quota
        quota = size_gib * GIB if size_gib is not None else source_quota
        quota = max(-(-quota // GIB) * GIB, MIN_VOLUME_BYTES)
        if quota < floor:
            raise AnfInputError(
                f"{what}: size_gib={size_gib} is below the snapshot's size floor {_gib(floor)} (ARM does not report a "
                "snapshot's size, so the source volume's quota is the safe floor); omit --size-gib or pass more"
            )
        return quota

    # ------------------------------------------------------------------ revert
    def plan_revert(self, volume: str, snapshot: str) -> RevertPlan:
        """Read-only: which snapshots and which writes a revert of *volume* to *snapshot* would destroy."""
        ref = self._ref(volume)
        validate_storage_name(snapshot, field="snapshot")
        return self._plan_revert(ref, snapshot)[0]

    def _plan_revert(self, ref: VolumeRef, snapshot: str) -> tuple[RevertPlan, dict[str, Any]]:
        target = self.arm.get_snapshot(ref, snapshot)
        vol = self.arm.get_volume(ref)
        created = parse_time(props(target).get("created"))
        lost = []
        for s in self.arm.list_snapshots(ref):
            s_created = parse_time(props(s).get("created"))
            if leaf(s.get("name")) != snapshot and created and s_created and s_created > created:
                lost.append(SnapshotSummary(name=leaf(s.get("name")), created=s_created,
                                            snapshot_id=props(s).get("snapshotId")))
        lost.sort(key=lambda s: s.created or datetime.min.replace(tzinfo=timezone.utc))
        warnings = []
        dp = props(vol).get("dataProtection") or {}
        if dp.get("backup"):
            warnings.append("the volume has backups configured; ANF does not support revert on such volumes")
        if dp.get("replication"):
            warnings.append("the volume is in a replication relationship; review its replication after the revert")
        if props(target).get("provisioningState") != "Succeeded":
            warnings.append(f"snapshot is {props(target).get('provisioningState')!r}, not 'Succeeded'")
        plan = RevertPlan(volume=ref.id, snapshot=snapshot, snapshot_created=created, snapshots_lost=lost,
                          data_lost_since=created, warnings=warnings)
        return plan, target

    def revert(self, volume: str, snapshot: str, *, confirm: str | None, wait: bool = True,
               timeout_s: float | None = None) -> RevertPlan:
        """Revert *volume* in place to *snapshot*. Destructive: ANF deletes every newer snapshot and all data written
        since. ``confirm`` must equal the volume's name (``volume`` or ``pool/volume``); it is checked before any
        request is sent. Returns the :class:`RevertPlan` of what was lost."""
        ref = self._ref(volume)
        validate_storage_name(snapshot, field="snapshot")
        _check_timeout(timeout_s)
        if confirm not in (ref.volume, ref.id):
            raise RevertNotConfirmed(
                f"revert anf:{ref.id} to {snapshot}: destructive; pass confirm={ref.volume!r} (the volume name) to "
                f"proceed{'' if confirm is None else f' (got {confirm!r})'} — nothing was sent"
            )
        plan, target = self._plan_revert(ref, snapshot)
        if any("does not support revert" in w for w in plan.warnings):
            raise AnfInputError(f"revert anf:{ref.id}: {'; '.join(plan.warnings)} — nothing was sent")
        what = f"revert anf:{ref.id} to {snapshot}"
        _LOG.info("anf: reverting %s to %s; %d newer snapshot(s) will be deleted", ref.id, snapshot,
                  len(plan.snapshots_lost))
        with self.arm.call(what):
            poller = self.arm.client.volumes.begin_revert(*self.arm.names(ref), {"snapshotId": target.get("id")},
                                                          polling=wait)
            if wait:
                self.arm.wait(poller, what, timeout_s)
        return plan.model_copy(update={"status": "succeeded" if wait else "started"})

    # ------------------------------------------------------------------ service level (pool change)
    def change_service_level(self, volume: str, target_pool: str, *, wait: bool = True,
                             timeout_s: float | None = None,
                             trident_backend: BackendPools | None = None) -> PoolChangeResult:
        """Move *volume* to *target_pool* (``az netappfiles volume pool-change``), after checking the target's
        state, service level, encryption, cool access and unallocated capacity.

        A volume Trident manages is never moved (:class:`TridentManagedVolume`, nothing sent): Trident would keep
        addressing it in its old pool (see :mod:`.trident`); the error gives the steps that keep Trident working,
        checking the target pool against *trident_backend*'s capacity pools when given."""
        ref = self._ref(volume)
        check_pool_name(target_pool, "target_pool")
        _check_timeout(timeout_s)
        what = f"move anf:{ref.id} to pool {target_pool!r}"
        if target_pool == ref.pool:
            raise AnfInputError(f"{what}: the volume is already in pool {target_pool!r}")
        vol = self.arm.get_volume(ref)
        vprops = props(vol)
        if vprops.get("provisioningState") not in (None, "Succeeded"):
            raise AnfInputError(f"{what}: volume is {vprops.get('provisioningState')!r}; wait for it to settle")
        source = props(self.arm.get_pool(ref.pool, what))
        target_raw = self.arm.get_pool(target_pool, what)
        target = props(target_raw)
        if is_trident_volume(vol):
            c = self.config
            raise TridentManagedVolume(f"{what}: " + pool_change_steps(
                volume=ref.id, arm_id=str(vol.get("id")), target_pool=target_pool,
                target_level=target.get("serviceLevel"), resource_group=c.resource_group, account=c.account,
                backend=trident_backend))
        quota = int(vprops.get("usageThreshold") or 0)
        free = self._free_bytes(target_raw, target_pool, what)
        problems = pool_change_problems(ref.pool, source, target, vprops, quota, free)
        if problems:
            raise AnfInputError(f"{what}: " + "; ".join(problems))
        level_from, level_to = source.get("serviceLevel"), target.get("serviceLevel")
        _LOG.info("anf: %s (%s → %s)", what, level_from, level_to)
        with self.arm.call(what):
            poller = self.arm.client.volumes.begin_pool_change(
                *self.arm.names(ref), {"newPoolResourceId": target_raw.get("id")}, polling=wait
            )
            if wait:
                self.arm.wait(poller, what, timeout_s)
        new_ref = VolumeRef(pool=target_pool, volume=ref.volume)
        return PoolChangeResult(
            volume=ref.id, new_volume=new_ref.id, from_pool=ref.pool, from_service_level=level_from,
            to_pool=target_pool, to_service_level=level_to, volume_quota_bytes=quota, target_free_bytes=free,
            status="succeeded" if wait else "started",
        )

    # ------------------------------------------------------------------ inspection and PV mapping
    def describe_volume(self, volume: str) -> VolumeInfo:
        """State, service level, quota, mount targets, snapshots and the pool's free capacity of *volume*."""
        ref = self._ref(volume)
        vol = self.arm.get_volume(ref)
        p = props(vol)
        snaps = self.arm.list_snapshots(ref)
        latest = max(snaps, key=_created_key, default=None)
        what = f"describe anf:{ref.id}"
        pool = self.arm.get_pool(ref.pool, what)
        pool_size = int(props(pool).get("size") or 0) or None
        free = self._free_bytes(pool, ref.pool, what) if pool_size else None
        return VolumeInfo(
            id=ref.id, arm_id=vol.get("id") or "", location=vol.get("location"),
            provisioning_state=p.get("provisioningState"), service_level=p.get("serviceLevel"),
            pool=ref.pool, quota_bytes=p.get("usageThreshold"), protocol_types=p.get("protocolTypes") or [],
            creation_token=p.get("creationToken"),
            mount_ips=[m.get("ipAddress") for m in p.get("mountTargets") or [] if m.get("ipAddress")],
            subnet_id=p.get("subnetId"), throughput_mibps=p.get("throughputMibps"),
            restored_from_snapshot=p.get("snapshotId"), snapshot_count=len(snaps),
            latest_snapshot=None if latest is None else SnapshotSummary(
                name=leaf(latest.get("name")), created=parse_time(props(latest).get("created")),
                snapshot_id=props(latest).get("snapshotId")),
            pool_size_bytes=pool_size, pool_free_bytes=free,
        )

    def volume_id_for_pv(self, pv: Mapping[str, Any]) -> str:
        """The ``pool/volume`` id of a Trident PV in the configured account (see :func:`volume_for_pv`)."""
        found = volume_for_pv(pv)
        c = self.config
        if found.exact:
            for key, want in (("subscription_id", c.subscription_id), ("resource_group", c.resource_group),
                              ("account", c.account)):
                if str(getattr(found, key)).lower() != want.lower():
                    raise AnfInputError(f"pv {found.pv_name}: lives in {key} {getattr(found, key)!r}, the provider "
                                        f"is configured for {want!r}")
            return VolumeRef(pool=found.pool or "", volume=found.volume).id
        pools = [c.pool] if c.pool else [leaf(p.get("name")) for p in self.arm.list_pools()]
        for pool in pools:
            for v in self.arm.list_volumes(pool, f"find the volume of pv {found.pv_name} in pool {pool!r}"):
                if leaf(v.get("name")) == found.volume or (
                        found.creation_token and props(v).get("creationToken") == found.creation_token):
                    return VolumeRef(pool=pool, volume=leaf(v.get("name"))).id
        raise AnfNotFound(f"pv {found.pv_name}: no volume named {found.volume!r} (creation token "
                          f"{found.creation_token!r}) in pool(s) {', '.join(pools)} of account {c.account!r}")


# ---------------------------------------------------------------------------------------------------- pure rules
def restore_body(source: Mapping[str, Any], target_pool: Mapping[str, Any], snap: Mapping[str, Any],
                 dest: VolumeRef, quota: int, *, restored_from: str) -> dict[str, Any]:
    """The ARM body (``PUT .../volumes/{name}``) of a volume created from *snap*: see :meth:`AnfVolumes.restore`."""
    sprops, pprops = props(source), props(target_pool)
    body_props: dict[str, Any] = {k: sprops[k] for k in RESTORE_COPIED_PROPERTIES if sprops.get(k) is not None}
    body_props.update({
        "creationToken": creation_token(dest),
        "usageThreshold": quota,
        "serviceLevel": pprops.get("serviceLevel"),
        "snapshotId": snap.get("id"),
    })
    if pprops.get("coolAccess"):
        body_props.update({k: sprops[k] for k in _COOL_ACCESS_PROPERTIES if sprops.get(k) is not None})
    if str(pprops.get("qosType", "")).lower() == "manual" and sprops.get("throughputMibps") is not None:
        body_props["throughputMibps"] = sprops["throughputMibps"]
    tags = dict(source.get("tags") or {})
    tags[ARM_TAG_RESTORED_FROM] = restored_from
    body: dict[str, Any] = {"location": source.get("location"), "tags": tags, "properties": body_props}
    if source.get("zones"):
        body["zones"] = list(source["zones"])
    return body


def pool_change_problems(from_pool: str, source: Mapping[str, Any], target: Mapping[str, Any],
                         vprops: Mapping[str, Any], quota: int, free: int) -> list[str]:
    """Why a volume (properties *vprops*, quota *quota*) cannot move from pool *source* to pool *target* (properties
    of both pools), which has *free* bytes unallocated; empty when it can."""
    level_from, level_to = source.get("serviceLevel"), target.get("serviceLevel")
    problems = []
    if target.get("provisioningState") not in (None, "Succeeded"):
        problems.append(f"target pool is {target.get('provisioningState')!r}, not 'Succeeded'")
    if level_from and level_to == level_from:
        problems.append(f"target pool has the same service level ({level_to}) as pool {from_pool!r}")
    if source.get("encryptionType") and target.get("encryptionType") and (
            source["encryptionType"] != target["encryptionType"]):
        problems.append(f"encryption type differs ({source['encryptionType']} → {target['encryptionType']}); "
                        "ANF cannot move a volume between encryption types")
    if vprops.get("coolAccess") and not target.get("coolAccess"):
        problems.append("the volume uses cool access but the target pool does not allow it")
    if quota > free:
        problems.append(f"target pool has {_gib(free)} unallocated, the volume needs {_gib(quota)}; grow it first")
    if str(target.get("qosType", "")).lower() == "manual" and vprops.get("throughputMibps"):
        spare = float(target.get("totalThroughputMibps") or 0) - float(target.get("utilizedThroughputMibps") or 0)
        if float(vprops["throughputMibps"]) > spare:
            problems.append(f"target manual-QoS pool has {spare:g} MiB/s unassigned, the volume has "
                            f"{float(vprops['throughputMibps']):g} MiB/s")
    return problems
