"""Inference on whole frames: image → network → probability map → lanes at the frame's h_samples; overlays.

Core code: no MLflow, no Lightning. The same decode path as validation (``mlflow_anf_lanedet.decode``) is used
everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mlflow_anf_lanedet.data.frames import frame_to_tensor, load_input
from mlflow_anf_lanedet.decode import LaneFit, auto_smooth, decode_lanes, fit_options
from mlflow_anf_lanedet.tusimple_format import H_SAMPLE_STEP, H_SAMPLES_TEST, IMAGE_HW

TUSIMPLE_HW = IMAGE_HW
TUSIMPLE_H_SAMPLES = list(H_SAMPLES_TEST)
LANE_COLOURS = [(255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 220, 0)]


def load_frame(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image: {exc}") from exc


def to_tensor(img: Image.Image, input_hw: tuple[int, int]) -> torch.Tensor:
    """Resize the full frame to the network input and normalise exactly as the training data
    (:func:`mlflow_anf_lanedet.data.frames.frame_to_tensor`)."""
    return frame_to_tensor(img, input_hw)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Return (softmax probabilities [B,5,H,W], existence probabilities [B,4]) as numpy."""
    seg_logits, exist_logits = model(batch)
    return (
        torch.softmax(seg_logits.float(), dim=1).cpu().numpy(),
        torch.sigmoid(exist_logits.float()).cpu().numpy(),
    )


class LanePredictor:
    """Predict TuSimple lanes for frames of any size with a trained SCNN."""

    def __init__(
        self,
        model: torch.nn.Module,
        input_hw: tuple[int, int],
        exist_threshold: float = 0.5,
        prob_threshold: float = 0.3,
        device: str | torch.device = "cpu",
        lane_fit: LaneFit = 0,
    ) -> None:
        self.model = model.eval().to(device)
        self.input_hw = input_hw
        self.exist_threshold = exist_threshold
        self.prob_threshold = prob_threshold
        self.device = torch.device(device)
        self.lane_fit = lane_fit

    def predict(
        self, frames: Sequence[Image.Image], h_samples: Sequence[Sequence[int]] | None = None
    ) -> list[list[list[int]]]:
        """Lanes of in-memory frames (any size; each resized to the network input)."""
        if not frames:
            return []
        batch = torch.stack([to_tensor(f, self.input_hw) for f in frames])
        return self._decode(batch, [(f.height, f.width) for f in frames], h_samples)

    def predict_files(
        self, paths: Sequence[str | Path], h_samples: Sequence[Sequence[int]] | None = None
    ) -> list[list[list[int]]]:
        """Lanes of image files, read exactly as training and the run's validation/test read them
        (:func:`mlflow_anf_lanedet.data.frames.load_input`), so a split scores here what it scored in the run."""
        if not paths:
            return []
        loaded = [load_input(p, self.input_hw) for p in paths]
        return self._decode(torch.stack([t for t, _ in loaded]), [hw for _, hw in loaded], h_samples)

    def _decode(
        self, batch: torch.Tensor, src_hws: Sequence[tuple[int, int]], h_samples: Sequence[Sequence[int]] | None
    ) -> list[list[list[int]]]:
        probs, exist = predict_probs(self.model, batch.to(self.device))
        out = []
        for i, src_hw in enumerate(src_hws):
            rows = list(h_samples[i]) if h_samples is not None else default_rows(src_hw[0])
            out.append(
                decode_lanes(
                    probs[i],
                    exist[i],
                    rows,
                    src_hw=src_hw,
                    exist_thr=self.exist_threshold,
                    prob_thr=self.prob_threshold,
                    smooth=auto_smooth(probs.shape[-1]),
                    **fit_options(self.lane_fit),
                )
            )
        return out


def default_rows(height: int) -> list[int]:
    """Rows to report lanes on for a frame without labels: TuSimple's test grid (160..710 step 10), scaled to
    *height*."""
    tusimple_h = TUSIMPLE_HW[0]
    if height == tusimple_h:
        return list(H_SAMPLES_TEST)
    start = int(height * H_SAMPLES_TEST[0] / tusimple_h)
    return list(range(start, height, max(1, height * H_SAMPLE_STEP // tusimple_h)))


def draw_lanes(
    frame: Image.Image,
    lanes: Sequence[Sequence[int]],
    h_samples: Sequence[int],
    gt_lanes: Sequence[Sequence[int]] | None = None,
) -> Image.Image:
    """Draw predicted lanes (coloured, thick) and optional ground truth (thin white) on a copy of *frame*."""
    img = frame.convert("RGB").copy()
    draw = ImageDraw.Draw(img)
    radius = max(2, img.width // 320)
    for lane in gt_lanes or []:
        pts = [(x, y) for x, y in zip(lane, h_samples) if x >= 0]
        if len(pts) > 1:
            draw.line(pts, fill=(255, 255, 255), width=max(1, radius // 2))
    for k, lane in enumerate(lanes):
        colour = LANE_COLOURS[k % len(LANE_COLOURS)]
        for x, y in zip(lane, h_samples):
            if x >= 0:
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    return img
