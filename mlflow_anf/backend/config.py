"""The ``mpijob`` backend configuration: one pydantic model, read from ``--backend-config`` (JSON file or string).

Every key is validated before anything is created: an unknown key, a bad value or an impossible combination raises
:class:`BackendConfigError` naming the key (``snapshot.model_pvc``, ``env.HF_TOKEN``, ...). Secrets never live in
this config: values come from Kubernetes Secrets through ``secret_env`` (rendered as ``secretKeyRef``). Everything
else goes into the pod spec, the run's tags and artifacts as written, so a plain value that looks like a credential
is refused, naming its key and never repeating the value (one detector for the product: :mod:`mlflow_anf.secrets`):
an ``env`` name like ``DB_PASS``/``AZURE_STORAGE_KEY``, an ``env`` value such as a URL with a password, any user info
or credential query parameter in ``tracking_uri``, a secret-named or secret-valued annotation, label or node
selector, a credential in ``mpi_args`` or any other string.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlflow_anf.backend.model_volume import (
    model_volume,
    mount_problems,
    warn_runai_namespace,
)
from mlflow_anf.backend.plain_secrets import _use_secret_env, plain_secrets  # noqa: F401  (re-exported)
from mlflow_anf.k8s.naming import (
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_key,
    is_valid_label_value,
)
from mlflow_anf.secrets import is_secret_name, redact_text, secret_in_value

# MLflow adds these keys to every backend config (mlflow.projects.utils.PROJECT_*); they are not ours.
MLFLOW_INTERNAL_KEYS = frozenset(
    {"ENV_MANAGER", "SYNCHRONOUS", "DOCKER_ARGS", "STORAGE_DIR", "build_image", "docker_auth",
     "_mlflow_local_backend_run_id"}
)

# Environment variables the backend sets itself on the pods.
RESERVED_ENV = frozenset(
    {"MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "K_MPI_JOB_ROLE", "MLFLOW_ANF_SECRET_ENV"}
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[mkMGTPE]|[eE][+-]?\d+)?$")
_IMAGE = re.compile(
    r"^(?P<name>[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*)"
    r"(:(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(@(?P<digest>sha256:[a-f0-9]{64}))?$"
)

#: length of the run-id suffix appended to ``job_name`` (``<job_name>-<run_id[:8]>``)
RUN_SUFFIX_LEN = 8


class BackendConfigError(ValueError):
    """The backend config is unusable. ``problems`` holds one ``"<key>: <what>"`` line per problem."""

    def __init__(self, problems: list[str], source: str = "backend config") -> None:
        # a format error may quote the rejected value, which may be a secret typed into the wrong key
        self.problems = problems = [redact_text(p) for p in problems]
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid mpijob {source}:\n{lines}")


def _check_quantity(value: str | None, what: str = "quantity") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _QUANTITY.match(value) or float(re.sub(r"[^0-9.].*$", "", value) or 0) <= 0:
        raise ValueError(f"{value!r} is not a positive Kubernetes {what} (e.g. '4', '500m', '16Gi')")
    return value


def _check_abs_path(value: str) -> str:
    if not value.startswith("/") or "\x00" in value or value.rstrip("/") == "":
        raise ValueError(f"{value!r} must be an absolute path other than '/'")
    return value.rstrip("/") or value


def _check_dns_subdomain(value: str) -> str:
    if not is_dns1123_subdomain(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes object name (DNS-1123: lower-case letters, digits, '-', '.')"
        )
    return value


def _check_labels(values: Mapping[str, str]) -> dict[str, str]:
    for key, val in values.items():
        if not is_label_key(key):
            raise ValueError(f"{key!r} is not a valid label key")
        if not is_valid_label_value(val):
            raise ValueError(
                f"value {val!r} of {key!r} is not a valid label value (<= 63 chars, alphanumeric, '-', '_', '.')"
            )
    return dict(values)


def _env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise ValueError("not a valid environment variable name")
    if name in RESERVED_ENV:
        raise ValueError("set by the backend itself")
    return name


def _plain_env_name(name: str) -> str:
    _env_name(name)
    if is_secret_name(name):
        raise ValueError(f"looks like a credential; {_use_secret_env(name)}")
    return name


EnvName = Annotated[str, AfterValidator(_env_name)]
AbsPath = Annotated[str, AfterValidator(_check_abs_path)]
PlainEnvName = Annotated[str, AfterValidator(_plain_env_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SecretRef(_Strict):
    """A key of a Kubernetes Secret in the job's namespace, rendered as ``valueFrom.secretKeyRef``."""

    secret: str = Field(description="Secret name")
    key: str = Field(description="key inside the Secret")
    optional: bool = False

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        return _check_dns_subdomain(v)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not re.match(r"^[-._a-zA-Z0-9]+$", v) or len(v) > 253:
            raise ValueError(f"{v!r} is not a valid Secret key")
        return v


class Toleration(_Strict):
    """A pod toleration, with Kubernetes' own field names (so one can paste it from a manifest)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty when operator is 'Exists'")
        if self.key is None and self.operator != "Exists":
            raise ValueError("an empty key needs operator 'Exists'")
        if self.tolerationSeconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds needs effect 'NoExecute'")
        return self


class SnapshotSettings(_Strict):
    """CSI VolumeSnapshots around the training: data before submitting, model after a successful launch."""

    data: bool = Field(default=False, description="snapshot the data PVC before submitting and record it on the run")
    model: bool = Field(default=False, description="snapshot the model PVC from the launcher after a successful run")
    snapshot_class: str | None = Field(default=None, description="VolumeSnapshotClass (default: the cluster default)")
    model_pvc: str | None = Field(default=None, description="PVC holding the trained model (default: data_pvc); "
                                  "output_dir must be on it (mlflow_anf.backend.model_volume)")
    model_mount_path: AbsPath | None = Field(default=None, description="mount path of a separate model_pvc (/models)")
    timeout_seconds: float = Field(default=600, gt=0, description="how long to wait for readyToUse")
    keep_last: int | None = Field(default=None, ge=1, description=(
        "after a successful run, delete the oldest mlflow-anf VolumeSnapshots of the run's PVCs beyond N "
        "(never this run's, nor one not yet ready); the launcher's account needs delete on volumesnapshots"))

    @field_validator("snapshot_class", "model_pvc")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else _check_dns_subdomain(v)


class MPIJobBackendConfig(_Strict):
    """Everything the ``mpijob`` backend needs; see ``docs/aks-anf.md`` for a worked example."""

    # where
    namespace: str = Field(description="namespace of the MPIJob (Run:AI: runai-<project> or the project's own)")
    kubeconfig: str | None = Field(
        default=None, description="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    kube_context: str | None = None
    job_name: str | None = Field(
        default=None, description="MPIJob name prefix (default: the MLproject name); '-<run id[:8]>' is appended")

    # what
    image: str = Field(description="prebuilt training image holding the project; pin a digest (image@sha256:...)")
    require_image_digest: bool = False
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    project_dir: str = Field(default="/workspace", description="directory of the MLproject inside the image")

    # how many
    processes: int = Field(default=1, ge=1, le=4096, description="total MPI processes (runai --processes)")
    slots_per_worker: int = Field(default=1, ge=1, le=64, description="MPI processes per worker pod")
    gpus_per_process: int = Field(default=1, ge=0, le=16, description="GPUs per process (runai --gpu)")
    gpu_resource: str = "nvidia.com/gpu"
    cpu: str | None = Field(default=None, description="CPU per worker pod (requests = limits)")
    memory: str | None = Field(default=None, description="memory per worker pod (requests = limits)")
    launcher_cpu: str = "1"
    launcher_memory: str = "2Gi"

    # storage
    data_pvc: str | None = Field(default=None, description="ReadWriteMany PVC with the dataset, mounted on every pod")
    data_mount_path: str = "/mnt"
    shm_size: str | None = Field(
        default="8Gi", description="size of a memory-backed /dev/shm (runai --large-shm); null: none")

    # environment
    env: dict[PlainEnvName, str] = Field(default_factory=dict, description="plain environment variables (no secrets)")
    secret_env: dict[EnvName, SecretRef] = Field(default_factory=dict, description="environment variables from Secrets")
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI as seen from the pods")

    # scheduling
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    scheduler: Literal["default", "runai"] = "default"
    runai_project: str | None = None
    priority_class: str | None = None
    service_account: str | None = Field(default=None, description="service account of launcher and workers")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    # MPI
    mpi_implementation: Literal["OpenMPI", "Intel", "MPICH"] = "OpenMPI"
    launcher: Literal["horovodrun", "mpirun"] = "horovodrun"
    mpi_args: list[str] = Field(default_factory=list, description="extra arguments for horovodrun/mpirun")
    launcher_creation_policy: Literal["AtStartup", "WaitForWorkersReady"] = "WaitForWorkersReady"
    clean_pod_policy: Literal["None", "Running", "All"] = "Running"
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    active_deadline_seconds: int | None = Field(default=None, gt=0)
    backoff_limit: int = Field(
        default=0, ge=0, le=100, description="launcher retries (each retry reruns the entry point)")

    # snapshots and client behaviour
    snapshot: SnapshotSettings = Field(default_factory=SnapshotSettings)
    wait: bool = Field(default=False, description="block in `mlflow run` until the job ends")
    follow_logs: bool = Field(default=False, description="stream the launcher log while waiting (implies wait)")
    submit_timeout_seconds: float = Field(
        default=300, gt=0, description="fail when no Created condition appears in time")
    poll_interval_seconds: float = Field(default=5, gt=0, le=300)
    cancel_timeout_seconds: float = Field(default=300, gt=0)
    wait_timeout_seconds: float | None = Field(default=604800, gt=0, description="wait() gives up (run FAILED, job "
                                               "cancelled) this long after submission; null: no bound")
    unschedulable_grace_seconds: float = Field(default=600, ge=0, description="a worker may stay Unschedulable or "
                                               "in image pull back-off this long before the run fails")
    api_max_attempts: int = Field(
        default=5, ge=1, le=20, description="attempts per Kubernetes API call (429/5xx/reset)")
    api_backoff_seconds: float = Field(default=0.5, ge=0, le=60, description="first retry delay; doubles after")

    # --- field validators -------------------------------------------------------------------------------------
    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not is_dns1123_label(v):
            raise ValueError(f"{v!r} is not a valid namespace (DNS-1123 label: lower-case letters, digits, '-', <= 63)")
        return v

    @field_validator("kubeconfig", "kube_context")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c in v for c in "\x00\n\r")):
            raise ValueError("must be a non-empty single line (leave it out for the default)")
        return v

    @field_validator("job_name")
    @classmethod
    def _job_name(cls, v: str | None) -> str | None:
        if v is not None and not is_dns1035_label(v):
            raise ValueError(f"{v!r} is not a valid job name (DNS-1035 label: starts with a letter; a-z, 0-9, '-')")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        what = secret_in_value(v)
        if what:
            raise ValueError(f"holds {what}; registry credentials go in a Secret named in image_pull_secrets")
        if not _IMAGE.match(v):
            raise ValueError(f"{v!r} is not a valid image reference (registry/repo[:tag][@sha256:<64 hex>])")
        return v

    @field_validator("image_pull_secrets", "data_pvc", "priority_class", "service_account")
    @classmethod
    def _object_names(cls, v: Any) -> Any:
        if isinstance(v, list):
            for name in v:
                _check_dns_subdomain(name)
        elif v is not None:
            _check_dns_subdomain(v)
        return v

    @field_validator("project_dir", "data_mount_path")
    @classmethod
    def _abs(cls, v: str) -> str:
        return _check_abs_path(v)

    @field_validator("cpu", "memory", "launcher_cpu", "launcher_memory", "shm_size")
    @classmethod
    def _quantities(cls, v: str | None) -> str | None:
        return _check_quantity(v)

    @field_validator("gpu_resource")
    @classmethod
    def _gpu_resource(cls, v: str) -> str:
        if not is_label_key(v) or "/" not in v:
            raise ValueError(f"{v!r} is not an extended resource name like 'nvidia.com/gpu'")
        return v

    @field_validator("tracking_uri")
    @classmethod
    def _tracking_uri(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            urlsplit(v)
        except ValueError as exc:
            raise ValueError(f"not a valid URL ({exc})") from None
        databricks = v in ("databricks", "databricks-uc") or v.startswith(("databricks:", "databricks-uc:"))
        if "://" not in v and not databricks:
            raise ValueError("needs a scheme: http://, https://, postgresql://, sqlite:///, databricks, ...")
        return v

    @field_validator("node_selector", "labels")
    @classmethod
    def _label_maps(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_labels(v)

    @field_validator("annotations")
    @classmethod
    def _annotation_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not is_label_key(key):
                raise ValueError(f"{key!r} is not a valid annotation key")
        return v

    @field_validator("runai_project")
    @classmethod
    def _runai_project(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 57 or not is_dns1123_label(v)):
            raise ValueError(f"{v!r} is not a valid Run:AI project name (DNS-1123 label)")
        return v

    @field_validator("mpi_args")
    @classmethod
    def _mpi_args(cls, v: list[str]) -> list[str]:
        for arg in v:
            if "\x00" in arg or "\n" in arg:
                raise ValueError(f"{arg!r} contains a NUL or newline")
        return v

    # --- cross-field checks ----------------------------------------------------------------------------------
    @model_validator(mode="after")
    def _combinations(self) -> MPIJobBackendConfig:
        problems = plain_secrets(self.model_dump(mode="json"))
        if self.processes % self.slots_per_worker:
            problems.append(("processes", f"{self.processes} is not a multiple of "
                                          f"slots_per_worker={self.slots_per_worker}"))
        if self.scheduler == "runai":
            if not self.runai_project:
                problems.append(("runai_project", "required when scheduler is 'runai'"))
            elif self.namespace != f"runai-{self.runai_project}":
                warn_runai_namespace(self.runai_project, self.namespace)  # a project may use any namespace
        elif self.runai_project:
            problems.append(("runai_project", "only used with scheduler 'runai'"))
        if self.require_image_digest and "@sha256:" not in self.image:
            problems.append(("image", "require_image_digest is set but the image has no @sha256: digest"))
        if self.snapshot.data and not self.data_pvc:
            problems.append(("snapshot.data", "needs data_pvc (the PVC to snapshot)"))
        if self.snapshot.model and not (self.snapshot.model_pvc or self.data_pvc):
            problems.append(("snapshot.model", "needs snapshot.model_pvc or data_pvc"))
        if self.snapshot.model_pvc and not self.snapshot.model:
            problems.append(("snapshot.model_pvc", "set but snapshot.model is false"))
        problems += mount_problems(self)
        if self.data_pvc is None and self.data_mount_path != "/mnt":
            problems.append(("data_mount_path", "set but data_pvc is not"))
        overlap = sorted(set(self.env) & set(self.secret_env))
        if overlap:
            problems.append((f"secret_env.{overlap[0]}", "also set in env"))
        if self.data_pvc and self.shm_size and self.data_mount_path == "/dev/shm":
            problems.append(("data_mount_path", "collides with the /dev/shm volume"))
        if self.job_name is not None:
            longest = f"{self.job_name}-{'x' * RUN_SUFFIX_LEN}-worker-{self.workers - 1}"
            if len(longest) > 63:
                problems.append(("job_name", f"too long: worker host name {longest!r} would exceed 63 characters"))
        if problems:
            raise _CrossFieldError(problems)
        return self

    # --- derived values --------------------------------------------------------------------------------------
    def model_volume(self) -> tuple[str, str] | None:
        return model_volume(self)  # (pvc, mount path) of the model snapshot's volume

    @property
    def workers(self) -> int:
        """Number of worker pods."""
        return self.processes // self.slots_per_worker

    def secret_env_names(self) -> list[str]:
        return sorted(self.secret_env)

    def public_dict(self) -> dict[str, Any]:
        """The config as JSON-able data for the run's tags; it holds no secret values by construction."""
        return self.model_dump(mode="json", exclude_defaults=True)


class _CrossFieldError(ValueError):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))


# --- loading ---------------------------------------------------------------------------------------------------

def _model_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last element of *loc* (for 'did you mean' hints)."""
    model: Any = MPIJobBackendConfig
    for part in loc[:-1]:
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            ann = model.model_fields[part].annotation
            # unwrap list[X] / dict[str, X] / X | None to the model inside, if any
            inner = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else (inner[0] if inner else None)
        elif isinstance(part, (int, str)) and model is not None:
            continue  # list index or dict key: stay on the item model
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _problems_from(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]")))
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossFieldError):
            prefix = _format_loc(loc)
            for key, msg in ctx_error.problems:
                problems.append(f"{prefix + '.' if loc else ''}{key}: {msg}")
            continue
        key = _format_loc(loc)
        if err["type"] == "extra_forbidden":
            model = _model_for(loc)
            hint = ""
            if model is not None:
                close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key}: unknown key{hint}")
        elif err["type"] == "missing":
            problems.append(f"{key}: required")
        else:
            msg = err["msg"]
            msg = msg[len("Value error, "):] if msg.startswith("Value error, ") else msg
            problems.append(f"{key}: {msg}")
    return problems


def split_mlflow_options(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate MLflow's own keys (``ENV_MANAGER``, ``STORAGE_DIR``, ...) from the user's backend config."""
    user = {k: v for k, v in raw.items() if k not in MLFLOW_INTERNAL_KEYS}
    mlflow_opts = {k: v for k, v in raw.items() if k in MLFLOW_INTERNAL_KEYS}
    return user, mlflow_opts


def check_mlflow_options(opts: Mapping[str, Any]) -> list[str]:
    """Problems with ``mlflow run`` options this backend cannot honour (it runs a prebuilt image)."""
    problems = []
    if opts.get("build_image"):
        problems.append("--build-image: the mpijob backend runs the prebuilt `image`; build and push it yourself")
    if opts.get("DOCKER_ARGS"):
        problems.append("-A/--docker-args: not used by the mpijob backend (set pod options in the backend config)")
    if opts.get("docker_auth"):
        problems.append("docker_auth: not used by the mpijob backend (use image_pull_secrets)")
    env_manager = opts.get("ENV_MANAGER")
    if env_manager not in (None, "local"):
        problems.append(f"--env-manager={env_manager}: the image provides the environment; use 'local' or omit it")
    return problems


def _read_source(value: Mapping[str, Any] | str | Path) -> tuple[Any, str]:
    """Return (parsed JSON data, a name for error messages)."""
    if isinstance(value, Mapping):
        return dict(value), "backend config"
    text: str
    source: str
    looks_like_path = isinstance(value, str) and value.strip()[:1] not in ("{", "[") and value.endswith(".json")
    if isinstance(value, Path) or looks_like_path:
        path = Path(value)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BackendConfigError([f"{path}: file not found"], source) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BackendConfigError([f"{path}: cannot read: {exc}"], source) from None
    elif isinstance(value, str):
        text, source = value, "backend config (JSON string)"
    else:
        raise BackendConfigError([f"expected a mapping, a JSON string or a .json path, got {type(value).__name__}"])
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = (f"{source}:{exc.lineno}:{exc.colno}" if source.endswith(".json")
                 else f"line {exc.lineno} column {exc.colno}")
        raise BackendConfigError([f"{where}: invalid JSON: {exc.msg}"], source) from None
    return data, source


def load_backend_config(value: Mapping[str, Any] | str | Path) -> MPIJobBackendConfig:
    """Validate a backend config given as a mapping (what MLflow passes), a JSON string or a ``.json`` path.

    MLflow's own keys are checked (``--build-image`` etc. are refused) and dropped. Raises
    :class:`BackendConfigError` listing every problem, each naming its key.
    """
    data, source = _read_source(value)
    if not isinstance(data, dict):
        raise BackendConfigError([f"(top level): expected a JSON object, got {type(data).__name__}"], source)
    user, mlflow_opts = split_mlflow_options(data)
    problems = check_mlflow_options(mlflow_opts)
    try:
        config = MPIJobBackendConfig.model_validate(user)
    except ValidationError as exc:
        problems.extend(_problems_from(exc))
        raise BackendConfigError(problems, source) from None
    if problems:
        raise BackendConfigError(problems, source)
    return config
