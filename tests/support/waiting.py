"""``wait_for``: poll a condition until it holds, for tests that watch an asynchronous double (a controller, a
kubelet) reach a state. It returns the condition's first truthy value and fails the test naming what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(fn: Callable[[], Any], what: str, timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
