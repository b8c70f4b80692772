"""Options and results of the synthetic TuSimple generator (pydantic: the one source of every option)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..tusimple_format import H_SAMPLES_0313, IMAGE_H, IMAGE_W
from ..tusimple_format import H_SAMPLES_TEST as H_SAMPLES_WIDE

# The real TuSimple label grids and frame size (clip 0313: 48 rows from 240; 0531/0601: 56 rows from 160), re-exported
# from mlflow_anf_lanedet.tusimple_format under the names the generator has always used.
__all__ = ["H_SAMPLES_0313", "H_SAMPLES_WIDE", "IMAGE_H", "IMAGE_W", "SynthConfig", "SynthError", "SynthReport",
           "split_counts"]


class SynthError(ValueError):
    """Bad input to the generator; the message names the option, file or line."""


class SynthConfig(BaseModel):
    """Everything `generate` needs. `labels=None` means the packaged real labels (see `default_labels_path`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path
    frames: int = Field(ge=3, description="total frames over train+val+test (at least one per split)")
    seed: int = Field(ge=0, lt=2**63, description="same seed -> byte-identical dataset")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    labels: Path | None = Field(None, description="real TuSimple label_data JSON lines the lane geometry comes from")
    workers: int = Field(1, ge=1, le=256)
    overwrite: bool = False
    jpeg_quality: int = Field(90, ge=50, le=100)
    train_0601_fraction: float = Field(
        0.125, ge=0.0, le=1.0, description="share of train frames filed under clips/0601 (as in the real 3,268/410)"
    )
    max_fit_rms: float = Field(
        6.0, gt=0.0, description="real frames whose lanes fit the road model worse than this (px RMS) are not used"
    )

    @model_validator(mode="after")
    def _splits_fit(self) -> "SynthConfig":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 (got {self.val_fraction} + {self.test_fraction})"
            )
        counts = split_counts(self.frames, self.val_fraction, self.test_fraction)
        if counts["train"] < 1:
            raise ValueError(f"frames={self.frames} leaves no train frame with these fractions")
        return self


class SynthReport(BaseModel):
    """What `generate` wrote."""

    out: Path
    seed: int
    frames: int
    counts: dict[str, int] = Field(description="frames per label file: label_data_0313/0601/0531, test_label")
    sources: dict[str, list[str]] = Field(description="real raw_file each split's geometry came from (provenance)")
    seconds: float
    frames_per_s: float
    workers: int


def split_counts(frames: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Frames per split: at least one val and one test frame, the rest train."""
    n_val = max(1, round(frames * val_fraction))
    n_test = max(1, round(frames * test_fraction))
    return {"train": frames - n_val - n_test, "val": n_val, "test": n_test}
