"""torch's optimizer objects from config blocks, every keyword checked against torch's own
signature first, and rehearsed on a stand-in so that a bad argument fails before training.
(Schedulers are built by their schedule kind: schedule_kinds.py.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lrsched_cli.config import ConfigError, OptimizerConfig
from lrsched_cli.registry import UNSUPPORTED_OPTIMIZERS, lookup_name, optimizer_classes
from lrsched_cli.signatures import construct

if TYPE_CHECKING:
    import torch


def build_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The torch optimizer `cfg.name`, constructed with the config's keyword arguments."""
    classes = optimizer_classes()
    if cfg.name in UNSUPPORTED_OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name: {cfg.name} is not supported: {UNSUPPORTED_OPTIMIZERS[cfg.name]}",
            "optimizer.name",
        )
    cls = classes[lookup_name(cfg.name, classes, "optimizer", "optimizer.name")]
    kwargs = {"lr": cfg.lr, **cfg.kwargs}
    params = list(params)
    _rehearse_step(construct(cls, [_stand_in(params)], kwargs, "optimizer"))
    return construct(cls, params, kwargs, "optimizer")


def _stand_in(params: list) -> torch.Tensor:
    """A leaf parameter on the model's device, with a gradient, for a rehearsal step."""
    import torch

    device = params[0].device if params else "cpu"
    probe = torch.zeros(2, 2, device=device, requires_grad=True)
    probe.grad = torch.ones_like(probe)
    return probe


def _rehearse_step(optimizer) -> None:
    """Some arguments fail only in step() (capturable on a CPU, differentiable with leaf
    parameters): find out before training, on a stand-in, not in epoch 1."""
    try:
        optimizer.step()
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        name = type(optimizer).__name__
        raise ConfigError(
            f"optimizer: torch's {name} cannot step with these arguments: {exc}", "optimizer"
        ) from None
