"""Process-rank discovery that works before any process group exists (torchrun, mpirun, horovodrun, srun), and the
fail-fast guard that turns one rank's exception into the whole job's failure instead of a hang.

Nothing here imports torch, Lightning or horovod: it is read by the CLI before any of them is set up.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Checked in order; the first present wins. MPI launchers (Open MPI, MPICH/Hydra, Horovod) set their own variables.
_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "HOROVOD_RANK", "SLURM_PROCID")
_SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "HOROVOD_SIZE", "SLURM_NTASKS")
# Per-node numbers, same launcher order: torchrun, Open MPI, MPICH/Hydra, horovodrun, Slurm.
_LOCAL_RANK_VARS = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "HOROVOD_LOCAL_RANK", "SLURM_LOCALID")
_LOCAL_SIZE_VARS = ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "HOROVOD_LOCAL_SIZE")
_MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


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
    size = _first_int(env, _MPI_SIZE_VARS, 1)
    return size > 1


def launched_by_horovodrun(env: Mapping[str, str] | None = None) -> bool:
    """True when started by ``horovodrun`` (Gloo controller: it sets the rendezvous address for every rank)."""
    env = os.environ if env is None else env
    return bool(env.get("HOROVOD_GLOO_RENDEZVOUS_ADDR")) or bool(env.get("HOROVOD_RANK"))


class ProcessLayout(BaseModel):
    """Where this process sits in the launcher's world: what Lightning's ``devices``/``num_nodes`` must agree with."""

    model_config = ConfigDict(frozen=True)

    world_size: int = Field(ge=1)
    global_rank: int = Field(ge=0)
    local_world_size: int = Field(ge=1, description="processes on this node")
    local_rank: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ProcessLayout:
        if self.global_rank >= self.world_size:
            raise ValueError(f"global rank {self.global_rank} is not below the world size {self.world_size}")
        if self.local_rank >= self.local_world_size:
            raise ValueError(f"local rank {self.local_rank} is not below the local size {self.local_world_size}")
        if self.world_size % self.local_world_size:
            raise ValueError(
                f"{self.world_size} processes do not split evenly into nodes of {self.local_world_size}: "
                "start the same number of processes on every node"
            )
        return self

    @property
    def num_nodes(self) -> int:
        return self.world_size // self.local_world_size

    @property
    def node_rank(self) -> int:
        return self.global_rank // self.local_world_size


def process_layout(env: Mapping[str, str] | None = None) -> ProcessLayout:
    """The launcher's world as seen from the environment. A plain ``python`` start is a world of one.

    When a launcher gives no per-node size (e.g. Slurm), every process is assumed to be on its own node.
    """
    env = os.environ if env is None else env
    size = world_size(env)
    return ProcessLayout(
        world_size=size,
        global_rank=global_rank(env),
        local_world_size=_first_int(env, _LOCAL_SIZE_VARS, 1),
        local_rank=_first_int(env, _LOCAL_RANK_VARS, 0),
    )


# ------------------------------------------------------------------------------------------------ failure handling
def abort_world(exit_code: int = 1) -> None:
    """End this process *now* so that the launcher tears the whole job down, without waiting on peers.

    A rank that merely raises would run its exit handlers (``MPI_Finalize``, Horovod shutdown, process-group
    destruction), which can block forever on peers that are themselves blocked in a collective waiting for this
    rank. ``MPI_Abort`` (when MPI is up) makes mpirun kill every rank; otherwise ``os._exit`` skips the handlers and
    the launcher (mpirun, horovodrun, torchrun, the MPI operator) sees a failed rank and stops the others.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        try:
            if mpi.Is_initialized() and not mpi.Is_finalized():
                mpi.COMM_WORLD.Abort(exit_code)
        except Exception:  # noqa: BLE001 - aborting must not raise; fall through to _exit
            pass
    os._exit(exit_code)


@contextmanager
def fail_fast(env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Run a block so that an exception on any rank of a multi-process job fails the job promptly.

    In a world of one process the exception propagates unchanged. With several processes the failing rank prints
    ``[rank R/N] <error>`` and its traceback to stderr and aborts (:func:`abort_world`). Use it at process
    boundaries (the CLI), not inside library code.
    """
    layout_env = os.environ if env is None else env
    try:
        yield
    except BaseException as exc:
        size = world_size(layout_env)
        if size <= 1 or isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        rank = global_rank(layout_env)
        print(f"[rank {rank}/{size}] training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        abort_world(exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1)
