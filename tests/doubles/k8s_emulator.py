"""A Kubernetes API server for tests: real HTTP(S) on 127.0.0.1, spoken to by the official ``kubernetes`` client.

Built on `kmock <https://github.com/nolar/kmock>`_ (its HTTP server, request recording, reaction DSL, API
discovery and object history). kmock 0.8's own stateful ``KubernetesEmulator`` does not fit the official client,
so :class:`ApiEmulator` extends ``kmock.KubernetesScaffold`` with its own state machine. What it adds or fixes:

* request parsing: kmock's path parser crashes on ``/api/v1/namespaces`` and reads ``/api/v1/namespaces/x`` as
  "namespace x" instead of "the Namespace x"; a k8s-aware parser corrects every request before dispatch;
* writes: server-set metadata (``uid``, ``resourceVersion``, ``creationTimestamp``, ``generation``), namespace
  existence, 409 AlreadyExists/Conflict, preconditions, finalizers and ``deletionTimestamp``, the ``status``
  subresource, merge/JSON patches, PUT, ``dryRun``; create answers ``201`` with the object;
* field selectors per kind as the API server accepts them (``tests.doubles.k8s_fields``) and RBAC for the tokens of
  registered identities (``tests.doubles.rbac``; :meth:`K8sServer.add_identity`, :meth:`K8sServer.apply`);
* reads: lists with ``kind: <Kind>List``, ``apiVersion``, ``metadata.resourceVersion``, label and field selectors,
  ``limit``/``continue`` paging; errors as ``Status`` objects with the API server's reasons and messages
  (unknown API groups answer a plain ``404 page not found`` like the real server);
* watches: JSON-lines streams that resume from a ``resourceVersion`` (events are replayed from a log), honour
  ``timeoutSeconds`` and selectors, and expire with ``410 Gone`` after :meth:`ApiEmulator.compact` or
  :meth:`ApiEmulator.expire_watches`;
* validation: custom resources against their CRD's schema (``tests.doubles.k8s_schemas``), built-ins with
  ``kubernetes-validate`` - an invalid object gets a ``422 Invalid`` as from a real server (stricter: unknown
  fields are rejected instead of pruned);
* fault injection on top of kmock's DSL (next N requests to a path: 5xx, 429 with ``Retry-After``, connection
  reset), bearer-token checks, a request log with response statuses;
* controllers running on the server's event loop (:class:`Controller`): :class:`SnapshotController` plays the
  CSI external-snapshotter, :class:`PvcBinder` the provisioner; subclass :class:`Controller` for more (MPI operator).

Everything runs in one background thread with its own asyncio loop (:class:`K8sServer`); tests talk to the state
through the thread-safe :class:`ObjectStore` (``k8s_objects`` fixture). Fixtures: ``k8s_server``,
``kubeconfig_path``, ``k8s_objects``, ``snapshot_controller``, ``pvc_binder``, ``k8s_tls``.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import concurrent.futures
import copy
import datetime as dt
import fnmatch
import functools
import ipaddress
import json
import re
import secrets
import socket
import ssl
import struct
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock
import pytest
import yaml

from tests.doubles import k8s_fields, rbac

SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
SNAPSHOT_API = f"{SNAPSHOT_GROUP}/v1"
DEFAULT_DRIVER = "csi.trident.netapp.io"
DEFAULT_STORAGE_CLASS = "azure-netapp-files"
DEFAULT_SNAPSHOT_CLASS = "csi-snapclass"
SNAPSHOT_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"

# --------------------------------------------------------------------------------------------------------------
# resource types and request paths


@dataclass(frozen=True)
class ResourceType:
    """One served resource (group/version/plural) and what the server needs to know about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()
    singular: str = ""
    short_names: tuple[str, ...] = ()
    crd: bool = False  # validated against a CRD schema

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group`` as in API error messages (``volumesnapshots.snapshot.storage.k8s.io``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @functools.cached_property
    def ref(self) -> kmock.resource:
        """kmock's resource reference (the key of kmock's object store and discovery)."""
        return kmock.resource(self.group, self.version, self.plural)


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, frozenset({"status"}), "namespace", ("ns",)),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, frozenset({"status"}),
                 "persistentvolumeclaim", ("pvc",)),
    ResourceType("", "v1", "persistentvolumes", "PersistentVolume", False, frozenset({"status"}),
                 "persistentvolume", ("pv",)),
    ResourceType("", "v1", "pods", "Pod", True, frozenset({"status", "log"}), "pod", ("po",)),
    ResourceType("", "v1", "services", "Service", True, frozenset({"status"}), "service", ("svc",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, frozenset(), "configmap", ("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True, frozenset(), "secret"),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, frozenset(), "serviceaccount", ("sa",)),
    ResourceType("", "v1", "events", "Event", True, frozenset(), "event", ("ev",)),
    ResourceType("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, frozenset(), "storageclass",
                 ("sc",)),
    ResourceType("batch", "v1", "jobs", "Job", True, frozenset({"status"}), "job"),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
                 frozenset({"status"}), "customresourcedefinition", ("crd", "crds")),
    # RBAC objects: what tests.doubles.rbac authorises identities' requests against
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True, frozenset(), "role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, frozenset(), "rolebinding"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, frozenset(), "clusterrole"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, frozenset(),
                 "clusterrolebinding"),
)

_VALIDATED_BUILTINS = {"PersistentVolumeClaim", "PersistentVolume", "Pod", "Service", "ConfigMap", "Job",
                       "StorageClass", "Namespace"}


@dataclass(frozen=True)
class ApiPath:
    """A parsed resource URL: ``/api/v1/namespaces/ns/pods/name/status`` and friends."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> ApiPath | None:
    """Parse a resource path; ``None`` for discovery and non-API paths."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    elif rest[0] == "namespaces" and len(rest) <= 2:
        # the Namespace collection or one Namespace (or its subresource)
        return ApiPath(group, version, "namespaces", None, rest[1] if len(rest) > 1 else None)
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    if namespace is None and plural == "namespaces" and name is not None:
        return ApiPath(group, version, plural, None, name, sub)
    return ApiPath(group, version, plural, namespace, name, sub)


# --------------------------------------------------------------------------------------------------------------
# selectors


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=", "notin"


_SET_REQ = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_REQ = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS_REQ = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


def parse_label_selector(text: str | None) -> list[_Requirement]:
    """Equality- and set-based label selectors; ``ValueError`` on anything else."""
    if not text or not text.strip():
        return []
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    reqs: list[_Requirement] = []
    for part in parts:
        if m := _SET_REQ.match(part):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(_Requirement(m.group(1), m.group(2), values))
        elif m := _EQ_REQ.match(part):
            reqs.append(_Requirement(m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
        elif m := _EXISTS_REQ.match(part):
            reqs.append(_Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise ValueError(f"unable to parse requirement: {part.strip()!r}")
    return reqs


def parse_field_selector(text: str | None, rtype: ResourceType | None = None) -> list[Any]:
    """The kind's field labels as a real server accepts them (``tests.doubles.k8s_fields``, cited there)."""
    if rtype is None:
        return k8s_fields.parse_field_selector(text)
    return k8s_fields.parse_field_selector(text, rtype.group, rtype.kind, custom=rtype.crd)


def _selected(obj: Mapping[str, Any], labels: list[_Requirement], fields: list[Any]) -> bool:
    obj_labels = (obj.get("metadata") or {}).get("labels") or {}
    if not all(req.matches(obj_labels) for req in labels):
        return False
    return k8s_fields.field_selected(obj, fields)


# --------------------------------------------------------------------------------------------------------------
# errors, events, request log


def _status(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = dict(details)
    return body


def api_error(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> Exception:
    """A ``kmock.KubernetesError`` rendered as the API server's ``Status`` object."""
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=dict(details or {}))


def _not_found(rtype: ResourceType, name: str) -> Exception:
    return api_error(404, "NotFound", f'{rtype.qualified} "{name}" not found',
                     {"name": name, "group": rtype.group, "kind": rtype.plural})


class PageNotFound(Exception):
    """An unknown API group/resource: the real server answers a plain-text ``404 page not found``."""


class _ConnectionResetByFault(Exception):
    """Raised after a fault aborted the connection; nothing is written back."""


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rtype: ResourceType
    namespace: str | None
    name: str
    object: dict[str, Any]


@dataclass
class RequestRecord:
    """One request as the server saw it: for counting API calls (``is_write``) in tests and benchmarks."""

    id: int
    method: str
    path: str
    query: dict[str, str]
    verb: str | None  # list, watch, get, create, patch, update, delete (None: discovery/other)
    plural: str | None
    namespace: str | None
    name: str | None
    status: int | None = None
    reset: bool = False
    fault: bool = False

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` deletes)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --------------------------------------------------------------------------------------------------------------
# the API server


@attrs.define(kw_only=True)
class ApiEmulator(kmock.KubernetesScaffold):
    """The stateful API server. Lives on one event loop; touch it only there (see :meth:`K8sServer.call`)."""

    crds_dir: Path | None = None
    token: str | None = None  # when set, requests need "Authorization: Bearer <token>"
    validate: bool = True
    max_watch_s: float = 300.0

    types: dict[tuple[str, str, str], ResourceType] = attrs.field(factory=dict, init=False)
    store: kmock.ObjectsArray = attrs.field(factory=kmock.ObjectsArray, init=False)
    events: list[WatchEvent] = attrs.field(factory=list, init=False)
    log: list[RequestRecord] = attrs.field(factory=list, init=False)
    unexpected_errors: list[BaseException] = attrs.field(factory=list, init=False)
    controllers: list[Controller] = attrs.field(factory=list, init=False)
    _log_by_id: dict[int, RequestRecord] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _compacted_rv: int = attrs.field(default=0, init=False)
    _watch_epoch: int = attrs.field(default=0, init=False)
    _changed: asyncio.Event | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    open_watches: int = attrs.field(default=0, init=False)
    identities: dict[str, rbac.Identity] = attrs.field(factory=dict, init=False)  # token -> RBAC-checked user

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # discovery endpoints + catch-all 404 from kmock
        self.fallback[re.compile(r"/api/v1/.+|/apis/[^/]+/[^/]+/.+")] << self._serve_resource
        for rtype in BUILTIN_TYPES:
            self.register_type(rtype)
        if self.crds_dir is not None:
            self._load_crds(Path(self.crds_dir))
        for ns in ("default", "kube-system"):
            self.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # ---- types ------------------------------------------------------------------------------------------------

    def register_type(self, rtype: ResourceType) -> ResourceType:
        """Serve a resource (and list it in discovery)."""
        self.types[(rtype.group, rtype.version, rtype.plural)] = rtype
        verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
        self.resources[rtype.ref] = kmock.ResourceInfo(
            kind=rtype.kind, namespaced=rtype.namespaced, singular=rtype.singular or rtype.kind.lower(),
            shortnames=set(rtype.short_names), verbs=verbs, subresources=set(rtype.subresources),
        )
        return rtype

    def _load_crds(self, crds_dir: Path) -> None:
        from tests.doubles.k8s_schemas import load_crds

        for crd in load_crds(crds_dir):
            spec = crd["spec"]
            names = spec["names"]
            for version in spec["versions"]:
                if not version.get("served", False):
                    continue
                self.register_type(ResourceType(
                    spec["group"], version["name"], names["plural"], names["kind"], spec["scope"] == "Namespaced",
                    frozenset((version.get("subresources") or {}).keys()), names.get("singular", ""),
                    tuple(names.get("shortNames") or ()), crd=True,
                ))
            established = copy.deepcopy(crd)
            established["status"] = {
                "acceptedNames": names, "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
                "conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                               {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"}],
            }
            self.create_object(established)

    def type_for(self, what: str, group: str | None = None) -> ResourceType:
        """Look a served type up by kind, plural, singular or short name (optionally within *group*)."""
        for rtype in self.types.values():
            if group is not None and rtype.group != group:
                continue
            if what in (rtype.kind, rtype.plural, rtype.singular) or what in rtype.short_names:
                return rtype
        raise KeyError(f"no served resource type {what!r}" + (f" in group {group!r}" if group else ""))

    def _type_of(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        for rtype in self.types.values():
            if rtype.group == group and rtype.version == version and rtype.kind == kind:
                return rtype
        raise KeyError(f"no served resource type {api_version}/{kind}")

    # ---- request entry point ----------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's entry point, with a k8s-aware path parser, auth, a request log and our error policy."""
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        record: RequestRecord | None = None
        try:
            request = await self._parse_request(raw_request)
            self._requests.append(request)
            record = self._record(request)
            try:
                identity = self._authenticate(request)
                if not identity.privileged and request.url.path == rbac.SSAR_PATH:
                    return await self._self_subject_access_review(request, identity)
                self._authorize(request, identity)
                response = await self._handle(request)
            except kmock._internal.rendering.StreamingError as exc:  # the stream already started
                raw_response = exc.args[0]
                raise exc.__cause__ or exc
            if record.status is None:
                record.status = response.status
            return response
        except _ConnectionResetByFault:
            return aiohttp.web.Response()  # the transport is gone; nothing reaches the client
        except Exception as exc:  # noqa: BLE001 - rendered as a Status, like a real server
            if record is not None and record.status is None:
                record.status = 404 if isinstance(exc, PageNotFound) else (
                    exc.status if isinstance(exc, kmock.KubernetesError) else 500)
            if not isinstance(exc, (kmock.KubernetesError, PageNotFound)):
                self.unexpected_errors.append(exc)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(exc)
            await self._stream_error(exc, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _parse_request(self, raw: aiohttp.web.BaseRequest) -> kmock.Request:
        try:
            request = await kmock.Request._parse(raw, id=len(self._requests))
        except ValueError:  # kmock's parse_path() cannot split e.g. "/api/v1/namespaces"
            body = await raw.read()
            try:
                data = json.loads(body) if body else None
            except ValueError:
                data = None
            request = kmock.Request(
                id=len(self._requests), raw_request=raw, url=raw.url, method=raw.method, params=dict(raw.query),
                headers=dict(raw.headers), cookies=dict(raw.cookies), body=body, text=body.decode("utf-8", "replace"),
                data=data,
            )
        route = parse_api_path(raw.path)
        if route is None:
            return request
        method = raw.method.upper()
        if method == "GET" and raw.query.get("watch") in ("true", "1"):
            action = kmock.action.WATCH
        elif method == "GET":
            action = kmock.action.LIST if route.name is None else kmock.action.FETCH
        else:
            action = {"POST": kmock.action.CREATE, "PATCH": kmock.action.UPDATE,
                      "DELETE": kmock.action.DELETE}.get(method)
        return attrs.evolve(
            request, resource=kmock.resource(route.group, route.version, route.plural), namespace=route.namespace,
            name=route.name, subresource=route.subresource, action=action,
        )

    def _record(self, request: kmock.Request) -> RequestRecord:
        route = parse_api_path(request.url.path)
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        verb = None
        if route is not None:
            if method == "GET":
                verb = "watch" if request.params.get("watch") in ("true", "1") else (
                    "list" if route.name is None else "get")
            else:
                verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        record = RequestRecord(
            id=request.id, method=method, path=request.url.path, query=dict(request.params), verb=verb,
            plural=route.plural if route else None, namespace=route.namespace if route else None,
            name=route.name if route else None,
        )
        self.log.append(record)
        self._log_by_id[request.id] = record
        return record

    def _authenticate(self, request: kmock.Request) -> rbac.Identity:
        """The emulator's own token is ``system:masters``; a token of :attr:`identities` is that user."""
        if self.token is None or request.url.path in ("/version", "/healthz", "/livez", "/readyz"):
            return rbac.ADMIN
        header = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            if secrets.compare_digest(value.strip(), self.token):
                return rbac.ADMIN
            if value.strip() in self.identities:
                return self.identities[value.strip()]
        raise api_error(401, "Unauthorized", "Unauthorized")

    def _authorize(self, request: kmock.Request, identity: rbac.Identity) -> None:
        """RBAC for resource requests (``tests.doubles.rbac``, cited there); a denial is the server's 403."""
        route = parse_api_path(request.url.path)
        if identity.privileged or route is None:
            return  # non-resource URLs: system:discovery / system:public-info-viewer allow them to everyone
        method = str(request.method.value if hasattr(request.method, "value") else request.method)
        attrs = rbac.request_attributes(method, route.group, route.plural, route.subresource, route.namespace,
                                        route.name, request.params)
        objects = [obj.raw for (ref, _ns, _n), obj in self.store.items()
                   if not obj.deleted and ref.group == rbac.RBAC_GROUP]
        if not rbac.allowed(objects, identity, attrs):
            message, details = rbac.forbidden_status(identity, attrs)
            raise api_error(403, "Forbidden", message, details)

    async def _self_subject_access_review(self, request: kmock.Request,
                                          identity: rbac.Identity) -> aiohttp.web.StreamResponse:
        """``SelfSubjectAccessReview`` for an RBAC-checked identity, answered from the stored RBAC objects
        (kubernetes/kubernetes ``pkg/registry/authorization/selfsubjectaccessreview/rest.go`` ``Create``: the
        request's user, the spec's ``resourceAttributes``; every authenticated user may create one by the bootstrap
        ``system:basic-user`` ClusterRole). Tokens of the emulator itself keep the tests' own reactions
        (``serve_access_reviews``)."""
        body = request.data if isinstance(request.data, Mapping) else {}
        spec = (body.get("spec") or {}).get("resourceAttributes")
        if str(request.method.value if hasattr(request.method, "value") else request.method).upper() != "POST" \
                or not isinstance(spec, Mapping):
            return await self._render_error(api_error(400, "BadRequest", "spec.resourceAttributes: Required value"))
        attrs = rbac.Attributes(spec.get("verb") or "", spec.get("group") or "", spec.get("resource") or "",
                                spec.get("subresource") or "", spec.get("namespace") or "", spec.get("name") or "")
        objects = [obj.raw for (ref, _ns, _n), obj in self.store.items()
                   if not obj.deleted and ref.group == rbac.RBAC_GROUP]
        answer = {**body, "status": {"allowed": rbac.allowed(objects, identity, attrs)}}
        return aiohttp.web.json_response(answer, status=201)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, PageNotFound) or (isinstance(exc, kmock.KubernetesEndpointNotFoundError)):
            return aiohttp.web.Response(status=404, text="404 page not found\n")
        if isinstance(exc, kmock.KubernetesError):
            body = _status(exc.status, exc.reason or "Failure", exc.message or "", exc.details or None)
            return aiohttp.web.json_response(body, status=exc.status)
        return aiohttp.web.json_response(_status(500, "InternalError", f"emulator bug: {exc!r}"), status=500)

    # ---- resource requests ------------------------------------------------------------------------------------

    def _serve_resource(self, request: kmock.Request) -> Any:
        route = parse_api_path(request.url.path)
        assert route is not None
        rtype = self.types.get((route.group, route.version, route.plural))
        if rtype is None:
            raise PageNotFound(request.url.path)
        if route.namespace is not None and not rtype.namespaced:
            raise PageNotFound(request.url.path)
        if route.subresource and route.subresource not in rtype.subresources:
            raise PageNotFound(request.url.path)
        params = request.params
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        ns = route.namespace
        dry_run = params.get("dryRun") == "All"
        if method == "GET" and params.get("watch") in ("true", "1"):
            if route.name is not None:
                raise api_error(400, "BadRequest", "watch of a single object: use a list watch with a fieldSelector")
            try:
                labels = parse_label_selector(params.get("labelSelector"))
                fields = parse_field_selector(params.get("fieldSelector"), rtype)
            except ValueError as exc:
                raise api_error(400, "BadRequest", str(exc)) from None
            return kmock.Response(status=200, payload=self._watch(request, rtype, ns, labels, fields))
        if method == "GET" and route.name is None:
            return kmock.Response(status=200, payload=self._list_response(rtype, ns, params))
        if method == "GET":
            obj = self.get_object(rtype, ns, route.name)
            if obj is None:
                raise _not_found(rtype, route.name)
            return kmock.Response(status=200, payload=obj)
        body = request.data
        if method == "POST" and route.name is None:
            if not isinstance(body, Mapping):
                raise api_error(400, "BadRequest", "the request body must be a JSON object")
            obj = self.create_object(body, namespace=ns, rtype=rtype, validate=self.validate, dry_run=dry_run,
                                     from_api=True)
            return kmock.Response(status=201, payload=obj)
        if route.name is None:
            raise api_error(405, "MethodNotAllowed", f"the server does not allow this method on {rtype.qualified}")
        if method == "DELETE":
            options = body if isinstance(body, Mapping) else {}
            obj = self.delete_object(rtype, ns, route.name, preconditions=options.get("preconditions"),
                                     dry_run=dry_run)
            return kmock.Response(status=200, payload=obj)
        if method == "PUT":
            if not isinstance(body, Mapping):
                raise api_error(400, "BadRequest", "the request body must be a JSON object")
            obj = self.update_object(rtype, ns, route.name, replace=body, subresource=route.subresource,
                                     validate=self.validate, dry_run=dry_run, from_api=True)
            return kmock.Response(status=200, payload=obj)
        if method == "PATCH":
            ctype = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
            ctype = ctype.split(";")[0].strip()
            if ctype == "application/json-patch+json":
                if not isinstance(body, list):
                    raise api_error(400, "BadRequest", "a JSON patch must be a list of operations")
                patch_kind = "json"
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(body, Mapping):
                    raise api_error(400, "BadRequest", "a merge patch must be a JSON object")
                patch_kind = "merge"
            else:
                raise api_error(415, "UnsupportedMediaType", f"the emulator does not support patches of {ctype!r}")
            obj = self.update_object(rtype, ns, route.name, patch=body, patch_kind=patch_kind,
                                     subresource=route.subresource, validate=self.validate, dry_run=dry_run,
                                     from_api=True)
            return kmock.Response(status=200, payload=obj)
        raise api_error(405, "MethodNotAllowed", f"method {method} is not allowed")

    # ---- state (synchronous; runs on the loop) ----------------------------------------------------------------

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> tuple[Any, str | None, str]:
        return (rtype.ref, namespace if rtype.namespaced else None, name)

    def _current(self, rtype: ResourceType, namespace: str | None, name: str) -> kmock.Object | None:
        key = self._key(rtype, namespace, name)
        if key not in self.store:
            return None
        obj = self.store[key]
        return None if obj.deleted else obj

    def get_object(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self._current(rtype, namespace, name)
        return copy.deepcopy(obj.raw) if obj is not None else None

    def list_objects(
        self, rtype: ResourceType, namespace: str | None = None, label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        labels, fields = parse_label_selector(label_selector), parse_field_selector(field_selector, rtype)
        out = []
        for (ref, ns, _name), obj in self.store.items():
            if ref != rtype.ref or obj.deleted:
                continue
            if namespace is not None and rtype.namespaced and ns != namespace:
                continue
            raw = obj.raw
            if _selected(raw, labels, fields):
                out.append(copy.deepcopy(raw))
        out.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return out

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def create_object(
        self, body: Mapping[str, Any], *, namespace: str | None = None, rtype: ResourceType | None = None,
        validate: bool = False, dry_run: bool = False, from_api: bool = False,
    ) -> dict[str, Any]:
        """Create like the API server: defaults, checks, server-set metadata, an ADDED event."""
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        if rtype is None:
            try:
                rtype = self._type_of(obj.get("apiVersion", ""), obj.get("kind", ""))
            except KeyError as exc:
                raise api_error(400, "BadRequest", str(exc)) from None
        if obj.get("apiVersion", rtype.api_version) != rtype.api_version or obj.get("kind", rtype.kind) != rtype.kind:
            raise api_error(400, "BadRequest", f"the body is a {obj.get('apiVersion')}/{obj.get('kind')}, "
                                               f"not a {rtype.api_version}/{rtype.kind}")
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        if rtype.namespaced:
            ns = namespace or meta.get("namespace")
            if namespace and meta.get("namespace") and meta["namespace"] != namespace:
                raise api_error(400, "BadRequest", "the namespace of the provided object does not match the "
                                                   "namespace sent on the request")
            if not ns:
                raise api_error(400, "BadRequest", "a namespace is required")
            meta["namespace"] = ns
            ns_type = self.types[("", "v1", "namespaces")]
            if self._current(ns_type, None, ns) is None:
                raise api_error(404, "NotFound", f'namespaces "{ns}" not found',
                                {"name": ns, "kind": "namespaces"})
        else:
            ns = None
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name")
        what = f'{rtype.kind}{"." + rtype.group if rtype.group else ""} "{name}"'
        pattern = _DNS1123_LABEL if rtype.plural == "namespaces" else _DNS1123_SUBDOMAIN
        if not name:
            raise api_error(422, "Invalid", f"{what} is invalid: metadata.name: Required value: name or "
                                            "generateName is required",
                            {"kind": rtype.kind, "group": rtype.group})
        if len(name) > 253 or not pattern.match(name):
            raise api_error(422, "Invalid", f'{what} is invalid: metadata.name: Invalid value: "{name}": a '
                                            "lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                                            "characters, '-' or '.', and must start and end with an alphanumeric "
                                            "character", {"name": name, "kind": rtype.kind, "group": rtype.group})
        if self._current(rtype, ns, name) is not None:
            raise api_error(409, "AlreadyExists", f'{rtype.qualified} "{name}" already exists',
                            {"name": name, "group": rtype.group, "kind": rtype.plural})
        if from_api and "status" in rtype.subresources:
            obj.pop("status", None)  # the status subresource owns status
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(key, None)
        self._default(rtype, obj)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        if validate:
            self._validate(rtype, obj, None)
        if dry_run:
            meta["resourceVersion"] = str(self._rv)
            return obj
        meta["resourceVersion"] = self._next_rv()
        key = self._key(rtype, ns, name)
        if key in self.store:
            self.store[key].create(obj)
        else:
            self.store[key] = obj
        self._emit("ADDED", rtype, obj)
        return copy.deepcopy(obj)

    def update_object(
        self, rtype: ResourceType, namespace: str | None, name: str, *, patch: Any = None,
        patch_kind: str = "merge", replace: Mapping[str, Any] | None = None, subresource: str | None = None,
        validate: bool = False, dry_run: bool = False, from_api: bool = False,
    ) -> dict[str, Any]:
        """PATCH/PUT like the API server; the status subresource sees only ``status``, the main resource
        everything but (for types with a status subresource) ``status``. Internal callers may change both."""
        current = self._current(rtype, namespace, name)
        if current is None:
            raise _not_found(rtype, name)
        old = copy.deepcopy(current.raw)
        if replace is not None:
            new = copy.deepcopy(dict(replace))
            want_rv = (new.get("metadata") or {}).get("resourceVersion")
        elif patch_kind == "json":
            import jsonpatch

            try:
                new = jsonpatch.apply_patch(old, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise api_error(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from None
            want_rv = None
        else:
            new = _merge_patch(old, patch)
            want_rv = ((patch or {}).get("metadata") or {}).get("resourceVersion")
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise api_error(409, "Conflict", f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the '
                                             "object has been modified; please apply your changes to the latest "
                                             "version and try again", {"name": name, "group": rtype.group,
                                                                        "kind": rtype.plural})
        if from_api and "status" in rtype.subresources:
            if subresource == "status":
                new = {**old, "status": new.get("status")} if new.get("status") is not None else {
                    k: v for k, v in old.items() if k != "status"}
            else:
                new = {k: v for k, v in new.items() if k != "status"}
                if "status" in old:
                    new["status"] = old["status"]
        new.setdefault("metadata", {})
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        meta = new["metadata"]
        for key in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["generation"] = old["metadata"].get("generation", 1) + (
            1 if new.get("spec") != old.get("spec") else 0)
        if new == {**old, "metadata": {**old["metadata"], "generation": meta["generation"]}}:
            return old  # a no-op write does not bump resourceVersion
        if validate:
            self._validate(rtype, new, old)
        if dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        current.history.append(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rtype, namespace, name)
        self._emit("MODIFIED", rtype, new)
        return copy.deepcopy(new)

    def delete_object(
        self, rtype: ResourceType, namespace: str | None, name: str, *,
        preconditions: Mapping[str, Any] | None = None, dry_run: bool = False,
    ) -> dict[str, Any]:
        current = self._current(rtype, namespace, name)
        if current is None:
            raise _not_found(rtype, name)
        meta = current.raw["metadata"]
        for field_name, key in (("uid", "uid"), ("resourceVersion", "resourceVersion")):
            wanted = (preconditions or {}).get(field_name)
            if wanted and wanted != meta.get(key):
                raise api_error(409, "Conflict", f"Precondition failed: {field_name.upper() if key == 'uid' else key}"
                                                 f" in precondition: {wanted}, {key} in object meta: {meta.get(key)}",
                                {"name": name, "group": rtype.group, "kind": rtype.plural})
        if dry_run:
            return copy.deepcopy(current.raw)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(current.raw)
            new = copy.deepcopy(current.raw)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["resourceVersion"] = self._next_rv()
            current.history.append(new)
            self._emit("MODIFIED", rtype, new)
            return copy.deepcopy(new)
        if rtype.plural == "namespaces":
            for other, ns, other_name in [k for k, o in self.store.items() if not o.deleted]:
                if ns == name:
                    other_type = next(t for t in self.types.values() if t.ref == other)
                    self._remove(other_type, ns, other_name)
        return self._remove(rtype, namespace, name)

    def _remove(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        current = self._current(rtype, namespace, name)
        assert current is not None
        last = copy.deepcopy(current.raw)
        last["metadata"]["resourceVersion"] = self._next_rv()
        current.delete()
        self._emit("DELETED", rtype, last)
        return last

    def _default(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        if rtype.kind == "PersistentVolumeClaim":
            obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        elif rtype.kind == "Namespace":
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")

    def _validate(self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        from tests.doubles.k8s_schemas import K8sSchemaError, validate_builtin, validate_crd_object

        try:
            if rtype.crd and self.crds_dir is not None:
                validate_crd_object(obj, self.crds_dir, old=old)
            elif rtype.kind in _VALIDATED_BUILTINS:
                validate_builtin(obj)
        except K8sSchemaError as exc:
            name = obj["metadata"].get("name")
            what = f'{rtype.kind}{"." + rtype.group if rtype.group else ""} "{name}"'
            raise api_error(422, "Invalid", f"{what} is invalid: " + "; ".join(exc.problems),
                            {"name": name, "group": rtype.group, "kind": rtype.kind,
                             "causes": [{"message": p} for p in exc.problems]}) from None

    # ---- events and watches -----------------------------------------------------------------------------------

    def _emit(self, etype: str, rtype: ResourceType, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        event = WatchEvent(int(meta["resourceVersion"]), etype, rtype, meta.get("namespace"), meta["name"],
                           copy.deepcopy(obj))
        self.events.append(event)
        self._wake()
        for controller in list(self.controllers):
            if rtype.plural in controller.watches:
                try:
                    controller.on_event(event)
                except Exception as exc:  # noqa: BLE001 - a broken simulator must fail the test, not the server
                    self.unexpected_errors.append(exc)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self._changed = asyncio.Event()

    def compact(self) -> int:
        """Forget the event history: a watch from any older resourceVersion now gets ``410 Gone``."""
        self._compacted_rv = self._rv
        return self._rv

    def expire_watches(self) -> None:
        """End every open watch with a ``410 Expired`` ERROR event and compact the history."""
        self.compact()
        self._watch_epoch += 1
        self._wake()

    def close(self) -> None:
        self._closing = True
        self._wake()

    def _list_response(self, rtype: ResourceType, ns: str | None, params: Mapping[str, str]) -> dict[str, Any]:
        try:
            items = self.list_objects(rtype, ns, params.get("labelSelector"), params.get("fieldSelector"))
        except ValueError as exc:
            raise api_error(400, "BadRequest", str(exc)) from None
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if params.get("continue"):
            try:
                after = json.loads(base64.urlsafe_b64decode(params["continue"].encode()))
            except ValueError:
                raise api_error(400, "BadRequest", "invalid continue token") from None
            items = [i for i in items if [i["metadata"].get("namespace") or "", i["metadata"]["name"]] > after]
        limit = int(params.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            token = json.dumps([last.get("namespace") or "", last["name"]]).encode()
            meta["continue"] = base64.urlsafe_b64encode(token).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {"apiVersion": rtype.api_version, "kind": f"{rtype.kind}List", "metadata": meta, "items": items}

    async def _watch(
        self, request: kmock.Request, rtype: ResourceType, ns: str | None, labels: list[_Requirement],
        fields: list[Any],
    ) -> Any:
        params = request.params
        timeout = min(float(params.get("timeoutSeconds") or self.max_watch_s), self.max_watch_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        since_text = params.get("resourceVersion") or ""
        record = self._log_by_id.get(request.id)
        if record is not None:
            record.status = 200
        self.open_watches += 1
        try:
            async for item in self._watch_events(request, rtype, ns, labels, fields, deadline, since_text):
                yield item
        finally:
            self.open_watches -= 1

    async def _watch_events(
        self, request: kmock.Request, rtype: ResourceType, ns: str | None, labels: list[_Requirement],
        fields: list[Any], deadline: float, since_text: str,
    ) -> Any:
        loop = asyncio.get_running_loop()
        yield b""  # send the headers now
        if since_text not in ("", "0"):
            since = int(since_text)
            if since < self._compacted_rv:
                yield {"type": "ERROR", "object": _status(410, "Expired",
                                                          f"too old resource version: {since} ({self._rv})")}
                return
            index = bisect.bisect_right([e.rv for e in self.events], since)
        else:
            index = len(self.events)
            for obj in self.list_objects(rtype, ns):
                if _selected(obj, labels, fields):
                    yield {"type": "ADDED", "object": obj}
        epoch = self._watch_epoch
        raw = request._raw_request
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if event.rtype != rtype or (ns is not None and rtype.namespaced and event.namespace != ns):
                    continue
                if _selected(event.object, labels, fields):
                    yield {"type": event.type, "object": event.object}
            if self._watch_epoch != epoch:
                yield {"type": "ERROR", "object": _status(410, "Expired", "too old resource version: "
                                                                          f"{since_text or 0} ({self._rv})")}
                return
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                return
            if raw is not None and (raw.transport is None or raw.transport.is_closing()):
                return
            changed = self._changed
            assert changed is not None
            try:
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, 0.25))
            except TimeoutError:
                pass

    # ---- faults -------------------------------------------------------------------------------------------------

    def _fault_view(self, path: str | re.Pattern[str], method: str | None, verb: str | None) -> Any:
        criteria: list[Any] = [path]  # kmock: a str starting with "/" is a glob on the path, a Pattern a regex
        if method:
            criteria.append(kmock.method(method.upper()))
        if verb:
            criteria.append({"watch": kmock.action.WATCH, "list": kmock.action.LIST, "get": kmock.action.FETCH,
                             "create": kmock.action.CREATE, "patch": kmock.action.UPDATE,
                             "delete": kmock.action.DELETE}[verb])
        view = self[tuple(criteria)] if len(criteria) > 1 else self[criteria[0]]
        already = len(view)
        return view, already

    def fail_next(
        self, path: str | re.Pattern[str], *, count: int = 1, status: int = 500, method: str | None = None,
        verb: str | None = None, retry_after: float | None = None, message: str | None = None,
    ) -> None:
        """The next *count* matching requests get *status* (with ``Retry-After`` if given); no state changes."""
        view, already = self._fault_view(path, method, verb)
        reason = {429: "TooManyRequests", 500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable",
                  504: "Timeout"}.get(status, "Failure")
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        body = _status(status, reason, message or f"injected fault: HTTP {status}")

        def respond(request: kmock.Request) -> kmock.Response:
            record = self._log_by_id.get(request.id)
            if record is not None:
                record.fault = True
            return kmock.Response(status=status, headers=headers, payload=body)

        view[already:already + count] << respond

    def reset_next(self, path: str | re.Pattern[str], *, count: int = 1, method: str | None = None,
                   verb: str | None = None, after_apply: bool = False) -> None:
        """The next *count* matching requests have their TCP connection reset (RST) instead of a response;
        with ``after_apply`` the request takes effect first (a write whose response is lost)."""
        view, already = self._fault_view(path, method, verb)
        view[already:already + count] << functools.partial(self._reset_connection, after_apply=after_apply)

    def _reset_connection(self, request: kmock.Request, *, after_apply: bool = False) -> Any:
        if after_apply:
            try:
                self._serve_resource(request)
            except (kmock.KubernetesError, PageNotFound):
                pass
        record = self._log_by_id.get(request.id)
        if record is not None:
            record.fault = record.reset = True
            record.status = 0
        transport = request._raw_request.transport if request._raw_request is not None else None
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        raise _ConnectionResetByFault()


# --------------------------------------------------------------------------------------------------------------
# controllers


class Controller:
    """A simulated controller on the emulator's loop, fed every event of the plurals in ``watches``.

    ``on_event`` runs synchronously inside the write that caused the event: it must not write itself, only
    schedule work with :meth:`later` (the work then runs on the loop and may read and write the store).
    """

    watches: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.api: ApiEmulator | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def attach(self, api: ApiEmulator, loop: asyncio.AbstractEventLoop) -> None:
        self.api, self.loop = api, loop
        api.controllers.append(self)

    def on_event(self, event: WatchEvent) -> None:  # pragma: no cover - subclasses override
        pass

    def later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        assert self.loop is not None

        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - surfaced by K8sServer.assert_healthy()
                assert self.api is not None
                self.api.unexpected_errors.append(exc)

        self.loop.call_later(max(0.0, delay), run)

    # helpers for subclasses (on the loop)
    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        assert self.api is not None
        return self.api.get_object(self.api.type_for(kind), namespace, name)

    def patch(self, kind: str, namespace: str | None, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge-patch spec/metadata/status at once (a controller writes both); ``None`` if the object is gone."""
        assert self.api is not None
        rtype = self.api.type_for(kind)
        if self.api.get_object(rtype, namespace, name) is None:
            return None
        return self.api.update_object(rtype, namespace, name, patch=patch)


@dataclass
class SnapshotBehaviour:
    """How :class:`SnapshotController` treats a VolumeSnapshot.

    ``ready_after``: seconds from binding until ``readyToUse`` (``None``: never). ``error``: the message of a failed
    CreateSnapshot call, put into the content's and the snapshot's ``status.error`` ``error_after`` seconds after
    binding; a list gives the message of each attempt in turn (the last one repeats). Like the real controller the
    double then *retries*, ``retry_interval`` seconds later, doubling per failure up to ``retry_max`` (the
    ``--retry-interval-start``/``--retry-interval-max`` rate limiter, scaled down): with ``recover_after=None`` every
    retry fails (a persistent error), with a number the first retry at least that many seconds after the first error
    succeeds, clears ``status.error`` and sets ``readyToUse`` (a transient error). ``bind``: create and bind a
    VolumeSnapshotContent. ``restore_size``: quantity reported (default: the source PVC's capacity).
    ``delete_after``: seconds before a deleted snapshot's finalizer is removed.
    """

    ready_after: float | None = 0.05
    error: str | list[str] | tuple[str, ...] | None = None
    error_after: float = 0.02
    recover_after: float | None = None
    retry_interval: float = 0.05
    retry_max: float = 0.4
    bind: bool = True
    restore_size: str | None = None
    delete_after: float = 0.02

    def error_at(self, attempt: int) -> str:
        """The message of failed attempt *attempt* (0 = the first)."""
        assert self.error is not None
        messages = [self.error] if isinstance(self.error, str) else list(self.error)
        return messages[min(attempt, len(messages) - 1)]

    def backoff(self, attempt: int) -> float:
        """Seconds before retry *attempt* + 1: client-go's ItemExponentialFailureRateLimiter (start * 2^failures,
        capped), which both controllers use: external-snapshotter cmd/snapshot-controller/main.go:83-84,281-284 and
        cmd/csi-snapshotter/main.go:86-87,309-313 (defaults 1s doubling to 5m)."""
        return min(self.retry_interval * (2 ** attempt), self.retry_max)


class SnapshotController(Controller):
    """Plays the CSI external-snapshotter (common snapshot-controller + csi-snapshotter sidecar), as read in
    kubernetes-csi/external-snapshotter (commit afb2f0d, Aug 2026; paths below are in that repository):

    * the class (named, or the one default) and the source PVC are checked on every sync; a problem goes into the
      snapshot's ``status.error`` with a Warning event, and the sync is *retried* with backoff - every sync error
      requeues the key (pkg/common-controller/snapshot_controller_base.go:363-373, ``snapshotWorker``;
      ``syncSnapshotByKey`` returns the class error, :391-402) - so a class created or a PVC bound later lets the
      snapshot proceed, and its error is then cleared (pkg/common-controller/snapshot_controller.go:1303-1306);
    * binds a ``VolumeSnapshotContent`` ``snapcontent-<uid>``; CreateSnapshot then succeeds after ``ready_after``
      (``readyToUse``/``restoreSize``/``creationTime`` on both objects), never, or fails with ``error``;
    * a failed CreateSnapshot sets the content's ``status.error`` (pkg/sidecar-controller/snapshot_controller.go:
      124-131 and ``updateContentErrorStatusWithEvent`` :166-170, which skips a message already set) and is retried
      - the sidecar requeues on every error, a "final" gRPC code included (``isCSIFinalError`` :725-745 only decides
      whether the being-created annotation is removed; pkg/sidecar-controller/snapshot_controller_base.go:250-265);
      the common controller copies the content's error onto the snapshot (snapshot_controller.go:1229-1232,
      1303-1306): ``status.error`` is the *last observed* error (client/apis/volumesnapshot/v1/types.go:184-191);
    * a later success sets ``readyToUse`` and clears the error on the content
      (pkg/sidecar-controller/snapshot_controller.go:493-498) and on the snapshot (snapshot_controller.go:1292-1298);
    * on deletion removes its finalizer and deletes the content (deletionPolicy Delete).

    Not modelled: the ``volumesnapshot-being-created`` annotation, ListSnapshots/GetSnapshotStatus polling of a cut
    but not yet ready snapshot, events on the content, metrics.
    """

    watches = ("volumesnapshots", "volumesnapshotclasses")

    def __init__(self, default: SnapshotBehaviour | None = None) -> None:
        super().__init__()
        self.default = default or SnapshotBehaviour()
        self.behaviours: list[tuple[str, SnapshotBehaviour]] = []

    def behave(self, pattern: str, **kwargs: Any) -> SnapshotBehaviour:
        """Behaviour for snapshots whose ``name`` or ``namespace/name`` matches *pattern* (fnmatch);
        later rules win."""
        behaviour = SnapshotBehaviour(**kwargs)
        self.behaviours.insert(0, (pattern, behaviour))
        return behaviour

    def behaviour_for(self, namespace: str, name: str) -> SnapshotBehaviour:
        for pattern, behaviour in self.behaviours:
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(f"{namespace}/{name}", pattern):
                return behaviour
        return self.default

    def on_event(self, event: WatchEvent) -> None:
        meta = event.object["metadata"]
        if event.rtype.plural == "volumesnapshotclasses":
            if event.type == "DELETED":
                self.later(0.0, self._class_deleted, meta["name"])
            return
        if event.type == "ADDED" and not (event.object.get("status") or {}).get("boundVolumeSnapshotContentName"):
            self.later(0.0, self._bind, event.namespace, event.name, meta["uid"], 0)
        elif event.type == "MODIFIED" and meta.get("deletionTimestamp") and SNAPSHOT_FINALIZER in (
                meta.get("finalizers") or []):
            behaviour = self.behaviour_for(event.namespace or "", event.name)
            self.later(behaviour.delete_after, self._finalize, event.namespace, event.name, meta["uid"])

    def _class_deleted(self, class_name: str) -> None:
        """Every sync of a snapshot, a ready one too, starts with checkAndUpdateSnapshotClass
        (pkg/common-controller/snapshot_controller_base.go:391), whose error leaves ``readyToUse`` as it is (:509):
        a ready snapshot whose class is deleted keeps ``readyToUse: true`` and gets an error (the real controller
        sees it at its next sync or resync; the double at once). Nothing clears it again (``syncReadySnapshot``
        does not touch the error)."""
        assert self.api is not None
        for snap in self.api.list_objects(self.api.type_for("VolumeSnapshot")):
            if (snap.get("spec") or {}).get("volumeSnapshotClassName") == class_name and not snap["metadata"].get(
                    "deletionTimestamp"):
                self._fail(snap, "GetSnapshotClassFailed", f"Failed to get snapshot class with error "
                           f'volumesnapshotclass.snapshot.storage.k8s.io "{class_name}" not found',
                           set_ready_false=False)

    def _live(self, ns: str, name: str, uid: str) -> dict[str, Any] | None:
        """The snapshot, if it is still this one and not being deleted (a retry of a gone object stops)."""
        snap = self.get("VolumeSnapshot", ns, name)
        if snap is None or snap["metadata"]["uid"] != uid or snap["metadata"].get("deletionTimestamp"):
            return None
        return snap

    def _fail(self, snap: dict[str, Any], reason: str, message: str, *, set_ready_false: bool,
              error: dict[str, Any] | None = None) -> None:
        """``updateSnapshotErrorStatusWithEvent`` (pkg/common-controller/snapshot_controller.go:876-916): nothing
        when the same message is already set (:879-882), else the error (with its time), ``readyToUse: false`` only
        where the caller asks (class errors do not: snapshot_controller_base.go:509,518), and a Warning event."""
        ns, name = snap["metadata"]["namespace"], snap["metadata"]["name"]
        current = (snap.get("status") or {}).get("error") or {}
        if current.get("message") == message:
            return
        status: dict[str, Any] = {"error": error or {"message": message, "time": _now()}}
        if set_ready_false:
            status["readyToUse"] = False
        self.patch("VolumeSnapshot", ns, name, {"status": status})
        _warning_event(self.api, snap, reason, message)

    def _retry_bind(self, snap: dict[str, Any], attempt: int, reason: str, message: str, *,
                    set_ready_false: bool) -> None:
        behaviour = self.behaviour_for(snap["metadata"]["namespace"], snap["metadata"]["name"])
        self._fail(snap, reason, message, set_ready_false=set_ready_false)
        # every sync error requeues the snapshot, rate limited (snapshot_controller_base.go:363-373)
        self.later(behaviour.backoff(attempt), self._bind, snap["metadata"]["namespace"], snap["metadata"]["name"],
                   snap["metadata"]["uid"], attempt + 1)

    def _snapshot_class(self, snap: dict[str, Any], attempt: int) -> dict[str, Any] | None:
        """``checkAndUpdateSnapshotClass`` (pkg/common-controller/snapshot_controller_base.go:499-528)."""
        assert self.api is not None
        class_name = (snap.get("spec") or {}).get("volumeSnapshotClassName")
        classes = self.api.list_objects(self.api.type_for("VolumeSnapshotClass"))
        if class_name:
            found = next((c for c in classes if c["metadata"]["name"] == class_name), None)
            if found is None:
                self._retry_bind(snap, attempt, "GetSnapshotClassFailed",
                                 f'Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io '
                                 f'"{class_name}" not found', set_ready_false=False)
            return found
        # SetDefaultSnapshotClass (pkg/common-controller/snapshot_controller.go:1466-1506): the one default class
        # of the source volume's CSI driver (no PV objects here: the driver is the PVC's provisioner)
        driver = self._pvc_driver(snap)
        defaults = [c for c in classes if (c["metadata"].get("annotations") or {}).get(
            "snapshot.storage.kubernetes.io/is-default-class") == "true" and c.get("driver") == driver]
        if len(defaults) != 1:
            problem = f"{len(defaults)} default snapshot classes were found" if defaults else (
                "cannot find default snapshot class")
            self._retry_bind(snap, attempt, "SetDefaultSnapshotClassFailed",
                             f"Failed to set default snapshot class with error {problem}", set_ready_false=False)
            return None
        return defaults[0]

    def _pvc_driver(self, snap: dict[str, Any]) -> str:
        pvc_name = ((snap.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName") or ""
        pvc = self.get("PersistentVolumeClaim", snap["metadata"]["namespace"], pvc_name) or {}
        annotations = (pvc.get("metadata") or {}).get("annotations") or {}
        driver = annotations.get("volume.kubernetes.io/storage-provisioner")
        class_name = (pvc.get("spec") or {}).get("storageClassName")
        storage_class = self.get("StorageClass", None, class_name) if class_name and not driver else None
        return driver or (storage_class or {}).get("provisioner") or DEFAULT_DRIVER

    def _source_pvc(self, snap: dict[str, Any], pvc_name: str, attempt: int) -> dict[str, Any] | None:
        """The PVC checks of ``createSnapshotContent``; their errors are "SnapshotContentCreationFailed" with
        ``readyToUse: false`` (pkg/common-controller/snapshot_controller.go:593-597)."""
        ns, name = snap["metadata"]["namespace"], snap["metadata"]["name"]
        pvc = self.get("PersistentVolumeClaim", ns, pvc_name)
        if pvc is None:
            self._retry_bind(snap, attempt, "SnapshotContentCreationFailed",
                             f'Failed to create snapshot content with error snapshot controller failed to update '
                             f'{ns}/{name} on API server: cannot get claim from snapshot: persistentvolumeclaim '
                             f'"{pvc_name}" not found', set_ready_false=True)
            return None
        if (pvc.get("status") or {}).get("phase") != "Bound":
            self._retry_bind(snap, attempt, "SnapshotContentCreationFailed",
                             f"Failed to create snapshot content with error the PVC {pvc_name} is not yet bound to a "
                             "PV, will not attempt to take a snapshot", set_ready_false=True)
            return None
        return pvc

    def _bind(self, ns: str, name: str, uid: str, attempt: int) -> None:
        snap = self._live(ns, name, uid)
        if snap is None:
            return
        behaviour = self.behaviour_for(ns, name)
        pvc_name = ((snap.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName")
        if not pvc_name:
            return  # pre-provisioned snapshots are not simulated
        snap_class = self._snapshot_class(snap, attempt)
        pvc = self._source_pvc(snap, pvc_name, attempt) if snap_class is not None else None
        if snap_class is None or pvc is None or not behaviour.bind:
            return
        assert self.api is not None
        content_name = f"snapcontent-{uid}"
        volume_handle = (pvc.get("spec") or {}).get("volumeName") or f"pvc-{pvc['metadata']['uid']}"
        size = behaviour.restore_size or ((pvc.get("status") or {}).get("capacity") or {}).get("storage") or (
            ((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage") or "1Gi"
        content_type = self.api.type_for("VolumeSnapshotContent")
        if self.api.get_object(content_type, None, content_name) is None:
            self.api.create_object({
                "apiVersion": SNAPSHOT_API, "kind": "VolumeSnapshotContent",
                "metadata": {"name": content_name},
                "spec": {
                    "deletionPolicy": snap_class.get("deletionPolicy", "Delete"),
                    "driver": snap_class.get("driver", DEFAULT_DRIVER),
                    "source": {"volumeHandle": volume_handle},
                    "sourceVolumeMode": (pvc.get("spec") or {}).get("volumeMode", "Filesystem"),
                    "volumeSnapshotClassName": snap_class["metadata"]["name"],
                    "volumeSnapshotRef": {"apiVersion": SNAPSHOT_API, "kind": "VolumeSnapshot", "name": name,
                                          "namespace": ns, "uid": uid,
                                          "resourceVersion": snap["metadata"]["resourceVersion"]},
                },
            })
        # updateSnapshotStatus: bound, not ready, and an earlier error cleared since the new content has none
        # (pkg/common-controller/snapshot_controller.go:1303-1306)
        patch: dict[str, Any] = {
            "metadata": {"finalizers": sorted({*(snap["metadata"].get("finalizers") or []), SNAPSHOT_FINALIZER})},
            "status": {"boundVolumeSnapshotContentName": content_name, "readyToUse": False, "error": None},
        }
        if not (snap.get("spec") or {}).get("volumeSnapshotClassName"):
            patch["spec"] = {"volumeSnapshotClassName": snap_class["metadata"]["name"]}
        self.patch("VolumeSnapshot", ns, name, patch)
        cut = (ns, name, uid, content_name, volume_handle, size)
        if behaviour.error is not None:
            self.later(behaviour.error_after, self._create_snapshot, *cut, 0, None)
        elif behaviour.ready_after is not None:
            self.later(behaviour.ready_after, self._ready, *cut)

    def _create_snapshot(self, ns: str, name: str, uid: str, content_name: str, volume_handle: str, size: str,
                         attempt: int, first_error: float | None) -> None:
        """One CreateSnapshot attempt of the sidecar for a behaviour with an ``error``: it fails (and is retried
        with backoff) until ``recover_after`` seconds after the first failure, then succeeds."""
        snap = self._live(ns, name, uid)
        if snap is None:
            return
        assert self.loop is not None
        behaviour = self.behaviour_for(ns, name)
        now = self.loop.time()
        if first_error is not None and behaviour.recover_after is not None and (
                now - first_error >= behaviour.recover_after):
            self._ready(ns, name, uid, content_name, volume_handle, size)
            return
        message = behaviour.error_at(attempt)
        content = self.get("VolumeSnapshotContent", None, content_name)
        if content is None:
            return
        error = ((content.get("status") or {}).get("error") or {})
        if error.get("message") != message:  # updateContentErrorStatusWithEvent (sidecar :166-170)
            error = {"message": message, "time": _now()}
            self.patch("VolumeSnapshotContent", None, content_name, {"status": {"readyToUse": False, "error": error}})
        # the common controller mirrors the content's error onto the snapshot (snapshot_controller.go:1229-1232,
        # 1303-1306), with the content's time; the event is the snapshot's Warning of a changed error
        self._fail(snap, "SnapshotCreationFailed", message, set_ready_false=True, error=error)
        self.later(behaviour.backoff(attempt), self._create_snapshot, ns, name, uid, content_name, volume_handle,
                   size, attempt + 1, now if first_error is None else first_error)

    def _ready(self, ns: str, name: str, uid: str, content_name: str, volume_handle: str, size: str) -> None:
        """A successful CreateSnapshot: ``readyToUse`` and the error cleared on the content
        (pkg/sidecar-controller/snapshot_controller.go:493-498), then on the snapshot
        (pkg/common-controller/snapshot_controller.go:1292-1298)."""
        from mlflow_anf.k8s import parse_quantity

        snap = self.get("VolumeSnapshot", ns, name)
        if snap is None or snap["metadata"]["uid"] != uid:
            return
        now = dt.datetime.now(dt.timezone.utc)
        self.patch("VolumeSnapshotContent", None, content_name, {"status": {
            "creationTime": int(now.timestamp() * 1e9), "readyToUse": True, "restoreSize": parse_quantity(size),
            "snapshotHandle": f"{volume_handle}/snapshot-{uid}", "error": None,
        }})
        self.patch("VolumeSnapshot", ns, name, {"status": {
            "creationTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "readyToUse": True, "restoreSize": size,
            "error": None,
        }})

    def _finalize(self, ns: str, name: str, uid: str) -> None:
        snap = self.get("VolumeSnapshot", ns, name)
        if snap is None or snap["metadata"]["uid"] != uid:
            return
        assert self.api is not None
        content_name = (snap.get("status") or {}).get("boundVolumeSnapshotContentName")
        if content_name:
            content_type = self.api.type_for("VolumeSnapshotContent")
            content = self.api.get_object(content_type, None, content_name)
            if content is not None and content["spec"].get("deletionPolicy") == "Delete":
                self.api.delete_object(content_type, None, content_name)
        finalizers = [f for f in snap["metadata"].get("finalizers") or [] if f != SNAPSHOT_FINALIZER]
        self.patch("VolumeSnapshot", ns, name, {"metadata": {"finalizers": finalizers or None}})


def _warning_event(api: ApiEmulator | None, obj: Mapping[str, Any], reason: str, message: str) -> None:
    """A Warning Event about *obj*, as a controller's event recorder writes one (``<name>.<hex>``)."""
    assert api is not None
    m = obj["metadata"]
    api.create_object({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{m['name']}.{secrets.token_hex(4)}", "namespace": m.get("namespace") or "default"},
        "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": m["name"],
                           "namespace": m.get("namespace"), "uid": m.get("uid")},
        "reason": reason, "message": message, "type": "Warning",
    })


class PvcBinder(Controller):
    """Plays the CSI provisioner: binds Pending PVCs after ``delay`` seconds. A PVC restoring from a
    VolumeSnapshot waits until that snapshot is ready and stays Pending (with a ``ProvisioningFailed`` Event)
    when it asks for less than the snapshot's ``restoreSize``."""

    watches = ("persistentvolumeclaims", "volumesnapshots")

    def __init__(self, delay: float = 0.02) -> None:
        super().__init__()
        self.delay = delay

    def on_event(self, event: WatchEvent) -> None:
        obj = event.object
        if event.rtype.plural == "persistentvolumeclaims":
            if event.type == "ADDED" and (obj.get("status") or {}).get("phase", "Pending") == "Pending":
                self.later(self.delay, self._bind, event.namespace, event.name)
        elif event.type == "MODIFIED" and (obj.get("status") or {}).get("readyToUse"):
            assert self.api is not None
            for pvc in self.api.list_objects(self.api.type_for("PersistentVolumeClaim"), event.namespace):
                source = (pvc.get("spec") or {}).get("dataSource") or {}
                if source.get("kind") == "VolumeSnapshot" and source.get("name") == event.name:
                    self.later(self.delay, self._bind, event.namespace, pvc["metadata"]["name"])

    def _bind(self, ns: str, name: str) -> None:
        from mlflow_anf.k8s import parse_quantity

        pvc = self.get("PersistentVolumeClaim", ns, name)
        if pvc is None or (pvc.get("status") or {}).get("phase") != "Pending":
            return
        spec = pvc.get("spec") or {}
        requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        source = spec.get("dataSource") or {}
        if source.get("kind") == "VolumeSnapshot":
            snap = self.get("VolumeSnapshot", ns, source.get("name", ""))
            # kubernetes-csi/external-provisioner (commit 0688604) pkg/controller/controller.go:1328-1329: a
            # snapshot that is not readyToUse is not provisioned from (the claim is retried; here: when it is ready)
            if snap is None or not (snap.get("status") or {}).get("readyToUse"):
                return
            restore = (snap.get("status") or {}).get("restoreSize")
            if restore and parse_quantity(requested) < parse_quantity(restore):
                # controller.go:1355, sizes in bytes
                _warning_event(self.api, pvc, "ProvisioningFailed", f"requested volume size "
                               f"{parse_quantity(requested)} is less than the size {parse_quantity(restore)} for the "
                               f"source snapshot {source['name']}")
                return
        self.patch("PersistentVolumeClaim", ns, name, {
            "spec": {"volumeName": f"pvc-{pvc['metadata']['uid']}"},
            "status": {"phase": "Bound", "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
                       "capacity": {"storage": requested}},
        })


# --------------------------------------------------------------------------------------------------------------
# running it: a thread with its own loop, and a thread-safe facade


@dataclass(frozen=True)
class TlsMaterial:
    cert_file: Path
    key_file: Path

    @property
    def ca_data(self) -> str:
        return base64.b64encode(self.cert_file.read_bytes()).decode()


def make_tls_material(directory: Path) -> TlsMaterial:
    """A self-signed certificate (EC P-256) for 127.0.0.1/localhost, valid one day; it is its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k8s-emulator")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "emulator.crt", directory / "emulator.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return TlsMaterial(cert_file, key_file)


class _TlsRawTestServer(aiohttp.test_utils.RawTestServer):
    """kmock's default server class, with TLS."""

    def __init__(self, *args: Any, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ssl_context = ssl_context

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        await super().start_server(loop=loop, ssl=self._ssl_context, **kwargs)


class K8sServer:
    """Runs an :class:`ApiEmulator` behind ``kmock.Server`` on 127.0.0.1 in a background thread."""

    def __init__(
        self, *, crds_dir: Path | None = None, tls: TlsMaterial | None = None, token: str | None = None,
        validate: bool = True,
    ) -> None:
        self.crds_dir = crds_dir
        self.tls = tls
        self.token = token if token is not None else "emulator-token-" + secrets.token_hex(12)
        self.validate = validate
        self.url = ""
        self.api: ApiEmulator | None = None
        self.objects = ObjectStore(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> K8sServer:
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the Kubernetes emulator did not start within 30 s")
        if self._failure is not None:
            raise RuntimeError(f"the Kubernetes emulator failed to start: {self._failure!r}") from self._failure
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._failure = exc
            self._started.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.api = ApiEmulator(crds_dir=self.crds_dir, token=self.token, validate=self.validate)
        server_kwargs: dict[str, Any] = {"host": "127.0.0.1"}
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
            server_kwargs["server_cls"] = lambda handler, **kw: _TlsRawTestServer(handler, ssl_context=context, **kw)
        async with self.api, kmock.Server(self.api, **server_kwargs) as server:
            self.url = str(server.url).rstrip("/")
            self._started.set()
            await self._stop.wait()
            self.api.close()
            for _ in range(100):  # open watches notice within one wake-up; give them up to 1 s
                if not self.api.open_watches:
                    break
                await asyncio.sleep(0.01)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)

    def __enter__(self) -> K8sServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- cross-thread access ----------------------------------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 10.0, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the server's loop (where the state lives) and return its result."""
        assert self._loop is not None, "the server is not running"

        async def run() -> Any:
            return fn(*args, **kwargs)

        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(timeout)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    # ---- request log ----------------------------------------------------------------------------------------------

    def requests(self, since: int = 0) -> list[RequestRecord]:
        """Requests served so far (from index *since*, see :meth:`mark`), in arrival order."""
        return self.call(lambda: [copy.copy(r) for r in self._api().log[since:]])

    def mark(self) -> int:
        """A position in the request log, for counting the requests that follow."""
        return self.call(lambda: len(self._api().log))

    def api_calls(self, since: int = 0, *, plural: str | None = None) -> dict[str, int]:
        """``{"reads": n, "writes": n, "watches": n, "faults": n}`` of resource requests since *since*."""
        records = [r for r in self.requests(since) if r.verb and (plural is None or r.plural == plural)]
        return {
            "reads": sum(1 for r in records if r.verb in ("get", "list")),
            "watches": sum(1 for r in records if r.verb == "watch"),
            "writes": sum(1 for r in records if r.is_write),
            "faults": sum(1 for r in records if r.fault),
        }

    # ---- faults, watches, controllers -------------------------------------------------------------------------

    def fail_next(self, path: str | re.Pattern[str], **kwargs: Any) -> None:
        """See :meth:`ApiEmulator.fail_next` (``count``, ``status``, ``method``, ``verb``, ``retry_after``)."""
        self.call(lambda: self._api().fail_next(path, **kwargs))

    def reset_next(self, path: str | re.Pattern[str], **kwargs: Any) -> None:
        """See :meth:`ApiEmulator.reset_next`."""
        self.call(lambda: self._api().reset_next(path, **kwargs))

    def expire_watches(self) -> None:
        self.call(lambda: self._api().expire_watches())

    def compact(self) -> int:
        return self.call(lambda: self._api().compact())

    def add_controller(self, controller: Controller) -> Controller:
        assert self._loop is not None
        self.call(lambda: controller.attach(self._api(), asyncio.get_running_loop()))
        return controller

    def assert_healthy(self) -> None:
        """Fail if the emulator or a simulated controller raised an unexpected exception."""
        errors = self.call(lambda: list(self._api().unexpected_errors))
        if errors:
            raise AssertionError(f"the Kubernetes emulator hit {len(errors)} unexpected error(s): {errors!r}")

    def _api(self) -> ApiEmulator:
        assert self.api is not None
        return self.api

    # ---- client configuration -------------------------------------------------------------------------------

    def add_identity(self, identity: rbac.Identity) -> str:
        """A bearer token whose requests are made as *identity* and authorised by RBAC (``tests.doubles.rbac``)."""
        token = "emulator-user-" + secrets.token_hex(12)

        def register() -> None:
            self._api().identities[token] = identity

        self.call(register)
        return token

    def service_account_token(self, namespace: str, name: str) -> str:
        """The token a pod running as service account *namespace/name* would have mounted."""
        return self.add_identity(rbac.service_account(namespace, name))

    def apply(self, objects: list[Mapping[str, Any]]) -> None:
        """Create *objects* as a cluster admin would ``kubectl apply`` them (Namespaces first)."""
        for obj in sorted(objects, key=lambda o: o.get("kind") != "Namespace"):
            meta = obj.get("metadata") or {}
            kind = obj["kind"]
            if self.objects.get(kind, meta.get("namespace"), meta["name"]) is None:
                self.objects.create(obj)

    def write_kubeconfig(self, path: Path, *, token: str | None = None, namespace: str | None = "default",
                         context: str = "emulator") -> Path:
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls is not None:
            cluster["certificate-authority-data"] = self.tls.ca_data
        ctx: dict[str, Any] = {"cluster": "emulator", "user": "tester"}
        if namespace:
            ctx["namespace"] = namespace
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": "tester", "user": {"token": token if token is not None else self.token}}],
            "contexts": [{"name": context, "context": ctx}],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(config))
        tmp.replace(path)
        return path

    def write_service_account(self, directory: Path, *, namespace: str = "default", token: str | None = None) -> Path:
        """Files a pod's service account mount has (``token``, ``ca.crt``, ``namespace``), for in-cluster tests."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(token if token is not None else self.token)
        (directory / "namespace").write_text(namespace)
        if self.tls is not None:
            (directory / "ca.crt").write_bytes(self.tls.cert_file.read_bytes())
        return directory


class ObjectStore:
    """Thread-safe access to the emulator's objects from tests (``k8s_objects`` fixture): seed, read, patch,
    delete - directly, without API requests (nothing lands in the request log)."""

    def __init__(self, server: K8sServer) -> None:
        self._server = server

    def _type(self, api: ApiEmulator, kind: str) -> ResourceType:
        return api.type_for(kind)

    def create(self, obj: Mapping[str, Any], *, validate: bool = False) -> dict[str, Any]:
        """Create any object (``apiVersion``/``kind`` required); ``status`` is kept as given."""
        return self._server.call(lambda: self._server._api().create_object(obj, validate=validate))

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._server.call(lambda: (api := self._server._api()).get_object(self._type(api, kind), namespace,
                                                                                  name))

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        return self._server.call(lambda: (api := self._server._api()).list_objects(self._type(api, kind), namespace,
                                                                                    label_selector))

    def patch(self, kind: str, namespace: str | None, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch anything, ``status`` included."""
        return self._server.call(lambda: (api := self._server._api()).update_object(
            self._type(api, kind), namespace, name, patch=patch))

    def delete(self, kind: str, namespace: str | None, name: str, *, force: bool = False) -> None:
        """Delete (finalizers honoured unless *force*, which removes the object at once)."""
        def run() -> None:
            api = self._server._api()
            rtype = self._type(api, kind)
            if force and api.get_object(rtype, namespace, name) is not None:
                api._remove(rtype, namespace, name)
            else:
                api.delete_object(rtype, namespace, name)

        self._server.call(run)

    def history(self, kind: str, namespace: str | None, name: str) -> list[dict[str, Any] | None]:
        """Every stored version of the object (``None`` marks a deletion), oldest first (kmock's history)."""
        def run() -> list[dict[str, Any] | None]:
            api = self._server._api()
            key = api._key(self._type(api, kind), namespace, name)
            if key not in api.store:
                return []
            return [None if v is None else copy.deepcopy(v.raw) for v in api.store[key].history]

        return self._server.call(run)

    # ---- seeds ----------------------------------------------------------------------------------------------

    def namespace(self, name: str) -> dict[str, Any]:
        return self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def storage_class(self, name: str = DEFAULT_STORAGE_CLASS, provisioner: str = DEFAULT_DRIVER) -> dict[str, Any]:
        return self.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                            "provisioner": provisioner, "reclaimPolicy": "Delete",
                            "volumeBindingMode": "Immediate", "allowVolumeExpansion": True})

    def snapshot_class(self, name: str = DEFAULT_SNAPSHOT_CLASS, driver: str = DEFAULT_DRIVER, *,
                       deletion_policy: str = "Delete", default: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if default:
            meta["annotations"] = {"snapshot.storage.kubernetes.io/is-default-class": "true"}
        return self.create({"apiVersion": SNAPSHOT_API, "kind": "VolumeSnapshotClass", "metadata": meta,
                            "driver": driver, "deletionPolicy": deletion_policy}, validate=True)

    def pvc(self, name: str, namespace: str = "default", *, size: str = "10Gi",
            storage_class: str | None = DEFAULT_STORAGE_CLASS, phase: str = "Bound",
            access_modes: tuple[str, ...] = ("ReadWriteMany",), provisioner: str | None = DEFAULT_DRIVER,
            labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A PVC as a provisioner leaves it (``Bound`` with a volume and capacity unless *phase* says else)."""
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if provisioner:
            meta["annotations"] = {"volume.kubernetes.io/storage-provisioner": provisioner}
        if labels:
            meta["labels"] = dict(labels)
        spec: dict[str, Any] = {"accessModes": list(access_modes), "resources": {"requests": {"storage": size}},
                                "volumeMode": "Filesystem"}
        if storage_class:
            spec["storageClassName"] = storage_class
        status: dict[str, Any] = {"phase": phase}
        if phase == "Bound":
            spec["volumeName"] = f"pvc-{uuid.uuid4()}"
            status.update(accessModes=list(access_modes), capacity={"storage": size})
        return self.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec,
                            "status": status}, validate=True)

    def volume_snapshot(self, name: str, pvc: str, namespace: str = "default", *,
                        snapshot_class: str | None = DEFAULT_SNAPSHOT_CLASS, ready: bool = True,
                        restore_size: str = "10Gi", labels: Mapping[str, str] | None = None,
                        annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A VolumeSnapshot as if taken earlier (bound, ready), bypassing the controller's timing."""
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if labels:
            meta["labels"] = dict(labels)
        if annotations:
            meta["annotations"] = dict(annotations)
        spec: dict[str, Any] = {"source": {"persistentVolumeClaimName": pvc}}
        if snapshot_class:
            spec["volumeSnapshotClassName"] = snapshot_class
        status = {"boundVolumeSnapshotContentName": f"snapcontent-seed-{name}", "readyToUse": ready,
                  "restoreSize": restore_size, "creationTime": _now()}
        return self.create({"apiVersion": SNAPSHOT_API, "kind": "VolumeSnapshot", "metadata": meta, "spec": spec,
                            "status": status}, validate=True)


# --------------------------------------------------------------------------------------------------------------
# pytest fixtures


@pytest.fixture(scope="session")
def k8s_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """A self-signed server certificate for the emulator (made once per session)."""
    return make_tls_material(tmp_path_factory.mktemp("k8s-tls"))


@pytest.fixture
def k8s_server(crds_dir: Path, k8s_tls: TlsMaterial) -> Iterator[K8sServer]:
    """A running API emulator (HTTPS, bearer token, CRDs for VolumeSnapshot/Content/Class and MPIJob served).
    Fails the test at teardown if the emulator or a simulated controller raised unexpectedly."""
    server = K8sServer(crds_dir=crds_dir, tls=k8s_tls).start()
    try:
        yield server
        server.assert_healthy()
    finally:
        server.stop()


@pytest.fixture
def kubeconfig_path(k8s_server: K8sServer, tmp_path: Path) -> Path:
    """A kubeconfig for the emulator: its CA, a bearer token, context ``emulator``, namespace ``default``."""
    return k8s_server.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def k8s_objects(k8s_server: K8sServer) -> ObjectStore:
    return k8s_server.objects


@pytest.fixture
def snapshot_controller(k8s_server: K8sServer) -> SnapshotController:
    """The simulated external-snapshotter; configure with ``.default`` and ``.behave(pattern, ...)``."""
    controller = SnapshotController()
    k8s_server.add_controller(controller)
    return controller


@pytest.fixture
def pvc_binder(k8s_server: K8sServer) -> PvcBinder:
    binder = PvcBinder()
    k8s_server.add_controller(binder)
    return binder
