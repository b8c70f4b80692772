"""ARM access for the ``anf`` provider: the configured ``azure-mgmt-netapp`` client, long-running operations, error
translation and the reads (snapshots, volumes, capacity pools) the snapshot protocol and volume administration share.

Everything goes through the official management SDK (``NetAppManagementClient``) with an ``azure-identity``
credential, both imported lazily. Credentials: ``credential="default"`` uses ``DefaultAzureCredential``
(environment, workload identity, managed identity, ``az login`` ...). Nothing here takes a client secret as an
option, reads one itself or logs one; texts it raises are scrubbed of secret-looking values (:func:`redact`). The SDK
retries 408/429/5xx and connection errors on GET/PUT/DELETE, honouring ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlflow_anf.snapshots.anf.errors import AnfApiError, AnfNotFound, redact
from mlflow_anf.snapshots.anf.names import VolumeRef, snapshot_text
from mlflow_anf.snapshots.base import SnapshotNotFound, SnapshotTimeout

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.polling import LROPoller
    from azure.mgmt.netapp import NetAppManagementClient

    from mlflow_anf.snapshots.anf.config import AnfConfig

#: provisioning states of a resource ARM is still working on
TRANSITIONAL_STATES = frozenset({"Accepted", "Creating", "Updating", "Patching", "Moving"})


# ------------------------------------------------------------------------------------------------ resource helpers
def parse_time(value: Any) -> datetime | None:
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


def as_dict(obj: Any) -> dict[str, Any]:
    """An SDK model (or mapping) as the ARM JSON dict."""
    if obj is None:
        return {}
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    return dict(obj)


def props(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The ``properties`` of an ARM resource dict."""
    return dict(resource.get("properties") or {})


def leaf(name: str | None) -> str:
    """The last segment of an ARM resource name (``account/pool/volume/snapshot`` → ``snapshot``)."""
    return (name or "").rsplit("/", 1)[-1]


def _arm_error_text(err: Any) -> tuple[int | None, str | None, str]:
    status = getattr(err, "status_code", None)
    model = getattr(err, "error", None)
    code = getattr(model, "code", None) if model is not None else None
    message = getattr(model, "message", None) if model is not None else None
    if not message:
        message = str(getattr(err, "message", "") or err).splitlines()[0] if str(err) else type(err).__name__
    return status, code, message


# ------------------------------------------------------------------------------------------------ client
def require_sdk() -> None:
    """The Azure SDK (the ``azure`` extra), or :class:`~mlflow_anf.extras.MissingExtraError` naming it."""
    from mlflow_anf.extras import require_extra

    for module in ("azure.mgmt.netapp", "azure.identity"):
        require_extra("azure", module, "the anf snapshot provider")


class AnfArm:
    """One NetApp account through ARM: the SDK client (built on first use), :meth:`call` (SDK errors → this
    package's errors), :meth:`wait` (LRO with a deadline) and the reads every other part needs."""

    def __init__(self, config: AnfConfig, *, credential: TokenCredential | None = None) -> None:
        """*credential*: any azure-core ``TokenCredential``; default: built from ``config.credential``."""
        self.config = config
        self._credential = credential
        self._client: NetAppManagementClient | None = None

    @property
    def client(self) -> NetAppManagementClient:
        if self._client is None:
            require_sdk()
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

    # -------------------------------------------------------------------------------------------- calls
    @contextlib.contextmanager
    def call(self, what: str, *, missing: str | None = None) -> Iterator[None]:
        """Translate SDK exceptions into this package's errors; *missing* is the text for a 404."""
        require_sdk()
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceRequestTimeoutError,
            ServiceResponseError,
            ServiceResponseTimeoutError,
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

    def wait(self, poller: LROPoller[Any], what: str, timeout_s: float | None = None) -> Any:
        """The result of a long-running operation, waiting at most *timeout_s* (default: ``lro_timeout_s``)."""
        limit = self.config.lro_timeout_s if timeout_s is None else timeout_s
        left = limit if self.config.progress is None else self._follow(poller, what, limit)
        result = poller.result(timeout=left)
        if not poller.done():
            setting = "lro_timeout_s" if timeout_s is None else "timeout_s"
            raise SnapshotTimeout(
                f"{what}: still running after {setting}={limit:g}s; the ARM operation continues server-side "
                "(check again with 'mlflow-anf volume show')"
            )
        return result

    def _follow(self, poller: LROPoller[Any], what: str, limit: float) -> float:
        """Wait for *poller* up to *limit* seconds a polling interval at a time, telling ``config.progress`` the
        operation's status (``InProgress``...) before each; returns the seconds left of *limit* (:meth:`wait` then
        takes the result as without a display)."""
        report = self.config.progress
        assert report is not None
        deadline = time.monotonic() + limit
        while not poller.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return 0.0
            try:
                report(f"{what}: {poller.status()}")
            except Exception:  # noqa: BLE001 - a broken display must not break the operation
                report = lambda _text: None  # noqa: E731
            poller.wait(timeout=min(remaining, max(self.config.polling_interval_s, 0.5)))
        return max(0.0, deadline - time.monotonic())

    def wait_created(self, poller: LROPoller[Any], what: str, read: Callable[[], dict[str, Any]],
                     timeout_s: float | None = None) -> dict[str, Any]:
        """The resource a create (PUT) made, once its long-running operation has succeeded.

        ARM's read side may not have seen the write yet: the SDK's final GET of the new resource can answer 404 right
        after the operation reported success. That 404 is not "gone": *read* (a GET of the resource) is repeated
        every ``polling_interval_s`` until it answers, within the same time limit; then :class:`SnapshotTimeout`.
        """
        limit = self.config.lro_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        try:
            with self.call(what):
                return as_dict(self.wait(poller, what, timeout_s))
        except (AnfApiError, AnfNotFound) as err:
            if getattr(err.__cause__, "status_code", None) != 404:
                raise
        while True:
            try:
                return read()
            except SnapshotNotFound:
                if time.monotonic() >= deadline:
                    raise SnapshotTimeout(
                        f"{what}: ARM reported the create done but the resource is still not found after "
                        f"{limit:g}s; check again with 'mlflow-anf volume show' / 'snapshot list'"
                    ) from None
                time.sleep(self.config.polling_interval_s)

    def names(self, ref: VolumeRef) -> tuple[str, str, str, str]:
        """The SDK's positional path of a volume: resource group, account, pool, volume."""
        return self.config.resource_group, self.config.account, ref.pool, ref.volume

    # -------------------------------------------------------------------------------------------- reads
    def list_snapshots(self, ref: VolumeRef) -> list[dict[str, Any]]:
        with self.call(f"list snapshots of anf:{ref.id}", missing=f"volume {ref.id!r} not found"):
            return [as_dict(s) for s in self.client.snapshots.list(*self.names(ref))]

    def get_snapshot(self, ref: VolumeRef, name: str) -> dict[str, Any]:
        """The snapshot resource; :class:`SnapshotNotFound` when it (or its volume) does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        what = f"get snapshot {snapshot_text(ref, name)}"
        try:
            with self.call(what):
                return as_dict(self.client.snapshots.get(*self.names(ref), name))
        except AnfNotFound as err:
            if isinstance(err.__cause__, ResourceNotFoundError):
                raise SnapshotNotFound(f"{snapshot_text(ref, name)}: no such snapshot (or volume) in account "
                                       f"{self.config.account!r}") from None
            raise

    def get_volume(self, ref: VolumeRef) -> dict[str, Any]:
        with self.call(f"get volume anf:{ref.id}", missing=f"volume {ref.id!r} not found in account "
                                                          f"{self.config.account!r}"):
            return as_dict(self.client.volumes.get(*self.names(ref)))

    def volume_exists(self, ref: VolumeRef) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.get_volume(ref)
        except AnfNotFound as err:
            if isinstance(err.__cause__, ResourceNotFoundError):
                return False
            raise
        return True

    def list_volumes(self, pool: str, what: str | None = None) -> list[dict[str, Any]]:
        c = self.config
        with self.call(what or f"list volumes of pool {pool!r}"):
            return [as_dict(v) for v in self.client.volumes.list(c.resource_group, c.account, pool)]

    def get_pool(self, pool: str, what: str) -> dict[str, Any]:
        """The capacity pool; :class:`AnfNotFound` listing the account's pools when it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with self.call(what):
                return as_dict(self.client.pools.get(self.config.resource_group, self.config.account, pool))
        except AnfNotFound as err:
            if not isinstance(err.__cause__, ResourceNotFoundError):
                raise
            known = ", ".join(f"{leaf(p.get('name'))} ({props(p).get('serviceLevel')})" for p in self.list_pools())
            raise AnfNotFound(
                f"{what}: capacity pool {pool!r} not found in account {self.config.account!r} "
                f"(pools: {known or 'none'})"
            ) from None

    def list_pools(self) -> list[dict[str, Any]]:
        with self.call(f"list capacity pools of account {self.config.account!r}"):
            return [as_dict(p) for p in self.client.pools.list(self.config.resource_group, self.config.account)]

    def pool_allocation(self, pool: str, what: str) -> int:
        """Bytes of the pool's size its volumes' quotas take."""
        return sum(int(props(v).get("usageThreshold") or 0) for v in self.list_volumes(pool, what))
