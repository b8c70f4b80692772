"""The API emulator's field selectors per kind, as a real API server accepts them (``tests.doubles.k8s_fields``).

Everything goes over HTTPS with the official client. Sources are cited in ``tests/doubles/k8s_fields.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.doubles import rbac
from tests.doubles.k8s_emulator import K8sServer, ObjectStore


@pytest.fixture
def core(kubeconfig_path: Path) -> client.CoreV1Api:
    conf = client.Configuration()
    config.load_kube_config(str(kubeconfig_path), client_configuration=conf, persist_config=False)
    conf.retries = False
    return client.CoreV1Api(client.ApiClient(conf))


def _event(name: str, kind: str, obj: str, *, reason: str = "Created", etype: str = "Normal",
           component: str = "", reporting: str = "") -> dict[str, Any]:
    ev: dict[str, Any] = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
                          "involvedObject": {"kind": kind, "name": obj, "namespace": "default", "uid": f"u-{obj}",
                                             "apiVersion": "kubeflow.org/v2beta1"},
                          "reason": reason, "type": etype, "message": f"{reason} {obj}"}
    if component:
        ev["source"] = {"component": component}
    if reporting:
        ev["reportingComponent"] = reporting
    return ev


def _names(resp: Any) -> list[str]:
    return sorted(i.metadata.name for i in resp.items)


def test_event_field_selectors_as_the_api_server_accepts_them(core: client.CoreV1Api,
                                                               k8s_objects: ObjectStore) -> None:
    for ev in (_event("e1", "MPIJob", "train-1", component="mpi-job-controller"),
               _event("e2", "Pod", "train-1", reason="Failed", etype="Warning", reporting="kubelet"),
               _event("e3", "MPIJob", "train-2")):
        k8s_objects.create(ev)
    sel = "involvedObject.name=train-1,involvedObject.kind=MPIJob"
    assert _names(core.list_namespaced_event("default", field_selector=sel)) == ["e1"]
    assert _names(core.list_namespaced_event("default", field_selector="involvedObject.uid=u-train-2")) == ["e3"]
    assert _names(core.list_namespaced_event("default", field_selector="type!=Normal")) == ["e2"]
    assert _names(core.list_namespaced_event("default", field_selector="reason==Failed")) == ["e2"]
    # source: source.component, else reportingComponent (pkg/registry/core/event/strategy.go ToSelectableFields)
    assert _names(core.list_namespaced_event("default", field_selector="source=kubelet")) == ["e2"]
    assert _names(core.list_namespaced_event("default", field_selector="source=mpi-job-controller")) == ["e1"]
    assert _names(core.list_namespaced_event("default", field_selector="involvedObject.apiVersion=kubeflow.org/"
                                                                       "v2beta1,metadata.name=e3")) == ["e3"]
    watched = [e["object"].metadata.name for e in watch.Watch().stream(
        core.list_namespaced_event, "default", field_selector=sel, timeout_seconds=1)]
    assert watched == ["e1"]
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_event("default", field_selector="message=x")
    body = json.loads(exc.value.body)
    assert exc.value.status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == "field label not supported: message"


def test_pod_and_other_kinds_accept_only_their_field_labels(core: client.CoreV1Api, k8s_objects: ObjectStore) -> None:
    for name, phase, node in (("p1", "Running", "n1"), ("p2", "Pending", "")):
        k8s_objects.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                            "spec": {"containers": [{"name": "c", "image": "x"}], "nodeName": node or None},
                            "status": {"phase": phase}})
    assert _names(core.list_namespaced_pod("default", field_selector="status.phase=Running")) == ["p1"]
    assert _names(core.list_namespaced_pod("default", field_selector="spec.nodeName=")) == ["p2"]
    assert _names(core.list_namespaced_pod("default", field_selector="spec.host=n1")) == ["p1"]  # old clients
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod("default", field_selector="involvedObject.name=p1")
    assert exc.value.status == 400 and json.loads(exc.value.body)["message"] == \
        "field label not supported: involvedObject.name"
    # a kind without its own conversion function: DefaultMetaV1FieldSelectorConversion
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_config_map("default", field_selector="data.x=1")
    assert exc.value.status == 400 and json.loads(exc.value.body)["message"] == \
        '"data.x" is not a known field selector: only "metadata.name", "metadata.namespace"'
    # Namespace: metadata.name and status.phase only
    assert _names(core.list_namespace(field_selector="metadata.name=default")) == ["default"]
    with pytest.raises(ApiException) as exc:
        core.list_namespace(field_selector="metadata.namespace=default")
    assert exc.value.status == 400


# ---- RBAC enforced for identities' tokens (tests/doubles/rbac.py cites the API server's source) -------------------


def _as(k8s_server: K8sServer, tmp_path: Path, token: str) -> client.ApiClient:
    path = k8s_server.write_kubeconfig(tmp_path / f"kc-{token[-6:]}", token=token)
    conf = client.Configuration()
    config.load_kube_config(str(path), client_configuration=conf, persist_config=False)
    conf.retries = False
    return client.ApiClient(conf)


def _role(kind: str, name: str, rules: list[dict[str, Any]], ns: str | None = "default") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"namespace": ns} if ns and kind == "Role" else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules}


def _binding(kind: str, name: str, role_kind: str, role: str, subjects: list[dict[str, Any]],
             ns: str | None = "default") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"namespace": ns} if ns and kind == "RoleBinding" else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": subjects}


def _forbidden(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as exc:
        fn(*args, **kwargs)
    assert exc.value.status == 403, exc.value
    body = json.loads(exc.value.body)
    assert body["kind"] == "Status" and body["reason"] == "Forbidden" and body["code"] == 403
    return body


def test_rbac_verbs_subresources_names_groups_and_the_403(k8s_server: K8sServer, k8s_objects: ObjectStore,
                                                         tmp_path: Path) -> None:
    k8s_objects.namespace("other")
    k8s_server.apply([
        _role("Role", "reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                                 {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                                 {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
                                  "resourceNames": ["allowed"]},
                                 {"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["*"], "verbs": ["watch"]}]),
        _binding("RoleBinding", "reader", "Role", "reader", [{"kind": "ServiceAccount", "name": "sa"}]),
        _role("ClusterRole", "event-lister", [{"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}],
              None),
        # a RoleBinding to a ClusterRole grants it in the binding's namespace only
        _binding("RoleBinding", "events", "ClusterRole", "event-lister", [{"kind": "Group", "name": "team"}]),
    ])
    for name in ("allowed", "secret-ish"):
        k8s_objects.create({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name, "namespace": "default"}})
    sa = client.CoreV1Api(_as(k8s_server, tmp_path, k8s_server.service_account_token("default", "sa")))
    sa.list_namespaced_pod("default")
    sa.read_namespaced_config_map("allowed", "default")
    body = _forbidden(sa.read_namespaced_config_map, "secret-ish", "default")
    assert body["message"] == ('configmaps "secret-ish" is forbidden: User "system:serviceaccount:default:sa" '
                               'cannot get resource "configmaps" in API group "" in the namespace "default"')
    assert body["details"] == {"name": "secret-ish", "kind": "configmaps"}  # group "" is omitted in JSON
    body = _forbidden(sa.list_namespaced_config_map, "default")  # a list has no name: resourceNames never match
    assert body["message"].startswith("configmaps is forbidden: ")
    _forbidden(sa.create_namespaced_pod, "default", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                                     "spec": {"containers": [{"name": "c", "image": "x"}]}})
    _forbidden(sa.list_namespaced_pod, "other")  # a RoleBinding holds in its namespace
    _forbidden(sa.delete_collection_namespaced_pod, "default")  # deletecollection is its own verb
    body = _forbidden(sa.list_namespaced_event, "default")
    assert 'cannot list resource "events" in API group ""' in body["message"]
    # the same account from another namespace is another user
    other = client.CoreV1Api(_as(k8s_server, tmp_path, k8s_server.service_account_token("other", "sa")))
    _forbidden(other.list_namespaced_pod, "default")
    # groups, and a ClusterRole bound by a RoleBinding
    alice = client.CoreV1Api(_as(k8s_server, tmp_path, k8s_server.add_identity(rbac.user("alice", "team"))))
    alice.list_namespaced_event("default")
    body = _forbidden(alice.list_namespaced_event, "other")
    assert body["message"].endswith('in the namespace "other"')
    body = _forbidden(alice.list_event_for_all_namespaces)
    assert body["message"].endswith('cannot list resource "events" in API group "" at the cluster scope')
    # wildcard resources within the group, and subresources are separate resources
    custom = client.CustomObjectsApi(_as(k8s_server, tmp_path, k8s_server.service_account_token("default", "sa")))
    list(watch.Watch().stream(custom.list_namespaced_custom_object, "snapshot.storage.k8s.io", "v1", "default",
                              "volumesnapshots", timeout_seconds=1))
    body = _forbidden(custom.list_namespaced_custom_object, "snapshot.storage.k8s.io", "v1", "default",
                      "volumesnapshots")
    assert body["message"].startswith("volumesnapshots.snapshot.storage.k8s.io is forbidden")
    k8s_objects.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                        "spec": {"containers": [{"name": "c", "image": "x"}]}})
    body = _forbidden(sa.patch_namespaced_pod_status, "p", "default", {"status": {"phase": "Running"}})
    assert 'cannot patch resource "pods/status"' in body["message"]
    # an unknown token is 401, not 403
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(_as(k8s_server, tmp_path, "not-a-token")).list_namespaced_pod("default")
    assert exc.value.status == 401


def test_rbac_authorises_a_named_list_watch_by_the_field_selectors_name(k8s_server: K8sServer,
                                                                       k8s_objects: ObjectStore,
                                                                       tmp_path: Path) -> None:
    k8s_server.apply([
        _role("Role", "one", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"],
                               "resourceNames": ["mine"]}]),
        _binding("RoleBinding", "one", "Role", "one", [{"kind": "User", "name": "bob"}]),
    ])
    bob = client.CoreV1Api(_as(k8s_server, tmp_path, k8s_server.add_identity(rbac.user("bob"))))
    assert bob.list_namespaced_config_map("default", field_selector="metadata.name=mine").items == []
    _forbidden(bob.list_namespaced_config_map, "default", field_selector="metadata.name=yours")
    _forbidden(bob.list_namespaced_config_map, "default")
