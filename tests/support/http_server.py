"""A local HTTP server for a test, served from a thread and closed afterwards."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator


def serve(server: http.server.ThreadingHTTPServer) -> Iterator[http.server.ThreadingHTTPServer]:
    """Serve *server* in a daemon thread while the caller (a fixture: ``yield from serve(...)``) holds it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
