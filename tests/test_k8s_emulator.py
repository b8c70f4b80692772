"""The Kubernetes API emulator harness behaves like an API server towards the official client.

Everything goes over HTTPS to the emulator with the real ``kubernetes`` client; controllers and faults are the
harness's own. These tests keep the harness honest for every suite built on it (csi provider, MPIJob backend).
"""

from __future__ import annotations

import copy
import functools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, dynamic, watch
from kubernetes.client.exceptions import ApiException

from tests.doubles.k8s_emulator import SNAPSHOT_FINALIZER, K8sServer, ObjectStore, SnapshotController
from tests.doubles.k8s_schemas import K8sSchemaError, validate_builtin, validate_crd_object
from tests.support.waiting import wait_for

G, V = "snapshot.storage.k8s.io", "v1"


@pytest.fixture
def apis(kubeconfig_path: Path) -> tuple[client.CoreV1Api, client.CustomObjectsApi, client.ApiClient]:
    conf = client.Configuration()
    config.load_kube_config(str(kubeconfig_path), client_configuration=conf, persist_config=False)
    conf.retries = False
    api = client.ApiClient(conf)
    return client.CoreV1Api(api), client.CustomObjectsApi(api), api


def _snapshot(name: str, pvc: str = "data", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": f"{G}/{V}", "kind": "VolumeSnapshot", "metadata": {"name": name, **meta},
            "spec": {"volumeSnapshotClassName": "csi-snapclass", "source": {"persistentVolumeClaimName": pvc}}}


def _body(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


_wait_for = functools.partial(wait_for, timeout=5.0)


# ---- discovery and plain CRUD ----------------------------------------------------------------------------------


def test_discovery_serves_the_crds_to_the_dynamic_client(apis: Any) -> None:
    _, _, api = apis
    dyn = dynamic.DynamicClient(api)
    vs = dyn.resources.get(api_version=f"{G}/{V}", kind="VolumeSnapshot")
    assert (vs.name, vs.namespaced) == ("volumesnapshots", True)
    assert dyn.resources.get(api_version=f"{G}/{V}", kind="VolumeSnapshotContent").namespaced is False
    assert dyn.resources.get(api_version="kubeflow.org/v2beta1", kind="MPIJob").name == "mpijobs"
    assert dyn.resources.get(api_version="v1", kind="PersistentVolumeClaim").name == "persistentvolumeclaims"
    crds = client.ApiextensionsV1Api(api).list_custom_resource_definition()
    assert {c.metadata.name for c in crds.items} >= {"volumesnapshots.snapshot.storage.k8s.io",
                                                      "mpijobs.kubeflow.org"}


def test_create_get_list_and_api_errors(apis: Any, k8s_server: K8sServer, k8s_objects: ObjectStore) -> None:
    core, custom, _ = apis
    k8s_objects.pvc("data")
    created = custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s1"))
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["uid"] and meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z") and int(meta["resourceVersion"]) > 1
    assert [r.status for r in k8s_server.requests() if r.verb == "create"] == [201]

    listed = custom.list_namespaced_custom_object(G, V, "default", "volumesnapshots")
    assert listed["kind"] == "VolumeSnapshotList" and listed["apiVersion"] == f"{G}/{V}"
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert [i["metadata"]["name"] for i in listed["items"]] == ["s1"]
    pvcs = core.list_namespaced_persistent_volume_claim("default")
    assert [p.metadata.name for p in pvcs.items] == ["data"] and pvcs.items[0].status.phase == "Bound"

    with pytest.raises(ApiException) as conflict:
        custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s1"))
    assert conflict.value.status == 409 and _body(conflict.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as missing:
        custom.get_namespaced_custom_object(G, V, "default", "volumesnapshots", "nope")
    assert missing.value.status == 404
    assert _body(missing.value)["message"] == 'volumesnapshots.snapshot.storage.k8s.io "nope" not found'
    with pytest.raises(ApiException) as no_api:  # unknown API version: plain text like a real server
        custom.get_namespaced_custom_object(G, "v1beta1", "default", "volumesnapshots", "s1")
    assert no_api.value.status == 404 and no_api.value.body.startswith("404 page not found")
    with pytest.raises(ApiException) as no_ns:
        custom.create_namespaced_custom_object(G, V, "ghost", "volumesnapshots", _snapshot("s2"))
    assert no_ns.value.status == 404 and _body(no_ns.value)["message"] == 'namespaces "ghost" not found'
    with pytest.raises(ApiException) as bad_name:
        custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("Bad_Name"))
    assert bad_name.value.status == 422 and "RFC 1123" in _body(bad_name.value)["message"]
    assert core.read_namespace("default").status.phase == "Active"
    bad_pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "odd"},
               "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10 GB"}}}}
    with pytest.raises(ApiException) as bad_size:  # built-ins are validated too (kubernetes-validate + quantities)
        core.create_namespaced_persistent_volume_claim("default", bad_pvc)
    assert bad_size.value.status == 422 and "not a resource quantity" in _body(bad_size.value)["message"]


def test_writes_are_validated_against_the_crd_schema(apis: Any) -> None:
    _, custom, _ = apis
    both = _snapshot("both")
    both["spec"]["source"]["volumeSnapshotContentName"] = "content"
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", both)
    assert exc.value.status == 422
    assert "exactly one of volumeSnapshotContentName and persistentVolumeClaimName" in _body(exc.value)["message"]
    typo = _snapshot("typo")
    typo["spec"]["sorce"] = typo["spec"].pop("source")
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", typo)
    message = _body(exc.value)["message"]
    assert "'sorce' was unexpected" in message and "'source' is a required property" in message


def test_patch_put_status_subresource_and_preconditions(apis: Any, k8s_objects: ObjectStore) -> None:
    _, custom, _ = apis
    custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s1"))
    patched = custom.patch_namespaced_custom_object(
        G, V, "default", "volumesnapshots", "s1", {"metadata": {"labels": {"a": "1"}}, "status": {"readyToUse": True}})
    assert patched["metadata"]["labels"] == {"a": "1"} and "status" not in patched  # status needs /status
    status = custom.patch_namespaced_custom_object_status(
        G, V, "default", "volumesnapshots", "s1", {"status": {"readyToUse": True}, "metadata": {"labels": None}})
    assert status["status"] == {"readyToUse": True} and status["metadata"]["labels"] == {"a": "1"}
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}}]
    json_patch = "application/json-patch+json"
    assert custom.patch_namespaced_custom_object(G, V, "default", "volumesnapshots", "s1", ops,
                                                 _content_type=json_patch)["metadata"]["annotations"] == {"x": "y"}
    immutable = [{"op": "replace", "path": "/spec/source/persistentVolumeClaimName", "value": "other"}]
    with pytest.raises(ApiException) as exc:  # a CEL transition rule (self == oldSelf)
        custom.patch_namespaced_custom_object(G, V, "default", "volumesnapshots", "s1", immutable,
                                              _content_type=json_patch)
    assert exc.value.status == 422 and "persistentVolumeClaimName is immutable" in _body(exc.value)["message"]

    stale = copy.deepcopy(status)
    custom.patch_namespaced_custom_object(G, V, "default", "volumesnapshots", "s1", {"metadata": {"labels": {"b": "2"}}})
    with pytest.raises(ApiException) as exc:
        custom.replace_namespaced_custom_object(G, V, "default", "volumesnapshots", "s1", stale)
    assert exc.value.status == 409 and "the object has been modified" in _body(exc.value)["message"]
    with pytest.raises(ApiException) as exc:
        custom.delete_namespaced_custom_object(G, V, "default", "volumesnapshots", "s1",
                                               body={"preconditions": {"uid": "not-the-uid"}})
    assert exc.value.status == 409 and "Precondition failed" in _body(exc.value)["message"]
    assert len(k8s_objects.history("VolumeSnapshot", "default", "s1")) == 5  # create + 4 accepted writes only


def test_finalizers_delay_deletion_until_removed(apis: Any, k8s_objects: ObjectStore) -> None:
    _, custom, _ = apis
    custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots",
                                           _snapshot("s1", finalizers=[SNAPSHOT_FINALIZER]))
    deleted = custom.delete_namespaced_custom_object(G, V, "default", "volumesnapshots", "s1")
    assert deleted["metadata"]["deletionTimestamp"]
    assert k8s_objects.get("VolumeSnapshot", "default", "s1") is not None
    custom.patch_namespaced_custom_object(G, V, "default", "volumesnapshots", "s1", {"metadata": {"finalizers": None}})
    assert k8s_objects.get("VolumeSnapshot", "default", "s1") is None
    assert k8s_objects.history("VolumeSnapshot", "default", "s1")[-1] is None


# ---- selectors, paging, watches ------------------------------------------------------------------------------


def test_label_and_field_selectors_and_paging(apis: Any) -> None:
    _, custom, _ = apis
    for i, (role, run) in enumerate([("data", "r1"), ("model", "r1"), ("data", "r2"), (None, None)]):
        labels = {k: v for k, v in (("role", role), ("run", run)) if v}
        custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot(f"s{i}", labels=labels))

    def names(**kwargs: Any) -> list[str]:
        items = custom.list_namespaced_custom_object(G, V, "default", "volumesnapshots", **kwargs)["items"]
        return [i["metadata"]["name"] for i in items]

    assert names(label_selector="role=data") == ["s0", "s2"]
    assert names(label_selector="role==data,run=r2") == ["s2"]
    assert names(label_selector="role!=data") == ["s1", "s3"]
    assert names(label_selector="run in (r1, r3)") == ["s0", "s1"]
    assert names(label_selector="run notin (r1)") == ["s2", "s3"]
    assert names(label_selector="role") == ["s0", "s1", "s2"]
    assert names(label_selector="!role") == ["s3"]
    assert names(field_selector="metadata.name=s2") == ["s2"]
    with pytest.raises(ApiException) as exc:
        names(label_selector="role in data")
    assert exc.value.status == 400
    with pytest.raises(ApiException) as exc:
        names(field_selector="spec.source=x")
    assert exc.value.status == 400 and "field label not supported" in _body(exc.value)["message"]

    first = custom.list_namespaced_custom_object(G, V, "default", "volumesnapshots", limit=3)
    assert len(first["items"]) == 3 and first["metadata"]["remainingItemCount"] == 1
    rest = custom.list_namespaced_custom_object(G, V, "default", "volumesnapshots", limit=3,
                                                _continue=first["metadata"]["continue"])
    assert [i["metadata"]["name"] for i in rest["items"]] == ["s3"] and "continue" not in rest["metadata"]


def test_watch_resumes_from_a_resource_version_and_honours_timeout(apis: Any, k8s_objects: ObjectStore) -> None:
    _, custom, _ = apis
    first = custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s1"))
    custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s2"))
    k8s_objects.patch("VolumeSnapshot", "default", "s1", {"status": {"readyToUse": True}})
    events = [(e["type"], e["raw_object"]["metadata"]["name"]) for e in watch.Watch().stream(
        custom.list_namespaced_custom_object, G, V, "default", "volumesnapshots",
        resource_version=first["metadata"]["resourceVersion"], timeout_seconds=1)]
    assert events == [("ADDED", "s2"), ("MODIFIED", "s1")]  # replayed after the given version, then timed out
    only_s1 = [e["type"] for e in watch.Watch().stream(
        custom.list_namespaced_custom_object, G, V, "default", "volumesnapshots",
        field_selector="metadata.name=s1", timeout_seconds=1)]
    assert only_s1 == ["ADDED"]  # no resourceVersion: the current state as ADDED


def test_compacted_history_and_expired_watches_answer_410(apis: Any, k8s_server: K8sServer) -> None:
    _, custom, _ = apis
    first = custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s1"))
    custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s0"))
    k8s_server.compact()  # history before the newest revision is gone
    with pytest.raises(ApiException) as exc:
        list(watch.Watch().stream(custom.list_namespaced_custom_object, G, V, "default", "volumesnapshots",
                                  resource_version=first["metadata"]["resourceVersion"], timeout_seconds=5))
    assert exc.value.status == 410

    rv = custom.list_namespaced_custom_object(G, V, "default", "volumesnapshots")["metadata"]["resourceVersion"]
    stream = watch.Watch().stream(custom.list_namespaced_custom_object, G, V, "default", "volumesnapshots",
                                  resource_version=rv, timeout_seconds=30)
    custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s2"))
    assert next(stream)["raw_object"]["metadata"]["name"] == "s2"
    k8s_server.expire_watches()
    with pytest.raises(ApiException) as exc:
        next(stream)
    assert exc.value.status == 410 and "too old resource version" in str(exc.value.reason)


# ---- faults, auth, request log --------------------------------------------------------------------------------


def test_faults_hit_only_the_next_matching_requests(apis: Any, k8s_server: K8sServer, k8s_objects: ObjectStore) -> None:
    core, custom, _ = apis
    path = "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots"
    custom.list_namespaced_custom_object(G, V, "default", "volumesnapshots")  # earlier traffic does not count
    k8s_server.fail_next(path, count=2, status=503, method="POST")
    k8s_server.fail_next(path, status=429, retry_after=7, verb="list")
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s1"))
        assert exc.value.status == 503
    assert k8s_objects.get("VolumeSnapshot", "default", "s1") is None  # a failed request changes nothing
    with pytest.raises(ApiException) as exc:
        custom.list_namespaced_custom_object(G, V, "default", "volumesnapshots")
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "7"
    custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s1"))
    assert custom.list_namespaced_custom_object(G, V, "default", "volumesnapshots")["items"]

    k8s_server.reset_next("/api/v1/namespaces/default/persistentvolumeclaims/*")
    with pytest.raises(urllib3.exceptions.ProtocolError):
        core.read_namespaced_persistent_volume_claim("data", "default")
    with pytest.raises(ApiException):  # the next request gets through (and finds no PVC)
        core.read_namespaced_persistent_volume_claim("data", "default")
    k8s_server.reset_next(path, method="POST", after_apply=True)  # the write happens, its response is lost
    with pytest.raises(urllib3.exceptions.ProtocolError):
        custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s2"))
    assert k8s_objects.get("VolumeSnapshot", "default", "s2") is not None

    log = [(r.method, r.verb, r.status, r.fault, r.reset) for r in k8s_server.requests() if r.verb]
    assert log == [
        ("GET", "list", 200, False, False),
        ("POST", "create", 503, True, False), ("POST", "create", 503, True, False),
        ("GET", "list", 429, True, False),
        ("POST", "create", 201, False, False), ("GET", "list", 200, False, False),
        ("GET", "get", 0, True, True), ("GET", "get", 404, False, False),
        ("POST", "create", 0, True, True),
    ]
    assert k8s_server.api_calls() == {"reads": 5, "watches": 0, "writes": 4, "faults": 5}


def test_requests_need_the_bearer_token(k8s_server: K8sServer, tmp_path: Path) -> None:
    conf = client.Configuration()
    config.load_kube_config(str(k8s_server.write_kubeconfig(tmp_path / "bad", token="wrong")),
                            client_configuration=conf, persist_config=False)
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(client.ApiClient(conf)).list_namespace()
    assert exc.value.status == 401


# ---- controllers ----------------------------------------------------------------------------------------------


def test_snapshot_controller_binds_content_and_becomes_ready(
    apis: Any, k8s_objects: ObjectStore, snapshot_controller: SnapshotController, crds_dir: Path
) -> None:
    _, custom, _ = apis
    k8s_objects.pvc("data", size="20Gi")
    k8s_objects.snapshot_class(default=True)
    snapshot_controller.default.ready_after = 0.1
    created = custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot("s1"))
    snap = _wait_for(lambda: (s := k8s_objects.get("VolumeSnapshot", "default", "s1"))["status"].get("readyToUse")
                     and s, "readyToUse")
    content_name = snap["status"]["boundVolumeSnapshotContentName"]
    assert content_name == f"snapcontent-{created['metadata']['uid']}"
    assert snap["status"]["restoreSize"] == "20Gi" and snap["metadata"]["finalizers"] == [SNAPSHOT_FINALIZER]
    content = k8s_objects.get("VolumeSnapshotContent", None, content_name)
    assert content["spec"]["volumeSnapshotRef"]["uid"] == created["metadata"]["uid"]
    assert content["status"]["restoreSize"] == 20 * 2**30 and content["status"]["snapshotHandle"]
    for obj in (snap, content, k8s_objects.get("VolumeSnapshotClass", None, "csi-snapclass")):
        validate_crd_object(obj, crds_dir)
    history = k8s_objects.history("VolumeSnapshot", "default", "s1")
    assert [(v or {}).get("status", {}).get("readyToUse") for v in history] == [None, False, True]

    custom.delete_namespaced_custom_object(G, V, "default", "volumesnapshots", "s1")
    _wait_for(lambda: k8s_objects.get("VolumeSnapshot", "default", "s1") is None, "deletion")
    assert k8s_objects.get("VolumeSnapshotContent", None, content_name) is None


def test_snapshot_controller_errors_and_never_ready(apis: Any, k8s_objects: ObjectStore,
                                                    snapshot_controller: SnapshotController) -> None:
    _, custom, _ = apis
    k8s_objects.pvc("data")
    k8s_objects.pvc("pending", phase="Pending")
    k8s_objects.snapshot_class()
    snapshot_controller.behave("broken-*", error="CSI driver said no")
    snapshot_controller.behave("default/stuck", ready_after=None)
    for name, pvc in [("broken-1", "data"), ("stuck", "data"), ("orphan", "ghost"), ("early", "pending")]:
        custom.create_namespaced_custom_object(G, V, "default", "volumesnapshots", _snapshot(name, pvc))

    def status(name: str) -> dict[str, Any]:
        return k8s_objects.get("VolumeSnapshot", "default", name).get("status") or {}

    assert _wait_for(lambda: status("broken-1").get("error"), "error")["message"] == "CSI driver said no"
    assert 'persistentvolumeclaim "ghost" not found' in _wait_for(lambda: status("orphan").get("error"), "e")["message"]
    assert "not yet bound" in _wait_for(lambda: status("early").get("error"), "error")["message"]
    _wait_for(lambda: status("stuck").get("boundVolumeSnapshotContentName"), "binding")
    time.sleep(0.2)
    assert status("stuck")["readyToUse"] is False


def test_pvc_binder_restores_only_from_ready_snapshots_and_large_enough(
    apis: Any, k8s_objects: ObjectStore, pvc_binder: Any
) -> None:
    core, _, _ = apis
    k8s_objects.pvc("data")
    k8s_objects.volume_snapshot("snap", "data", restore_size="10Gi")

    def restore(name: str, size: str) -> None:
        body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}},
                         "storageClassName": "azure-netapp-files",
                         "dataSource": {"apiGroup": G, "kind": "VolumeSnapshot", "name": "snap"}}}
        core.create_namespaced_persistent_volume_claim("default", body)

    restore("big", "12Gi")
    restore("small", "5Gi")
    bound = _wait_for(lambda: (p := k8s_objects.get("PersistentVolumeClaim", "default", "big"))["status"]["phase"]
                      == "Bound" and p, "binding")
    assert bound["status"]["capacity"] == {"storage": "12Gi"} and bound["spec"]["volumeName"]
    events = _wait_for(lambda: k8s_objects.list("Event", "default"), "event")
    # external-provisioner's words, in bytes (pkg/controller/controller.go:1355)
    assert events[0]["message"] == ("requested volume size 5368709120 is less than the size 10737418240 for the "
                                    "source snapshot snap")
    assert k8s_objects.get("PersistentVolumeClaim", "default", "small")["status"]["phase"] == "Pending"


# ---- the schema helpers themselves -----------------------------------------------------------------------------


def test_validate_crd_object_translates_the_openapi_dialect(crds_dir: Path) -> None:
    good = _snapshot("s1", namespace="default", labels={"mlflow-anf/run-id": "abc"})
    validate_crd_object(good, crds_dir)
    with pytest.raises(K8sSchemaError) as exc:
        validate_crd_object({**good, "metadata": {"name": "s1", "labels": {"k": "bad value!"}}}, crds_dir)
    assert "metadata.labels.k" in str(exc.value)
    moved = copy.deepcopy(good)
    moved["spec"]["source"]["persistentVolumeClaimName"] = "other"
    validate_crd_object(moved, crds_dir)  # fine as a new object ...
    with pytest.raises(K8sSchemaError, match="persistentVolumeClaimName is immutable"):
        validate_crd_object(moved, crds_dir, old=good)  # ... not as an update
    empty_class = copy.deepcopy(good)
    empty_class["spec"]["volumeSnapshotClassName"] = ""
    with pytest.raises(K8sSchemaError, match="must not be the empty string"):
        validate_crd_object(empty_class, crds_dir)
    with pytest.raises(LookupError, match="no CRD for kind 'Nope'"):
        validate_crd_object({"apiVersion": "x.io/v1", "kind": "Nope", "metadata": {"name": "a"}}, crds_dir)

    job = {"apiVersion": "kubeflow.org/v2beta1", "kind": "MPIJob", "metadata": {"name": "train", "namespace": "ml"},
           "spec": {"slotsPerWorker": 1, "mpiReplicaSpecs": {"Worker": {"replicas": 2, "template": {"spec": {
               "containers": [{"name": "w", "image": "img", "resources": {"limits": {"nvidia.com/gpu": 1,
                                                                                      "memory": "8Gi"}}}]}}}}}}
    validate_crd_object(job, crds_dir)  # int-or-string quantities, list-map containers
    twice = copy.deepcopy(job)
    containers = twice["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    containers.append(dict(containers[0]))
    with pytest.raises(K8sSchemaError, match="Duplicate value"):
        validate_crd_object(twice, crds_dir)


def test_validate_builtin_checks_schema_metadata_and_quantities() -> None:
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "x", "namespace": "d"},
           "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}}}
    validate_builtin(pvc)
    for broken, problem in [
        ({**pvc, "spec": {**pvc["spec"], "sorce": 1}}, "'sorce' was unexpected"),
        ({**pvc, "spec": {**pvc["spec"], "resources": {"requests": {"storage": "10 GB"}}}}, "not a resource quantity"),
        ({**pvc, "metadata": {"name": "Bad_Name"}}, "not a DNS-1123 subdomain"),
    ]:
        with pytest.raises(K8sSchemaError, match=problem):
            validate_builtin(broken)
