"""SCNN training-step throughput at 288x512: fast message passing vs the reference slice loop, side by side.

For SCNN-VGG16-BN, SCNN-ResNet-18 and the CPU demo's SCNN-ResNet-18-lite one training step is forward,
:class:`SCNNLoss`, backward and an SGD step (momentum 0.9, weight decay 1e-4, as SCNN trains) on random
images/targets. The baseline is the *same model* (same
weights) with ``model.message_passing.impl = "reference"``. Steps of the two alternate, so background load hits
both alike; figures are medians. Also prints each model's forward GMAC per image and the share of message passing,
which bounds what any message-passing speed-up can do for a whole step.

    .venv/bin/python benchmarks/bench_train_step.py [--quick] [--batch 4] [--steps 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mlflow_anf_lanedet.models import SCNNLoss, build_model

INPUT_HW = (288, 512)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gmac(fn) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2e9


def bench(backbone: str, batch: int, steps: int, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(backbone, input_hw=INPUT_HW).to(device).train()
    criterion = SCNNLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    images = torch.randn(batch, 3, *INPUT_HW, device=device)
    masks = torch.randint(0, 5, (batch, *INPUT_HW), device=device)
    exist = torch.randint(0, 2, (batch, 4), device=device).float()

    def step() -> float:
        _sync(device)
        start = time.perf_counter()
        seg, exist_logits = model(images)
        loss = criterion(seg, exist_logits, masks, exist)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"fast": [], "reference": []}
    for impl in times:  # warm-up
        model.message_passing.impl = impl
        step()
    for _ in range(steps):
        for impl in times:
            model.message_passing.impl = impl
            times[impl].append(step())

    model.eval()
    x1 = images[:1]
    total = _gmac(lambda: model(x1))
    feat = torch.relu(torch.randn(1, 128, INPUT_HW[0] // 8, INPUT_HW[1] // 8, device=device))
    mp_share = _gmac(lambda: model.message_passing(feat)) / total
    return {
        "fast_s": statistics.median(times["fast"]),
        "ref_s": statistics.median(times["reference"]),
        "gmac": total,
        "mp_share": mp_share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1, 1 timed step per variant")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--backbones", nargs="+", default=["vgg16_bn", "resnet18", "resnet18_lite"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, steps = (1, 1) if args.quick else (args.batch, args.steps)
    device = torch.device(args.device)

    print(f"SCNN train step at {INPUT_HW[0]}x{INPUT_HW[1]}, batch {batch}, device={device}, "
          f"threads={torch.get_num_threads()}, median of {steps} steps; "
          "baseline = same model, reference message passing")
    header = (f"{'model':<18} | {'GMAC/img fwd':>12} | {'MP share':>8} | {'reference img/s':>15} | "
              f"{'fast img/s':>10} | {'ref s/step':>10} | {'fast s/step':>11} | {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for backbone in args.backbones:
        r = bench(backbone, batch, steps, device)
        print(
            f"{'SCNN-' + backbone:<18} | {r['gmac']:>12.1f} | {r['mp_share']:>7.1%} | {batch / r['ref_s']:>15.2f} | "
            f"{batch / r['fast_s']:>10.2f} | {r['ref_s']:>10.2f} | {r['fast_s']:>11.2f}"
            f" | {r['ref_s'] / r['fast_s']:>5.2f}x"
        )


if __name__ == "__main__":
    main()
