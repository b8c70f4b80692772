"""A Horovod strategy for PyTorch Lightning 2 (Lightning dropped its own after 1.x).

One process per device, started by ``horovodrun -np N`` (Gloo) or by ``mpirun`` with an MPI-built Horovod. What it does
over a single-device run, and why:

- ``hvd.init()``; rank, size, local rank and node rank come from Horovod (:class:`HorovodEnvironment`).
- Each process pins one device: ``cuda:<local rank>`` on GPU machines, the CPU otherwise.
- Parameters, buffers, optimizer and LR-scheduler state are broadcast from rank 0 before the first step, so every
  rank starts from the same weights and hyper-parameters even if they were initialised differently.
- Optimizers are wrapped in ``hvd.DistributedOptimizer`` with named parameters: gradients are averaged across ranks
  while the backward pass is still running, so N processes with batch b step exactly like one with batch N·b.
  Gradient accumulation (``Trainer(accumulate_grad_batches=k)``) maps to ``backward_passes_per_step=k``: only the
  k-th backward pass starts the allreduce.
- The averaged gradients are in place before gradient clipping and ``on_before_optimizer_step`` see them.
- Data is sharded with Lightning's ``DistributedSampler`` (``distributed_sampler_kwargs``), and ``reduce`` /
  ``all_gather`` / ``broadcast`` / ``barrier`` are Horovod collectives, so ``self.log(..., sync_dist=True)`` and
  ``trainer.strategy.reduce(t, reduce_op="sum")`` give global values.
- Checkpoints are written by rank 0 only; a checkpoint is read by rank 0 and broadcast (it need not be on every node).
- ``scale_lr=True`` multiplies learning rates by the world size (the linear scaling rule). It is off by default: with
  a mean-reduced loss, averaged gradients already equal the global batch's gradient, so the single-process learning
  rate tuned for the *global* batch carries over unchanged.
- ``Trainer(sync_batchnorm=True)`` converts BatchNorm layers to ``hvd.SyncBatchNorm`` (global batch statistics on GPU;
  Horovod computes them locally for CPU tensors) and back after fitting.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import CheckpointIO, ClusterEnvironment
from lightning_fabric.utilities.optimizer import _optimizer_to_device
from lightning_fabric.utilities.types import _PATH
from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.plugins import LayerSync
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.strategies.parallel import ParallelStrategy
from pytorch_lightning.strategies.strategy import TBroadcast
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import Tensor
from torch.optim import Optimizer

from mlflow_anf_lanedet.distributed import launched_by_mpi, world_size

if TYPE_CHECKING:
    from types import ModuleType

INSTALL_HINT = (
    "strategy=horovod needs horovod: run scripts/install_horovod.sh (it builds horovod 0.28.1 against the installed "
    "torch with Gloo and caches the wheel; `make setup` runs it unless WITH_HOROVOD=0), or use strategy=ddp"
)


class HorovodUnavailableError(ImportError):
    """horovod (with its torch extension) is not installed in this environment."""


def import_horovod() -> ModuleType:
    """``horovod.torch``, or :class:`HorovodUnavailableError` saying how to install it."""
    try:
        import horovod.torch as hvd
    except ImportError as exc:  # not installed, or built against another torch
        raise HorovodUnavailableError(f"{INSTALL_HINT} (import horovod.torch failed: {exc})") from exc
    return hvd


def _is_distributed_optimizer(optimizer: Optimizer) -> bool:
    """True for optimizers already wrapped by ``hvd.DistributedOptimizer`` (a dynamically created subclass)."""
    return hasattr(optimizer, "synchronize") and hasattr(optimizer, "skip_synchronize")


# --------------------------------------------------------------------------------------------- cluster environment
class HorovodEnvironment(ClusterEnvironment):
    """Ranks as Horovod numbers them. Horovod does its own rendezvous, so there is no main address to agree on."""

    def __init__(self, hvd: ModuleType) -> None:
        self._hvd = hvd

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("HOROVOD_GLOO_RENDEZVOUS_PORT", "0") or 0)

    @staticmethod
    def detect() -> bool:
        return "HOROVOD_RANK" in os.environ

    def world_size(self) -> int:
        return self._hvd.size()

    def set_world_size(self, size: int) -> None:
        """Horovod decides the world size; Lightning's request is ignored."""

    def global_rank(self) -> int:
        return self._hvd.rank()

    def set_global_rank(self, rank: int) -> None:
        """Horovod decides the rank; Lightning's request is ignored."""

    def local_rank(self) -> int:
        return self._hvd.local_rank()

    def node_rank(self) -> int:
        return self._hvd.cross_rank()


# ------------------------------------------------------------------------------------------------- sync batchnorm
class HorovodSyncBatchNorm(LayerSync):
    """BatchNorm layers → ``hvd.SyncBatchNorm`` (statistics over the global batch) and back to their own classes."""

    _ORIGINAL = "_lanedet_original_bn_class"

    def __init__(self, hvd: ModuleType) -> None:
        self._hvd = hvd

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return self._swap(model, to_sync=True)

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        return self._swap(model, to_sync=False)

    def _swap(self, module: torch.nn.Module, to_sync: bool) -> torch.nn.Module:
        sync_cls = self._hvd.SyncBatchNorm
        out = module
        if to_sync and isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, sync_cls):
            out = sync_cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            setattr(out, self._ORIGINAL, type(module))
        elif not to_sync and isinstance(module, sync_cls) and hasattr(module, self._ORIGINAL):
            cls = getattr(module, self._ORIGINAL)
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if out is not module:
            if module.affine:
                out.weight, out.bias = module.weight, module.bias
            if module.track_running_stats:
                out.running_mean, out.running_var = module.running_mean, module.running_var
                out.num_batches_tracked = module.num_batches_tracked
            out.train(module.training)
        for name, child in module.named_children():
            out.add_module(name, self._swap(child, to_sync))
        return out


# ------------------------------------------------------------------------------------------------------- strategy
class HorovodStrategy(ParallelStrategy):
    """Lightning 2 strategy for Horovod data-parallel training (see the module docstring).

    Args:
        scale_lr: multiply every param group's learning rate (and LR schedulers' base rates) by the world size.
        accelerator, parallel_devices, checkpoint_io, precision_plugin: as for any Lightning strategy; the Trainer
            fills them in. Each process drives exactly one device.
    """

    strategy_name = "horovod"

    def __init__(
        self,
        accelerator: pl.accelerators.Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        *,
        scale_lr: bool = False,
    ) -> None:
        hvd = import_horovod()
        hvd.init()
        launched = world_size()
        if hvd.size() != launched and launched_by_mpi():
            raise RuntimeError(
                f"strategy=horovod: mpirun started {launched} processes but horovod sees {hvd.size()} "
                f"(this horovod build has MPI support: {bool(hvd.mpi_built())}); start it with "
                f"`horovodrun -np {launched} --gloo ...`, or rebuild horovod with MPI (pip uninstall horovod, then "
                "HOROVOD_WITHOUT_MPI=0 scripts/install_horovod.sh)"
            )
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=HorovodEnvironment(hvd),
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
        )
        self._hvd = hvd
        self.scale_lr = scale_lr
        self._exit_stack: ExitStack | None = None
        self._applied_layer_sync: LayerSync | None = None
        rank_zero_only.rank = utils_rank_zero_only.rank = self.global_rank

    # ---------------------------------------------------------------------------------------------- world / devices
    @property
    def is_distributed(self) -> bool:
        """Tells Lightning to sync ``sync_dist=True`` logs and to insert a DistributedSampler."""
        return True

    @property
    def root_device(self) -> torch.device:
        if not isinstance(self.accelerator, CUDAAccelerator):
            return torch.device("cpu")
        count = torch.cuda.device_count()
        local = self.local_rank
        if count == 1:  # each process was given its own GPU (CUDA_VISIBLE_DEVICES per rank)
            return torch.device("cuda", 0)
        if local >= count:
            raise RuntimeError(f"strategy=horovod: local rank {local} has no GPU of its own ({count} visible)")
        return torch.device("cuda", local)

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        return {"num_replicas": self.world_size, "rank": self.global_rank}

    def setup_environment(self) -> None:
        super().setup_environment()  # accelerator.setup_device(root_device): pins cuda:<local rank>
        self.parallel_devices = [self.root_device]

    def model_to_device(self) -> None:
        assert self.model is not None
        self.model.to(self.root_device)

    # --------------------------------------------------------------------------------------------------- setup
    def setup(self, trainer: pl.Trainer) -> None:
        assert self.model is not None
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting and self._layer_sync is not None:
            self._applied_layer_sync = HorovodSyncBatchNorm(self._hvd)
            self.model = self._applied_layer_sync.apply(self.model)
        super().setup(trainer)  # accelerator, precision, model → device, optimizers + schedulers (when fitting)

        assert self.lightning_module is not None
        if fitting and self.scale_lr:
            self._scale_learning_rates(self.world_size)
        self._hvd.broadcast_parameters(self.lightning_module.state_dict(), root_rank=0)
        if not fitting:
            return
        for optimizer in self.optimizers:
            self._broadcast_optimizer_state(optimizer)
        for config in self.lr_scheduler_configs:
            state = self.broadcast(config.scheduler.state_dict() if self.is_global_zero else None, src=0)
            if not self.is_global_zero:
                config.scheduler.load_state_dict(state)
        self._wrap_optimizers(trainer.accumulate_grad_batches)

    def _scale_learning_rates(self, factor: int) -> None:
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= factor
                if "initial_lr" in group:
                    group["initial_lr"] *= factor
        for config in self.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * factor for lr in config.scheduler.base_lrs]

    def _broadcast_optimizer_state(self, optimizer: Optimizer) -> None:
        """Rank 0's optimizer state and hyper-parameters on every rank.

        ``hvd.broadcast_optimizer_state`` is not used: on a fresh optimizer it takes a zero-gradient ``step()`` to
        create the state, which applies weight decay (and counts an Adam step) that single-process training never
        takes, so the runs would no longer be equivalent.
        """
        state = self.broadcast(optimizer.state_dict() if self.is_global_zero else None, src=0)
        if not self.is_global_zero:
            optimizer.load_state_dict(state)
            _optimizer_to_device(optimizer, self.root_device)

    def _wrap_optimizers(self, backward_passes_per_step: int) -> None:
        hvd = self._hvd
        module = self.lightning_module
        assert module is not None
        names = {param: name for name, param in module.named_parameters()}
        wrapped: list[Optimizer] = []
        for optimizer in self.optimizers:
            if _is_distributed_optimizer(optimizer):
                wrapped.append(optimizer)
                continue
            params = [p for group in optimizer.param_groups for p in group["params"]]
            named = [(names.get(p, f"unnamed.{i}"), p) for i, p in enumerate(params)]
            distributed = hvd.DistributedOptimizer(
                optimizer,
                named_parameters=named,
                backward_passes_per_step=backward_passes_per_step,
                op=hvd.Average,
            )
            if optimizer.state:
                distributed.load_state_dict(optimizer.state_dict())
            for config in self.lr_scheduler_configs:
                if getattr(config.scheduler, "optimizer", None) is optimizer:
                    _retarget_scheduler(config.scheduler, distributed)
            wrapped.append(distributed)
        self.optimizers = wrapped  # rebuilds the LightningOptimizer wrappers
        self._skip_synchronize_in_step()

    def _skip_synchronize_in_step(self) -> None:
        """Gradients are synchronised explicitly right after the backward pass (see :meth:`optimizer_step`), so the
        wrapped optimizers' ``step()`` must not allreduce them again."""
        if self._exit_stack is not None:
            self._exit_stack.close()
        self._exit_stack = ExitStack()
        for optimizer in self.optimizers:
            if _is_distributed_optimizer(optimizer):
                self._exit_stack.enter_context(optimizer.skip_synchronize())

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        super().load_optimizer_state_dict(checkpoint)
        self._skip_synchronize_in_step()  # Horovod's load_state_dict switches synchronising in step() back on

    # --------------------------------------------------------------------------------------------- optimisation
    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Callable[[], Any],
        model: pl.LightningModule | torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> Any:
        """Step with gradients averaged over ranks.

        The optimizer runs ``closure`` (forward + backward) inside ``step()``; we wait for the gradient allreduce
        right after it, so clipping and the update see global gradients.
        """
        raw = optimizer._optimizer if isinstance(optimizer, LightningOptimizer) else optimizer

        def closure_then_synchronize() -> Any:
            result = closure()
            if _is_distributed_optimizer(raw):
                _wait_for_allreduces(self._hvd, raw)
                raw.synchronize()
            return result

        return super().optimizer_step(optimizer, closure_then_synchronize, model, **kwargs)

    # ---------------------------------------------------------------------------------------------- collectives
    def reduce(self, tensor: Tensor | Any, group: Any | None = None, reduce_op: Any = "mean") -> Tensor | Any:
        """Allreduce ``tensor`` over all ranks, in place like DDP's (``reduce_op``: mean/avg, sum, max, min, product
        or a ``torch.distributed.ReduceOp``). Non-tensors are returned unchanged."""
        if not isinstance(tensor, Tensor):
            return tensor
        if group is not None:
            raise ValueError("HorovodStrategy.reduce: process groups are not supported; leave `group` unset")
        op = _op_name(reduce_op)
        hvd = self._hvd
        divide = op == "mean" and not torch.is_floating_point(tensor)
        hvd_op = {"mean": hvd.Sum if divide else hvd.Average, "sum": hvd.Sum, "max": hvd.Max, "min": hvd.Min,
                  "product": hvd.Product}[op]
        if tensor.requires_grad:
            result = hvd.allreduce(tensor, op=hvd_op)
        else:
            result = hvd.allreduce_(tensor, op=hvd_op)
        if divide:
            result.copy_(result / self.world_size)
        return result

    def all_gather(self, tensor: Tensor, group: Any | None = None, sync_grads: bool = False) -> Tensor:
        """``[world_size, *tensor.shape]``: every rank's tensor (all ranks must pass the same shape)."""
        if group is not None and group != getattr(torch.distributed.group, "WORLD", None):
            raise ValueError("HorovodStrategy.all_gather: process groups are not supported; leave `group` unset")
        stacked = tensor.unsqueeze(0).contiguous()
        if sync_grads:
            return self._hvd.allgather(stacked)
        with torch.no_grad():
            return self._hvd.allgather(stacked.detach())

    def broadcast(self, obj: TBroadcast, src: int = 0) -> TBroadcast:
        # A fixed name: Horovod matches collectives across ranks by name, and broadcast_object's default name is the
        # object's type, which differs where non-root ranks pass a placeholder (None).
        return self._hvd.broadcast_object(obj, root_rank=src, name="lanedet.broadcast")

    def barrier(self, name: str | None = None) -> None:
        if self.world_size > 1:
            self._hvd.barrier()

    # --------------------------------------------------------------------------------------------- checkpoints
    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        """Rank 0 reads the file and broadcasts it, so only rank 0 needs to see it; a read error fails every rank."""
        payload: tuple[bool, Any] | None = None
        if self.is_global_zero:
            try:
                payload = (True, super().load_checkpoint(checkpoint_path, weights_only=weights_only))
            except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
                payload = (False, f"{type(exc).__name__}: {exc}")
        ok, value = self.broadcast(payload, src=0)
        if not ok:
            raise RuntimeError(f"cannot load checkpoint {checkpoint_path} on rank 0: {value}")
        return value

    # ------------------------------------------------------------------------------------------------- teardown
    def teardown(self) -> None:
        if self._exit_stack is not None:
            self._exit_stack.close()
            self._exit_stack = None
        if self._applied_layer_sync is not None:
            self.model = self._applied_layer_sync.revert(self.model)
            self._lightning_module = self.model  # the LightningModule itself was converted in place
            self._applied_layer_sync = None
        # No barrier or hvd.join() here: after a failure, joining would let the healthy ranks' pending allreduces
        # complete with zeros from this rank instead of failing.
        super().teardown()


def _wait_for_allreduces(hvd: ModuleType, optimizer: Optimizer, interval: float = 2e-4) -> None:
    """Sleep until the gradient allreduces already started by the backward hooks are done.

    ``optimizer.synchronize()`` waits for them in a C++ loop of 100 ns sleeps: a core spinning in the kernel for as
    long as the slowest rank needs. Where processes share cores (CPU training, 1 thread per process) that spin takes
    CPU from the ranks still computing; waiting here first gives it back. Reads Horovod's private handle table, and
    falls back to Horovod's own wait if that changes.
    """
    handles = getattr(optimizer, "_handles", None)
    if not isinstance(handles, dict):
        return
    try:
        pending = [h for h, _ in handles.values() if isinstance(h, int)]
        while pending:
            pending = [h for h in pending if not hvd.poll(h)]
            if pending:
                time.sleep(interval)
    except (TypeError, ValueError, RuntimeError):  # unexpected handle layout or a failed op: synchronize() reports
        return


def _op_name(reduce_op: Any) -> str:
    if reduce_op is None:
        return "mean"
    if isinstance(reduce_op, str):
        name = reduce_op.lower()
        name = {"avg": "mean", "prod": "product"}.get(name, name)
        if name in ("mean", "sum", "max", "min", "product"):
            return name
    else:
        from torch.distributed import ReduceOp

        for attr, name in (("SUM", "sum"), ("AVG", "mean"), ("MAX", "max"), ("MIN", "min"), ("PRODUCT", "product")):
            if reduce_op == getattr(ReduceOp, attr):
                return name
    raise ValueError(f"HorovodStrategy.reduce: unsupported reduce_op {reduce_op!r} (mean, sum, max, min, product)")


def _retarget_scheduler(scheduler: Any, optimizer: Optimizer) -> None:
    """Point an LR scheduler at the wrapped optimizer (both share the same param-group dicts).

    torch schedulers mark the optimizer's ``step`` they were built with, and warn on their first step when the
    optimizer they hold has an unmarked one; the wrapped optimizer's ``step`` gets the same marker.
    """
    scheduler.optimizer = optimizer
    step = optimizer.step

    @functools.wraps(step)
    def tracked_step(*args: Any, **kwargs: Any) -> Any:
        optimizer._opt_called = True  # type: ignore[attr-defined]
        return step(*args, **kwargs)

    tracked_step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    optimizer.step = tracked_step  # type: ignore[method-assign]
