"""A local HTTPS emulator of the Azure Resource Manager endpoints of Azure NetApp Files, plus an AAD token endpoint.

The real ``azure-mgmt-netapp`` client talks to it unchanged: pass ``base_url=emulator.base_url`` and
``connection_verify=emulator.ca_file``. It serves HTTPS because azure-core's bearer-token policy refuses to send a
token over plain HTTP (``_enforce_https``); the self-signed certificate is generated per emulator with
``cryptography`` and is the only trust anchor the client is given.

What it emulates (the shapes are ARM's: resource JSON with ``properties``, nested ``name`` such as
``account/pool/volume/snapshot``, ``{"error": {"code", "message"}}`` bodies, ``{"value", "nextLink"}`` pages):

* accounts, capacity pools, volumes (GET, list, PUT = create, also from a snapshot), ``revert`` and ``poolChange``;
* snapshots (PUT, GET, list with paging, DELETE);
* long-running operations: writes answer 201/202 with ``Azure-AsyncOperation`` and ``Location`` headers; the
  operation stays ``InProgress`` (resources ``Creating``/``Deleting``/``Updating``) for ``lro_polls`` polls, then
  ``Succeeded`` — or never (``hang_operations``) or ``Failed`` (``fail_operations``);
* faults queued with :meth:`ArmEmulator.inject`: a status (429 with ``Retry-After``, 5xx, 404, 409 ...) in ARM error
  format, or a TCP reset (``kind="reset"``);
* AAD v2 endpoints (openid-configuration, client-credentials token) so ``azure-identity`` credentials can be
  exercised end to end with an ``authority`` override;
* the api-version query parameter is required (ARM's ``MissingApiVersionParameter``) and recorded.

Every request is recorded (:attr:`ArmEmulator.requests`) so tests and benchmarks count ARM writes. The emulator
never logs or prints; it keeps the secrets it is given only in memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

GIB = 1024**3
TIB = 1024**4
WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
_API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_SEG = r"[^/]+"
_ACCOUNT = (
    rf"/subscriptions/(?P<sub>{_SEG})/resourceGroups/(?P<rg>{_SEG})/providers/Microsoft\.NetApp"
    rf"/netAppAccounts/(?P<acct>{_SEG})"
)
_POOL = _ACCOUNT + rf"/capacityPools/(?P<pool>{_SEG})"
_VOLUME = _POOL + rf"/volumes/(?P<vol>{_SEG})"
_OPS = rf"/subscriptions/(?P<sub>{_SEG})/providers/Microsoft\.NetApp/locations/(?P<loc>{_SEG})"

# Name rules as ARM states them. Azure/azure-rest-api-specs specification/netapp/resource-manager/Microsoft.NetApp/
# stable/2025-06-01/netapp.json, path parameters of every volume operation (e.g. Volumes_PopulateAvailabilityZone,
# Snapshots_Create): poolName minLength 1, maxLength 64, pattern ^[a-zA-Z0-9][a-zA-Z0-9\-_]{0,63}$; volumeName
# minLength 1, maxLength 64, pattern ^[a-zA-Z][a-zA-Z0-9\-_]{0,63}$. The creation token (export path) is stricter: no
# '_', at most 80 characters — NetApp/trident storage_drivers/azure/azure_anf.go:81 volumeCreationTokenRegex
# ^[a-zA-Z][a-zA-Z\d-]{0,79}$ (Trident checks it before it sends a create, as ARM refuses the rest).
POOL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VOLUME_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
CREATION_TOKEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,79}$")
# snapshotName has no pattern in netapp.json (Snapshots_Create: "type": "string" only). Stricter than the spec, as the
# fidelity rule asks where the real rule is unknown: the characters ANF's own snapshots carry (policy snapshots
# "daily.<date>_<time>", portal names in any case, Trident's "pvc-<uid>"), starting with a letter or digit, <= 255.
SNAPSHOT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    status: int | None = None
    at: float = 0.0
    fault: str | None = None
    body: Any = None

    @property
    def is_arm(self) -> bool:
        return self.path.lower().startswith("/subscriptions/")

    @property
    def is_write(self) -> bool:
        return self.is_arm and self.method in WRITE_METHODS


@dataclass
class TokenRequest:
    tenant: str
    client_id: str
    grant_type: str
    scope: str
    credential_kind: str  # "client_secret" | "client_assertion" | "none"
    credential_ok: bool


@dataclass
class Fault:
    method: str
    path_re: re.Pattern[str]
    kind: str  # "status" | "reset" | "drop_response"
    status: int
    times: int
    retry_after: str | None
    code: str
    message: str


@dataclass
class Operation:
    id: str
    location: str
    polls_left: int
    complete: Callable[[], None] | None
    status: str = "InProgress"
    error: dict[str, str] | None = None
    hang: bool = False
    started: str = ""
    resource: str = ""


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., tuple[int, Any, dict[str, str]]]


class ArmError(Exception):
    """Raised inside a route to answer with an ARM error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _now_iso(t: dt.datetime) -> str:
    # ARM prints 7 fractional digits ("2024-05-01T10:11:12.1234567Z"); clients must cope.
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Write a P-256 key and a self-signed CA+server certificate for 127.0.0.1/localhost; return (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arm-emulator.test")])
    now = dt.datetime.now(dt.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "emulator-cert.pem", directory / "emulator-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: ArmEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:  # no tracebacks on stderr
        pass

    def shutdown_request(self, request: Any) -> None:
        if request in self.emulator._reset_sockets:
            self.emulator._reset_sockets.discard(request)
            try:
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                socket.socket.close(request)  # abortive close: the peer sees ECONNRESET
            except OSError:
                pass
            return
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out as separate writes; without NODELAY, Nagle + delayed ACK add ~40 ms per answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        pass

    def _dispatch(self) -> None:
        self.server.emulator._handle(self)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _dispatch


class ArmEmulator:
    """Emulated ARM + AAD on ``https://127.0.0.1:<port>``; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        subscription_id: str = "00000000-0000-4000-8000-000000000001",
        *,
        lro_polls: int = 1,
        page_size: int = 100,
        max_snapshots_per_volume: int = 255,
        get_after_put_lag: int = 0,
        tenant_id: str = "00000000-0000-4000-8000-0000000000aa",
        client_id: str = "00000000-0000-4000-8000-0000000000bb",
    ) -> None:
        self.subscription_id = subscription_id
        self.lro_polls = lro_polls
        self.page_size = page_size
        self.max_snapshots_per_volume = max_snapshots_per_volume
        # GET-after-PUT eventual consistency: the first *get_after_put_lag* GETs of a resource a PUT just created
        # answer 404 (ARM's read side answers from replicas that may not yet hold a write). NetApp/trident
        # storage_drivers/azure/api/azure.go WaitForSnapshotState (l.1515-1540) and WaitForVolumeState (l.1015-1045)
        # poll by GET and treat a 404 while waiting for 'Succeeded' as retryable (only a wait for deletion takes a 404
        # as done): the client that made the resource must not take one 404 as "gone". 0 (default) = read-your-writes.
        self.get_after_put_lag = get_after_put_lag
        self._lagging: dict[str, int] = {}
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret: str | None = None
        self.federated_token: str | None = None
        self.hang_operations = False
        self.fail_operations: tuple[str, str] | None = None
        self.requests: list[RecordedRequest] = []
        self.token_requests: list[TokenRequest] = []
        self.accounts: dict[str, dict[str, Any]] = {}
        self.pools: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.used_bytes: dict[str, int] = {}
        self.operations: dict[str, Operation] = {}
        self._tokens: set[str] = set()
        self._faults: list[Fault] = []
        self._reset_sockets: set[Any] = set()
        self._lock = threading.RLock()
        self._last_created = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
        self._ip = 3
        self._routes = self._build_routes()

        self._tmp = tempfile.TemporaryDirectory(prefix="arm-emulator-")
        cert, key = make_self_signed_cert(Path(self._tmp.name))
        self.ca_file = str(cert)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.emulator = self
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.base_url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._tmp.cleanup()

    def __enter__(self) -> ArmEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ seeding and inspection
    def allow_token(self, token: str) -> None:
        """Accept ``Authorization: Bearer <token>`` on ARM requests (a static test credential's token)."""
        self._tokens.add(token)

    def account_id(self, rg: str, account: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{rg}"
            f"/providers/Microsoft.NetApp/netAppAccounts/{account}"
        )

    def add_account(self, rg: str, account: str, location: str = "westeurope") -> dict[str, Any]:
        arm_id = self.account_id(rg, account)
        body = {
            "id": arm_id, "name": account, "type": "Microsoft.NetApp/netAppAccounts", "location": location,
            "properties": {"provisioningState": "Succeeded"},
        }
        self.accounts[arm_id.lower()] = body
        return body

    def add_pool(
        self, rg: str, account: str, pool: str, *, service_level: str = "Premium", size_tib: int = 4,
        qos_type: str = "Auto", cool_access: bool = False, encryption_type: str = "Single",
        provisioning_state: str = "Succeeded",
    ) -> dict[str, Any]:
        acct = self.accounts[self.account_id(rg, account).lower()]
        arm_id = f"{acct['id']}/capacityPools/{pool}"
        per_tib = {"Standard": 16, "Premium": 64, "Ultra": 128}.get(service_level, 16)
        body = {
            "id": arm_id, "name": f"{account}/{pool}", "type": "Microsoft.NetApp/netAppAccounts/capacityPools",
            "location": acct["location"], "tags": {},
            "properties": {
                "poolId": str(uuid.uuid4()), "size": size_tib * TIB, "serviceLevel": service_level,
                "provisioningState": provisioning_state, "qosType": qos_type, "coolAccess": cool_access,
                "encryptionType": encryption_type, "totalThroughputMibps": float(per_tib * size_tib),
                "utilizedThroughputMibps": 0.0,
            },
        }
        self.pools[arm_id.lower()] = body
        return body

    def add_volume(
        self, rg: str, account: str, pool: str, volume: str, *, usage_threshold_gib: int = 100,
        used_gib: float = 10, tags: dict[str, str] | None = None, **properties: Any,
    ) -> dict[str, Any]:
        pool_body = self.pools[f"{self.account_id(rg, account)}/capacityPools/{pool}".lower()]
        arm_id = f"{pool_body['id']}/volumes/{volume}"
        props: dict[str, Any] = {
            "fileSystemId": str(uuid.uuid4()),
            "creationToken": volume,
            "serviceLevel": pool_body["properties"]["serviceLevel"],
            "usageThreshold": usage_threshold_gib * GIB,
            "exportPolicy": {"rules": [{
                "ruleIndex": 1, "unixReadOnly": False, "unixReadWrite": True, "nfsv3": False, "nfsv41": True,
                "allowedClients": "10.1.0.0/16", "hasRootAccess": True,
            }]},
            "protocolTypes": ["NFSv4.1"],
            "subnetId": (
                f"/subscriptions/{self.subscription_id}/resourceGroups/{rg}/providers/Microsoft.Network"
                "/virtualNetworks/vnet-ml/subnets/anf-delegated"
            ),
            "networkFeatures": "Standard",
            "securityStyle": "Unix",
            "unixPermissions": "0770",
            "snapshotDirectoryVisible": True,
            "kerberosEnabled": False,
            "coolAccess": False,
            "encryptionKeySource": "Microsoft.NetApp",
            "provisioningState": "Succeeded",
            "mountTargets": [{"mountTargetId": str(uuid.uuid4()), "fileSystemId": "", "ipAddress": self._next_ip()}],
        }
        props.update(properties)
        body = {
            "id": arm_id, "name": f"{account}/{pool}/{volume}",
            "type": "Microsoft.NetApp/netAppAccounts/capacityPools/volumes",
            "location": pool_body["location"], "tags": {"team": "lanedet"} if tags is None else dict(tags),
            "zones": ["1"], "properties": props,
        }
        self.volumes[arm_id.lower()] = body
        self.used_bytes[arm_id.lower()] = int(used_gib * GIB)
        return body

    def add_snapshot(self, rg: str, account: str, pool: str, volume: str, name: str) -> dict[str, Any]:
        """Seed a finished snapshot directly (no HTTP): for bulk set-ups such as the 255 limit."""
        vol = self.volumes[f"{self.account_id(rg, account)}/capacityPools/{pool}/volumes/{volume}".lower()]
        with self._lock:
            return self._new_snapshot(vol, name, "Succeeded")

    def volume(self, rg: str, account: str, pool: str, volume: str) -> dict[str, Any] | None:
        return self.volumes.get(f"{self.account_id(rg, account)}/capacityPools/{pool}/volumes/{volume}".lower())

    def snapshot_names(self, rg: str, account: str, pool: str, volume: str) -> list[str]:
        prefix = f"{self.account_id(rg, account)}/capacityPools/{pool}/volumes/{volume}/snapshots/".lower()
        return sorted(s["name"].rsplit("/", 1)[-1] for k, s in self.snapshots.items() if k.startswith(prefix))

    def set_used(self, rg: str, account: str, pool: str, volume: str, used_gib: float) -> None:
        """Emulate data written to the volume (the ARM volume resource does not expose it)."""
        self.used_bytes[f"{self.account_id(rg, account)}/capacityPools/{pool}/volumes/{volume}".lower()] = int(
            used_gib * GIB
        )

    def inject(
        self, method: str, path_pattern: str, *, status: int = 500, times: int = 1, kind: str = "status",
        retry_after: str | None = None, code: str | None = None, message: str | None = None,
    ) -> None:
        """Answer the next *times* requests matching *method* and the *path_pattern* regex with a fault.

        *kind*: ``"status"`` (an ARM error body with *status*, plus ``Retry-After`` if given), ``"reset"`` (TCP reset
        before the request is applied) or ``"drop_response"`` (the request is applied, then the connection is reset:
        the client never learns that its write landed).
        """
        codes = {429: "TooManyRequests", 404: "ResourceNotFound", 409: "Conflict", 500: "InternalServerError",
                 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
        self._faults.append(Fault(
            method.upper(), re.compile(path_pattern, re.IGNORECASE), kind, status, times, retry_after,
            code or codes.get(status, "Error"), message or f"Injected fault {status}.",
        ))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def writes(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.is_write]

    def count(self, method: str | None = None, path_pattern: str | None = None) -> int:
        rx = re.compile(path_pattern, re.IGNORECASE) if path_pattern else None
        return sum(
            1 for r in self.requests
            if (method is None or r.method == method) and (rx is None or rx.search(r.path))
        )

    def clear_requests(self) -> None:
        self.requests.clear()
        self.token_requests.clear()

    # ------------------------------------------------------------------ HTTP plumbing
    def _handle(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        rec = RecordedRequest(h.command, url.path, query, at=time.monotonic())
        with self._lock:
            self.requests.append(rec)
        ctype = h.headers.get("Content-Type", "")
        try:
            if raw and "json" in ctype:
                rec.body = json.loads(raw)
            elif raw:
                rec.body = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        except ValueError:
            rec.body = None

        headers: dict[str, str] = {}
        try:
            if rec.is_arm:
                self._check_arm_request(h, query)
            fault = self._take_fault(h.command, url.path)
            if fault is not None:
                rec.fault = fault.kind if fault.kind != "status" else str(fault.status)
                if fault.kind == "drop_response":  # the server applies the request, the answer is lost
                    with contextlib.suppress(ArmError):
                        rec.status = self._route(h.command, url.path, query, rec.body)[0]
                if fault.kind in ("reset", "drop_response"):
                    self._reset_sockets.add(h.request)
                    h.close_connection = True
                    return
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                raise ArmError(fault.status, fault.code, fault.message, extra)
            status, body, headers = self._route(h.command, url.path, query, rec.body)
        except ArmError as err:
            status, body = err.status, {"error": {"code": err.code, "message": err.message}}
            headers = dict(err.headers)
        rec.status = status
        self._send(h, status, body, headers)

    def _check_arm_request(self, h: _Handler, query: dict[str, str]) -> None:
        auth = h.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if token is None or token not in self._tokens:
            raise ArmError(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing or invalid.",
                {"WWW-Authenticate": 'Bearer authorization_uri="https://login.windows.net/", error="invalid_token"'},
            )
        api_version = query.get("api-version")
        if not api_version or not _API_VERSION_RE.match(api_version):
            raise ArmError(
                400, "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method in (method, "*") and fault.path_re.search(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @staticmethod
    def _send(h: _Handler, status: int, body: Any, headers: dict[str, str]) -> None:
        data = b"" if body is None or status == 204 else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("x-ms-request-id", str(uuid.uuid4()))
        if data:
            h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if data:
            h.wfile.write(data)

    def _build_routes(self) -> list[_Route]:
        table: list[tuple[str, str, Callable[..., tuple[int, Any, dict[str, str]]]]] = [
            ("GET", _ACCOUNT, self._get_account),
            ("GET", _ACCOUNT + "/capacityPools", self._list_pools),
            ("GET", _POOL, self._get_pool),
            ("GET", _POOL + "/volumes", self._list_volumes),
            ("GET", _VOLUME, self._get_volume),
            ("PUT", _VOLUME, self._put_volume),
            ("POST", _VOLUME + "/revert", self._revert),
            ("POST", _VOLUME + "/poolChange", self._pool_change),
            ("GET", _VOLUME + "/snapshots", self._list_snapshots),
            ("GET", _VOLUME + rf"/snapshots/(?P<snap>{_SEG})", self._get_snapshot),
            ("PUT", _VOLUME + rf"/snapshots/(?P<snap>{_SEG})", self._put_snapshot),
            ("DELETE", _VOLUME + rf"/snapshots/(?P<snap>{_SEG})", self._delete_snapshot),
            ("GET", _OPS + rf"/operationStatuses/(?P<op>{_SEG})", self._operation_status),
            ("GET", _OPS + rf"/operationResults/(?P<op>{_SEG})", self._operation_result),
            ("GET", rf"/(?P<tenant>{_SEG})/v2\.0/\.well-known/openid-configuration", self._openid_configuration),
            ("POST", rf"/(?P<tenant>{_SEG})/oauth2/v2\.0/token", self._token),
        ]
        return [_Route(m, re.compile(f"^{p}$", re.IGNORECASE), fn) for m, p, fn in table]

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        path_matched = False
        for route in self._routes:
            m = route.pattern.match(path)
            if m is None:
                continue
            path_matched = True
            if route.method == method:
                with self._lock:
                    return route.handler(m.groupdict(), query, body)
        if path_matched:
            raise ArmError(405, "MethodNotAllowed", f"The requested method {method} is not emulated for this path.")
        raise ArmError(404, "InvalidResourceType", f"The emulator does not serve {path}.")

    # ------------------------------------------------------------------ helpers
    def _next_ip(self) -> str:
        self._ip += 1
        return f"10.1.2.{self._ip}"

    def _sub_check(self, g: dict[str, str]) -> None:
        if g["sub"].lower() != self.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{g['sub']}' could not be found.")

    def _account(self, g: dict[str, str]) -> dict[str, Any]:
        self._sub_check(g)
        acct = self.accounts.get(self.account_id(g["rg"], g["acct"]).lower())
        if acct is None:
            raise ArmError(
                404, "ResourceNotFound",
                f"The Resource 'Microsoft.NetApp/netAppAccounts/{g['acct']}' under resource group '{g['rg']}' "
                "was not found.",
            )
        return acct

    def _pool(self, g: dict[str, str]) -> dict[str, Any]:
        acct = self._account(g)
        pool = self.pools.get(f"{acct['id']}/capacityPools/{g['pool']}".lower())
        if pool is None:
            raise ArmError(
                404, "ResourceNotFound",
                f"The Resource 'Microsoft.NetApp/netAppAccounts/{g['acct']}/capacityPools/{g['pool']}' under "
                f"resource group '{g['rg']}' was not found.",
            )
        return pool

    def _volume(self, g: dict[str, str]) -> dict[str, Any]:
        pool = self._pool(g)
        vol = self.volumes.get(f"{pool['id']}/volumes/{g['vol']}".lower())
        if vol is None:
            raise ArmError(
                404, "ResourceNotFound",
                f"The Resource 'Microsoft.NetApp/netAppAccounts/{g['acct']}/capacityPools/{g['pool']}/volumes/"
                f"{g['vol']}' under resource group '{g['rg']}' was not found.",
            )
        return vol

    def _check_names(self, g: dict[str, str]) -> None:
        """ARM's path-parameter patterns (see POOL_NAME_RE and the lines above it) for a PUT."""
        checks = [("capacity pool", g["pool"], POOL_NAME_RE), ("volume", g["vol"], VOLUME_NAME_RE)]
        if g.get("snap") is not None:
            checks.append(("snapshot", g["snap"], SNAPSHOT_NAME_RE))
        for kind, value, rule in checks:
            if not rule.match(value):
                raise ArmError(400, "InvalidResourceName",
                               f"The {kind} name '{value}' is invalid (pattern {rule.pattern}).")

    def _lag(self, arm_id: str) -> None:
        if self.get_after_put_lag > 0:
            self._lagging[arm_id.lower()] = self.get_after_put_lag

    def _lagged(self, arm_id: str, message: str) -> None:
        """404 while the read side has not yet seen the resource a PUT created (``get_after_put_lag``)."""
        left = self._lagging.get(arm_id.lower(), 0)
        if left > 0:
            self._lagging[arm_id.lower()] = left - 1
            raise ArmError(404, "ResourceNotFound", message)

    def _children(self, store: dict[str, dict[str, Any]], parent_id: str, kind: str) -> list[dict[str, Any]]:
        prefix = f"{parent_id}/{kind}/".lower()
        return [v for k, v in store.items() if k.startswith(prefix) and "/" not in k[len(prefix):]]

    def _page(self, items: list[dict[str, Any]], path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        start = int(query.get("$skiptoken") or 0)
        page = items[start: start + self.page_size]
        body: dict[str, Any] = {"value": page}
        if start + self.page_size < len(items):
            body["nextLink"] = (
                f"{self.base_url}{path}?api-version={query.get('api-version')}&$skiptoken={start + self.page_size}"
            )
        return 200, body, {}

    def _allocated(self, pool: dict[str, Any]) -> int:
        return sum(v["properties"]["usageThreshold"] for v in self._children(self.volumes, pool["id"], "volumes"))

    def _find_snapshot(self, account_id: str, ref: str) -> dict[str, Any] | None:
        ref_l = ref.lower()
        for key, snap in self.snapshots.items():
            if not key.startswith(account_id.lower() + "/"):
                continue
            if key == ref_l or snap["properties"]["snapshotId"].lower() == ref_l:
                return snap
        return None

    def _new_snapshot(self, vol: dict[str, Any], name: str, state: str) -> dict[str, Any]:
        created = max(dt.datetime.now(dt.timezone.utc), self._last_created + dt.timedelta(microseconds=1))
        self._last_created = created
        arm_id = f"{vol['id']}/snapshots/{name}"
        snap = {
            "id": arm_id, "name": f"{vol['name']}/{name}",
            "type": "Microsoft.NetApp/netAppAccounts/capacityPools/volumes/snapshots",
            "location": vol["location"],
            "properties": {"snapshotId": str(uuid.uuid4()), "created": _now_iso(created), "provisioningState": state},
        }
        self.snapshots[arm_id.lower()] = snap
        self.used_bytes[arm_id.lower()] = self.used_bytes.get(vol["id"].lower(), 0)
        return snap

    def _start_operation(
        self, location: str, complete: Callable[[], None], *, status: int, body: Any = None, resource: str = "",
    ) -> tuple[int, Any, dict[str, str]]:
        """Start an LRO on *resource* (its ARM id). It progresses one step per poll of the operation URLs or GET of
        the resource itself, as server-side work goes on whether or not the client that started it still polls."""
        op = Operation(str(uuid.uuid4()), location, self.lro_polls, complete, hang=self.hang_operations,
                       started=_now_iso(dt.datetime.now(dt.timezone.utc)), resource=resource.lower())
        if self.fail_operations is not None:
            op.error = {"code": self.fail_operations[0], "message": self.fail_operations[1]}
        self.operations[op.id] = op
        ops = f"{self.base_url}/subscriptions/{self.subscription_id}/providers/Microsoft.NetApp/locations/{location}"
        headers = {
            "Azure-AsyncOperation": f"{ops}/operationStatuses/{op.id}?api-version=2026-08-01",
            "Location": f"{ops}/operationResults/{op.id}?api-version=2026-08-01",
        }
        return status, body, headers

    def _advance_resource(self, arm_id: str) -> None:
        for op in list(self.operations.values()):
            if op.resource == arm_id.lower() and op.status == "InProgress":
                self._advance(op)

    def _advance(self, op: Operation) -> None:
        if op.status != "InProgress" or op.hang:
            return
        op.polls_left -= 1
        if op.polls_left > 0:
            return
        if op.error is not None:
            op.status = "Failed"
            return
        if op.complete is not None:
            op.complete()
        op.status = "Succeeded"

    # ------------------------------------------------------------------ ARM routes
    def _get_account(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        return 200, self._account(g), {}

    def _list_pools(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        acct = self._account(g)
        return self._page(self._children(self.pools, acct["id"], "capacityPools"), f"{acct['id']}/capacityPools", q)

    def _get_pool(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        return 200, self._pool(g), {}

    def _list_volumes(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        pool = self._pool(g)
        return self._page(self._children(self.volumes, pool["id"], "volumes"), f"{pool['id']}/volumes", q)

    def _get_volume(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        vol = self._volume(g)
        self._lagged(vol["id"], f"The Resource 'Microsoft.NetApp/netAppAccounts/{g['acct']}/capacityPools/"
                                f"{g['pool']}/volumes/{g['vol']}' under resource group '{g['rg']}' was not found.")
        self._advance_resource(vol["id"])
        return 200, vol, {}

    def _put_volume(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        pool = self._pool(g)
        acct = self._account(g)
        arm_id = f"{pool['id']}/volumes/{g['vol']}"
        self._check_names(g)
        if arm_id.lower() in self.volumes:
            raise ArmError(400, "InvalidRequest", "The emulator only emulates creating volumes, not updating them.")
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid: 'properties' is required.")
        props = dict(body["properties"])
        for required in ("creationToken", "subnetId", "usageThreshold"):
            if props.get(required) in (None, ""):
                raise ArmError(400, "InvalidParameter", f"The parameter '{required}' is required.")
        if not isinstance(props["creationToken"], str) or not CREATION_TOKEN_RE.match(props["creationToken"]):
            raise ArmError(400, "InvalidCreationToken",
                           f"The creation token '{props['creationToken']}' is invalid: it must start with a letter, "
                           "contain only letters, digits and '-', and be at most 80 characters long.")
        if body.get("location", "").lower() != acct["location"].lower():
            raise ArmError(400, "InvalidLocation", f"The volume location must be '{acct['location']}'.")
        size = int(props["usageThreshold"])
        if size < 50 * GIB or size > 100 * TIB or size % GIB:
            raise ArmError(400, "InvalidVolumeSize",
                           "Volume quota must be a whole number of GiB between 50 GiB and 100 TiB.")
        level = pool["properties"]["serviceLevel"]
        if props.get("serviceLevel") not in (None, level):
            raise ArmError(400, "ServiceLevelMismatch",
                           f"The service level '{props['serviceLevel']}' does not match the pool's '{level}'.")
        if self._allocated(pool) + size > pool["properties"]["size"]:
            raise ArmError(400, "PoolSizeTooSmall", "There is not enough free space in the capacity pool.")
        for other in self.volumes.values():
            if other["id"].lower().startswith(acct["id"].lower() + "/") and (
                other["properties"]["creationToken"] == props["creationToken"]
            ):
                raise ArmError(400, "DuplicateCreationToken",
                               f"The creation token '{props['creationToken']}' is already in use.")
        used = 0
        if props.get("snapshotId"):
            snap = self._find_snapshot(acct["id"], props["snapshotId"])
            if snap is None or snap["properties"]["provisioningState"] != "Succeeded":
                raise ArmError(400, "InvalidSnapshotId", "The snapshot to restore from was not found.")
            used = self.used_bytes.get(snap["id"].lower(), 0)
            if used > size:
                raise ArmError(400, "VolumeSizeTooSmall",
                               "The volume quota must be at least the size of the snapshot it is created from.")
        props.update({
            "serviceLevel": level, "provisioningState": "Creating", "fileSystemId": str(uuid.uuid4()),
            "mountTargets": [{"mountTargetId": str(uuid.uuid4()), "fileSystemId": "", "ipAddress": self._next_ip()}],
        })
        vol = {
            "id": arm_id, "name": f"{g['acct']}/{g['pool']}/{g['vol']}",
            "type": "Microsoft.NetApp/netAppAccounts/capacityPools/volumes", "location": acct["location"],
            "tags": dict(body.get("tags") or {}), "properties": props,
        }
        if body.get("zones"):
            vol["zones"] = list(body["zones"])
        self.volumes[arm_id.lower()] = vol
        self.used_bytes[arm_id.lower()] = used
        self._lag(arm_id)

        def done() -> None:
            vol["properties"]["provisioningState"] = "Succeeded"

        return self._start_operation(acct["location"], done, status=201, body=vol, resource=arm_id)

    def _revert(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        vol = self._volume(g)
        ref = (body or {}).get("snapshotId") if isinstance(body, dict) else None
        if not ref:
            raise ArmError(400, "InvalidParameter", "The parameter 'snapshotId' is required.")
        snap = self._find_snapshot(self._account(g)["id"], ref)
        if snap is None or not snap["id"].lower().startswith(vol["id"].lower() + "/"):
            raise ArmError(400, "InvalidSnapshotId", "The snapshot does not belong to this volume.")
        if vol["properties"]["provisioningState"] != "Succeeded":
            raise ArmError(409, "OperationInProgress", "Another operation is in progress on the volume.")
        vol["properties"]["provisioningState"] = "Reverting"
        created = snap["properties"]["created"]

        def done() -> None:
            for key, other in list(self.snapshots.items()):
                if key.startswith(vol["id"].lower() + "/snapshots/") and other["properties"]["created"] > created:
                    del self.snapshots[key]
            self.used_bytes[vol["id"].lower()] = self.used_bytes.get(snap["id"].lower(), 0)
            vol["properties"]["provisioningState"] = "Succeeded"

        return self._start_operation(vol["location"], done, status=202, resource=vol["id"])

    def _pool_change(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        vol = self._volume(g)
        acct = self._account(g)
        target_id = (body or {}).get("newPoolResourceId") if isinstance(body, dict) else None
        if not target_id:
            raise ArmError(400, "InvalidParameter", "The parameter 'newPoolResourceId' is required.")
        target = self.pools.get(target_id.lower())
        if target is None or not target_id.lower().startswith(acct["id"].lower() + "/"):
            raise ArmError(400, "InvalidPoolResourceId", "The target capacity pool was not found in this account.")
        source = self._pool(g)
        if target["id"].lower() == source["id"].lower():
            raise ArmError(400, "SamePool", "The volume is already in the target capacity pool.")
        size = vol["properties"]["usageThreshold"]
        if self._allocated(target) + size > target["properties"]["size"]:
            raise ArmError(400, "PoolSizeTooSmall", "There is not enough free space in the target capacity pool.")
        vol["properties"]["provisioningState"] = "Updating"

        def done() -> None:
            old_key = vol["id"].lower()
            vol_name = vol["id"].rsplit("/", 1)[-1]
            new_id = f"{target['id']}/volumes/{vol_name}"
            del self.volumes[old_key]
            vol["id"], vol["name"] = new_id, f"{target['name']}/{vol_name}"
            vol["properties"]["serviceLevel"] = target["properties"]["serviceLevel"]
            vol["properties"]["provisioningState"] = "Succeeded"
            self.volumes[new_id.lower()] = vol
            self.used_bytes[new_id.lower()] = self.used_bytes.pop(old_key, 0)
            for key in [k for k in self.snapshots if k.startswith(old_key + "/snapshots/")]:
                snap = self.snapshots.pop(key)
                snap_name = snap["id"].rsplit("/", 1)[-1]
                snap["id"], snap["name"] = f"{new_id}/snapshots/{snap_name}", f"{vol['name']}/{snap_name}"
                self.snapshots[snap["id"].lower()] = snap
                self.used_bytes[snap["id"].lower()] = self.used_bytes.pop(key, 0)

        return self._start_operation(vol["location"], done, status=202, resource=vol["id"])

    def _list_snapshots(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        vol = self._volume(g)
        return self._page(self._children(self.snapshots, vol["id"], "snapshots"), f"{vol['id']}/snapshots", q)

    def _snapshot(self, g: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        vol = self._volume(g)
        return vol, self.snapshots.get(f"{vol['id']}/snapshots/{g['snap']}".lower())

    def _get_snapshot(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        vol, snap = self._snapshot(g)
        if snap is not None:
            self._lagged(snap["id"], f"The snapshot '{g['snap']}' of volume '{g['vol']}' was not found.")
            self._advance_resource(snap["id"])
        snap = self.snapshots.get(f"{vol['id']}/snapshots/{g['snap']}".lower())
        if snap is None:
            raise ArmError(404, "ResourceNotFound", f"The snapshot '{g['snap']}' of volume '{g['vol']}' was not found.")
        return 200, snap, {}

    def _put_snapshot(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        vol, existing = self._snapshot(g)
        self._check_names(g)
        if existing is not None:
            raise ArmError(409, "Conflict", f"A snapshot named '{g['snap']}' already exists on this volume.")
        if not isinstance(body, dict) or not body.get("location"):
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        if body["location"].lower() != vol["location"].lower():
            raise ArmError(400, "InvalidLocation", f"The snapshot location must be '{vol['location']}'.")
        # 255 per volume, counting every snapshot however made: learn.microsoft.com azure-netapp-files
        # troubleshoot-snapshot-policies ("Each volume can have a maximum of 255 snapshots ... the sum of all
        # on-demand, hourly, daily, weekly, and monthly snapshots"); azure-netapp-files-resource-limits (not
        # adjustable). Trident's clone snapshots are snapshot resources of the volume too, so they count.
        if len(self._children(self.snapshots, vol["id"], "snapshots")) >= self.max_snapshots_per_volume:
            raise ArmError(400, "SnapshotsMaxLimitReached",
                           f"A volume can hold at most {self.max_snapshots_per_volume} snapshots.")
        snap = self._new_snapshot(vol, g["snap"], "Creating")
        self._lag(snap["id"])

        def done() -> None:
            snap["properties"]["provisioningState"] = "Succeeded"

        return self._start_operation(vol["location"], done, status=201, body=snap, resource=snap["id"])

    def _delete_snapshot(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        vol, snap = self._snapshot(g)
        if snap is None:
            raise ArmError(404, "ResourceNotFound", f"The snapshot '{g['snap']}' of volume '{g['vol']}' was not found.")
        snap["properties"]["provisioningState"] = "Deleting"
        key = snap["id"].lower()

        def done() -> None:
            self.snapshots.pop(key, None)
            self.used_bytes.pop(key, None)

        return self._start_operation(vol["location"], done, status=202, resource=key)

    def _operation(self, g: dict[str, str]) -> Operation:
        op = self.operations.get(g["op"])
        if op is None:
            raise ArmError(404, "OperationNotFound", f"The operation '{g['op']}' was not found.")
        return op

    def _operation_status(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        op = self._operation(g)
        self._advance(op)
        out: dict[str, Any] = {
            "id": f"/subscriptions/{self.subscription_id}/providers/Microsoft.NetApp/locations/{op.location}"
                  f"/operationResults/{op.id}",
            "name": op.id, "status": op.status, "startTime": op.started,
        }
        if op.status == "Failed" and op.error:
            out["error"] = op.error
        return 200, out, {}

    def _operation_result(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        op = self._operation(g)
        self._advance(op)
        if op.status == "InProgress":
            ops = f"{self.base_url}/subscriptions/{self.subscription_id}/providers/Microsoft.NetApp/locations"
            return 202, None, {"Location": f"{ops}/{op.location}/operationResults/{op.id}?api-version=2026-08-01"}
        if op.status == "Failed" and op.error:
            raise ArmError(500, op.error["code"], op.error["message"])
        return 200, {}, {}

    # ------------------------------------------------------------------ AAD routes
    def _openid_configuration(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        base = f"{self.base_url}/{g['tenant']}"
        return 200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/v2.0",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        }, {}

    def _token(self, g: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        form = body if isinstance(body, dict) else {}
        if "client_secret" in form:
            kind, ok = "client_secret", self.client_secret is not None and form["client_secret"] == self.client_secret
        elif "client_assertion" in form:
            kind = "client_assertion"
            ok = self.federated_token is not None and form["client_assertion"] == self.federated_token
        else:
            kind, ok = "none", False
        ok = ok and g["tenant"] == self.tenant_id and form.get("client_id") == self.client_id
        self.token_requests.append(TokenRequest(
            g["tenant"], form.get("client_id", ""), form.get("grant_type", ""), form.get("scope", ""), kind, ok,
        ))
        if not ok:
            return 401, {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. (emulator)",
                "error_codes": [7000215],
            }, {}
        token = f"emu-{uuid.uuid4().hex}"
        self._tokens.add(token)
        return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}, {}


# ---------------------------------------------------------------------------------------------------- test estate
RG = "rg-ml"
ACCOUNT = "anf-ml"


def seed_ml_estate(emu: ArmEmulator) -> None:
    """The account the tests and benchmarks use: pools premium (4 TiB), standard (4 TiB), ultra (1 TiB, full) and
    double (Premium, double encryption), and the 100 GiB volume premium/data holding 10 GiB."""
    emu.add_account(RG, ACCOUNT, "westeurope")
    emu.add_pool(RG, ACCOUNT, "premium", service_level="Premium", size_tib=4)
    emu.add_pool(RG, ACCOUNT, "standard", service_level="Standard", size_tib=4)
    emu.add_pool(RG, ACCOUNT, "ultra", service_level="Ultra", size_tib=1)
    emu.add_pool(RG, ACCOUNT, "premium2", service_level="Premium", size_tib=4)
    emu.add_pool(RG, ACCOUNT, "double", service_level="Standard", size_tib=4, encryption_type="Double")
    emu.add_volume(RG, ACCOUNT, "ultra", "scratch", usage_threshold_gib=1000)  # leaves 24 GiB in ultra
    emu.add_volume(RG, ACCOUNT, "premium", "data", usage_threshold_gib=100, used_gib=10)
