"""The one Kubernetes layer of mlflow-anf, shared by the ``csi`` snapshot provider and the MPIJob backend.

* :mod:`~mlflow_anf.k8s.client` - where the cluster is (:class:`KubeConfig`), an official client for it
  (:func:`api_client`), bounded retries (:class:`RetryPolicy`, :func:`call_with_retries`), one error type
  (:class:`KubeApiError`), quantities and timestamps;
* :mod:`~mlflow_anf.k8s.naming` - DNS-1123/1035 names, label keys and values, derived names;
* :mod:`~mlflow_anf.k8s.follow` - follow one object until a condition holds (list, watch from the resourceVersion,
  re-list after 410 Gone, poll when watching fails, bounded by a deadline);
* :mod:`~mlflow_anf.k8s.snapshot_classes` - which VolumeSnapshotClass a PVC's snapshot gets.

Every name importable from ``mlflow_anf.k8s`` before it became a package still is. The ``kubernetes`` package is
imported only inside functions.
"""

from mlflow_anf.k8s.client import (
    RETRYABLE_STATUSES,
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
    to_api_error,
)
from mlflow_anf.k8s.follow import Followed, follow, list_watch
from mlflow_anf.k8s.naming import (
    derive_name,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_key,
    is_valid_label_value,
    run_suffix,
    sanitize_label_value,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_label_key,
)
from mlflow_anf.k8s.snapshot_classes import (
    DEFAULT_CLASS_ANNOTATION,
    SnapshotClassError,
    is_default_class,
    pvc_driver,
    resolve_snapshot_class,
)

__all__ = [
    "DEFAULT_CLASS_ANNOTATION", "RETRYABLE_STATUSES", "SERVICE_ACCOUNT_DIR", "Followed", "KubeApiError", "KubeConfig",
    "KubeConfigError", "RetryPolicy", "SnapshotClassError", "api_client", "call_with_retries", "connection_errors",
    "derive_name", "follow", "format_quantity", "is_default_class", "is_dns1035_label", "is_dns1123_label",
    "is_dns1123_subdomain", "is_label_key", "is_valid_label_value", "list_watch", "normalize_in_cluster",
    "parse_quantity", "parse_time", "pvc_driver", "resolve_namespace", "resolve_snapshot_class", "run_suffix",
    "sanitize_label_value", "to_api_error", "validate_dns1123_label", "validate_dns1123_subdomain",
    "validate_label_key",
]
