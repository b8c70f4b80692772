"""GPU throughput and utilisation of SCNN-VGG16 at 288×800: 1 process (1 GPU) vs N processes (one GPU each).

Run it on a GPU machine (it cannot run on CPU-only hosts, except the ``--smoke`` plumbing check):

    python benchmarks/gpu_scnn_throughput.py                                  # DDP under mpirun: 1 GPU vs all GPUs
    python benchmarks/gpu_scnn_throughput.py --strategy horovod --gpus 3      # Horovod under horovodrun
    python benchmarks/gpu_scnn_throughput.py --precision 16-mixed --batch 12  # mixed precision, bigger batch
    python benchmarks/gpu_scnn_throughput.py --smoke                          # CPU plumbing check, tiny model

Needs a CUDA build of torch (``make setup TORCH_SPEC=...``); ``--strategy horovod`` needs Horovod built with NCCL
(``HOROVOD_GPU_OPERATIONS=NCCL scripts/install_horovod.sh``). Both launchers come with the venv (mpich, horovodrun).

What it measures, per configuration: the real training step (``LaneDetModule``: SCNN forward, loss, backward,
gradient allreduce, SGD update) on in-memory random batches with the same per-GPU batch (weak scaling, as the seed
trained), after ``--warmup`` untimed steps (cuDNN autotuning, allocator); then

- images/s over all GPUs, the speed-up over 1 GPU and the scaling efficiency (speed-up / N);
- mean GPU utilisation of each used GPU, sampled by ``nvidia-smi`` every 200 ms during the timed steps only;
- peak memory allocated by torch on rank 0.

For comparison, the seed project trained with Horovod on 3 GPUs: about 94 % scaling efficiency, GPUs > 96 % busy.
Data loading is not part of the figure; a utilisation far below that in real training points at the input pipeline.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from scaling_worker import launch


@dataclass
class GpuSampler:
    """Samples ``nvidia-smi`` (utilisation %, memory MiB per GPU) in the background, with wall-clock times."""

    interval_ms: int = 200
    samples: list[tuple[float, int, float, float]] = field(default_factory=list)  # (time, gpu, util %, MiB)
    _proc: subprocess.Popen[str] | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi") is None:
            return self  # no NVIDIA driver tools: utilisation is reported as n/a
        self._proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
             f"-lms={self.interval_ms}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                self.samples.append((time.time(), int(parts[0]), float(parts[1]), float(parts[2])))
            except (IndexError, ValueError):
                continue  # "[N/A]" or a partial line

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def mean_utilisation(self, start: float, end: float, gpus: int) -> list[float | None]:
        """Mean utilisation of GPUs 0..gpus-1 over [start, end] (None where no sample fell in the window)."""
        out: list[float | None] = []
        for gpu in range(gpus):
            values = [u for t, g, u, _ in self.samples if g == gpu and start <= t <= end]
            out.append(sum(values) / len(values) if values else None)
        return out


def run(
    strategy: str, processes: int, worker_args: list[str], timeout: float, threads: int
) -> tuple[dict[str, Any], list[float | None]]:
    with GpuSampler() as sampler:
        result = launch(strategy, processes, worker_args, timeout, threads=threads)
    return result, sampler.mean_utilisation(result["start_wall"], result["end_wall"], processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=["ddp", "horovod"], default="ddp")
    parser.add_argument("--gpus", type=int, default=None, help="processes/GPUs of the multi-GPU run (default: all)")
    parser.add_argument("--backbone", default="vgg16_bn", choices=["vgg16_bn", "resnet18", "resnet34"])
    parser.add_argument("--input-size", default="288x800", help="HEIGHTxWIDTH (the seed's 288x800)")
    parser.add_argument("--batch", type=int, default=8, help="per-GPU batch size")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "16-mixed", "bf16-mixed"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per launch")
    parser.add_argument("--smoke", action="store_true",
                        help="check the plumbing without GPUs: CPU, resnet18 at 64x128, 2 processes, 3 steps")
    args = parser.parse_args()

    threads = 4  # per process on GPU runs: the host side (collation, pinned copies, optimizer launch)
    if args.smoke:
        gpus, accelerator, threads = args.gpus or 2, "cpu", 1
        args.backbone, args.input_size, args.batch, args.steps, args.warmup = "resnet18", "64x128", 2, 3, 1
    else:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU visible to torch: run this on a GPU machine with a CUDA build of torch "
                             "(or --smoke to check the plumbing on CPU)")
        available = torch.cuda.device_count()
        gpus, accelerator = args.gpus or available, "gpu"
        if not 1 <= gpus <= available:
            raise SystemExit(f"--gpus: {gpus} requested, {available} visible")

    worker_args = ["--accelerator", accelerator, "--precision", args.precision, "--backbone", args.backbone,
                   "--input-size", args.input_size, "--batch", str(args.batch), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--threads", str(threads)]
    print(f"SCNN-{args.backbone} at {args.input_size}, batch {args.batch} per GPU, {args.precision}, "
          f"{args.steps} timed steps after {args.warmup}, strategy {args.strategy}")
    print(f"{'processes':>9} {'images/s':>10} {'speed-up':>9} {'efficiency':>11} {'peak GiB':>9}  GPU utilisation %")
    base = None
    for processes in sorted({1, gpus}):
        result, util = run(args.strategy, processes, worker_args, args.timeout, threads)
        rate = result["images_per_s"]
        base = base or rate
        shown = " ".join("n/a" if u is None else f"{u:.0f}" for u in util)
        print(f"{processes:>9} {rate:>10.1f} {rate / base:>8.2f}x {rate / base / processes:>10.0%} "
              f"{result['max_memory_gib']:>9.2f}  {shown}")
    print("seed reference: Horovod, 3 GPUs: ~94% scaling efficiency, GPUs > 96% busy")


if __name__ == "__main__":
    main()
