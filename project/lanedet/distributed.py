"""Process-rank discovery that works before any process group exists (torchrun, mpirun, horovodrun, srun)."""

from __future__ import annotations

import os
from collections.abc import Mapping

# Checked in order; the first present wins. MPI launchers (Open MPI, MPICH/Hydra, Horovod) set their own variables.
_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "HOROVOD_RANK", "SLURM_PROCID")
_SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "HOROVOD_SIZE", "SLURM_NTASKS")


def _first_int(env: Mapping[str, str], names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError as exc:
                raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc
    return default


def global_rank(env: Mapping[str, str] | None = None) -> int:
    return _first_int(os.environ if env is None else env, _RANK_VARS, 0)


def world_size(env: Mapping[str, str] | None = None) -> int:
    return _first_int(os.environ if env is None else env, _SIZE_VARS, 1)


def launched_by_mpi(env: Mapping[str, str] | None = None) -> bool:
    """True when started by mpirun/mpiexec (Open MPI or MPICH/Hydra) with more than one process."""
    env = os.environ if env is None else env
    size = _first_int(env, ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"), 1)
    return size > 1
