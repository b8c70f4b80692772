"""TrainConfig: the MLproject's string params parse into one validated config; bad values name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlflow_anf_lanedet.config import TrainConfig, parse_hw


def test_mlproject_strings_parse() -> None:
    cfg = TrainConfig(
        data_dir="d", epochs="3", batch_size="4", use_val="false", enable_snapshot="true", input_size="160x288",
        snapshot_options="namespace=ml,snapshot_class=netapp", pvc_name="", pretrained="", max_train_frames="",
        overlay_images="a.jpg,b.jpg", lr="0.02", optimizer="adamw", augment="false", lane_fit="road",
    )
    assert cfg.epochs == 3 and cfg.batch_size == 4 and cfg.use_val is False and cfg.enable_snapshot is True
    assert cfg.input_size == (160, 288)
    assert cfg.snapshot_options == {"namespace": "ml", "snapshot_class": "netapp"}
    assert cfg.pvc_name is None and cfg.pretrained is None and cfg.max_train_frames is None
    assert cfg.overlay_images == [Path("a.jpg"), Path("b.jpg")]
    assert cfg.optimizer == "adamw" and cfg.augment == "none" and cfg.lane_fit == "road"


def test_mlflow_params_are_flat_strings_and_round_trip() -> None:
    cfg = TrainConfig(data_dir="d", input_size="160x288", snapshot_options="b=2,a=1")
    params = cfg.mlflow_params()
    assert params["input_size"] == "160x288"
    assert params["snapshot_options"] == "a=1,b=2"
    assert all(isinstance(v, str) for v in params.values())
    again = TrainConfig(**{k: v for k, v in params.items()})
    assert again == cfg


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", "0"),
        ("epochs", "many"),
        ("batch_size", "-1"),
        ("input_size", "300x500"),
        ("input_size", "288"),
        ("input_size", "16x16"),
        ("backbone", "vgg19"),
        ("strategy", "deepspeed"),
        ("lr", "0"),
        ("use_val", "perhaps"),
        ("snapshot_provider", "nfs"),
        ("snapshot_options", "novalue"),
        ("precision", "8"),
        ("num_workers", "-2"),
        ("optimizer", "adam"),
        ("lane_fit", "cubic"),
        ("augment", "some"),
    ],
)
def test_bad_values_name_the_field(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig(data_dir="d", **{field: value})
    assert field in str(info.value)


def test_unknown_param_is_rejected() -> None:
    with pytest.raises(ValidationError, match="batchsize"):
        TrainConfig(data_dir="d", batchsize=3)


def test_parse_hw_variants() -> None:
    assert parse_hw("288x512") == (288, 512)
    assert parse_hw("288,512") == (288, 512)
    assert parse_hw([96, 160]) == (96, 160)
    with pytest.raises(ValueError, match="input_size"):
        parse_hw(None)


def test_loader_workers_follow_use_workers() -> None:
    assert TrainConfig(data_dir="d", num_workers=3, use_workers=False).loader_workers == 0
    assert TrainConfig(data_dir="d", num_workers=3).loader_workers == 3


@pytest.mark.parametrize(("name", "cls"), [("sgd", "SGD"), ("adamw", "AdamW")])
def test_optimizer_choice_reaches_lightning(name: str, cls: str) -> None:
    from types import SimpleNamespace

    from mlflow_anf_lanedet.train import LaneDetModule

    module = LaneDetModule(backbone="resnet18_lite", input_hw=(64, 128), lr=0.004, optimizer=name, momentum=0.8,
                           weight_decay=1e-3, warmup_epochs=1)
    module._trainer = SimpleNamespace(estimated_stepping_batches=40, max_epochs=4)  # what configure_optimizers reads
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert type(opt).__name__ == cls
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-3
    assert (group["betas"][0] if name == "adamw" else group["momentum"]) == 0.8
    assert group["lr"] == pytest.approx(0.004 / 10)  # first step of the 10-step warm-up
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.004)


@pytest.mark.parametrize(
    ("value", "mode", "zoom"),
    [("true", "full", 0.1), (True, "full", 0.1), ("full", "full", 0.1), ("flip", "flip", 0.0), ("false", "none", None),
     (False, "none", None), ("none", "none", None)],
)
def test_augment_modes(value, mode: str, zoom) -> None:
    cfg = TrainConfig(data_dir="d", augment=value)
    assert cfg.augment == mode and cfg.mlflow_params()["augment"] == mode
    aug = cfg.augment_config()
    assert (aug.scale if aug else None) == zoom
    if mode == "flip":
        assert aug.flip_p == 0.5 and aug.translate == aug.brightness == aug.contrast == 0.0


def test_model_volume_and_path_are_parameters_of_their_own() -> None:
    """They were keys of snapshot_options that the provider refused; now snapshot_options only holds its options."""
    cfg = TrainConfig(data_dir="d", model_volume="ml/models", model_path="runs/model", snapshot_options="namespace=ml")
    assert (cfg.model_volume, cfg.model_path, cfg.snapshot_options) == ("ml/models", "runs/model", {"namespace": "ml"})
    blank = TrainConfig(data_dir="d", model_volume="", model_path="")  # the MLproject's defaults
    assert blank.model_volume is None and blank.model_path is None
    assert TrainConfig(**cfg.mlflow_params()) == cfg
    for bad in ("../up", "/abs", "a/../../b"):
        with pytest.raises(ValidationError, match="model_path"):
            TrainConfig(data_dir="d", model_path=bad)


def test_lineage_volumes_come_from_the_provider_traits(tmp_path: Path) -> None:
    """local: the run's own directories are the volumes, the model at `model` in output_dir (as before); a remote
    provider: the named volumes, model_volume defaulting to pvc_name; no name comparison decides it."""
    from mlflow_anf_lanedet.train import TrainInputError, lineage_config

    data, out = tmp_path / "data", tmp_path / "out"
    local = lineage_config(TrainConfig(data_dir=data, output_dir=out))
    assert (local.data_volume, local.model_volume, local.model_path) == (str(data), str(out), "model")
    assert local.snapshot_data and local.snapshot_model and local.entry_point == "train"
    parent = lineage_config(TrainConfig(data_dir=data, output_dir=out / "run1", model_volume=str(tmp_path)))
    assert (parent.model_volume, parent.model_path) == (str(tmp_path), "out/run1/model")

    csi = lineage_config(TrainConfig(data_dir=data, snapshot_provider="csi", pvc_name="ml/data",
                                     snapshot_options="namespace=ml"))
    assert (csi.data_volume, csi.model_volume, csi.model_path) == ("ml/data", "ml/data", None)
    assert csi.provider_options == {"namespace": "ml"}
    anf = lineage_config(TrainConfig(data_dir=data, snapshot_provider="anf", pvc_name="pool/data",
                                     model_volume="pool/models", model_path="lanedet/model"))
    assert (anf.data_volume, anf.model_volume, anf.model_path) == ("pool/data", "pool/models", "lanedet/model")

    off = lineage_config(TrainConfig(data_dir=data, snapshot_provider="csi", enable_snapshot=False))
    assert not off.snapshot_data and not off.snapshot_model and off.build_provider() is None
    with pytest.raises(TrainInputError, match="pvc_name"):
        lineage_config(TrainConfig(data_dir=data, snapshot_provider="csi"))
