"""The TuSimple lane benchmark's frame geometry, in one place (every lanedet module imports it from here).

Source: the TuSimple lane detection challenge (``github.com/TuSimple/tusimple-benchmark``, ``doc/lane_detection``):
frames are 1280x720 RGB JPEGs, and labels give one x per row of a fixed ``h_samples`` grid. Two grids occur in the
released files, as the packaged real labels (:mod:`mlflow_anf_lanedet.assets`, ``tusimple_label_data_0313.npz``:
48 rows, 240..710) and the test set's ``test_tasks_0627.json`` / ``test_label.json`` show:

* clip 0313 (``label_data_0313.json``) is labelled on rows 240, 250, ..., 710;
* clips 0531 / 0601 and the test set (clip 0530) on rows 160, 170, ..., 710.

Constants only (no imports beyond the standard library, no side effects).
"""

from __future__ import annotations

IMAGE_H = 720
"""Frame height in pixels."""
IMAGE_W = 1280
"""Frame width in pixels."""
IMAGE_HW: tuple[int, int] = (IMAGE_H, IMAGE_W)
"""(height, width) of a TuSimple frame: the source size that label x / h_samples refer to."""

H_SAMPLE_STEP = 10
"""Rows between neighbouring h_samples."""
H_SAMPLES_TEST: tuple[int, ...] = tuple(range(160, IMAGE_H, H_SAMPLE_STEP))
"""The 56-row grid of the test set and clips 0531 / 0601: 160..710."""
H_SAMPLES_0313: tuple[int, ...] = tuple(range(240, IMAGE_H, H_SAMPLE_STEP))
"""The 48-row grid of clip 0313: 240..710."""
