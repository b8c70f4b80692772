"""The look of the synthetic frames as named tables: colours (RGB 0..255), proportions and the ranges that frames
draw from (``(low, high)`` pairs for ``rng.uniform``). Only data; `render.py` and its helpers paint with it.

Changing a value changes every generated dataset (the generator is byte-deterministic per seed).
"""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[float, float]
RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Sky:
    """A sky: gradient from `top` (image row 0) to `horizon`, drawn with probability `p`."""

    name: str
    top: RGB
    horizon: RGB
    p: float


SKIES = (
    Sky("clear", (95, 150, 215), (195, 215, 230), 0.3),
    Sky("bright haze", (150, 185, 220), (220, 228, 232), 0.2),
    Sky("overcast", (172, 178, 186), (212, 214, 216), 0.15),
    Sky("low sun", (105, 135, 190), (232, 205, 170), 0.1),
    Sky("washed out", (125, 165, 205), (235, 240, 242), 0.25),  # typical of the real camera
)

#: lane-marking paint (scaled by a per-lane brightness in geometry._sample_marking)
MARKING_WHITE: RGB = (236.0, 236.0, 230.0)
MARKING_YELLOW: RGB = (226.0, 184.0, 72.0)
#: painted lines: width, dash length and gap between dashes (m)
LINE_WIDTH_M: Range = (0.1, 0.17)
DASH_M: Range = (2.4, 4.0)
DASH_GAP_M: Range = (5.5, 10.0)
#: raised pavement markers ("dots"): width, length and spacing (m)
DOT_WIDTH_M: Range = (0.11, 0.14)
DOT_LENGTH_M: Range = (0.1, 0.14)
DOT_GAP_M: Range = (0.7, 1.1)

#: vehicle body colours (one drawn per vehicle)
CAR_COLOURS: list[RGB] = [
    (235, 235, 232), (200, 202, 205), (150, 152, 156), (95, 97, 100), (35, 36, 40), (25, 25, 28),
    (130, 25, 28), (30, 50, 110), (70, 90, 120), (180, 170, 150), (90, 30, 30), (40, 70, 50),
]  # fmt: skip
#: vehicle width, height, length (m) per kind
VEHICLE_SIZE_M: dict[str, tuple[float, float, float]] = {
    "car": (1.8, 1.45, 4.6),
    "suv": (1.95, 1.8, 4.9),
    "truck": (2.5, 3.7, 13.0),
}

#: roadside ground beyond the road edges: per-channel (R, G, B) ranges, and how often each kind is drawn
ROADSIDE_GROUND: dict[str, tuple[Range, Range, Range]] = {
    "grass": ((55, 90), (75, 105), (35, 55)),
    "dry": ((120, 160), (110, 140), (75, 100)),
    "dirt": ((105, 140), (100, 128), (85, 108)),
}
ROADSIDE_GROUND_P = [0.45, 0.3, 0.25]

#: grey level of the road surface
CONCRETE_LEVEL: Range = (120, 170)
ASPHALT_LEVEL: Range = (70, 120)
CONCRETE_P = 0.45

#: tar seams: colour relative to the road level (R, G, B)
SEAM_SHADE: RGB = (0.45, 0.45, 0.47)

#: shadows are lit by the blue sky: how much each channel darkens relative to full shadow
SHADOW_TINT: RGB = (1.0, 0.97, 0.88)

#: height (m) of each roadside structure kind beyond the road edge ("grass" has none)
STRUCTURE_HEIGHT_M: dict[str, Range] = {
    "barrier": (0.8, 1.1),
    "rail": (0.7, 0.85),
    "wall": (3.0, 4.5),
    "bushes": (2.0, 5.0),
}
#: base grey level of each roadside structure kind (before lighting)
STRUCTURE_LEVEL: dict[str, Range] = {"barrier": (150, 200), "wall": (130, 185), "bushes": (45, 80), "rail": (140, 190)}
HEDGE_HUE: RGB = (0.75, 1.0, 0.6)
CONCRETE_HUE: RGB = (1.0, 0.99, 0.96)

#: overpass
BRIDGE_LEVEL: Range = (85, 150)
SIGN_GREEN: RGB = (25, 105, 65)
SIGN_TEXT = 225.0

#: vehicles
CONTACT_SHADOW = 18.0  # the dark strip where a vehicle meets the road
TYRE = 22.0
UNDERRIDE_BAR = 40.0
TRUCK_LAMP: RGB = (170, 30, 25)
CAR_LAMP: RGB = (185, 25, 22)
GLASS: RGB = (38, 42, 52)
PLATE: RGB = (205, 205, 195)


@dataclass(frozen=True)
class CarRear:
    """Rear face of a car / SUV: heights as fractions of the vehicle height from the ground, insets as fractions of
    its width."""

    tyre_top: float = 0.3
    tyre_inset: float = 0.04
    tyre_outer: float = 0.24
    bumper: Range = (0.18, 0.36)
    body_bottom: float = 0.34
    window_top: float = 0.95
    window_inset: float = 0.08
    roof: Range = (0.94, 1.0)
    roof_inset: float = 0.1
    lamp_height: float = 0.13
    lamp_width: float = 0.17
    plate: Range = (0.36, 0.46)
    plate_half_width: float = 0.11


#: where the rear window starts (fraction of the height): SUVs sit higher
WINDOW_BOTTOM = {"car": 0.6, "suv": 0.64}


@dataclass(frozen=True)
class TruckRear:
    """Rear face of a truck (same conventions as :class:`CarRear`)."""

    wheel_top: float = 0.26
    wheel_inset: float = 0.05
    wheel_outer: float = 0.3
    bar: Range = (0.15, 0.2)
    bar_inset: float = 0.02
    box_bottom: float = 0.27
    door_seam: Range = (0.3, 0.97)
    lamp: Range = (0.28, 0.33)
    lamp_inset: float = 0.02
    lamp_outer: float = 0.12


CAR_REAR = CarRear()
TRUCK_REAR = TruckRear()
