"""SCNN backbones with torchvision-compatible state-dict keys, plus a loader for local pretrained files.

torchvision is not a dependency, yet users should be able to start from its ImageNet weights. The modules below
therefore reproduce torchvision's module *names* exactly (``features.<i>.*`` for VGG16-BN; ``conv1``, ``bn1``,
``layer1..4`` with ``downsample.0/1`` for ResNet), so ``torchvision.models.vgg16_bn(weights=...).state_dict()``
or the downloaded ``vgg16_bn-6c64b313.pth`` / ``resnet18-f37072fd.pth`` files load with :func:`load_pretrained`.

Output stride 8 (what SCNN's message passing runs on):

* VGG16-BN, as in the SCNN paper: the last two max-pools (``features.33`` and ``features.43``) are dropped and the
  conv5 stage (``features.34/37/40``) is dilated by 2. Dropping modules leaves gaps in the indices, which is what
  keeps every remaining key identical to torchvision's.
* ResNet-18/34: the stride-2 of ``layer3`` and ``layer4`` is replaced by dilation (2 and 4), the DeepLab recipe.
  Every pretrained tensor keeps its shape and is used, and the dilation preserves the receptive field each
  pretrained filter was trained with. The alternative (RESA-style: dilate ``layer3`` and drop ``layer4``) is cheaper,
  but would leave torchvision's ``layer4`` weights unused and the network shallower; the SCNN head compensates for the
  cost with a narrower first conv (see :mod:`mlflow_anf_lanedet.models.scnn`).
* ResNet-18 "lite" (``stages=2``, ``build_model("resnet18_lite")``): stops after ``layer2``, whose stride is already 8,
  so nothing is dilated; SCNN on it is ~4.6 GMAC per 288x512 image against ~31 for the dilated ResNet-18, for
  training on a small CPU. A torchvision file still loads: its ``layer3``/``layer4`` tensors are ignored like the
  classifier.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = [
    "Backbone",
    "PretrainedError",
    "PretrainedReport",
    "ResNet",
    "VGG16BN",
    "load_pretrained",
]

# torchvision's "D" configuration: numbers are conv widths, "M" a 2x2 max-pool.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"
)


class Backbone(nn.Module):
    """Common surface of the backbones: ``out_channels``, ``output_stride`` and the checkpoint prefixes to ignore."""

    out_channels: int
    output_stride: int
    #: key prefixes of a torchvision checkpoint this backbone does not use (the ImageNet classifier, dropped
    #: stages), never loaded
    ignored_prefixes: tuple[str, ...] = ()


class VGG16BN(Backbone):
    """torchvision's ``vgg16_bn().features``; ``output_stride=8`` gives SCNN's variant.

    The SCNN variant drops pool4/pool5 and dilates conv5 by 2; ``output_stride=32`` is torchvision's exact layout.
    """

    ignored_prefixes = ("classifier.",)

    def __init__(self, output_stride: Literal[8, 32] = 8) -> None:
        super().__init__()
        if output_stride not in (8, 32):
            raise ValueError(f"output_stride: must be 8 or 32, got {output_stride!r}")
        self.output_stride = output_stride
        self.out_channels = 512
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        index, in_ch, pools = 0, 3, 0
        for item in _VGG16_CFG:
            if item == "M":
                pools += 1
                if output_stride == 32 or pools <= 3:  # keep pool1..3 only at stride 8
                    layers[str(index)] = nn.MaxPool2d(kernel_size=2, stride=2)
                index += 1
                continue
            out_ch = int(item)
            dilation = 2 if output_stride == 8 and pools == 4 else 1  # conv5 stage sees pool4 removed
            layers[str(index)] = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
            layers[str(index + 1)] = nn.BatchNorm2d(out_ch)
            layers[str(index + 2)] = nn.ReLU(inplace=True)
            index += 3
            in_ch = out_ch
        self.features = nn.Sequential(layers)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block, with dilation support (torchvision's raises for dilation > 1)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, dilation: tuple[int, int] = (1, 1),
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        d1, d2 = dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=d1, dilation=d1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=d2, dilation=d2, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """torchvision's ResNet-18/34 without ``avgpool``/``fc``; ``output_stride=8`` dilates ``layer3``/``layer4``."""

    ignored_prefixes = ("fc.",)
    _BLOCKS: ClassVar[dict[int, tuple[int, int, int, int]]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

    def __init__(
        self, depth: Literal[18, 34] = 18, output_stride: Literal[8, 32] = 8, stages: Literal[2, 4] = 4
    ) -> None:
        super().__init__()
        if depth not in self._BLOCKS:
            raise ValueError(f"depth: must be one of {sorted(self._BLOCKS)}, got {depth!r}")
        if output_stride not in (8, 32):
            raise ValueError(f"output_stride: must be 8 or 32, got {output_stride!r}")
        if stages not in (2, 4):
            raise ValueError(f"stages: must be 2 or 4, got {stages!r}")
        if stages == 2 and output_stride != 8:
            raise ValueError("stages=2 ends after layer2, whose output stride is 8")
        self.depth = depth
        self.output_stride = output_stride
        self.stages = stages
        if stages == 2:  # a torchvision file's layer3/layer4 have nowhere to go
            self.ignored_prefixes = ("fc.", "layer3.", "layer4.")
        self.out_channels = 512 if stages == 4 else 128
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._inplanes, self._dilation = 64, 1
        dilate = output_stride == 8
        blocks = self._BLOCKS[depth]
        self.layer1 = self._make_layer(64, blocks[0], stride=1)
        self.layer2 = self._make_layer(128, blocks[1], stride=2)
        # stages=2 stops after layer2 (stride 8 without dilation): about a seventh of the dilated network's work,
        # for CPU training; a torchvision file still loads, its layer3/layer4 tensors are reported as unused.
        self.layer3 = self._make_layer(256, blocks[2], stride=2, dilate=dilate) if stages == 4 else None
        self.layer4 = self._make_layer(512, blocks[3], stride=2, dilate=dilate) if stages == 4 else None
        _init_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int, dilate: bool = False) -> nn.Sequential:
        previous = self._dilation
        if dilate:  # trade the stride for dilation; the conv that had the stride keeps the previous dilation
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self._inplanes, planes, stride, (previous, self._dilation), downsample)]
        self._inplanes = planes
        layers += [BasicBlock(planes, planes, 1, (self._dilation, self._dilation)) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        if self.layer3 is None or self.layer4 is None:
            return x
        return self.layer4(self.layer3(x))


def _init_weights(module: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal (fan-out) convs, unit/zero BatchNorm."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------------------------
# Pretrained weights
# --------------------------------------------------------------------------------------------------------------------


class PretrainedError(ValueError):
    """A pretrained file that cannot be read or does not fit the module; the message names the file."""


@dataclass(frozen=True)
class PretrainedReport:
    """What :func:`load_pretrained` did. ``missing``/``unexpected`` are only non-empty when ``strict=False``."""

    path: Path
    target: str  # "backbone" or "model"
    loaded: tuple[str, ...]
    ignored: tuple[str, ...] = field(default=())
    missing: tuple[str, ...] = field(default=())
    unexpected: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        parts = [f"{self.path}: loaded {len(self.loaded)} tensors into the {self.target}"]
        if self.ignored:
            parts.append(f"ignored {len(self.ignored)} tensors the backbone does not use (classifier, dropped stages)")
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {_preview(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {_preview(self.unexpected)}")
        return "; ".join(parts)


def load_pretrained(module: nn.Module, path: str | Path, *, strict: bool = True) -> PretrainedReport:
    """Load a local ``.pth`` (a state dict or ``{"state_dict": ...}``) into *module*.

    *module* is a :class:`Backbone`, or a model with a ``backbone`` attribute (an ``SCNN``): a torchvision-style file
    goes into its backbone, a file of the whole model (keys starting ``backbone.``) into the model. A ``module.``
    prefix (DataParallel/DDP) is stripped. The backbone's classifier keys (``classifier.*`` / ``fc.*``) are ignored;
    BatchNorm's ``num_batches_tracked`` may be absent (old torchvision files). With ``strict`` (the default) any other
    missing or unexpected key raises :class:`PretrainedError` listing them; with ``strict=False`` they are reported in
    the returned :class:`PretrainedReport` and logged. Shape mismatches always raise. Nothing is changed on error.
    """
    path = Path(path)
    state = _read_state_dict(path)
    target, target_name = _pick_target(module, state)
    ignored_prefixes = target.ignored_prefixes if isinstance(target, Backbone) else ()

    own = target.state_dict()
    ignored = tuple(k for k in state if k.startswith(ignored_prefixes) and k not in own)
    candidates = {k: v for k, v in state.items() if k not in ignored}
    unexpected = tuple(k for k in candidates if k not in own)
    missing = tuple(k for k in own if k not in candidates and not k.endswith("num_batches_tracked"))
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs module {tuple(own[k].shape)}"
        for k, v in candidates.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise PretrainedError(f"{path}: {len(mismatched)} tensors do not fit the {target_name}: {_preview(mismatched)}")
    if strict and (missing or unexpected):
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} keys: {_preview(missing)}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} keys: {_preview(unexpected)}")
        raise PretrainedError(
            f"{path}: does not match the {target_name} ({'; '.join(problems)}); pass strict=False to load what fits"
        )
    loadable = {k: v for k, v in candidates.items() if k in own}
    target.load_state_dict(loadable, strict=False)  # everything was checked above, so this cannot half-fail
    report = PretrainedReport(
        path=path, target=target_name, loaded=tuple(loadable), ignored=ignored, missing=missing, unexpected=unexpected
    )
    (log.warning if (missing or unexpected) else log.info)("%s", report.summary())
    return report


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage, truncated zips and pickles of arbitrary objects raise many different types
        raise PretrainedError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise PretrainedError(f"{path}: expected a state dict (or {{'state_dict': ...}}), got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise PretrainedError(f"{path}: entries that are not name -> tensor: {_preview(bad)}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _pick_target(module: nn.Module, state: Mapping[str, Tensor]) -> tuple[nn.Module, str]:
    backbone = getattr(module, "backbone", None)
    if isinstance(backbone, nn.Module) and not isinstance(module, Backbone):
        if any(k.startswith("backbone.") for k in state):
            return module, "model"
        return backbone, "backbone"
    return module, "backbone" if isinstance(module, Backbone) else "module"


def _preview(items: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
