"""The synthetic generator's output pinned for one seed: refactoring the painter (`synth/render.py` and its helper
modules) or the geometry must not change a single byte.

Frames come from the packaged real labels through the generator's own pieces (`plan_frames`, `FrameRenderer`), as
`generate` uses them. The pinned values were recorded with this repository's locked numpy / Pillow; a version bump of
those may change pixels legitimately (then re-pin, and say so in the commit), a refactoring may not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mlflow_anf_lanedet.synth.config import SynthConfig
from mlflow_anf_lanedet.synth.geometry import frame_labels
from mlflow_anf_lanedet.synth.writer import FrameRenderer, default_labels_path, plan_frames

SEED = 7
PINNED = {  # frame index -> (sha256 of the uint8 image before JPEG, of the JPEG, of the label line's lanes), 12 hex
    0: ("ee7d875dbad0", "9e4c41434b8f", "772d323e2265"),
    1: ("6cf39b8ed13b", "a106f2e8df14", "b2ed37f0b300"),
    2: ("ff564ae2373c", "351ba16cb5af", "fdae1467282c"),
}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def test_frames_are_byte_identical_to_the_pinned_ones(tmp_path: Path) -> None:
    cfg = SynthConfig(out=tmp_path / "unused", frames=3, seed=SEED)
    renderer = FrameRenderer(default_labels_path(), SEED, cfg.max_fit_rms, cfg.jpeg_quality)
    got = {}
    for plan in plan_frames(cfg):
        scene, rendered = renderer.render(plan)
        labels = json.dumps(frame_labels(scene, plan.h_samples)).encode()
        got[plan.index] = (_digest(rendered.image.tobytes()), _digest(rendered.jpeg), _digest(labels))
    assert got == PINNED
