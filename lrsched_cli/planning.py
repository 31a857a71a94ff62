"""Understand a schedule: its lr before training (plan), its pitfalls (lint), and why each lr
changed during training (explain). torch's own schedulers do the stepping, on a stand-in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lrsched_cli.config import ExperimentConfig, SchedulerConfig
from lrsched_cli.registry import (
    build_optimizer,
    build_scheduler,
    check_expressions,
    scheduler_spec,
    segment_length,
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
    plan = Plan(cfg, steps_per_epoch, epoch_lrs, step_lrs, momentum if cycling else None)
    if needs_metric:
        kwargs = block.kwargs
        plan.plateau = {"floor": kwargs.get("min_lr", 0), "fastest_decay": epoch_lrs}
    plan.warnings = lint(plan)
    return plan


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
    how to fix it."""
    cfg, block = plan.config, plan.config.scheduler
    run_length = cfg.epochs * (plan.steps_per_epoch if plan.interval == "step" else 1)
    unit = "steps" if plan.interval == "step" else "epochs"
    warnings = []
    for where, child, length in _blocks(block, run_length - warmup_length(block.warmup)):
        warnings += _lint_block(where, child, plan, length, unit)
    length = warmup_length(block.warmup)
    if length >= run_length:
        warnings.append(
            f"scheduler.warmup: the warmup lasts {length} {unit}, the whole run is "
            f"{run_length}: the scheduler after it never runs; shorten the warmup"
        )
    if plan.epoch_lrs and plan.epoch_lrs[0] == 0:
        warnings.append(
            "epoch 1 trains at lr 0: the scheduler sets the lr when it is built "
            "(LambdaLR with epoch / 10 gives 0 at epoch 0); start above 0, e.g. "
            "(epoch + 1) / 10"
        )
    return warnings


def _lint_block(where: str, block: SchedulerConfig, plan: Plan, length: int, unit: str):
    kwargs, name = block.kwargs, block.name
    if name == "CosineAnnealingLR" and kwargs.get("T_max", length) < length:
        yield (
            f"{where}.T_max: T_max {kwargs['T_max']} is shorter than the {length} {unit} it "
            f"is stepped: the lr rises again after {unit[:-1]} {kwargs['T_max']}; set T_max: "
            f"{length}"
        )
    if name in CYCLING and plan.interval == "epoch":
        yield (
            f"{where}: {name} is stepped once per epoch, so its cycle is laid out in "
            f"epochs; it is meant per optimizer step: set interval: step"
        )
    if name == "OneCycleLR" and kwargs.get("total_steps") not in (None, length):
        outcome = (
            "torch raises at the step after it"
            if kwargs["total_steps"] < length
            else "the cycle is cut short before it anneals"
        )
        yield (
            f"{where}.total_steps: total_steps is {kwargs['total_steps']} but the run steps "
            f"it {length} times: {outcome}; leave total_steps out and lrsched fills it in"
        )
    if name in CYCLING and "cycle_momentum" not in kwargs:  # torch's silent default: True
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
        patience = kwargs.get("patience", 10)
        epochs = plan.config.epochs - warmup_length(plan.config.scheduler.warmup)
        if patience >= epochs:
            yield (
                f"{where}.patience: patience {patience} >= the {epochs} epochs it is fed: "
                f"ReduceLROnPlateau can never cut the lr; lower patience or train longer"
            )


def _blocks(block: SchedulerConfig, length: int, where: str = "scheduler"):
    """Each block with where it is and how many times it is stepped: a SequentialLR child
    runs only its segment between milestones."""
    yield where, block, length
    milestones = block.kwargs.get("milestones") if block.name == "SequentialLR" else None
    for i, child in enumerate(block.schedulers or []):
        yield from _blocks(child, segment_length(i, milestones, length), f"{where}.schedulers.{i}")


def cycles_momentum(block: SchedulerConfig) -> bool:
    """Whether a OneCycleLR or CyclicLR in `block` cycles the optimizer's momentum or beta1."""
    return any(
        b.name in CYCLING and b.kwargs.get("cycle_momentum", True) for _, b, _ in _blocks(block, 0)
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
        return f"plateau: {bad} bad epochs > patience {kwargs.get('patience', 10)}, {ratio}"
    if block.name == "StepLR":
        return f"step_size {kwargs['step_size']}: {ratio}"
    if block.name == "MultiStepLR":
        return f"milestone {epoch}: {ratio}"
    if block.name == "SequentialLR" and epoch in kwargs.get("milestones", []):
        return f"milestone {epoch}: next scheduler"
    if block.name in ("ConstantLR", "LinearLR") and epoch == kwargs.get("total_iters", 5):
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
