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

from tests.doubles.k8s_emulator import ObjectStore


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
