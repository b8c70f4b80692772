"""Kubernetes client configuration and retries, shared by the ``csi`` snapshot provider and the MPIJob backend.

* :class:`KubeConfig` - where the cluster is (kubeconfig file/context or the pod's service account).
* :func:`api_client` - an official ``kubernetes`` client for it (the package is imported lazily).
* :func:`call_with_retries` - bounded exponential backoff with jitter for 429 (honouring ``Retry-After``),
  5xx and dropped connections. A 409 on create is *not* retried: callers treat it as "already exists".
* :class:`KubeApiError` - what every failed call becomes: status, reason and the server's message, never
  request headers (tokens stay out of logs and exception texts).
* Small pure helpers: resource quantities and API timestamps (naming rules are in :mod:`mlflow_anf.k8s.naming`).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlflow_anf.k8s.naming import validate_dns1123_label

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


# --------------------------------------------------------------------------------------------------------------
# configuration


class RetryPolicy(BaseModel):
    """Bounded exponential backoff with jitter for transient API failures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=5, ge=1, le=20, description="attempts in total, the first one included")
    base_delay_s: float = Field(default=0.5, ge=0, description="delay before the 2nd attempt; doubles after")
    max_delay_s: float = Field(default=10.0, ge=0, description="cap of one backoff delay")
    max_retry_after_s: float = Field(default=60.0, ge=0, description="cap of a server's Retry-After")
    jitter: float = Field(default=0.5, ge=0, le=1, description="fraction of each delay that is randomised")

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Delay after failed attempt number *attempt* (1-based): ``base * 2**(attempt-1)``, capped, jittered."""
        delay = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return delay * (1 - self.jitter * rng())


def normalize_in_cluster(value: Any) -> Any:
    """Accept booleans and yes/no/1/0 for an ``in_cluster`` option (``auto``/``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        lowered = value.strip().lower()
        return {"yes": "true", "1": "true", "no": "false", "0": "false"}.get(lowered, lowered)
    return value


class KubeConfig(BaseModel):
    """How to reach the Kubernetes API.

    ``in_cluster="auto"`` uses the pod's service account when running in a pod (``KUBERNETES_SERVICE_HOST`` set
    and a token in ``service_account_dir``), the kubeconfig otherwise.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kubeconfig: Path | None = Field(default=None, description="kubeconfig file; default $KUBECONFIG or ~/.kube/config")
    context: str | None = Field(default=None, description="kubeconfig context; default its current-context")
    in_cluster: Literal["auto", "true", "false"] = "auto"
    namespace: str | None = Field(default=None, description="default namespace; else the context's or pod's")
    request_timeout_s: float = Field(default=30.0, gt=0, description="timeout of one API request")
    service_account_dir: Path = Field(default=SERVICE_ACCOUNT_DIR, description="token, ca.crt and namespace")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("in_cluster", mode="before")
    @classmethod
    def _in_cluster_words(cls, value: Any) -> Any:
        return normalize_in_cluster(value)

    @field_validator("namespace")
    @classmethod
    def _namespace_is_label(cls, value: str | None) -> str | None:
        if value is not None:
            validate_dns1123_label(value, "namespace")
        return value

    def use_in_cluster(self, environ: Mapping[str, str] | None = None) -> bool:
        """Whether :func:`api_client` will use the service account (resolves ``auto``)."""
        if self.in_cluster != "auto":
            return self.in_cluster == "true"
        env = os.environ if environ is None else environ
        return bool(env.get("KUBERNETES_SERVICE_HOST")) and (self.service_account_dir / "token").is_file()

    def kubeconfig_location(self, environ: Mapping[str, str] | None = None) -> str:
        """The kubeconfig path(s) the client will read (``$KUBECONFIG`` may list several, ``:``-separated)."""
        if self.kubeconfig is not None:
            return str(self.kubeconfig)
        env = os.environ if environ is None else environ
        return env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


class KubeConfigError(RuntimeError):
    """The cluster connection settings cannot be used (missing file, unknown context, no service account)."""


def api_client(cfg: KubeConfig, purpose: str = "talking to Kubernetes") -> ApiClient:
    """An official-client ``ApiClient`` for *cfg*; our :func:`call_with_retries` owns all retries.

    Without the ``kubernetes`` package: :class:`~mlflow_anf.extras.MissingExtraError` naming the ``k8s`` extra and
    *purpose* (what the user ran)."""
    import yaml

    from mlflow_anf.extras import require_extra

    require_extra("k8s", "kubernetes", purpose)
    from kubernetes import client
    from kubernetes.config import ConfigException, incluster_config, kube_config

    conf = client.Configuration()
    try:
        if cfg.use_in_cluster():
            incluster_config.InClusterConfigLoader(
                token_filename=str(cfg.service_account_dir / "token"),
                cert_filename=str(cfg.service_account_dir / "ca.crt"),
            ).load_and_set(conf)
        else:
            location = cfg.kubeconfig_location()
            paths = [p for p in location.split(os.pathsep) if p]
            if not any(Path(p).expanduser().is_file() for p in paths):
                raise KubeConfigError(
                    f"kubeconfig: no file at {location!r}; point kubeconfig at one (the backend config's "
                    "\"kubeconfig\", or --option kubeconfig=PATH), set $KUBECONFIG, or run in a pod (in_cluster=true)"
                )
            kube_config.load_kube_config(
                config_file=location, context=cfg.context, client_configuration=conf, persist_config=False
            )
    except ConfigException as exc:
        mode = "in-cluster service account" if cfg.use_in_cluster() else f"kubeconfig {cfg.kubeconfig_location()!r}"
        # ConfigException texts name files and contexts, never credentials.
        raise KubeConfigError(f"cannot load Kubernetes credentials from {mode}: {exc}") from None
    except (yaml.YAMLError, TypeError, AttributeError, ValueError) as exc:
        # not a kubeconfig at all (bad YAML, a list...): say where, never quote it (it holds tokens)
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not a kubeconfig mapping"
        raise KubeConfigError(f"kubeconfig {cfg.kubeconfig_location()}{where}: {problem}") from None
    conf.retries = False  # one retry layer only: ours (counted, logged, bounded)
    return client.ApiClient(conf)


def resolve_namespace(cfg: KubeConfig) -> str:
    """The namespace to use: explicit, else the pod's (in cluster) or the kubeconfig context's, else ``default``."""
    if cfg.namespace:
        return cfg.namespace
    if cfg.use_in_cluster():
        ns_file = cfg.service_account_dir / "namespace"
        if ns_file.is_file():
            return ns_file.read_text().strip() or "default"
        return "default"
    try:
        from kubernetes.config import kube_config

        contexts, active = kube_config.list_kube_config_contexts(config_file=cfg.kubeconfig_location())
    except Exception:  # noqa: BLE001 - a missing/odd kubeconfig is reported by api_client(), not here
        return "default"
    chosen = active
    if cfg.context:
        chosen = next((c for c in contexts if c.get("name") == cfg.context), None)
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"


# --------------------------------------------------------------------------------------------------------------
# errors and retries


class KubeApiError(Exception):
    """A Kubernetes API call that failed for good (after retries where those made sense).

    ``status`` is the HTTP status (``None`` when the server could not be reached); ``reason`` and ``message`` come
    from the server's ``Status`` object. Never carries request headers.
    """

    def __init__(
        self,
        op: str,
        status: int | None,
        reason: str,
        message: str = "",
        *,
        details: Mapping[str, Any] | None = None,
        attempts: int = 1,
    ) -> None:
        self.op = op
        self.status = status
        self.reason = reason
        self.message = message
        self.details = dict(details or {})
        self.attempts = attempts
        where = f"HTTP {status} {reason}" if status is not None else reason
        text = f"{op}: {where}"
        if message and message not in where:
            text += f": {message}"
        if attempts > 1:
            text += f" (gave up after {attempts} attempts)"
        super().__init__(text)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def expired(self) -> bool:
        return self.status == 410


def _status_body(exc: Any) -> dict[str, Any]:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip().startswith("{"):
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _retry_after_s(exc: Any, now: Callable[[], float] = time.time) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    value = None
    for key in headers:
        if str(key).lower() == "retry-after":
            value = str(headers[key]).strip()
            break
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the request did not get a response" (reset, refused, timed out)."""
    import urllib3

    return (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


def to_api_error(exc: BaseException, op: str, attempts: int = 1) -> KubeApiError:
    """Convert a client exception into a :class:`KubeApiError` (status, reason, server message only)."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, KubeApiError):
        return exc
    if isinstance(exc, ApiException):
        status = exc.status or None
        body = _status_body(exc)
        reason = str(body.get("reason") or exc.reason or "error").splitlines()[0]
        return KubeApiError(
            op,
            status,
            reason,
            str(body.get("message") or ""),
            details=body.get("details") if isinstance(body.get("details"), dict) else None,
            attempts=attempts,
        )
    return KubeApiError(op, None, f"cannot reach the API server ({type(exc).__name__}: {exc})", attempts=attempts)


def call_with_retries(
    fn: Callable[..., T],
    *args: Any,
    op: str,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    **kwargs: Any,
) -> T:
    """Call ``fn(*args, **kwargs)``; retry 429/5xx/connection failures with bounded, jittered backoff.

    ``op`` names the operation in logs and errors (e.g. ``"create VolumeSnapshot ns/x"``). A ``Retry-After``
    header is honoured (capped by ``policy.max_retry_after_s``). Everything else - including 409, which a
    create caller treats as "already exists" - raises :class:`KubeApiError` at once.
    """
    from kubernetes.client.exceptions import ApiException

    policy = policy or RetryPolicy()
    conn_errors = connection_errors()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status not in RETRYABLE_STATUSES or attempt >= policy.max_attempts:
                raise to_api_error(exc, op, attempt) from None
            retry_after = _retry_after_s(exc) if exc.status in (429, 503) else None
            why = f"HTTP {exc.status} {str(exc.reason or '').splitlines()[0] if exc.reason else ''}".strip()
        except conn_errors as exc:
            if attempt >= policy.max_attempts:
                raise to_api_error(exc, op, attempt) from None
            retry_after = None
            why = f"connection failure ({type(exc).__name__})"
        if retry_after is not None:
            delay = min(retry_after, policy.max_retry_after_s)
            how = f"Retry-After {delay:g}s"
        else:
            delay = policy.backoff(attempt, rng)
            how = f"backoff {delay:.2f}s"
        log.warning("%s: %s; retrying (%s, attempt %d/%d)", op, why, how, attempt + 1, policy.max_attempts)
        sleep(delay)


# --------------------------------------------------------------------------------------------------------------
# quantities and times

_QUANTITY = re.compile(r"^([+]?[0-9.]+)([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10**3),
    "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18),
}


def parse_quantity(value: str | int, field: str = "quantity") -> int:
    """Bytes in a Kubernetes quantity (``10Gi``, ``500M``, ``1e9``, ``1073741824``), rounded up to an integer."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} is not a Kubernetes quantity")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{field}: {value!r} is negative")
        return value
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{field}: {value!r} is not a Kubernetes quantity (e.g. 100Gi, 500M, 1073741824)")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        amount = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"{field}: {value!r} is not a Kubernetes quantity") from None
    if suffix in _BINARY:
        total = amount * _BINARY[suffix]
    elif suffix[:1] in ("e", "E") and len(suffix) > 1:
        total = amount * (Decimal(10) ** int(suffix[1:]))
    else:
        total = amount * _DECIMAL[suffix]
    whole = int(total.to_integral_value(rounding="ROUND_CEILING"))
    return whole


def format_quantity(n_bytes: int) -> str:
    """The shortest exact binary-suffixed quantity for *n_bytes* (``10737418240`` -> ``10Gi``)."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n_bytes and n_bytes % unit == 0:
            return f"{n_bytes // unit}{suffix}"
    return str(n_bytes)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (as the API writes them) as an aware datetime; ``None`` if absent/unparseable."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
