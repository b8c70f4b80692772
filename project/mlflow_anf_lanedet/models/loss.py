"""SCNN's training loss: weighted cross-entropy on the segmentation plus a small lane-existence term."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SCNNLoss"]


class SCNNLoss(nn.Module):
    """``loss = CE(seg, mask; class weights [bg_weight, 1, ..., 1]) + exist_weight * BCEWithLogits(exist)``.

    The cross-entropy is PyTorch's weighted mean (sum of weighted pixel losses over the sum of the pixels' weights),
    the existence term the mean over all ``B x num_lanes`` entries, as in the official SCNN. Returns
    ``dict(loss, seg_loss, exist_loss)`` (scalar tensors; ``loss`` is the one to back-propagate).
    """

    def __init__(self, bg_weight: float = 0.4, exist_weight: float = 0.1) -> None:
        super().__init__()
        for name, value in (("bg_weight", bg_weight), ("exist_weight", exist_weight)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        self.bg_weight = float(bg_weight)
        self.exist_weight = float(exist_weight)

    def forward(self, seg_logits: Tensor, exist_logits: Tensor, mask: Tensor, exist: Tensor) -> dict[str, Tensor]:
        _check_shapes(seg_logits, exist_logits, mask, exist)
        class_weight = torch.ones(seg_logits.shape[1], dtype=seg_logits.dtype, device=seg_logits.device)
        class_weight[0] = self.bg_weight
        seg_loss = F.cross_entropy(seg_logits, mask, weight=class_weight)
        exist_loss = F.binary_cross_entropy_with_logits(exist_logits, exist.to(exist_logits.dtype))
        return {"loss": seg_loss + self.exist_weight * exist_loss, "seg_loss": seg_loss, "exist_loss": exist_loss}

    def extra_repr(self) -> str:
        return f"bg_weight={self.bg_weight}, exist_weight={self.exist_weight}"


def _check_shapes(seg_logits: Tensor, exist_logits: Tensor, mask: Tensor, exist: Tensor) -> None:
    if seg_logits.dim() != 4:
        raise ValueError(f"seg_logits: expected [B, C, H, W], got {tuple(seg_logits.shape)}")
    b, c, h, w = seg_logits.shape
    if c < 2:
        raise ValueError(f"seg_logits: need background + at least one lane class, got {c} channels")
    if tuple(mask.shape) != (b, h, w):
        raise ValueError(f"mask: expected shape {(b, h, w)} to match seg_logits, got {tuple(mask.shape)}")
    if mask.dtype != torch.long:
        raise ValueError(f"mask: expected int64 class indices, got {mask.dtype}")
    if tuple(exist_logits.shape) != (b, c - 1):
        raise ValueError(f"exist_logits: expected shape {(b, c - 1)}, got {tuple(exist_logits.shape)}")
    if tuple(exist.shape) != (b, c - 1):
        raise ValueError(f"exist: expected shape {(b, c - 1)} to match exist_logits, got {tuple(exist.shape)}")
