"""The tiny prepared TuSimple root the training tests (and ``benchmarks/bench_ssh_launch.py``) run on: 16 synthetic
frames (seed 3) drawn with the lane geometry of *labels* (``label_data_0313.json``), prepared as ``lanedet prepare``
does."""

from __future__ import annotations

from pathlib import Path


def make_tiny_tusimple(root: Path, labels: Path) -> Path:
    """``root/download`` (the synthetic download) and ``root/tusimple`` (prepared); returns the prepared root."""
    from mlflow_anf_lanedet.data.prepare import prepare
    from mlflow_anf_lanedet.synth import generate

    generate(root / "download", frames=16, seed=3, labels=labels)
    prepare(root / "download", root / "tusimple")
    return root / "tusimple"
