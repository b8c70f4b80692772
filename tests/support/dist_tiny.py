"""A tiny BN-free model and the script that `tests/test_distributed.py` starts under ``mpirun``/``horovodrun``.

Why a tiny model: equivalence of N×b with 1×(N·b) holds exactly only when the loss is a plain mean over samples and no
layer mixes samples of a batch. SCNN has BatchNorm (batch statistics are per process unless synchronised, and Sync-BN
is CUDA-only in torch and Horovod) and a class-weighted cross-entropy (normalised by the batch's weight sum, not by its
size). Neither is what a strategy is responsible for. What a strategy *is* responsible for — identical initial
weights, disjoint data shards, averaged gradients (also with accumulation), identical optimizer state, global logged
values, rank-0 checkpoints, failure propagation — is exercised in full by this model. It runs in float64 so the
tolerance can be tight (floating-point summation order is the only difference).

    python tests/dist_tiny.py --strategy ddp --out DIR          # under: mpirun -n 2
    python tests/dist_tiny.py --strategy horovod --out DIR      # under: horovodrun -np 2 --gloo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

N_SAMPLES = 32
SEED = 1234
EPOCHS = 2
PHASES = ("equivalence", "accumulate", "resume", "fail")


class Samples(Dataset):
    """Fixed random 3×6×6 images with 3-class labels; items carry their index so shards can be checked."""

    def __init__(self, n: int = N_SAMPLES, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 6, 6, generator=g, dtype=torch.float64)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "y": self.y[i], "index": i}


def lr_lambda(step: int) -> float:
    return 1.0 / (1.0 + 0.2 * step)


class TinyNet(pl.LightningModule):
    def __init__(self, momentum: float = 0.9, fail_rank: int | None = None, fail_step: int = 0) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64)
        self.head = torch.nn.Linear(4 * 6 * 6, 3, dtype=torch.float64)
        self.momentum = momentum
        self.fail_rank = fail_rank
        self.fail_step = fail_step
        self.seen: list[int] = []
        self.collectives: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.global_rank == self.fail_rank and self.global_step >= self.fail_step:
            raise RuntimeError(f"injected failure on rank {self.global_rank} at step {self.global_step}")
        loss = torch.nn.functional.cross_entropy(self(batch["x"]), batch["y"])
        n = len(batch["y"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("samples", float(n), on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True, batch_size=n)
        self.seen.extend(int(i) for i in batch["index"])
        return loss

    def on_train_epoch_end(self) -> None:
        if self.collectives:
            return
        strategy = self.trainer.strategy
        rank = self.global_rank
        mine = torch.tensor([rank + 1.0], dtype=torch.float64)
        self.collectives = {
            "world_size": self.trainer.world_size,
            "sum": strategy.reduce(mine.clone(), reduce_op="sum").tolist(),
            "mean": strategy.reduce(mine.clone(), reduce_op="mean").tolist(),
            "max": strategy.reduce(mine.clone(), reduce_op="max").tolist(),
            "all_gather": strategy.all_gather(torch.tensor([rank, 10 * rank])).tolist(),
            "broadcast": strategy.broadcast({"from": rank}, src=0),
            "any_rank0": strategy.reduce_boolean_decision(rank == 0, all=False),
            "all_rank0": strategy.reduce_boolean_decision(rank == 0, all=True),
        }

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.2, momentum=self.momentum, weight_decay=1e-2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def build_model(rank: int, perturb: str = "none", **kwargs: Any) -> TinyNet:
    """The same model on every rank, unless ``perturb`` makes rank r>0 start from other weights (``weights``) and
    also another momentum (``weights+optimizer``): the strategy's broadcast from rank 0 must overwrite them."""
    torch.manual_seed(SEED + (1000 * rank if perturb != "none" else 0))
    momentum = 0.5 if rank > 0 and perturb == "weights+optimizer" else 0.9
    return TinyNet(momentum=momentum, **kwargs)


def make_trainer(distribution: dict[str, Any], epochs: int, accumulate: int = 1) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **distribution,
    )


def run_reference(batch: int, epochs: int = EPOCHS) -> dict[str, Any]:
    """One process, global batch, no launcher: what every distributed phase must reproduce.

    Under a distributed strategy Lightning replaces the training sampler with a shuffling ``DistributedSampler``
    (seed ``PL_GLOBAL_SEED``, unset: 0; reshuffled per epoch). With ``num_replicas=1`` the same sampler yields the
    same permutation, and rank r of N takes every N-th index of it, so step s of the N processes covers exactly the
    samples of step s here.
    """
    torch.set_num_threads(1)
    data = Samples()
    model = build_model(0)
    trainer = make_trainer({"strategy": "auto", "devices": 1}, epochs)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    trainer.fit(model, DataLoader(data, batch_size=batch, sampler=sampler))
    return _result(model, trainer)


def _result(model: TinyNet, trainer: pl.Trainer) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "seen": sorted(model.seen),
        "collectives": model.collectives,
        "lr": trainer.optimizers[0].param_groups[0]["lr"],
        "momentum": trainer.optimizers[0].param_groups[0]["momentum"],
    }


def main(argv: list[str] | None = None) -> None:
    from mlflow_anf_lanedet.distributed import fail_fast, global_rank
    from mlflow_anf_lanedet.strategies import trainer_distribution

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=["ddp", "horovod"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=4, help="per-process batch size")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--perturb", choices=["none", "weights", "weights+optimizer"], default="none",
                        help="what rank>0 starts with differently (see build_model)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rank = global_rank()
    data = Samples()
    args.out.mkdir(parents=True, exist_ok=True)

    def save(phase: str, model: TinyNet, trainer: pl.Trainer) -> None:
        torch.save(_result(model, trainer), args.out / f"{phase}.rank{rank}.pt")

    with fail_fast():
        for phase in args.phases.split(","):
            if phase == "equivalence":
                model = build_model(rank, args.perturb)
                trainer = make_trainer(trainer_distribution(args.strategy), EPOCHS)
                trainer.fit(model, DataLoader(data, batch_size=args.batch, shuffle=True))
                save(phase, model, trainer)
            elif phase == "accumulate":  # half the batch, two backward passes per step
                model = build_model(rank, args.perturb)
                trainer = make_trainer(trainer_distribution(args.strategy), EPOCHS, accumulate=2)
                trainer.fit(model, DataLoader(data, batch_size=args.batch // 2, shuffle=True))
                save(phase, model, trainer)
            elif phase == "resume":  # one epoch, checkpoint (rank 0 writes), fresh model resumes for the second
                model = build_model(rank, args.perturb)
                trainer = make_trainer(trainer_distribution(args.strategy), 1)
                trainer.fit(model, DataLoader(data, batch_size=args.batch, shuffle=True))
                trainer.save_checkpoint(args.out / f"resume.rank{rank}.ckpt")
                # Horovod reads the checkpoint on rank 0 only and broadcasts it: other ranks get a path that does
                # not exist. DDP reads it on every rank.
                ckpt_rank = rank if args.strategy == "horovod" else 0
                model = build_model(rank, args.perturb)
                trainer = make_trainer(trainer_distribution(args.strategy), EPOCHS)
                trainer.fit(
                    model,
                    DataLoader(data, batch_size=args.batch, shuffle=True),
                    ckpt_path=str(args.out / f"resume.rank{ckpt_rank}.ckpt"),
                )
                save(phase, model, trainer)
            elif phase == "fail":  # rank 1 raises at its third step while rank 0 waits in the gradient allreduce
                (args.out / f"fail.started.rank{rank}").write_text("")
                model = build_model(rank, args.perturb, fail_rank=1, fail_step=2)
                trainer = make_trainer(trainer_distribution(args.strategy), EPOCHS)
                trainer.fit(model, DataLoader(data, batch_size=args.batch, shuffle=True))
                (args.out / f"fail.survived.rank{rank}").write_text("")
            else:
                raise SystemExit(f"--phases: unknown phase {phase!r} (expected {', '.join(PHASES)})")
            print(json.dumps({"rank": rank, "phase": phase, "done": True}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
