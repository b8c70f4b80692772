"""Painting the scene's vehicles (boxes standing in the lanes), far to near: cast shadow, contact shadow, side face
and a layered rear face. Proportions and colours from `palette.py` (`CAR_REAR`, `TRUCK_REAR`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import palette
from .config import IMAGE_H, IMAGE_W
from .geometry import Scene, Vehicle


@dataclass(frozen=True)
class _Sun:
    """Where cast shadows fall (per metre of vehicle height: lateral in camera heights, lengthwise in metres) and how
    dark they are (0..1)."""

    lateral: float
    lengthwise: float
    strength: float


@dataclass(frozen=True)
class _RearBox:
    """A vehicle's rear face in the image: columns x0..x1 (centre x_mid), bottom row and height in pixels."""

    x0: float
    x1: float
    x_mid: float
    bottom: float
    height: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    def row(self, frac: float) -> float:
        """Image row at `frac` of the height above the ground."""
        return self.bottom - frac * self.height


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


def draw_vehicles(img: np.ndarray, occluded: np.ndarray, scene: Scene, rng: np.random.Generator) -> None:
    """Paint `scene.vehicles` (sorted far to near) and mark the pixels they cover in `occluded`."""
    sun = _Sun(lateral=rng.uniform(-1.0, 1.0), lengthwise=rng.uniform(-0.3, 0.8), strength=rng.uniform(0.35, 0.6))
    for vehicle in scene.vehicles:
        _vehicle(img, occluded, scene, vehicle, rng, sun)


def _side_face(
    img: np.ndarray, occluded: np.ndarray, scene: Scene, v: Vehicle, rear: _RearBox, t_front: float, color: np.ndarray
) -> None:
    """The side face, seen when the vehicle is off the camera axis: a quad from the rear corner to the front."""
    side = 1.0 if v.b < 0 else -1.0
    x_rear = rear.x1 if side > 0 else rear.x0
    x_front = scene.lane_x(v.b + side * v.width_m / 2 / scene.cam_h, np.float64(t_front))
    if (x_front - x_rear) * side <= 1:
        return
    y_front_bottom = scene.y_h + t_front
    y_front_top = scene.y_h + t_front - v.height_m * t_front / scene.cam_h
    y_rear_top = rear.row(1.0)
    c0, c1 = sorted((x_rear, x_front))
    c0i, c1i = int(np.clip(np.floor(c0), 0, IMAGE_W)), int(np.clip(np.ceil(c1), 0, IMAGE_W))
    r0i = int(np.clip(np.floor(min(y_rear_top, y_front_top)), 0, IMAGE_H))
    r1i = int(np.clip(np.ceil(rear.bottom), 0, IMAGE_H))
    if c1i <= c0i or r1i <= r0i:
        return
    cols = np.arange(c0i, c1i, dtype=np.float64)[None, :]
    along = (cols - x_rear) / (x_front - x_rear)  # 0 at the rear corner, 1 at the front
    top = y_rear_top + along * (y_front_top - y_rear_top)
    bottom = rear.bottom + along * (y_front_bottom - rear.bottom)
    rows = np.arange(r0i, r1i, dtype=np.float64)[:, None]
    inside = (rows >= top) & (rows < bottom)
    height_frac = (bottom - rows) / np.maximum(bottom - top, 1e-3)
    side_color = color * np.float32(0.72)
    if v.kind == "truck":
        shade = np.where(height_frac < 0.22, 0.25, 1.0)
    else:  # windows above, wheels below
        shade = np.where(height_frac > 0.62, 0.3, np.where(height_frac < 0.2, 0.25, 1.0))
    region = img[r0i:r1i, c0i:c1i]
    np.copyto(region, shade.astype(np.float32)[..., None] * side_color, where=inside[..., None])
    occluded[r0i:r1i, c0i:c1i] |= inside


def _truck_rear(img: np.ndarray, box: _RearBox, color: np.ndarray) -> None:
    p, w, fy = palette.TRUCK_REAR, box.width, box.row
    x0, x1 = box.x0, box.x1
    tyre = np.float32(palette.TYRE)
    _rect(img, fy(p.wheel_top), box.bottom, x0 + p.wheel_inset * w, x0 + p.wheel_outer * w, tyre)
    _rect(img, fy(p.wheel_top), box.bottom, x1 - p.wheel_outer * w, x1 - p.wheel_inset * w, tyre)
    _rect(img, fy(p.bar[1]), fy(p.bar[0]), x0 + p.bar_inset * w, x1 - p.bar_inset * w,
          np.float32(palette.UNDERRIDE_BAR))  # fmt: skip
    _rect(img, fy(1.0), fy(p.box_bottom), x0, x1, color)
    box_top_row = int(round(fy(1.0)))
    grad = np.linspace(1.05, 0.85, max(1, int(round(fy(p.box_bottom))) - box_top_row), dtype=np.float32)
    r0, r1 = int(np.clip(round(fy(1.0)), 0, IMAGE_H)), int(np.clip(round(fy(p.box_bottom)), 0, IMAGE_H))
    c0, c1 = int(np.clip(round(x0), 0, IMAGE_W)), int(np.clip(round(x1), 0, IMAGE_W))
    if r1 > r0 and c1 > c0:
        img[r0:r1, c0:c1] *= grad[(r0 - box_top_row) : (r1 - box_top_row)][:, None, None]
    seam = max(0.5, 0.01 * w)  # the gap between the two rear doors
    _rect(img, fy(p.door_seam[1]), fy(p.door_seam[0]), box.x_mid - seam, box.x_mid + seam, color * 0.55)
    lamp = np.asarray(palette.TRUCK_LAMP, np.float32)
    _rect(img, fy(p.lamp[1]), fy(p.lamp[0]), x0 + p.lamp_inset * w, x0 + p.lamp_outer * w, lamp)
    _rect(img, fy(p.lamp[1]), fy(p.lamp[0]), x1 - p.lamp_outer * w, x1 - p.lamp_inset * w, lamp)


def _car_rear(img: np.ndarray, box: _RearBox, color: np.ndarray, kind: str, rng: np.random.Generator) -> None:
    p, w, fy = palette.CAR_REAR, box.width, box.row
    x0, x1 = box.x0, box.x1
    window_bottom = palette.WINDOW_BOTTOM[kind]
    tyre = np.float32(palette.TYRE)
    _rect(img, fy(p.tyre_top), box.bottom, x0 + p.tyre_inset * w, x0 + p.tyre_outer * w, tyre)
    _rect(img, fy(p.tyre_top), box.bottom, x1 - p.tyre_outer * w, x1 - p.tyre_inset * w, tyre)
    _rect(img, fy(p.bumper[1]), fy(p.bumper[0]), x0, x1, color * 0.55)
    _rect(img, fy(window_bottom), fy(p.body_bottom), x0, x1, color)  # body
    glass = np.asarray(palette.GLASS, np.float32) * np.float32(rng.uniform(0.8, 1.6))
    _rect(img, fy(p.window_top), fy(window_bottom), x0 + p.window_inset * w, x1 - p.window_inset * w, glass)
    _rect(img, fy(p.roof[1]), fy(p.roof[0]), x0 + p.roof_inset * w, x1 - p.roof_inset * w, color * 0.85)
    _rect(img, fy(p.window_top), fy(window_bottom), x0, x0 + p.window_inset * w, color * 0.9)  # pillars
    _rect(img, fy(p.window_top), fy(window_bottom), x1 - p.window_inset * w, x1, color * 0.9)
    lamp = np.asarray(palette.CAR_LAMP, np.float32) * np.float32(rng.uniform(0.8, 1.3))
    lamp_bottom = window_bottom - p.lamp_height
    _rect(img, fy(window_bottom), fy(lamp_bottom), x0, x0 + p.lamp_width * w, lamp)
    _rect(img, fy(window_bottom), fy(lamp_bottom), x1 - p.lamp_width * w, x1, lamp)
    plate_half = p.plate_half_width * w
    _rect(img, fy(p.plate[1]), fy(p.plate[0]), box.x_mid - plate_half, box.x_mid + plate_half,
          np.asarray(palette.PLATE, np.float32))  # fmt: skip


def _vehicle(
    img: np.ndarray, occluded: np.ndarray, scene: Scene, v: Vehicle, rng: np.random.Generator, sun: _Sun
) -> None:
    t_rear = scene.t_of_z(v.z)
    if t_rear < 2:
        return
    t_front = scene.t_of_z(v.z + v.length_m)
    px_per_m = t_rear / scene.cam_h
    half_b = v.width_m / 2 / scene.cam_h
    # cast shadow (offset by the sun) and the dark contact area under the body
    offset = sun.lateral * v.height_m / scene.cam_h
    z_near = v.z - max(0.0, -sun.lengthwise) * v.height_m
    z_far = v.z + v.length_m + max(0.0, sun.lengthwise) * v.height_m
    _shade_ground(img, scene, v.b - half_b + min(offset, 0), v.b + half_b + max(offset, 0), z_near, z_far,
                  1 - sun.strength)  # fmt: skip
    x_mid = scene.lane_x(v.b, np.float64(t_rear))
    bottom = scene.y_h + t_rear
    half_w = v.width_m / 2 * px_per_m
    box = _RearBox(x0=x_mid - half_w, x1=x_mid + half_w, x_mid=x_mid, bottom=bottom, height=v.height_m * px_per_m)
    _rect(img, bottom - 0.35 * px_per_m, bottom + max(1.0, 0.04 * px_per_m), box.x0 - 0.05 * px_per_m,
          box.x1 + 0.05 * px_per_m, palette.CONTACT_SHADOW)  # fmt: skip
    color = np.asarray(v.color, np.float32) * np.float32(rng.uniform(0.8, 1.05))
    _side_face(img, occluded, scene, v, box, t_front, color)
    if v.kind == "truck":
        _truck_rear(img, box, color)
    else:
        _car_rear(img, box, color, v.kind, rng)
    r0, r1 = int(np.clip(round(box.row(1.0)), 0, IMAGE_H)), int(np.clip(round(bottom), 0, IMAGE_H))
    c0, c1 = int(np.clip(round(box.x0), 0, IMAGE_W)), int(np.clip(round(box.x1), 0, IMAGE_W))
    occluded[r0:r1, c0:c1] = True
