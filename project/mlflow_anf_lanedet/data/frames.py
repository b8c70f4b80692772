"""Frame preprocessing: image -> the network's input tensor. The one path that training, validation/test and
inference (:mod:`mlflow_anf_lanedet.predict`) all use, so a frame gives the same tensor wherever it is read.

A frame is resized to the network input ``(h, w)`` with PIL's bilinear filter and ImageNet-normalised per channel:
``(value / 255 - mean) / std``, computed as ``value * (1 / (255 std)) - mean / std`` in float32 (CHW). Files are
decoded straight at reduced scale where libjpeg can (``Image.draft``: 1/2, 1/4 or 1/8), then resized.

torch is imported lazily (only where tensors are made), so label tools start fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mlflow_anf_lanedet.data.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_frame(img: Image.Image, input_hw: tuple[int, int]) -> Image.Image:
    """``img`` as RGB at ``input_hw`` (bilinear; unchanged when already that size and RGB)."""
    out_h, out_w = input_hw
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (out_w, out_h):
        img = img.resize((out_w, out_h), Image.Resampling.BILINEAR)
    return img


def read_frame(path: str | os.PathLike[str], input_hw: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``path`` straight to ``input_hw`` (RGB); returns the image and the original (h, w).

    Raises :class:`DataError` naming the file when it is missing or cannot be decoded."""
    path = Path(path)
    out_h, out_w = input_hw
    try:
        with Image.open(path) as src:
            src_hw = (src.height, src.width)
            src.draft("RGB", (out_w, out_h))  # let libjpeg decode at 1/2, 1/4 or 1/8 scale
            img = src.convert("RGB")  # decodes; a no-op copy when already RGB
        return resize_frame(img, input_hw), src_hw
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode image: {exc}") from None


def normalise(rgb: np.ndarray) -> torch.Tensor:
    """``HxWx3`` RGB (uint8, or float 0..255 after augmentation) -> ImageNet-normalised float32 ``3xHxW``."""
    import torch

    scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD]).view(3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(3, 1, 1)
    chw = torch.from_numpy(rgb).permute(2, 0, 1).float()
    return chw.mul_(scale).sub_(shift).contiguous()


def frame_to_tensor(img: Image.Image, input_hw: tuple[int, int]) -> torch.Tensor:
    """An in-memory frame (any size) as the network sees it: :func:`resize_frame` then :func:`normalise`."""
    return normalise(np.array(resize_frame(img, input_hw)))


def load_input(path: str | os.PathLike[str], input_hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """A frame file as the network sees it in training and in the run's validation/test: decoded at reduced scale,
    resized to ``input_hw``, ImageNet-normalised -> (float32 3xHxW, original (h, w)). Raises :class:`DataError`."""
    img, src_hw = read_frame(path, input_hw)
    return normalise(np.array(img)), src_hw


def denormalize(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Undo the ImageNet normalisation of a ``3xHxW`` image: ``uint8 HxWx3`` RGB, ready for overlays."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected a 3xHxW image, got shape {tuple(arr.shape)}")
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
    rgb = (arr.astype(np.float32) * std + mean) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()
