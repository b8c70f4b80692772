"""Follow one Kubernetes object until a condition holds: the one routine behind every wait in mlflow-anf (a
VolumeSnapshot becoming readyToUse or going away, a restored PVC becoming Bound, an MPIJob ending).

:func:`follow` lists the object (``metadata.name`` field selector), then watches from the list's
``resourceVersion`` - the list-then-watch protocol of client-go's reflector (``k8s.io/client-go/tools/cache/
reflector.go``, ``ListAndWatch``/``watchWithResync``):

* every event moves the resourceVersion on, so the next watch (after a server-side ``timeoutSeconds`` or a watch
  that ends early) resumes where the last one stopped and misses nothing;
* ``410 Gone``/``Expired`` (the version was compacted away; the apiserver's ``watch cache``) re-lists and watches
  from the new list's resourceVersion, a bounded number of times in a row;
* a watch that is not served (403/404/405) or keeps failing (other errors, or ending at once with nothing) makes it
  poll - re-list every ``poll_interval_s`` - instead;
* ``timeout_s`` bounds it all (``None``: no bound).

``until(state)`` sees every new state of the object, ``None`` when it does not exist (never created, deleted, or
replaced by an object of another uid under the same name); it may report progress. The result says whether it
returned true.

The API calls are passed in (``list_fn``/``watch_fn``), so this module knows nothing of the kubernetes package
except in :func:`list_watch`, the adapter for the official client's list methods.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlflow_anf.k8s.client import KubeApiError, connection_errors, to_api_error

log = logging.getLogger(__name__)

State = Mapping[str, Any] | None
#: ``list_fn(namespace, field_selector=..., label_selector=...)`` -> a list object (``items``,
#: ``metadata.resourceVersion``); raises :class:`KubeApiError`.
ListFn = Callable[..., Mapping[str, Any]]
#: ``watch_fn(namespace, field_selector=..., label_selector=..., resource_version=..., timeout_seconds=...)`` ->
#: events ``{"type": ..., "object": {...}}``; raises :class:`KubeApiError` (status 410 when the version is too old).
WatchFn = Callable[..., Iterable[Mapping[str, Any]]]

NOT_WATCHABLE = frozenset({403, 404, 405})


@dataclass
class Followed:
    """What :func:`follow` saw last."""

    state: dict[str, Any] | None
    done: bool
    watches: int = 0
    relists: int = 0
    polling: bool = False


def _meta(obj: State) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


class _Follower:
    """The state of one :func:`follow` call (kept in an object so each step is a short method)."""

    def __init__(self, list_fn: ListFn, watch_fn: WatchFn | None, namespace: str, name: str,
                 label_selector: str | None, uid: str | None, what: str) -> None:
        self.list_fn, self.watch_fn = list_fn, watch_fn
        self.namespace, self.name, self.what = namespace, name, what
        self.selectors: dict[str, str] = {"field_selector": f"metadata.name={name}"}
        if label_selector:
            self.selectors["label_selector"] = label_selector
        self.uid = uid
        self.rv: str | None = None
        self.result = Followed(state=None, done=False)

    def ours(self, obj: State) -> dict[str, Any] | None:
        """*obj* if it is the followed object (same name; same uid once one is known)."""
        if not obj or _meta(obj).get("name") != self.name:
            return None
        uid = _meta(obj).get("uid")
        if self.uid is None:
            self.uid = uid
        return dict(obj) if uid in (None, self.uid) else None

    def relist(self) -> dict[str, Any] | None:
        page = self.list_fn(self.namespace, **self.selectors)
        self.result.relists += 1
        self.rv = (page.get("metadata") or {}).get("resourceVersion") or self.rv
        found = [self.ours(item) for item in page.get("items") or []]
        return next((item for item in found if item is not None), None)

    def watch(self, window: float, until: Callable[[State], bool]) -> int:
        """One watch request; returns the number of events; sets ``result`` (``done`` when *until* held)."""
        assert self.watch_fn is not None
        self.result.watches += 1
        events = self.watch_fn(self.namespace, resource_version=self.rv, timeout_seconds=max(1, math.ceil(window)),
                               **self.selectors)
        seen = 0
        try:
            for event in events:
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = obj.get("code") if isinstance(obj, Mapping) else None
                    raise KubeApiError(f"watch {self.what}", code, str(obj.get("reason") or "watch error"),
                                       str(obj.get("message") or ""))
                self.rv = _meta(obj).get("resourceVersion") or self.rv
                if kind == "BOOKMARK":
                    continue
                seen += 1
                state = None if kind == "DELETED" else self.ours(obj)
                if kind == "DELETED" and _meta(obj).get("uid") not in (None, self.uid):
                    continue  # an older object of that name went away, not ours
                self.result.state = state
                if until(state):
                    self.result.done = True
                    return seen
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        return seen


def follow(
    list_fn: ListFn,
    watch_fn: WatchFn | None,
    *,
    namespace: str,
    name: str,
    until: Callable[[State], bool],
    timeout_s: float | None,
    poll_interval_s: float = 2.0,
    watch_timeout_s: float = 60.0,
    label_selector: str | None = None,
    initial: Mapping[str, Any] | None = None,
    max_expiries: int = 3,
    max_watch_failures: int = 3,
    what: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Followed:
    """Follow object *name* in *namespace* until ``until(state)`` or *timeout_s*; see the module docstring.

    *initial*: the object as the caller has it (e.g. the response of its create); its resourceVersion is where
    the first watch starts, so no list is needed. ``watch_fn=None`` polls. List failures (after the caller's
    retries) propagate as :class:`KubeApiError`."""
    what = what or f"{namespace}/{name}"
    deadline = None if timeout_s is None else clock() + timeout_s
    f = _Follower(list_fn, watch_fn, namespace, name, label_selector, None, what)
    if initial is not None:
        f.result.state, f.rv = f.ours(initial), _meta(initial).get("resourceVersion")
    else:
        f.result.state = f.relist()
    if until(f.result.state):
        f.result.done = True
        return f.result
    polling = watch_fn is None or not f.rv
    expiries = failures = 0

    def left() -> float | None:
        return None if deadline is None else deadline - clock()

    def pause() -> None:
        remaining = left()
        sleep(poll_interval_s if remaining is None else max(0.0, min(poll_interval_s, remaining)))

    while True:
        remaining = left()
        if remaining is not None and remaining <= 0:
            f.result.polling = polling
            return f.result
        if polling:
            pause()
        else:
            window = watch_timeout_s if remaining is None else min(remaining, watch_timeout_s)
            started = clock()
            try:
                seen = f.watch(window, until)
            except KubeApiError as exc:
                expiries, failures, polling = _after_watch_error(exc, expiries, failures, max_expiries,
                                                                 max_watch_failures, what, poll_interval_s)
                if not polling and not exc.expired:
                    pause()
            else:
                if f.result.done:
                    return f.result
                expiries = 0
                if seen == 0 and clock() - started < min(1.0, window / 2):
                    failures += 1  # ended at once with nothing: do not spin on a server that closes watches
                    polling = failures >= max_watch_failures
                    if not polling:
                        pause()
                else:
                    failures = 0
                if not polling:
                    continue  # resume from the last resourceVersion seen; no list needed
        f.result.state = f.relist()
        if until(f.result.state):
            f.result.done = True
            f.result.polling = polling
            return f.result


def _after_watch_error(exc: KubeApiError, expiries: int, failures: int, max_expiries: int, max_failures: int,
                       what: str, poll_interval_s: float) -> tuple[int, int, bool]:
    """(expiries, failures, polling) after a failed watch: a 410 re-lists (up to *max_expiries* in a row); a watch
    the server refuses, or one that keeps failing, turns into polling."""
    if exc.expired and expiries < max_expiries:
        log.info("watch of %s expired (410); re-listing", what)
        return expiries + 1, failures, False
    failures += 1
    polling = exc.status in NOT_WATCHABLE or exc.expired or failures >= max_failures
    log.log(logging.WARNING if polling else logging.INFO, "watch of %s failed (%s)%s", what, exc,
            f"; polling every {poll_interval_s:g}s instead" if polling else "; watching again")
    return expiries, failures, polling


def list_watch(
    list_method: Callable[..., Any],
    *,
    call: Callable[..., Any],
    what: str,
    request_timeout_s: float = 30.0,
) -> tuple[ListFn, WatchFn]:
    """``(list_fn, watch_fn)`` for :func:`follow` from an official-client list method taking the namespace first
    (e.g. ``lambda ns, **kw: custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, **kw)``).

    *call* ``(op, fn, *args, **kwargs)`` makes one API call with the caller's retry policy; the list goes through
    it, each watch request is one plain request (:func:`follow` handles its failures)."""

    def list_fn(namespace: str, **kwargs: Any) -> Mapping[str, Any]:
        page = call(f"list {what}", list_method, namespace, **kwargs)
        if not isinstance(page, Mapping):  # a typed model (CoreV1Api): plain dicts, as the watch gives
            from kubernetes.client import ApiClient

            page = ApiClient().sanitize_for_serialization(page)
        return page

    def watch_fn(namespace: str, *, timeout_seconds: int, resource_version: str | None = None,
                 **kwargs: Any) -> Iterator[Mapping[str, Any]]:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        if resource_version:
            kwargs["resource_version"] = resource_version
        watcher = watch.Watch()
        op = f"watch {what}"
        try:
            for event in watcher.stream(list_method, namespace, timeout_seconds=timeout_seconds,
                                        _request_timeout=(request_timeout_s, timeout_seconds + request_timeout_s),
                                        **kwargs):
                yield {"type": event.get("type"), "object": event.get("raw_object") or event.get("object")}
        except ApiException as exc:
            raise to_api_error(exc, op) from None
        except connection_errors() as exc:
            raise to_api_error(exc, op) from None
        finally:
            watcher.stop()

    return list_fn, watch_fn
