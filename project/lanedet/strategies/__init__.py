"""Distributed strategies: the ``strategy`` param (auto | ddp | horovod) mapped to a Lightning strategy.

- ``auto``: single process, or DDP over MPI when started by ``mpirun`` with several processes.
- ``ddp``: Lightning DDP; under ``mpirun`` (the MPI operator's launcher) with Lightning's ``MPIEnvironment``.
- ``horovod``: the Horovod strategy in :mod:`lanedet.strategies.horovod` (Lightning 2 dropped its own).
"""

from __future__ import annotations

from typing import Any

from lanedet.distributed import launched_by_mpi


def build_strategy(name: str) -> Any:
    if name == "horovod":
        from lanedet.strategies.horovod import HorovodStrategy

        return HorovodStrategy()
    if name not in ("auto", "ddp"):
        raise ValueError(f"strategy: unknown strategy {name!r} (expected auto, ddp or horovod)")
    if launched_by_mpi():
        import torch
        from lightning_fabric.plugins.environments import MPIEnvironment
        from pytorch_lightning.strategies import DDPStrategy

        return DDPStrategy(
            cluster_environment=MPIEnvironment(),
            process_group_backend="nccl" if torch.cuda.is_available() else "gloo",
        )
    return "ddp" if name == "ddp" else "auto"
