"""Options of the ``anf`` provider (:class:`AnfConfig`): which account, which credential, which cloud, timeouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlflow_anf.snapshots.anf.names import POOL_RE, UUID_RE

ANF_MAX_SNAPSHOTS_PER_VOLUME = 255

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
    #: told ``"<operation>: <ARM status>"`` while a long-running operation runs (a CLI shows it; never serialised)
    progress: Callable[[str], None] | None = Field(default=None, exclude=True, repr=False)
    retry_total: int = Field(default=6, ge=0, le=20)
    retry_backoff_factor: float = Field(default=0.8, ge=0)
    retry_backoff_max_s: float = Field(default=60.0, ge=0)
    max_snapshots_per_volume: int = Field(default=ANF_MAX_SNAPSHOTS_PER_VOLUME, ge=1, le=ANF_MAX_SNAPSHOTS_PER_VOLUME)

    @field_validator("subscription_id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        if not UUID_RE.match(v):
            raise ValueError("must be a subscription UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
        return v

    @field_validator("pool")
    @classmethod
    def _pool_name(cls, v: str | None) -> str | None:
        if v is not None and not POOL_RE.match(v):
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

