"""Synthetic TuSimple data: realistic highway frames whose lanes come from real TuSimple labels.

`generate(out, frames, seed, ...)` writes the official download layout (see `writer.py`); `lanedet synth` is the
command line. Geometry: `geometry.py`; look: `render.py`.
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
