"""mlflow_anf_lanedet.models: backbones (torchvision-compatible keys), SCNN, message passing, loss, schedule, pretrained files."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from mlflow_anf_lanedet.models import (
    SCNN,
    MessagePassing,
    PretrainedError,
    ResNet,
    SCNNLoss,
    VGG16BN,
    build_model,
    load_pretrained,
    message_passing_reference,
    poly_lr_lambda,
)

BACKBONES = ["vgg16_bn", "resnet18", "resnet34", "resnet18_lite"]

# torchvision's vgg16_bn().features: conv layers at these indices, each followed by BatchNorm (i+1) and ReLU (i+2)
VGG_CONV_INDICES = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _randomise_bn(module: torch.nn.Module, seed: int = 0) -> None:
    """Give BatchNorm non-trivial affine parameters and running statistics, so round trips are meaningful."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


# --------------------------------------------------------------------------------------------------------------------
# Shapes and stride
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shapes_at_small_size_and_other_input_sizes(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_model(backbone, input_hw=(96, 160)).eval()
    with torch.no_grad():
        seg, exist = model(torch.randn(2, 3, 96, 160))
        assert seg.shape == (2, 5, 96, 160) and exist.shape == (2, 4)
        # the existence branch pools adaptively, so another input size still works
        seg, exist = model(torch.randn(1, 3, 64, 128))
        assert seg.shape == (1, 5, 64, 128) and exist.shape == (1, 4)
    assert torch.isfinite(seg).all() and torch.isfinite(exist).all()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shapes_at_design_size(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_model(backbone, num_lanes=4, input_hw=(288, 512)).eval()
    # the existence fc sees the original SCNN's 2x2-pooled grid of the stride-8 map: 5 x 18 x 32
    assert model.exist_head.fc1.in_features == 5 * 18 * 32
    with torch.no_grad():
        seg, exist = model(torch.randn(1, 3, 288, 512))
    assert seg.shape == (1, 5, 288, 512)
    assert exist.shape == (1, 4)


@pytest.mark.parametrize(
    ("backbone", "channels"),
    [(VGG16BN(), 512), (ResNet(18), 512), (ResNet(34), 512), (ResNet(18, stages=2), 128)],
    ids=["vgg16_bn", "resnet18", "resnet34", "resnet18_lite"],
)
def test_backbones_have_output_stride_8(backbone, channels: int) -> None:
    with torch.no_grad():
        out = backbone.eval()(torch.randn(1, 3, 96, 160))
    assert backbone.output_stride == 8 and backbone.out_channels == channels
    assert out.shape == (1, channels, 12, 20)


def test_stride_32_variants_match_torchvision_geometry() -> None:
    with torch.no_grad():
        assert VGG16BN(output_stride=32).eval()(torch.randn(1, 3, 64, 96)).shape == (1, 512, 2, 3)
        assert ResNet(18, output_stride=32).eval()(torch.randn(1, 3, 64, 96)).shape == (1, 512, 2, 3)


def test_num_lanes_sets_class_count() -> None:
    model = build_model("resnet18", num_lanes=2, input_hw=(32, 64)).eval()
    with torch.no_grad():
        seg, exist = model(torch.randn(1, 3, 32, 64))
    assert seg.shape == (1, 3, 32, 64) and exist.shape == (1, 2)


def test_build_model_rejects_bad_arguments_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="backbone"):
        build_model("resnet50")
    with pytest.raises(ValidationError, match="input_hw"):
        build_model("resnet18", input_hw=(100, 160))
    with pytest.raises(ValidationError, match="num_lanes"):
        build_model("resnet18", num_lanes=0)
    with pytest.raises(ValueError, match="output stride 8"):
        SCNN(VGG16BN(output_stride=32))
    with pytest.raises(ValueError, match=r"x: expected images \[B, 3, H, W\]"):
        build_model("resnet18", input_hw=(32, 64))(torch.randn(1, 1, 32, 64))


# --------------------------------------------------------------------------------------------------------------------
# torchvision-compatible state-dict keys
# --------------------------------------------------------------------------------------------------------------------


def test_vgg16_bn_keys_are_torchvisions() -> None:
    expected = set()
    for i in VGG_CONV_INDICES:
        expected |= {f"features.{i}.weight", f"features.{i}.bias"}
        expected |= {f"features.{i + 1}.{n}" for n in ("weight", "bias", "running_mean", "running_var",
                                                       "num_batches_tracked")}
    for output_stride in (8, 32):
        backbone = VGG16BN(output_stride=output_stride)
        state = backbone.state_dict()
        assert set(state) == expected
        assert len(state) == 91
        params = dict(backbone.named_parameters())
        assert len(params) == 52  # 13 conv (weight, bias) + 13 BatchNorm (weight, bias)
        assert sum(p.numel() for p in params.values()) == 14_723_136  # torchvision's vgg16_bn().features
        assert state["features.0.weight"].shape == (64, 3, 3, 3)
        assert state["features.40.weight"].shape == (512, 512, 3, 3)
        assert state["features.41.running_var"].shape == (512,)
    # the SCNN variant: pool4/pool5 gone, conv5 dilated
    scnn_features = VGG16BN(output_stride=8).features
    assert "33" not in scnn_features._modules and "43" not in scnn_features._modules
    assert [scnn_features._modules[str(i)].dilation for i in (30, 34, 37, 40)] == [(1, 1), (2, 2), (2, 2), (2, 2)]


@pytest.mark.parametrize(("depth", "entries", "numel"), [(18, 120, 11_176_512), (34, 216, 21_284_672)])
def test_resnet_keys_are_torchvisions(depth: int, entries: int, numel: int) -> None:
    backbone = ResNet(depth)
    state = backbone.state_dict()
    assert len(state) == entries  # torchvision's resnet{depth}().state_dict() minus fc.weight, fc.bias
    assert sum(p.numel() for p in backbone.parameters()) == numel
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
                "layer3.0.downsample.0.weight", "layer4.0.downsample.1.weight", "layer4.1.bn2.num_batches_tracked"):
        assert key in state, key
    assert not any(k.startswith(("layer1.0.downsample", "fc.", "avgpool")) for k in state)
    assert state["layer4.0.downsample.0.weight"].shape == (512, 256, 1, 1)
    # output stride 8: strides of layer3/4 traded for dilation, the strided conv keeps the previous dilation
    assert backbone.layer3[0].conv1.stride == (1, 1) and backbone.layer3[0].conv1.dilation == (1, 1)
    assert backbone.layer3[0].conv2.dilation == (2, 2) and backbone.layer4[0].conv1.dilation == (2, 2)
    assert backbone.layer4[-1].conv2.dilation == (4, 4)
    assert backbone.layer4[0].downsample[0].stride == (1, 1)


# --------------------------------------------------------------------------------------------------------------------
# Pretrained loading
# --------------------------------------------------------------------------------------------------------------------


def test_pretrained_backbone_round_trip_ignores_classifier(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = VGG16BN()
    _randomise_bn(source)
    state = dict(source.state_dict())
    # what a torchvision vgg16_bn file also holds (shapes shrunk: they are ignored anyway)
    state["classifier.0.weight"] = torch.randn(8, 4)
    state["classifier.6.bias"] = torch.randn(10)
    path = tmp_path / "vgg16_bn.pth"
    torch.save(state, path)

    model = build_model("vgg16_bn", input_hw=(32, 64), pretrained=path).eval()
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        assert torch.equal(model.backbone(x), source.eval()(x))

    report = load_pretrained(model, path)
    assert report.target == "backbone"
    assert set(report.ignored) == {"classifier.0.weight", "classifier.6.bias"}
    assert len(report.loaded) == 91 and not report.missing and not report.unexpected


def test_pretrained_accepts_wrapped_state_dict_with_ddp_prefix(tmp_path: Path) -> None:
    torch.manual_seed(2)
    source = ResNet(18)
    _randomise_bn(source)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.fc.weight"] = torch.randn(1000, 512)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    target = ResNet(18).eval()
    report = load_pretrained(target, path)
    assert report.ignored == ("fc.weight",)
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        assert torch.equal(target(x), source.eval()(x))


def test_torchvision_resnet18_file_loads_into_the_lite_backbone(tmp_path: Path) -> None:
    torch.manual_seed(10)
    full = ResNet(18)
    _randomise_bn(full)
    state = dict(full.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = build_model("resnet18_lite", input_hw=(32, 64), pretrained=path).eval()
    report = load_pretrained(model, path)
    assert set(report.ignored) == {k for k in state if k.startswith(("fc.", "layer3.", "layer4."))}
    assert not report.missing and not report.unexpected
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():  # the lite backbone is the full one's stem + layer1 + layer2
        expected = full.eval().layer2(full.layer1(full.maxpool(full.relu(full.bn1(full.conv1(x))))))
        assert torch.equal(model.backbone(x), expected)
    with pytest.raises(ValueError, match="stages"):
        ResNet(18, output_stride=32, stages=2)


def test_whole_model_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = build_model("resnet18", input_hw=(32, 64))
    _randomise_bn(source)
    path = tmp_path / "scnn.pth"
    torch.save(source.state_dict(), path)
    restored = build_model("resnet18", input_hw=(32, 64), pretrained=path)
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        for a, b in zip(source.eval()(x), restored.eval()(x)):
            assert torch.equal(a, b)


def test_corrupt_or_missing_pretrained_file_names_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(PretrainedError, match="corrupt.pth: not a readable PyTorch weights file"):
        build_model("resnet18", input_hw=(32, 64), pretrained=corrupt)
    truncated = tmp_path / "truncated.pth"
    torch.save(ResNet(18).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(PretrainedError, match="truncated.pth"):
        load_pretrained(ResNet(18), truncated)
    with pytest.raises(PretrainedError, match="absent.pth: no such file"):
        load_pretrained(ResNet(18), tmp_path / "absent.pth")
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(PretrainedError, match="list.pth: expected a state dict"):
        load_pretrained(ResNet(18), not_a_state_dict)


def test_wrong_pretrained_file_lists_missing_and_unexpected_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(ResNet(18).state_dict(), path)
    target = VGG16BN()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(PretrainedError, match=r"resnet18.pth: does not match the backbone \(missing 78 keys: "
                                              r"features.0.weight.*unexpected 120 keys: conv1.weight"):
        load_pretrained(target, path)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())

    # a shape mismatch always raises, naming the tensor
    state = ResNet(18).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, path)
    mismatch = r"layer1.0.conv1.weight: file \(64, 64, 1, 1\) vs module \(64, 64, 3, 3\)"
    with pytest.raises(PretrainedError, match=mismatch):
        load_pretrained(ResNet(18), path, strict=False)

    # strict=False loads what fits and reports the rest (resnet18 file into resnet34: extra blocks stay missing)
    source = ResNet(18)
    _randomise_bn(source)
    torch.save(source.state_dict(), path)
    deeper = ResNet(34)
    report = load_pretrained(deeper, path, strict=False)
    assert "layer1.2.conv1.weight" in report.missing and not report.unexpected
    assert torch.equal(deeper.layer1[0].bn1.running_mean, source.layer1[0].bn1.running_mean)
    assert "missing" in report.summary()


# --------------------------------------------------------------------------------------------------------------------
# Message passing
# --------------------------------------------------------------------------------------------------------------------


def _run_mp(mp: MessagePassing, x: torch.Tensor, grad_y: torch.Tensor, impl: str):
    mp.impl = impl
    mp.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    y = mp(x)
    y.backward(grad_y)
    return y.detach(), x.grad, [conv.weight.grad for conv in mp.convs()]


@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (1, 6, 1, 4), (3, 6, 8, 2)])
def test_fast_message_passing_is_the_reference_in_float64(shape) -> None:
    torch.manual_seed(4)
    mp = MessagePassing(channels=shape[1], kernel_width=5).double()
    for conv in mp.convs():  # larger weights than SCNN's init: make every step matter
        torch.nn.init.normal_(conv.weight, std=0.3)
    x, grad_y = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    fast, ref = _run_mp(mp, x, grad_y, "fast"), _run_mp(mp, x, grad_y, "reference")
    torch.testing.assert_close(fast[0], ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast[1], ref[1], rtol=1e-12, atol=1e-12)
    for g_fast, g_ref in zip(fast[2], ref[2]):
        if g_ref is None:  # a 1-long axis: the reference never applies that conv
            assert torch.count_nonzero(g_fast) == 0
        else:
            torch.testing.assert_close(g_fast, g_ref, rtol=1e-12, atol=1e-12)


def test_fast_message_passing_matches_reference_to_1e5_at_scnn_width() -> None:
    torch.manual_seed(5)
    mp = MessagePassing(128, 9)
    x = torch.relu(torch.randn(2, 128, 9, 16))  # a post-ReLU feature map, as in SCNN
    grad_y = torch.randn_like(x)
    fast, ref = _run_mp(mp, x, grad_y, "fast"), _run_mp(mp, x, grad_y, "reference")
    assert not torch.equal(ref[0], x)  # the passing did change the map
    for a, b in zip([fast[0], fast[1], *fast[2]], [ref[0], ref[1], *ref[2]]):
        # 1e-5 relative to the tensor's scale: float32 sums in a different order (weight grads are ~1e2)
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * scale)
    with torch.no_grad():
        mp.impl = "fast"
        assert torch.equal(mp(x), fast[0])  # the inference path is the same computation


# With 1 channel and kernel width 1 each direction is s_i += relu(w * s_{i-1}) along its own axis and order, so
# switching on one conv at a time pins down which axis and which end each direction starts from.
_SEQ = [1.0, -3.0, 2.0]
_BY_HAND = {
    # down (top -> bottom): s1 = -3 + relu(1) = -2; s2 = 2 + relu(-2) = 2
    "conv_d": ("column", [1.0, -2.0, 2.0]),
    # up (bottom -> top): s1 = -3 + relu(2) = -1; s0 = 1 + relu(-1) = 1
    "conv_u": ("column", [1.0, -1.0, 2.0]),
    # right (left -> right) along a row: same numbers as down
    "conv_r": ("row", [1.0, -2.0, 2.0]),
    # left (right -> left)
    "conv_l": ("row", [1.0, -1.0, 2.0]),
}


@pytest.mark.parametrize("active", sorted(_BY_HAND))
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_message_passing_directions_by_hand(active: str, impl: str) -> None:
    mp = MessagePassing(channels=1, kernel_width=1, impl=impl).double()
    with torch.no_grad():
        for name in _BY_HAND:
            getattr(mp, name).weight.fill_(1.0 if name == active else 0.0)
    layout, expected = _BY_HAND[active]
    shape = (1, 1, 3, 1) if layout == "column" else (1, 1, 1, 3)
    x = torch.tensor(_SEQ, dtype=torch.float64).reshape(shape)
    torch.testing.assert_close(mp(x), torch.tensor(expected, dtype=torch.float64).reshape(shape))
    # along the other axis the slices are single pixels with nothing to pass: unchanged
    other = (1, 1, 1, 3) if layout == "column" else (1, 1, 3, 1)
    torch.testing.assert_close(mp(x.reshape(other)), x.reshape(other))


@pytest.mark.parametrize(
    ("weights", "x", "expected"),
    [
        # down (w=1) then up (w=-1) on a column [1, -3, 2]: down -> [1, -2, 2];
        # up from the bottom: s1 = -2 + relu(-2) = -2, s0 = 1 + relu(2) = 3.  (Up first would give [4, 1, 3].)
        ({"conv_d": 1.0, "conv_u": -1.0}, [[1.0], [-3.0], [2.0]], [[3.0], [-2.0], [2.0]]),
        # down then right on [[1, 1], [-3, 0]]: down -> [[1, 1], [-2, 1]]; right -> [[1, 2], [-2, 1 + relu(-2)]].
        # (Right first would give 2 bottom-right.)
        ({"conv_d": 1.0, "conv_r": 1.0}, [[1.0, 1.0], [-3.0, 0.0]], [[1.0, 2.0], [-2.0, 1.0]]),
    ],
)
def test_message_passing_runs_directions_in_scnn_order(weights: dict, x: list, expected: list) -> None:
    mp = MessagePassing(channels=1, kernel_width=1).double()
    with torch.no_grad():
        for name in _BY_HAND:
            getattr(mp, name).weight.fill_(weights.get(name, 0.0))
    inp = torch.tensor(x, dtype=torch.float64)[None, None]
    for impl in ("fast", "reference"):
        mp.impl = impl
        torch.testing.assert_close(mp(inp), torch.tensor(expected, dtype=torch.float64)[None, None])


def test_message_passing_init_and_validation() -> None:
    mp = MessagePassing(128, 9)
    bound = math.sqrt(2.0 / (128 * 9 * 5))
    for conv in mp.convs():
        assert conv.bias is None and conv.weight.abs().max() <= bound
        assert conv.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform(-b, b)
    assert mp.conv_d.weight.shape == (128, 128, 1, 9) and mp.conv_r.weight.shape == (128, 128, 9, 1)
    with pytest.raises(ValueError, match="kernel_width"):
        MessagePassing(8, 4)
    with pytest.raises(ValueError, match=r"x: expected \[B, 128, H, W\]"):
        mp(torch.randn(1, 64, 4, 4))
    with pytest.raises(ValueError, match="impl"):
        MessagePassing(8, 3, impl="slow")
    mp.impl = "slow"
    with pytest.raises(ValueError, match="impl"):
        mp(torch.randn(1, 128, 2, 2))
    with pytest.raises(ValueError, match="weights: expected 4"):
        message_passing_reference(torch.randn(1, 128, 2, 2), [mp.conv_d.weight])


def test_fast_message_passing_under_autocast_runs_in_the_input_dtype() -> None:
    torch.manual_seed(9)
    mp = MessagePassing(16, 3)
    x = torch.relu(torch.randn(2, 16, 4, 6)).to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mp(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    for conv in mp.convs():
        assert conv.weight.grad.dtype == torch.float32 and torch.isfinite(conv.weight.grad).all()
    # same computation as the float32 path on the bf16-rounded weights, up to bf16 rounding
    with torch.no_grad():
        ref = message_passing_reference(x.detach().float(), [c.weight.to(torch.bfloat16).float() for c in mp.convs()])
    torch.testing.assert_close(y.detach().float(), ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("backbone", ["vgg16_bn", "resnet18", "resnet18_lite"])
def test_gradients_reach_every_parameter(backbone: str) -> None:
    torch.manual_seed(6)
    model = build_model(backbone, input_hw=(32, 64)).train()
    images = torch.randn(2, 3, 32, 64)
    mask = torch.randint(0, 5, (2, 32, 64))
    exist = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    seg, exist_logits = model(images)
    SCNNLoss()(seg, exist_logits, mask, exist)["loss"].backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert dead == []


# --------------------------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------------------------


def test_loss_matches_hand_computation() -> None:
    torch.manual_seed(7)
    seg = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    mask = torch.randint(0, 5, (2, 3, 4))
    mask[0, 0, 0], mask[1, 2, 3] = 0, 3  # both background and lanes present
    exist_logits = torch.randn(2, 4, dtype=torch.float64)
    exist = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)

    out = SCNNLoss(bg_weight=0.4, exist_weight=0.1)(seg, exist_logits, mask, exist)

    num = den = 0.0
    for b in range(2):
        for i in range(3):
            for j in range(4):
                logits = seg[b, :, i, j].tolist()
                cls = int(mask[b, i, j])
                log_prob = logits[cls] - math.log(sum(math.exp(v) for v in logits))
                weight = 0.4 if cls == 0 else 1.0
                num += -weight * log_prob
                den += weight
    seg_loss = num / den
    bce = [
        -(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-z))))
        for z, y in zip(exist_logits.flatten().tolist(), exist.flatten().tolist())
    ]
    exist_loss = sum(bce) / len(bce)
    assert out["seg_loss"].item() == pytest.approx(seg_loss, rel=1e-12)
    assert out["exist_loss"].item() == pytest.approx(exist_loss, rel=1e-12)
    assert out["loss"].item() == pytest.approx(seg_loss + 0.1 * exist_loss, rel=1e-12)


def test_loss_rejects_bad_inputs() -> None:
    loss = SCNNLoss()
    seg, exist_logits = torch.randn(2, 5, 3, 4), torch.randn(2, 4)
    mask, exist = torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="mask: expected shape"):
        loss(seg, exist_logits, mask[:, :2], exist)
    with pytest.raises(ValueError, match="mask: expected int64"):
        loss(seg, exist_logits, mask.to(torch.uint8), exist)
    with pytest.raises(ValueError, match="exist_logits: expected shape"):
        loss(seg, exist_logits[:, :3], mask, exist)
    with pytest.raises(ValueError, match="exist: expected shape"):
        loss(seg, exist_logits, mask, exist[:1])
    with pytest.raises(ValueError, match="bg_weight"):
        SCNNLoss(bg_weight=-1)
    with pytest.raises(ValueError, match="exist_weight"):
        SCNNLoss(exist_weight=float("nan"))


# --------------------------------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------------------------------


def test_poly_schedule_shape() -> None:
    fn = poly_lr_lambda(total_steps=100, warmup_steps=10, power=0.9)
    warmup = [fn(s) for s in range(10)]
    assert warmup == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert fn(10) == 1.0
    assert fn(55) == pytest.approx((1 - 45 / 90) ** 0.9)
    decay = [fn(s) for s in range(10, 100)]
    assert all(a > b for a, b in zip(decay, decay[1:]))  # strictly decreasing after warm-up
    assert decay[-1] == pytest.approx((1 / 90) ** 0.9) and decay[-1] > 0
    assert fn(100) == 0.0 and fn(1000) == 0.0
    assert poly_lr_lambda(5)(0) == 1.0  # no warm-up
    with pytest.raises(ValueError, match="step"):
        fn(-1)


def test_poly_schedule_drives_lambdalr_and_pickles() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    fn = poly_lr_lambda(total_steps=20, warmup_steps=4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert max(lrs) == pytest.approx(0.1) and lrs[-1] < lrs[5]
    assert pickle.loads(pickle.dumps(fn)) == fn
    restored = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([param], lr=0.1), poly_lr_lambda(20, 4))
    restored.load_state_dict(sched.state_dict())
    assert restored.last_epoch == 20


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"total_steps": 0, "warmup_steps": 0}, "total_steps"),
        ({"total_steps": 10, "warmup_steps": 10}, "warmup_steps"),
        ({"total_steps": 10, "warmup_steps": -1}, "warmup_steps"),
        ({"total_steps": 10, "warmup_steps": 1, "power": 0}, "power"),
    ],
)
def test_poly_schedule_validates_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        poly_lr_lambda(**kwargs)


def test_interpolation_is_x8_bilinear_of_the_stride8_logits() -> None:
    torch.manual_seed(8)
    model = build_model("resnet18", input_hw=(32, 64)).eval()
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        small = model.seg_head(model.message_passing(model.head(model.backbone(x))))
        seg, _ = model(x)
    assert small.shape[-2:] == (4, 8)
    torch.testing.assert_close(seg, F.interpolate(small, scale_factor=8, mode="bilinear", align_corners=False))
