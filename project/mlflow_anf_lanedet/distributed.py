"""Process-rank discovery that works before any process group exists (torchrun, mpirun, horovodrun, srun), and the
fail-fast guard that turns one rank's exception into the whole job's failure instead of a hang.

Nothing here imports torch, Lightning or horovod: it is read by the CLI before any of them is set up.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
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


def describe_process(env: Mapping[str, str] | None = None) -> str:
    """``rank R/N on host H (local rank L/M)``: every rank logs it at start, so a job's log shows where each ran."""
    import socket

    layout = process_layout(env)
    return (f"rank {layout.global_rank}/{layout.world_size} on host {socket.gethostname()} "
            f"(local rank {layout.local_rank}/{layout.local_world_size})")


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


# ------------------------------------------------------------------------------------------------ stopping
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class TrainingStopped(SystemExit):
    """The process was told to stop (SIGTERM from Kubernetes or ``kill``, Ctrl-C, a hang-up, or its parent died).

    A ``SystemExit`` whose code is 128 + the signal's number (143 for SIGTERM), as a shell reports a process ended
    by that signal; :func:`fail_fast` passes that code on. The owner of the MLflow run ends it KILLED.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class StopSignals:
    """Turns the first stop signal into :class:`TrainingStopped` raised in the main thread; see :func:`stop_signals`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = True

    def handle(self, signum: int, frame: object) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self.armed:
            raise TrainingStopped(signum)

    def disarm(self) -> int | None:
        """From now on a stop signal is only recorded (the run is being closed). Returns the signal seen so far."""
        self.armed = False
        return self.signum


def _watch_parent(stop: StopSignals, signum: int, interval_s: float) -> Callable[[], None]:
    """Send *signum* to this process when its parent goes away; returns the function that ends the watch.

    Linux: ``prctl(PR_SET_PDEATHSIG)`` makes the kernel send it the moment the parent exits (even by SIGKILL);
    everywhere, a thread compares ``getppid()`` with the parent seen at start (an orphan is re-parented) as the
    fallback, and also covers a parent that died before the ``prctl``.
    """
    import threading

    parent = os.getppid()
    _set_parent_death_signal(signum)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if os.getppid() != parent:
                if stop.signum is None:
                    os.kill(os.getpid(), signum)  # handled in the main thread, like the kernel's signal
                return
            done.wait(interval_s)

    threading.Thread(target=watch, name="lanedet-parent-watch", daemon=True).start()

    def end() -> None:
        done.set()
        _set_parent_death_signal(0)

    return end


def _set_parent_death_signal(signum: int) -> None:
    """Linux ``prctl(PR_SET_PDEATHSIG, signum)`` (0 clears it); a no-op where there is no such call."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: the polling thread still watches
        pass


@contextmanager
def stop_signals(watch_parent: bool = False, parent_poll_s: float = 1.0) -> Iterator[StopSignals]:
    """Within the block, SIGTERM/SIGINT/SIGHUP raise :class:`TrainingStopped` in the main thread (once; later ones
    are only recorded), and with *watch_parent* the death of the parent process counts as a SIGTERM.

    An exception raised after a stop signal (e.g. a data-loader worker killed by the same signal) also leaves the
    block as :class:`TrainingStopped`, so the exit code always says the process was stopped. The previous handlers
    are restored on exit. Outside the main thread, signals cannot be handled: the block only records nothing.
    """
    import signal
    import threading

    stop = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signums = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
    previous = {s: signal.signal(s, stop.handle) for s in signums}
    end_watch = _watch_parent(stop, signal.SIGTERM, parent_poll_s) if watch_parent else None
    try:
        yield stop
    except TrainingStopped:
        raise
    except BaseException as exc:
        if stop.signum is not None:
            raise TrainingStopped(stop.signum) from exc
        raise
    finally:
        if end_watch is not None:
            end_watch()
        for s, handler in previous.items():
            signal.signal(s, handler)
