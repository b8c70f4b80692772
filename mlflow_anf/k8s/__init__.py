"""The one Kubernetes layer of mlflow-anf, shared by the ``csi`` snapshot provider and the MPIJob backend.

* :mod:`~mlflow_anf.k8s.client` - where the cluster is (:class:`KubeConfig`), an official client for it
  (:func:`api_client`), bounded retries (:class:`RetryPolicy`, :func:`call_with_retries`), one error type
  (:class:`KubeApiError`), quantities and timestamps;
* :mod:`~mlflow_anf.k8s.naming` - DNS-1123/1035 names, label keys and values, derived names;
* :mod:`~mlflow_anf.k8s.follow` - follow one object until a condition holds (list, watch from the resourceVersion,
  re-list after 410 Gone, poll when watching fails, bounded by a deadline);
* :mod:`~mlflow_anf.k8s.snapshot_classes` - which VolumeSnapshotClass a PVC's snapshot gets.

Every name importable from ``mlflow_anf.k8s`` before it became a package still is, loaded on first use: importing
the pure :mod:`~mlflow_anf.k8s.naming` (as the snapshot core does for its name rule) does not load the client. The
``kubernetes`` package is imported only inside functions.
"""

from __future__ import annotations

from mlflow_anf._lazy import lazy_exports

# public name -> the module of this package that defines it
_LAZY = {
    "KubeApiError": "mlflow_anf.k8s.client",
    "KubeConfig": "mlflow_anf.k8s.client",
    "KubeConfigError": "mlflow_anf.k8s.client",
    "RETRYABLE_STATUSES": "mlflow_anf.k8s.client",
    "RetryPolicy": "mlflow_anf.k8s.client",
    "SERVICE_ACCOUNT_DIR": "mlflow_anf.k8s.client",
    "api_client": "mlflow_anf.k8s.client",
    "call_with_retries": "mlflow_anf.k8s.client",
    "connection_errors": "mlflow_anf.k8s.client",
    "format_quantity": "mlflow_anf.k8s.client",
    "normalize_in_cluster": "mlflow_anf.k8s.client",
    "parse_quantity": "mlflow_anf.k8s.client",
    "parse_time": "mlflow_anf.k8s.client",
    "resolve_namespace": "mlflow_anf.k8s.client",
    "to_api_error": "mlflow_anf.k8s.client",
    "Followed": "mlflow_anf.k8s.follow",
    "follow": "mlflow_anf.k8s.follow",
    "list_watch": "mlflow_anf.k8s.follow",
    "derive_name": "mlflow_anf.k8s.naming",
    "is_dns1035_label": "mlflow_anf.k8s.naming",
    "is_dns1123_label": "mlflow_anf.k8s.naming",
    "is_dns1123_subdomain": "mlflow_anf.k8s.naming",
    "is_label_key": "mlflow_anf.k8s.naming",
    "is_valid_label_value": "mlflow_anf.k8s.naming",
    "run_suffix": "mlflow_anf.k8s.naming",
    "sanitize_label_value": "mlflow_anf.k8s.naming",
    "validate_dns1123_label": "mlflow_anf.k8s.naming",
    "validate_dns1123_subdomain": "mlflow_anf.k8s.naming",
    "validate_label_key": "mlflow_anf.k8s.naming",
    "DEFAULT_CLASS_ANNOTATION": "mlflow_anf.k8s.snapshot_classes",
    "SnapshotClassError": "mlflow_anf.k8s.snapshot_classes",
    "is_default_class": "mlflow_anf.k8s.snapshot_classes",
    "pvc_driver": "mlflow_anf.k8s.snapshot_classes",
    "resolve_snapshot_class": "mlflow_anf.k8s.snapshot_classes",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
