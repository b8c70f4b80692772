"""Learning-rate schedule: linear warm-up, then SCNN's polynomial ("poly") decay, as a ``LambdaLR`` factor."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["PolyLRLambda", "poly_lr_lambda"]


class PolyLRLambda(BaseModel):
    """Callable ``step -> factor`` for :class:`torch.optim.lr_scheduler.LambdaLR`.

    * ``step < warmup_steps``: ``(step + 1) / warmup_steps`` (reaches 1 on the last warm-up step);
    * ``warmup_steps <= step < total_steps``: ``(1 - (step - warmup_steps) / (total_steps - warmup_steps)) ** power``;
    * ``step >= total_steps``: 0.

    A pydantic model rather than a closure so it pickles (DDP spawn) and ``LambdaLR.state_dict()`` can save it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    total_steps: int = Field(ge=1)
    warmup_steps: int = Field(0, ge=0)
    power: float = Field(0.9, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _warmup_within_total(self) -> PolyLRLambda:
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be smaller than total_steps ({self.total_steps})"
            )
        return self

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step: must be >= 0, got {step}")
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if step >= self.total_steps:
            return 0.0
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return (1.0 - progress) ** self.power


def poly_lr_lambda(total_steps: int, warmup_steps: int = 0, power: float = 0.9) -> PolyLRLambda:
    """Validated ``LambdaLR`` factor: linear warm-up over ``warmup_steps``, then poly decay to 0 at ``total_steps``."""
    return PolyLRLambda(total_steps=total_steps, warmup_steps=warmup_steps, power=power)
