"""MLflow adapter: record on a run which snapshots it used, and find (and restore) them again.

Per role (``data``, ``model``, ...) a run carries one tag ``mlflow_anf.snapshot.<role>`` whose value is the JSON
record of the fields ``snapshot_id``, ``name``, ``provider``, ``volume``, ``digest``, ``ref`` and ``created`` (and
``artifact_uri`` where a path inside the snapshot was given); the keys, the model and the parser live in
:mod:`mlflow_anf.vocabulary`, which also reads runs recorded in the earlier per-field layouts.

A ``data`` snapshot is also what MLflow shows as the run's data:

* a dataset input (source :class:`~mlflow_anf.dataset_source.SnapshotDatasetSource`, context ``training``) for the
  Datasets column. Its *name* is the volume's own name (:func:`dataset_name`), its *digest* the head of the
  snapshot's content digest (:func:`dataset_digest`). MLflow keeps one dataset per experiment, name and digest
  (``SqlAlchemyStore._log_inputs_impl``, mlflow 3.18, mlflow/store/tracking/sqlalchemy_store.py:2518-2567), so runs on
  byte-identical data share one dataset;
* the params ``mlflow_anf.data.snapshot`` and ``mlflow_anf.data.digest``, which the compare view of runs lists;
* the dataset of the test metrics of the run's logged model (:func:`log_model_metrics`), which the logged-model page
  lists as "Datasets used".

MLflow is imported inside the functions only.
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
    PARAM_DATA_DIGEST,
    PARAM_DATA_SNAPSHOT,
    ROLE_DATA,
    SNAPSHOT_FIELDS,
    TAG_NAMESPACE,
    VERSION_TAG_DATA_SNAPSHOT,
    VERSION_TAG_DATASET,
    SnapshotRef,
    SnapshotTagError,
    clip,
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


def dataset_name(snapshot: Snapshot | SnapshotRef) -> str:
    """The name MLflow shows for a snapshot's dataset: the volume's own name, the last part of its id (local: the
    directory's name; csi: the PVC of ``namespace/pvc``; anf: the volume of ``account/pool/volume``). Not the
    snapshot's name, which carries its time: two snapshots of unchanged data are one dataset."""
    return snapshot.volume.rstrip("/").rsplit("/", 1)[-1] or snapshot.volume


def dataset_digest(snapshot: Snapshot) -> str:
    """The short digest MLflow shows for a snapshot dataset: the head of the snapshot's content digest (hex part).

    Only the local provider computes a content digest (the sha256 over its manifest). A csi or anf snapshot records
    none: nothing the storage reports identifies content (a csi snapshot handle, an ANF snapshot GUID name one
    snapshot), so the digest stands for the snapshot itself, from its handle where it has one, else its id; two
    snapshots of the same data are then two datasets. See docs/lineage.md."""
    if snapshot.digest:
        return snapshot.digest.rsplit(":", 1)[-1][:DATASET_DIGEST_CHARS]
    identity = snapshot.details.get("snapshot_handle") or snapshot.id
    return hashlib.sha256(f"{snapshot.ref}#{identity}".encode()).hexdigest()[:DATASET_DIGEST_CHARS]


def snapshot_dataset_input(snapshot: Snapshot, context: str = DATASET_CONTEXT) -> DatasetInput:
    """The MLflow dataset input for *snapshot* (name = the volume's name, digest = content digest head, source =
    SnapshotDatasetSource; the profile names the snapshot)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    from mlflow_anf.dataset_source import SnapshotDatasetSource

    source = SnapshotDatasetSource.from_snapshot(snapshot)
    profile = {"ref": snapshot.ref, "snapshot": snapshot.name}
    for key in ("files", "bytes"):
        if key in snapshot.details:
            profile[key] = snapshot.details[key]
    if snapshot.size_bytes is not None:
        profile.setdefault("bytes", snapshot.size_bytes)
    dataset = Dataset(
        name=dataset_name(snapshot),
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

    With *artifact_path* (a path inside the snapshot, e.g. ``model``), the record's ``artifact_uri`` field
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
    params = _data_params(snapshot, client.get_run(run_id).data.params) if ref.role == ROLE_DATA else []
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()], params=params)
    if ref.role == ROLE_DATA:
        client.log_inputs(run_id, datasets=[snapshot_dataset_input(snapshot)])
    return ref


def _data_params(snapshot: Snapshot, logged: Mapping[str, str]) -> list[Any]:
    """The params naming the data snapshot, unless the run has them already: MLflow refuses to change a param
    ("Changing param values is not allowed", ``SqlAlchemyStore._log_params``, mlflow 3.18,
    mlflow/store/tracking/sqlalchemy_store.py:2120), so a run that logs a second data snapshot keeps the first one's
    params while its tag names the second."""
    from mlflow.entities import Param

    wanted = {PARAM_DATA_SNAPSHOT: snapshot.ref, PARAM_DATA_DIGEST: dataset_digest(snapshot)}
    if any(key in logged for key in wanted):
        if any(logged.get(key) != value for key, value in wanted.items()):
            log.warning("run already names data snapshot %s in its params; %s is recorded in its tags only",
                        logged.get(PARAM_DATA_SNAPSHOT), snapshot.ref)
        return []
    return [Param(key, value) for key, value in wanted.items()]


def run_dataset(run: Any) -> tuple[str, str] | None:
    """``(name, digest)`` of the dataset input of *run* (an MLflow ``Run``) that is its data snapshot, else None."""
    from mlflow_anf.dataset_source import SOURCE_TYPE

    inputs = run.inputs.dataset_inputs if run.inputs else []
    for dataset_input in inputs:
        if dataset_input.dataset.source_type == SOURCE_TYPE:
            return dataset_input.dataset.name, dataset_input.dataset.digest
    return None


def log_model_metrics(run_id: str, model_id: str, metrics: Mapping[str, float], *,
                      client: MlflowClient | None = None, step: int = 0) -> tuple[str, str] | None:
    """Log *metrics* on run *run_id* as metrics of its logged model *model_id*, measured on the run's data snapshot
    dataset; returns that dataset's ``(name, digest)`` (``None`` when the run logged no data snapshot: the metrics
    are then the model's without a dataset).

    MLflow keeps a metric logged with a model id as the model's too (``SqlAlchemyStore.log_batch`` →
    ``_log_model_metrics``, mlflow/store/tracking/sqlalchemy_store.py:2440 and 1540-1590) with its dataset name and
    digest; the logged-model page lists the datasets of the model's metrics as "Datasets used" (the UI's
    ExperimentLoggedModelDetailsPage reduces ``loggedModel.data.metrics`` by dataset name and digest)."""
    from mlflow.entities import Metric
    from mlflow.utils.time import get_current_time_millis

    client = _client(client)
    dataset = run_dataset(client.get_run(run_id))
    name, digest = dataset if dataset is not None else (None, None)
    now = get_current_time_millis()
    batch = [Metric(key=k, value=float(v), timestamp=now, step=step, model_id=model_id, dataset_name=name,
                    dataset_digest=digest) for k, v in sorted(metrics.items())]
    client.log_batch(run_id, metrics=batch)
    return dataset


def tag_model_version(name: str, version: str | int, client: MlflowClient | None = None) -> dict[str, str]:
    """Tag registered model version *name*/*version* with what its page cannot show otherwise: the data snapshot of
    its source run (``mlflow_anf.data.snapshot``, ``mlflow_anf.dataset`` = ``name (digest)``) and the metrics of its
    source logged model (``test_accuracy`` ... as tags, 4 significant digits). Returns the tags set.

    MLflow 3.18's model version page (ModelVersionView) shows the source run and source model as links, the version's
    tags and its schema; the metrics and "Datasets used" are on the logged model's page. Call it after registering
    (``mlflow.register_model`` / ``MlflowClient.create_model_version``)."""
    client = _client(client)
    mv = client.get_model_version(name, str(version))
    tags: dict[str, str] = {}
    if mv.run_id:
        refs = parse_snapshot_tags(client.get_run(mv.run_id).data.tags, strict=False)
        if ROLE_DATA in refs:
            tags[VERSION_TAG_DATA_SNAPSHOT] = refs[ROLE_DATA].ref
        dataset = run_dataset(client.get_run(mv.run_id))
        if dataset is not None:
            tags[VERSION_TAG_DATASET] = f"{dataset[0]} ({dataset[1]})"
    model_id = getattr(mv, "model_id", None) or _logged_model_of(mv.source)
    if model_id:
        for metric in client.get_logged_model(model_id).metrics or []:
            tags[metric.key] = format(metric.value, ".4g")
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, clip(value))
    return tags


def _logged_model_of(source: str | None) -> str | None:
    """The logged model id of a version whose source is ``models:/<model_id>``: the SQL registry keeps the source but
    not the ``model_id`` it was given (``SqlAlchemyStore.create_model_version``, mlflow 3.18,
    mlflow/store/model_registry/sqlalchemy_store.py:1017-1070, writes no model id column)."""
    prefix = "models:/"
    if not source or not source.startswith(prefix):
        return None
    rest = source[len(prefix):].strip("/")
    return rest if rest.startswith("m-") and "/" not in rest else None


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
