"""SCNN message passing, fast vs reference, forward+backward, side by side in one process.

The workload is SCNN's stride-8 feature map of a 288x512 image: ``[B, 128, 36, 64]``, kernel width 9, SCNN's
initialisation. *reference* is the slice loop of the public ports (1-row 4-D slices, ``conv2d``, one ``torch.cat``
per direction, plain autograd); *fast* is :class:`mlflow_anf_lanedet.models.MessagePassing` (``conv1d`` on contiguous slices,
hand-written backward with one batched weight gradient). The two are timed alternately, so background load hits
both alike; the figure is the median, the minimum is printed too. Also prints the largest differences between the
two (outputs and gradients: absolute, and relative to the tensor's largest magnitude) and the arithmetic rate.

"floor" is what the same multiply-adds cost with no sequential dependency at all: each direction's convolutions
as one batched ``conv1d`` over every slice, x3 for forward, input gradient and weight gradient. No exact float32
implementation can beat it by much on a CPU; ``fast / floor`` says how close the sequential one gets.

    .venv/bin/python benchmarks/bench_message_passing.py [--quick] [--batch 4 8] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mlflow_anf_lanedet.models import MessagePassing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fwd_bwd(mp: MessagePassing, x: torch.Tensor, grad_y: torch.Tensor) -> list[torch.Tensor]:
    mp.zero_grad(set_to_none=True)
    xg = x.detach().requires_grad_(True)
    y = mp(xg)
    y.backward(grad_y)
    return [y.detach(), xg.grad, *(conv.weight.grad for conv in mp.convs())]


def _time(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def _floor_ms(batch: int, hw: tuple[int, int], device: torch.device, repeats: int) -> float:
    """Same conv work as one fwd+bwd, without the recurrence: 4 batched conv1d calls, x3."""
    h, w = hw
    weight = torch.randn(128, 128, 9, device=device) * 0.02
    rows = torch.randn((h - 1) * batch, 128, w, device=device)  # down/up: every row but the first
    cols = torch.randn((w - 1) * batch, 128, h, device=device)  # right/left

    def dense() -> None:
        for inp in (rows, rows, cols, cols):
            torch.nn.functional.conv1d(inp, weight, padding=4)

    dense()
    return 3 * min(_time(dense, device) for _ in range(repeats))


def bench(batch: int, repeats: int, device: torch.device, hw: tuple[int, int] = (36, 64)) -> dict[str, float]:
    torch.manual_seed(0)
    mp = MessagePassing(128, 9).to(device)
    x = torch.relu(torch.randn(batch, 128, *hw, device=device))
    grad_y = torch.randn_like(x)

    results = {}
    for impl in ("fast", "reference"):  # warm-up, and the outputs to compare
        mp.impl = impl
        results[impl] = _fwd_bwd(mp, x, grad_y)
    times: dict[str, list[float]] = {"fast": [], "reference": [], "fast_fwd": [], "reference_fwd": []}
    for _ in range(repeats):
        for impl in ("fast", "reference"):
            mp.impl = impl
            times[impl].append(_time(lambda: _fwd_bwd(mp, x, grad_y), device))
            with torch.no_grad():
                times[f"{impl}_fwd"].append(_time(lambda: mp(x), device))

    abs_diff = max((a - b).abs().max().item() for a, b in zip(results["fast"], results["reference"]))
    rel_diff = max(
        ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
        for a, b in zip(results["fast"], results["reference"])
    )
    # conv multiply-adds: per direction ~ every position gets one C x C x k product; x3 for fwd + both grads
    steps = 2 * (hw[0] - 1) * hw[1] + 2 * (hw[1] - 1) * hw[0]
    gflop = 2 * 3 * batch * steps * 128 * 128 * 9 / 1e9
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "floor_ms": _floor_ms(batch, hw, device, repeats),
        "fast_ms": med["fast"],
        "ref_ms": med["reference"],
        "fast_min_ms": min(times["fast"]),
        "ref_min_ms": min(times["reference"]),
        "fast_fwd_ms": med["fast_fwd"],
        "ref_fwd_ms": med["reference_fwd"],
        "abs_diff": abs_diff,
        "rel_diff": rel_diff,
        "gflops_fast": gflop / (med["fast"] / 1e3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 4 only, 3 repeats")
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches, repeats = ([4], 3) if args.quick else (args.batch, args.repeats)
    device = torch.device(args.device)

    print(f"SCNN message passing, [B, 128, 36, 64] (288x512 at stride 8), k=9, fwd+bwd, device={device}, "
          f"threads={torch.get_num_threads()}, median of {repeats} (min in brackets)")
    header = (f"{'B':>3} | {'reference ms':>18} | {'fast ms':>18} | {'ratio':>6} | {'fwd-only ratio':>14} | "
              f"{'fast GFLOP/s':>12} | {'floor ms':>8} | {'fast/floor':>10} | {'max |diff|':>10} | "
              f"{'max rel diff':>12}")
    print(header)
    print("-" * len(header))
    for batch in batches:
        r = bench(batch, repeats, device)
        print(
            f"{batch:>3} | {r['ref_ms']:>9.1f} ({r['ref_min_ms']:>6.1f})"
            f" | {r['fast_ms']:>9.1f} ({r['fast_min_ms']:>6.1f})"
            f" | {r['ref_ms'] / r['fast_ms']:>5.2f}x | {r['ref_fwd_ms'] / r['fast_fwd_ms']:>13.2f}x"
            f" | {r['gflops_fast']:>12.0f} | {r['floor_ms']:>8.1f} | {r['fast_ms'] / r['floor_ms']:>9.2f}x"
            f" | {r['abs_diff']:>10.2e} | {r['rel_diff']:>12.2e}"
        )


if __name__ == "__main__":
    main()
