"""The ``csi`` snapshot provider: Kubernetes ``snapshot.storage.k8s.io/v1`` VolumeSnapshots.

A volume is a PersistentVolumeClaim, named ``namespace/pvc`` (or ``pvc`` in the configured namespace). A snapshot
is a ``VolumeSnapshot`` of that PVC taken by the cluster's CSI driver (e.g. NetApp Trident on Azure NetApp Files,
where a snapshot is near-instant and costs no copy). Per snapshot the provider makes one write (the create; plus
one delete per snapshot pruned by ``keep_last``) and a handful of reads, whatever the data size.

``create`` checks everything it can before writing (names, the PVC exists and is Bound, the snapshot class, the
per-volume limit - 255 on ANF), labels the snapshot with the MLflow run/experiment/role it belongs to, then
follows it (:func:`mlflow_anf.k8s.follow`: a watch resuming from its ``resourceVersion``, re-listing after
``410 Gone``, falling back to polling) until ``status.readyToUse`` or ``ready_timeout_s``. A ``status.error`` does
not end the wait (the snapshot controller retries and clears it on success); a timeout names the last observed
error verbatim.

The parts:

* :mod:`.config` - :class:`CsiConfig`, :class:`SnapshotProgress`, :class:`InvalidInput`, API constants;
* :mod:`.manifests` - pure: :func:`render_volume_snapshot`, :func:`render_restore_pvc` (shared with the MPIJob
  backend's job plan and the ``k8s/`` examples), the labels/annotations ``create`` writes, parsing a VolumeSnapshot
  into a :class:`~mlflow_anf.snapshots.base.Snapshot`;
* :mod:`.api` - :class:`CsiApi`, the API calls with the retry policy;
* :mod:`.provider` - :class:`CsiSnapshotProvider`, the protocol.

Every name importable from ``mlflow_anf.snapshots.csi`` when it was one module still is. The ``kubernetes``
package is imported only when the provider first talks to a cluster.
"""

from mlflow_anf.k8s import (  # noqa: F401  (the names stay importable from this module)
    SERVICE_ACCOUNT_DIR,
    KubeApiError,
    KubeConfig,
    KubeConfigError,
    RetryPolicy,
    api_client,
    call_with_retries,
    connection_errors,
    format_quantity,
    normalize_in_cluster,
    parse_quantity,
    parse_time,
    resolve_namespace,
    sanitize_label_value,
    to_api_error,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_label_key,
)
from mlflow_anf.snapshots.base import (  # noqa: F401
    ProviderTraits,
    Snapshot,
    SnapshotError,
    SnapshotExists,
    SnapshotInputError,
    SnapshotLimitExceeded,
    SnapshotNotFound,
    SnapshotTimeout,
    SnapshotVerificationError,
    VerifyResult,
    validate_snapshot_name,
    validate_storage_name,
)
from mlflow_anf.snapshots.csi.api import RBAC_HINT, CsiApi, api_error  # noqa: F401
from mlflow_anf.snapshots.csi.config import (  # noqa: F401
    ANF_MAX_SNAPSHOTS_PER_VOLUME,
    API_VERSION,
    CLASSES,
    CONTENTS,
    DEFAULT_CLASS_ANNOTATION,
    GROUP,
    LABEL_MANAGED_BY,
    PROVISIONER_ANNOTATIONS,
    SNAPSHOTS,
    VERSION,
    CsiConfig,
    InvalidInput,
    SnapshotProgress,
)
from mlflow_anf.snapshots.csi.manifests import (  # noqa: F401
    label_selector,
    render_restore_pvc,
    render_volume_snapshot,
    snapshot_annotations,
    snapshot_labels,
    snapshot_record,
)
from mlflow_anf.snapshots.csi.provider import CsiSnapshotProvider  # noqa: F401
from mlflow_anf.vocabulary import (  # noqa: F401
    ANNOTATION_CREATED_AT,
    ANNOTATION_RESTORED_FROM,
    ANNOTATION_SOURCE_PVC,
    ANNOTATION_SOURCE_STORAGE_CLASS,
    LABEL_EXPERIMENT_ID,
    LABEL_ROLE,
    LABEL_RUN_ID,
    LABEL_SOURCE_PVC,
    MANAGED_BY,
)

_RBAC_HINT = RBAC_HINT
