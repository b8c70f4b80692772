"""Distributed strategies: the ``strategy`` param (auto | ddp | horovod) mapped to a Lightning strategy.

- ``auto``: single process, or DDP when a launcher (mpirun, torchrun) started several processes.
- ``ddp``: Lightning DDP; under ``mpirun`` (the MPI operator's launcher) with Lightning's ``MPIEnvironment``.
- ``horovod``: the Horovod strategy in :mod:`mlflow_anf_lanedet.strategies.horovod` (Lightning 2 dropped its own).

:func:`trainer_distribution` gives the ``strategy``/``devices``/``num_nodes`` Trainer arguments together, because
under a launcher they must agree with the world it started (Lightning's DDP derives the sampler's replica count and
each rank's device from ``devices × num_nodes``; MPIEnvironment, unlike Slurm's or torchrun's, does not check that).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow_anf_lanedet.distributed import ProcessLayout, launched_by_horovodrun, launched_by_mpi, process_layout


def build_strategy(name: str, *, scale_lr: bool = False, env: Mapping[str, str] | None = None) -> Any:
    """A Lightning strategy (object or registered name) for ``name``; see the module docstring."""
    if name == "horovod":
        from mlflow_anf_lanedet.strategies.horovod import HorovodStrategy

        return HorovodStrategy(scale_lr=scale_lr)
    if name not in ("auto", "ddp"):
        raise ValueError(f"strategy: unknown strategy {name!r} (expected auto, ddp or horovod)")
    if scale_lr:
        raise ValueError("scale_lr: only strategy=horovod scales learning rates; scale lr yourself for ddp")
    if launched_by_horovodrun(env) and not launched_by_mpi(env):
        raise ValueError(
            f"strategy: {name} cannot run under horovodrun (it starts Horovod's Gloo workers, not an MPI or torchrun "
            "world); use strategy=horovod, or launch DDP with mpirun -n N"
        )
    if launched_by_mpi(env):
        from mlflow_anf_lanedet.strategies.mpi_ddp import MPIDDPStrategy

        return MPIDDPStrategy()
    layout = process_layout(env)
    return "ddp" if name == "ddp" or layout.world_size > 1 else "auto"


def trainer_distribution(
    name: str, devices: str | int = "auto", *, scale_lr: bool = False, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``{"strategy", "devices", "num_nodes"}`` for ``pl.Trainer(**...)``, consistent with how the job was launched.

    ``devices`` is the user's value (``"auto"``, ``"-1"`` or a count, as in ``TrainConfig.devices``). Under a launcher
    it must be ``auto`` or equal to the launcher's processes per node: each process drives one device.
    """
    layout = process_layout(env)
    wanted = _parse_devices(devices)
    if name == "horovod":
        # One device per process; the number of processes comes from horovodrun/mpirun, not from Lightning.
        _check_devices(wanted, 1, "with strategy=horovod each process drives one device; start more processes "
                                  "with horovodrun -np N")
        placement: dict[str, Any] = {"devices": 1, "num_nodes": 1}
    elif layout.world_size > 1:
        _check_devices(wanted, layout.local_world_size, _launcher_hint(layout))
        placement = {"devices": layout.local_world_size, "num_nodes": layout.num_nodes}
    else:
        placement = {"devices": wanted, "num_nodes": 1}
    return {"strategy": build_strategy(name, scale_lr=scale_lr, env=env), **placement}


def _parse_devices(devices: str | int) -> str | int:
    if isinstance(devices, int):
        return devices
    text = str(devices).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if text != "auto":
        raise ValueError(f"devices: expected auto, -1 or a number of devices, got {devices!r}")
    return text


def _check_devices(wanted: str | int, required: int, why: str) -> None:
    if wanted not in ("auto", -1, required):
        raise ValueError(f"devices: {wanted} does not fit this launch ({why}); use devices=auto")


def _launcher_hint(layout: ProcessLayout) -> str:
    return (
        f"the launcher started {layout.local_world_size} processes per node on {layout.num_nodes} node(s), "
        "one device each"
    )
