"""Validate Kubernetes objects the way an API server would, for tests.

* :func:`validate_crd_object` - against the ``openAPIV3Schema`` of the matching served version of a CRD in a
  directory of CRD YAML files (``fixtures/crds``), with ``jsonschema``. The OpenAPI dialect is translated:
  ``x-kubernetes-int-or-string``, ``nullable``, ``x-kubernetes-preserve-unknown-fields``, list types (``set``,
  ``map`` + ``x-kubernetes-list-map-keys``) and the CEL ``x-kubernetes-validations`` rules the fixtures use (a small
  CEL subset evaluator: ``has``, ``size``, ``!``, ``&&``, ``||``, comparisons, field access, ``self``/``oldSelf``;
  transition rules run only when ``old`` is given, as on a real update). Unknown fields are *rejected* by default
  (``strict=True``), stricter than a server, which silently prunes them - a typo in a manifest is a bug.
* :func:`validate_builtin` - built-in kinds (PersistentVolumeClaim, ...) with ``kubernetes-validate``'s schemas for
  a Kubernetes version it ships (default 1.30), strict, plus metadata and resource-quantity checks it lacks.

Both raise :class:`K8sSchemaError` listing every problem with its JSON path.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULT_K8S_VERSION = "1.30"

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


class K8sSchemaError(ValueError):
    """An object does not validate; ``problems`` lists ``"<path>: <what>"`` strings."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{what} is invalid:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------------------------------------------
# CRDs


@functools.lru_cache(maxsize=16)
def _load_crds(crds_dir: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(group, kind) -> CRD document, for every CRD YAML in *crds_dir*."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(crds_dir).glob("*.y*ml")):
        with path.open() as fh:
            for doc in yaml.load_all(fh, Loader=loader):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    spec = doc["spec"]
                    out[(spec["group"], spec["names"]["kind"])] = doc
    return out


def load_crds(crds_dir: Path | str) -> list[dict[str, Any]]:
    """Every CRD document in *crds_dir* (cached; do not mutate)."""
    return list(_load_crds(str(Path(crds_dir).resolve())).values())


def find_crd_version(crds_dir: Path | str, api_version: str, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The CRD and its version entry serving ``api_version``/``kind``; ``LookupError`` naming what is missing."""
    group, _, version = api_version.rpartition("/")
    crds = _load_crds(str(Path(crds_dir).resolve()))
    crd = crds.get((group, kind))
    if crd is None:
        known = ", ".join(sorted(f"{k}.{g}" for g, k in crds)) or "none"
        raise LookupError(f"no CRD for kind {kind!r} in group {group!r} under {crds_dir} (known: {known})")
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            if not entry.get("served", False):
                raise LookupError(f"{crd['metadata']['name']}: version {version!r} is not served")
            return crd, entry
    versions = [v["name"] for v in crd["spec"]["versions"]]
    raise LookupError(f"{crd['metadata']['name']}: no version {version!r} (has {versions})")


def openapi_to_jsonschema(schema: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """Translate a structural OpenAPI v3 schema (CRD dialect) into draft 2020-12 JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out["properties"] = {n: openapi_to_jsonschema(s, strict=strict) for n, s in value.items()}
        elif key == "items" and isinstance(value, Mapping):
            out["items"] = openapi_to_jsonschema(value, strict=strict)
        elif key == "additionalProperties":
            out[key] = openapi_to_jsonschema(value, strict=strict) if isinstance(value, Mapping) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [openapi_to_jsonschema(s, strict=strict) for s in value]
        elif key == "not":
            out[key] = openapi_to_jsonschema(value, strict=strict)
        elif key.startswith("x-kubernetes-") or key in ("description", "example", "externalDocs", "nullable",
                                                         "format", "default", "title"):
            continue
        else:
            out[key] = copy.deepcopy(value)
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if schema.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if (
        strict
        and out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=64)
def _validator(crds_dir: str, api_version: str, kind: str, strict: bool) -> Any:
    import jsonschema

    _, entry = find_crd_version(crds_dir, api_version, kind)
    openapi = entry.get("schema", {}).get("openAPIV3Schema") or {"type": "object"}
    schema = openapi_to_jsonschema(openapi, strict=strict)
    return jsonschema.Draft202012Validator(schema)


def _json_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<root>"


def validate_crd_object(
    obj: Mapping[str, Any], crds_dir: Path | str, *, old: Mapping[str, Any] | None = None, strict: bool = True
) -> None:
    """Validate a custom resource against its CRD in *crds_dir*; raise :class:`K8sSchemaError` listing problems.

    *old* is the previous state for an update (enables CEL transition rules such as ``self == oldSelf``).
    """
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata") or {}
    what = f"{kind or '<no kind>'} {meta.get('namespace', '')}/{meta.get('name', '<no name>')}".replace(" /", " ")
    if not api_version or not kind:
        raise K8sSchemaError(what, ["apiVersion and kind are required"])
    crd, entry = find_crd_version(str(Path(crds_dir).resolve()), api_version, kind)
    validator = _validator(str(Path(crds_dir).resolve()), api_version, kind, strict)
    problems = [
        f"{_json_path(err.absolute_path)}: {err.message}"
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
    problems += check_object_meta(meta, namespaced=crd["spec"]["scope"] == "Namespaced")
    openapi = entry.get("schema", {}).get("openAPIV3Schema") or {}
    _walk_rules(openapi, obj, old, "", problems)
    if problems:
        raise K8sSchemaError(what, problems)


# --------------------------------------------------------------------------------------------------------------
# ObjectMeta (a CRD schema says only "metadata: object"; the server checks these itself)


def check_object_meta(meta: Mapping[str, Any], *, namespaced: bool) -> list[str]:
    """Problems in an ObjectMeta: name, namespace, label keys/values, annotation keys."""
    problems: list[str] = []
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        problems.append("metadata.name: Required value")
    elif name and (len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name)):
        problems.append(f"metadata.name: Invalid value {name!r}: not a DNS-1123 subdomain")
    ns = meta.get("namespace")
    if ns is not None and (not namespaced or len(ns) > 63 or not _DNS1123_LABEL.match(ns)):
        problems.append(f"metadata.namespace: Invalid value {ns!r}" + ("" if namespaced else ": cluster-scoped"))
    for field in ("labels", "annotations"):
        entries = meta.get(field) or {}
        if not isinstance(entries, Mapping):
            problems.append(f"metadata.{field}: must be a map of strings")
            continue
        for key, value in entries.items():
            if not _valid_qualified_name(str(key)):
                problems.append(f"metadata.{field}: Invalid key {key!r}")
            if not isinstance(value, str):
                problems.append(f"metadata.{field}.{key}: value must be a string, got {type(value).__name__}")
            elif field == "labels" and (len(value) > 63 or not _LABEL_VALUE.match(value)):
                problems.append(f"metadata.labels.{key}: Invalid value {value!r}: not a valid label value")
    return problems


def _valid_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return False
    return not prefix or (len(prefix) <= 253 and _DNS1123_SUBDOMAIN.match(prefix) is not None)


# --------------------------------------------------------------------------------------------------------------
# structural rules jsonschema does not know: list-map keys and CEL validations

_MISSING = object()


def _walk_rules(schema: Mapping[str, Any], value: Any, old: Any, path: str, problems: list[str]) -> None:
    if value is _MISSING or value is None:
        return
    for rule in schema.get("x-kubernetes-validations") or ():
        expr = rule["rule"]
        program = _cel_compile(expr)
        if program.uses_old and (old is _MISSING or old is None):
            continue  # transition rules apply to updates only
        try:
            ok = program.evaluate(value, old)
        except CelError as exc:
            problems.append(f"{path or '<root>'}: rule {expr!r} could not be evaluated: {exc}")
            continue
        if ok is not True:
            problems.append(f"{path or '<root>'}: {rule.get('message') or f'failed rule: {expr}'}")
    if isinstance(value, Mapping):
        old_map = old if isinstance(old, Mapping) else {}
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                _walk_rules(sub, value[key], old_map.get(key, _MISSING), f"{path}.{key}".lstrip("."), problems)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for key, item in value.items():
                if key not in (schema.get("properties") or {}):
                    _walk_rules(extra, item, old_map.get(key, _MISSING), f"{path}.{key}".lstrip("."), problems)
    elif isinstance(value, list):
        items = schema.get("items")
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen: dict[tuple[Any, ...], int] = {}
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    ident = tuple(item.get(k) for k in keys)
                    if ident in seen:
                        problems.append(f"{path}[{index}]: Duplicate value: map key {dict(zip(keys, ident))}")
                    seen[ident] = index
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                _walk_rules(items, item, _MISSING, f"{path}[{index}]", problems)


class CelError(ValueError):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+)|(?P<str>'[^']*'|\"[^\"]*\")|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>&&|\|\||==|!=|<=|>=|[()!.<>]))"
)
_CEL_ESCAPES = {"__dot__": ".", "__dash__": "-", "__slash__": "/", "__underscores__": "__"}
_CEL_RESERVED = {"namespace", "in", "as", "break", "const", "continue", "else", "for", "function", "if", "import",
                 "let", "loop", "package", "return", "var", "void", "while", "true", "false", "null"}


def _cel_unescape(name: str) -> str:
    for key in _CEL_RESERVED:
        if name == f"__{key}__":
            return key
    for esc, plain in _CEL_ESCAPES.items():
        name = name.replace(esc, plain)
    return name


class _CelProgram:
    """A parsed rule of the CEL subset used by CRD validations (see module doc)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = self._lex(source)
        self.pos = 0
        self.uses_old = False
        self.tree = self._or()
        if self.pos != len(self.tokens):
            raise CelError(f"unsupported CEL near {self.tokens[self.pos][1]!r} in {source!r}")

    @staticmethod
    def _lex(source: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        pos = 0
        while pos < len(source):
            if source[pos:].strip() == "":
                break
            match = _TOKEN.match(source, pos)
            if not match:
                raise CelError(f"unsupported CEL syntax at {source[pos:]!r}")
            kind = match.lastgroup or "op"
            out.append((kind, match.group(kind)))
            pos = match.end()
        return out

    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise CelError(f"unexpected end of {self.source!r}")
        tok = self.tokens[self.pos]
        if expected is not None and tok[1] != expected:
            raise CelError(f"expected {expected!r}, got {tok[1]!r} in {self.source!r}")
        self.pos += 1
        return tok

    def _or(self) -> Any:
        node = self._and()
        while self._peek() == "||":
            self._take()
            node = ("or", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._cmp()
        while self._peek() == "&&":
            self._take()
            node = ("and", node, self._cmp())
        return node

    def _cmp(self) -> Any:
        node = self._unary()
        if self._peek() in ("==", "!=", "<", "<=", ">", ">="):
            op = self._take()[1]
            node = ("cmp", op, node, self._unary())
        return node

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return ("not", self._unary())
        return self._postfix()

    def _postfix(self) -> Any:
        node = self._primary()
        while self._peek() == ".":
            self._take()
            kind, name = self._take()
            if kind != "id":
                raise CelError(f"expected a field name after '.', got {name!r}")
            node = ("field", node, _cel_unescape(name))
        return node

    def _primary(self) -> Any:
        kind, text = self._take()
        if text == "(":
            node = self._or()
            self._take(")")
            return node
        if kind == "num":
            return ("lit", int(text))
        if kind == "str":
            return ("lit", text[1:-1])
        if kind == "id":
            if text in ("has", "size"):
                self._take("(")
                arg = self._or()
                self._take(")")
                if text == "has" and arg[0] != "field":
                    raise CelError("has() needs a field selection")
                return (text, arg)
            if text in ("true", "false"):
                return ("lit", text == "true")
            if text == "self":
                return ("self",)
            if text == "oldSelf":
                self.uses_old = True
                return ("old",)
        raise CelError(f"unsupported CEL term {text!r} in {self.source!r}")

    def evaluate(self, value: Any, old: Any) -> Any:
        return self._eval(self.tree, value, old)

    def _eval(self, node: Any, value: Any, old: Any) -> Any:
        tag = node[0]
        if tag == "lit":
            return node[1]
        if tag == "self":
            return value
        if tag == "old":
            return old
        if tag == "field":
            base = self._eval(node[1], value, old)
            if not isinstance(base, Mapping) or node[2] not in base:
                raise CelError(f"no such key: {node[2]}")
            return base[node[2]]
        if tag == "has":
            base = self._eval(node[1][1], value, old)
            return isinstance(base, Mapping) and node[1][2] in base
        if tag == "size":
            arg = self._eval(node[1], value, old)
            if not isinstance(arg, (str, list, Mapping)):
                raise CelError(f"size() of {type(arg).__name__}")
            return len(arg)
        if tag == "not":
            return not self._truth(self._eval(node[1], value, old))
        if tag == "and":
            return self._truth(self._eval(node[1], value, old)) and self._truth(self._eval(node[2], value, old))
        if tag == "or":
            return self._truth(self._eval(node[1], value, old)) or self._truth(self._eval(node[2], value, old))
        if tag == "cmp":
            left, right = self._eval(node[2], value, old), self._eval(node[3], value, old)
            op = node[1]
            if op == "==":
                return left == right
            if op == "!=":
                return left != right
            try:
                return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
            except TypeError as exc:
                raise CelError(str(exc)) from None
        raise CelError(f"unknown node {tag}")  # pragma: no cover - parser produces only the tags above

    @staticmethod
    def _truth(value: Any) -> bool:
        if not isinstance(value, bool):
            raise CelError(f"expected a bool, got {type(value).__name__}")
        return value


@functools.lru_cache(maxsize=256)
def _cel_compile(source: str) -> _CelProgram:
    return _CelProgram(source)


# --------------------------------------------------------------------------------------------------------------
# built-in kinds


def validate_builtin(obj: Mapping[str, Any], k8s_version: str = DEFAULT_K8S_VERSION) -> None:
    """Validate a built-in kind with ``kubernetes-validate`` (strict: unknown fields are errors) plus metadata and
    resource-quantity checks; raise :class:`K8sSchemaError` listing problems."""
    import kubernetes_validate

    meta = obj.get("metadata") or {}
    what = f"{obj.get('kind', '<no kind>')} {meta.get('namespace', '')}/{meta.get('name', '<no name>')}"
    problems: list[str] = []
    try:
        kubernetes_validate.validate(dict(obj), k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        problems.append(f"{_json_path(exc.absolute_path)}: {exc.message}")
    except kubernetes_validate.utils.SchemaNotFoundError as exc:
        problems.append(f"<root>: {exc.message}")
    problems += check_object_meta(meta, namespaced=obj.get("kind") not in _CLUSTER_KINDS)
    problems += _check_quantities(obj)
    if problems:
        raise K8sSchemaError(what.replace(" /", " "), problems)


_CLUSTER_KINDS = {"Namespace", "PersistentVolume", "StorageClass", "Node", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PriorityClass"}


def _check_quantities(obj: Mapping[str, Any]) -> list[str]:
    """Resource requests/limits/capacity must be quantities (the JSON schema only says "string")."""
    problems: list[str] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, sub in node.items():
                sub_path = f"{path}.{key}".lstrip(".")
                if key in ("requests", "limits", "capacity") and isinstance(sub, Mapping):
                    for res, qty in sub.items():
                        if not isinstance(qty, (int, float)) and not _QUANTITY.match(str(qty)):
                            problems.append(f"{sub_path}.{res}: Invalid value {qty!r}: not a resource quantity")
                else:
                    visit(sub, sub_path)
        elif isinstance(node, list):
            for index, sub in enumerate(node):
                visit(sub, f"{path}[{index}]")

    visit(obj.get("spec"), "spec")
    visit(obj.get("status"), "status")
    return problems
