"""``mlflow-anf doctor``: is this cluster ready for ``mlflow run --backend mpijob`` with this backend config?

Each check gives one line - ok, warn or fail - and, when not ok, the fix. Checks: the API server answers; the
MPIJob (``kubeflow.org/v2beta1``) and VolumeSnapshot (``snapshot.storage.k8s.io/v1``) APIs are served; the
VolumeSnapshotClass and the data PVC's StorageClass exist; the data PVC - and ``snapshot.model_pvc`` when it is a
volume of its own - is Bound and ReadWriteMany; the caller may do what the backend does (SelfSubjectAccessReview per
verb), and what the launcher's service account needs is shown; the tracking URI is one the pods can reach.
Read-only: the only writes are the access reviews, which the API server does not store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel

from mlflow_anf.backend.config import BackendConfigError, MPIJobBackendConfig
from mlflow_anf.k8s import (
    KubeApiError,
    RetryPolicy,
    SnapshotClassError,
    call_with_retries,
    pvc_driver,
    resolve_snapshot_class,
)

Status = Literal["ok", "warn", "fail"]
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


class Check(BaseModel):
    """One line of the report."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]"}[self.status]
        text = f"{mark} {self.name}: {self.detail}"
        if self.fix and self.status != "ok":
            text += f"\n       fix: {self.fix}"
        return text


Need = tuple[str, str, str, str, str]  # (verb, API group, resource, subresource, why)
_SNAP = "snapshot.storage.k8s.io"


# what the submitter needs (k8s/base/rbac.yaml, Role mlflow-anf-submitter)
def required_access(config: MPIJobBackendConfig) -> list[Need]:
    needs = [(verb, "kubeflow.org", "mpijobs", "", "submit, follow and cancel jobs")
             for verb in ("create", "get", "list", "watch", "delete")]
    needs += [("list", "", "pods", "", "find the launcher pod"), ("get", "", "pods", "log", "stream its log"),
              ("list", "", "events", "", "explain a job the operator rejected"),
              ("list", "batch", "jobs", "", "check a cancel left nothing")]
    if config.snapshot.data or config.snapshot.model:  # plugin.py _check_snapshot_budget -> budget.py
        needs += [("list", _SNAP, "volumesnapshots", "", "check the snapshot budget before submitting")]
    if config.snapshot.data:
        needs += [(verb, _SNAP, "volumesnapshots", "", "snapshot the data volume") for verb in ("create", "get",
                                                                                                "watch")]
        needs += [("get", "", "persistentvolumeclaims", "", "check the data volume before snapshotting it")]
    return needs


# what the launcher's service account needs (k8s/base/rbac.yaml, Role mlflow-anf-launcher): the model snapshot
# after training, snapshot.keep_last after a success (mlflow_anf/backend/launcher.py, budget.py)
def launcher_access(config: MPIJobBackendConfig) -> list[Need]:
    needs: list[Need] = []
    if config.snapshot.model:
        needs += [(verb, _SNAP, "volumesnapshots", "", "snapshot the model") for verb in ("create", "get", "list",
                                                                                          "watch")]
        needs += [("get", "", "persistentvolumeclaims", "", "snapshot the model")]
    if config.snapshot.keep_last:
        needs += [(verb, _SNAP, "volumesnapshots", "", "snapshot.keep_last") for verb in ("list", "delete")]
    return needs


def _describe(needs: list[Need]) -> str:
    """``create, get volumesnapshots (why), get persistentvolumeclaims (why)``: verbs grouped by resource."""
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for verb, _group, resource, sub, why in needs:
        verbs, whys = groups.setdefault(resource + ("/" + sub if sub else ""), ([], []))
        verbs.extend(v for v in (verb,) if v not in verbs)
        whys.extend(w for w in (why,) if w not in whys)
    return ", ".join(f"{', '.join(verbs)} {res} ({'; '.join(whys)})" for res, (verbs, whys) in groups.items())


class Doctor:
    """Runs the checks against one cluster (an official-client ``ApiClient``)."""

    def __init__(self, config: MPIJobBackendConfig, api_client: Any, *, tracking_uri: str | None = None,
                 retry: RetryPolicy | None = None) -> None:
        self.config = config
        self.api = api_client
        self.tracking_uri = tracking_uri
        self.retry = retry or RetryPolicy(max_attempts=2, base_delay_s=0.2)

    def _call(self, fn: Callable[..., Any], *args: Any, op: str, **kwargs: Any) -> Any:
        return call_with_retries(fn, *args, op=op, policy=self.retry, **kwargs)

    @staticmethod
    def _json(resp: Any) -> Any:
        import json

        data = resp.data if hasattr(resp, "data") else resp
        return json.loads(data) if isinstance(data, (bytes, str)) and data else data

    def run(self) -> list[Check]:
        checks = [self.api_server()]
        if checks[0].status == "fail":
            return checks
        for check in (self.mpijob_api, self.snapshot_api, self.snapshot_class, self.data_pvc, self.model_pvc,
                      self.access, self.tracking, self.image):
            try:
                result = check()
                if result is not None:
                    checks.append(result)
            except KubeApiError as exc:
                checks.append(Check(name=check.__name__.replace("_", " "), status="fail", detail=str(exc),
                                    fix="see the error; is the API server reachable and are you allowed to read?"))
        return checks

    # --- checks -------------------------------------------------------------------------------------------------
    def api_server(self) -> Check:
        from kubernetes.client import VersionApi

        try:
            version = self._json(self._call(VersionApi(self.api).get_code, _preload_content=False,
                                            op="get /version"))
            detail = f"Kubernetes {(version or {}).get('gitVersion', '?')}"
        except KubeApiError as exc:
            if exc.status is None or exc.status in (401, 403):
                return Check(name="API server", status="fail", detail=str(exc),
                             fix="check kubeconfig/kube_context in the backend config (or az aks get-credentials)")
            detail = f"reachable (/version answered HTTP {exc.status})"  # an answer is an answer
        return Check(name="API server", status="ok", detail=detail)

    def _served(self, group_version: str, plural: str) -> bool:
        from kubernetes.client import CustomObjectsApi

        group, version = group_version.split("/")
        try:
            doc = self._json(self._call(CustomObjectsApi(self.api).get_api_resources, group, version,
                                        _preload_content=False, op=f"discover {group_version}"))
        except KubeApiError as exc:
            if exc.not_found:
                return False
            raise
        return any(r.get("name") == plural for r in (doc or {}).get("resources") or [])

    def mpijob_api(self) -> Check:
        if self._served("kubeflow.org/v2beta1", "mpijobs"):
            return Check(name="MPIJob CRD", status="ok", detail="kubeflow.org/v2beta1 mpijobs served")
        return Check(name="MPIJob CRD", status="fail", detail="kubeflow.org/v2beta1 mpijobs is not served",
                     fix="install the Kubeflow MPI operator v0.5+ (its manifests/overlays/standalone), which "
                         "serves MPIJob v2beta1")

    def snapshot_api(self) -> Check:
        needed = self.config.snapshot.data or self.config.snapshot.model
        if self._served("snapshot.storage.k8s.io/v1", "volumesnapshots"):
            return Check(name="VolumeSnapshot CRD", status="ok", detail="snapshot.storage.k8s.io/v1 served")
        return Check(name="VolumeSnapshot CRD", status="fail" if needed else "warn",
                     detail="snapshot.storage.k8s.io/v1 volumesnapshots is not served",
                     fix="install the external-snapshotter CRDs and snapshot-controller (client/config/crd and "
                         "deploy/kubernetes/snapshot-controller of kubernetes-csi/external-snapshotter)")

    def snapshot_class(self) -> Check:
        """The class a snapshot of the job's PVC gets, chosen by :func:`mlflow_anf.k8s.resolve_snapshot_class` -
        the routine the csi provider's ``create`` uses - so this says ok exactly when create would find one."""
        from kubernetes.client import CustomObjectsApi

        needed = self.config.snapshot.data or self.config.snapshot.model
        bad: Status = "fail" if needed else "warn"
        try:
            classes = self._call(CustomObjectsApi(self.api).list_cluster_custom_object, "snapshot.storage.k8s.io",
                                 "v1", "volumesnapshotclasses", op="list VolumeSnapshotClasses").get("items") or []
        except KubeApiError as exc:
            if exc.status == 403:
                return Check(name="VolumeSnapshotClass", status="warn", detail=f"cannot list classes: {exc}",
                             fix="bind the mlflow-anf-storage-reader ClusterRole (k8s/cluster)")
            if exc.not_found:
                return Check(name="VolumeSnapshotClass", status=bad, detail="the snapshot API is not served",
                             fix="install the external-snapshotter CRDs and snapshot-controller")
            raise
        driver, where = self._snapshot_driver()
        try:
            name = resolve_snapshot_class(classes, driver, self.config.snapshot.snapshot_class, volume=where)
        except SnapshotClassError as exc:
            fix = {"not_found": "kubectl apply -k k8s/cluster (netapp-csi-snapclass) or fix snapshot.snapshot_class",
                   "wrong_driver": "set snapshot.snapshot_class to a class of the PVC's driver",
                   }.get(exc.problem, "set snapshot.snapshot_class in the backend config, or mark exactly one class "
                                      "of the PVC's driver default")
            return Check(name="VolumeSnapshotClass", status=bad, detail=str(exc), fix=fix)
        how = "configured" if self.config.snapshot.snapshot_class else "default class"
        return Check(name="VolumeSnapshotClass", status="ok",
                     detail=f"{how} {name!r}{f' (driver {driver})' if driver else ''}")

    def _snapshot_driver(self) -> tuple[str | None, str]:
        """The CSI driver of the PVC the job snapshots (data, else model) and how create names it; ``None`` when
        that is unknown (no PVC configured or readable: then create accepts a class of any driver too)."""
        from kubernetes.client import CoreV1Api, StorageV1Api

        cfg = self.config
        pvc_name = cfg.data_pvc if cfg.snapshot.data or not cfg.snapshot.model else (cfg.snapshot.model_pvc
                                                                                      or cfg.data_pvc)
        if not pvc_name:
            return None, "the volume"
        where = f"PVC {cfg.namespace}/{pvc_name}"
        try:
            pvc = self.api.sanitize_for_serialization(self._call(
                CoreV1Api(self.api).read_namespaced_persistent_volume_claim, pvc_name, cfg.namespace,
                op=f"get PVC {cfg.namespace}/{pvc_name}"))
        except KubeApiError:
            return None, where  # reported by the data PVC check
        storage_class = None
        sc_name = (pvc.get("spec") or {}).get("storageClassName")
        if pvc_driver(pvc) is None and sc_name:
            try:
                storage_class = self.api.sanitize_for_serialization(self._call(
                    StorageV1Api(self.api).read_storage_class, sc_name, op=f"get StorageClass {sc_name}"))
            except KubeApiError:
                storage_class = None
        return pvc_driver(pvc, storage_class), where

    def data_pvc(self) -> Check:
        cfg = self.config
        if not cfg.data_pvc:
            return Check(name="data PVC", status="warn", detail="no data_pvc configured: the pods mount no data",
                         fix="set data_pvc to the ReadWriteMany claim holding the dataset (k8s/base/data-pvc.yaml)")
        return self._pvc("data PVC", cfg.data_pvc,
                         "kubectl apply -k k8s/overlays/aks-anf (claim tusimple-data), or fix data_pvc")

    def model_pvc(self) -> Check | None:
        """``snapshot.model_pvc`` when it is a volume of its own: the backend mounts it in launcher and workers
        (:mod:`mlflow_anf.backend.model_volume`), so it must be what the data PVC must be."""
        model = self.config.snapshot.model_pvc
        if not self.config.snapshot.model or not model or model == self.config.data_pvc:
            return None
        return self._pvc("model PVC", model, "create snapshot.model_pvc ReadWriteMany on the ANF StorageClass "
                                             "(as k8s/base/data-pvc.yaml), or fix snapshot.model_pvc")

    def _pvc(self, label: str, pvc_name: str, missing_fix: str) -> Check:
        """Exists, Bound, ReadWriteMany, on a StorageClass that exists: every pod of the job mounts it."""
        from kubernetes.client import CoreV1Api, StorageV1Api

        cfg = self.config
        where = f"{cfg.namespace}/{pvc_name}"
        try:
            pvc = self._call(CoreV1Api(self.api).read_namespaced_persistent_volume_claim, pvc_name,
                             cfg.namespace, op=f"get PVC {where}")
        except KubeApiError as exc:
            if exc.not_found:
                return Check(name=label, status="fail", detail=f"{where} not found", fix=missing_fix)
            raise
        problems = []
        phase = pvc.status.phase if pvc.status else None
        if phase != "Bound":
            problems.append(f"is {phase or 'not bound'}, not Bound")
        modes = list((pvc.status.access_modes if pvc.status and pvc.status.access_modes else None)
                     or pvc.spec.access_modes or [])
        if "ReadWriteMany" not in modes:
            problems.append(f"access modes {modes} lack ReadWriteMany, so the workers cannot all mount it")
        sc_name = pvc.spec.storage_class_name
        sc_text = ""
        if sc_name:
            try:
                sc = self._call(StorageV1Api(self.api).read_storage_class, sc_name, op=f"get StorageClass {sc_name}")
                sc_text = f", StorageClass {sc_name!r} ({sc.provisioner})"
            except KubeApiError as exc:
                if exc.not_found:
                    problems.append(f"its StorageClass {sc_name!r} does not exist")
                elif exc.status == 403:
                    sc_text = f", StorageClass {sc_name!r} (not readable)"
                else:
                    raise
        if problems:
            return Check(name=label, status="fail", detail=f"{where} " + "; ".join(problems),
                         fix="create it ReadWriteMany on the ANF StorageClass (k8s/cluster, k8s/base/data-pvc.yaml); "
                             "an existing RWO claim cannot be changed - restore a snapshot into a new RWX claim")
        return Check(name=label, status="ok", detail=f"{where} Bound, ReadWriteMany{sc_text}")

    def access(self) -> Check:
        from kubernetes.client import AuthorizationV1Api

        authz = AuthorizationV1Api(self.api)
        denied = []
        for verb, group, resource, sub, why in required_access(self.config):
            body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": {"namespace": self.config.namespace, "verb": verb, "group": group,
                                                    "resource": resource, "subresource": sub}}}
            review = self._call(authz.create_self_subject_access_review, body,
                                op=f"review {verb} {resource}{'/' + sub if sub else ''}")
            if not (review.status and review.status.allowed):
                denied.append(f"{verb} {resource}{'/' + sub if sub else ''} ({why})")
        if denied:
            return Check(name="RBAC", status="fail", detail=f"in {self.config.namespace}: denied " + ", ".join(denied),
                         fix="bind the mlflow-anf-submitter Role of k8s/base/rbac.yaml to your user or group")
        return self._launcher_access(f"every verb the backend needs is allowed in {self.config.namespace}")

    def _launcher_access(self, detail: str) -> Check:
        """What the launcher's service account needs, shown, not reviewed: a SelfSubjectAccessReview answers for
        the caller only, and reviewing another account (LocalSubjectAccessReview) is a right submitters lack."""
        needs = launcher_access(self.config)
        if not needs:
            return Check(name="RBAC", status="ok", detail=detail)
        account = self.config.service_account
        if not account:
            return Check(name="RBAC", status="warn", detail=f"{detail}; but the launcher runs as the namespace's "
                         f"default service account, which needs {_describe(needs)}",
                         fix="set service_account to mlflow-anf-launcher (k8s/base/rbac.yaml)")
        return Check(name="RBAC", status="ok", detail=f"{detail}; the launcher (service account {account}) needs "
                     f"{_describe(needs)}: Role mlflow-anf-launcher of k8s/base/rbac.yaml grants it")

    def tracking(self) -> Check:
        from mlflow_anf.backend.plugin import pod_tracking_uri

        try:
            uri = pod_tracking_uri(self.config, self.tracking_uri or "")
        except BackendConfigError as exc:
            return Check(name="tracking URI", status="fail", detail=exc.problems[0].split(": ", 1)[1],
                         fix="set tracking_uri, e.g. http://mlflow.<namespace>.svc.cluster.local:5000 (k8s/mlflow)")
        parts = urlsplit(uri)
        host = parts.hostname or ""
        if parts.scheme in ("file", "sqlite"):
            return Check(name="tracking URI", status="warn", detail=f"{uri!r} is a file store: every pod must see "
                         "the same path", fix="run the tracking server of k8s/mlflow and use its http:// URI")
        if host in _LOCAL_HOSTS:
            return Check(name="tracking URI", status="warn", detail=f"{uri!r} is localhost: inside a pod that is "
                         "the pod itself", fix="use the tracking server's Service name (k8s/mlflow)")
        labels = host.split(".")
        if parts.scheme in ("http", "https") and (len(labels) == 1 or host.endswith((".svc", ".svc.cluster.local"))):
            from kubernetes.client import CoreV1Api

            service, namespace = labels[0], labels[1] if len(labels) > 1 else self.config.namespace
            try:
                found = self._call(CoreV1Api(self.api).list_namespaced_service, namespace,
                                   field_selector=f"metadata.name={service}", op=f"find Service {namespace}/{service}")
            except KubeApiError as exc:
                if exc.status == 403:
                    return Check(name="tracking URI", status="warn", detail=f"{uri}: cannot look Service "
                                 f"{namespace}/{service} up ({exc})", fix="")
                raise
            if not found.items:
                return Check(name="tracking URI", status="fail", detail=f"{uri}: no Service {service!r} in namespace "
                             f"{namespace!r}", fix="kubectl apply -k k8s/overlays/aks-anf (Service mlflow)")
            return Check(name="tracking URI", status="ok", detail=f"{uri} (Service {namespace}/{service} exists)")
        return Check(name="tracking URI", status="ok", detail=f"{uri} (outside the cluster: make sure the pods can "
                                                              "reach it)")

    def image(self) -> Check:
        if "@sha256:" in self.config.image:
            return Check(name="image", status="ok", detail=f"{self.config.image} (pinned by digest)")
        return Check(name="image", status="warn", detail=f"{self.config.image} is not pinned by digest: a re-pushed "
                     "tag changes what a reproduced run executes", fix="use image@sha256:<digest> "
                     "(docker buildx imagetools inspect <image>)")


def run_doctor(config: MPIJobBackendConfig, *, tracking_uri: str | None = None, api_client: Any = None) -> list[Check]:
    """Connect as the backend would and run every check."""
    from mlflow_anf.backend.plugin import kube_config
    from mlflow_anf.k8s import KubeConfigError, api_client as make_client

    kube = kube_config(config)
    if api_client is None:
        try:
            api_client = make_client(kube, "`mlflow-anf doctor`")
        except KubeConfigError as exc:
            return [Check(name="API server", status="fail", detail=str(exc),
                          fix="set kubeconfig/kube_context in the backend config, or $KUBECONFIG")]
    retry = RetryPolicy(max_attempts=min(kube.retry.max_attempts, 3), base_delay_s=kube.retry.base_delay_s)
    return Doctor(config, api_client, tracking_uri=tracking_uri, retry=retry).run()
