"""SCNN (Pan et al., "Spatial As Deep: Spatial CNN for Traffic Scene Understanding", AAAI 2018) for lane detection.

Layout of the official Torch model, with a choice of backbone::

    backbone (stride 8) -> conv3x3 dil 4 -> BN/ReLU -> conv1x1 to 128 -> BN/ReLU
      -> message passing (down, up, right, left; 1x9 / 9x1 kernels, ReLU, residual add, slice by slice)
      -> Dropout2d(0.1) -> conv1x1 to 1+num_lanes  --x8 bilinear-->  seg logits at input size
                                     \\-> softmax -> avg-pool (2x2 at the design size) -> fc 128 -> ReLU -> fc num_lanes
                                          = lane-existence logits

The existence branch pools to a fixed grid (the 2x2-pooled grid at ``input_hw``), so the model also runs on other
input sizes and is identical to the original at the design size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .backbones import Backbone, ResNet, VGG16BN, load_pretrained

__all__ = [
    "BackboneName",
    "MessagePassing",
    "ModelConfig",
    "SCNN",
    "build_model",
    "message_passing_reference",
]

BackboneName = Literal["vgg16_bn", "resnet18", "resnet34", "resnet18_lite"]

# Width of the first head conv (backbone -> head_width -> 128). 1024 is the paper's; the ResNet heads are narrower
# because their dilated layer4 already costs more than the VGG conv5 stage, and a 3x3 conv 512->1024 at stride 8
# alone is ~11 GMAC at 288x512.
HEAD_WIDTH: dict[str, int] = {"vgg16_bn": 1024, "resnet18": 256, "resnet34": 256, "resnet18_lite": 128}

# Message-passing directions in SCNN's order: (name, pass along H (True) or W, reverse)
_DIRECTIONS: tuple[tuple[str, bool, bool], ...] = (
    ("down", True, False),
    ("up", True, True),
    ("right", False, False),
    ("left", False, True),
)


# --------------------------------------------------------------------------------------------------------------------
# Message passing
# --------------------------------------------------------------------------------------------------------------------


class MessagePassing(nn.Module):
    """SCNN's sequential message passing: for each direction, ``s_i <- s_i + relu(conv(s_{i-1}))`` slice by slice.

    Directions run in the order down, up, right, left; down/up convolve each row with a ``1 x k`` kernel, right/left
    each column with ``k x 1``. Weights (no bias) live in ``conv_d``, ``conv_u``, ``conv_r``, ``conv_l``.

    ``impl="fast"`` (default) moves the passing axis to the front once per axis (``[L, B, C, N]``), runs each step as
    a ``conv1d`` on a contiguous ``[B, C, N]`` slice in place, and has a hand-written backward: the input gradient
    walks the slices in reverse with ``conv_transpose1d``, and the weight gradient is one batched correlation over
    all slices at the end. ``impl="reference"`` runs :func:`message_passing_reference` (plain autograd).
    """

    def __init__(self, channels: int = 128, kernel_width: int = 9, impl: Literal["fast", "reference"] = "fast") -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels: must be >= 1, got {channels}")
        if kernel_width < 1 or kernel_width % 2 == 0:
            raise ValueError(f"kernel_width: must be a positive odd number, got {kernel_width}")
        if impl not in ("fast", "reference"):
            raise ValueError(f"impl: must be 'fast' or 'reference', got {impl!r}")
        self.channels, self.kernel_width, self.impl = channels, kernel_width, impl
        pad = kernel_width // 2
        self.conv_d = nn.Conv2d(channels, channels, (1, kernel_width), padding=(0, pad), bias=False)
        self.conv_u = nn.Conv2d(channels, channels, (1, kernel_width), padding=(0, pad), bias=False)
        self.conv_r = nn.Conv2d(channels, channels, (kernel_width, 1), padding=(pad, 0), bias=False)
        self.conv_l = nn.Conv2d(channels, channels, (kernel_width, 1), padding=(pad, 0), bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """SCNN's small initialisation: U(-b, b), b = sqrt(2 / (C * k * 5)) (XingangPan/SCNN issue #82)."""
        bound = math.sqrt(2.0 / (self.channels * self.kernel_width * 5))
        for conv in self.convs():
            nn.init.uniform_(conv.weight, -bound, bound)

    def convs(self) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d, nn.Conv2d]:
        """The four convolutions in passing order (down, up, right, left)."""
        return self.conv_d, self.conv_u, self.conv_r, self.conv_l

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x: expected [B, {self.channels}, H, W], got {tuple(x.shape)}")
        weights = [conv.weight for conv in self.convs()]
        if self.impl == "reference":
            return message_passing_reference(x, weights)
        if self.impl != "fast":
            raise ValueError(f"impl: must be 'fast' or 'reference', got {self.impl!r}")
        return _message_passing_fast(x, weights)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_width={self.kernel_width}, impl={self.impl!r}"


def message_passing_reference(x: Tensor, weights: Sequence[Tensor]) -> Tensor:
    """Baseline: SCNN message passing as the public PyTorch ports write it.

    For each direction the feature map is cut into 1-row (or 1-column) 4-D slices, each slice gets
    ``relu(conv2d(previous))`` added, and the slices are joined with one ``torch.cat``. *weights* are the four
    ``Conv2d`` weights (down, up, right, left): ``[C, C, 1, k]`` for down/up, ``[C, C, k, 1]`` for right/left.
    """
    if len(weights) != 4:
        raise ValueError(f"weights: expected 4 tensors (down, up, right, left), got {len(weights)}")
    for (_, vertical, reverse), weight in zip(_DIRECTIONS, weights):
        dim = 2 if vertical else 3
        k = weight.shape[3] if vertical else weight.shape[2]
        padding = (0, k // 2) if vertical else (k // 2, 0)
        slices = [x.narrow(dim, i, 1) for i in range(x.shape[dim])]
        if reverse:
            slices = slices[::-1]
        out = [slices[0]]
        for s in slices[1:]:
            out.append(s + F.relu(F.conv2d(out[-1], weight, padding=padding)))
        if reverse:
            out = out[::-1]
        x = torch.cat(out, dim=dim)
    return x


def _message_passing_fast(x: Tensor, weights: Sequence[Tensor]) -> Tensor:
    # Runs in x's dtype with autocast off: under mixed precision the recurrence then accumulates like the reference
    # does on half-precision slices, and forward and hand-written backward agree on the dtype (weight grads are cast
    # back to the parameters' dtype by autograd through .to()).
    with torch.autocast(device_type=x.device.type, enabled=False):
        weights = [w.to(x.dtype) for w in weights]
        # One copy per axis into [L, B, C, N], so that every slice is a contiguous [B, C, N] conv1d input.
        t = x.permute(2, 0, 1, 3).contiguous()  # [H, B, C, W]
        for (_, _, reverse), weight in zip(_DIRECTIONS[:2], weights[:2]):
            t = _pass(t, weight.squeeze(2), reverse)
        t = t.permute(3, 1, 2, 0).contiguous()  # [W, B, C, H]
        for (_, _, reverse), weight in zip(_DIRECTIONS[2:], weights[2:]):
            t = _pass(t, weight.squeeze(3), reverse)
        return t.permute(1, 2, 3, 0).contiguous()  # [B, C, H, W]


def _pass(t: Tensor, weight: Tensor, reverse: bool) -> Tensor:
    if torch.is_grad_enabled() and (t.requires_grad or weight.requires_grad):
        return _DirectionalPass.apply(t, weight, reverse)
    out = t.clone()
    _propagate(out, weight, reverse, mask=None)
    return out


def _propagate(out: Tensor, weight: Tensor, reverse: bool, mask: Tensor | None) -> None:
    """In place over ``out`` [L, B, C, N]: ``out[i] += relu(conv1d(out[i-1]))`` along the (possibly reversed) axis.

    ``mask[k]`` (k = the smaller of the two slice indices of a step) receives where the ReLU was active.
    """
    length, pad = out.shape[0], weight.shape[-1] // 2
    for step in range(1, length):
        dst = length - 1 - step if reverse else step
        src = dst + 1 if reverse else dst - 1
        z = F.conv1d(out[src], weight, padding=pad)
        if mask is not None:
            torch.gt(z, 0, out=mask[min(src, dst)])
        out[dst].add_(z.clamp_(min=0))


class _DirectionalPass(torch.autograd.Function):
    """One direction of message passing on ``[L, B, C, N]`` with a hand-written, allocation-light backward."""

    @staticmethod
    def forward(ctx, t: Tensor, weight: Tensor, reverse: bool) -> Tensor:  # type: ignore[override]
        out = t.clone(memory_format=torch.contiguous_format)
        mask = torch.empty((out.shape[0] - 1, *out.shape[1:]), dtype=torch.bool, device=out.device)
        _propagate(out, weight, reverse, mask)
        ctx.save_for_backward(out, mask, weight)
        ctx.reverse = reverse
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        out, mask, weight = ctx.saved_tensors
        reverse: bool = ctx.reverse
        length, pad = out.shape[0], weight.shape[-1] // 2
        # grad[i] accumulates d loss / d out[i]; since out[i] = t[i] + f(out[i-1]), it ends as d loss / d t[i].
        grad = grad_out.clone(memory_format=torch.contiguous_format)
        # grad_z[k]: gradient at the pre-ReLU conv output of the step whose smaller slice index is k
        grad_z = torch.empty_like(grad[1:])
        for step in range(length - 1, 0, -1):
            dst = length - 1 - step if reverse else step
            src = dst + 1 if reverse else dst - 1
            k = min(src, dst)
            torch.mul(grad[dst], mask[k], out=grad_z[k])
            grad[src].add_(F.conv_transpose1d(grad_z[k], weight, padding=pad))
        grad_weight = None
        if ctx.needs_input_grad[1] and length == 1:
            grad_weight = torch.zeros_like(weight)  # a single slice: the weight was never applied
        elif ctx.needs_input_grad[1]:
            # every step's conv input is out[k] (forward) or out[k + 1] (reverse): one batched correlation
            inputs = out[1:] if reverse else out[:-1]
            n = inputs.shape[0] * inputs.shape[1]
            grad_weight = torch.nn.grad.conv1d_weight(
                inputs.reshape(n, *inputs.shape[2:]), weight.shape, grad_z.reshape(n, *grad_z.shape[2:]), padding=pad
            )
        return (grad if ctx.needs_input_grad[0] else None), grad_weight, None


# --------------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------------


class ExistenceHead(nn.Module):
    """Lane existence from the stride-8 seg logits: softmax -> average pool to ``grid`` -> fc -> ReLU -> fc."""

    def __init__(self, num_classes: int, num_lanes: int, grid: tuple[int, int], hidden: int = 128) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.fc1 = nn.Linear(num_classes * grid[0] * grid[1], hidden)
        self.fc2 = nn.Linear(hidden, num_lanes)

    def forward(self, seg_logits: Tensor) -> Tensor:
        x = self.pool(seg_logits.softmax(dim=1)).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


class SCNN(nn.Module):
    """SCNN on a stride-8 backbone.

    ``forward(x) -> (seg_logits [B, 1 + num_lanes, H, W], exist_logits [B, num_lanes])``, both raw logits.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_lanes: int = 4,
        input_hw: tuple[int, int] = (288, 512),
        head_width: int = 1024,
        mp_channels: int = 128,
        mp_kernel_width: int = 9,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if backbone.output_stride != 8:
            raise ValueError(f"backbone: SCNN needs output stride 8, got {backbone.output_stride}")
        self.num_lanes = num_lanes
        self.input_hw = tuple(input_hw)
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Conv2d(backbone.out_channels, head_width, 3, padding=4, dilation=4, bias=False),
            nn.BatchNorm2d(head_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_width, mp_channels, 1, bias=False),
            nn.BatchNorm2d(mp_channels),
            nn.ReLU(inplace=True),
        )
        self.message_passing = MessagePassing(mp_channels, mp_kernel_width)
        self.seg_head = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(mp_channels, num_lanes + 1, 1))
        # the original pools the stride-8 map 2x2: keep that grid at the design size, adaptively elsewhere
        grid = (max(1, input_hw[0] // 16), max(1, input_hw[1] // 16))
        self.exist_head = ExistenceHead(num_lanes + 1, num_lanes, grid)
        for m in [*self.head.modules(), *self.seg_head.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x: expected images [B, 3, H, W], got {tuple(x.shape)}")
        features = self.message_passing(self.head(self.backbone(x)))
        seg_small = self.seg_head(features)
        # align_corners=False keeps each stride-8 cell centred on the input pixels it covers (cell j -> 8j + 3.5),
        # the pixel-centre convention the targets are drawn in; True would stretch the grid by up to half a cell,
        # 20 source pixels at a 224-wide input: the TuSimple metric's whole tolerance.
        seg = F.interpolate(seg_small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return seg, self.exist_head(seg_small)


class ModelConfig(BaseModel):
    """Validated arguments of :func:`build_model`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: BackboneName = "vgg16_bn"
    num_lanes: int = Field(4, ge=1, le=16)
    input_hw: tuple[int, int] = (288, 512)
    pretrained: Path | None = None

    @field_validator("input_hw")
    @classmethod
    def _stride_multiple(cls, value: tuple[int, int]) -> tuple[int, int]:
        if any(v < 16 or v % 8 for v in value):
            raise ValueError(f"each side must be a multiple of 8 and at least 16 (output stride 8), got {value}")
        return value


def build_model(
    backbone: BackboneName = "vgg16_bn",
    num_lanes: int = 4,
    input_hw: tuple[int, int] = (288, 512),
    pretrained: str | Path | None = None,
) -> SCNN:
    """Build SCNN on ``backbone``; ``pretrained`` is a local torchvision-style (or whole-model) ``.pth`` to load."""
    cfg = ModelConfig(backbone=backbone, num_lanes=num_lanes, input_hw=input_hw, pretrained=pretrained)
    net: Backbone
    if cfg.backbone == "vgg16_bn":
        net = VGG16BN(output_stride=8)
    elif cfg.backbone == "resnet18_lite":  # ResNet-18 up to layer2 (stride 8 undilated): the CPU demo's backbone
        net = ResNet(depth=18, output_stride=8, stages=2)
    else:
        net = ResNet(depth=18 if cfg.backbone == "resnet18" else 34, output_stride=8)
    model = SCNN(net, num_lanes=cfg.num_lanes, input_hw=cfg.input_hw, head_width=HEAD_WIDTH[cfg.backbone])
    if cfg.pretrained is not None:
        load_pretrained(model, cfg.pretrained)
    return model
