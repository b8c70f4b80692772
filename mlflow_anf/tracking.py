"""MLflow adapter: record on a run which snapshots it used, and find (and restore) them again.

Per role (``data``, ``model``, ...) a run carries the tags ``mlflow_anf.snapshot.<role>.<field>`` for the fields
``snapshot_id``, ``name``, ``provider``, ``volume``, ``digest``, ``ref`` and ``created`` (and ``artifact_uri`` where
a path inside the snapshot was given); the keys, the model and the parser live in :mod:`mlflow_anf.vocabulary`,
which also reads runs recorded in the earlier ``mlflow_anf.<role>.<field>`` layout. A ``data`` snapshot is also
logged as a dataset input (source :class:`~mlflow_anf.dataset_source.SnapshotDatasetSource`, context ``training``)
so the MLflow UI's Datasets column shows it. MLflow is imported inside the functions only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlflow_anf.vocabulary import (
    LABEL_EXPERIMENT_ID,
    LABEL_ROLE,
    LABEL_RUN_ID,
    ROLE_DATA,
    SNAPSHOT_FIELDS,
    TAG_NAMESPACE,
    SnapshotRef,
    SnapshotTagError,
    normalize_role,
    parse_snapshot_tags,
    snapshot_tag,
)
from mlflow_anf.snapshots.base import (
    Snapshot,
    SnapshotError,
    SnapshotNotFound,
    SnapshotProvider,
    SnapshotRole,
    SnapshotVerificationError,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput

log = logging.getLogger(__name__)

DATASET_CONTEXT = "training"
DATASET_DIGEST_CHARS = 12  # MLflow stores dataset digests in a 36-character column; the UI shows short ones
# Names other modules imported from here before the vocabulary module existed.
TAG_PREFIX = TAG_NAMESPACE
TAG_FIELDS = SNAPSHOT_FIELDS


def tag_key(role: str | SnapshotRole, field: str) -> str:
    return snapshot_tag(role, field)


def dataset_digest(snapshot: Snapshot) -> str:
    """The short digest MLflow shows for a snapshot dataset: the head of the snapshot digest (hex part)."""
    if snapshot.digest:
        return snapshot.digest.rsplit(":", 1)[-1][:DATASET_DIGEST_CHARS]
    # Providers without content digests: stand in with the identity of the snapshot (unique, not content).
    return hashlib.sha256(f"{snapshot.ref}#{snapshot.id}".encode()).hexdigest()[:DATASET_DIGEST_CHARS]


def snapshot_dataset_input(snapshot: Snapshot, context: str = DATASET_CONTEXT) -> DatasetInput:
    """The MLflow dataset input for *snapshot* (name = snapshot name, source = SnapshotDatasetSource)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    from mlflow_anf.dataset_source import SnapshotDatasetSource

    source = SnapshotDatasetSource.from_snapshot(snapshot)
    profile = {"ref": snapshot.ref}
    for key in ("files", "bytes"):
        if key in snapshot.details:
            profile[key] = snapshot.details[key]
    if snapshot.size_bytes is not None:
        profile.setdefault("bytes", snapshot.size_bytes)
    dataset = Dataset(
        name=snapshot.name,
        digest=dataset_digest(snapshot),
        source_type=source._get_source_type(),
        source=source.to_json(),
        profile=json.dumps(profile),
    )
    return DatasetInput(dataset=dataset, tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)])


def _client(client: MlflowClient | None) -> MlflowClient:
    if client is not None:
        return client
    from mlflow import MlflowClient

    return MlflowClient()


def _run_id(run_id: str | None) -> str:
    if run_id:
        return run_id
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise ValueError("run_id: no active MLflow run; pass run_id or call inside mlflow.start_run()")
    return run.info.run_id


def log_snapshot(
    snapshot: Snapshot,
    role: str | SnapshotRole,
    run_id: str | None = None,
    client: MlflowClient | None = None,
    *,
    artifact_path: str | None = None,
) -> SnapshotRef:
    """Tag run *run_id* (default: the active run) with *snapshot* under *role*; role ``data`` also logs a dataset.

    With *artifact_path* (a path inside the snapshot, e.g. ``model``), the tag ``mlflow_anf.<role>.artifact_uri``
    records a ``snapshot://`` URI that MLflow can read from, e.g. ``mlflow.pytorch.load_model(uri)``, long after the
    live copy changed. It is left out for snapshots that cannot be addressed yet (a csi snapshot without a handle).
    """
    from mlflow.entities import RunTag

    role = normalize_role(role)
    client = _client(client)
    run_id = _run_id(run_id)
    artifact_uri = None
    if artifact_path is not None:
        from mlflow_anf.snapshots.uri import InvalidSnapshotUri, snapshot_artifact_uri

        try:
            artifact_uri = snapshot_artifact_uri(snapshot, artifact_path)
        except InvalidSnapshotUri as exc:
            log.warning("no artifact URI for snapshot %s: %s", snapshot.ref, exc)
    ref = SnapshotRef.from_snapshot(snapshot, role, artifact_uri=artifact_uri)
    tags = ref.tags()
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    if ref.role == ROLE_DATA:
        client.log_inputs(run_id, datasets=[snapshot_dataset_input(snapshot)])
    return ref


def snapshot_and_log(
    provider: SnapshotProvider | str,
    volume: str,
    role: str | SnapshotRole,
    run_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
    client: MlflowClient | None = None,
    artifact_path: str | None = None,
) -> Snapshot:
    """Snapshot *volume* labelled with the run, experiment and role, then :func:`log_snapshot` it.

    The run is looked up first, so a wrong run id creates nothing.
    """
    role = normalize_role(role)
    client = _client(client)
    run_id = _run_id(run_id)
    run = client.get_run(run_id)
    if isinstance(provider, str):
        from mlflow_anf.snapshots import get_provider

        provider = get_provider(provider)
    all_labels = {
        **dict(labels or {}),
        LABEL_RUN_ID: run_id,
        LABEL_EXPERIMENT_ID: str(run.info.experiment_id),
        LABEL_ROLE: role,
    }
    # Providers whose snapshots cannot carry labels (anf) are linked to the run by the MLflow tags alone.
    snapshot = provider.create(volume, name, labels=all_labels if getattr(provider, "supports_labels", True) else None)
    try:
        log_snapshot(snapshot, role, run_id=run_id, client=client, artifact_path=artifact_path)
    except Exception as exc:
        raise SnapshotError(
            f"snapshot {snapshot.ref} was created but logging it to run {run_id} failed: {exc}; "
            "log it again with mlflow_anf.log_snapshot, or delete it"
        ) from exc
    return snapshot


def get_run_snapshots(run_id: str, client: MlflowClient | None = None) -> dict[str, SnapshotRef]:
    """The snapshots run *run_id* recorded, by role (either tag layout; incomplete records raise)."""
    tags = _client(client).get_run(run_id).data.tags
    try:
        return parse_snapshot_tags(tags, strict=True, source=f"run {run_id}")
    except SnapshotTagError as exc:
        raise SnapshotError(str(exc)) from None


def restore(
    source: str | Snapshot | SnapshotRef,
    target: str,
    *,
    role: str | SnapshotRole = SnapshotRole.DATA,
    provider: SnapshotProvider | None = None,
    provider_options: Mapping[str, Any] | None = None,
    client: MlflowClient | None = None,
    wait: bool | None = None,
    timeout_s: float | None = None,
    verify: bool = True,
) -> str:
    """Restore a snapshot into the new volume *target*; returns the new volume id.

    *source* is a run id (its *role* snapshot), a :class:`SnapshotRef` or a :class:`Snapshot`. The provider is
    *provider*, or built from the record's provider name with *provider_options*. A recorded id or digest that no
    longer matches the provider's snapshot of that name raises :class:`SnapshotVerificationError`.

    *wait*, *timeout_s* and *verify* are the protocol's restore keywords (:meth:`SnapshotProvider.restore`);
    ``wait=None`` keeps the provider's own default (anf waits for the new volume, csi and local do not).
    """

    def _provider_for(name: str) -> SnapshotProvider:
        if provider is not None:
            if getattr(provider, "name", name) != name:
                raise ValueError(f"provider: snapshot belongs to provider {name!r}, got a {provider.name!r} provider")
            return provider
        from mlflow_anf.snapshots import get_provider

        return get_provider(name, **dict(provider_options or {}))

    if isinstance(source, Snapshot):
        prov = _provider_for(source.provider)
        snapshot = source
    else:
        if isinstance(source, SnapshotRef):
            ref = source
        else:
            role_name = normalize_role(role)
            refs = get_run_snapshots(source, client)
            if role_name not in refs:
                raise SnapshotNotFound(
                    f"run {source}: no {role_name!r} snapshot recorded (tags {snapshot_tag(role_name, 'ref')[:-4]}.*); "
                    f"recorded roles: {', '.join(refs) or 'none'}"
                )
            ref = refs[role_name]
        prov = _provider_for(ref.provider)
        snapshot = prov.get(ref.volume, ref.name)
        if ref.snapshot_id is not None and snapshot.id != ref.snapshot_id:
            raise SnapshotVerificationError(
                f"snapshot {ref.ref}: id is now {snapshot.id}, the run recorded {ref.snapshot_id} (name reused?)"
            )
        if ref.digest and snapshot.digest and snapshot.digest != ref.digest:
            raise SnapshotVerificationError(
                f"snapshot {ref.ref}: digest is now {snapshot.digest}, the run recorded {ref.digest}"
            )
    if wait is None:
        return prov.restore(snapshot, target, timeout_s=timeout_s, verify=verify)
    return prov.restore(snapshot, target, wait=wait, timeout_s=timeout_s, verify=verify)
