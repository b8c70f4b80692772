"""Lightning DDP with ranks from MPI, for processes started by ``mpirun -n N`` (the MPI operator's launcher)."""

from __future__ import annotations

from typing import Any

from lightning_fabric.plugins.environments import MPIEnvironment
from pytorch_lightning.strategies import DDPStrategy


class MPIDDPStrategy(DDPStrategy):
    """DDP over ``MPIEnvironment``: rank, world size, local rank and node come from MPI; Gloo on CPU, NCCL on GPU.

    Lightning's DDP derives the sampler's replica count and each rank's device from ``devices × num_nodes``, and
    MPIEnvironment (unlike the Slurm and torchrun environments) does not check them against the world mpirun started.
    This class does, when the Trainer is built, so a mismatch is a clear error instead of a wrong data split.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cluster_environment", MPIEnvironment())
        super().__init__(**kwargs)

    def set_world_ranks(self) -> None:
        super().set_world_ranks()
        assert self.cluster_environment is not None
        expected = self.cluster_environment.world_size()
        if self.num_nodes * self.num_processes != expected:
            raise ValueError(
                f"devices: Trainer(devices={self.num_processes}, num_nodes={self.num_nodes}) makes "
                f"{self.num_nodes * self.num_processes} processes but mpirun started {expected}; pass the processes "
                "per node as devices and the node count as num_nodes "
                "(mlflow_anf_lanedet.strategies.trainer_distribution does)"
            )
