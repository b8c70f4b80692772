"""Names and ids of the ``anf`` provider: capacity pool and volume names, volume ids (``pool/volume`` and the forms
:func:`parse_volume_id` accepts), ARM resource ids, snapshot names, creation tokens and Trident PVs.

Pure functions; nothing here talks to Azure.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.snapshots.anf.errors import AnfInputError

if TYPE_CHECKING:
    from mlflow_anf.snapshots.anf.config import AnfConfig

TRIDENT_CSI_DRIVER = "csi.trident.netapp.io"

# ANF resource-name rules, as ARM states them (azure-rest-api-specs specification/netapp/.../stable/2025-06-01/
# netapp.json, path parameters poolName and volumeName): capacity pools and volumes 1-64 chars, volumes start with a
# letter. The creation token (export path) is stricter, no '_' and up to 80 chars (Trident's azure_anf.go
# volumeCreationTokenRegex): a restore names its new volume's token after the volume, so a new volume's name must
# satisfy both. Snapshot names have no rule in the spec; ANF's own snapshots (policies, portal, Trident) use
# letters, digits, '-', '_' and '.', which is what the read paths accept (base.validate_storage_name).
POOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VOLUME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
CREATION_TOKEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,79}$")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
VOLUME_ARM_ID_RE = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<resource_group>[^/]+)/providers/Microsoft\.NetApp"
    r"/netAppAccounts/(?P<account>[^/]+)/capacityPools/(?P<pool>[^/]+)/volumes/(?P<volume>[^/]+)$",
    re.IGNORECASE,
)


class VolumeRef(BaseModel):
    """A volume inside the configured account."""

    model_config = ConfigDict(frozen=True)

    pool: str
    volume: str

    @property
    def id(self) -> str:
        return f"{self.pool}/{self.volume}"


def check_volume_name(name: str, field: str) -> str:
    """*name* if ANF accepts it as a volume name, else :class:`AnfInputError` naming *field*."""
    if not isinstance(name, str) or not VOLUME_RE.match(name):
        raise AnfInputError(
            f"{field}: {name!r} is not a valid ANF volume name (start with a letter; letters, digits, '-', '_'; "
            "at most 64 characters)"
        )
    return name


def check_pool_name(name: str, field: str) -> str:
    """*name* if ANF accepts it as a capacity pool name, else :class:`AnfInputError` naming *field*."""
    if not isinstance(name, str) or not POOL_RE.match(name):
        raise AnfInputError(f"{field}: {name!r} is not a valid capacity pool name (letters, digits, '-', '_')")
    return name


def parse_volume_id(volume: str, config: AnfConfig, field: str = "volume") -> VolumeRef:
    """``pool/volume``, ``volume`` (default pool), ``account/pool/volume`` or an ARM id → :class:`VolumeRef`."""
    if not isinstance(volume, str) or not volume:
        raise AnfInputError(f"{field}: a volume id ('pool/volume') is required")
    m = VOLUME_ARM_ID_RE.match(volume)
    if m:
        mismatched = [
            k for k, want in (("subscription", config.subscription_id), ("resource_group", config.resource_group),
                              ("account", config.account)) if m.group(k).lower() != want.lower()
        ]
        if mismatched:
            raise AnfInputError(f"{field}: the ARM id is outside the configured {', '.join(mismatched)}")
        parts = [m.group("pool"), m.group("volume")]
    else:
        parts = volume.split("/")
        if len(parts) == 3:
            if parts[0].lower() != config.account.lower():
                raise AnfInputError(f"{field}: {volume!r} names account {parts[0]!r}, configured is {config.account!r}")
            parts = parts[1:]
        if len(parts) == 1:
            if config.pool is None:
                raise AnfInputError(f"{field}: {volume!r} has no pool; use 'pool/volume' or set the 'pool' option")
            parts = [config.pool, parts[0]]
        if len(parts) != 2:
            raise AnfInputError(f"{field}: {volume!r} is not 'pool/volume'")
    return VolumeRef(pool=check_pool_name(parts[0], field), volume=check_volume_name(parts[1], field))


def new_volume_ref(target: str, config: AnfConfig, *, pool: str | None, default_pool: str) -> VolumeRef:
    """The new volume a restore creates: *target* is ``name`` (in *pool*, else *default_pool*) or ``pool/name``
    (then *pool*, when given, must agree)."""
    if "/" in target:
        dest = parse_volume_id(target, config, field="target")
        if pool is not None and pool != dest.pool:
            raise AnfInputError(f"target: {target!r} names pool {dest.pool!r} but pool={pool!r} was given")
        return dest
    return VolumeRef(pool=check_pool_name(pool or default_pool, "pool"), volume=check_volume_name(target, "target"))


def check_new_volume(ref: VolumeRef, field: str = "target") -> VolumeRef:
    """*ref* if ANF can create it with :func:`creation_token` as its export path (no '_'), else
    :class:`AnfInputError` naming *field* — before any ARM call, as ARM would refuse the create."""
    if not CREATION_TOKEN_RE.match(creation_token(ref)):
        raise AnfInputError(
            f"{field}: {ref.volume!r} cannot name a new ANF volume: its creation token (export path) is the volume "
            "name, and ANF takes only letters, digits and '-' there, starting with a letter (no '_'); "
            f"try {ref.volume.replace('_', '-')!r}"
        )
    return ref


def creation_token(ref: VolumeRef) -> str:
    """The creation token (export path) a restore gives its new volume: the volume's name (ARM refuses a token
    that is already in use, with an error naming it)."""
    return ref.volume


def generated_snapshot_name() -> str:
    """A fresh snapshot name (DNS-1123, so every provider would accept it): ``mlflow-anf-<UTC time>-<6 hex>``."""
    return f"mlflow-anf-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def snapshot_text(ref: VolumeRef, name: str) -> str:
    """How messages name a snapshot: ``anf:pool/volume@name``."""
    return f"anf:{ref.id}@{name}"


class TridentVolume(BaseModel):
    """Where a Trident-provisioned PV lives in ANF, as far as the PV tells (see :func:`volume_for_pv`)."""

    model_config = ConfigDict(frozen=True)

    pv_name: str
    volume: str = Field(description="ANF volume resource name")
    creation_token: str | None = Field(default=None, description="the export path (Trident's internalName)")
    pool: str | None = None
    account: str | None = None
    resource_group: str | None = None
    subscription_id: str | None = None
    backend_uuid: str | None = None
    exact: bool = Field(description="True when the PV carries the ARM id (Trident >= 23.01 sets internalID)")
    claim: str | None = Field(default=None, description="namespace/name of the bound PVC")


def volume_for_pv(pv: Mapping[str, Any]) -> TridentVolume:
    """Map a Trident (``csi.trident.netapp.io``) PersistentVolume dict to its ANF volume.

    Trident's ``azure-netapp-files`` driver names the ANF volume after the PV (``pvc-<uid>``: CSI ``volumeHandle``
    and ``volumeAttributes.name``), uses ``volumeAttributes.internalName`` as the creation token (export path), and
    since 23.01 puts the volume's full ARM id in ``volumeAttributes.internalID`` — the only exact source for imported
    volumes, whose ANF name differs from the PV name. Without ``internalID`` the pool is unknown (``exact=False``).
    Raises ``ValueError`` naming the PV field that is missing or foreign.
    """
    if not isinstance(pv, Mapping):
        raise ValueError("pv: expected a PersistentVolume mapping")
    metadata = pv.get("metadata") or {}
    pv_name = metadata.get("name") or "<unnamed>"
    if pv.get("kind") not in (None, "PersistentVolume"):
        raise ValueError(f"pv {pv_name}: kind is {pv.get('kind')!r}, expected PersistentVolume")
    spec = pv.get("spec") or {}
    csi = spec.get("csi")
    if not isinstance(csi, Mapping):
        raise ValueError(f"pv {pv_name}: spec.csi is missing (not a CSI volume)")
    driver = csi.get("driver")
    if driver != TRIDENT_CSI_DRIVER:
        raise ValueError(f"pv {pv_name}: spec.csi.driver is {driver!r}, expected {TRIDENT_CSI_DRIVER!r} (Trident)")
    attrs = csi.get("volumeAttributes") or {}
    claim_ref = spec.get("claimRef") or {}
    claim = f"{claim_ref['namespace']}/{claim_ref['name']}" if claim_ref.get("namespace") else None
    common = {
        "pv_name": pv_name,
        "creation_token": attrs.get("internalName"),
        "backend_uuid": attrs.get("backendUUID"),
        "claim": claim,
    }
    internal_id = attrs.get("internalID")
    if internal_id:
        m = VOLUME_ARM_ID_RE.match(internal_id)
        if not m:
            raise ValueError(
                f"pv {pv_name}: spec.csi.volumeAttributes.internalID is not an ANF volume resource id "
                "(/subscriptions/.../capacityPools/<pool>/volumes/<volume>); is the backend azure-netapp-files?"
            )
        return TridentVolume(
            volume=m.group("volume"), pool=m.group("pool"), account=m.group("account"),
            resource_group=m.group("resource_group"), subscription_id=m.group("subscription"), exact=True, **common,
        )
    name = attrs.get("name") or csi.get("volumeHandle")
    if not name:
        raise ValueError(f"pv {pv_name}: neither spec.csi.volumeAttributes.name nor spec.csi.volumeHandle is set")
    return TridentVolume(volume=name, exact=False, **common)
