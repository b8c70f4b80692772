"""Training configuration: the one source of every training knob (CLI options, MLproject params, MLflow params)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from mlflow_anf_lanedet.data.tusimple import AugmentConfig
from mlflow_anf_lanedet.decode import LaneFit, parse_lane_fit

Backbone = Literal["vgg16_bn", "resnet18", "resnet34", "resnet18_lite"]
Strategy = Literal["auto", "ddp", "horovod"]
Optimizer = Literal["sgd", "adamw"]
Augment = Literal["full", "flip", "none"]
SnapshotProviderName = Literal["local", "csi", "anf"]
#: the next step when data_dir is not a prepared root (said by the errors that name it)
DATA_DIR_HINT = ("make one with `lanedet prepare --src TUSIMPLE_DOWNLOAD --out DIR`, or a synthetic one with "
                 "`lanedet synth --out DIR --frames 120`")
MAX_SIDE = 2048  # network input side: above it a TuSimple frame (720x1280) is only upscaled, and memory explodes
MAX_BATCH = 4096


def parse_hw(value: Any, field: str = "input_size") -> tuple[int, int]:
    """Parse ``"288x512"``, ``"288,512"``, ``[288, 512]`` into (height, width), both multiples of 8."""
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ValueError(f"{field}: expected HEIGHTxWIDTH such as 288x512, got {value!r}")
    try:
        h, w = (int(str(p).strip()) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: expected HEIGHTxWIDTH such as 288x512, got {value!r}") from None
    if h < 32 or w < 32 or h % 8 or w % 8:
        raise ValueError(f"{field}: {h}x{w} must be at least 32x32 and multiples of 8 (the network's stride)")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ValueError(f"{field}: {h}x{w} is larger than {MAX_SIDE}x{MAX_SIDE} (TuSimple frames are 720x1280)")
    return h, w


class TrainConfig(BaseModel):
    """Everything a training run is parameterised by. Field names are the MLproject/CLI parameter names."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    data_dir: Path = Field(description="prepared TuSimple root (see `lanedet prepare`)")
    output_dir: Path = Field(Path("outputs"), description="checkpoints and the saved model; snapshotted after training")
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(8, ge=1, le=MAX_BATCH, description="per-process training batch size")
    val_batch_size: int = Field(16, ge=1, le=MAX_BATCH)
    use_workers: bool = Field(True, description="load batches in worker processes (the seed's USE_WORKERS)")
    num_workers: int = Field(2, ge=0, le=64)
    use_val: bool = Field(True, description="validate every epoch (the final held-out test always runs)")
    enable_snapshot: bool = Field(True, description="snapshot the data before and the model after training")
    snapshot_provider: SnapshotProviderName = "local"
    snapshot_options: dict[str, str] = Field(default_factory=dict, description="the snapshot provider's options, "
                                             "e.g. namespace (nothing else: volumes are their own parameters)")
    pvc_name: str | None = Field(None, description="data volume for csi/anf providers (the seed's PVC_NAME)")
    model_volume: str | None = Field(None, description="volume snapshotted after training (the model snapshot); "
                                     "default: output_dir where the provider's volumes are directories (local), "
                                     "else pvc_name")
    model_path: str | None = Field(None, description="path of the exported model inside model_volume, recorded as "
                                   "the model snapshot's artifact URI; default: where output_dir/model lies in it "
                                   "(local), else none")
    backbone: Backbone = "vgg16_bn"
    input_size: tuple[int, int] = Field((288, 512), description="network input HEIGHTxWIDTH")
    pretrained: Path | None = Field(None, description="local torchvision-format backbone weights (.pth)")
    optimizer: Optimizer = Field("sgd", description="sgd: SCNN's SGD with momentum; adamw: AdamW (beta1 = momentum), "
                                 "which trains the existence branch in short CPU schedules where SGD leaves it at the "
                                 "base rate; either way with the poly schedule and warm-up")
    lr: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    warmup_epochs: float = Field(1.0, ge=0, le=10_000)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    deterministic: bool = Field(False, description="deterministic algorithms: bit-identical reruns on CPU")
    strategy: Strategy = "auto"
    accelerator: str = Field("auto", pattern=r"^(auto|cpu|gpu|cuda|mps)$")
    devices: str = Field("auto", pattern=r"^(auto|-1|[0-9]+)$")
    precision: str = Field("32-true", pattern=r"^(32-true|32|16-mixed|bf16-mixed)$")
    augment: Augment = Field("full", description="train-time augmentation: full (flip, zoom, shift, brightness, "
                             "contrast), flip (mirror only), none; true/false mean full/none")
    max_train_frames: int | None = Field(None, ge=1, description="use only the first N training frames")
    exist_threshold: float = Field(0.5, gt=0, lt=1)
    prob_threshold: float = Field(0.3, gt=0, lt=1)
    lane_fit: LaneFit = Field(0, description="decode: 0 = points as found (standard SCNN); 1-3 = robust polynomial of "
                              "that degree per lane; road = all lanes jointly on the flat-road model "
                              "(mlflow_anf_lanedet.decode)")
    overlays: int = Field(4, ge=0, le=64, description="validation frames drawn with predictions as artifacts")
    overlay_images: list[Path] = Field(default_factory=list, description="extra frames to draw predictions on")
    log_model: bool = True

    @field_validator("input_size", mode="before")
    @classmethod
    def _hw(cls, value: Any) -> tuple[int, int]:
        return parse_hw(value)

    @field_validator("data_dir", "output_dir", mode="before")
    @classmethod
    def _dir_given(cls, value: Any, info: ValidationInfo) -> Any:
        """An empty path would be the working directory: the checkout (snapshotted, written into) under `mlflow run`."""
        if isinstance(value, (str, Path)) and not str(value).strip():
            raise ValueError(f"{info.field_name}: a directory is required, got an empty path")
        return value

    @field_validator("pvc_name", "model_volume", "model_path", "pretrained", "max_train_frames", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", "none", "None") else value

    @field_validator("model_path")
    @classmethod
    def _model_path(cls, value: str | None) -> str | None:
        """Relative, inside the volume: it becomes a path inside the snapshot (``snapshot://`` grammar)."""
        if value is not None:
            from mlflow_anf.snapshots.uri import check_path

            check_path(value, "model_path")
        return value

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, value: Any) -> Any:
        """MLproject params are strings: the booleans the option used to be still work."""
        text = str(value).strip().lower()
        return {"true": "full", "1": "full", "yes": "full", "false": "none", "0": "none", "no": "none"}.get(text, value)

    def augment_config(self) -> AugmentConfig | None:
        """The dataset's augmentation for ``augment``."""
        if self.augment == "none":
            return None
        if self.augment == "flip":
            return AugmentConfig(scale=0.0, translate=0.0, brightness=0.0, contrast=0.0)
        return AugmentConfig()

    @field_validator("lane_fit", mode="before")
    @classmethod
    def _lane_fit(cls, value: Any) -> Any:
        return parse_lane_fit(value)

    @field_validator("snapshot_options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> Any:
        """Accept ``"k=v,k2=v2"`` (MLproject params are strings) as well as a mapping."""
        if isinstance(value, str):
            out: dict[str, str] = {}
            for item in filter(None, (p.strip() for p in value.split(","))):
                key, sep, val = item.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"snapshot_options: expected key=value, got {item!r}")
                out[key.strip()] = val.strip()
            return out
        return value

    @field_validator("overlay_images", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p for p in (s.strip() for s in value.split(",")) if p]
        return value

    @property
    def loader_workers(self) -> int:
        return self.num_workers if self.use_workers else 0

    def mlflow_params(self) -> dict[str, str]:
        """Flat string params for MLflow (no secrets live in this model)."""
        out: dict[str, str] = {}
        for key, value in self.model_dump(mode="json").items():
            if key == "input_size":
                value = f"{value[0]}x{value[1]}"
            elif isinstance(value, dict):
                value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
            elif isinstance(value, list):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "true" if value else "false"  # as MLproject params spell them
            out[key] = "" if value is None else str(value)
        return out


# ------------------------------------------------------------------------------------------------- command line
def _default_text(value: Any) -> str | None:
    """A default as the command line spells it (``288x512``, ``true``, ``k=v,...``); ``None`` shows nothing."""
    if value is None or value == [] or value == {}:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def _reshaped_fields(model: type[BaseModel]) -> set[str]:
    """Fields with a ``mode="before"`` validator: they accept more spellings than their type (``augment=true``),
    so their choices are shown, not enforced by click."""
    out: set[str] = set()
    for decorator in model.__pydantic_decorators__.field_validators.values():
        if decorator.info.mode == "before":
            out.update(decorator.info.fields)
    return out


def cli_options(model: type[BaseModel] = TrainConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """``(flag, name, click.option keyword arguments)`` for each field of *model*, from the model alone: its
    description, its default shown (``[default: 30]``), its choices (a ``Literal`` type: ``click.Choice``, or only
    listed when a validator accepts other spellings), ``[required]``. Every value stays a string for the model to
    parse and validate (the one place the rules live); an option not given is left to the model's default."""
    import click

    reshaped = _reshaped_fields(model)
    options = []
    for name, field in model.model_fields.items():
        # click would show a string show_default in parentheses (a description): the shown default goes into the
        # help, the option's own default stays None (not given)
        extra = [] if field.is_required() else [_default_text(field.get_default(call_default_factory=True))]
        extra = [f"default: {e}" for e in extra if e is not None] + _range_text(field.metadata)
        help_text = " ".join([field.description or "", f"[{'; '.join(extra)}]" if extra else ""]).strip()
        # no default given to click (not even None, which click 8.3+ takes as one and then skips `required`)
        kwargs: dict[str, Any] = {"help": help_text or None, "required": field.is_required(),
                                  "metavar": _metavar(field.annotation)}
        choices = [str(c) for c in get_args(field.annotation)] if get_origin(field.annotation) is Literal else []
        if choices and name not in reshaped:
            kwargs["type"], kwargs["metavar"] = click.Choice(choices), None
        elif choices:
            kwargs["metavar"] = "[" + "|".join(choices) + "]"
        options.append(("--" + name.replace("_", "-"), name, kwargs))
    return options


def _metavar(annotation: Any) -> str:
    """How the help names a value: ``INTEGER``, ``FLOAT``, ``PATH``, ``[true|false]``, else ``TEXT``."""
    kinds = {a for a in (get_args(annotation) or (annotation,)) if a is not type(None)}
    for kind, word in ((bool, "[true|false]"), (int, "INTEGER"), (float, "FLOAT"), (Path, "PATH")):
        if kinds == {kind}:
            return word
    return "TEXT"


def _range_text(metadata: list[Any]) -> list[str]:
    """``["1<=x<=10000"]`` from a field's ``ge``/``gt``/``le``/``lt`` constraints (as click shows its ranges)."""
    low = next((f"{m.ge}<=" for m in metadata if getattr(m, "ge", None) is not None), None)
    low = low or next((f"{m.gt}<" for m in metadata if getattr(m, "gt", None) is not None), "")
    high = next((f"<={m.le}" for m in metadata if getattr(m, "le", None) is not None), None)
    high = high or next((f"<{m.lt}" for m in metadata if getattr(m, "lt", None) is not None), "")
    if low and not high:  # "x>=1" reads better than "1<=x"
        return [f"x{'>=' if low.endswith('<=') else '>'}{low.rstrip('<=')}"]
    return [f"{low}x{high}"] if low or high else []
