"""TuSimple lane labels, SCNN training targets and the dataset over a *prepared root*.

A prepared root (written by :func:`mlflow_anf_lanedet.data.prepare.prepare`) looks like::

    root/clips/<clip>/<id>/20.jpg
    root/label_data_0313.json  root/label_data_0531.json  root/label_data_0601.json  root/test_label.json

Label files are JSON lines: ``{"lanes": [[x, ...], ...], "h_samples": [y, ...], "raw_file": "clips/..."}``;
``x`` is given per ``h_samples`` row in pixels of the original 1280×720 image, and ``-2`` (any negative value, as in
the official ``LaneEval``) means "no point on this row".

Targets follow the SCNN TuSimple pipeline: lanes are put into 4 slots left→right (classes 1..4, 0 = background) by
the angle of the line through their first and last points (left of the ego vehicle: angle ≤ 90°); the two lanes
nearest the vehicle on each side are kept, farther ones are dropped. The mask is drawn as thick polylines directly at
the network resolution; a gap inside a lane (a negative ``x`` between points) is not bridged.

Coordinates map between resolutions by pixel centres: ``u = (x + 0.5) * out_w / src_w - 0.5`` (same for ``y``).

Frames are read and normalised by :mod:`mlflow_anf_lanedet.data.frames` (the same path as inference); its names
``IMAGENET_MEAN``, ``IMAGENET_STD``, ``load_input`` and ``denormalize`` are re-exported here. torch is imported lazily
(only where tensors are made), so label tools such as ``lanedet prepare`` start fast.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from PIL import Image, ImageDraw
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from mlflow_anf_lanedet.data.errors import DataError
from mlflow_anf_lanedet.data.frames import IMAGENET_MEAN, IMAGENET_STD, denormalize, load_input, normalise, read_frame
from mlflow_anf_lanedet.tusimple_format import IMAGE_H, IMAGE_HW

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_SLOTS",
    "SPLIT_FILES",
    "AugmentConfig",
    "DataError",
    "LabelError",
    "LaneLabel",
    "TuSimpleDataset",
    "build_targets",
    "denormalize",
    "flip_targets",
    "iter_labels",
    "load_input",
    "lane_slots",
    "read_labels",
]

NUM_SLOTS = 4
SRC_HW = IMAGE_HW
"""(height, width) that label coordinates refer to (:data:`mlflow_anf_lanedet.tusimple_format.IMAGE_HW`)."""
COORD_LIMIT = 10_000
"""Label coordinates (x, and rows) must lie within ±this many pixels: several times any camera frame that the format
is used with (TuSimple is 1280×720), so a larger value is a corrupt label, not a lane point."""
DEFAULT_THICKNESS = 15.0
"""Lane width in source (1280×720) pixels; the SCNN PyTorch port draws ``cv2.line(..., thickness=15)``."""

SPLIT_FILES: dict[str, list[str]] = {
    "train": ["label_data_0313.json", "label_data_0601.json"],
    "val": ["label_data_0531.json"],
    "test": ["test_label.json"],
}

# class id after a horizontal flip: background stays, slot k (1..4) becomes 5 - k
_FLIP_LUT = np.array([0, 4, 3, 2, 1] + list(range(5, 256)), dtype=np.uint8)


class LabelError(DataError):
    """A label line is malformed; the message reads ``<path>:<line>: <what>``."""


# --------------------------------------------------------------------------------------------------------------------
# labels


class LaneLabel(BaseModel):
    """One labelled frame: ``lanes[i][j]`` is the x of lane ``i`` on row ``h_samples[j]`` (negative = no point)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    raw_file: str = Field(min_length=1)
    lanes: list[list[Annotated[StrictInt, Field(gt=-COORD_LIMIT, lt=COORD_LIMIT)]]]
    """x per row; the bound is checked by pydantic-core while parsing (no Python per value)."""
    h_samples: list[StrictInt] = Field(min_length=1)
    run_time: StrictFloat | StrictInt | None = None

    @field_validator("raw_file")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        parts = value.split("/")
        if value.startswith("/") or "\\" in value or ".." in parts or (parts and ":" in parts[0]):
            raise ValueError(f"must be a relative path inside the dataset root, got {value!r}")
        return value

    @field_validator("h_samples")
    @classmethod
    def _rows_increasing(cls, value: list[int]) -> list[int]:
        if value[0] < 0:
            raise ValueError(f"rows must be >= 0, got {value[0]}")
        if value[-1] >= COORD_LIMIT:
            raise ValueError(
                f"rows must be < {COORD_LIMIT} pixels (TuSimple frames are {IMAGE_H} high), got {value[-1]}"
            )
        for a, b in zip(value, value[1:]):
            if b <= a:
                raise ValueError(f"rows must be strictly increasing, got {a} then {b}")
        return value

    @field_validator("run_time")
    @classmethod
    def _non_negative(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _lanes_match_rows(self) -> LaneLabel:
        for i, lane in enumerate(self.lanes):
            if len(lane) != len(self.h_samples):
                raise ValueError(f"lanes[{i}] has {len(lane)} points but h_samples has {len(self.h_samples)} rows")
        return self


def _describe(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return f"invalid JSON: {first['ctx'].get('error', first['msg'])}" if first.get("ctx") else "invalid JSON"
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


def iter_labels(data: bytes | str, source: str) -> Iterator[tuple[int, LaneLabel]]:
    """Parse JSON-lines label text, yielding ``(line_number, label)``; blank lines are skipped.

    ``source`` names the file in errors: :class:`LabelError` ``"<source>:<line>: <what>"`` for the first bad line.
    """
    lines = data.splitlines() if isinstance(data, bytes) else data.encode().splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield lineno, LaneLabel.model_validate_json(line)
        except ValidationError as exc:
            raise LabelError(f"{source}:{lineno}: {_describe(exc)}") from None


def read_labels(path: str | os.PathLike[str]) -> list[LaneLabel]:
    """Parse a TuSimple JSON-lines label file (blank lines are skipped).

    Raises :class:`LabelError` ``"<path>:<line>: <what>"`` for the first bad line, :class:`DataError` if the file
    cannot be read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read label file: {exc.strerror or exc}") from exc
    return [label for _, label in iter_labels(data, str(path))]


# --------------------------------------------------------------------------------------------------------------------
# targets


def _visible(lane: Sequence[int], h_samples: Sequence[int]) -> list[tuple[int, int]]:
    return [(x, y) for x, y in zip(lane, h_samples) if x >= 0]


def _angle(points: list[tuple[int, int]]) -> float:
    """Angle (degrees, 0..180) of the line from the bottom point up to the top point; ≤ 90 leans right (left lane)."""
    (x_top, y_top), (x_bottom, y_bottom) = points[0], points[-1]
    return math.degrees(math.atan2(y_bottom - y_top, x_top - x_bottom))


class _Lane:
    """A lane with ≥ 2 visible points, prepared for ordering."""

    __slots__ = ("lane", "angle", "rows", "xs", "fit")

    def __init__(self, lane: list[int], points: list[tuple[int, int]]) -> None:
        self.lane = lane
        self.angle = _angle(points)
        self.xs = np.array([p[0] for p in points], dtype=np.float64)
        self.rows = np.array([p[1] for p in points], dtype=np.float64)
        self.fit = np.polyfit(self.rows, self.xs, 1)  # x = a*y + b

    def x_at(self, y: float) -> float:
        return float(self.fit[0] * y + self.fit[1])


def _left_of(a: _Lane, b: _Lane) -> int:
    """-1 if ``a`` lies left of ``b``: compared on the rows both have, else where their (linear) extensions meet."""
    _, ia, ib = np.intersect1d(a.rows, b.rows, assume_unique=True, return_indices=True)
    if len(ia):
        diff = float(np.mean(a.xs[ia] - b.xs[ib]))
    else:
        y = (max(a.rows[0], b.rows[0]) + min(a.rows[-1], b.rows[-1])) / 2  # middle of the gap between the spans
        diff = a.x_at(y) - b.x_at(y)
    if diff == 0.0:
        diff = a.angle - b.angle
    return -1 if diff < 0 else (1 if diff > 0 else 0)


def lane_slots(label: LaneLabel) -> list[list[int] | None]:
    """Order the lanes of ``label`` left→right into SCNN's 4 slots (``None`` = empty slot).

    As in the SCNN TuSimple pipeline, a lane is left of the vehicle when the line from its bottom to its top point
    leans right (angle ≤ 90°); the two left lanes nearest the vehicle take slots 1, 2 and the two nearest right lanes
    slots 3, 4, farther lanes (5-lane frames) are dropped. "Nearest" is decided by position, not by angle: lanes are
    sorted by their x on shared rows (short far-away stubs make angles unreliable), and the first ``n_left`` of that
    order are the left lanes. Lanes with fewer than 2 visible points cannot be placed and are ignored.
    """
    lanes = []
    for lane in label.lanes:
        points = _visible(lane, label.h_samples)
        if len(points) >= 2:
            lanes.append(_Lane(lane, points))
    ordered = sorted(lanes, key=functools.cmp_to_key(_left_of))
    n_left = sum(1 for lane in lanes if lane.angle <= 90.0)
    left, right = ordered[:n_left], ordered[n_left:]
    slots: list[list[int] | None] = [None] * NUM_SLOTS
    for slot, item in zip((1, 0), reversed(left)):
        slots[slot] = item.lane
    for slot, item in zip((2, 3), right):
        slots[slot] = item.lane
    return slots


def _runs(lane: Sequence[int], h_samples: Sequence[int]) -> list[list[tuple[int, int]]]:
    """Split a lane into runs of consecutive visible rows, so that gaps are not bridged."""
    runs: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    for x, y in zip(lane, h_samples):
        if x >= 0:
            current.append((x, y))
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def build_targets(
    label: LaneLabel,
    out_hw: tuple[int, int],
    src_hw: tuple[int, int] = SRC_HW,
    thickness: float = DEFAULT_THICKNESS,
) -> tuple[np.ndarray, np.ndarray]:
    """SCNN targets for ``label`` at ``out_hw``: ``(mask uint8 HxW with classes 0..4, exist float32[4])``.

    ``thickness`` is the lane width in ``src_hw`` pixels and is scaled to ``out_hw`` (at least 1 pixel). A slot
    "exists" when its lane has at least 2 visible points; an isolated visible point (a run of one row) is drawn as a
    dot of the lane's width.
    """
    out_h, out_w = out_hw
    src_h, src_w = src_hw
    if min(out_h, out_w, src_h, src_w) <= 0:
        raise ValueError(f"sizes must be positive, got out_hw={out_hw} src_hw={src_hw}")
    sx, sy = out_w / src_w, out_h / src_h
    width = max(1, round(thickness * (sx + sy) / 2))
    radius = width / 2
    canvas = Image.new("L", (out_w, out_h), 0)
    draw = ImageDraw.Draw(canvas)
    exist = np.zeros(NUM_SLOTS, dtype=np.float32)
    for slot, lane in enumerate(lane_slots(label)):
        if lane is None:
            continue
        exist[slot] = 1.0
        cls = slot + 1
        for run in _runs(lane, label.h_samples):
            pts = [((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5) for x, y in run]
            if len(pts) > 1:
                draw.line(pts, fill=cls, width=width, joint="curve")
            if width > 2:  # a round cap at the near end only: a cap above the far end would paint rows the
                u, v = pts[-1]  # label leaves empty, and the metric counts a point there as wrong
                draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=cls)
            elif len(pts) == 1:
                draw.point(pts, fill=cls)
    return np.asarray(canvas, dtype=np.uint8), exist


def flip_targets(mask: np.ndarray, exist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror targets horizontally: the mask is flipped and slots swap (1↔4, 2↔3), as is the existence vector."""
    return np.ascontiguousarray(_FLIP_LUT[mask[:, ::-1]]), exist[::-1].copy()


# --------------------------------------------------------------------------------------------------------------------
# dataset


class AugmentConfig(BaseModel):
    """Train-time augmentation, applied to image and targets together (photometric changes touch the image only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flip_p: float = Field(0.5, ge=0.0, le=1.0, description="probability of a horizontal flip (slots mirror)")
    scale: float = Field(0.1, ge=0.0, lt=0.5, description="zoom factor drawn from 1 ± scale, about the centre")
    translate: float = Field(0.05, ge=0.0, lt=0.5, description="shift drawn from ± translate × size, per axis")
    brightness: float = Field(0.2, ge=0.0, lt=1.0, description="brightness factor drawn from 1 ± brightness")
    contrast: float = Field(0.2, ge=0.0, lt=1.0, description="contrast factor drawn from 1 ± contrast")


class TuSimpleDataset:
    """Map-style dataset (use with ``torch.utils.data.DataLoader``) over a prepared TuSimple root.

    Item ``i`` is ``{"image": float32 3xHxW (ImageNet-normalised), "mask": int64 HxW (0..4), "exist": float32[4],
    "index": i}``; ``self.labels[i]`` is its :class:`LaneLabel` (for decoding and evaluation).

    ``augment`` (train split only): ``True`` for the default :class:`AugmentConfig`, or a config. Random draws come
    from torch's generator, so ``torch.manual_seed`` and DataLoader worker seeding make them reproducible.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        input_hw: tuple[int, int] = (288, 512),
        augment: bool | AugmentConfig = False,
        max_items: int | None = None,
        *,
        thickness: float = DEFAULT_THICKNESS,
        allow_empty: bool = False,
    ) -> None:
        if split not in SPLIT_FILES:
            raise ValueError(f"split: unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
        if len(input_hw) != 2 or min(input_hw) <= 0:
            raise ValueError(f"input_hw: expected (height, width) > 0, got {input_hw!r}")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items: must be >= 1 or None, got {max_items}")
        if augment and split != "train":
            raise ValueError(f"augment: only the train split is augmented, got split={split!r}")
        self.root = Path(root)
        self.split = split
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.augment: AugmentConfig | None = (
            augment if isinstance(augment, AugmentConfig) else (AugmentConfig() if augment else None)
        )
        self.thickness = thickness
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root is not a directory (run `lanedet prepare`?)")
        labels: list[LaneLabel] = []
        sources: list[tuple[str, int]] = []
        for name in SPLIT_FILES[split]:
            path = self.root / name
            if not path.is_file():
                raise DataError(f"{path}: label file for split {split!r} is missing (is {self.root} a prepared root?)")
            file_labels = read_labels(path)
            labels.extend(file_labels)
            sources.extend((name, i) for i in range(len(file_labels)))
        if max_items is not None:
            labels, sources = labels[:max_items], sources[:max_items]
        if not labels and not allow_empty:
            files = ", ".join(str(self.root / n) for n in SPLIT_FILES[split])
            raise DataError(f"split {split!r} is empty: no labels in {files}")
        self.labels: list[LaneLabel] = labels
        self._sources = sources

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"TuSimpleDataset(root={str(self.root)!r}, split={self.split!r}, items={len(self)}, "
            f"input_hw={self.input_hw})"
        )

    def image_path(self, index: int) -> Path:
        """Path of the image of item ``index``."""
        return self.root / self.labels[index].raw_file

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = index % len(self)
        label = self.labels[index]
        path = self.root / label.raw_file
        try:
            img, src_hw = read_frame(path, self.input_hw)
        except DataError as exc:
            name, lineno = self._sources[index]
            raise DataError(f"{exc} (labelled in {self.root / name}, item {lineno + 1})") from None
        mask, exist = build_targets(label, self.input_hw, src_hw=src_hw, thickness=self.thickness)
        rgb: np.ndarray
        if self.augment is not None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
            rgb, mask, exist = _augment(img, mask, exist, self.augment, np.random.default_rng(seed))
        else:
            rgb = np.array(img)  # writable copy for torch.from_numpy
        return {
            "image": normalise(rgb),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "exist": torch.from_numpy(exist),
            "index": index,
        }


def _augment(
    img: Image.Image, mask: np.ndarray, exist: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply one random draw of ``cfg`` to an image at network size and its targets."""
    w, h = img.size
    if rng.random() < cfg.flip_p:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mask, exist = flip_targets(mask, exist)
    s = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
    tx, ty = rng.uniform(-cfg.translate, cfg.translate, size=2) * (w, h)
    if s != 1.0 or tx or ty:
        # output pixel (u, v) samples input ((u - cx - tx) / s + cx, (v - cy - ty) / s + cy), centres at .5
        cx, cy = w / 2, h / 2
        coeffs = (1 / s, 0.0, cx - (cx + tx) / s, 0.0, 1 / s, cy - (cy + ty) / s)
        img = img.transform((w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
        mask_img = Image.fromarray(mask).transform((w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.NEAREST)
        mask = np.asarray(mask_img, dtype=np.uint8)
        present = np.bincount(mask.ravel(), minlength=NUM_SLOTS + 1)[1 : NUM_SLOTS + 1] > 0
        exist = exist * present.astype(np.float32)
    rgb = np.asarray(img, dtype=np.float32)
    brightness = 1.0 + rng.uniform(-cfg.brightness, cfg.brightness)
    contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    if brightness != 1.0 or contrast != 1.0:
        grey = float(rgb.mean())
        rgb = np.clip((rgb - grey) * contrast + grey, 0.0, 255.0) * brightness
        rgb = np.clip(rgb, 0.0, 255.0)
    return rgb, mask, exist
