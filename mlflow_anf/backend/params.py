"""Entry-point parameters, checked before ``mlflow run --backend mpijob`` / ``mlflow-anf render`` submit anything.

MLflow itself checks little (a missing required parameter, a ``uri``): ``-P epochs=-1`` would only fail in the pods,
after a run was created, a data snapshot taken and GPUs scheduled. Three checks, in order, each error naming the
parameter (``-P epochs: ...``):

1. no secret: parameters are logged as MLflow params and written into the pod spec's command, so a secret-named
   parameter (``-P db_password=...``) or a secret-looking value (:mod:`mlflow_anf.secrets`) is refused; secrets go
   through the backend config's ``secret_env``;
2. the types MLflow declares: a ``float`` parameter must be a number;
3. the project's own rules, when its ``MLproject`` declares a parameter model for the entry point (MLflow ignores
   keys it does not know)::

       mlflow_anf:
         python_path: [project]          # directories (relative to the project) to import the models from
         params_model:
           train: mlflow_anf_lanedet.config:TrainConfig

   ``module:attribute`` is a pydantic model, validated with every parameter (declared defaults, then ``-P`` values,
   all strings, as the entry point's command line gets them), or a callable taking that dict and raising
   ``ValueError``/``pydantic.ValidationError``. It is imported lazily, only when present, from the project
   directory: the plugin knows nothing of any project, and the project's model stays the one source of its rules.
"""

from __future__ import annotations

import importlib
import math
import os
import posixpath
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlflow_anf.backend.config import MPIJobBackendConfig
from mlflow_anf.secrets import is_secret_name, redact_text, secret_in_value

HOOK_KEY = "mlflow_anf"
#: the parameter naming an entry point's output directory unless the MLproject's ``model_output`` says otherwise
DEFAULT_OUTPUT_PARAM = "output_dir"


class EntryPointParamError(ValueError):
    """Entry-point parameters the project would refuse. ``problems`` holds one ``"-P <name>: <what>"`` per problem."""

    def __init__(self, entry_point: str, problems: list[str]) -> None:
        self.entry_point = entry_point
        self.problems = problems = [redact_text(p) for p in problems]  # a project's message may quote a value
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid parameters for entry point {entry_point!r}:\n{lines}")


class ModelOutput(BaseModel):
    """Where an entry point writes its model: the directory parameter ``param``, the model at ``path`` inside it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    param: str = Field(default=DEFAULT_OUTPUT_PARAM, description="the entry point's output directory parameter")
    path: str = Field(default="", description="the model inside that directory (relative; '' = the directory)")

    @field_validator("param")
    @classmethod
    def _param(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError(f"{value!r} is not a parameter name")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        parts = PurePosixPath(value).parts
        if value.startswith("/") or ".." in parts or "\x00" in value:
            raise ValueError(f"{value!r} must be a path inside the output directory (relative, no '..')")
        return "/".join(p for p in parts if p != ".")


class ProjectHooks(BaseModel):
    """The ``mlflow_anf`` section of an ``MLproject``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    python_path: list[str] = Field(default_factory=list, description="import roots, relative to the project")
    params_model: dict[str, str] = Field(default_factory=dict, description="entry point -> 'module:attribute'")
    model_output: dict[str, ModelOutput] = Field(
        default_factory=dict, description="entry point -> where it writes its model (default: output_dir itself)")

    @field_validator("python_path")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        for item in value:
            parts = Path(item).parts
            if not item or Path(item).is_absolute() or ".." in parts or "\x00" in item:
                raise ValueError(f"{item!r} must be a directory inside the project (relative, no '..')")
        return value

    @field_validator("params_model")
    @classmethod
    def _targets(cls, value: dict[str, str]) -> dict[str, str]:
        for entry_point, target in value.items():
            module, sep, attr = str(target).partition(":")
            if not sep or not module or not attr or not all(p.isidentifier() for p in (*module.split("."), attr)):
                raise ValueError(f"{entry_point}: {target!r} is not 'package.module:attribute'")
        return value


def _mlproject_path(work_dir: str | os.PathLike[str]) -> Path | None:
    # MLflow finds the file case-insensitively (mlflow.projects._project_spec._find_mlproject)
    for name in sorted(os.listdir(work_dir)):
        if name.lower() == "mlproject":
            return Path(work_dir) / name
    return None


def project_hooks(work_dir: str | os.PathLike[str]) -> tuple[ProjectHooks, str]:
    """The project's ``mlflow_anf`` section (empty when absent) and the MLproject path, for error messages."""
    import yaml

    path = _mlproject_path(work_dir)
    if path is None:
        return ProjectHooks(), str(Path(work_dir) / "MLproject")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    section = data.get(HOOK_KEY) if isinstance(data, Mapping) else None
    if section is None:
        return ProjectHooks(), str(path)
    if not isinstance(section, Mapping):
        raise EntryPointParamError("*", [f"{path}: {HOOK_KEY}: expected a mapping"])
    try:
        return ProjectHooks.model_validate(dict(section)), str(path)
    except ValidationError as exc:
        problems = [f"{path}: {HOOK_KEY}.{'.'.join(str(p) for p in e['loc'])}: "
                    f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors(include_url=False)]
        raise EntryPointParamError("*", problems) from None


@contextmanager
def _import_roots(roots: list[Path]) -> Iterator[None]:
    saved = list(sys.path)
    sys.path[:0] = [str(r) for r in roots]
    try:
        yield
    finally:
        sys.path[:] = saved


def _resolve(target: str, roots: list[Path], where: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        with _import_roots(roots):
            module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise EntryPointParamError("*", [
            f"{where}: cannot load {target!r} ({type(exc).__name__}: {exc}); install the project's requirements "
            "on this machine, or fix the MLproject"]) from None


def _from_validation_error(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        name = str(err["loc"][0]) if err["loc"] else "(all)"
        if err["type"] == "extra_forbidden":
            problems.append(f"-P {name}: not a parameter of this entry point")
            continue
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix(f"{name}: ")
        problems.append(f"-P {name}: {msg}")
    return problems


def _check_secrets(values: Mapping[str, str], given: Mapping[str, Any]) -> list[str]:
    problems = []
    for name in given:
        value = str(values[name])
        if is_secret_name(name) and value.strip():
            problems.append(f"-P {name}: looks like a credential; parameters are logged as MLflow params and "
                            "written into the pod spec: pass secrets with the backend config's secret_env")
        else:
            what = secret_in_value(value)
            if what:
                problems.append(f"-P {name}: holds {what}; parameters are logged as MLflow params and written into "
                                "the pod spec: pass secrets with the backend config's secret_env")
    return problems


def _check_types(entry_point: Any, values: Mapping[str, str]) -> list[str]:
    problems = []
    for name, param in (entry_point.parameters or {}).items():
        if param.type == "float" and name in values:
            try:
                ok = math.isfinite(float(values[name]))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                problems.append(f"-P {name}: expected a number (the MLproject declares it 'float')")
    return problems


def validate_params(work_dir: str | os.PathLike[str], entry_point: Any, params: Mapping[str, Any]) -> None:
    """Check the *params* given for *entry_point* (an MLflow ``EntryPoint`` of the project in *work_dir*); raise
    :class:`EntryPointParamError` listing every problem. Reads the MLproject, imports the project's model when it
    declares one; writes nothing."""
    values = {name: str(p.default) for name, p in (entry_point.parameters or {}).items() if p.default is not None}
    values.update({str(k): str(v) for k, v in params.items()})
    problems = _check_secrets(values, params) + _check_types(entry_point, values)
    if problems:
        raise EntryPointParamError(entry_point.name, problems)
    hooks, mlproject = project_hooks(work_dir)
    target = hooks.params_model.get(entry_point.name)
    if target is None:
        return
    roots = [Path(work_dir, p).resolve() for p in hooks.python_path]
    model = _resolve(target, roots, f"{mlproject}: {HOOK_KEY}.params_model.{entry_point.name}")
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            model.model_validate(values)
        elif callable(model):
            validator: Callable[[dict[str, str]], Any] = model
            validator(dict(values))
        else:
            raise EntryPointParamError(entry_point.name, [
                f"{mlproject}: {HOOK_KEY}.params_model.{entry_point.name}: {target!r} is neither a pydantic model "
                "nor a callable"])
    except ValidationError as exc:
        raise EntryPointParamError(entry_point.name, _from_validation_error(exc)) from None
    except EntryPointParamError:
        raise
    except (ValueError, TypeError) as exc:
        raise EntryPointParamError(entry_point.name, [f"-P {str(exc) or type(exc).__name__}"]) from None


def model_location(work_dir: str | os.PathLike[str], entry_point: Any, params: Mapping[str, Any],
                   config: MPIJobBackendConfig) -> str | None:
    """Where the entry point writes its model, relative to the root of the volume the backend's model snapshot is
    taken of (:meth:`MPIJobBackendConfig.model_volume`); ``None`` when the config takes no model snapshot.

    The output directory is the parameter the MLproject's ``mlflow_anf.model_output`` names for the entry point
    (default ``output_dir``: the model is that directory), as ``-P`` gives it or the MLproject's default; a relative
    one is resolved against ``project_dir`` (the containers' working directory). It must lie under the model
    volume's mount path, else :class:`EntryPointParamError` names the parameter: a snapshot of a volume the model
    was not written to must never be recorded as the run's model."""
    volume = config.model_volume()
    if volume is None:
        return None
    pvc, mount = volume
    hooks, mlproject = project_hooks(work_dir)
    output = hooks.model_output.get(entry_point.name, ModelOutput())
    declared = {name: p.default for name, p in (entry_point.parameters or {}).items()}
    name = output.param
    if name not in params and declared.get(name) is None:
        raise EntryPointParamError(entry_point.name, [
            f"-P {name}: entry point {entry_point.name!r} has no {name} parameter, so nothing says it writes its "
            f"model to the snapshotted volume {pvc} (snapshot.model); add the parameter, name the one it has in "
            f"{mlproject}: {HOOK_KEY}.model_output.{entry_point.name}.param, or turn snapshot.model off"])
    raw = str(params[name] if name in params else declared[name])
    if not raw.strip():
        raise EntryPointParamError(entry_point.name, [f"-P {name}: empty; the model snapshot (snapshot.model) needs "
                                                      f"the directory the model is written to, under {mount}"])
    resolved = posixpath.normpath(posixpath.join(config.project_dir, raw))
    if resolved != mount and not resolved.startswith(mount.rstrip("/") + "/"):
        where = (f"{raw!r} is {resolved} in the pods (relative to project_dir, inside the image), not"
                 if not raw.startswith("/") else f"{raw!r} is not")
        raise EntryPointParamError(entry_point.name, [
            f"-P {name}: {where} on the model volume {pvc}, mounted at {mount}, that snapshot.model snapshots: the "
            f"model would not be in the snapshot; pass -P {name}={mount}/<dir>"])
    inside = posixpath.relpath(resolved, mount)
    parts = [p for p in (inside if inside != "." else "", output.path) if p]
    return "/".join(parts)


__all__ = ["DEFAULT_OUTPUT_PARAM", "EntryPointParamError", "HOOK_KEY", "ModelOutput", "ProjectHooks",
           "model_location", "project_hooks", "validate_params"]
