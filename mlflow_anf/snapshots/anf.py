"""Azure NetApp Files snapshot provider: snapshots, restore-to-new-volume, revert and service-level change via ARM.

Everything goes through the official management SDK (``azure-mgmt-netapp``'s ``NetAppManagementClient``) with an
``azure-identity`` credential, both imported lazily. Identifiers:

* a **volume id** is ``pool/volume`` (or ``volume`` when the config names a default ``pool``; ``account/pool/volume``
  and the full ARM resource id are accepted when they match the configured account);
* a snapshot's :attr:`Snapshot.id` is its ARM resource id; ``details["snapshot_id"]`` is ANF's snapshot GUID.

Credentials: ``credential="default"`` uses ``DefaultAzureCredential`` (environment, workload identity, managed
identity, ``az login`` ...). This module never takes a client secret as an option, never reads one itself and never
logs one; texts it raises are scrubbed of secret-looking values (:func:`redact`).

ARM request budget of :meth:`AnfSnapshotProvider.create`: one list (name/limit check), at most one volume GET (only
when neither the config nor an existing snapshot tells the location), **one PUT** (the only write), LRO polls and the
final GET. The SDK retries 408/429/5xx and connection errors on GET/PUT/DELETE, honouring ``Retry-After``; a PUT that
was applied server-side but whose answer was lost comes back as 409 and is adopted (idempotent create).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlflow_anf.snapshots import ProviderConfigError
from mlflow_anf.snapshots.base import (
    InvalidSnapshotName,
    ProviderTraits,
    Snapshot,
    SnapshotError,
    SnapshotLimitExceeded,
    SnapshotNotFound,
    SnapshotTimeout,
    VerifyResult,
    validate_snapshot_name,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.polling import LROPoller
    from azure.mgmt.netapp import NetAppManagementClient

_LOG = logging.getLogger(__name__)

GIB = 1024**3
MIN_VOLUME_BYTES = 50 * GIB  # ANF minimum quota of a regular volume
ANF_MAX_SNAPSHOTS_PER_VOLUME = 255
TRIDENT_CSI_DRIVER = "csi.trident.netapp.io"

# ANF resource-name rules (capacity pools and volumes: 1-64 chars; volumes start with a letter).
_POOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_VOLUME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_VOLUME_ARM_ID_RE = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<resource_group>[^/]+)/providers/Microsoft\.NetApp"
    r"/netAppAccounts/(?P<account>[^/]+)/capacityPools/(?P<pool>[^/]+)/volumes/(?P<volume>[^/]+)$",
    re.IGNORECASE,
)
_TRANSITIONAL_STATES = frozenset({"Accepted", "Creating", "Updating", "Patching", "Moving"})
_SECRET_ENV = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_PASSWORD")

# Volume properties a restore copies from the source volume (documented in restore()).
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


# --------------------------------------------------------------------------------------------------------- errors
class AnfInputError(SnapshotError, ValueError):
    """A request the provider refuses before sending anything: bad name, target in the way, too little capacity."""


class AnfNotFound(SnapshotNotFound):
    """An ANF resource (snapshot, volume, capacity pool, account) does not exist."""


class AnfApiError(SnapshotError):
    """ARM answered with an error (after the SDK's retries) or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class RevertNotConfirmed(AnfInputError):
    """``revert`` was called without ``confirm`` equal to the volume's name; nothing was sent."""


def redact(text: str) -> str:
    """Scrub credentials (bearer tokens, ``client_secret=``-style fields, ...: :func:`mlflow_anf.secrets.redact_text`)
    and the values of Azure secret env vars from *text*."""
    from mlflow_anf.secrets import redact_text

    return redact_text(text, [os.environ.get(var) for var in _SECRET_ENV])


# --------------------------------------------------------------------------------------------------------- config
_CLOUDS = {
    # name: (ARM endpoint, ARM token audience, AAD authority host)
    "public": ("https://management.azure.com", "https://management.azure.com", "login.microsoftonline.com"),
    "china": ("https://management.chinacloudapi.cn", "https://management.chinacloudapi.cn", "login.chinacloudapi.cn"),
    "usgov": ("https://management.usgovcloudapi.net", "https://management.core.usgovcloudapi.net",
              "login.microsoftonline.us"),
}


class AnfConfig(BaseModel):
    """Options of the ``anf`` provider (``get_provider("anf", **options)``, ``--option key=value``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    subscription_id: str = Field(description="Azure subscription id (UUID)")
    resource_group: str = Field(min_length=1, max_length=90)
    account: str = Field(min_length=1, max_length=128, description="NetApp account name")
    pool: str | None = Field(default=None, description="default capacity pool for volume ids given without a pool")
    location: str | None = Field(default=None, description="region; default: the volume's")
    credential: Literal["default", "environment", "workload_identity", "managed_identity", "azure_cli"] = Field(
        default="default", description="azure-identity credential to use; 'default' = DefaultAzureCredential"
    )
    tenant_id: str | None = Field(default=None, description="AAD tenant (workload identity / az cli)")
    client_id: str | None = Field(default=None, description="client id of a user-assigned / workload identity")
    cloud: Literal["public", "china", "usgov"] = "public"
    base_url: str | None = Field(default=None, description="ARM endpoint override (sovereign/private clouds, tests)")
    authority: str | None = Field(default=None, description="AAD authority host override")
    credential_scope: str | None = Field(default=None, description="token scope; default '<ARM audience>/.default'")
    disable_instance_discovery: bool = Field(default=False, description="for private/disconnected AAD authorities")
    ca_bundle: Path | None = Field(default=None, description="PEM bundle to verify ARM/AAD TLS with")
    api_version: str | None = Field(default=None, description="pin the ANF API version (default: the SDK's)")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    lro_timeout_s: float = Field(default=1800.0, gt=0, description="max wait for a long-running ARM operation")
    polling_interval_s: float = Field(default=5.0, ge=0, description="LRO poll interval when ARM sends none")
    retry_total: int = Field(default=6, ge=0, le=20)
    retry_backoff_factor: float = Field(default=0.8, ge=0)
    retry_backoff_max_s: float = Field(default=60.0, ge=0)
    max_snapshots_per_volume: int = Field(default=ANF_MAX_SNAPSHOTS_PER_VOLUME, ge=1, le=ANF_MAX_SNAPSHOTS_PER_VOLUME)

    @field_validator("subscription_id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        if not _UUID_RE.match(v):
            raise ValueError("must be a subscription UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
        return v

    @field_validator("pool")
    @classmethod
    def _pool_name(cls, v: str | None) -> str | None:
        if v is not None and not _POOL_RE.match(v):
            raise ValueError("not a valid capacity pool name (letters, digits, '-', '_', at most 64)")
        return v

    @field_validator("base_url", "authority")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError("must be an https:// URL (bearer tokens are never sent over plain HTTP)")
        return v.rstrip("/") if v else v

    @property
    def arm_endpoint(self) -> str:
        return self.base_url or _CLOUDS[self.cloud][0]

    @property
    def scope(self) -> str:
        if self.credential_scope:
            return self.credential_scope
        audience = self.base_url or _CLOUDS[self.cloud][1]
        return f"{audience}/.default"

    @property
    def authority_host(self) -> str:
        return self.authority or _CLOUDS[self.cloud][2]


# --------------------------------------------------------------------------------------------------------- ids
class VolumeRef(BaseModel):
    """A volume inside the configured account."""

    model_config = ConfigDict(frozen=True)

    pool: str
    volume: str

    @property
    def id(self) -> str:
        return f"{self.pool}/{self.volume}"


def _check_volume_name(name: str, field: str) -> str:
    if not isinstance(name, str) or not _VOLUME_RE.match(name):
        raise AnfInputError(
            f"{field}: {name!r} is not a valid ANF volume name (start with a letter; letters, digits, '-', '_'; "
            "at most 64 characters)"
        )
    return name


def _check_pool_name(name: str, field: str) -> str:
    if not isinstance(name, str) or not _POOL_RE.match(name):
        raise AnfInputError(f"{field}: {name!r} is not a valid capacity pool name (letters, digits, '-', '_')")
    return name


def parse_volume_id(volume: str, config: AnfConfig, field: str = "volume") -> VolumeRef:
    """``pool/volume``, ``volume`` (default pool), ``account/pool/volume`` or an ARM id → :class:`VolumeRef`."""
    if not isinstance(volume, str) or not volume:
        raise AnfInputError(f"{field}: a volume id ('pool/volume') is required")
    m = _VOLUME_ARM_ID_RE.match(volume)
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
    return VolumeRef(pool=_check_pool_name(parts[0], field), volume=_check_volume_name(parts[1], field))


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
        m = _VOLUME_ARM_ID_RE.match(internal_id)
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


# --------------------------------------------------------------------------------------------------------- results
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


# --------------------------------------------------------------------------------------------------------- helpers
def _parse_time(value: Any) -> datetime | None:
    """ARM timestamps, including 7 fractional digits and 'Z'."""
    if value is None or isinstance(value, datetime):
        return value
    text = str(value).strip()
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$", text)
    if not m:
        return None
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    tz = m.group(3) or "Z"
    tz = "+00:00" if tz == "Z" else tz
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}")


def _json(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    return dict(obj)


def _props(resource: Mapping[str, Any]) -> dict[str, Any]:
    return dict(resource.get("properties") or {})


def _leaf(name: str | None) -> str:
    return (name or "").rsplit("/", 1)[-1]


def _arm_error_text(err: Any) -> tuple[int | None, str | None, str]:
    status = getattr(err, "status_code", None)
    model = getattr(err, "error", None)
    code = getattr(model, "code", None) if model is not None else None
    message = getattr(model, "message", None) if model is not None else None
    if not message:
        message = str(getattr(err, "message", "") or err).splitlines()[0] if str(err) else type(err).__name__
    return status, code, message


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:,.0f} GiB"


# --------------------------------------------------------------------------------------------------------- provider
class AnfSnapshotProvider(ProviderTraits):
    """Snapshots of Azure NetApp Files volumes, plus restore, revert and service-level change."""

    mount_hint: ClassVar[str] = (
        "a volume restored from the snapshot must be mounted before it can be trained on; run `mlflow-anf reproduce "
        "RUN --restore-only`, mount the new volume, then `mlflow-anf reproduce RUN --restored POOL/VOLUME "
        "-P <data param>=<mount path>`"
    )

    name: ClassVar[str] = "anf"
    supports_labels: ClassVar[bool] = False  # ARM snapshot resources have no tags; MLflow tags keep the link
    Config: ClassVar[type[AnfConfig]] = AnfConfig

    def __init__(self, config: AnfConfig | None = None, *, credential: TokenCredential | None = None) -> None:
        """*credential*: any azure-core ``TokenCredential``; default: built from ``config.credential``."""
        if config is None:
            raise ProviderConfigError(
                "provider 'anf': options subscription_id, resource_group and account are required"
            )
        self.config = config
        self._credential = credential
        self._client: NetAppManagementClient | None = None
        self._location_cache: dict[str, str] = {}

    def __repr__(self) -> str:
        c = self.config
        return f"AnfSnapshotProvider(account={c.account!r}, resource_group={c.resource_group!r}, pool={c.pool!r})"

    # ------------------------------------------------------------------ SDK plumbing
    @property
    def client(self) -> NetAppManagementClient:
        if self._client is None:
            self._client = self._build_client()
        return self._client

    def _transport_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.config.ca_bundle is not None:
            kw["connection_verify"] = str(self.config.ca_bundle)
        return kw

    def _build_credential(self) -> TokenCredential:
        import azure.identity as identity

        c = self.config
        common: dict[str, Any] = self._transport_kwargs()
        authority = {"authority": c.authority_host}
        if c.disable_instance_discovery:
            common["disable_instance_discovery"] = True
        if c.credential == "default":
            kw: dict[str, Any] = {**common, **authority}
            if c.client_id:
                kw["managed_identity_client_id"] = c.client_id
                kw["workload_identity_client_id"] = c.client_id
            if c.tenant_id:
                kw["workload_identity_tenant_id"] = c.tenant_id
            return identity.DefaultAzureCredential(**kw)
        if c.credential == "environment":
            return identity.EnvironmentCredential(**common, **authority)
        if c.credential == "workload_identity":
            kw = {**common, **authority}
            if c.client_id:
                kw["client_id"] = c.client_id
            if c.tenant_id:
                kw["tenant_id"] = c.tenant_id
            return identity.WorkloadIdentityCredential(**kw)
        if c.credential == "managed_identity":
            return identity.ManagedIdentityCredential(client_id=c.client_id, **self._transport_kwargs())
        return identity.AzureCliCredential(tenant_id=c.tenant_id or "")

    def _build_client(self) -> NetAppManagementClient:
        from azure.mgmt.netapp import NetAppManagementClient

        c = self.config
        credential = self._credential if self._credential is not None else self._build_credential()
        kwargs: dict[str, Any] = {
            **self._transport_kwargs(),
            "credential_scopes": [c.scope],
            "polling_interval": c.polling_interval_s,
            "retry_total": c.retry_total,
            "retry_backoff_factor": c.retry_backoff_factor,
            "retry_backoff_max": c.retry_backoff_max_s,
            "connection_timeout": c.connect_timeout_s,
            "read_timeout": c.read_timeout_s,
        }
        if c.api_version:
            kwargs["api_version"] = c.api_version
        return NetAppManagementClient(credential, c.subscription_id, base_url=c.arm_endpoint, **kwargs)

    @contextlib.contextmanager
    def _arm(self, what: str, *, missing: str | None = None) -> Iterator[None]:
        """Translate SDK exceptions into this package's errors; *missing* is the text for a 404."""
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestTimeoutError,
            ServiceResponseError,
            ServiceResponseTimeoutError,
            ServiceRequestError,
        )

        try:
            yield
        except ResourceNotFoundError as err:
            status, code, message = _arm_error_text(err)
            raise AnfNotFound(redact(f"{what}: {missing or 'not found'} (ARM {code or status}: {message})")) from err
        except ClientAuthenticationError as err:
            raise AnfApiError(
                redact(f"{what}: authentication failed (credential={self.config.credential!r}): "
                       f"{_arm_error_text(err)[2]}"),
                status_code=getattr(err, "status_code", None),
            ) from err
        except HttpResponseError as err:
            status, code, message = _arm_error_text(err)
            hint = f" — gave up after the SDK's retries (retry_total={self.config.retry_total})" if (
                status in (408, 429) or (status or 0) >= 500) else ""
            raise AnfApiError(
                redact(f"{what}: ARM error HTTP {status} {code or ''}: {message}{hint}".replace("  ", " ")),
                status_code=status, code=code,
            ) from err
        except (ServiceRequestTimeoutError, ServiceResponseTimeoutError) as err:
            raise SnapshotTimeout(redact(f"{what}: no answer from {self.config.arm_endpoint} in time: {err}")) from err
        except (ServiceRequestError, ServiceResponseError) as err:
            raise AnfApiError(redact(
                f"{what}: cannot reach {self.config.arm_endpoint} (after retry_total={self.config.retry_total}): "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            )) from err
        except AzureError as err:
            raise AnfApiError(redact(f"{what}: {type(err).__name__}: {err}")) from err

    def _wait(self, poller: LROPoller[Any], what: str) -> Any:
        result = poller.result(timeout=self.config.lro_timeout_s)
        if not poller.done():
            raise SnapshotTimeout(
                f"{what}: still running after lro_timeout_s={self.config.lro_timeout_s:g}s; the ARM operation "
                "continues server-side (check again with 'mlflow-anf volume show')"
            )
        return result

    def _names(self, ref: VolumeRef) -> tuple[str, str, str, str]:
        return self.config.resource_group, self.config.account, ref.pool, ref.volume

    # ------------------------------------------------------------------ records
    def _snapshot_record(self, ref: VolumeRef, resource: Mapping[str, Any], *, adopted: bool = False) -> Snapshot:
        props = _props(resource)
        state = props.get("provisioningState")
        created = _parse_time(props.get("created"))
        details: dict[str, Any] = {
            "snapshot_id": props.get("snapshotId"),
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
            name=_leaf(resource.get("name")),
            id=resource.get("id") or "",
            created=created or datetime.now(timezone.utc),
            ready=state == "Succeeded",
            details=details,
        )

    def _list_raw(self, ref: VolumeRef) -> list[dict[str, Any]]:
        with self._arm(f"list snapshots of anf:{ref.id}", missing=f"volume {ref.id!r} not found"):
            return [_json(s) for s in self.client.snapshots.list(*self._names(ref))]

    def _get_volume_raw(self, ref: VolumeRef) -> dict[str, Any]:
        with self._arm(f"get volume anf:{ref.id}", missing=f"volume {ref.id!r} not found in account "
                                                           f"{self.config.account!r}"):
            return _json(self.client.volumes.get(*self._names(ref)))

    def _get_pool_raw(self, pool: str, what: str) -> dict[str, Any]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with self._arm(what):
                return _json(self.client.pools.get(self.config.resource_group, self.config.account, pool))
        except AnfNotFound as err:
            if not isinstance(err.__cause__, ResourceNotFoundError):
                raise
            known = ", ".join(f"{_leaf(p.get('name'))} ({_props(p).get('serviceLevel')})" for p in self._pools_raw())
            raise AnfNotFound(
                f"{what}: capacity pool {pool!r} not found in account {self.config.account!r} "
                f"(pools: {known or 'none'})"
            ) from None

    def _pools_raw(self) -> list[dict[str, Any]]:
        with self._arm(f"list capacity pools of account {self.config.account!r}"):
            return [_json(p) for p in self.client.pools.list(self.config.resource_group, self.config.account)]

    def _pool_allocation(self, pool: str, what: str) -> int:
        with self._arm(what):
            vols = self.client.volumes.list(self.config.resource_group, self.config.account, pool)
            return sum(int(_props(_json(v)).get("usageThreshold") or 0) for v in vols)

    # ------------------------------------------------------------------ SnapshotProvider protocol
    def create(self, volume: str, name: str | None = None, *, labels: Mapping[str, str] | None = None) -> Snapshot:
        """Snapshot *volume*; an existing snapshot of that name is adopted (idempotent). One ARM write."""
        from azure.core.exceptions import ResourceExistsError

        if labels:
            raise AnfInputError("labels: ANF snapshots cannot carry labels (the ARM resource has no tags)")
        ref = parse_volume_id(volume, self.config)
        name = validate_snapshot_name(name) if name is not None else self._generated_name()
        existing = self._list_raw(ref)
        for snap in existing:
            if _leaf(snap.get("name")) == name:
                _LOG.info("anf: snapshot %s of %s exists, adopting it", name, ref.id)
                return self._snapshot_record(ref, self._settled(ref, name, snap), adopted=True)
        limit = self.config.max_snapshots_per_volume
        if len(existing) >= limit:
            raise SnapshotLimitExceeded(
                f"anf:{ref.id} already holds {len(existing)} snapshots (limit {limit} per volume); delete old "
                "snapshots first (mlflow-anf snapshot delete) — nothing was created"
            )
        location = self.config.location or (existing[0].get("location") if existing else None)
        location = location or self._volume_location(ref)
        what = f"create snapshot anf:{ref.id}@{name}"
        _LOG.info("anf: creating snapshot %s of %s", name, ref.id)
        try:
            with self._arm(what, missing=f"volume {ref.id!r} not found"):
                poller = self.client.snapshots.begin_create(*self._names(ref), name, {"location": location})
                result = _json(self._wait(poller, what))
        except AnfApiError as err:
            if not isinstance(err.__cause__, ResourceExistsError):
                raise
            # 409: our earlier PUT landed (its answer was lost) or someone else made it; adopt if it is there.
            try:
                snap = self._get_raw(ref, name)
            except SnapshotNotFound:
                raise err from None
            _LOG.info("anf: snapshot %s of %s already exists (409), adopting it", name, ref.id)
            return self._snapshot_record(ref, self._settled(ref, name, snap), adopted=True)
        return self._snapshot_record(ref, result)

    def list(self, volume: str | None = None, *, labels: Mapping[str, str] | None = None) -> list[Snapshot]:
        """Snapshots of *volume*, or of every volume in the account, oldest first."""
        if labels:
            raise AnfInputError("labels: ANF snapshots cannot carry labels, so they cannot be filtered by them")
        if volume is not None:
            refs = [parse_volume_id(volume, self.config)]
        else:
            refs = []
            for pool in self._pools_raw():
                pool_name = _leaf(pool.get("name"))
                with self._arm(f"list volumes of pool {pool_name!r}"):
                    vols = list(self.client.volumes.list(self.config.resource_group, self.config.account, pool_name))
                refs += [VolumeRef(pool=pool_name, volume=_leaf(_json(v).get("name"))) for v in vols]
        out = [self._snapshot_record(ref, s) for ref in refs for s in self._list_raw(ref)]
        return sorted(out, key=lambda s: (s.created, s.volume, s.name))

    def _get_raw(self, ref: VolumeRef, name: str) -> dict[str, Any]:
        from azure.core.exceptions import ResourceNotFoundError

        what = f"get snapshot anf:{ref.id}@{name}"
        try:
            with self._arm(what):
                return _json(self.client.snapshots.get(*self._names(ref), name))
        except AnfNotFound as err:
            if isinstance(err.__cause__, ResourceNotFoundError):
                raise SnapshotNotFound(f"anf:{ref.id}@{name}: no such snapshot (or volume) in account "
                                       f"{self.config.account!r}") from None
            raise

    def _settled(self, ref: VolumeRef, name: str, raw: dict[str, Any]) -> dict[str, Any]:
        """Wait (GET every polling_interval_s, at most lro_timeout_s) while an adopted snapshot is still being made."""
        deadline = time.monotonic() + self.config.lro_timeout_s
        while _props(raw).get("provisioningState") in _TRANSITIONAL_STATES:
            if time.monotonic() >= deadline:
                raise SnapshotTimeout(
                    f"anf:{ref.id}@{name}: still {_props(raw).get('provisioningState')!r} after "
                    f"lro_timeout_s={self.config.lro_timeout_s:g}s"
                )
            time.sleep(self.config.polling_interval_s)
            raw = self._get_raw(ref, name)
        if _props(raw).get("provisioningState") not in (None, "Succeeded"):
            raise AnfApiError(
                f"anf:{ref.id}@{name}: a snapshot of that name exists but is {_props(raw).get('provisioningState')!r}; "
                "delete it (mlflow-anf snapshot delete) or use another name"
            )
        return raw

    def get(self, volume: str, name: str) -> Snapshot:
        ref = parse_volume_id(volume, self.config)
        validate_snapshot_name(name)
        return self._snapshot_record(ref, self._get_raw(ref, name))

    def delete(self, volume: str, name: str) -> None:
        ref = parse_volume_id(volume, self.config)
        validate_snapshot_name(name)
        what = f"delete snapshot anf:{ref.id}@{name}"
        _LOG.info("anf: deleting snapshot %s of %s", name, ref.id)
        with self._arm(what, missing="no such snapshot"):
            self._wait(self.client.snapshots.begin_delete(*self._names(ref), name), what)

    def verify(self, snapshot: Snapshot) -> VerifyResult:
        """The snapshot still exists, is ``Succeeded`` and is the same one (same ANF snapshot GUID)."""
        ref = parse_volume_id(snapshot.volume, self.config, field="snapshot.volume")
        problems: list[str] = []
        try:
            raw = self._get_raw(ref, snapshot.name)
        except SnapshotNotFound as err:
            return VerifyResult(ok=False, checked=1, problems=[str(err)])
        props = _props(raw)
        if props.get("provisioningState") != "Succeeded":
            problems.append(f"{snapshot.ref}: provisioningState is {props.get('provisioningState')!r}, not 'Succeeded'")
        recorded = snapshot.details.get("snapshot_id")
        if recorded and props.get("snapshotId") and recorded != props["snapshotId"]:
            problems.append(
                f"{snapshot.ref}: snapshot id changed ({recorded} → {props['snapshotId']}): it was deleted and "
                "re-created under the same name"
            )
        return VerifyResult(ok=not problems, checked=1, problems=problems)

    def restore(
        self,
        snapshot: Snapshot,
        target: str,
        *,
        pool: str | None = None,
        size_gib: int | None = None,
        wait: bool = True,
        **options: Any,
    ) -> str:
        """Create the new volume *target* (``name`` or ``pool/name``) from *snapshot*; returns ``pool/name``.

        Copied from the source volume: location, zones, tags (plus ``mlflow-anf-restored-from``), and the
        properties in :data:`RESTORE_COPIED_PROPERTIES` (subnet, protocol types, export policy, network features,
        security style, unix permissions, snapshot-directory visibility, Kerberos/LDAP/SMB flags, encryption key
        source, large-volume flag); cool-access settings only into a cool-access pool and the throughput only into a
        manual-QoS pool. The service level is the target pool's (a volume's service level is its pool's). The
        creation token (export path) is the new volume name. Not copied: data protection (replication, backup,
        snapshot policies), volume type, placement/group settings.

        Size rule: the quota defaults to the source volume's quota, is rounded up to whole GiB and at least
        50 GiB; it may not be smaller than the snapshot (ARM exposes no snapshot size, so the floor is the
        snapshot's recorded ``size_bytes`` or else the source quota) and must fit the target pool's free capacity.
        """
        if options:
            raise AnfInputError(
                f"restore: unknown option(s) {', '.join(sorted(options))} (known: pool, size_gib, wait)"
            )
        src = parse_volume_id(snapshot.volume, self.config, field="snapshot.volume")
        if "/" in target:
            dest = parse_volume_id(target, self.config, field="target")
            if pool is not None and pool != dest.pool:
                raise AnfInputError(f"target: {target!r} names pool {dest.pool!r} but pool={pool!r} was given")
        else:
            dest = VolumeRef(pool=_check_pool_name(pool or src.pool, "pool"),
                             volume=_check_volume_name(target, "target"))
        if size_gib is not None and (not isinstance(size_gib, int) or size_gib <= 0):
            raise AnfInputError(f"size_gib: must be a positive whole number of GiB, got {size_gib!r}")
        what = f"restore anf:{snapshot.volume}@{snapshot.name} to new volume {dest.id}"

        snap = self._get_raw(src, snapshot.name)
        if _props(snap).get("provisioningState") != "Succeeded":
            raise AnfInputError(f"{what}: snapshot is {_props(snap).get('provisioningState')!r}, not 'Succeeded'")
        source = self._get_volume_raw(src)
        target_pool = self._get_pool_raw(dest.pool, what)
        if self._volume_exists(dest):
            raise AnfInputError(f"{what}: volume {dest.id!r} already exists; choose another --to name")

        sprops, pprops = _props(source), _props(target_pool)
        source_quota = int(sprops.get("usageThreshold") or 0)
        floor = snapshot.size_bytes if snapshot.size_bytes is not None else source_quota
        quota = size_gib * GIB if size_gib is not None else source_quota
        quota = max(-(-quota // GIB) * GIB, MIN_VOLUME_BYTES)
        if quota < floor:
            raise AnfInputError(
                f"{what}: size_gib={size_gib} is below the snapshot's size floor {_gib(floor)} (ARM does not report a "
                "snapshot's size, so the source volume's quota is the safe floor); omit --size-gib or pass more"
            )
        free = int(pprops.get("size") or 0) - self._pool_allocation(dest.pool, what)
        if quota > free:
            raise AnfInputError(
                f"{what}: pool {dest.pool!r} has {_gib(free)} unallocated, the new volume needs {_gib(quota)}; "
                "grow the pool or pick another with pool=..."
            )

        props: dict[str, Any] = {k: sprops[k] for k in RESTORE_COPIED_PROPERTIES if sprops.get(k) is not None}
        props.update({
            "creationToken": dest.volume,
            "usageThreshold": quota,
            "serviceLevel": pprops.get("serviceLevel"),
            "snapshotId": snap.get("id"),
        })
        if pprops.get("coolAccess"):
            props.update({k: sprops[k] for k in _COOL_ACCESS_PROPERTIES if sprops.get(k) is not None})
        if str(pprops.get("qosType", "")).lower() == "manual" and sprops.get("throughputMibps") is not None:
            props["throughputMibps"] = sprops["throughputMibps"]
        tags = dict(source.get("tags") or {})
        tags["mlflow-anf-restored-from"] = f"{src.id}@{snapshot.name}"
        body: dict[str, Any] = {"location": source.get("location"), "tags": tags, "properties": props}
        if source.get("zones"):
            body["zones"] = list(source["zones"])

        _LOG.info("anf: %s (quota %s)", what, _gib(quota))
        with self._arm(what):
            poller = self.client.volumes.begin_create_or_update(*self._names(dest), body, polling=wait)
            if wait:
                self._wait(poller, what)
        return dest.id

    # ------------------------------------------------------------------ revert
    def plan_revert(self, volume: str, snapshot: str) -> RevertPlan:
        """Read-only: which snapshots and which writes a revert of *volume* to *snapshot* would destroy."""
        ref = parse_volume_id(volume, self.config)
        validate_snapshot_name(snapshot, field="snapshot")
        return self._plan_revert(ref, snapshot)[0]

    def _plan_revert(self, ref: VolumeRef, snapshot: str) -> tuple[RevertPlan, dict[str, Any]]:
        target = self._get_raw(ref, snapshot)
        vol = self._get_volume_raw(ref)
        created = _parse_time(_props(target).get("created"))
        lost = []
        for s in self._list_raw(ref):
            s_created = _parse_time(_props(s).get("created"))
            if _leaf(s.get("name")) != snapshot and created and s_created and s_created > created:
                lost.append(SnapshotSummary(name=_leaf(s.get("name")), created=s_created,
                                            snapshot_id=_props(s).get("snapshotId")))
        lost.sort(key=lambda s: s.created or datetime.min.replace(tzinfo=timezone.utc))
        warnings = []
        dp = _props(vol).get("dataProtection") or {}
        if dp.get("backup"):
            warnings.append("the volume has backups configured; ANF does not support revert on such volumes")
        if dp.get("replication"):
            warnings.append("the volume is in a replication relationship; review its replication after the revert")
        if _props(target).get("provisioningState") != "Succeeded":
            warnings.append(f"snapshot is {_props(target).get('provisioningState')!r}, not 'Succeeded'")
        plan = RevertPlan(volume=ref.id, snapshot=snapshot, snapshot_created=created, snapshots_lost=lost,
                          data_lost_since=created, warnings=warnings)
        return plan, target

    def revert(self, volume: str, snapshot: str, *, confirm: str | None, wait: bool = True) -> RevertPlan:
        """Revert *volume* in place to *snapshot*. Destructive: ANF deletes every newer snapshot and all data written
        since. ``confirm`` must equal the volume's name (``volume`` or ``pool/volume``); it is checked before any
        request is sent. Returns the :class:`RevertPlan` of what was lost."""
        ref = parse_volume_id(volume, self.config)
        validate_snapshot_name(snapshot, field="snapshot")
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
        with self._arm(what):
            poller = self.client.volumes.begin_revert(*self._names(ref), {"snapshotId": target.get("id")},
                                                      polling=wait)
            if wait:
                self._wait(poller, what)
        return plan.model_copy(update={"status": "succeeded" if wait else "started"})

    # ------------------------------------------------------------------ service level (pool change)
    def change_service_level(self, volume: str, target_pool: str, *, wait: bool = True) -> PoolChangeResult:
        """Move *volume* to *target_pool* (``az netappfiles volume pool-change``), after checking the target's
        state, service level, encryption, cool access and unallocated capacity."""
        ref = parse_volume_id(volume, self.config)
        _check_pool_name(target_pool, "target_pool")
        what = f"move anf:{ref.id} to pool {target_pool!r}"
        if target_pool == ref.pool:
            raise AnfInputError(f"{what}: the volume is already in pool {target_pool!r}")
        vol = self._get_volume_raw(ref)
        vprops = _props(vol)
        if vprops.get("provisioningState") not in (None, "Succeeded"):
            raise AnfInputError(f"{what}: volume is {vprops.get('provisioningState')!r}; wait for it to settle")
        source = _props(self._get_pool_raw(ref.pool, what))
        target_raw = self._get_pool_raw(target_pool, what)
        target = _props(target_raw)
        level_from, level_to = source.get("serviceLevel"), target.get("serviceLevel")
        problems = []
        if target.get("provisioningState") not in (None, "Succeeded"):
            problems.append(f"target pool is {target.get('provisioningState')!r}, not 'Succeeded'")
        if level_from and level_to == level_from:
            problems.append(f"target pool has the same service level ({level_to}) as pool {ref.pool!r}")
        if source.get("encryptionType") and target.get("encryptionType") and (
                source["encryptionType"] != target["encryptionType"]):
            problems.append(f"encryption type differs ({source['encryptionType']} → {target['encryptionType']}); "
                            "ANF cannot move a volume between encryption types")
        if vprops.get("coolAccess") and not target.get("coolAccess"):
            problems.append("the volume uses cool access but the target pool does not allow it")
        quota = int(vprops.get("usageThreshold") or 0)
        free = int(target.get("size") or 0) - self._pool_allocation(target_pool, what)
        if quota > free:
            problems.append(f"target pool has {_gib(free)} unallocated, the volume needs {_gib(quota)}; grow it first")
        if str(target.get("qosType", "")).lower() == "manual" and vprops.get("throughputMibps"):
            spare = float(target.get("totalThroughputMibps") or 0) - float(target.get("utilizedThroughputMibps") or 0)
            if float(vprops["throughputMibps"]) > spare:
                problems.append(f"target manual-QoS pool has {spare:g} MiB/s unassigned, the volume has "
                                f"{float(vprops['throughputMibps']):g} MiB/s")
        if problems:
            raise AnfInputError(f"{what}: " + "; ".join(problems))
        _LOG.info("anf: %s (%s → %s)", what, level_from, level_to)
        with self._arm(what):
            poller = self.client.volumes.begin_pool_change(
                *self._names(ref), {"newPoolResourceId": target_raw.get("id")}, polling=wait
            )
            if wait:
                self._wait(poller, what)
        new_ref = VolumeRef(pool=target_pool, volume=ref.volume)
        return PoolChangeResult(
            volume=ref.id, new_volume=new_ref.id, from_pool=ref.pool, from_service_level=level_from,
            to_pool=target_pool, to_service_level=level_to, volume_quota_bytes=quota, target_free_bytes=free,
            status="succeeded" if wait else "started",
        )

    # ------------------------------------------------------------------ inspection and PV mapping
    def describe_volume(self, volume: str) -> VolumeInfo:
        ref = parse_volume_id(volume, self.config)
        vol = self._get_volume_raw(ref)
        props = _props(vol)
        snaps = self._list_raw(ref)
        latest = max(snaps, key=lambda s: _parse_time(_props(s).get("created")) or datetime.min.replace(
            tzinfo=timezone.utc), default=None)
        pool = _props(self._get_pool_raw(ref.pool, f"describe anf:{ref.id}"))
        pool_size = int(pool.get("size") or 0) or None
        free = (pool_size - self._pool_allocation(ref.pool, f"describe anf:{ref.id}")) if pool_size else None
        return VolumeInfo(
            id=ref.id, arm_id=vol.get("id") or "", location=vol.get("location"),
            provisioning_state=props.get("provisioningState"), service_level=props.get("serviceLevel"),
            pool=ref.pool, quota_bytes=props.get("usageThreshold"), protocol_types=props.get("protocolTypes") or [],
            creation_token=props.get("creationToken"),
            mount_ips=[m.get("ipAddress") for m in props.get("mountTargets") or [] if m.get("ipAddress")],
            subnet_id=props.get("subnetId"), throughput_mibps=props.get("throughputMibps"),
            restored_from_snapshot=props.get("snapshotId"), snapshot_count=len(snaps),
            latest_snapshot=None if latest is None else SnapshotSummary(
                name=_leaf(latest.get("name")), created=_parse_time(_props(latest).get("created")),
                snapshot_id=_props(latest).get("snapshotId")),
            pool_size_bytes=pool_size, pool_free_bytes=free,
        )

    def volume_id_for_pv(self, pv: Mapping[str, Any]) -> str:
        """The ``pool/volume`` id of a Trident PV in the configured account (see :func:`volume_for_pv`)."""
        found = volume_for_pv(pv)
        if found.exact:
            for key, want in (("subscription_id", self.config.subscription_id),
                              ("resource_group", self.config.resource_group), ("account", self.config.account)):
                if str(getattr(found, key)).lower() != want.lower():
                    raise AnfInputError(f"pv {found.pv_name}: lives in {key} {getattr(found, key)!r}, the provider "
                                        f"is configured for {want!r}")
            return VolumeRef(pool=found.pool or "", volume=found.volume).id
        pools = [self.config.pool] if self.config.pool else [_leaf(p.get("name")) for p in self._pools_raw()]
        for pool in pools:
            with self._arm(f"find the volume of pv {found.pv_name} in pool {pool!r}"):
                for v in self.client.volumes.list(self.config.resource_group, self.config.account, pool):
                    v = _json(v)
                    if _leaf(v.get("name")) == found.volume or (
                            found.creation_token and _props(v).get("creationToken") == found.creation_token):
                        return VolumeRef(pool=pool, volume=_leaf(v.get("name"))).id
        raise AnfNotFound(f"pv {found.pv_name}: no volume named {found.volume!r} (creation token "
                          f"{found.creation_token!r}) in pool(s) {', '.join(pools)} of account {self.config.account!r}")

    # ------------------------------------------------------------------ small helpers
    def _volume_exists(self, ref: VolumeRef) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._get_volume_raw(ref)
        except AnfNotFound as err:
            if isinstance(err.__cause__, ResourceNotFoundError):
                return False
            raise
        return True

    def _volume_location(self, ref: VolumeRef) -> str:
        if ref.id not in self._location_cache:
            loc = self._get_volume_raw(ref).get("location")
            if not loc:
                raise AnfApiError(f"get volume anf:{ref.id}: ARM returned no location; set the 'location' option")
            self._location_cache[ref.id] = loc
        return self._location_cache[ref.id]

    @staticmethod
    def _generated_name() -> str:
        return f"mlflow-anf-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


__all__ = [
    "ANF_MAX_SNAPSHOTS_PER_VOLUME",
    "AnfApiError",
    "AnfConfig",
    "AnfInputError",
    "AnfNotFound",
    "AnfSnapshotProvider",
    "InvalidSnapshotName",
    "PoolChangeResult",
    "RESTORE_COPIED_PROPERTIES",
    "RevertNotConfirmed",
    "RevertPlan",
    "SnapshotSummary",
    "TridentVolume",
    "VolumeInfo",
    "VolumeRef",
    "parse_volume_id",
    "redact",
    "volume_for_pv",
]
