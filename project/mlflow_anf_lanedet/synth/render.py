"""Photometric rendering of one synthetic highway frame (numpy + PIL only).

The scene geometry (`geometry.Scene`) fixes where the road, lanes, roadside structures and vehicles are; this module
decides how they look. Draw order (painter's algorithm, as :func:`render_frame` calls it)::

    sky (gradient, clouds) -> far hills, tree line -> ground (asphalt or concrete texture in perspective, per-lane
    tone, wheel tracks, roadside grass/dirt, transverse joints, repair patches) -> tar seams -> lane markings (solid /
    dashed / raised dots / double; width and dash length follow the perspective; faded and worn) -> tree and overpass
    shadows -> horizon haze -> light poles -> barriers, guard rails, sound walls, hedges -> overpass (deck, piers,
    sign) -> vehicles, far to near (each: cast shadow, contact shadow, side face, rear face) -> vignetting, sensor
    noise -> tone curve (exposure, gamma, colour temperature, contrast as a LUT) -> lens blur -> JPEG

Everything random is drawn from the frame's own generator, so a frame depends only on (seed, frame index). Noise
fields come from a `TextureBank` (`textures.py`); colours and proportions from `palette.py`; roadside structures and
shadows are painted by `roadside.py`, vehicles by `vehicles.py`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from . import palette
from .config import IMAGE_H, IMAGE_W
from .geometry import LaneSpec, Scene
from .roadside import draw_bridge, draw_poles, draw_shadows, draw_side_structure, sample_bridge
from .textures import TILE_W, WEAR_ROWS, TextureBank, profile, tiled_rows, window
from .vehicles import draw_vehicles

__all__ = ["Rendered", "TextureBank", "render_frame"]

SEAM_COUNT_P = [0.35, 0.3, 0.2, 0.15]  # probability of 0, 1, 2, 3 tar seams
LUT_PER_LANE = 512  # entries of the lateral lookup table per lane width


@dataclass
class Rendered:
    """A rendered frame plus what tests need to check labels against pixels."""

    image: np.ndarray  # uint8 (720, 1280, 3), after tone mapping and blur (what was JPEG-encoded)
    jpeg: bytes
    marking_alpha: list[np.ndarray]  # per lane: paint opacity at the marking centre, per image row (720,)
    occluded: np.ndarray  # bool (720, 1280): covered by a vehicle


def render_frame(scene: Scene, bank: TextureBank, rng: np.random.Generator, jpeg_quality: int = 90) -> Rendered:
    """Render `scene` to a 1280x720 RGB JPEG."""
    img = np.empty((IMAGE_H, IMAGE_W, 3), np.float32)
    occluded = np.zeros((IMAGE_H, IMAGE_W), bool)
    first_ground_row = int(np.floor(scene.y_h)) + 1
    sky_horizon = _sky(img, first_ground_row, rng, bank)
    _background(img, scene, first_ground_row, rng, bank, sky_horizon)
    ground = _ground(img, scene, first_ground_row, rng, bank)
    for _ in range(int(rng.choice([0, 1, 2, 3], p=SEAM_COUNT_P))):
        _seam(img, scene, rng, bank, ground.level)
    alphas = [_marking(img, scene, lane, rng, bank) for lane in scene.lanes]
    bridge = sample_bridge(scene, rng)
    draw_shadows(img, scene, first_ground_row, ground.b, rng, bank, bridge)
    _haze(img, scene, rng, sky_horizon)
    if rng.random() < 0.5:
        draw_poles(img, scene, rng)
    for side in ("left", "right"):
        draw_side_structure(img, scene, side, rng, bank)
    if bridge is not None:
        draw_bridge(img, scene, bridge, rng)
    draw_vehicles(img, occluded, scene, rng)
    image = _finish(img, rng, bank)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=jpeg_quality)
    return Rendered(image=image, jpeg=buf.getvalue(), marking_alpha=alphas, occluded=occluded)


# --------------------------------------------------------------------------------------------------------------------
# sky and background


def _sky(img: np.ndarray, rows: int, rng: np.random.Generator, bank: TextureBank) -> np.ndarray:
    """Paint the sky gradient (and clouds) on rows 0..`rows`; returns the horizon colour."""
    sky = palette.SKIES[int(rng.choice(len(palette.SKIES), p=[s.p for s in palette.SKIES]))]
    top, horizon = np.asarray(sky.top, np.float32), np.asarray(sky.horizon, np.float32)
    top, horizon = top * rng.uniform(0.9, 1.08), horizon * rng.uniform(0.93, 1.05)
    mix = (np.arange(rows, dtype=np.float32) / max(rows - 1, 1)) ** rng.uniform(0.5, 1.5)
    img[:rows] = (top[None, :] * (1 - mix[:, None]) + horizon[None, :] * mix[:, None])[:, None, :]
    cloud_amount = rng.uniform(0, 30) if rng.random() < 0.6 else 0.0
    if cloud_amount > 1:
        cloud = np.clip(bank.cloud[:rows, window(rng)] - rng.uniform(-0.5, 1.0), 0, None)
        img[:rows] += (cloud_amount * cloud)[..., None]
    return horizon


def _fill_above(img: np.ndarray, top: np.ndarray, bottom: int, color: np.ndarray, tex: np.ndarray | None) -> None:
    """Fill each column from row `top[x]` down to `bottom` (exclusive) with `color` (times 1 + texture)."""
    first = int(max(0, np.floor(top.min())))
    if first >= bottom:
        return
    rows = np.arange(first, bottom)[:, None]
    mask = rows >= top[None, :]
    region = img[first:bottom]
    if tex is None:
        fill = np.broadcast_to(color, region.shape)
    else:
        fill = color[None, None, :] * (1 + tex[first:bottom])[..., None]
    np.copyto(region, fill, where=mask[..., None])


def _background(
    img: np.ndarray, scene: Scene, rows: int, rng: np.random.Generator, bank: TextureBank, sky_horizon: np.ndarray
) -> None:
    """Far hills and a tree line standing on the horizon."""
    foliage = tiled_rows(bank.foliage[:, window(rng)], rows)[:rows]
    if rng.random() < 0.6:
        hills = np.clip(rng.uniform(10, 50) + profile(rng, [(400, 18), (120, 6), (30, 2)]), 2, None)
        green = np.asarray([rng.uniform(70, 110), rng.uniform(85, 120), rng.uniform(80, 110)], np.float32)
        color = sky_horizon * 0.55 + green * 0.45
        _fill_above(img, scene.y_h - hills, rows, color, 0.05 * foliage)
    if rng.random() < 0.88:
        crowns = _crowns(rng, scene.x_c)
        g = rng.uniform(35, 72)  # dark foliage, green the strongest channel
        dark = np.asarray([g * rng.uniform(0.65, 0.95), g, g * rng.uniform(0.55, 0.9)], np.float32)
        _fill_above(img, scene.y_h - np.clip(crowns, 0, rows - 5), rows, dark, rng.uniform(0.12, 0.3) * foliage)


def _crowns(rng: np.random.Generator, x_c: float) -> np.ndarray:
    """Height above the horizon of a tree line: overlapping round crowns, taller toward the image sides (nearer)."""
    cols = np.arange(IMAGE_W, dtype=np.float64)
    n = int(rng.integers(20, 90))
    centre = rng.uniform(-100, IMAGE_W + 100, n)
    sideness = np.abs(centre - x_c) / (IMAGE_W / 2)
    radius = rng.uniform(8, 40, n) * (1 + rng.uniform(0, 2.5) * sideness**2)
    trunk = rng.uniform(0, 35, n) * (1 + rng.uniform(0, 3) * sideness**2)
    keep = rng.random(n) < rng.uniform(0.6, 1.0)
    d2 = radius[:, None] ** 2 - (cols[None, :] - centre[:, None]) ** 2
    height = np.where((d2 > 0) & keep[:, None], trunk[:, None] + np.sqrt(np.maximum(d2, 0)), 0.0).max(axis=0)
    return height + profile(rng, [(9, 1.5), (3, 1.0)]) * (height > 0)


# --------------------------------------------------------------------------------------------------------------------
# ground


@dataclass
class _Ground:
    b: np.ndarray  # lateral offset (X/H) of every ground pixel, rows first_ground_row..719
    level: float


def _lateral_luts(
    scene: Scene, level: float, contrast: float, tint: np.ndarray, rng: np.random.Generator
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Everything that depends only on the lateral position, as RGB / texture-amplitude lookup tables over b
    (`LUT_PER_LANE` entries per lane): per-lane tone (different paving), oil strip in the lane middle, wheel paths, and
    the roadside beyond the edges. Returns (b of entry 0, b of every entry, colour LUT, amplitude LUT)."""
    spacing = scene.spacing
    lo = scene.lanes[0].b - 30 * spacing
    n = int(np.ceil((scene.lanes[-1].b + 30 * spacing - lo) / spacing * LUT_PER_LANE))
    lateral = lo + np.arange(n) * (spacing / LUT_PER_LANE)
    lane_pos = (lateral - scene.lanes[0].b) / spacing
    frac = lane_pos - np.floor(lane_pos)
    track = -rng.uniform(0, 0.12) * np.exp(-(((frac - 0.5) / 0.07) ** 2)) + rng.uniform(-0.05, 0.06) * (
        np.exp(-(((frac - 0.27) / 0.06) ** 2)) + np.exp(-(((frac - 0.73) / 0.06) ** 2))
    )
    tone = rng.normal(0, 0.035, 64)[np.clip(np.floor(lane_pos).astype(int) + 32, 0, 63)]
    color_lut = (level * (1 + tone + track))[:, None] * tint[None, :]
    amp_lut = np.full(n, contrast)
    for side in ("left", "right"):
        kind = str(rng.choice(list(palette.ROADSIDE_GROUND), p=palette.ROADSIDE_GROUND_P))
        # every kind's colour is drawn (the draws keep their place in the frame's random stream), one is used
        colours = {name: tuple(rng.uniform(*ch) for ch in rgb) for name, rgb in palette.ROADSIDE_GROUND.items()}
        outside = lateral < scene.road_left if side == "left" else lateral > scene.road_right
        color_lut[outside] = colours[kind]
        amp_lut[outside] = 0.16
    return lo, lateral, color_lut, amp_lut


def _ground(img: np.ndarray, scene: Scene, first_row: int, rng: np.random.Generator, bank: TextureBank) -> _Ground:
    rows = IMAGE_H - first_row
    t = (np.arange(first_row, IMAGE_H, dtype=np.float32) - np.float32(scene.y_h))[:, None]
    cols = np.arange(IMAGE_W, dtype=np.float32)[None, :]
    b = (cols - np.float32(scene.x_c) - np.float32(scene.k) / t) / t
    concrete = rng.random() < palette.CONCRETE_P
    level = float(rng.uniform(*palette.CONCRETE_LEVEL) if concrete else rng.uniform(*palette.ASPHALT_LEVEL))
    contrast = float(rng.uniform(0.05, 0.13))
    tint = np.asarray([1.0, rng.uniform(0.97, 1.01), rng.uniform(0.93, 1.02)])
    lo, lateral, color_lut, amp_lut = _lateral_luts(scene, level, contrast, tint, rng)
    spacing = scene.spacing
    lut_index = (b - np.float32(lo)) * np.float32(LUT_PER_LANE / spacing)
    np.clip(lut_index, 0, len(lateral) - 1, out=lut_index)
    entry = lut_index.astype(np.int32)
    shade = bank.road[:rows, window(rng)] * np.take(amp_lut.astype(np.float32), entry)
    shade += 1

    # transverse joints (concrete slabs) as a per-row darkening: coverage of joints of width w in the row's ground span
    if concrete and rng.random() < 0.7:
        period, width = rng.uniform(4.5, 6.5), 0.03
        focal_height = scene.focal * scene.cam_h
        t_row = t[:, 0].astype(np.float64)
        z_near, z_far = focal_height / (t_row + 0.5), focal_height / np.maximum(t_row - 0.5, 0.3)
        covered = lambda z: np.floor(z / period) * width + np.minimum(z % period, width)  # noqa: E731
        coverage = ((covered(z_far) - covered(z_near)) / (z_far - z_near) * rng.uniform(0.15, 0.4)).astype(np.float32)
        on_road = ((lateral >= scene.road_left) & (lateral <= scene.road_right)).astype(np.float32)
        shade *= 1 - coverage[:, None] * np.take(on_road, entry)

    # repair patches: quads in (lateral, distance) space
    for _ in range(int(rng.integers(0, 4))):
        centre = rng.uniform(scene.lanes[0].b, scene.lanes[-1].b)
        half = spacing * rng.uniform(0.15, 0.6)
        z_near = rng.uniform(5, 60)
        z_far = z_near + rng.uniform(2, 25)
        top = int(np.clip(scene.y_h + scene.t_of_z(z_far), first_row, IMAGE_H)) - first_row
        bottom = int(np.clip(scene.y_h + scene.t_of_z(z_near), first_row, IMAGE_H)) - first_row
        if bottom > top:
            band = b[top:bottom]
            inside = (band > centre - half) & (band < centre + half)
            shade[top:bottom] *= np.where(inside, np.float32(rng.uniform(0.72, 1.12)), np.float32(1.0))

    np.multiply(np.take(color_lut.astype(np.float32), entry, axis=0), shade[..., None], out=img[first_row:])
    return _Ground(b=b, level=level)


# --------------------------------------------------------------------------------------------------------------------
# painted stripes: lane markings and tar seams


@dataclass(frozen=True)
class _Paint:
    """How a stripe is painted: width (m), colour, opacity, wear strength, dash pattern (dash_m, gap_m, phase_m) or
    None for a continuous line, offsets into the wear tile, and whether its dashes are round dots."""

    width_m: float
    color: tuple[float, float, float]
    opacity: float
    wear: float
    dash: tuple[float, float, float] | None
    wear_offset: tuple[int, int]
    round_dots: bool = False


def _stripe(img: np.ndarray, scene: Scene, b: float, y_start: float, paint: _Paint, bank: TextureBank) -> np.ndarray:
    """Alpha-blend one painted stripe along lateral offset `b` from row `y_start` down; returns centre opacity per row.

    Width grows with the perspective; a dash pattern gives each row the fraction of its ground span that is painted
    (exact for the periodic pattern), so dashes shorten toward the horizon and blend there.
    """
    alpha_rows = np.zeros(IMAGE_H, np.float32)
    first = int(np.ceil(max(y_start, scene.y_h + 0.6)))
    if first >= IMAGE_H:
        return alpha_rows
    rows = np.arange(first, IMAGE_H, dtype=np.float64)
    t = rows - scene.y_h
    centre = scene.lane_x(b, t)
    slope = b - scene.k / t**2
    width_px = paint.width_m / scene.cam_h * t
    half = np.maximum(width_px, 1.0) / 2
    if not paint.round_dots:  # a long stripe's horizontal cross-section widens with its slant; a short dot's does not
        half = half * np.sqrt(1 + slope**2)
    row_alpha = np.minimum(width_px, 1.0) * paint.opacity
    if paint.dash is not None:
        dash, gap, phase = paint.dash
        period = dash + gap
        focal_height = scene.focal * scene.cam_h
        z_near, z_far = focal_height / (t + 0.5), focal_height / np.maximum(t - 0.5, 0.3)
        painted = lambda z: np.floor(z / period) * dash + np.minimum(z % period, dash)  # noqa: E731
        row_alpha = row_alpha * (painted(z_far + phase) - painted(z_near + phase)) / (z_far - z_near)
    keep = (centre > -half - 2) & (centre < IMAGE_W + half + 2) & (row_alpha > 0.004)
    if not keep.any():
        return alpha_rows
    rows, centre, half, row_alpha = rows[keep], centre[keep], half[keep], row_alpha[keep]
    reach = int(np.ceil(half.max())) + 1
    cols = np.floor(centre)[:, None].astype(np.int64) + np.arange(-reach, reach + 1)[None, :]
    alpha = np.clip(half[:, None] + 0.5 - np.abs(cols - centre[:, None]), 0.0, 1.0) * row_alpha[:, None]
    row_index = rows.astype(np.int64)
    wear_rows = (row_index[:, None] + paint.wear_offset[0]) % bank.wear.shape[0]
    alpha *= 1 - paint.wear * bank.wear[wear_rows, (cols + paint.wear_offset[1]) % TILE_W]
    centre_col = np.clip(np.rint(centre).astype(np.int64) - cols[:, 0], 0, 2 * reach)
    alpha_rows[row_index] = alpha[np.arange(len(row_index)), centre_col]
    valid = (cols >= 0) & (cols < IMAGE_W) & (alpha > 0.003)
    rr = np.broadcast_to(row_index[:, None], cols.shape)[valid]
    cc, aa = cols[valid], alpha[valid].astype(np.float32)[:, None]
    pix = img[rr, cc]
    img[rr, cc] = pix + (np.asarray(paint.color, np.float32)[None, :] - pix) * aa
    return alpha_rows


def _wear_offset(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(0, WEAR_ROWS)), int(rng.integers(0, TILE_W))


def _marking(img: np.ndarray, scene: Scene, lane: LaneSpec, rng: np.random.Generator, bank: TextureBank) -> np.ndarray:
    offset = _wear_offset(rng)
    dash = (lane.dash_m, lane.gap_m, lane.phase_m) if lane.style in ("dashed", "dots") else None
    if lane.style == "double":
        separation = (lane.width_m + rng.uniform(0.08, 0.14)) / 2 / scene.cam_h
        paint = _Paint(lane.width_m, lane.color, lane.paint, lane.wear, None, offset)
        left = _stripe(img, scene, lane.b - separation, lane.y_start, paint, bank)
        right = _stripe(img, scene, lane.b + separation, lane.y_start, paint, bank)
        return np.maximum(left, right)
    paint = _Paint(lane.width_m, lane.color, lane.paint, lane.wear, dash, offset, round_dots=lane.style == "dots")
    return _stripe(img, scene, lane.b, lane.y_start, paint, bank)


def _seam(img: np.ndarray, scene: Scene, rng: np.random.Generator, bank: TextureBank, level: float) -> None:
    """A dark tar seam or crack sealing running along the road (an unlabelled distractor near the lanes)."""
    lanes = scene.lanes
    near = lanes[int(rng.integers(len(lanes)))].b
    b = near + rng.choice([-1, 1]) * rng.uniform(0.12, 0.45) * scene.spacing
    y_start = scene.y_h + rng.uniform(15, 120)
    dash = (rng.uniform(4, 30), rng.uniform(1, 12), rng.uniform(0, 30)) if rng.random() < 0.5 else None
    color = tuple(level * shade for shade in palette.SEAM_SHADE)
    offset = _wear_offset(rng)
    width_m = rng.uniform(0.03, 0.08)
    _stripe(img, scene, b, y_start, _Paint(width_m, color, rng.uniform(0.4, 0.85), 0.5, dash, offset), bank)


# --------------------------------------------------------------------------------------------------------------------
# atmosphere and camera


def _haze(img: np.ndarray, scene: Scene, rng: np.random.Generator, sky_horizon: np.ndarray) -> None:
    """Aerial perspective: far ground and the tree line fade toward the horizon colour (before near structures)."""
    amount, tau = rng.uniform(0.0, 0.45), rng.uniform(10, 40)
    if amount < 0.03:
        return
    top, bottom = int(max(0, scene.y_h - 3 * tau)), int(min(IMAGE_H, scene.y_h + 5 * tau))
    weight = (amount * np.exp(-np.abs(np.arange(top, bottom) - scene.y_h) / tau)).astype(np.float32)[:, None, None]
    img[top:bottom] += (sky_horizon.astype(np.float32)[None, None, :] - img[top:bottom]) * weight


def _finish(img: np.ndarray, rng: np.random.Generator, bank: TextureBank) -> np.ndarray:
    """Vignetting, sensor noise, tone curve (exposure, colour temperature, contrast), lens blur -> uint8."""
    vignette = rng.uniform(0, 0.4)
    if vignette > 0.05:
        img *= (1 - np.float32(vignette) * bank.vignette)[..., None]
    noise_sigma = np.float32(rng.uniform(1.0, 4.5))
    img += bank.grain[:, window(rng)] * noise_sigma
    img += 0.5
    np.clip(img, 0, 255, out=img)
    u8 = img.astype(np.uint8)

    exposure = float(np.exp(rng.normal(0.0, 0.22)))
    gamma = float(rng.uniform(0.8, 1.25))
    temperature = float(rng.uniform(-1, 1))
    gains = np.asarray([1 + 0.07 * temperature, 1.0, 1 - 0.09 * temperature]) * rng.uniform(0.97, 1.03, 3)
    contrast = float(rng.uniform(-0.15, 0.35))
    level = np.arange(256) / 255.0
    luts = []
    for gain in gains:
        curve = np.clip(level * exposure * gain, 0, 1) ** gamma
        curve = curve + contrast * curve * (1 - curve) * (2 * curve - 1) * 2  # S-curve around mid grey
        luts.append(np.clip(np.rint(curve * 255), 0, 255).astype(np.uint8))
    pil = Image.fromarray(u8).point(np.concatenate(luts).tolist())
    blur_sigma = rng.uniform(0.0, 1.0)
    if blur_sigma > 0.35:  # lens blur: a 3x3 Gaussian (PIL's GaussianBlur is 3x slower)
        w1 = float(np.exp(-0.5 / blur_sigma**2))
        k1 = np.asarray([w1, 1.0, w1])
        kernel = np.outer(k1, k1).ravel()
        pil = pil.filter(ImageFilter.Kernel((3, 3), kernel.tolist(), scale=float(kernel.sum())))
    return np.asarray(pil)
