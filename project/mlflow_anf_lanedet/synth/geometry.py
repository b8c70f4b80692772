"""Lane geometry for synthetic frames, taken from real TuSimple labels.

Every real frame is fitted with a flat-road camera model in image coordinates::

    x(y) = x_c + b_i * t + k / t,    t = y - y_h  (rows below the horizon)

`y_h` is the horizon row, `x_c` the vanishing column, `k` the road curvature term (shared by all lanes: a road of
constant curvature seen by a pinhole camera), and `b_i = X_i / H` the lateral offset of lane marking `i` in units of the
camera height. The fit (horizon found by a 1-D search, the rest linear least squares) reproduces the real labels to a
median 3 px RMS. A synthetic frame perturbs those parameters (horizon and vanishing point jitter, lateral camera shift,
curvature change, lane width), adds or drops a lane, and then *everything* -- drawn markings, labels, road edges,
vehicles, shadows -- comes from the same model, so labels are exactly the drawn lanes.

Hold-out: real frames are sorted by clip and index and cut into blocks of consecutive frames (neighbouring frames of a
clip are near copies); whole blocks go to train, val or test, so val/test geometry comes from other real frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..road import solve_road
from . import palette
from .config import H_SAMPLES_0313, IMAGE_H, IMAGE_W, SynthError

#: consecutive real frames per hold-out block, and which block slots (of 10) go to val / test.
SPLIT_BLOCK = 40
_VAL_SLOT, _TEST_SLOT = 9, 4
#: a lane needs this many labelled points on the 240..710 grid to exist (drawn and labelled) in a frame.
MIN_LANE_POINTS = 4


@dataclass(frozen=True)
class SourceFrame:
    """One real label line."""

    raw_file: str
    lanes: np.ndarray  # (n_lanes, n_rows) int, -2 = no point
    h_samples: np.ndarray  # (n_rows,) int


@dataclass(frozen=True)
class RoadFit:
    """The road model fitted to one real frame (see module doc). Lanes sorted left to right."""

    raw_file: str
    y_h: float
    x_c: float
    k: float
    b: tuple[float, ...]
    t_first: tuple[float, ...]  # rows below the horizon where each real lane's labels start
    rms: float

    @property
    def spacing(self) -> float:
        """Typical lateral distance between neighbouring markings (b units)."""
        return float(np.median(np.diff(self.b)))


@dataclass
class LaneSpec:
    """One painted lane marking. `b` lateral offset (X/H), drawn from row `y_start` down to the image bottom."""

    b: float
    y_start: float
    style: str  # "dashed" | "solid" | "dots" | "double"
    color: tuple[float, float, float]
    width_m: float
    paint: float  # opacity 0..1 (faded paint < 0.6)
    wear: float  # strength of the patchy wear texture 0..1
    dash_m: float = 3.0
    gap_m: float = 9.0
    phase_m: float = 0.0


@dataclass
class Vehicle:
    """A box-shaped vehicle standing in a lane: `b` lateral centre (X/H), `z` distance of its rear (m)."""

    b: float
    z: float
    kind: str  # "car" | "suv" | "truck"
    width_m: float
    height_m: float
    length_m: float
    color: tuple[float, float, float]


@dataclass
class Scene:
    """Geometry of one frame (image coordinates, see module doc). `focal` in px, `cam_h` in m."""

    source: str
    y_h: float
    x_c: float
    k: float
    cam_h: float
    focal: float
    lanes: list[LaneSpec]
    road_left: float  # b of the road edges
    road_right: float
    left_side: str  # "barrier" | "rail" | "grass" | "wall" | "bushes"
    right_side: str
    vehicles: list[Vehicle] = field(default_factory=list)

    @property
    def spacing(self) -> float:
        return float(np.median(np.diff([lane.b for lane in self.lanes])))

    def lane_x(self, b: float | np.ndarray, t: np.ndarray) -> np.ndarray:
        """Column of lateral offset `b` at `t` rows below the horizon."""
        return self.x_c + b * t + self.k / t

    def t_of_z(self, z: float | np.ndarray) -> float | np.ndarray:
        """Rows below the horizon of ground distance `z` (m)."""
        return self.focal * self.cam_h / z


# --------------------------------------------------------------------------------------------------------------------
# real labels


def load_sources(path: Path) -> list[SourceFrame]:
    """Parse TuSimple label JSON lines (or their compact ``.npz``, :mod:`mlflow_anf_lanedet.assets`); errors name
    `path:line`."""
    path = Path(path)
    if not path.is_file():
        raise SynthError(f"labels file not found: {path}")
    if path.suffix == ".npz":
        from ..assets import AssetError, decode_label_lines

        try:
            records = decode_label_lines(path)
        except AssetError as exc:
            raise SynthError(str(exc)) from None
        return [SourceFrame(raw_file=str(rec["raw_file"]), lanes=np.asarray(rec["lanes"], dtype=np.int64),
                            h_samples=np.asarray(rec["h_samples"], dtype=np.int64)) for rec in records]
    out: list[SourceFrame] = []
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                h = np.asarray(rec["h_samples"], dtype=np.int64)
                lanes = np.asarray(rec["lanes"], dtype=np.int64).reshape(-1, len(h))
                raw_file = str(rec["raw_file"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SynthError(f"{path}:{lineno}: not a TuSimple label line ({exc})") from None
            out.append(SourceFrame(raw_file=raw_file, lanes=lanes, h_samples=h))
    if not out:
        raise SynthError(f"{path}: no label lines")
    return out


def _sort_key(raw_file: str) -> tuple[str, int, str]:
    parts = raw_file.split("/")
    clip = parts[1] if len(parts) > 2 else ""
    index = parts[2] if len(parts) > 2 else raw_file
    return (clip, int(index) if index.isdigit() else -1, raw_file)


def split_sources(sources: list[SourceFrame]) -> dict[str, list[int]]:
    """Indices of real frames per split: blocks of `SPLIT_BLOCK` consecutive frames of a clip, fixed for all seeds."""
    order = sorted(range(len(sources)), key=lambda i: _sort_key(sources[i].raw_file))
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for pos, i in enumerate(order):
        slot = (pos // SPLIT_BLOCK) % 10
        splits["val" if slot == _VAL_SLOT else "test" if slot == _TEST_SLOT else "train"].append(i)
    if min(len(v) for v in splits.values()) == 0:
        raise SynthError(
            f"labels file has {len(sources)} frames: too few to hold out val/test geometry "
            f"(need more than {9 * SPLIT_BLOCK})"
        )
    return splits


def fit_road(src: SourceFrame) -> RoadFit | None:
    """Fit the road model to one real frame (:func:`mlflow_anf_lanedet.road.solve_road`, every labelled point with
    weight 1, horizon rows 150, 151, ... up to 4 rows above the highest point or 300); None if fewer than two lanes
    have two points."""
    ys_all = src.h_samples.astype(np.float64)
    pts = [(ys_all[lane >= 0], lane[lane >= 0].astype(np.float64)) for lane in src.lanes]
    pts = [(y, x) for y, x in pts if len(x) >= 2]
    n = len(pts)
    if n < 2:
        return None
    y = np.concatenate([p[0] for p in pts])
    x = np.concatenate([p[1] for p in pts])
    lane_of = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(pts)])
    fit = solve_road(y, x, lane_of, n, np.arange(150.0, min(y.min() - 4.0, 300.0), 1.0), ridge=0.0)
    if fit is None:
        return None
    t_first = np.array([p[0].min() for p in pts]) - fit.y_h
    order = np.argsort(fit.b)
    return RoadFit(
        raw_file=src.raw_file,
        y_h=fit.y_h,
        x_c=fit.x_c,
        k=fit.k,
        b=tuple(float(v) for v in fit.b[order]),
        t_first=tuple(float(v) for v in t_first[order]),
        rms=fit.rms,
    )


def usable(fit: RoadFit | None, max_rms: float) -> bool:
    """A fit good enough to build frames from: small residual, plausible horizon, distinct lanes."""
    if fit is None or fit.rms > max_rms or not 170.0 <= fit.y_h <= 300.0:
        return False
    return bool(np.all(np.diff(fit.b) > 0.15)) and 0.4 < fit.spacing < 4.0


# --------------------------------------------------------------------------------------------------------------------
# scene sampling

def sample_scene(fit: RoadFit, rng: np.random.Generator) -> Scene | None:
    """Perturb a real road fit into a new frame geometry with 3-5 lanes; None if the draw leaves fewer than 3."""
    spacing = fit.spacing
    y_h = float(np.clip(fit.y_h + np.clip(rng.normal(0, 6), -14, 14), 185, 290))
    x_c = fit.x_c + float(np.clip(rng.normal(0, 25), -60, 60))
    k = fit.k * float(rng.uniform(0.7, 1.3)) + float(rng.normal(0, 700))
    scale = float(rng.uniform(0.93, 1.07))
    shift = float(rng.uniform(-0.22, 0.22)) * spacing
    b = [v * scale + shift for v in fit.b]
    t_first = list(fit.t_first)

    # 3-5 lanes: drop an outer one or add lanes consistent with the perspective (same spacing as the neighbour)
    r = rng.random()
    if len(b) >= 4 and r < 0.15:
        drop = 0 if rng.random() < 0.5 else len(b) - 1
        del b[drop], t_first[drop]
    else:
        n_add = max(0, 3 - len(b)) + (1 if r > 0.65 and len(b) < 5 else 0)
        for _ in range(n_add):
            left_count = sum(1 for v in b if v < 0)
            add_left = left_count < len(b) - left_count or (left_count == len(b) - left_count and rng.random() < 0.5)
            if add_left:
                step = (b[1] - b[0]) if len(b) > 1 else spacing
                b.insert(0, b[0] - step)
                t_first.insert(0, t_first[0] + float(rng.uniform(0, 20)))
            else:
                step = (b[-1] - b[-2]) if len(b) > 1 else spacing
                b.append(b[-1] + step)
                t_first.append(t_first[-1] + float(rng.uniform(0, 20)))
    b = b[:5] if len(b) <= 5 else b[1:6]

    cam_h = float(rng.uniform(3.4, 3.8)) / (spacing * scale)
    focal = float(rng.uniform(950, 1250))
    scene = Scene(
        source=fit.raw_file, y_h=y_h, x_c=x_c, k=k, cam_h=cam_h, focal=focal, lanes=[],
        road_left=0.0, road_right=0.0, left_side="grass", right_side="grass",
    )  # fmt: skip
    t_min = max(8.0, abs(k) / 350.0)
    n = len(b)
    lanes: list[LaneSpec] = []
    for i, (bi, tf) in enumerate(zip(b, t_first)):
        y_start = y_h + max(tf + float(rng.normal(0, 4)), t_min)
        outer = i in (0, n - 1)
        lanes.append(_sample_marking(bi, y_start, outer, left=i == 0, rng=rng, scene=scene))
    lanes = [ln for ln in lanes if _n_points(scene, ln) >= MIN_LANE_POINTS]
    if not 3 <= len(lanes) <= 5:
        return None
    scene.lanes = lanes
    sp = scene.spacing
    scene.road_left = lanes[0].b - sp * float(rng.uniform(0.12, 0.9))
    scene.road_right = lanes[-1].b + sp * float(rng.uniform(0.12, 0.9))
    sides = ["barrier", "rail", "grass", "wall", "bushes"]
    scene.left_side = str(rng.choice(sides, p=[0.45, 0.2, 0.15, 0.08, 0.12]))
    scene.right_side = str(rng.choice(sides, p=[0.12, 0.3, 0.25, 0.13, 0.2]))
    scene.vehicles = _sample_vehicles(scene, rng)
    return scene


def _sample_marking(
    b: float, y_start: float, outer: bool, left: bool, rng: np.random.Generator, scene: Scene
) -> LaneSpec:
    if outer and rng.random() < 0.55:
        style = "double" if left and rng.random() < 0.2 else "solid"
        color = palette.MARKING_YELLOW if left and rng.random() < 0.6 else palette.MARKING_WHITE
    else:
        style = str(rng.choice(["dashed", "dots", "solid"], p=[0.78, 0.12, 0.10]))
        color = palette.MARKING_WHITE
    bright = float(rng.uniform(0.82, 1.0))
    paint = float(rng.uniform(0.35, 0.6)) if rng.random() < 0.15 else float(rng.uniform(0.6, 1.0))
    if style == "dots":
        width = float(rng.uniform(*palette.DOT_WIDTH_M))
        dash, gap = float(rng.uniform(*palette.DOT_LENGTH_M)), float(rng.uniform(*palette.DOT_GAP_M))
        paint = max(paint, 0.85)
    else:
        width = float(rng.uniform(*palette.LINE_WIDTH_M))
        dash, gap = float(rng.uniform(*palette.DASH_M)), float(rng.uniform(*palette.DASH_GAP_M))
    # put the far end of the marking on a dash so the lane visibly starts where its label starts
    z_far = scene.focal * scene.cam_h / max(y_start - scene.y_h, 1.0)
    phase = (float(rng.uniform(0.3, 1.0)) * dash - z_far) % (dash + gap)
    return LaneSpec(
        b=b, y_start=y_start, style=style, color=tuple(c * bright for c in color), width_m=width, paint=paint,
        wear=float(rng.uniform(0.0, 0.7)), dash_m=dash, gap_m=gap, phase_m=phase,
    )  # fmt: skip


def _sample_vehicles(scene: Scene, rng: np.random.Generator) -> list[Vehicle]:
    """0-5 vehicles standing in the lanes between markings, far enough apart not to intersect."""
    gaps = [(a.b, c.b) for a, c in zip(scene.lanes, scene.lanes[1:])]
    out: list[Vehicle] = []
    for _ in range(int(min(rng.poisson(2.3), 6))):
        lo, hi = gaps[int(rng.integers(len(gaps)))]
        ego = lo < 0 < hi
        kind = str(rng.choice(["car", "suv", "truck"], p=[0.6, 0.25, 0.15]))
        w, h, length = (v * float(rng.uniform(0.93, 1.07)) for v in palette.VEHICLE_SIZE_M[kind])
        z = float((14 if ego else 6.5) + 100 * rng.random() ** 1.6)
        bc = (lo + hi) / 2 + float(rng.normal(0, 0.04)) * (hi - lo)
        if any(abs(v.b - bc) < (hi - lo) * 0.6 and -v.length_m - 3 < z - v.z < length + 3 for v in out):
            continue
        color = tuple(float(c) for c in palette.CAR_COLOURS[int(rng.integers(len(palette.CAR_COLOURS)))])
        if kind == "truck" and rng.random() < 0.7:
            color = tuple(float(c) for c in rng.uniform(185, 235) * np.ones(3))
        out.append(Vehicle(b=bc, z=z, kind=kind, width_m=w, height_m=h, length_m=length, color=color))
    for _ in range(int(rng.integers(0, 7))):  # distant traffic near the horizon
        lo, hi = gaps[int(rng.integers(len(gaps)))]
        kind = str(rng.choice(["car", "suv", "truck"], p=[0.6, 0.25, 0.15]))
        w, h, length = palette.VEHICLE_SIZE_M[kind]
        z = float(rng.uniform(70, 260))
        bc = (lo + hi) / 2 + float(rng.normal(0, 0.04)) * (hi - lo)
        if any(abs(v.b - bc) < (hi - lo) * 0.6 and -v.length_m - 3 < z - v.z < length + 3 for v in out):
            continue
        color = tuple(float(c) for c in palette.CAR_COLOURS[int(rng.integers(len(palette.CAR_COLOURS)))])
        out.append(Vehicle(b=bc, z=z, kind=kind, width_m=w, height_m=h, length_m=length, color=color))
    return sorted(out, key=lambda v: -v.z)


# --------------------------------------------------------------------------------------------------------------------
# labels


def lane_points(scene: Scene, lane: LaneSpec, h_samples: np.ndarray) -> np.ndarray:
    """TuSimple x per h_sample for one lane: the drawn centre where the marking is in the frame, else -2.

    Rows above `y_start` are -2 (not drawn). Gaps between dashes, shadows and vehicles in front of the marking stay
    labelled, as TuSimple annotators label a lane through dash gaps and occlusion.
    """
    h = np.asarray(h_samples, dtype=np.float64)
    t = np.maximum(h - scene.y_h, 1e-3)
    x = np.rint(scene.lane_x(lane.b, t))
    ok = (h >= lane.y_start) & (x >= 0) & (x <= IMAGE_W - 1) & (h <= IMAGE_H - 1)
    return np.where(ok, x, -2).astype(np.int64)


def _n_points(scene: Scene, lane: LaneSpec) -> int:
    return int((lane_points(scene, lane, np.asarray(H_SAMPLES_0313)) >= 0).sum())


def file_order(scene: Scene) -> list[int]:
    """Order of the scene's lanes (indices into `scene.lanes`, which run left to right) in a label line.

    The real label files list the ego lane's left and right markings first, then the next ones outwards
    (left, right, ...), not left to right; readers must sort them. We write them the same way.
    """
    left = [i for i in range(len(scene.lanes) - 1, -1, -1) if scene.lanes[i].b < 0]
    right = [i for i in range(len(scene.lanes)) if scene.lanes[i].b >= 0]
    order: list[int] = []
    for k in range(max(len(left), len(right))):
        order += left[k : k + 1] + right[k : k + 1]
    return order


def frame_labels(scene: Scene, h_samples: tuple[int, ...], pad_to: int = 0) -> list[list[int]]:
    """The `lanes` field of the frame's label line, in `file_order`; padded with all -2 lanes up to `pad_to`
    (clip 0313's lines always list four lanes, an invisible one as all -2)."""
    lanes = [lane_points(scene, scene.lanes[i], np.asarray(h_samples)).tolist() for i in file_order(scene)]
    return lanes + [[-2] * len(h_samples) for _ in range(pad_to - len(lanes))]
