"""Noise textures of the synthetic frames: tiles built once per worker (`TextureBank`, deterministic from the seed)
and sliced per frame at random offsets, which keeps a frame at a few tens of milliseconds."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .config import IMAGE_H, IMAGE_W

TILE_W = 2048
"""Texture tiles are wider than the frame; a frame takes a random horizontal window."""
ROAD_ROWS = IMAGE_H - 170
"""Ground rows below the highest possible horizon (170)."""
SKY_ROWS = 300
"""Rows of the sky / foliage tiles (the lowest possible horizon)."""
TILE_FOCAL_HEIGHT = 2300.0
"""Reference focal length (px) x camera height (m) the ground tiles are projected with."""
TILE_CAMERA_HEIGHT = 2.2
"""Reference camera height (m) the ground tiles are projected with."""

#: octaves (cell in metres, amplitude) of the asphalt texture, fine to coarse
ROAD_OCTAVES = ((0.07, 0.5), (0.35, 0.35), (1.5, 0.25), (6.0, 0.2))
#: octaves (cell in metres, amplitude) of the tree-shadow field
SHADOW_OCTAVES = ((1.2, 0.35), (3.5, 0.8), (9.0, 1.0))
#: image-space octaves (cell px, amplitude) of the other tiles
ROAD_BLOTCH_OCTAVES = [(40, 1.0), (120, 1.0)]
FOLIAGE_OCTAVES = [(2, 0.5), (5, 0.8), (14, 0.8), (40, 0.5)]
CLOUD_OCTAVES = [(40, 0.4), (120, 1.0), (350, 1.0)]
WEAR_OCTAVES = [(1.5, 0.5), (4, 1.0), (12, 0.7)]
WEAR_ROWS = 256


def value_noise(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, cell: float, n: int = 256) -> np.ndarray:
    """Smooth value noise (unit variance lattice, wrapping) sampled at world coordinates (u, v)."""
    lattice = rng.standard_normal((n, n)).astype(np.float32)
    fu, fv = u / cell, v / cell
    iu, iv = np.floor(fu), np.floor(fv)
    du, dv = fu - iu, fv - iv
    du, dv = du * du * (3 - 2 * du), dv * dv * (3 - 2 * dv)  # smoothstep
    iu0, iv0 = iu.astype(np.int64) % n, iv.astype(np.int64) % n
    iu1, iv1 = (iu0 + 1) % n, (iv0 + 1) % n
    top = lattice[iv0, iu0] * (1 - du) + lattice[iv0, iu1] * du
    bottom = lattice[iv1, iu0] * (1 - du) + lattice[iv1, iu1] * du
    return (top * (1 - dv) + bottom * dv).astype(np.float32)


def image_noise(rng: np.random.Generator, rows: int, cols: int, octaves: list[tuple[float, float]]) -> np.ndarray:
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


def profile(rng: np.random.Generator, octaves: list[tuple[float, float]]) -> np.ndarray:
    """1-D multi-octave noise over the image columns: (period px, amplitude)."""
    cols = np.arange(IMAGE_W, dtype=np.float64)
    out = np.zeros(IMAGE_W)
    for period, amp in octaves:
        knots = rng.standard_normal(int(IMAGE_W / period) + 3)
        out += amp * np.interp(cols / period, np.arange(len(knots)), knots)
    return out


class TextureBank:
    """Noise tiles shared by all frames of one worker (deterministic from the seed, ~0.5 s to build).

    ``road`` and ``shadow`` are projected onto the ground (rows below a reference horizon, world-space cells);
    ``foliage`` and ``cloud`` are image-space tiles for the sky band; ``wear`` the patchy paint wear; ``grain`` sensor
    noise; ``vignette`` the squared distance from the image centre (0..1)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E27]))
        t = (np.arange(ROAD_ROWS, dtype=np.float32) + 0.5)[:, None]  # rows below the reference horizon
        x = np.arange(TILE_W, dtype=np.float32)[None, :] - TILE_W / 2
        dist = np.broadcast_to(TILE_FOCAL_HEIGHT / t, (ROAD_ROWS, TILE_W))  # ground distance (m)
        lateral = x * (TILE_CAMERA_HEIGHT / t)  # ground lateral position (m)
        metres_per_row = TILE_FOCAL_HEIGHT / t**2
        road = np.zeros((ROAD_ROWS, TILE_W), np.float32)
        for cell, amp in ROAD_OCTAVES:
            # an octave fades where a row spans more than its cell
            fade = np.clip(cell / metres_per_row - 0.3, 0.0, 1.0)
            road += amp * fade * value_noise(rng, lateral, dist, cell)
        road += rng.standard_normal((ROAD_ROWS, TILE_W)).astype(np.float32) * np.clip(t / 300.0, 0.12, 1.0) * 0.5
        road += 0.2 * image_noise(rng, ROAD_ROWS, TILE_W, ROAD_BLOTCH_OCTAVES) * np.clip(t / 80, 0.2, 1)
        self.road = road / road.std()
        shadow = sum(amp * value_noise(rng, lateral, dist, cell) for cell, amp in SHADOW_OCTAVES)
        self.shadow = (shadow / shadow.std()).astype(np.float32)
        self.foliage = image_noise(rng, SKY_ROWS, TILE_W, FOLIAGE_OCTAVES)
        self.cloud = image_noise(rng, SKY_ROWS, TILE_W, CLOUD_OCTAVES)
        self.wear = np.clip(0.5 + 0.5 * image_noise(rng, WEAR_ROWS, TILE_W, WEAR_OCTAVES), 0, 1)
        self.grain = rng.standard_normal((IMAGE_H, TILE_W, 3)).astype(np.float32)
        yy, xx = np.mgrid[0:IMAGE_H, 0:IMAGE_W].astype(np.float32)
        r2 = ((xx - IMAGE_W / 2) / (IMAGE_W / 2)) ** 2 + ((yy - IMAGE_H / 2) / (IMAGE_W / 2)) ** 2
        self.vignette = (r2 / r2.max()).astype(np.float32)


def window(rng: np.random.Generator, width: int = IMAGE_W) -> slice:
    """A random horizontal window of a tile, ``width`` columns wide."""
    offset = int(rng.integers(0, TILE_W - width))
    return slice(offset, offset + width)


def tiled_rows(tile: np.ndarray, rows: int) -> np.ndarray:
    """The first ``rows`` rows of ``tile``, repeating its top rows below when it is shorter."""
    return tile if rows <= len(tile) else np.concatenate([tile, tile[: rows - len(tile)]])
