"""The run vocabulary: every name mlflow-anf writes where other programs (and later versions of itself) read it.

One module owns every MLflow tag key, artifact path, Kubernetes label and annotation key, and the one model of a
snapshot reference with its one parser. Nothing else in the code base spells ``"mlflow_anf.…"`` or ``"mlflow-anf/…"``:
a newcomer who renames a tag changes it here, and the reader of old runs (:data:`LEGACY_SNAPSHOT_TAGS`) is next to it.

Layout of the tags on a run::

    mlflow_anf.snapshot.<role>             one JSON tag per snapshot the run used (role: data, model, ...)
    mlflow_anf.code.* / .image.* / .provenance / .world_size     what ran (provenance)
    mlflow_anf.backend.* / .launcher.*     how it ran on Kubernetes (mpijob backend, launcher pod)
    mlflow_anf.reproduce.* / .reproduces / .reproduced_by        reproduction links

and two params that MLflow's compare view shows side by side (:data:`PARAM_DATA_SNAPSHOT`, :data:`PARAM_DATA_DIGEST`).

Runs written before the JSON tag carry one tag per field, ``mlflow_anf.snapshot.<role>.<field>``; runs written before
the ``snapshot`` level existed carry ``mlflow_anf.<role>.<field>``. :func:`parse_snapshot_tags` reads all three (the
JSON tag wins field by field, then the per-field tags, then the oldest layout). A role can never collide with
``code``, ``image``, ``backend`` ... any more: those names are refused as roles (:data:`RESERVED_ROLES`) so an old-layout reader cannot mistake them.

Pure: no MLflow, no Kubernetes; importing it has no side effects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

# ---------------------------------------------------------------------------------------------------- limits
#: MLflow's limit on a run tag's value: ``MAX_TAG_VAL_LENGTH = 8000`` (mlflow/mlflow, mlflow/utils/validation.py:73),
#: the width of the SQL store's column (``SqlTag.value = Column(String(8000))``,
#: mlflow/store/tracking/dbmodels/models.py:446). Every tag value mlflow-anf writes is clipped to it with :func:`clip`.
TAG_VALUE_MAX = 8000


def clip(value: str, limit: int = TAG_VALUE_MAX) -> str:
    """*value* cut to *limit* characters, marked with ``...`` where it was cut."""
    return value if len(value) <= limit else value[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------------ tag keys
TAG_NAMESPACE = "mlflow_anf"


def tag(*parts: str) -> str:
    """The tag key ``mlflow_anf.<part>.<part>...``."""
    return ".".join((TAG_NAMESPACE, *parts))


# provenance (mlflow_anf.provenance)
TAG_PROVENANCE = tag("provenance")  # value: the artifact path of provenance.json
TAG_CODE_KIND = tag("code", "kind")
TAG_CODE_COMMIT = tag("code", "commit")
TAG_CODE_DIRTY = tag("code", "dirty")
TAG_CODE_DIGEST = tag("code", "digest")
TAG_IMAGE = tag("image", "ref")
TAG_IMAGE_DIGEST = tag("image", "digest")
TAG_WORLD_SIZE = tag("world_size")

# the mpijob backend (mlflow_anf.backend) and the launcher pod (mlflow_anf.backend.launcher)
TAG_BACKEND_PREFIX = tag("backend") + "."
TAG_BACKEND_JOB = tag("backend", "mpijob")  # value: namespace/name of the MPIJob
TAG_BACKEND_IMAGE = tag("backend", "image")
TAG_BACKEND_CONFIG = tag("backend", "config")  # the secret-free backend config, JSON (when it fits)
TAG_BACKEND_CONDITION = tag("backend", "condition")
TAG_BACKEND_ERROR = tag("backend", "error")
#: snapshot roles the backend takes itself (``data``: before submitting; ``model``: from the launcher after training),
#: comma-separated; training code skips them (it would take each twice)
TAG_BACKEND_SNAPSHOT_ROLES = tag("backend", "snapshot_roles")
TAG_LAUNCHER_PREFIX = tag("launcher") + "."
TAG_LAUNCHER_EXIT_CODE = tag("launcher", "exit_code")
TAG_LAUNCHER_ERROR = tag("launcher", "error")

# reproduction (mlflow_anf.reproduce)
TAG_REPRODUCES = tag("reproduces")
TAG_REPRODUCED_BY = tag("reproduced_by")
TAG_REPRODUCE_OVERRIDES = tag("reproduce", "overrides")
TAG_REPRODUCE_REWRITTEN = tag("reproduce", "rewritten")
TAG_REPRODUCE_RESTORED = tag("reproduce", "restored")
TAG_REPRODUCE_CODE = tag("reproduce", "code")
TAG_REPRODUCE_IMAGE = tag("reproduce", "image")
TAG_REPRODUCE_IDENTICAL = tag("reproduce", "identical")
TAG_REPRODUCE_NOTES = tag("reproduce", "notes")

# MLflow's own tags that mlflow-anf reads or sets as MLflow's project runner does (mlflow/utils/mlflow_tags.py)
MLFLOW_TAG_ENTRY_POINT = "mlflow.project.entryPoint"
MLFLOW_TAG_BACKEND = "mlflow.project.backend"
MLFLOW_TAG_ENV = "mlflow.project.env"
MLFLOW_TAG_SOURCE_TYPE = "mlflow.source.type"
MLFLOW_TAG_SOURCE_NAME = "mlflow.source.name"
MLFLOW_TAG_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_TAG_USER = "mlflow.user"

# ------------------------------------------------------------------------------------------- artifact paths
ARTIFACT_DIR = "mlflow_anf"
ARTIFACT_PROVENANCE = f"{ARTIFACT_DIR}/provenance.json"
ARTIFACT_MPIJOB = f"{ARTIFACT_DIR}/mpijob.yaml"  # the manifest the mpijob backend submitted (secrets redacted)
ARTIFACT_BACKEND_CONFIG = f"{ARTIFACT_DIR}/backend-config.json"  # its config (also a tag when it fits)
ARTIFACT_LAUNCHER_LOG = "launcher.log"  # the launcher pod's output
ARTIFACT_OVERLAYS = "overlays"  # lanedet's prediction overlays

# ------------------------------------------------------------------------------- Kubernetes labels, annotations
#: The one label domain. ``mlflow-anf`` is a valid DNS subdomain, so ``mlflow-anf/<name>`` is a valid Kubernetes
#: label key (prefix: DNS subdomain of at most 253 characters; name: at most 63 characters,
#: kubernetes/kubernetes staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go IsQualifiedName).
#: VolumeSnapshots written by every earlier version carry it, so selectors keep finding them. (MPIJobs once carried
#: ``mlflow-anf.io/…``; nothing selects them by it, and they do not outlive their run.)
LABEL_DOMAIN = "mlflow-anf"


def label(name: str) -> str:
    """The label or annotation key ``mlflow-anf/<name>``."""
    return f"{LABEL_DOMAIN}/{name}"


MANAGED_BY = "mlflow-anf"  # value of app.kubernetes.io/managed-by
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_RUN_ID = label("run-id")
LABEL_EXPERIMENT_ID = label("experiment-id")
LABEL_ROLE = label("role")
LABEL_SOURCE_PVC = label("source-pvc")
LABEL_ENTRY_POINT = label("entry-point")
ANNOTATION_CREATED_AT = label("created-at")
ANNOTATION_SOURCE_PVC = label("source-pvc")
ANNOTATION_SOURCE_STORAGE_CLASS = label("source-storage-class")
ANNOTATION_RESTORED_FROM = label("restored-from")
ANNOTATION_TRACKING_URI = label("tracking-uri")
ANNOTATION_PROJECT = label("project")

#: Azure resource tag on a volume restored from a snapshot (ARM tag names allow no '/', so not a label key).
ARM_TAG_RESTORED_FROM = "mlflow-anf-restored-from"

# ------------------------------------------------------------------------------------------------ run params
#: The run's data snapshot as params: MLflow's compare view lists params (not datasets, not tags first), so two runs
#: on different data show their snapshots and digests side by side. The digest is the dataset digest the Datasets
#: column shows (:func:`mlflow_anf.tracking.dataset_digest`). Recorded lineage, not inputs: reproduce passes no
#: param of this namespace to the entry point.
PARAM_PREFIX = TAG_NAMESPACE + "."
PARAM_DATA_SNAPSHOT = tag("data", "snapshot")
PARAM_DATA_DIGEST = tag("data", "digest")
#: Tags of a registered model version (:func:`mlflow_anf.tracking.tag_model_version`): MLflow's version page shows
#: its source run and model as links and the version's tags, no metrics and no datasets. The same keys as the params
#: for the snapshot and its dataset digest, the dataset as ``name (digest)``; the test metrics under their own names.
VERSION_TAG_DATA_SNAPSHOT = PARAM_DATA_SNAPSHOT
VERSION_TAG_DATASET = tag("dataset")

# ------------------------------------------------------------------------------------ snapshot references
SNAPSHOT_LEVEL = "snapshot"
SNAPSHOT_FIELDS = ("snapshot_id", "name", "provider", "volume", "digest", "ref", "created", "artifact_uri")
REQUIRED_SNAPSHOT_FIELDS = ("snapshot_id", "name", "provider", "volume", "ref")
#: Second-level tag names that are not snapshot roles (old runs had roles on this level too).
RESERVED_ROLES = frozenset({SNAPSHOT_LEVEL, "code", "image", "backend", "launcher", "reproduce", "provenance",
                            "reproduces", "reproduced_by", "world_size"})
_ROLE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
ROLE_DATA = "data"
ROLE_MODEL = "model"


class SnapshotTagError(ValueError):
    """A run's snapshot tags that cannot be read (strict parsing); the message names the tag."""


def normalize_role(role: Any) -> str:
    """The role as a tag-safe word (``data``, ``model`` or another lower-case word); enums give their value."""
    value = getattr(role, "value", role)
    if not isinstance(value, str) or not _ROLE_RE.match(value) or value in RESERVED_ROLES:
        raise ValueError(
            f"role: {role!r} is not a valid snapshot role (lower-case letter, then letters, digits, '-' or '_'; "
            f"not one of {', '.join(sorted(RESERVED_ROLES))}; usually data or model)"
        )
    return value


def snapshot_tag(role: Any, field: str) -> str:
    """``mlflow_anf.snapshot.<role>.<field>``."""
    if field not in SNAPSHOT_FIELDS:
        raise ValueError(f"field: {field!r} is not a snapshot tag field ({', '.join(SNAPSHOT_FIELDS)})")
    return tag(SNAPSHOT_LEVEL, normalize_role(role), field)


def snapshot_record_tag(role: Any) -> str:
    """``mlflow_anf.snapshot.<role>``: the one tag holding a snapshot record as JSON."""
    return tag(SNAPSHOT_LEVEL, normalize_role(role))


def legacy_snapshot_tag(role: str, field: str) -> str:
    """``mlflow_anf.<role>.<field>``: how runs recorded before the ``snapshot`` level named the same fact."""
    return tag(role, field)


class SnapshotRef(BaseModel):
    """What a run records about one snapshot it used. The one model of it: tags, provenance and reproduce use it.

    ``snapshot_id`` is ``None`` only where the record came from a lenient source that did not keep it
    (``provenance.json`` written before it was recorded there).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: str
    provider: str
    volume: str
    name: str
    ref: str
    snapshot_id: str | None = None
    digest: str | None = None
    created: datetime | None = None
    artifact_uri: str | None = None

    @classmethod
    def from_snapshot(cls, snapshot: Any, role: Any, artifact_uri: str | None = None) -> SnapshotRef:
        """From a :class:`mlflow_anf.snapshots.base.Snapshot` (duck-typed: this module imports no provider)."""
        return cls(role=normalize_role(role), provider=snapshot.provider, volume=snapshot.volume, name=snapshot.name,
                   snapshot_id=snapshot.id, ref=snapshot.ref, digest=snapshot.digest, created=snapshot.created,
                   artifact_uri=artifact_uri)

    def fields(self) -> dict[str, str]:
        """The recorded fields as strings (fields that are unknown are left out)."""
        values = {  # what the UI's truncated tag value shows first comes first: the snapshot, its content
            "ref": self.ref, "digest": self.digest, "name": self.name, "snapshot_id": self.snapshot_id,
            "provider": self.provider, "volume": self.volume,
            "created": self.created.isoformat() if self.created else None, "artifact_uri": self.artifact_uri,
        }
        return {k: v for k, v in values.items() if v is not None}

    def tags(self) -> dict[str, str]:
        """The run tag recording this reference: ``mlflow_anf.snapshot.<role>`` = its fields as compact JSON.

        A record too long for one tag value (a volume path of thousands of characters) is written one tag per field
        instead (:meth:`field_tags`, each clipped), the layout :func:`parse_snapshot_tags` reads as well."""
        value = json.dumps(self.fields(), separators=(",", ":"))
        if len(value) > TAG_VALUE_MAX:
            return self.field_tags()
        return {snapshot_record_tag(self.role): value}

    def field_tags(self) -> dict[str, str]:
        """The per-field layout (``mlflow_anf.snapshot.<role>.<field>``), written before the JSON tag."""
        return {snapshot_tag(self.role, k): clip(v) for k, v in self.fields().items()}


def _record_fields(key: str, value: str) -> dict[str, str]:
    """The fields of a JSON snapshot record tag; a value that is not a JSON object of strings raises naming *key*."""
    try:
        record = json.loads(value)
    except ValueError as exc:
        raise SnapshotTagError(f"{key}: not a JSON snapshot record ({exc})") from None
    if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
        raise SnapshotTagError(f"{key}: not a JSON object of strings")
    return {k: v for k, v in record.items() if k in SNAPSHOT_FIELDS}


def _group_snapshot_tags(tags: Mapping[str, str], strict: bool) -> dict[str, dict[str, str]]:
    """``{role: {field: value}}`` from all layouts; the JSON tag wins field by field, then the per-field tags."""
    records: dict[str, dict[str, str]] = {}
    current: dict[str, dict[str, str]] = {}
    legacy: dict[str, dict[str, str]] = {}
    for key, value in tags.items():
        parts = key.split(".")
        if parts[0] != TAG_NAMESPACE:
            continue
        if len(parts) == 3 and parts[1] == SNAPSHOT_LEVEL:
            try:
                records[parts[2]] = _record_fields(key, value)
            except SnapshotTagError:
                if strict:
                    raise
        elif len(parts) == 4 and parts[1] == SNAPSHOT_LEVEL and parts[3] in SNAPSHOT_FIELDS:
            current.setdefault(parts[2], {})[parts[3]] = value
        elif len(parts) == 3 and parts[1] not in RESERVED_ROLES and parts[2] in SNAPSHOT_FIELDS:
            legacy.setdefault(parts[1], {})[parts[2]] = value
    # A legacy group counts only where it is a snapshot record (it has an id): mlflow_anf.<x>.name of some
    # other meaning is not one.
    grouped = {role: dict(fields) for role, fields in legacy.items() if "snapshot_id" in fields}
    for layer in (current, records):
        for role, fields in layer.items():
            grouped.setdefault(role, {}).update(fields)
    return grouped


def parse_snapshot_tags(tags: Mapping[str, str], *, strict: bool = True,
                        source: str = "run") -> dict[str, SnapshotRef]:
    """The snapshot references in a run's *tags*, by role, read from the JSON tag and both earlier layouts.

    ``strict=True``: an incomplete or malformed group raises :class:`SnapshotTagError` naming the missing tags.
    ``strict=False``: such a group is skipped (for listings and diffs that must show what they can).
    """
    refs: dict[str, SnapshotRef] = {}
    for role, fields in sorted(_group_snapshot_tags(tags, strict).items()):
        missing = [f for f in REQUIRED_SNAPSHOT_FIELDS if not fields.get(f)]
        if missing:
            if strict:
                raise SnapshotTagError(
                    f"{source}: snapshot tags for role {role!r} are incomplete; missing field(s) "
                    + ", ".join(missing) + f" (tag {snapshot_record_tag(role)}, or {snapshot_tag(role, missing[0])})"
                )
            continue
        try:
            refs[role] = SnapshotRef(role=role, **fields)
        except ValidationError as exc:
            if strict:
                problems = "; ".join(f"{snapshot_record_tag(role)} field {e['loc'][0]}: {e['msg']}"
                                     for e in exc.errors(include_url=False, include_input=False))
                raise SnapshotTagError(f"{source}: bad snapshot tags for role {role!r}: {problems}") from None
    return refs
