"""The table of schedule kinds: for every name a scheduler block may give, what lrsched knows
that torch's signature does not say. An entry says how the kind is built on a torch optimizer,
its default interval, whether it is fed a metric, which key holds its peak lr, which key is
filled in from the run's length, the limits of its arguments, its lint rules and the words for
its lr events.

A schedule kind is added here: an entry in KINDS (with `factory` where torch has no class of
that name), and its tests. A torch class without an entry is stepped once per epoch, with
nothing filled in and no lint of its own. torch is imported inside functions only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lrsched_cli import hf_schedules
from lrsched_cli.config import ConfigError, SchedulerConfig
from lrsched_cli.expressions import LrExpression
from lrsched_cli.registry import lookup_name, scheduler_classes
from lrsched_cli.signatures import construct, is_int

if TYPE_CHECKING:
    from lrsched_cli.planning import Plan
    from lrsched_cli.schedule_config import Segment

# A lint rule: the warnings for one block of a plan (its segment: where in the run it governs).
LintRule = Callable[["Segment", "Plan"], Iterable[str]]
# The words for an lr change at the end of `epoch` (None: it needs none); `before` is the
# plateau state before the step, `ratio` the change ("x0.5", or "to 0.01" from 0).
Explain = Callable[[SchedulerConfig, int, dict, str], "str | None"]


@dataclass(frozen=True)
class ScheduleKind:
    """What lrsched knows about one schedule name beyond its signature."""

    # How it is built: None calls torch's class of the same name; otherwise a callable
    # factory(optimizer, **arguments) -> a torch scheduler, whose own signature names the
    # arguments a config may give (checked as torch's are).
    factory: Callable[..., Any] | None = None
    interval: str = "epoch"  # "step" where the schedule is laid out in optimizer steps
    needs_metric: bool = False  # step(metrics) instead of step()
    expression_args: tuple[str, ...] = ()  # arguments given as LrExpression text
    composite: bool = False  # takes nested `schedulers:` blocks
    # The key of its block that holds the peak lr (None: the optimizer's lr), and the keys
    # that move with it, keeping their ratio to it.
    peak_lr: str | None = None
    moves_with_peak: tuple[str, ...] = ()
    # The argument filled in from the number of times it is stepped, unless the config sets
    # its length (`length_given`); `fixed_length`: torch refuses to step it past that length.
    length_key: str | None = None
    length_given: Callable[[dict[str, Any]], bool] | None = None
    fixed_length: bool = False
    cycles_momentum: bool = False  # cycles momentum or beta1 unless cycle_momentum is false
    # Lengths torch divides by (`epoch % step_size`) or that make no schedule below 1.
    positive: tuple[str, ...] = ()
    # The arguments that set the lr's size, the likeliest culprit first: where a schedule gives
    # a negative or overflowing lr, the message names one of these.
    lr_arguments: tuple[str, ...] = ()
    lints: tuple[LintRule, ...] = ()
    explain: Explain | None = None
    # What to change when it drives the lr below 1e-8 x its peak: (block, length) -> advice.
    vanishing_fix: Callable[[SchedulerConfig, int], str] | None = None
    # A check made when the config is resolved, refusing what torch would refuse mid-run:
    # (segment, per_step, epochs, steps_per_epoch) -> None, or it raises ConfigError.
    check: Callable[[Segment, bool, int, int], None] | None = None
    # Its arguments as the resolved config records them, where its signature's defaults are
    # not the whole story (checked against each other, defaults filled in, some derived):
    # (the config's arguments, the times it is stepped, key) -> arguments, or ConfigError.
    arguments: Callable[[dict[str, Any], int, str], dict[str, Any]] | None = None


DEFAULT = ScheduleKind()


def kind(name: str) -> ScheduleKind:
    """The table's entry for a canonical schedule name (DEFAULT for one it has none for)."""
    return KINDS.get(name, DEFAULT)


def schedule_names() -> dict[str, Callable[..., Any]]:
    """Every name a scheduler block may give, with what builds it: torch's classes, and the
    kinds lrsched builds from them."""
    built = {name: entry.factory for name, entry in KINDS.items() if entry.factory is not None}
    return {**scheduler_classes(), **built}


def canonical_name(name: str) -> str:
    """The schedule name `name` means (an alias or any capitalisation), or `none`."""
    if name.lower() == "none":
        return "none"
    if hf_schedules.is_schedule_name(name):  # suggests among the hf. names only
        return hf_schedules.canonical_name(name)
    return lookup_name(name, schedule_names(), "scheduler", "scheduler.name", ALIASES, ("none",))


def target(name: str) -> Callable[..., Any]:
    """What builds the canonical `name`: its factory, or torch's class."""
    return kind(name).factory or scheduler_classes()[name]


def argument(block: SchedulerConfig, name: str) -> Any:
    """What the schedule gets for argument `name` of a resolved block: the config's value, or
    the default in its own signature (torch's, which a torch release may change)."""
    if name in block.kwargs:
        return block.kwargs[name]
    return inspect.signature(target(block.name)).parameters[name].default


def build(optimizer, block: SchedulerConfig, key: str = "scheduler"):
    """The torch scheduler of a resolved block without its warmup (schedule.py joins that)."""
    entry = kind(block.name)
    kwargs = block.kwargs
    for arg in entry.expression_args:
        if arg in kwargs:
            kwargs[arg] = expressions(kwargs[arg], f"{key}.{arg}")
    maker = target(block.name)
    if entry.composite:
        children = [
            build(optimizer, child, f"{key}.schedulers.{i}")
            for i, child in enumerate(block.schedulers)
        ]
        first_param = next(iter(inspect.signature(maker).parameters))
        if first_param == "schedulers":  # ChainedScheduler(schedulers, optimizer=None)
            return construct(maker, children, kwargs, key, {"optimizer": optimizer})
        return construct(maker, optimizer, kwargs, key, {"schedulers": children})
    return construct(maker, optimizer, kwargs, key)


def check_expressions(block: SchedulerConfig, counters: range, key: str = "scheduler") -> None:
    """Evaluate every lr expression at each counter the run will step through."""
    for arg in kind(block.name).expression_args:
        if arg in block.kwargs:
            for expression in _as_list(expressions(block.kwargs[arg], f"{key}.{arg}")):
                expression.check(counters)
    for i, child in enumerate(block.schedulers or []):
        check_expressions(child, counters, f"{key}.schedulers.{i}")


def expressions(value: Any, key: str):
    if isinstance(value, LrExpression):
        return value
    if isinstance(value, list):
        return [expressions(item, f"{key}.{i}") for i, item in enumerate(value)]
    return LrExpression(value, key)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _ratio(new_lr: float, old_lr: float) -> str:
    return f"x{new_lr / old_lr:.3g}" if old_lr else f"to {new_lr:.3g}"


# Lint rules. Epochs and steps are counted as the plan counts them: from 1, over the whole run.


def _cosine_rises_again(segment: Segment, plan: Plan) -> Iterator[str]:
    # Stepped from 0 at segment.start, the cosine is at its minimum at T_max, and it rises
    # again only if the segment trains past T_max + 1.
    t_max = segment.block.kwargs["T_max"]
    if t_max + 1 < segment.length:
        yield (
            f"{segment.key}.T_max: T_max {t_max} is shorter than the {segment.length} "
            f"{plan.units} it is stepped: the lr rises again after "
            f"{plan.at(segment.start + t_max)}; set T_max: {segment.length}"
        )


def _cycle_per_epoch(segment: Segment, plan: Plan) -> Iterator[str]:
    if plan.interval == "epoch":
        yield (
            f"{segment.key}: {segment.block.name} is stepped once per epoch, so its cycle is "
            f"laid out in epochs; it is meant per optimizer step: set interval: step"
        )


def _momentum_overridden(segment: Segment, plan: Plan) -> Iterator[str]:
    block = segment.block
    if "cycle_momentum" not in block.kwargs and argument(block, "cycle_momentum"):
        plain = plan.config.optimizer.name.lower() in ("sgd", "rmsprop")
        what = "momentum" if plain else "beta1"
        yield (
            f"{segment.key}: {block.name} cycles the optimizer's {what} between base_momentum "
            f"and max_momentum, overriding the optimizer's own; set cycle_momentum: false to "
            f"keep it"
        )


def _onecycle_cut_short(segment: Segment, plan: Plan) -> Iterator[str]:
    # A cycle shorter than its segment is refused when the config is resolved.
    key, cycle = _cycle_length(segment.block.kwargs)
    if cycle is not None and cycle > segment.length:
        yield (
            f"{segment.key}.{key}: OneCycleLR's cycle is {cycle} {plan.units}, but it is "
            f"stepped {segment.length} times: the cycle is cut short before it anneals; leave "
            f"the cycle's length out and lrsched fills in total_steps: {segment.length}"
        )


def _lambda_unclamped(segment: Segment, plan: Plan) -> Iterator[str]:
    if plan.epoch_lrs:
        start, peak = plan.config.optimizer.lr, max(plan.step_lrs or plan.epoch_lrs)
        if peak > start * (1 + 1e-9):
            yield (
                f"{segment.key}.lr_lambda: the lr reaches {peak:.4g}, above the initial "
                f"{start:g}: the multiplier is not clamped; wrap it, e.g. min(1, ...)"
            )


def _patience_outlasts_the_run(segment: Segment, plan: Plan) -> Iterator[str]:
    # The segment after the warmup: the epochs the plateau is fed.
    patience = argument(segment.block, "patience")
    if patience >= segment.length:
        yield (
            f"{segment.key}.patience: patience {patience} >= the {segment.length} epochs it is "
            f"fed: ReduceLROnPlateau can never cut the lr; lower patience or train longer"
        )


def _cycle_length(kwargs: dict) -> tuple[str, int | None]:
    """The key that sets a OneCycleLR's cycle and its length: total_steps, or epochs x
    steps_per_epoch (torch's order)."""
    if "total_steps" in kwargs:
        return "total_steps", kwargs["total_steps"]
    if "epochs" in kwargs and "steps_per_epoch" in kwargs:
        return "epochs", kwargs["epochs"] * kwargs["steps_per_epoch"]
    return "total_steps", None


def _has_cycle_length(kwargs: dict[str, Any]) -> bool:
    return "total_steps" in kwargs or ("epochs" in kwargs and "steps_per_epoch" in kwargs)


def _check_onecycle(segment: Segment, per_step: bool, epochs: int, steps_per_epoch: int) -> None:
    """A OneCycleLR whose cycle is shorter than the steps it is given makes torch raise mid-run:
    refuse it now, naming the key and the length to use."""
    kwargs = segment.block.kwargs
    if segment.steps is None:
        return
    unit = "step" if per_step else "epoch"
    given = kwargs.get("total_steps")
    if given is None:
        cycle_epochs, cycle_steps = kwargs.get("epochs"), kwargs.get("steps_per_epoch")
        if not all(is_int(n) for n in (cycle_epochs, cycle_steps)):
            return  # torch's own check of the arguments speaks when it is built
        cycle = cycle_epochs * cycle_steps
    elif is_int(given):
        cycle = given
    else:
        return
    if cycle >= segment.steps:
        return
    if segment.key == "scheduler" and segment.start == 0:
        span = f"{epochs} epochs x {steps_per_epoch} steps" if per_step else f"{epochs} epochs"
    else:
        span = f"{unit}s {segment.start + 1} to {segment.start + segment.length} of the run"
    outcome = (
        f"it is stepped {segment.steps} times ({span}), and torch stops the run with an "
        f"error at {'step' if per_step else 'the end of epoch'} {segment.start + cycle + 1}"
    )
    if given is not None:
        where, fix = f"{segment.key}.total_steps", f"total_steps: {segment.length}"
        told = f"total_steps is {given}"
    else:
        where = f"{segment.key}.epochs"
        told = f"cycle is epochs x steps_per_epoch = {cycle_epochs} x {cycle_steps} = {cycle}"
        exact = segment.length % cycle_steps == 0
        fix = (
            f"epochs: {segment.length // cycle_steps}"
            if exact
            else f"total_steps: {segment.length} in their place"
        )
        if per_step and cycle_steps != steps_per_epoch:
            fix += f" (an epoch of this run is {steps_per_epoch} steps)"
    raise ConfigError(
        f"{where}: OneCycleLR's {told}, but {outcome}; set {fix}, or leave the cycle's "
        "length out and lrsched fills it in",
        where,
    )


# lr events: why an epoch schedule's step changed the lr.


def _plateau_event(block: SchedulerConfig, epoch: int, before: dict, ratio: str) -> str:
    bad = before.get("bad_epochs", 0) + 1
    return f"plateau: {bad} bad epochs > patience {argument(block, 'patience')}, {ratio}"


def _step_size_event(block: SchedulerConfig, epoch: int, before: dict, ratio: str) -> str:
    return f"step_size {block.kwargs['step_size']}: {ratio}"


def _milestone_event(block: SchedulerConfig, epoch: int, before: dict, ratio: str) -> str:
    return f"milestone {epoch}: {ratio}"


def _next_scheduler_event(block: SchedulerConfig, epoch: int, before: dict, ratio: str):
    if epoch in block.kwargs.get("milestones", []):
        return f"milestone {epoch}: next scheduler"
    return None


def _end_event(block: SchedulerConfig, epoch: int, before: dict, ratio: str) -> str | None:
    return f"{block.name} end: {ratio}" if epoch == argument(block, "total_iters") else None


CYCLING_LINTS = (_cycle_per_epoch, _momentum_overridden)
LAMBDA = ScheduleKind(
    expression_args=("lr_lambda",),
    lr_arguments=("lr_lambda",),
    lints=(_lambda_unclamped,),
)
KINDS: dict[str, ScheduleKind] = {
    "StepLR": ScheduleKind(
        positive=("step_size",),
        lr_arguments=("gamma",),
        explain=_step_size_event,
        vanishing_fix=lambda block, length: "a larger step_size, or a gamma nearer 1",
    ),
    "MultiStepLR": ScheduleKind(
        lr_arguments=("gamma",),
        explain=_milestone_event,
        vanishing_fix=lambda block, length: "fewer milestones, or a gamma nearer 1",
    ),
    "ExponentialLR": ScheduleKind(
        lr_arguments=("gamma",),
        vanishing_fix=lambda block, length: (
            f"a gamma nearer 1, e.g. gamma: {0.01 ** (1 / max(length - 1, 1)):.4g}, which ends "
            "the run at 1% of the start"
        ),
    ),
    "LambdaLR": ScheduleKind(
        expression_args=LAMBDA.expression_args,
        lr_arguments=LAMBDA.lr_arguments,
        lints=LAMBDA.lints,
        vanishing_fix=lambda block, length: "a floor in lr_lambda, e.g. max(0.001, ...)",
    ),
    "MultiplicativeLR": ScheduleKind(
        expression_args=LAMBDA.expression_args,
        lr_arguments=LAMBDA.lr_arguments,
        lints=LAMBDA.lints,
        vanishing_fix=lambda block, length: "a multiplier nearer 1",
    ),
    "OneCycleLR": ScheduleKind(
        interval="step",
        peak_lr="max_lr",
        length_key="total_steps",
        length_given=_has_cycle_length,
        fixed_length=True,
        cycles_momentum=True,
        lr_arguments=("max_lr", "div_factor", "final_div_factor"),
        lints=(*CYCLING_LINTS, _onecycle_cut_short),
        check=_check_onecycle,
    ),
    "CyclicLR": ScheduleKind(
        interval="step",
        peak_lr="max_lr",
        moves_with_peak=("base_lr",),
        cycles_momentum=True,
        positive=("step_size_up", "step_size_down"),
        lr_arguments=("base_lr", "max_lr"),
        lints=CYCLING_LINTS,
    ),
    "ConstantLR": ScheduleKind(lr_arguments=("factor",), explain=_end_event),
    "LinearLR": ScheduleKind(lr_arguments=("start_factor", "end_factor"), explain=_end_event),
    "PolynomialLR": ScheduleKind(
        lr_arguments=("power",),
        vanishing_fix=lambda block, length: f"total_iters: {length}, the length it is stepped",
    ),
    "CosineAnnealingLR": ScheduleKind(
        positive=("T_max",), lr_arguments=("eta_min",), lints=(_cosine_rises_again,)
    ),
    "CosineAnnealingWarmRestarts": ScheduleKind(lr_arguments=("eta_min",)),
    "ReduceLROnPlateau": ScheduleKind(
        needs_metric=True,
        lr_arguments=("factor", "min_lr"),
        lints=(_patience_outlasts_the_run,),
        explain=_plateau_event,
    ),
    "SequentialLR": ScheduleKind(composite=True, explain=_next_scheduler_event),
    "ChainedScheduler": ScheduleKind(composite=True),
}


# Schedules torch has no class for (hf_schedules): torch's LambdaLR over transformers'
# formulas, and wsd. Stepped per optimizer step, with their length filled in from the run.


def _phases_lint(segment: Segment, plan: Plan) -> Iterator[str]:
    block = segment.block
    yield from hf_schedules.lint(block.name, block.kwargs, segment.length, segment.key, plan.units)


def _phases_event(block: SchedulerConfig, epoch: int, before: dict, ratio: str) -> str | None:
    # `epoch` counts the run's epochs; the schedule's own count starts after a warmup block.
    warmup = (block.warmup.epochs or 0) if block.warmup is not None else 0
    return hf_schedules.event(block.name, block.kwargs, epoch - warmup)


def _factor_kind(name: str) -> ScheduleKind:
    accepted = hf_schedules.parameters(name)
    return ScheduleKind(
        factory=hf_schedules.SCHEDULES[name],
        interval="step",
        length_key=next((k for k in hf_schedules.LENGTH_ARGUMENTS if k in accepted), None),
        lr_arguments=tuple(a for a in hf_schedules.LR_ARGUMENTS if a in accepted),
        lints=(_phases_lint,),
        explain=_phases_event,
        arguments=lambda given, length, key: hf_schedules.resolve(name, given, length, key),
    )


KINDS.update({name: _factor_kind(name) for name in hf_schedules.SCHEDULES})
ALIASES = {
    "step": "StepLR",
    "multistep": "MultiStepLR",
    "exponential": "ExponentialLR",
    "cosine": "CosineAnnealingLR",
    "cosine_restarts": "CosineAnnealingWarmRestarts",
    "onecycle": "OneCycleLR",
    "cyclic": "CyclicLR",
    "plateau": "ReduceLROnPlateau",
    "lambda": "LambdaLR",
    "multiplicative": "MultiplicativeLR",
    "linear": "LinearLR",
    "constant": "ConstantLR",
    "polynomial": "PolynomialLR",
    "sequential": "SequentialLR",
    "chained": "ChainedScheduler",
}
