"""Trident-managed ANF volumes: how to recognise one, which capacity pools a Trident backend draws from, and why a
pool change (service-level change) of such a volume is refused with steps instead of done.

What Trident does (NetApp/trident at commit 71dd7161, ``storage_drivers/azure``):

* it names the ANF volume after the PV (``pvc-<uid>``: ``azure_anf.go:2359`` ``GetInternalVolumeName``) and tags it
  ``provisioning`` (``azure_anf.go:1027-1031``, written as ARM tags in ``api/azure.go:1130-1139``);
* it stores the volume's ARM id, capacity pool included, as the volume config's ``internalID`` when it creates it
  (``azure_anf.go:1150``), fills it later only when empty (``azure_anf.go:1848, 2249, 2684``), and looks the volume
  up by that id whenever it is set (``api/azure.go:901-920`` ``Volume`` / ``VolumeExists`` → ``VolumeByID``, a GET of
  ``.../capacityPools/<old pool>/volumes/<name>``). After ``poolChange`` that GET is a 404, so ``CreateSnapshot``
  answers "volume ... does not exist" (``azure_anf.go:2004-2030``): every later CSI snapshot of the PV fails;
* ``tridentctl import volume`` finds a volume by creation token (``azure_anf.go:1414``), accepts it only in a capacity
  pool one of the backend's pools matches (``azure_anf.go:1428`` → ``api/azure_discovery.go:921-941``, matching by
  pool name or ``rg/account/pool`` and by the backend's ``serviceLevel``: ``azure_discovery.go:869-889``), records
  its current ARM id (``azure_anf.go:1549``), and refuses a volume Trident already manages under that internal name
  (``core/orchestrator_core.go:2962-2964``) — so the moved volume itself cannot simply be re-imported.

The safe path is therefore a new volume in the target pool, imported into Trident: :func:`pool_change_steps`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from mlflow_anf.snapshots.anf.errors import AnfInputError

TRIDENT_PROVISIONING_TAG = "provisioning"
TRIDENT_PV_NAME_RE = re.compile(r"^pvc-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
TRIDENT_ANF_DRIVER = "azure-netapp-files"


class TridentManagedVolume(AnfInputError):
    """A pool change of a volume Trident manages was refused (nothing was sent); the message lists the steps."""


def is_trident_volume(resource: Mapping[str, Any]) -> bool:
    """True when the ARM volume *resource* was made by Trident (its ``provisioning`` tag or its ``pvc-<uid>`` name)."""
    tags = resource.get("tags") or {}
    name = str(resource.get("name") or "").rsplit("/", 1)[-1]
    return TRIDENT_PROVISIONING_TAG in tags or bool(TRIDENT_PV_NAME_RE.match(name))


class BackendPools(BaseModel):
    """The capacity pools a Trident ``azure-netapp-files`` backend provisions from (top-level settings only)."""

    backend_name: str | None = None
    service_level: str | None = Field(default=None, description="the backend's serviceLevel filter, if any")
    capacity_pools: list[str] = Field(default_factory=list, description="'pool' or 'rg/account/pool' entries")

    def matches(self, resource_group: str, account: str, pool: str, service_level: str | None) -> bool:
        """Whether Trident would take a volume in *pool* through this backend (azure_discovery.go:869-889, 921-941:
        no capacityPools = any pool; an entry matches by name or full name; serviceLevel must agree)."""
        if self.service_level and service_level and self.service_level.lower() != service_level.lower():
            return False
        if not self.capacity_pools:
            return True
        return pool in self.capacity_pools or f"{resource_group}/{account}/{pool}" in self.capacity_pools


def backend_pools(doc: Mapping[str, Any]) -> BackendPools:
    """:class:`BackendPools` of a TridentBackendConfig (``{"spec": ...}``) or of a bare backend JSON; ``ValueError``
    naming the field that is wrong."""
    if not isinstance(doc, Mapping):
        raise ValueError("trident backend: expected a mapping (a TridentBackendConfig or backend JSON)")
    spec = doc.get("spec", doc)
    if not isinstance(spec, Mapping) or spec.get("storageDriverName") != TRIDENT_ANF_DRIVER:
        raise ValueError(f"trident backend: spec.storageDriverName must be {TRIDENT_ANF_DRIVER!r}, got "
                         f"{(spec or {}).get('storageDriverName') if isinstance(spec, Mapping) else None!r}")
    pools = spec.get("capacityPools") or []
    if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
        raise ValueError("trident backend: spec.capacityPools must be a list of pool names")
    return BackendPools(backend_name=spec.get("backendName"), service_level=spec.get("serviceLevel"),
                        capacity_pools=pools)


def pool_change_steps(*, volume: str, arm_id: str, target_pool: str, target_level: str | None,
                      resource_group: str, account: str, backend: BackendPools | None) -> str:
    """Why the pool change of Trident-managed *volume* (``pool/name``) is refused, and the steps that give its data
    the target service level while Trident keeps working."""
    name = volume.rsplit("/", 1)[-1]
    new = f"{name[:52]}-{(target_level or target_pool).lower()}"[:64].rstrip("-")
    backend_name = (backend.backend_name if backend else None) or "<backend of that pool>"
    lines = [
        f"anf:{volume} is managed by Trident: Trident addresses it by the ARM id it stored when it created it "
        f"(internalID {arm_id}) and never updates it, so after a move to pool {target_pool!r} every CSI snapshot, "
        "clone or resize of its PV would fail ('volume ... does not exist'). Nothing was changed.",
        f"To give its data service level {target_level or '?'} and keep Trident working:",
    ]
    if backend is not None and not backend.matches(resource_group, account, target_pool, target_level):
        lines.append(
            f"  0. pool {target_pool!r} is not in the capacityPools (or serviceLevel {backend.service_level}) of "
            f"backend {backend.backend_name or '?'}: add '{resource_group}/{account}/{target_pool}' to the "
            f"capacityPools of a Trident backend with serviceLevel {target_level} (kubectl apply -k k8s/cluster)"
        )
    lines += [
        "  1. stop the pods writing to the PVC, then: mlflow-anf snapshot create --provider anf "
        f"--volume {volume} --name before-pool-change",
        f"  2. mlflow-anf volume restore {volume}@before-pool-change --to {new} --pool {target_pool}",
        f"  3. tridentctl import volume {backend_name} {new} -f pvc.yaml -n trident   (pvc.yaml: a new PVC of that "
        "backend's StorageClass; Trident records the new volume's ARM id)",
        "  4. point the workloads and mlflow-anf's PVC settings at the new PVC; delete the old PVC when done "
        "(Trident then deletes the old volume)",
    ]
    return "\n".join(lines)
