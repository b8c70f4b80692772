"""Shared by ``bench_scaling.py`` (CPU) and ``gpu_scnn_throughput.py`` (GPU): one rank of a timed SCNN training run,
and the launcher call that starts N of them.

A worker trains ``LaneDetModule`` (the real training step: SCNN forward, SCNN loss, backward, gradient allreduce,
SGD update) on in-memory random batches, so the figure is training throughput and not JPEG decoding. Each process
keeps the same batch (weak scaling, as in data-parallel training on GPUs). The first ``--warmup`` steps are not timed;
rank 0 prints one ``BENCH_RESULT {json}`` line with the global images/s, the CPU seconds all ranks spent per image,
and the wall-clock window it timed.

    mpirun -n 2 python benchmarks/scaling_worker.py --strategy ddp ...
    horovodrun -np 2 --gloo python benchmarks/scaling_worker.py --strategy horovod ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
RESULT_TAG = "BENCH_RESULT "


def launcher_command(strategy: str, processes: int) -> list[str]:
    """``mpirun -n N`` for DDP (MPI world), ``horovodrun -np N`` for Horovod (``--gloo`` unless MPI-built)."""
    if strategy == "ddp":
        return [str(BIN / "mpirun"), "-n", str(processes)]
    if strategy == "horovod":
        return [str(BIN / "horovodrun"), "--gloo", "-np", str(processes)]
    raise ValueError(f"strategy: expected ddp or horovod, got {strategy!r}")


def launch(
    strategy: str, processes: int, worker_args: list[str], timeout: float, threads: int = 1,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start ``processes`` workers with the strategy's launcher; return rank 0's result."""
    cmd = [*launcher_command(strategy, processes), sys.executable, str(Path(__file__).resolve()),
           "--strategy", strategy, *worker_args]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.update(extra_env or {})
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if RESULT_TAG in line:
            return json.loads(line.split(RESULT_TAG, 1)[1])
    raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one rank of a timed SCNN training run (see module docstring)")
    parser.add_argument("--strategy", choices=["ddp", "horovod"], required=True)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "16-mixed", "bf16-mixed"])
    parser.add_argument("--backbone", default="resnet18",
                        choices=["resnet18", "resnet18_lite", "resnet34", "vgg16_bn"])
    parser.add_argument("--input-size", default="128x256", help="HEIGHTxWIDTH")
    parser.add_argument("--batch", type=int, default=4, help="per-process batch size")
    parser.add_argument("--steps", type=int, default=12, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, cudnn autotune)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, Dataset

    from mlflow_anf_lanedet.config import parse_hw
    from mlflow_anf_lanedet.distributed import global_rank, world_size
    from mlflow_anf_lanedet.strategies import trainer_distribution
    from mlflow_anf_lanedet.train import LaneDetModule

    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    h, w = parse_hw(args.input_size)
    world = world_size()

    class RandomBatches(Dataset):
        """Random images with SCNN-shaped targets, made once in memory."""

        def __init__(self, n: int) -> None:
            g = torch.Generator().manual_seed(0)
            self.images = torch.randn(n, 3, h, w, generator=g)
            self.masks = torch.randint(0, 5, (n, h, w), generator=g)
            self.exist = (torch.rand(n, 4, generator=g) > 0.3).float()

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"image": self.images[i], "mask": self.masks[i], "exist": self.exist[i], "index": i}

    class StepTimer(pl.Callback):
        """Times the steps after the warm-up, from a barrier (all ranks start together) to the last step's end."""

        def __init__(self, warmup: int) -> None:
            self.warmup, self.images = warmup, 0
            self.start = self.end = self.start_wall = self.end_wall = 0.0
            self.cpu_start = self.cpu_end = self.cpu_total = 0.0

        def _sync(self, trainer: pl.Trainer) -> None:
            if torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()

        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == self.warmup:
                self._sync(trainer)
                trainer.strategy.barrier()
                self.start, self.start_wall, self.cpu_start = time.perf_counter(), time.time(), time.process_time()

        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int) -> None:
            if i >= self.warmup:
                self._sync(trainer)
                self.images += len(batch["image"]) * trainer.world_size
                self.end, self.end_wall, self.cpu_end = time.perf_counter(), time.time(), time.process_time()

        def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
            # CPU seconds of all ranks over the timed steps: unlike wall time, hardly affected by other load.
            mine = torch.tensor(self.cpu_end - self.cpu_start, dtype=torch.float64, device=pl_module.device)
            self.cpu_total = float(trainer.strategy.reduce(mine, reduce_op="sum"))

    # Under a launcher each process drives one device ("auto" = the launcher's layout); alone, exactly one device.
    distribution = trainer_distribution(args.strategy, "auto" if world > 1 else 1)
    data = RandomBatches((args.warmup + args.steps) * args.batch * world)
    torch.manual_seed(0)
    module = LaneDetModule(backbone=args.backbone, input_hw=(h, w), lr=0.01, warmup_epochs=0)
    timer = StepTimer(args.warmup)
    trainer = pl.Trainer(
        accelerator=args.accelerator, precision=args.precision, max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, callbacks=[timer], **distribution,
    )
    loader = DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True,
                        pin_memory=args.accelerator == "gpu")
    trainer.fit(module, loader)
    if global_rank() == 0:
        elapsed = timer.end - timer.start
        result = {
            "world": trainer.world_size, "images": timer.images, "seconds": elapsed,
            "images_per_s": timer.images / elapsed, "start_wall": timer.start_wall, "end_wall": timer.end_wall,
            "cpu_s_per_image": timer.cpu_total / timer.images,
            "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0,
        }
        print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
