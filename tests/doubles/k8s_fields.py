"""Field selectors as the real API server accepts them, per kind (used by ``tests.doubles.k8s_emulator``).

A real server converts each field label of a ``fieldSelector`` through the kind's field-label conversion function
before it lists or watches; an unknown label is a ``400 BadRequest`` whose message is that function's error
(kubernetes/kubernetes ``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/get.go`` ``ListResource``:
``opts.FieldSelector.Transform(fn)`` -> ``errors.NewBadRequest(err.Error())``). The labels and the values they
select are read from:

* core kinds with their own conversion function: kubernetes/kubernetes ``pkg/apis/core/v1/conversion.go``
  (``addConversionFuncs``: Pod; ``AddFieldLabelConversionsForEvent``, ``...ForNamespace``, ``...ForSecret``,
  ``...ForService``), error ``field label not supported: <label>``;
* the value of each label: the kind's ``ToSelectableFields`` / ``GetAttrs`` (``pkg/registry/core/event/strategy.go``
  ``ToSelectableFields``: ``source`` is ``source.component``, else ``reportingComponent``;
  ``pkg/registry/core/pod/strategy.go`` ``ToSelectableFields``);
* Job: kubernetes/kubernetes ``pkg/apis/batch/v1/conversion.go`` (``metadata.name``, ``metadata.namespace``,
  ``status.successful``);
* custom resources: ``metadata.name``/``metadata.namespace`` only (no ``selectableFields`` in the CRDs served
  here); the message is not confirmed from source, so the emulator answers ``field label not supported: <label>``
  (``kubectl`` wraps it as ``Unable to find ... field selector ...: <message>``);
* every other built-in kind: ``DefaultMetaV1FieldSelectorConversion`` via ``runtime.Scheme.ConvertFieldLabel``
  (kubernetes/kubernetes ``staging/src/k8s.io/apimachinery/pkg/runtime/conversion.go``), error
  ``"<label>" is not a known field selector: only "metadata.name", "metadata.namespace"``.

Operators: ``=``, ``==``, ``!=`` (``staging/src/k8s.io/apimachinery/pkg/fields/selector.go`` ``parseSelector``).
Not modelled (stricter): escaped ``,``/``=`` inside values are refused instead of unescaped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_Getter = Callable[[Mapping[str, Any]], str]


def _path(*keys: str) -> _Getter:
    def get(obj: Mapping[str, Any]) -> str:
        cur: Any = obj
        for key in keys:
            cur = cur.get(key) if isinstance(cur, Mapping) else None
        if isinstance(cur, bool):  # spec.hostNetwork: fields.Set holds strconv.FormatBool
            return "true" if cur else "false"
        return "" if cur is None else str(cur)
    return get


def _event_source(obj: Mapping[str, Any]) -> str:
    # pkg/registry/core/event/strategy.go ToSelectableFields: source.component, else reportingController
    return _path("source", "component")(obj) or _path("reportingComponent")(obj)


def _pod_ip(obj: Mapping[str, Any]) -> str:
    # pkg/registry/core/pod/strategy.go ToSelectableFields: status.podIP is status.podIPs[0].ip
    ips = (obj.get("status") or {}).get("podIPs") or []
    return str((ips[0] or {}).get("ip", "")) if ips else _path("status", "podIP")(obj)


def _host_network(obj: Mapping[str, Any]) -> str:
    # same function: strconv.FormatBool(hostNetwork), "false" when unset
    return "true" if (obj.get("spec") or {}).get("hostNetwork") is True else "false"


_META: dict[str, _Getter] = {"metadata.name": _path("metadata", "name"),
                             "metadata.namespace": _path("metadata", "namespace")}

#: (api group, kind) -> supported field labels and how each one's value is read from the object
FIELD_LABELS: dict[tuple[str, str], dict[str, _Getter]] = {
    # pkg/apis/core/v1/conversion.go AddFieldLabelConversionsForEvent
    ("", "Event"): {**_META, **{f"involvedObject.{k}": _path("involvedObject", k) for k in (
        "kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
        "reason": _path("reason"), "reportingComponent": _path("reportingComponent"), "source": _event_source,
        "type": _path("type")},
    # pkg/apis/core/v1/conversion.go addConversionFuncs (Pod); spec.host is converted to spec.nodeName
    ("", "Pod"): {**_META, "spec.nodeName": _path("spec", "nodeName"), "spec.host": _path("spec", "nodeName"),
                  "spec.restartPolicy": _path("spec", "restartPolicy"),
                  "spec.schedulerName": _path("spec", "schedulerName"),
                  "spec.serviceAccountName": _path("spec", "serviceAccountName"),
                  "spec.hostNetwork": _host_network, "status.phase": _path("status", "phase"),
                  # status.podIPs is accepted by the conversion but absent from ToSelectableFields: always ""
                  "status.podIP": _pod_ip, "status.podIPs": lambda o: "",
                  "status.nominatedNodeName": _path("status", "nominatedNodeName")},
    # AddFieldLabelConversionsForNamespace: no metadata.namespace for a cluster-scoped kind
    ("", "Namespace"): {"metadata.name": _path("metadata", "name"), "status.phase": _path("status", "phase")},
    # AddFieldLabelConversionsForSecret
    ("", "Secret"): {**_META, "type": _path("type")},
    # AddFieldLabelConversionsForService
    ("", "Service"): {**_META, "spec.clusterIP": _path("spec", "clusterIP"), "spec.type": _path("spec", "type")},
    # pkg/apis/batch/v1/conversion.go addConversionFuncs (Job); the value is strconv.Itoa(status.succeeded)
    # (pkg/registry/batch/job/strategy.go SelectableFields), "0" when unset
    ("batch", "Job"): {**_META, "status.successful": lambda o: _path("status", "succeeded")(o) or "0"},
}

#: kinds whose conversion function answers "field label not supported: <label>" (pkg/apis/core/v1/conversion.go,
#: pkg/apis/batch/v1/conversion.go); the rest answer DefaultMetaV1FieldSelectorConversion's message
_CORE_MESSAGE = {("", "Event"), ("", "Pod"), ("", "Namespace"), ("", "Secret"), ("", "Service"), ("batch", "Job")}

_TERM = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*(==|=|!=)\s*(.*?)\s*$")


def labels_for(group: str, kind: str) -> dict[str, _Getter]:
    return FIELD_LABELS.get((group, kind), _META)


def parse_field_selector(text: str | None, group: str = "", kind: str = "", *,
                         custom: bool = False) -> list[tuple[_Getter, bool, str]]:
    """``(getter, equal, value)`` per term; ``ValueError`` (the server's 400 message) on a label *kind* refuses."""
    if not text or not text.strip():
        return []
    supported = labels_for(group, kind)
    out = []
    for part in text.split(","):
        m = _TERM.match(part)
        if not m or "\\" in m.group(3):
            raise ValueError(f"invalid selector: '{text}'; can't understand '{part.strip()}'")
        label = m.group(1)
        if label not in supported:
            if (group, kind) in _CORE_MESSAGE or custom:
                raise ValueError(f"field label not supported: {label}")
            raise ValueError(f'"{label}" is not a known field selector: only "metadata.name", "metadata.namespace"')
        out.append((supported[label], m.group(2) != "!=", m.group(3)))
    return out


def field_selected(obj: Mapping[str, Any], terms: list[tuple[_Getter, bool, str]]) -> bool:
    return all((getter(obj) == value) == equal for getter, equal, value in terms)


def selected_name(text: str | None) -> str | None:
    """The name a ``metadata.name=<x>`` term fixes (the API server authorises such a list/watch for that name:
    kubernetes/kubernetes ``staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go``
    ``NewRequestInfo``, "if there's no name on the request and we thought it was a list ... check fieldSelector")."""
    if not text:
        return None
    for part in text.split(","):
        m = _TERM.match(part)
        if m and m.group(1) == "metadata.name" and m.group(2) in ("=", "=="):
            return m.group(3)
    return None
