"""Painting what stands beside and over the road in a synthetic frame: tree and overpass shadows on the ground,
barriers / guard rails / sound walls / hedges at the road edges, street-light poles and overpasses. Called by
`render.render_frame` in its draw order; colours and sizes from `palette.py`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import palette
from .config import IMAGE_H, IMAGE_W
from .geometry import Scene
from .textures import TILE_W, TextureBank, tiled_rows, window


@dataclass
class Bridge:
    """An overpass at ground distance `z` (m)."""

    z: float
    deck_m: float  # height of the deck underside
    thick_m: float
    shadow: tuple[float, float] | None  # ground distance range in shadow


def sample_bridge(scene: Scene, rng: np.random.Generator) -> Bridge | None:
    """An overpass in one frame of five, usually casting a shadow band across the road near it."""
    if rng.random() >= 0.2:
        return None
    z = rng.uniform(30, 140)
    shadow = None
    if rng.random() < 0.85:
        z_near = max(4.0, z - rng.uniform(-5, 20))
        shadow = (z_near, z_near + rng.uniform(8, 18))
    return Bridge(z=z, deck_m=rng.uniform(5.5, 7.0), thick_m=rng.uniform(1.2, 2.2), shadow=shadow)


def _tree_shadows(
    scene: Scene, first_row: int, b: np.ndarray, rng: np.random.Generator, bank: TextureBank
) -> np.ndarray | None:
    """Darkness 0..1 of tree-shadow blobs on the ground (often from one roadside), or None in most frames."""
    if rng.random() >= 0.45:
        return None
    field = bank.shadow[: IMAGE_H - first_row, window(rng)]
    threshold, softness = rng.uniform(0.2, 1.5), rng.uniform(0.08, 0.35)  # roughly 7-40 % of the ground in shadow
    dark = np.clip((field - np.float32(threshold)) / np.float32(softness) + 0.5, 0.0, 1.0)
    if rng.random() < 0.6:  # trees on one side: shadows reach a random distance into the road
        spacing = scene.spacing
        if rng.random() < 0.5:
            reach = scene.lanes[0].b + rng.uniform(-0.5, 2.5) * spacing
            envelope = np.clip((np.float32(reach) - b) / np.float32(0.4 * spacing), 0, 1)
        else:
            reach = scene.lanes[-1].b - rng.uniform(-0.5, 2.5) * spacing
            envelope = np.clip((b - np.float32(reach)) / np.float32(0.4 * spacing), 0, 1)
        dark *= envelope
    # trees stand along the near stretch of road: fade the shadows out beyond a random distance
    t_far = scene.focal * scene.cam_h / rng.uniform(35, 120)
    t = np.arange(first_row, IMAGE_H, dtype=np.float32) - np.float32(scene.y_h)
    dark *= (np.clip((t - t_far) / (0.5 * t_far), 0, 1) * rng.uniform(0.35, 0.72)).astype(np.float32)[:, None]
    return dark


def draw_shadows(
    img: np.ndarray,
    scene: Scene,
    first_row: int,
    b: np.ndarray,
    rng: np.random.Generator,
    bank: TextureBank,
    bridge: Bridge | None,
) -> None:
    """Tree shadows and an overpass shadow band, crossing the lanes; `b` is the lateral offset of every ground pixel
    (rows `first_row`..719)."""
    dark = _tree_shadows(scene, first_row, b, rng, bank)
    if bridge is not None and bridge.shadow is not None:
        z = scene.focal * scene.cam_h / (np.arange(first_row, IMAGE_H) - scene.y_h)
        z_near, z_far = bridge.shadow
        edge = 0.04 * z + 0.2
        band = np.clip((z - z_near) / edge + 0.5, 0, 1) * np.clip((z_far - z) / edge + 0.5, 0, 1)
        band = (band * rng.uniform(0.5, 0.75)).astype(np.float32)[:, None]
        dark = band if dark is None else 1 - (1 - dark) * (1 - band)
    if dark is None:
        return
    img[first_row:] *= 1 - dark[..., None] * np.asarray(palette.SHADOW_TINT, np.float32)


def _structure_columns(scene: Scene, b_wall: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows below the horizon (t) where the ground line at lateral offset `b_wall` crosses each image column (solving
    x - x_c = b t + k / t for t), and which columns it crosses in front of the camera."""
    d = np.arange(IMAGE_W, dtype=np.float64) - scene.x_c
    disc = d * d - 4 * b_wall * scene.k
    ok = disc >= 0
    root = np.sqrt(np.where(ok, disc, 0))
    t = (d + np.sign(b_wall) * root) / (2 * b_wall)
    return t, ok & (t > 0.8) & (t < 3000)


def _structure_shade(
    kind: str, frac: np.ndarray, mask: np.ndarray, z: np.ndarray, rng: np.random.Generator, bank: TextureBank,
    lit: float, period: float, n_cols: int,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Base level, per-pixel shade and coverage mask of a roadside structure (`frac` 0 at the ground, 1 at its top)."""
    n_rows = frac.shape[0]
    base = rng.uniform(*palette.STRUCTURE_LEVEL[kind]) * lit
    if kind == "barrier":
        shade = 0.8 + 0.25 * frac + 0.12 * (frac > 0.93)
    elif kind == "wall":
        seam = ((z % np.float32(period)) < 0.12)[None, :]
        shade = (0.85 + 0.15 * frac) * np.where(seam, np.float32(0.7), np.float32(1.0))
    elif kind == "bushes":
        leaves = tiled_rows(bank.shadow, n_rows)
        offset = int(rng.integers(0, TILE_W - n_cols))
        shade = (0.75 + 0.35 * frac) * (1 + 0.25 * np.tanh(leaves[:n_rows, offset : offset + n_cols]))
    else:  # guard rail: a bright beam on dark posts
        beam = (frac > 0.58) & (frac < 0.95)
        post = ((z % np.float32(1.9)) < 0.14)[None, :] & (frac <= 0.95)
        mask = mask & (beam | post)
        shade = np.where(beam, 0.9 + 0.3 * (np.abs(frac - 0.76) < 0.05), 0.45).astype(np.float32)
    if kind in ("barrier", "wall"):  # weathered concrete: texture and a dirty foot
        tex = tiled_rows(bank.road, n_rows)
        offset = int(rng.integers(0, TILE_W - n_cols))
        shade = shade * (1 + 0.06 * tex[:n_rows, offset : offset + n_cols]) * np.where(frac < 0.1, 0.78, 1.0)
    return base, shade, mask


def draw_side_structure(img: np.ndarray, scene: Scene, side: str, rng: np.random.Generator, bank: TextureBank) -> None:
    """Concrete barrier, guard rail, sound wall or hedge standing at a road edge (vertical in the world)."""
    kind = scene.left_side if side == "left" else scene.right_side
    if kind == "grass":
        return
    sign = -1.0 if side == "left" else 1.0
    b_wall = (scene.road_left if side == "left" else scene.road_right) + sign * rng.uniform(0.05, 0.4) / scene.cam_h
    t, ok = _structure_columns(scene, b_wall)
    if not ok.any():
        return
    # every kind's height is drawn (the draws keep their place in the frame's random stream), one is used
    heights = {name: rng.uniform(*span) for name, span in palette.STRUCTURE_HEIGHT_M.items()}
    height_m = heights[kind]
    lit = rng.uniform(0.75, 1.1)
    period = rng.uniform(5, 8)  # sound-wall panel length (m)
    cols = np.flatnonzero(ok)
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    t = t[c0:c1].astype(np.float32)
    bottom = np.float32(scene.y_h) + t
    z = np.float32(scene.focal * scene.cam_h) / np.maximum(t, np.float32(1e-3))
    relative_height = np.ones_like(t)
    if kind == "bushes":  # an irregular hedge: its height varies along the road
        knots = rng.uniform(0.35, 1.0, 64)
        relative_height = np.interp(z / rng.uniform(2, 6), np.arange(64), knots, period=64).astype(np.float32)
    top = np.where(ok[c0:c1], bottom - t * np.float32(height_m / scene.cam_h) * relative_height,
                   np.float32(IMAGE_H + 1))  # fmt: skip
    first = int(np.clip(np.floor(top.min()), 0, IMAGE_H))
    if first >= IMAGE_H:
        return
    rows = np.arange(first, IMAGE_H, dtype=np.float32)[:, None]
    frac = (bottom[None, :] - rows) / np.maximum(bottom - top, np.float32(1e-3))[None, :]
    mask = (frac >= 0) & (frac <= 1)
    base, shade, mask = _structure_shade(kind, frac, mask, z, rng, bank, lit, period, c1 - c0)
    hue = palette.HEDGE_HUE if kind == "bushes" else palette.CONCRETE_HUE
    color = np.asarray(hue, np.float32) * np.float32(base)
    img[first:, c0:c1][mask] = shade[mask][:, None] * color


def draw_bridge(img: np.ndarray, scene: Scene, bridge: Bridge, rng: np.random.Generator) -> None:
    """An overpass: deck across the whole width above the horizon, piers beyond the road edges, maybe a sign."""
    t = scene.t_of_z(bridge.z)
    px_per_m = t / scene.cam_h
    y_low = scene.y_h - (bridge.deck_m - scene.cam_h) * px_per_m
    y_top = y_low - bridge.thick_m * px_per_m
    r0, r1 = int(max(0, np.floor(y_top))), int(max(0, np.ceil(y_low)))
    base = rng.uniform(*palette.BRIDGE_LEVEL)
    if r1 > r0:
        grad = np.linspace(1.05, 0.7, r1 - r0, dtype=np.float32)[:, None, None]
        img[r0:r1] = grad * np.float32(base)
    rail = max(1, int(0.9 * px_per_m))
    if r0 > 0:
        img[max(0, r0 - rail) : r0, :: max(2, int(0.4 * px_per_m))] = base * 0.5
        img[max(0, r0 - rail) : max(0, r0 - rail) + 1] = base * 0.55
    for b in (scene.road_left - 0.6 / scene.cam_h, scene.road_right + 0.6 / scene.cam_h):  # piers
        x_pier = scene.x_c + b * t + scene.k / t
        half = max(1.0, 0.7 * px_per_m)
        c0, c1 = int(np.clip(x_pier - half, 0, IMAGE_W)), int(np.clip(x_pier + half, 0, IMAGE_W))
        img[r1 : int(min(IMAGE_H, scene.y_h + t)), c0:c1] = base * 0.8
    if rng.random() < 0.5:  # a green sign on the deck
        w, h = rng.uniform(4, 7) * px_per_m, rng.uniform(1.8, 2.6) * px_per_m
        x_sign = scene.x_c + rng.uniform(-0.6, 0.6) * scene.spacing * t
        c0, c1 = int(np.clip(x_sign - w / 2, 0, IMAGE_W)), int(np.clip(x_sign + w / 2, 0, IMAGE_W))
        s0, s1 = int(max(0, y_top - 0.3 * px_per_m)), int(max(0, y_top - 0.3 * px_per_m + h))
        img[s0:s1, c0:c1] = np.asarray(palette.SIGN_GREEN, np.float32)
        text_rows = slice(s0 + max(1, int(0.5 * px_per_m)), s0 + max(2, int(0.8 * px_per_m)))
        img[text_rows, c0 + int(0.1 * w) : c1 - int(0.1 * w)] = palette.SIGN_TEXT


def draw_poles(img: np.ndarray, scene: Scene, rng: np.random.Generator) -> None:
    """Street-light poles at regular spacing beyond one road edge, arms reaching over the road."""
    left = rng.random() < 0.5
    b = (scene.road_left - 0.5 / scene.cam_h) if left else (scene.road_right + 0.5 / scene.cam_h)
    spacing, z = rng.uniform(30, 55), rng.uniform(8, 40)
    height, color = rng.uniform(9, 12), rng.uniform(55, 110)
    while z < 250:
        t = scene.t_of_z(z)
        px_per_m = t / scene.cam_h
        x_pole = scene.x_c + b * t + scene.k / t
        half = max(0.5, 0.12 * px_per_m)
        top = scene.y_h - (height - scene.cam_h) * px_per_m
        c0, c1 = int(np.clip(x_pole - half, 0, IMAGE_W)), int(np.clip(x_pole + half + 1, 0, IMAGE_W))
        r0, r1 = int(np.clip(top, 0, IMAGE_H)), int(np.clip(scene.y_h + t, 0, IMAGE_H))
        img[r0:r1, c0:c1] = color
        arm = 2.8 * px_per_m * (1 if left else -1)
        a0, a1 = sorted((x_pole, x_pole + arm))
        thickness = max(1, int(0.15 * px_per_m))
        img[r0 : r0 + thickness, int(np.clip(a0, 0, IMAGE_W)) : int(np.clip(a1, 0, IMAGE_W))] = color
        z += spacing
