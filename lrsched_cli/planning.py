"""Understand a schedule before training: its lr epoch by epoch and step by step (plan),
rehearsed through the same Schedule and hooks the run uses, on a stand-in parameter, and its
pitfalls (lint: the rules every kind shares; each kind's own sit in schedule_kinds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lrsched_cli import schedule_kinds
from lrsched_cli.build import build_optimizer
from lrsched_cli.config import FLOAT32_MAX, ConfigError, ExperimentConfig
from lrsched_cli.schedule import Schedule
from lrsched_cli.schedule_config import Segment, run_length, segments, warmup_length
from lrsched_cli.signatures import one_line


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

    @property
    def run_length(self) -> int:
        """How many times the run steps the scheduler."""
        return run_length(self.interval, self.config.epochs, self.steps_per_epoch)

    @property
    def units(self) -> str:
        return "steps" if self.interval == "step" else "epochs"

    def at(self, index: int) -> str:
        """The run's epoch (or step, and its epoch) at 0-based `index` of the stepped lrs,
        numbered as the plan table and metrics.csv number them."""
        if self.interval == "epoch":
            return f"epoch {index + 1}"
        return f"step {index + 1} (epoch {index // self.steps_per_epoch + 1})"


# What the rehearsal feeds a schedule that takes a metric: every epoch worse than the one
# before, for whichever metric it monitors (a mode that contradicts its metric is refused when
# the config is resolved), so its lrs are the fastest decay it allows.
def _worse_every_epoch(epoch: int) -> dict[str, float]:
    return {"val_loss": float(epoch), "train_loss": float(epoch), "val_accuracy": float(-epoch)}


def plan_schedule(cfg: ExperimentConfig, steps_per_epoch: int, horizon: int | None = None) -> Plan:
    """Step the configured schedule exactly as the run does, through the same Schedule and its
    two hooks, on a stand-in parameter, for its epochs or the first `horizon` of them.

    `cfg` is resolved (every default filled in). ReduceLROnPlateau depends on validation: its
    epoch lrs here are the fastest decay it allows (every epoch worse than the best).
    """
    stand_in = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([stand_in], cfg.optimizer)
    block = cfg.scheduler
    schedule = Schedule(optimizer, block, cfg.epochs, steps_per_epoch)
    epoch_lrs, step_lrs, momentum = [], [], []
    for epoch in range(1, min(cfg.epochs, horizon or cfg.epochs) + 1):
        lr = float(optimizer.param_groups[0]["lr"])
        epoch_lrs.append(lr)
        # No gradient: nothing moves, but torch sees optimizer.step() before scheduler.step().
        # An epoch schedule needs one step an epoch: the lr cannot change within the epoch.
        try:
            for _ in range(steps_per_epoch if schedule.per_step else 1):
                if schedule.per_step:
                    step_lrs.append(float(optimizer.param_groups[0]["lr"]))
                optimizer.step()
                schedule.after_optimizer_step()
            record = {"epoch": epoch, "lr": lr, **_worse_every_epoch(epoch)}
            momentum.append(schedule.after_epoch(record).get("momentum"))
        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise ConfigError(
                f"scheduler: torch's {block.name} fails when stepped in epoch {epoch}: "
                f"{one_line(exc)}",
                "scheduler",
            ) from None
    plan = Plan(cfg, steps_per_epoch, epoch_lrs, step_lrs, momentum)
    if not schedule.cycles_momentum:
        plan.momentum = None
    _check_lrs(plan)
    if schedule.monitor is not None:
        plan.plateau = {"floor": block.kwargs.get("min_lr", 0), "fastest_decay": epoch_lrs}
    plan.warnings = lint(plan)
    return plan


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
    parts = [s for s in segments(plan.config.scheduler, plan.run_length) if not s.block.schedulers]
    owners = [s for s in parts if s.start <= bad < s.start + s.length] or parts
    block = owners[0].block if owners else plan.config.scheduler
    key = owners[0].key if owners else "scheduler"
    culprits = schedule_kinds.kind(block.name).lr_arguments
    given = [a for a in culprits if a in block.kwargs]
    negative = [a for a in given if _is_negative(block.kwargs[a])]
    argument = (negative or given or culprits or [None])[0]
    where = f"{key}.{argument}" if argument else key
    if lr < 0:
        problem = "an lr must not be negative (torch would train uphill)"
    elif lr > FLOAT32_MAX:
        problem = f"above float32's largest number ({FLOAT32_MAX:.3g}): training would overflow"
    else:
        problem = "an lr must be a finite number"
    value = f" ({argument}: {block.kwargs[argument]})" if argument in block.kwargs else ""
    raise ConfigError(
        f"{where}: {block.name} gives lr {lr:.4g} at {plan.at(bad)}{value}; {problem}", where
    )


def _is_negative(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, int | float) and v < 0 for v in values)


def lint(plan: Plan) -> list[str]:
    """Schedules that train without an error and give a worse model: what will happen, and
    how to fix it. Each kind's own rules sit in its schedule_kinds entry; the rules here hold
    for every kind. Epochs and steps are counted as in the plan: from 1, over the whole run."""
    block = plan.config.scheduler
    parts = list(segments(block, plan.run_length))
    warnings = []
    for segment in parts:
        for rule in schedule_kinds.kind(segment.block.name).lints:
            warnings += rule(segment, plan)
    length = warmup_length(block.warmup)
    if length >= plan.run_length:
        warnings.append(
            f"scheduler.warmup: the warmup lasts {length} {plan.units}, the whole run is "
            f"{plan.run_length}: the scheduler after it never runs; shorten the warmup"
        )
    # A warmup from 0 per optimizer step (transformers' schedules) trains only its first step
    # at lr 0; a whole epoch at lr 0 is the pitfall.
    first_epoch = plan.step_lrs[: plan.steps_per_epoch]
    if first_epoch and not any(first_epoch):
        warnings.append(
            "epoch 1 trains at lr 0: the scheduler sets the lr when it is built "
            "(LambdaLR with epoch / 10 gives 0 at epoch 0); start above 0, e.g. "
            "(epoch + 1) / 10"
        )
    warnings += _vanishing_lr(plan, parts)
    return warnings


# An lr below this fraction of its peak so far moves the weights by float rounding only (the
# warning spells it 1e-8).
VANISHING = 1e-8


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
    kind = schedule_kinds.kind(segment.block.name)
    advise = kind.vanishing_fix or (lambda block, length: "keep the lr above it")
    if segment.key == "scheduler" and plan.interval == "step" and kind.interval == "epoch":
        # its counts were meant as epochs
        fix = f"interval: epoch, or {advise(segment.block, plan.config.epochs)}"
    else:
        fix = advise(segment.block, segment.length)
    rehearsed = "" if len(lrs) == plan.run_length else "first "
    return [
        f"{segment.key}: the lr falls below 1e-8 x its peak ({first_peak:.3g}) at "
        f"{plan.at(first)}, and {len(below)} of the {rehearsed}{len(lrs)} {plan.units} "
        f"train below that: they barely move the weights; use {fix}"
    ]
