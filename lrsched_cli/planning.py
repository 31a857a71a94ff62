"""Understand a schedule: its lr before training (plan), its pitfalls (lint), and why each lr
changed during training (explain). torch's own schedulers do the stepping, on a stand-in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lrsched_cli.config import FLOAT32_MAX, ConfigError, ExperimentConfig, SchedulerConfig
from lrsched_cli.registry import (
    Segment,
    build_optimizer,
    build_scheduler,
    check_expressions,
    one_line,
    scheduler_argument,
    scheduler_spec,
    segments,
    warmup_length,
)

CYCLING = ("OneCycleLR", "CyclicLR")


@dataclass
class Plan:
    config: ExperimentConfig  # resolved
    steps_per_epoch: int
    epoch_lrs: list[float]  # the lr each epoch trains with (its first step's)
    stepped_lrs: list[float]  # every optimizer step's lr, for a step-interval scheduler
    momentum: list[float] | None  # per epoch, where the scheduler cycles momentum or beta1
    warnings: list[str] = field(default_factory=list)
    plateau: dict[str, Any] | None = None  # floor and fastest decay, for ReduceLROnPlateau

    @property
    def interval(self) -> str:
        return self.config.scheduler.interval or "epoch"

    @property
    def step_lrs(self) -> list[float]:
        """Every optimizer step's lr; an epoch scheduler's lr is constant within an epoch."""
        if self.interval == "step":
            return self.stepped_lrs
        return [lr for lr in self.epoch_lrs for _ in range(self.steps_per_epoch)]


def plan_schedule(cfg: ExperimentConfig, steps_per_epoch: int, horizon: int | None = None) -> Plan:
    """Step the configured scheduler exactly as the run will, on a stand-in parameter, for
    its epochs or the first `horizon` of them.

    `cfg` is resolved (every default filled in). ReduceLROnPlateau depends on validation: its
    epoch lrs here are the fastest decay it allows (every epoch worse than the best).
    """
    stand_in = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([stand_in], cfg.optimizer)
    block = cfg.scheduler
    per_step = block.interval == "step"
    check_expressions(block, range(cfg.epochs * (steps_per_epoch if per_step else 1) + 1))
    scheduler = build_scheduler(optimizer, block)
    needs_metric = scheduler_spec(block.name).needs_metric
    cycling = cycles_momentum(block)
    epoch_lrs, step_lrs, momentum = [], [], []
    for epoch in range(1, min(cfg.epochs, horizon or cfg.epochs) + 1):
        epoch_lrs.append(float(optimizer.param_groups[0]["lr"]))
        momentum.append(momentum_of(optimizer))
        # No gradient: nothing moves, but torch sees optimizer.step() before scheduler.step().
        # An epoch scheduler needs one step an epoch: the lr cannot change within the epoch.
        try:
            for _ in range(steps_per_epoch if per_step else 1):
                if per_step:
                    step_lrs.append(float(optimizer.param_groups[0]["lr"]))
                optimizer.step()
                if scheduler is not None and per_step:
                    scheduler.step()
            if scheduler is not None and not per_step:
                if needs_metric:  # every epoch worse than the best: the fastest decay it allows
                    scheduler.step(float(epoch if block.kwargs.get("mode") != "max" else -epoch))
                else:
                    scheduler.step()
        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise ConfigError(
                f"scheduler: torch's {block.name} fails when stepped in epoch {epoch}: "
                f"{one_line(exc)}",
                "scheduler",
            ) from None
    plan = Plan(cfg, steps_per_epoch, epoch_lrs, step_lrs, momentum if cycling else None)
    _check_lrs(plan)
    if needs_metric:
        kwargs = block.kwargs
        plan.plateau = {"floor": kwargs.get("min_lr", 0), "fastest_decay": epoch_lrs}
    plan.warnings = lint(plan)
    return plan


# The arguments that set the lr's size, per scheduler class, the likeliest culprit first:
# where a schedule gives a negative or overflowing lr, the message names one of these.
LR_ARGUMENTS = {
    "StepLR": ("gamma",),
    "MultiStepLR": ("gamma",),
    "ExponentialLR": ("gamma",),
    "LambdaLR": ("lr_lambda",),
    "MultiplicativeLR": ("lr_lambda",),
    "OneCycleLR": ("max_lr", "div_factor", "final_div_factor"),
    "CyclicLR": ("base_lr", "max_lr"),
    "ConstantLR": ("factor",),
    "LinearLR": ("start_factor", "end_factor"),
    "PolynomialLR": ("power",),
    "CosineAnnealingLR": ("eta_min",),
    "CosineAnnealingWarmRestarts": ("eta_min",),
    "ReduceLROnPlateau": ("factor", "min_lr"),
}


def _check_lrs(plan: Plan) -> None:
    """Every lr the rehearsal produced must be one a float32 model can train with: finite,
    not negative (torch's SGD trains at a negative lr, climbing the loss), at most float32's
    largest number (a larger one overflows inside optimizer.step())."""
    lrs = plan.stepped_lrs if plan.interval == "step" else plan.epoch_lrs
    bad = next(
        (i for i, lr in enumerate(lrs) if not (0 <= lr <= FLOAT32_MAX)),  # NaN fails both
        None,
    )
    if bad is None:
        return
    lr = lrs[bad]
    parts = [
        s for s in segments(plan.config.scheduler, _run_length(plan)) if not s.block.schedulers
    ]
    owners = [s for s in parts if s.start <= bad < s.start + s.length] or parts
    block = owners[0].block if owners else plan.config.scheduler
    key = owners[0].key if owners else "scheduler"
    given = [a for a in LR_ARGUMENTS.get(block.name, ()) if a in block.kwargs]
    negative = [a for a in given if _is_negative(block.kwargs[a])]
    argument = (negative or given or LR_ARGUMENTS.get(block.name, ()) or [None])[0]
    where = f"{key}.{argument}" if argument else key
    if lr < 0:
        problem = "an lr must not be negative (torch would train uphill)"
    elif lr > FLOAT32_MAX:
        problem = f"above float32's largest number ({FLOAT32_MAX:.3g}): training would overflow"
    else:
        problem = "an lr must be a finite number"
    value = f" ({argument}: {block.kwargs[argument]})" if argument in block.kwargs else ""
    raise ConfigError(
        f"{where}: {block.name} gives lr {lr:.4g} at {_at(plan, bad)}{value}; {problem}", where
    )


def _is_negative(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, int | float) and v < 0 for v in values)


def momentum_of(optimizer) -> float | None:
    """SGD's momentum, or Adam's beta1: what OneCycleLR and CyclicLR cycle."""
    group = optimizer.param_groups[0]
    if "momentum" in group:
        return float(group["momentum"])
    if "betas" in group:
        return float(group["betas"][0])
    return None


def lint(plan: Plan) -> list[str]:
    """Schedules that train without an error and give a worse model: what will happen, and
    how to fix it. Epochs and steps are counted as in the plan: from 1, over the whole run."""
    block = plan.config.scheduler
    parts = list(segments(block, _run_length(plan)))
    warnings = []
    for segment in parts:
        warnings += _lint_block(segment, plan)
    length = warmup_length(block.warmup)
    if length >= _run_length(plan):
        warnings.append(
            f"scheduler.warmup: the warmup lasts {length} {_units(plan)}, the whole run is "
            f"{_run_length(plan)}: the scheduler after it never runs; shorten the warmup"
        )
    if plan.epoch_lrs and plan.epoch_lrs[0] == 0:
        warnings.append(
            "epoch 1 trains at lr 0: the scheduler sets the lr when it is built "
            "(LambdaLR with epoch / 10 gives 0 at epoch 0); start above 0, e.g. "
            "(epoch + 1) / 10"
        )
    warnings += _vanishing_lr(plan, parts)
    return warnings


def _run_length(plan: Plan) -> int:
    """How many times the run steps the scheduler: once per epoch, or per optimizer step."""
    return plan.config.epochs * (plan.steps_per_epoch if plan.interval == "step" else 1)


def _units(plan: Plan) -> str:
    return "steps" if plan.interval == "step" else "epochs"


def _at(plan: Plan, index: int) -> str:
    """The run's epoch (or step, and its epoch) at 0-based `index` of the stepped lrs, numbered
    as the plan table and metrics.csv number them."""
    if plan.interval == "epoch":
        return f"epoch {index + 1}"
    return f"step {index + 1} (epoch {index // plan.steps_per_epoch + 1})"


def _lint_block(segment: Segment, plan: Plan):
    where, block, length = segment.key, segment.block, segment.length
    kwargs, name, units = block.kwargs, block.name, _units(plan)
    # Stepped from 0 at segment.start, the cosine is at its minimum at T_max, and it rises
    # again only if the segment trains past T_max + 1.
    if name == "CosineAnnealingLR" and kwargs["T_max"] + 1 < length:
        yield (
            f"{where}.T_max: T_max {kwargs['T_max']} is shorter than the {length} {units} it "
            f"is stepped: the lr rises again after {_at(plan, segment.start + kwargs['T_max'])}; "
            f"set T_max: {length}"
        )
    if name in CYCLING and plan.interval == "epoch":
        yield (
            f"{where}: {name} is stepped once per epoch, so its cycle is laid out in "
            f"epochs; it is meant per optimizer step: set interval: step"
        )
    if name == "OneCycleLR":
        # A cycle shorter than its segment is refused when the config is resolved.
        key, cycle = _cycle_length(kwargs)
        if cycle is not None and cycle > length:
            yield (
                f"{where}.{key}: OneCycleLR's cycle is {cycle} {units}, but it is stepped "
                f"{length} times: the cycle is cut short before it anneals; leave the cycle's "
                f"length out and lrsched fills in total_steps: {length}"
            )
    if (
        name in CYCLING
        and "cycle_momentum" not in kwargs
        and scheduler_argument(block, "cycle_momentum")
    ):
        plain = plan.config.optimizer.name.lower() in ("sgd", "rmsprop")
        what = "momentum" if plain else "beta1"
        yield (
            f"{where}: {name} cycles the optimizer's {what} between base_momentum and "
            f"max_momentum, overriding the optimizer's own; set cycle_momentum: false to "
            f"keep it"
        )
    if name in ("LambdaLR", "MultiplicativeLR") and plan.epoch_lrs:
        start, peak = plan.config.optimizer.lr, max(plan.step_lrs or plan.epoch_lrs)
        if peak > start * (1 + 1e-9):
            yield (
                f"{where}.lr_lambda: the lr reaches {peak:.4g}, above the initial {start:g}: "
                f"the multiplier is not clamped; wrap it, e.g. min(1, ...)"
            )
    if scheduler_spec(name).needs_metric:
        patience = scheduler_argument(block, "patience")
        epochs = plan.config.epochs - warmup_length(plan.config.scheduler.warmup)
        if patience >= epochs:
            yield (
                f"{where}.patience: patience {patience} >= the {epochs} epochs it is fed: "
                f"ReduceLROnPlateau can never cut the lr; lower patience or train longer"
            )


def _cycle_length(kwargs: dict) -> tuple[str, int | None]:
    """The key that sets a OneCycleLR's cycle and its length: total_steps, or epochs x
    steps_per_epoch (torch's order)."""
    if "total_steps" in kwargs:
        return "total_steps", kwargs["total_steps"]
    if "epochs" in kwargs and "steps_per_epoch" in kwargs:
        return "epochs", kwargs["epochs"] * kwargs["steps_per_epoch"]
    return "total_steps", None


# An lr below this fraction of its peak so far moves the weights by float rounding only (the
# warning spells it 1e-8).
VANISHING = 1e-8
# What to change, per scheduler class, when it drives the lr below VANISHING x its peak.
VANISHING_FIXES = {
    "StepLR": lambda block, length: "a larger step_size, or a gamma nearer 1",
    "MultiStepLR": lambda block, length: "fewer milestones, or a gamma nearer 1",
    "ExponentialLR": lambda block, length: (
        f"a gamma nearer 1, e.g. gamma: {0.01 ** (1 / max(length - 1, 1)):.4g}, which ends the "
        "run at 1% of the start"
    ),
    "PolynomialLR": lambda block, length: f"total_iters: {length}, the length it is stepped",
    "LambdaLR": lambda block, length: "a floor in lr_lambda, e.g. max(0.001, ...)",
    "MultiplicativeLR": lambda block, length: "a multiplier nearer 1",
}


def _vanishing_lr(plan: Plan, parts: list[Segment]) -> list[str]:
    """Where torch's own stepped lrs fall below VANISHING x their peak so far for more than
    the run's last step or last 1%: a schedule may end near 0 on purpose (OneCycleLR's final
    tail, a cosine's minimum), but not train for long there."""
    if plan.plateau is not None:  # its lrs here are the fastest decay, not what will happen
        return []
    lrs = plan.stepped_lrs if plan.interval == "step" else plan.epoch_lrs
    peak, below, first_peak = 0.0, [], 0.0
    for index, lr in enumerate(lrs):
        peak = max(peak, lr)
        if lr < VANISHING * peak:
            first_peak = first_peak or peak
            below.append(index)
    if len(below) <= max(1, len(lrs) // 100):
        return []
    first = below[0]
    owners = [s for s in parts if not s.block.schedulers and s.start <= first < s.start + s.length]
    segment = owners[0] if owners else parts[0]
    name = segment.block.name
    advise = VANISHING_FIXES.get(name, lambda block, length: "keep the lr above it")
    if segment.key == "scheduler" and plan.interval == "step":
        if scheduler_spec(name).interval == "epoch":  # its counts were meant as epochs
            fix = f"interval: epoch, or {advise(segment.block, plan.config.epochs)}"
        else:
            fix = advise(segment.block, segment.length)
    else:
        fix = advise(segment.block, segment.length)
    rehearsed = "" if len(lrs) == _run_length(plan) else "first "
    return [
        f"{segment.key}: the lr falls below 1e-8 x its peak ({first_peak:.3g}) at "
        f"{_at(plan, first)}, and {len(below)} of the {rehearsed}{len(lrs)} {_units(plan)} "
        f"train below that: they barely move the weights; use {fix}"
    ]


def cycles_momentum(block: SchedulerConfig) -> bool:
    """Whether a OneCycleLR or CyclicLR in `block` cycles the optimizer's momentum or beta1."""
    return any(
        s.block.name in CYCLING and scheduler_argument(s.block, "cycle_momentum")
        for s in segments(block, 0)
    )


def explain_step(
    block: SchedulerConfig, scheduler, epoch: int, before: dict, new_lr: float, old_lr: float
) -> str | None:
    """Why an epoch scheduler's step at the end of `epoch` changed the lr (None: it did not,
    or it changes every epoch, which needs no explaining). `before` is plateau_state() from
    before the step."""
    if new_lr == old_lr:
        return None
    ratio = f"x{new_lr / old_lr:.3g}" if old_lr else f"to {new_lr:.3g}"
    length = warmup_length(block.warmup)
    if length and epoch == length:
        return "warmup end"
    if length and epoch < length:
        return None
    kwargs = block.kwargs
    if block.name == "ReduceLROnPlateau":
        bad = before.get("bad_epochs", 0) + 1
        patience = scheduler_argument(block, "patience")
        return f"plateau: {bad} bad epochs > patience {patience}, {ratio}"
    if block.name == "StepLR":
        return f"step_size {kwargs['step_size']}: {ratio}"
    if block.name == "MultiStepLR":
        return f"milestone {epoch}: {ratio}"
    if block.name == "SequentialLR" and epoch in kwargs.get("milestones", []):
        return f"milestone {epoch}: next scheduler"
    ends = block.name in ("ConstantLR", "LinearLR") and scheduler_argument(block, "total_iters")
    if ends and epoch == ends:
        return f"{block.name} end: {ratio}"
    return None


def plateau_state(scheduler) -> dict | None:
    """ReduceLROnPlateau's own counters (best, bad epochs, cooldown left), or None."""
    plateau = getattr(scheduler, "plateau", scheduler)  # inside WarmupThenPlateau
    if not hasattr(plateau, "num_bad_epochs"):
        return None
    return {
        "best": float(plateau.best),
        "bad_epochs": int(plateau.num_bad_epochs),
        "cooldown": int(plateau.cooldown_counter),
    }


# Schedules laid out over a fixed number of steps that torch refuses to step past.
FIXED_LENGTH = {"OneCycleLR": "total_steps"}


def fixed_length(block: SchedulerConfig) -> tuple[str, SchedulerConfig] | None:
    """Where a schedule of a fixed length sits in `block` (and that block), or None: such a
    run cannot be trained past its planned end."""
    for segment in segments(block, 0):
        if segment.block.name in FIXED_LENGTH:
            return segment.key, segment.block
    return None
