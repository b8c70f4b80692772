"""Synthetic TuSimple data: realistic highway frames whose lanes come from real TuSimple labels.

`generate(out, frames, seed, ...)` writes the official download layout (see `writer.py`); `lanedet synth` is the
command line. Geometry: `geometry.py`; look: `render.py`.

Labels are exactly the drawn lanes: a lane's x at an h_sample is the centre of its painted marking, from the row where
the marking starts down to where it leaves the frame (-2 elsewhere). As in TuSimple, a lane stays labelled across dash
gaps, shadows and vehicles in front of it (annotators labelled through occlusion); nothing that is not labelled is
painted as a lane marking (tar seams and cracks are darker than the road, not paint).
"""

from __future__ import annotations

from .cli import synth_command
from .config import SynthConfig, SynthError, SynthReport
from .writer import default_labels_path, generate, generate_from_config

__all__ = [
    "SynthConfig",
    "SynthError",
    "SynthReport",
    "default_labels_path",
    "generate",
    "generate_from_config",
    "synth_command",
]
