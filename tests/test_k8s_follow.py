"""``mlflow_anf.k8s.follow`` against the Kubernetes API emulator (official client over HTTPS, real watches).

Each test makes the object change from another thread while ``follow`` waits, and checks both the outcome and the
requests it made (the emulator's request log): a watch resumes from the last resourceVersion, 410 Gone costs one
re-list, a watch that ends early is resumed without a list, an unavailable watch turns into polling, and the
deadline holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from mlflow_anf.k8s import KubeApiError, KubeConfig, RetryPolicy, api_client, call_with_retries, follow, list_watch
from tests.doubles.k8s_emulator import K8sServer, ObjectStore

PVCS = "/api/v1/namespaces/default/persistentvolumeclaims"
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture
def fns(kubeconfig_path: Path, k8s_objects: ObjectStore) -> tuple[Any, Any]:
    """``(list_fn, watch_fn)`` for PVCs, and a PVC ``default/claim`` to follow."""
    from kubernetes import client

    k8s_objects.pvc("claim")
    core = client.CoreV1Api(api_client(KubeConfig(kubeconfig=kubeconfig_path, in_cluster="false")))

    def call(op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return call_with_retries(fn, *args, op=op, policy=FAST, sleep=time.sleep, **kwargs)

    return list_watch(core.list_namespaced_persistent_volume_claim, call=call, what="PVC default/claim",
                      request_timeout_s=5)


def labelled(state: Mapping[str, Any] | None, value: str = "yes") -> bool:
    return ((state or {}).get("metadata") or {}).get("labels", {}).get("done") == value


def later(delay: float, action: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def when_watched(server: K8sServer, action: Callable[[], None]) -> threading.Thread:
    """Run *action* as soon as a watch is open."""

    def run() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not server.call(lambda: server._api().open_watches):
            time.sleep(0.01)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def mark_done(objects: ObjectStore, value: str = "yes") -> Callable[[], None]:
    return lambda: objects.patch("PersistentVolumeClaim", "default", "claim", {"metadata": {"labels": {"done": value}}})


def requests(server: K8sServer, since: int) -> tuple[list[Any], list[Any]]:
    log = [r for r in server.requests(since) if r.plural == "persistentvolumeclaims"]
    return [r for r in log if r.verb == "list"], [r for r in log if r.verb == "watch"]


def test_a_change_is_seen_by_the_watch_from_the_listed_version(fns, k8s_server, k8s_objects) -> None:
    list_fn, watch_fn = fns
    mark = k8s_server.mark()
    when_watched(k8s_server, mark_done(k8s_objects))
    result = follow(list_fn, watch_fn, namespace="default", name="claim", until=labelled, timeout_s=10,
                    poll_interval_s=5, watch_timeout_s=30)
    assert result.done and labelled(result.state) and not result.polling
    lists, watches = requests(k8s_server, mark)
    assert len(lists) == 1 and len(watches) == 1
    assert lists[0].query["fieldSelector"] == "metadata.name=claim"
    assert watches[0].query["resourceVersion"]  # from the list, not "now" (which could miss the change)


def test_410_gone_relists_and_watches_from_the_new_version(fns, k8s_server, k8s_objects) -> None:
    list_fn, watch_fn = fns
    k8s_objects.pvc("other")
    mark = k8s_server.mark()

    def expire_then_change() -> None:
        # an unrelated write moves the history on, then it is compacted away: the open watch gets 410 Expired
        k8s_objects.patch("PersistentVolumeClaim", "default", "other", {"metadata": {"labels": {"x": "1"}}})
        k8s_server.expire_watches()
        time.sleep(0.3)
        mark_done(k8s_objects)()

    when_watched(k8s_server, expire_then_change)
    result = follow(list_fn, watch_fn, namespace="default", name="claim", until=labelled, timeout_s=10,
                    poll_interval_s=5, watch_timeout_s=30)
    assert result.done and not result.polling and result.relists == 2
    lists, watches = requests(k8s_server, mark)
    assert len(lists) == 2 and len(watches) == 2
    assert int(watches[1].query["resourceVersion"]) > int(watches[0].query["resourceVersion"])


def test_410_on_every_watch_ends_in_polling_not_a_loop(fns, k8s_server, k8s_objects) -> None:
    list_fn, watch_fn = fns
    k8s_server.fail_next(PVCS, verb="watch", status=410, count=20)
    later(0.6, mark_done(k8s_objects))
    mark = k8s_server.mark()
    result = follow(list_fn, watch_fn, namespace="default", name="claim", until=labelled, timeout_s=10,
                    poll_interval_s=0.1, max_expiries=2)
    assert result.done and result.polling
    _, watches = requests(k8s_server, mark)
    assert len(watches) == 3  # two expiries re-listed and re-watched, the third gave up watching


def test_a_watch_that_ends_early_is_resumed_without_a_list(fns, k8s_server, k8s_objects) -> None:
    list_fn, watch_fn = fns
    mark = k8s_server.mark()
    later(0.5, mark_done(k8s_objects, "first"))  # seen by the first watch: moves its resourceVersion on
    later(2.6, mark_done(k8s_objects))  # after the first watches have timed out on the server
    result = follow(list_fn, watch_fn, namespace="default", name="claim", until=labelled, timeout_s=10,
                    poll_interval_s=5, watch_timeout_s=1)
    assert result.done
    lists, watches = requests(k8s_server, mark)
    assert len(lists) == 1 and len(watches) >= 3
    versions = [int(w.query["resourceVersion"]) for w in watches]
    assert versions == sorted(versions) and versions[-1] > versions[0]  # each resumes where the last one stopped
    assert all(w.query.get("timeoutSeconds") == "1" for w in watches)


def test_an_unavailable_watch_is_replaced_by_polling(fns, k8s_server, k8s_objects) -> None:
    list_fn, watch_fn = fns
    k8s_server.fail_next(PVCS, verb="watch", status=403, count=5)
    later(0.4, mark_done(k8s_objects))
    mark = k8s_server.mark()
    result = follow(list_fn, watch_fn, namespace="default", name="claim", until=labelled, timeout_s=10,
                    poll_interval_s=0.1)
    assert result.done and result.polling
    lists, watches = requests(k8s_server, mark)
    assert [w.status for w in watches] == [403] and len(lists) >= 3


def test_the_deadline_bounds_watching_and_polling(fns, k8s_server) -> None:
    list_fn, watch_fn = fns
    for watch in (watch_fn, None):
        started = time.monotonic()
        result = follow(list_fn, watch, namespace="default", name="claim", until=labelled, timeout_s=1.2,
                        poll_interval_s=0.2, watch_timeout_s=30)
        assert not result.done and result.state is not None
        assert 1.1 <= time.monotonic() - started < 4
        assert result.polling == (watch is None)


def test_deletion_and_a_new_object_under_the_same_name(fns, k8s_server, k8s_objects) -> None:
    list_fn, watch_fn = fns
    seen: list[Any] = []

    def gone(state: Mapping[str, Any] | None) -> bool:
        seen.append(state)
        return state is None

    when_watched(k8s_server, lambda: k8s_objects.delete("PersistentVolumeClaim", "default", "claim", force=True))
    result = follow(list_fn, watch_fn, namespace="default", name="claim", until=gone, timeout_s=10, watch_timeout_s=30)
    assert result.done and result.state is None and seen[0] is not None

    k8s_objects.pvc("claim")  # same name, another uid: not the object that was followed
    first = list_fn("default", field_selector="metadata.name=claim")["items"][0]
    k8s_objects.delete("PersistentVolumeClaim", "default", "claim", force=True)
    k8s_objects.pvc("claim")
    result = follow(list_fn, watch_fn, namespace="default", name="claim", until=lambda s: s is None, timeout_s=5,
                    initial=first)
    assert result.done and result.state is None


def test_list_failures_propagate_after_the_callers_retries(fns, k8s_server) -> None:
    list_fn, watch_fn = fns
    k8s_server.fail_next(PVCS, verb="list", status=500, count=10)
    with pytest.raises(KubeApiError, match="list PVC default/claim: HTTP 500"):
        follow(list_fn, watch_fn, namespace="default", name="claim", until=labelled, timeout_s=5)


def test_a_server_that_closes_watches_at_once_is_not_spun_on() -> None:
    """No emulator: a watch_fn that returns at once with nothing, as some proxies do. follow must not loop on it
    (three such watches, then polling) and must keep to its deadline with the injected clock."""
    now = [0.0]
    calls = {"list": 0, "watch": 0}

    def list_fn(namespace: str, **_: Any) -> dict[str, Any]:
        calls["list"] += 1
        return {"metadata": {"resourceVersion": "7"},
                "items": [{"metadata": {"name": "x", "uid": "u", "resourceVersion": "7"}}]}

    def watch_fn(namespace: str, **_: Any) -> Iterator[dict[str, Any]]:
        calls["watch"] += 1
        return iter(())

    def sleep(seconds: float) -> None:
        now[0] += seconds

    result = follow(list_fn, watch_fn, namespace="ns", name="x", until=lambda s: False, timeout_s=10,
                    poll_interval_s=1, sleep=sleep, clock=lambda: now[0])
    assert not result.done and result.polling and calls["watch"] == 3
    assert 9.0 <= now[0] <= 10.0 + 1e-9 and calls["list"] >= 8
