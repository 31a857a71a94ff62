"""One optimizer update for K runs whose parameters are stacked along a leading dimension.

The fused engine trains K runs of one architecture at once: every parameter tensor has shape
[K, ...], and each run's hyperparameters arrive per step as tensors of shape [K]. The update
follows torch's single-tensor formulas (`_single_tensor_sgd`, `_single_tensor_adam`), which
are what torch runs on the CPU by default, operation by operation. Where torch passes a Python
float to a kernel, which casts it to the parameter's dtype, the stacked update computes the
same number per run in float64, casts it to that dtype, and broadcasts it as a [K, 1, ...]
tensor through a kernel that rounds the same way:

- `param.add_(grad, alpha=a)` is one fused multiply-add on the CPU; `torch.addcmul(param,
  grad, a)` rounds identically, while `param + grad * a` rounds twice.
- `exp_avg.lerp_(grad, w)` with a tensor weight runs the same CPU kernel as a float weight.
- `exp_avg_sq.addcmul_(grad, grad, value=v)` computes `(v * grad) * grad + exp_avg_sq`, so
  the stacked form multiplies `grad` by `v` first and then calls `addcmul_` without a value.
- `param.addcdiv_(exp_avg, denom, value=v)` computes `(v * exp_avg) / denom + param`.

With float32 parameters on the CPU this is bitwise equal to K separate torch optimizers for
SGD, Adam and AdamW (tests/test_stacked_optim.py checks it), provided the hyperparameters
arrive as float64: a float32 hyperparameter has already lost the digits torch keeps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

_UNSUPPORTED_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable", "fused")


class SgdStructure(NamedTuple):
    """The options that choose which branches of torch's SGD formula run."""

    name: str
    nesterov: bool
    has_momentum: bool
    has_weight_decay: bool


class AdamStructure(NamedTuple):
    """The options that choose which branches of torch's Adam formula run."""

    name: str
    decoupled_weight_decay: bool
    has_weight_decay: bool


def unsupported_reason(optimizer: torch.optim.Optimizer) -> str | None:
    """None when the stacked update reproduces this optimizer; else one sentence naming the key."""
    name = type(optimizer).__name__
    if type(optimizer) not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        return f"optimizer.name: {name} has no stacked update"
    if len(optimizer.param_groups) != 1:
        count = len(optimizer.param_groups)
        return f"optimizer.param_groups: {count} parameter groups have no stacked update"
    group = optimizer.param_groups[0]
    for flag in _UNSUPPORTED_FLAGS:
        if group.get(flag):
            return f"optimizer.{flag}: true has no stacked update"
    if group.get("foreach"):
        return "optimizer.foreach: true has no stacked update"
    for key, value in group.items():
        if isinstance(value, torch.Tensor) or (
            key == "betas" and any(isinstance(beta, torch.Tensor) for beta in value)
        ):
            return f"optimizer.{key}: a tensor value has no stacked update"
    if any(torch.is_complex(param) for param in group["params"]):
        return "optimizer.params: complex parameters have no stacked update"
    return None


def signature(optimizer: torch.optim.Optimizer) -> SgdStructure | AdamStructure:
    """What must be equal for runs to share one stacked update.

    Values that only scale the update (lr, momentum, dampening, betas, eps, weight_decay)
    may differ between runs; whether momentum or weight decay is zero may not, because torch
    skips those branches entirely (and keeps no momentum buffer without momentum).
    """
    reason = unsupported_reason(optimizer)
    if reason is not None:
        raise ValueError(reason)
    group = optimizer.param_groups[0]
    name = type(optimizer).__name__
    if isinstance(optimizer, torch.optim.SGD):
        return SgdStructure(
            name, bool(group["nesterov"]), group["momentum"] != 0, group["weight_decay"] != 0
        )
    return AdamStructure(name, bool(group["decoupled_weight_decay"]), group["weight_decay"] != 0)


def hyperparameters(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """This step's numbers from param_groups[0], as the keys StackedOptimizer.step reads."""
    group = optimizer.param_groups[0]
    if isinstance(optimizer, torch.optim.SGD):
        return {
            "lr": float(group["lr"]),
            "momentum": float(group["momentum"]),
            "dampening": float(group["dampening"]),
            "weight_decay": float(group["weight_decay"]),
        }
    beta1, beta2 = group["betas"]
    return {
        "lr": float(group["lr"]),
        "beta1": float(beta1),
        "beta2": float(beta2),
        "eps": float(group["eps"]),
        "weight_decay": float(group["weight_decay"]),
    }


def _scalar_dtype() -> torch.dtype:
    """The dtype torch gives Adam's step counter (torch.optim.optimizer._get_scalar_dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class _PerRun:
    """Per-run float64 values of shape [K], cast and shaped to broadcast against a parameter.

    The cast happens once per dtype, as torch casts a Python float to the kernel's dtype.
    """

    def __init__(self, values: torch.Tensor):
        self._values = values
        self._cast: dict[torch.dtype, torch.Tensor] = {}

    def like(self, param: torch.Tensor) -> torch.Tensor:
        cast = self._cast.get(param.dtype)
        if cast is None:
            cast = self._cast[param.dtype] = self._values.to(param.device, param.dtype)
        return cast.view((-1,) + (1,) * (param.dim() - 1))


class StackedOptimizer:
    """SGD, Adam or AdamW applied to K runs at once, each with its own hyperparameters."""

    def __init__(self, optimizer_name: str, params: list[torch.Tensor], structure: tuple):
        if structure[0] != optimizer_name:
            raise ValueError(f"structure {structure} is not for optimizer {optimizer_name}")
        if optimizer_name not in ("SGD", "Adam", "AdamW"):
            raise ValueError(f"optimizer.name: {optimizer_name} has no stacked update")
        self.optimizer_name = optimizer_name
        self.structure = structure
        self.params = list(params)
        self.steps = 0
        self._state: dict[str, list[torch.Tensor]] = {}

    def set_params(self, params: list[torch.Tensor]) -> None:
        self.params = list(params)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], hyper: dict[str, torch.Tensor]) -> None:
        """One update of every run; hyper[key] holds each run's value, shape [K].

        Pass float64 values for a bitwise match with torch; float32 ones are close but have
        lost digits that torch's own arithmetic (1 - beta1, lr / bias_correction1) keeps.
        """
        hyper = {key: value.to(torch.float64) for key, value in hyper.items()}
        self.steps += 1
        if self.optimizer_name == "SGD":
            self._sgd_step(grads, hyper)
        else:
            self._adam_step(grads, hyper)

    def _sgd_step(self, grads: list[torch.Tensor], hyper: dict[str, torch.Tensor]) -> None:
        structure: SgdStructure = self.structure
        neg_lr = _PerRun(-hyper["lr"])
        weight_decay = _PerRun(hyper["weight_decay"])
        momentum = _PerRun(hyper["momentum"])
        undamped = _PerRun(1 - hyper["dampening"])
        buffers = self._state.setdefault("momentum_buffer", []) if structure.has_momentum else []
        for i, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            if structure.has_weight_decay:
                grad = torch.addcmul(grad, param, weight_decay.like(param))
            if structure.has_momentum:
                if self.steps == 1:
                    buffers.append(grad.detach().clone())
                else:
                    buffers[i].mul_(momentum.like(param)).addcmul_(grad, undamped.like(param))
                buffer = buffers[i]
                if structure.nesterov:
                    grad = torch.addcmul(grad, buffer, momentum.like(param))
                else:
                    grad = buffer
            param.addcmul_(grad, neg_lr.like(param))

    def _adam_step(self, grads: list[torch.Tensor], hyper: dict[str, torch.Tensor]) -> None:
        structure: AdamStructure = self.structure
        lr, beta1, beta2 = hyper["lr"], hyper["beta1"], hyper["beta2"]
        # torch takes beta ** step in float64 on the host and casts the results to the
        # parameter's dtype where they meet a tensor; so do these, per run. Should torch.pow
        # and Python's pow differ in the last float64 bit, the cast to float32 hides it
        # except for about one value in 2**28.
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = (1 - beta2**self.steps) ** 0.5
        neg_step_size = _PerRun(-(lr / bias_correction1))
        correction2_sqrt = _PerRun(bias_correction2_sqrt)
        eps = _PerRun(hyper["eps"])
        grad_weight1 = _PerRun(1 - beta1)
        beta2_decay = _PerRun(beta2)
        grad_weight2 = _PerRun(1 - beta2)
        weight_decay = _PerRun(hyper["weight_decay"])
        decay_factor = _PerRun(1 - lr * hyper["weight_decay"])
        exp_avgs = self._state.setdefault("exp_avg", [])
        exp_avg_sqs = self._state.setdefault("exp_avg_sq", [])
        if self.steps == 1:
            exp_avgs.extend(torch.zeros_like(param) for param in self.params)
            exp_avg_sqs.extend(torch.zeros_like(param) for param in self.params)
        for param, grad, exp_avg, exp_avg_sq in zip(
            self.params, grads, exp_avgs, exp_avg_sqs, strict=True
        ):
            if structure.has_weight_decay:
                if structure.decoupled_weight_decay:
                    param.mul_(decay_factor.like(param))
                else:
                    grad = torch.addcmul(grad, param, weight_decay.like(param))
            exp_avg.lerp_(grad, grad_weight1.like(param))
            scaled_grad = grad * grad_weight2.like(param)
            exp_avg_sq.mul_(beta2_decay.like(param)).addcmul_(scaled_grad, grad)
            denom = (exp_avg_sq.sqrt() / correction2_sqrt.like(param)).add_(eps.like(param))
            param.addcdiv_(exp_avg * neg_step_size.like(param), denom)

    def state_of(self, k: int) -> list[dict[str, torch.Tensor]]:
        """Run k's state as torch's optimizer keeps it, one cloned dict per parameter."""
        if self.steps == 0:
            return [{} for _ in self.params]
        states: list[dict[str, torch.Tensor]] = [{} for _ in self.params]
        for key, tensors in self._state.items():
            for state, tensor in zip(states, tensors, strict=True):
                state[key] = tensor[k].clone()
        if self.optimizer_name != "SGD":
            for state in states:
                state["step"] = torch.tensor(float(self.steps), dtype=_scalar_dtype())
        return states

    def select(self, index: torch.Tensor) -> None:
        """Keep only the runs at `index` in the optimizer state."""
        for tensors in self._state.values():
            for i, tensor in enumerate(tensors):
                tensors[i] = tensor.index_select(0, index.to(tensor.device))
