"""reproduce's registry check (:mod:`mlflow_anf.reproduce.image`) against small registries served here: the anonymous
Bearer token handshake over TLS, present / missing / unknown, timeouts, and no python-dxf installed."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mlflow_anf.reproduce import image as image_module
from mlflow_anf.reproduce.image import INSTALL_HINT, check_image
from tests.doubles.arm_emulator import make_self_signed_cert
from tests.support.http_server import serve

DIGEST = "sha256:" + "a" * 64
TOKEN = "anonymous-pull-token"


class _TokenRegistry(http.server.BaseHTTPRequestHandler):
    """Docker Hub's dance: a manifest HEAD without a token gets 401 + ``WWW-Authenticate: Bearer``; the realm hands
    out a pull token for exactly the challenged service and scope."""

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.server.token_requests.append(query)  # type: ignore[attr-defined]
        ok = url.path == "/token" and query == {"service": ["reg.test"], "scope": ["repository:team/app:pull"]}
        body = json.dumps({"token": TOKEN} if ok else {"errors": ["bad scope"]}).encode()
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server API
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            port = self.server.server_address[1]
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="https://127.0.0.1:{port}/token",service="reg.test",'
                                                 'scope="repository:team/app:pull"')
            self.end_headers()
            return
        reference = self.path.rsplit("/manifests/", 1)[-1]
        found = self.path.startswith("/v2/team/app/manifests/") and reference in ("1.0", DIGEST)
        self.send_response(200 if found else 404)
        if found:
            self.send_header("Docker-Content-Digest", DIGEST)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _Plain(http.server.BaseHTTPRequestHandler):
    """An anonymous registry answering every manifest HEAD with ``server.status``."""

    def do_HEAD(self) -> None:  # noqa: N802 - http.server API
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tls_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[http.server.ThreadingHTTPServer]:
    cert, key = make_self_signed_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.token_requests = []  # type: ignore[attr-defined]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    monkeypatch.setattr(image_module, "_LOCAL_HOSTS", ())  # 127.0.0.1 speaks TLS here, like a real registry
    yield from serve(server)


@pytest.fixture
def plain_registry() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    server.status = 200  # type: ignore[attr-defined]
    yield from serve(server)


def test_the_anonymous_bearer_token_handshake_finds_the_image_and_its_digest(tls_registry: Any) -> None:
    registry = f"127.0.0.1:{tls_registry.server_port}"
    found = check_image(f"{registry}/team/app:1.0")
    assert (found.status, found.digest) == ("present", DIGEST), found.detail
    assert tls_registry.token_requests == [{"service": ["reg.test"], "scope": ["repository:team/app:pull"]}]
    assert check_image(f"{registry}/team/app:1.0@{DIGEST}").status == "present"
    gone = check_image(f"{registry}/team/app:2.0")
    assert gone.status == "missing" and "404" in gone.detail


def test_only_a_definite_404_is_missing(plain_registry: Any) -> None:
    ref = f"127.0.0.1:{plain_registry.server_port}/lanedet:0.1"
    plain_registry.status = 404
    assert check_image(ref).status == "missing"
    for status in (500, 403, 401):
        plain_registry.status = status
        answer = check_image(ref)
        assert answer.status == "unknown" and str(status) in answer.detail, answer


def test_no_registry_or_a_silent_one_is_unknown_within_the_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = check_image(f"127.0.0.1:{port}/lanedet:0.1")
    assert refused.status == "unknown" and "not reachable" in refused.detail

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        answer = check_image(f"127.0.0.1:{silent.getsockname()[1]}/lanedet:0.1", timeout_s=0.5)
        assert answer.status == "unknown" and time.monotonic() - started < 5


def test_without_python_dxf_the_check_is_unknown_and_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dxf", None)  # import dxf raises ImportError
    answer = check_image("registry.test/team/app:1.0")
    assert answer.status == "unknown" and answer.detail == INSTALL_HINT
