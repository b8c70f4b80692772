"""Photometric rendering of one synthetic highway frame (numpy + PIL only).

The scene geometry (`geometry.Scene`) fixes where the road, lanes, roadside structures and vehicles are; this module
decides how they look. Draw order (painter's algorithm)::

    sky -> far hills / tree line -> ground (asphalt or concrete texture in perspective, per-lane tone, wheel tracks,
    transverse joints, repair patches, roadside grass/dirt) -> tar seams -> lane markings (solid / dashed / raised
    dots / double yellow; width and dash length follow the perspective; faded and worn) -> tree and overpass shadows ->
    light poles -> barriers, guard rails, sound walls, hedges -> overpass -> vehicle shadows and vehicles (far to near)
    -> horizon haze -> vignetting, sensor noise -> exposure / colour temperature / contrast (LUT) -> lens blur -> JPEG

Everything random is drawn from the frame's own generator, so a frame depends only on (seed, frame index). Noise
fields are precomputed once per worker in a `TextureBank` (deterministic from the seed) and sliced per frame at random
offsets, which keeps a frame at a few tens of milliseconds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from .config import IMAGE_H, IMAGE_W
from .geometry import LaneSpec, Scene, Vehicle

TILE_W = 2048  # texture tiles are wider than the frame; a frame takes a random horizontal window
ROAD_ROWS = IMAGE_H - 170  # ground rows below the highest possible horizon
SKY_ROWS = 300
_F0, _H0 = 2300.0, 2.2  # reference focal*height and camera height the ground tiles are projected with


# --------------------------------------------------------------------------------------------------------------------
# noise tiles


def _value_noise(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, cell: float, n: int = 256) -> np.ndarray:
    """Smooth value noise (unit variance lattice, wrapping) sampled at world coordinates (u, v)."""
    grid = rng.standard_normal((n, n)).astype(np.float32)
    fu, fv = u / cell, v / cell
    iu, iv = np.floor(fu), np.floor(fv)
    du, dv = fu - iu, fv - iv
    du, dv = du * du * (3 - 2 * du), dv * dv * (3 - 2 * dv)
    iu0, iv0 = iu.astype(np.int64) % n, iv.astype(np.int64) % n
    iu1, iv1 = (iu0 + 1) % n, (iv0 + 1) % n
    top = grid[iv0, iu0] * (1 - du) + grid[iv0, iu1] * du
    bot = grid[iv1, iu0] * (1 - du) + grid[iv1, iu1] * du
    return (top * (1 - dv) + bot * dv).astype(np.float32)


def _image_noise(rng: np.random.Generator, rows: int, cols: int, octaves: list[tuple[float, float]]) -> np.ndarray:
    """Image-space multi-octave noise: (cell px, amplitude) octaves of upsampled random lattices, unit std."""
    out = np.zeros((rows, cols), np.float32)
    for cell, amp in octaves:
        small = rng.standard_normal((int(rows / cell) + 2, int(cols / cell) + 2)).astype(np.float32)
        big = Image.fromarray(small, mode="F").resize((int(small.shape[1] * cell), int(small.shape[0] * cell)),
                                                      Image.BICUBIC)  # fmt: skip
        out += amp * np.asarray(big, np.float32)[:rows, :cols]
    out -= out.mean()
    out /= out.std() + 1e-6
    return out


class TextureBank:
    """Noise tiles shared by all frames of one worker (deterministic from the seed, ~0.5 s to build)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E27]))
        t = (np.arange(ROAD_ROWS, dtype=np.float32) + 0.5)[:, None]
        x = np.arange(TILE_W, dtype=np.float32)[None, :] - TILE_W / 2
        z = np.broadcast_to(_F0 / t, (ROAD_ROWS, TILE_W))
        lat = x * (_H0 / t)
        dz = _F0 / t**2  # ground metres covered by one row
        road = np.zeros((ROAD_ROWS, TILE_W), np.float32)
        for cell, amp in ((0.07, 0.5), (0.35, 0.35), (1.5, 0.25), (6.0, 0.2)):
            fade = np.clip(cell / dz - 0.3, 0.0, 1.0)  # an octave fades where a row spans more than its cell
            road += amp * fade * _value_noise(rng, lat, z, cell)
        road += rng.standard_normal((ROAD_ROWS, TILE_W)).astype(np.float32) * np.clip(t / 300.0, 0.12, 1.0) * 0.5
        road += 0.2 * _image_noise(rng, ROAD_ROWS, TILE_W, [(40, 1.0), (120, 1.0)]) * np.clip(t / 80, 0.2, 1)
        self.road = road / road.std()
        shadow = sum(a * _value_noise(rng, lat, z, c) for c, a in ((1.2, 0.35), (3.5, 0.8), (9.0, 1.0)))
        self.shadow = (shadow / shadow.std()).astype(np.float32)
        self.foliage = _image_noise(rng, SKY_ROWS, TILE_W, [(2, 0.5), (5, 0.8), (14, 0.8), (40, 0.5)])
        self.cloud = _image_noise(rng, SKY_ROWS, TILE_W, [(40, 0.4), (120, 1.0), (350, 1.0)])
        self.wear = np.clip(0.5 + 0.5 * _image_noise(rng, 256, TILE_W, [(1.5, 0.5), (4, 1.0), (12, 0.7)]), 0, 1)
        self.grain = rng.standard_normal((IMAGE_H, TILE_W, 3)).astype(np.float32)
        yy, xx = np.mgrid[0:IMAGE_H, 0:IMAGE_W].astype(np.float32)
        r2 = ((xx - IMAGE_W / 2) / (IMAGE_W / 2)) ** 2 + ((yy - IMAGE_H / 2) / (IMAGE_W / 2)) ** 2
        self.vignette = (r2 / r2.max()).astype(np.float32)


def _window(rng: np.random.Generator, width: int = IMAGE_W) -> slice:
    off = int(rng.integers(0, TILE_W - width))
    return slice(off, off + width)


# --------------------------------------------------------------------------------------------------------------------
# frame


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
    occ = np.zeros((IMAGE_H, IMAGE_W), bool)
    yhi = int(np.floor(scene.y_h)) + 1  # first ground row
    sky_top, sky_hor = _sky(img, yhi, rng, bank)
    _background(img, scene, yhi, rng, bank, sky_hor)
    ground = _ground(img, scene, yhi, rng, bank)
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.35, 0.3, 0.2, 0.15]))):
        _seam(img, scene, rng, bank, ground.level)
    alphas = []
    for lane in scene.lanes:
        alphas.append(_marking(img, scene, lane, rng, bank))
    bridge = _sample_bridge(scene, rng)
    _shadows(img, scene, yhi, ground.b, rng, bank, bridge)
    _haze(img, scene, rng, sky_hor)
    if rng.random() < 0.5:
        _poles(img, scene, rng)
    for side in ("left", "right"):
        _side_structure(img, scene, side, rng, bank)
    if bridge is not None:
        _draw_bridge(img, scene, bridge, rng)
    _vehicles(img, occ, scene, rng)
    image = _finish(img, rng, bank)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=jpeg_quality)
    return Rendered(image=image, jpeg=buf.getvalue(), marking_alpha=alphas, occluded=occ)


# --------------------------------------------------------------------------------------------------------------------
# sky and background

_SKIES = [  # (top, horizon) colours
    ((95, 150, 215), (195, 215, 230)),  # clear
    ((150, 185, 220), (220, 228, 232)),  # bright haze
    ((172, 178, 186), (212, 214, 216)),  # overcast
    ((105, 135, 190), (232, 205, 170)),  # low sun
    ((125, 165, 205), (235, 240, 242)),  # washed out (typical of the real camera)
]


def _sky(img: np.ndarray, yhi: int, rng: np.random.Generator, bank: TextureBank) -> tuple[np.ndarray, np.ndarray]:
    top, hor = (np.asarray(c, np.float32) for c in _SKIES[int(rng.choice(len(_SKIES), p=[0.3, 0.2, 0.15, 0.1, 0.25]))])
    top, hor = top * rng.uniform(0.9, 1.08), hor * rng.uniform(0.93, 1.05)
    w = (np.arange(yhi, dtype=np.float32) / max(yhi - 1, 1)) ** rng.uniform(0.5, 1.5)
    img[:yhi] = (top[None, :] * (1 - w[:, None]) + hor[None, :] * w[:, None])[:, None, :]
    amount = rng.uniform(0, 30) if rng.random() < 0.6 else 0.0
    if amount > 1:
        cloud = np.clip(bank.cloud[:yhi, _window(rng)] - rng.uniform(-0.5, 1.0), 0, None)
        img[:yhi] += (amount * cloud)[..., None]
    return top, hor


def _profile(rng: np.random.Generator, octaves: list[tuple[float, float]]) -> np.ndarray:
    """1-D multi-octave noise over the image columns: (period px, amplitude)."""
    x = np.arange(IMAGE_W, dtype=np.float64)
    out = np.zeros(IMAGE_W)
    for period, amp in octaves:
        knots = rng.standard_normal(int(IMAGE_W / period) + 3)
        out += amp * np.interp(x / period, np.arange(len(knots)), knots)
    return out


def _fill_above(img: np.ndarray, top: np.ndarray, bottom: int, color: np.ndarray, tex: np.ndarray | None) -> None:
    """Fill each column from row `top[x]` down to `bottom` (exclusive) with `color` (times 1 + texture)."""
    r0 = int(max(0, np.floor(top.min())))
    if r0 >= bottom:
        return
    rows = np.arange(r0, bottom)[:, None]
    mask = rows >= top[None, :]
    region = img[r0:bottom]
    if tex is None:
        fill = np.broadcast_to(color, region.shape)
    else:
        fill = color[None, None, :] * (1 + tex[r0:bottom])[..., None]
    np.copyto(region, fill, where=mask[..., None])


def _background(
    img: np.ndarray, scene: Scene, yhi: int, rng: np.random.Generator, bank: TextureBank, sky_hor: np.ndarray
) -> None:
    """Far hills and a tree line standing on the horizon."""
    tex = bank.foliage[:, _window(rng)]
    tex = np.concatenate([tex, tex[: max(0, yhi - SKY_ROWS)]])[:yhi] if yhi > SKY_ROWS else tex[:yhi]
    if rng.random() < 0.6:
        hills = np.clip(rng.uniform(10, 50) + _profile(rng, [(400, 18), (120, 6), (30, 2)]), 2, None)
        green = np.asarray([rng.uniform(70, 110), rng.uniform(85, 120), rng.uniform(80, 110)], np.float32)
        color = sky_hor * 0.55 + green * 0.45
        _fill_above(img, scene.y_h - hills, yhi, color, 0.05 * tex)
    if rng.random() < 0.88:
        trees = _crowns(rng, scene.x_c, yhi)
        g = rng.uniform(35, 72)  # dark foliage, green the strongest channel
        dark = np.asarray([g * rng.uniform(0.65, 0.95), g, g * rng.uniform(0.55, 0.9)], np.float32)
        _fill_above(img, scene.y_h - np.clip(trees, 0, yhi - 5), yhi, dark, rng.uniform(0.12, 0.3) * tex)


def _crowns(rng: np.random.Generator, x_c: float, yhi: int) -> np.ndarray:
    """Height above the horizon of a tree line: overlapping round crowns, taller toward the image sides (nearer)."""
    x = np.arange(IMAGE_W, dtype=np.float64)
    n = int(rng.integers(20, 90))
    cx = rng.uniform(-100, IMAGE_W + 100, n)
    side = np.abs(cx - x_c) / (IMAGE_W / 2)
    r = rng.uniform(8, 40, n) * (1 + rng.uniform(0, 2.5) * side**2)
    base = rng.uniform(0, 35, n) * (1 + rng.uniform(0, 3) * side**2)
    keep = rng.random(n) < rng.uniform(0.6, 1.0)
    d2 = r[:, None] ** 2 - (x[None, :] - cx[:, None]) ** 2
    h = np.where((d2 > 0) & keep[:, None], base[:, None] + np.sqrt(np.maximum(d2, 0)), 0.0).max(axis=0)
    return h + _profile(rng, [(9, 1.5), (3, 1.0)]) * (h > 0)


# --------------------------------------------------------------------------------------------------------------------
# ground


@dataclass
class _Ground:
    b: np.ndarray  # lateral offset (X/H) of every ground pixel, rows yhi..719
    level: float


def _ground(img: np.ndarray, scene: Scene, yhi: int, rng: np.random.Generator, bank: TextureBank) -> _Ground:
    rows = IMAGE_H - yhi
    t = (np.arange(yhi, IMAGE_H, dtype=np.float32) - np.float32(scene.y_h))[:, None]
    xs = np.arange(IMAGE_W, dtype=np.float32)[None, :]
    b = (xs - np.float32(scene.x_c) - np.float32(scene.k) / t) / t
    concrete = rng.random() < 0.45
    level = float(rng.uniform(120, 170) if concrete else rng.uniform(70, 120))
    contrast = float(rng.uniform(0.05, 0.13))
    tint = np.asarray([1.0, rng.uniform(0.97, 1.01), rng.uniform(0.93, 1.02)])

    # Everything that depends only on the lateral position is one RGB lookup table over b (512 entries per lane):
    # per-lane tone (different paving), oil strip in the lane middle, wheel paths, and the roadside beyond the edges.
    sp = scene.spacing
    per_lane = 512
    lo = scene.lanes[0].b - 30 * sp
    n = int(np.ceil((scene.lanes[-1].b + 30 * sp - lo) / sp * per_lane))
    lat = lo + np.arange(n) * (sp / per_lane)
    u = (lat - scene.lanes[0].b) / sp
    frac = u - np.floor(u)
    track = -rng.uniform(0, 0.12) * np.exp(-(((frac - 0.5) / 0.07) ** 2)) + rng.uniform(-0.05, 0.06) * (
        np.exp(-(((frac - 0.27) / 0.06) ** 2)) + np.exp(-(((frac - 0.73) / 0.06) ** 2))
    )
    tone = rng.normal(0, 0.035, 64)[np.clip(np.floor(u).astype(int) + 32, 0, 63)]
    color_lut = (level * (1 + tone + track))[:, None] * tint[None, :]
    amp_lut = np.full(n, contrast)
    for side in ("left", "right"):
        kind = str(rng.choice(["grass", "dry", "dirt"], p=[0.45, 0.3, 0.25]))
        color = {
            "grass": (rng.uniform(55, 90), rng.uniform(75, 105), rng.uniform(35, 55)),
            "dry": (rng.uniform(120, 160), rng.uniform(110, 140), rng.uniform(75, 100)),
            "dirt": (rng.uniform(105, 140), rng.uniform(100, 128), rng.uniform(85, 108)),
        }[kind]
        outside = lat < scene.road_left if side == "left" else lat > scene.road_right
        color_lut[outside] = color
        amp_lut[outside] = 0.16
    idx = (b - np.float32(lo)) * np.float32(per_lane / sp)
    np.clip(idx, 0, n - 1, out=idx)
    ii = idx.astype(np.int32)
    shade = bank.road[:rows, _window(rng)] * np.take(amp_lut.astype(np.float32), ii)
    shade += 1

    # transverse joints (concrete slabs) as a per-row darkening: coverage of joints of width w in the row's ground span
    if concrete and rng.random() < 0.7:
        period, width = rng.uniform(4.5, 6.5), 0.03
        fh = scene.focal * scene.cam_h
        tt = t[:, 0].astype(np.float64)
        z0, z1 = fh / (tt + 0.5), fh / np.maximum(tt - 0.5, 0.3)
        cum = lambda z: np.floor(z / period) * width + np.minimum(z % period, width)  # noqa: E731
        cov = ((cum(z1) - cum(z0)) / (z1 - z0) * rng.uniform(0.15, 0.4)).astype(np.float32)
        road = ((lat >= scene.road_left) & (lat <= scene.road_right)).astype(np.float32)
        shade *= 1 - cov[:, None] * np.take(road, ii)

    # repair patches: quads in (lateral, distance) space
    for _ in range(int(rng.integers(0, 4))):
        bc = rng.uniform(scene.lanes[0].b, scene.lanes[-1].b)
        half = sp * rng.uniform(0.15, 0.6)
        z0 = rng.uniform(5, 60)
        z1 = z0 + rng.uniform(2, 25)
        r0 = int(np.clip(scene.y_h + scene.t_of_z(z1), yhi, IMAGE_H)) - yhi
        r1 = int(np.clip(scene.y_h + scene.t_of_z(z0), yhi, IMAGE_H)) - yhi
        if r1 > r0:
            band = b[r0:r1]
            m = (band > bc - half) & (band < bc + half)
            shade[r0:r1] *= np.where(m, np.float32(rng.uniform(0.72, 1.12)), np.float32(1.0))

    np.multiply(np.take(color_lut.astype(np.float32), ii, axis=0), shade[..., None], out=img[yhi:])
    return _Ground(b=b, level=level)


def _stripe(
    img: np.ndarray,
    scene: Scene,
    b: float,
    y0: float,
    width_m: float,
    color: tuple[float, float, float],
    paint: float,
    wear: float,
    dash: tuple[float, float, float] | None,
    bank: TextureBank,
    wear_off: tuple[int, int],
    round_dots: bool = False,
) -> np.ndarray:
    """Alpha-blend one painted stripe along lateral offset `b` from row `y0` down; returns centre opacity per row.

    Width grows with the perspective; `dash=(dash_m, gap_m, phase_m)` gives each row the fraction of its ground span
    that is painted (exact for the periodic pattern), so dashes shorten toward the horizon and blend there.
    """
    alpha_rows = np.zeros(IMAGE_H, np.float32)
    r0 = int(np.ceil(max(y0, scene.y_h + 0.6)))
    if r0 >= IMAGE_H:
        return alpha_rows
    rows = np.arange(r0, IMAGE_H, dtype=np.float64)
    t = rows - scene.y_h
    x = scene.lane_x(b, t)
    slope = b - scene.k / t**2
    w_px = width_m / scene.cam_h * t
    half = np.maximum(w_px, 1.0) / 2
    if not round_dots:  # a long stripe's horizontal cross-section widens with its slant; a short dot's does not
        half = half * np.sqrt(1 + slope**2)
    row_a = np.minimum(w_px, 1.0) * paint
    if dash is not None:
        d, g, ph = dash
        period = d + g
        fh = scene.focal * scene.cam_h
        z0, z1 = fh / (t + 0.5), fh / np.maximum(t - 0.5, 0.3)
        cum = lambda z: np.floor(z / period) * d + np.minimum(z % period, d)  # noqa: E731
        row_a = row_a * (cum(z1 + ph) - cum(z0 + ph)) / (z1 - z0)
    keep = (x > -half - 2) & (x < IMAGE_W + half + 2) & (row_a > 0.004)
    if not keep.any():
        return alpha_rows
    rows, x, half, row_a = rows[keep], x[keep], half[keep], row_a[keep]
    k = int(np.ceil(half.max())) + 1
    cols = np.floor(x)[:, None].astype(np.int64) + np.arange(-k, k + 1)[None, :]
    a = np.clip(half[:, None] + 0.5 - np.abs(cols - x[:, None]), 0.0, 1.0) * row_a[:, None]
    ri = rows.astype(np.int64)
    wear_tex = bank.wear[(ri[:, None] + wear_off[0]) % bank.wear.shape[0], (cols + wear_off[1]) % TILE_W]
    a *= 1 - wear * wear_tex
    centre = np.clip(np.rint(x).astype(np.int64) - cols[:, 0], 0, 2 * k)
    alpha_rows[ri] = a[np.arange(len(ri)), centre]
    valid = (cols >= 0) & (cols < IMAGE_W) & (a > 0.003)
    rr = np.broadcast_to(ri[:, None], cols.shape)[valid]
    cc, aa = cols[valid], a[valid].astype(np.float32)[:, None]
    pix = img[rr, cc]
    img[rr, cc] = pix + (np.asarray(color, np.float32)[None, :] - pix) * aa
    return alpha_rows


def _marking(img: np.ndarray, scene: Scene, lane: LaneSpec, rng: np.random.Generator, bank: TextureBank) -> np.ndarray:
    off = (int(rng.integers(0, 256)), int(rng.integers(0, TILE_W)))
    dash = None
    if lane.style in ("dashed", "dots"):
        dash = (lane.dash_m, lane.gap_m, lane.phase_m)
    if lane.style == "double":
        sep = (lane.width_m + rng.uniform(0.08, 0.14)) / 2 / scene.cam_h
        a1 = _stripe(img, scene, lane.b - sep, lane.y_start, lane.width_m, lane.color, lane.paint, lane.wear, None,
                     bank, off)  # fmt: skip
        a2 = _stripe(img, scene, lane.b + sep, lane.y_start, lane.width_m, lane.color, lane.paint, lane.wear, None,
                     bank, off)  # fmt: skip
        return np.maximum(a1, a2)
    return _stripe(img, scene, lane.b, lane.y_start, lane.width_m, lane.color, lane.paint, lane.wear, dash, bank, off,
                   round_dots=lane.style == "dots")  # fmt: skip


def _seam(img: np.ndarray, scene: Scene, rng: np.random.Generator, bank: TextureBank, level: float) -> None:
    """A dark tar seam or crack sealing running along the road (an unlabelled distractor near the lanes)."""
    lanes = scene.lanes
    near = lanes[int(rng.integers(len(lanes)))].b
    b = near + rng.choice([-1, 1]) * rng.uniform(0.12, 0.45) * scene.spacing
    y0 = scene.y_h + rng.uniform(15, 120)
    dash = (rng.uniform(4, 30), rng.uniform(1, 12), rng.uniform(0, 30)) if rng.random() < 0.5 else None
    color = (level * 0.45, level * 0.45, level * 0.47)
    off = (int(rng.integers(0, 256)), int(rng.integers(0, TILE_W)))
    _stripe(img, scene, b, y0, rng.uniform(0.03, 0.08), color, rng.uniform(0.4, 0.85), 0.5, dash, bank, off)


# --------------------------------------------------------------------------------------------------------------------
# shadows and structures


@dataclass
class _Bridge:
    z: float
    deck_m: float  # height of the deck underside
    thick_m: float
    shadow: tuple[float, float] | None  # ground distance range in shadow


def _sample_bridge(scene: Scene, rng: np.random.Generator) -> _Bridge | None:
    if rng.random() >= 0.2:
        return None
    z = rng.uniform(30, 140)
    shadow = None
    if rng.random() < 0.85:
        z0 = max(4.0, z - rng.uniform(-5, 20))
        shadow = (z0, z0 + rng.uniform(8, 18))
    return _Bridge(z=z, deck_m=rng.uniform(5.5, 7.0), thick_m=rng.uniform(1.2, 2.2), shadow=shadow)


def _shadows(
    img: np.ndarray,
    scene: Scene,
    yhi: int,
    b: np.ndarray,
    rng: np.random.Generator,
    bank: TextureBank,
    bridge: _Bridge | None,
) -> None:
    """Tree shadows (blobs on the ground, often from one roadside) and an overpass shadow band, crossing the lanes."""
    rows = IMAGE_H - yhi
    dark: np.ndarray | None = None
    if rng.random() < 0.45:
        field = bank.shadow[:rows, _window(rng)]
        thr, soft = rng.uniform(0.2, 1.5), rng.uniform(0.08, 0.35)  # roughly 7-40 % of the ground in shadow
        dark = np.clip((field - np.float32(thr)) / np.float32(soft) + 0.5, 0.0, 1.0)
        if rng.random() < 0.6:  # trees on one side: shadows reach a random distance into the road
            sp = scene.spacing
            if rng.random() < 0.5:
                cut = scene.lanes[0].b + rng.uniform(-0.5, 2.5) * sp
                env = np.clip((np.float32(cut) - b) / np.float32(0.4 * sp), 0, 1)
            else:
                cut = scene.lanes[-1].b - rng.uniform(-0.5, 2.5) * sp
                env = np.clip((b - np.float32(cut)) / np.float32(0.4 * sp), 0, 1)
            dark *= env
        # trees stand along the near stretch of road: fade the shadows out beyond a random distance
        fh = scene.focal * scene.cam_h
        t_far = fh / rng.uniform(35, 120)
        t = np.arange(yhi, IMAGE_H, dtype=np.float32) - np.float32(scene.y_h)
        dark *= (np.clip((t - t_far) / (0.5 * t_far), 0, 1) * rng.uniform(0.35, 0.72)).astype(np.float32)[:, None]
    if bridge is not None and bridge.shadow is not None:
        fh = scene.focal * scene.cam_h
        t = np.arange(yhi, IMAGE_H) - scene.y_h
        z = fh / t
        zn, zf = bridge.shadow
        edge = 0.04 * z + 0.2
        band = np.clip((z - zn) / edge + 0.5, 0, 1) * np.clip((zf - z) / edge + 0.5, 0, 1)
        band = (band * rng.uniform(0.5, 0.75)).astype(np.float32)[:, None]
        dark = band if dark is None else 1 - (1 - dark) * (1 - band)
    if dark is None:
        return
    blue = np.asarray([1.0, 0.97, 0.88], np.float32)  # skylight makes shadows bluish
    img[yhi:] *= 1 - dark[..., None] * blue


def _side_structure(img: np.ndarray, scene: Scene, side: str, rng: np.random.Generator, bank: TextureBank) -> None:
    """Concrete barrier, guard rail, sound wall or hedge standing at a road edge (vertical in the world)."""
    kind = scene.left_side if side == "left" else scene.right_side
    if kind == "grass":
        return
    sgn = -1.0 if side == "left" else 1.0
    bw = (scene.road_left if side == "left" else scene.road_right) + sgn * rng.uniform(0.05, 0.4) / scene.cam_h
    d = np.arange(IMAGE_W, dtype=np.float64) - scene.x_c
    disc = d * d - 4 * bw * scene.k
    ok = disc >= 0
    root = np.sqrt(np.where(ok, disc, 0))
    t = (d + np.sign(bw) * root) / (2 * bw)
    ok &= (t > 0.8) & (t < 3000)
    if not ok.any():
        return
    hgt = {"barrier": rng.uniform(0.8, 1.1), "rail": rng.uniform(0.7, 0.85), "wall": rng.uniform(3.0, 4.5),
           "bushes": rng.uniform(2.0, 5.0)}[kind]  # fmt: skip
    lit = rng.uniform(0.75, 1.1)
    period = rng.uniform(5, 8)
    cols = np.flatnonzero(ok)
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    t = t[c0:c1].astype(np.float32)
    bot = np.float32(scene.y_h) + t
    z = np.float32(scene.focal * scene.cam_h) / np.maximum(t, np.float32(1e-3))
    rel = np.ones_like(t)
    if kind == "bushes":  # an irregular hedge: its height varies along the road
        knots = rng.uniform(0.35, 1.0, 64)
        rel = np.interp(z / rng.uniform(2, 6), np.arange(64), knots, period=64).astype(np.float32)
    top = np.where(ok[c0:c1], bot - t * np.float32(hgt / scene.cam_h) * rel, np.float32(IMAGE_H + 1))
    r0 = int(np.clip(np.floor(top.min()), 0, IMAGE_H))
    if r0 >= IMAGE_H:
        return
    rows = np.arange(r0, IMAGE_H, dtype=np.float32)[:, None]
    frac = (bot[None, :] - rows) / np.maximum(bot - top, np.float32(1e-3))[None, :]  # 0 at the ground, 1 at the top
    mask = (frac >= 0) & (frac <= 1)
    if kind == "barrier":
        base = rng.uniform(150, 200) * lit
        shade = 0.8 + 0.25 * frac + 0.12 * (frac > 0.93)
    elif kind == "wall":
        base = rng.uniform(130, 185) * lit
        seam = ((z % np.float32(period)) < 0.12)[None, :]
        shade = (0.85 + 0.15 * frac) * np.where(seam, np.float32(0.7), np.float32(1.0))
    elif kind == "bushes":
        base = rng.uniform(45, 80) * lit
        n = IMAGE_H - r0
        leaves = bank.shadow if n <= ROAD_ROWS else np.concatenate([bank.shadow, bank.shadow[: n - ROAD_ROWS]])
        off = int(rng.integers(0, TILE_W - (c1 - c0)))
        shade = (0.75 + 0.35 * frac) * (1 + 0.25 * np.tanh(leaves[:n, off : off + c1 - c0]))
    else:  # guard rail: a bright beam on dark posts
        base = rng.uniform(140, 190) * lit
        beam = (frac > 0.58) & (frac < 0.95)
        post = ((z % np.float32(1.9)) < 0.14)[None, :] & (frac <= 0.95)
        mask &= beam | post
        shade = np.where(beam, 0.9 + 0.3 * (np.abs(frac - 0.76) < 0.05), 0.45).astype(np.float32)
    if kind in ("barrier", "wall"):  # weathered concrete: texture and a dirty foot
        n = IMAGE_H - r0
        tex = bank.road if n <= ROAD_ROWS else np.concatenate([bank.road, bank.road[: n - ROAD_ROWS]])
        off = int(rng.integers(0, TILE_W - (c1 - c0)))
        shade = shade * (1 + 0.06 * tex[:n, off : off + c1 - c0]) * np.where(frac < 0.1, 0.78, 1.0)
    hue = [0.75, 1.0, 0.6] if kind == "bushes" else [1.0, 0.99, 0.96]
    color = np.asarray(hue, np.float32) * np.float32(base)
    img[r0:, c0:c1][mask] = shade[mask][:, None] * color


def _draw_bridge(img: np.ndarray, scene: Scene, bridge: _Bridge, rng: np.random.Generator) -> None:
    """An overpass: deck across the whole width above the horizon, piers beyond the road edges, maybe a sign."""
    t = scene.t_of_z(bridge.z)
    s = t / scene.cam_h  # px per metre at the bridge
    y_low = scene.y_h - (bridge.deck_m - scene.cam_h) * s
    y_top = y_low - bridge.thick_m * s
    r0, r1 = int(max(0, np.floor(y_top))), int(max(0, np.ceil(y_low)))
    base = rng.uniform(85, 150)
    if r1 > r0:
        grad = np.linspace(1.05, 0.7, r1 - r0, dtype=np.float32)[:, None, None]
        img[r0:r1] = grad * np.float32(base)
    rail = max(1, int(0.9 * s))
    if r0 > 0:
        img[max(0, r0 - rail) : r0, :: max(2, int(0.4 * s))] = base * 0.5
        img[max(0, r0 - rail) : max(0, r0 - rail) + 1] = base * 0.55
    for b in (scene.road_left - 0.6 / scene.cam_h, scene.road_right + 0.6 / scene.cam_h):
        xc = scene.x_c + b * t + scene.k / t
        half = max(1.0, 0.7 * s)
        c0, c1 = int(np.clip(xc - half, 0, IMAGE_W)), int(np.clip(xc + half, 0, IMAGE_W))
        img[r1 : int(min(IMAGE_H, scene.y_h + t)), c0:c1] = base * 0.8
    if rng.random() < 0.5:  # a green sign on the deck
        w, h = rng.uniform(4, 7) * s, rng.uniform(1.8, 2.6) * s
        xc = scene.x_c + rng.uniform(-0.6, 0.6) * scene.spacing * t
        c0, c1 = int(np.clip(xc - w / 2, 0, IMAGE_W)), int(np.clip(xc + w / 2, 0, IMAGE_W))
        s0, s1 = int(max(0, y_top - 0.3 * s)), int(max(0, y_top - 0.3 * s + h))
        img[s0:s1, c0:c1] = np.asarray([25, 105, 65], np.float32)
        img[s0 + max(1, int(0.5 * s)) : s0 + max(2, int(0.8 * s)), c0 + int(0.1 * w) : c1 - int(0.1 * w)] = 225.0


def _poles(img: np.ndarray, scene: Scene, rng: np.random.Generator) -> None:
    """Street-light poles at regular spacing beyond one road edge, arms reaching over the road."""
    left = rng.random() < 0.5
    b = (scene.road_left - 0.5 / scene.cam_h) if left else (scene.road_right + 0.5 / scene.cam_h)
    spacing, z = rng.uniform(30, 55), rng.uniform(8, 40)
    height, color = rng.uniform(9, 12), rng.uniform(55, 110)
    while z < 250:
        t = scene.t_of_z(z)
        s = t / scene.cam_h
        xc = scene.x_c + b * t + scene.k / t
        half = max(0.5, 0.12 * s)
        top = scene.y_h - (height - scene.cam_h) * s
        c0, c1 = int(np.clip(xc - half, 0, IMAGE_W)), int(np.clip(xc + half + 1, 0, IMAGE_W))
        r0, r1 = int(np.clip(top, 0, IMAGE_H)), int(np.clip(scene.y_h + t, 0, IMAGE_H))
        img[r0:r1, c0:c1] = color
        arm = 2.8 * s * (1 if left else -1)
        a0, a1 = sorted((xc, xc + arm))
        th = max(1, int(0.15 * s))
        img[r0 : r0 + th, int(np.clip(a0, 0, IMAGE_W)) : int(np.clip(a1, 0, IMAGE_W))] = color
        z += spacing


# --------------------------------------------------------------------------------------------------------------------
# vehicles


def _rect(img: np.ndarray, y0: float, y1: float, x0: float, x1: float, color: np.ndarray | float) -> None:
    r0, r1 = int(np.clip(round(y0), 0, IMAGE_H)), int(np.clip(round(y1), 0, IMAGE_H))
    c0, c1 = int(np.clip(round(x0), 0, IMAGE_W)), int(np.clip(round(x1), 0, IMAGE_W))
    if r1 > r0 and c1 > c0:
        img[r0:r1, c0:c1] = color


def _shade_ground(img: np.ndarray, scene: Scene, b0: float, b1: float, z0: float, z1: float, factor: float) -> None:
    """Darken the ground quad b in [b0, b1], distance in [z0, z1] (a cast shadow)."""
    z0 = max(z0, 1.0)
    t_far, t_near = scene.t_of_z(z1), scene.t_of_z(z0)
    r0 = int(np.clip(np.ceil(scene.y_h + t_far), 0, IMAGE_H))
    r1 = int(np.clip(np.floor(scene.y_h + t_near) + 1, 0, IMAGE_H))
    if r1 <= r0:
        return
    t = np.arange(r0, r1, dtype=np.float64) - scene.y_h
    xa, xb = scene.lane_x(b0, t), scene.lane_x(b1, t)
    c0 = int(np.clip(np.floor(min(xa.min(), xb.min())), 0, IMAGE_W))
    c1 = int(np.clip(np.ceil(max(xa.max(), xb.max())) + 1, 0, IMAGE_W))
    if c1 <= c0:
        return
    cols = np.arange(c0, c1)[None, :]
    inside = (cols >= xa[:, None]) & (cols <= xb[:, None])
    img[r0:r1, c0:c1] *= np.where(inside, np.float32(factor), np.float32(1.0))[..., None]


def _vehicles(img: np.ndarray, occ: np.ndarray, scene: Scene, rng: np.random.Generator) -> None:
    sun_lat, sun_len = rng.uniform(-1.0, 1.0), rng.uniform(-0.3, 0.8)
    strength = rng.uniform(0.35, 0.6)
    for v in scene.vehicles:
        _vehicle(img, occ, scene, v, rng, sun_lat, sun_len, strength)


def _vehicle(
    img: np.ndarray,
    occ: np.ndarray,
    scene: Scene,
    v: Vehicle,
    rng: np.random.Generator,
    sun_lat: float,
    sun_len: float,
    strength: float,
) -> None:
    tr = scene.t_of_z(v.z)
    if tr < 2:
        return
    tf = scene.t_of_z(v.z + v.length_m)
    s = tr / scene.cam_h
    half_b = v.width_m / 2 / scene.cam_h
    # cast shadow (offset by the sun) and the dark contact area under the body
    off = sun_lat * v.height_m / scene.cam_h
    _shade_ground(img, scene, v.b - half_b + min(off, 0), v.b + half_b + max(off, 0),
                  v.z - max(0.0, -sun_len) * v.height_m, v.z + v.length_m + max(0.0, sun_len) * v.height_m,
                  1 - strength)  # fmt: skip
    xr = scene.lane_x(v.b, np.float64(tr))
    yb = scene.y_h + tr
    hw, hh = v.width_m / 2 * s, v.height_m * s
    x0, x1, ytop = xr - hw, xr + hw, yb - hh
    _rect(img, yb - 0.35 * s, yb + max(1.0, 0.04 * s), x0 - 0.05 * s, x1 + 0.05 * s, 18.0)
    color = np.asarray(v.color, np.float32) * np.float32(rng.uniform(0.8, 1.05))

    # side face, seen when the vehicle is off the camera axis
    side = 1.0 if v.b < 0 else -1.0
    xs = x1 if side > 0 else x0
    xf = scene.lane_x(v.b + side * half_b, np.float64(tf))
    if (xf - xs) * side > 1:
        yfb, yft = scene.y_h + tf, scene.y_h + tf - v.height_m * tf / scene.cam_h
        c0, c1 = sorted((xs, xf))
        c0i, c1i = int(np.clip(np.floor(c0), 0, IMAGE_W)), int(np.clip(np.ceil(c1), 0, IMAGE_W))
        r0i, r1i = int(np.clip(np.floor(min(ytop, yft)), 0, IMAGE_H)), int(np.clip(np.ceil(yb), 0, IMAGE_H))
        if c1i > c0i and r1i > r0i:
            cols = np.arange(c0i, c1i, dtype=np.float64)[None, :]
            lam = (cols - xs) / (xf - xs)
            top = ytop + lam * (yft - ytop)
            bot = yb + lam * (yfb - yb)
            rows = np.arange(r0i, r1i, dtype=np.float64)[:, None]
            m = (rows >= top) & (rows < bot)
            hfrac = (bot - rows) / np.maximum(bot - top, 1e-3)
            side_col = color * np.float32(0.72)
            if v.kind == "truck":
                shade = np.where(hfrac < 0.22, 0.25, 1.0)
            else:
                shade = np.where(hfrac > 0.62, 0.3, np.where(hfrac < 0.2, 0.25, 1.0))
            region = img[r0i:r1i, c0i:c1i]
            np.copyto(region, shade.astype(np.float32)[..., None] * side_col, where=m[..., None])
            occ[r0i:r1i, c0i:c1i] |= m

    # rear face: layered rectangles (fractions of the height from the ground)
    w = x1 - x0
    fy = lambda f: yb - f * hh  # noqa: E731
    dark = np.float32(22.0)
    if v.kind == "truck":
        _rect(img, fy(0.26), yb, x0 + 0.05 * w, x0 + 0.3 * w, dark)  # wheels
        _rect(img, fy(0.26), yb, x1 - 0.3 * w, x1 - 0.05 * w, dark)
        _rect(img, fy(0.2), fy(0.15), x0 + 0.02 * w, x1 - 0.02 * w, np.float32(40))  # underride bar
        _rect(img, fy(1.0), fy(0.27), x0, x1, color)
        grad = np.linspace(1.05, 0.85, max(1, int(round(fy(0.27))) - int(round(fy(1.0)))), dtype=np.float32)
        r0, r1 = int(np.clip(round(fy(1.0)), 0, IMAGE_H)), int(np.clip(round(fy(0.27)), 0, IMAGE_H))
        c0, c1 = int(np.clip(round(x0), 0, IMAGE_W)), int(np.clip(round(x1), 0, IMAGE_W))
        if r1 > r0 and c1 > c0:
            img[r0:r1, c0:c1] *= grad[(r0 - int(round(fy(1.0)))) : (r1 - int(round(fy(1.0))))][:, None, None]
        _rect(img, fy(0.97), fy(0.3), xr - max(0.5, 0.01 * w), xr + max(0.5, 0.01 * w), color * 0.55)
        _rect(img, fy(0.33), fy(0.28), x0 + 0.02 * w, x0 + 0.12 * w, np.asarray([170, 30, 25], np.float32))
        _rect(img, fy(0.33), fy(0.28), x1 - 0.12 * w, x1 - 0.02 * w, np.asarray([170, 30, 25], np.float32))
    else:
        win_lo = 0.6 if v.kind == "car" else 0.64
        _rect(img, fy(0.3), yb, x0 + 0.04 * w, x0 + 0.24 * w, dark)  # tyres
        _rect(img, fy(0.3), yb, x1 - 0.24 * w, x1 - 0.04 * w, dark)
        _rect(img, fy(0.36), fy(0.18), x0, x1, color * 0.55)  # bumper
        _rect(img, fy(win_lo), fy(0.34), x0, x1, color)  # body
        glass = np.asarray([38, 42, 52], np.float32) * np.float32(rng.uniform(0.8, 1.6))
        _rect(img, fy(0.95), fy(win_lo), x0 + 0.08 * w, x1 - 0.08 * w, glass)
        _rect(img, fy(1.0), fy(0.94), x0 + 0.1 * w, x1 - 0.1 * w, color * 0.85)  # roof edge
        _rect(img, fy(0.95), fy(win_lo), x0, x0 + 0.08 * w, color * 0.9)  # pillars
        _rect(img, fy(0.95), fy(win_lo), x1 - 0.08 * w, x1, color * 0.9)
        red = np.asarray([185, 25, 22], np.float32) * np.float32(rng.uniform(0.8, 1.3))
        _rect(img, fy(win_lo), fy(win_lo - 0.13), x0, x0 + 0.17 * w, red)
        _rect(img, fy(win_lo), fy(win_lo - 0.13), x1 - 0.17 * w, x1, red)
        _rect(img, fy(0.46), fy(0.36), xr - 0.11 * w, xr + 0.11 * w, np.asarray([205, 205, 195], np.float32))
    r0, r1 = int(np.clip(round(ytop), 0, IMAGE_H)), int(np.clip(round(yb), 0, IMAGE_H))
    c0, c1 = int(np.clip(round(x0), 0, IMAGE_W)), int(np.clip(round(x1), 0, IMAGE_W))
    occ[r0:r1, c0:c1] = True


# --------------------------------------------------------------------------------------------------------------------
# atmosphere and camera


def _haze(img: np.ndarray, scene: Scene, rng: np.random.Generator, sky_hor: np.ndarray) -> None:
    """Aerial perspective: far ground and the tree line fade toward the horizon colour (before near structures)."""
    amount, tau = rng.uniform(0.0, 0.45), rng.uniform(10, 40)
    if amount < 0.03:
        return
    r0, r1 = int(max(0, scene.y_h - 3 * tau)), int(min(IMAGE_H, scene.y_h + 5 * tau))
    wgt = (amount * np.exp(-np.abs(np.arange(r0, r1) - scene.y_h) / tau)).astype(np.float32)[:, None, None]
    img[r0:r1] += (sky_hor.astype(np.float32)[None, None, :] - img[r0:r1]) * wgt


def _finish(img: np.ndarray, rng: np.random.Generator, bank: TextureBank) -> np.ndarray:
    """Vignetting, sensor noise, tone curve (exposure, colour temperature, contrast), lens blur -> uint8."""
    vig = rng.uniform(0, 0.4)
    if vig > 0.05:
        img *= (1 - np.float32(vig) * bank.vignette)[..., None]
    sigma = np.float32(rng.uniform(1.0, 4.5))
    img += bank.grain[:, _window(rng)] * sigma
    img += 0.5
    np.clip(img, 0, 255, out=img)
    u8 = img.astype(np.uint8)

    exposure = float(np.exp(rng.normal(0.0, 0.22)))
    gamma = float(rng.uniform(0.8, 1.25))
    temp = float(rng.uniform(-1, 1))
    gains = np.asarray([1 + 0.07 * temp, 1.0, 1 - 0.09 * temp]) * rng.uniform(0.97, 1.03, 3)
    contrast = float(rng.uniform(-0.15, 0.35))
    v = np.arange(256) / 255.0
    luts = []
    for g in gains:
        c = np.clip(v * exposure * g, 0, 1) ** gamma
        c = c + contrast * c * (1 - c) * (2 * c - 1) * 2  # S-curve around mid grey
        luts.append(np.clip(np.rint(c * 255), 0, 255).astype(np.uint8))
    pil = Image.fromarray(u8).point(np.concatenate(luts).tolist())
    sigma_blur = rng.uniform(0.0, 1.0)
    if sigma_blur > 0.35:  # lens blur: a 3x3 Gaussian (PIL's GaussianBlur is 3x slower)
        w1 = float(np.exp(-0.5 / sigma_blur**2))
        k1 = np.asarray([w1, 1.0, w1])
        kernel = np.outer(k1, k1).ravel()
        pil = pil.filter(ImageFilter.Kernel((3, 3), kernel.tolist(), scale=float(kernel.sum())))
    return np.asarray(pil)
