"""A scheduler block as the run will use it: resolved (its kind's canonical name, interval,
monitor, warmup in the units it is stepped in, lengths filled in from the run), how many times
it is stepped, the stretch of the run each nested block governs, and the key of its peak lr.

What each kind needs comes from its entry in schedule_kinds.KINDS. torch is imported inside
functions only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lrsched_cli import schedule_kinds
from lrsched_cli.config import ConfigError, ExperimentConfig, SchedulerConfig, WarmupConfig
from lrsched_cli.schedule_kinds import canonical_name, kind
from lrsched_cli.signatures import is_int


def run_length(interval: str | None, epochs: int, steps_per_epoch: int) -> int:
    """How many times a run steps its schedule: once per epoch, or once per optimizer step.
    The one place this is counted; a warmup in front takes the first warmup_length() of them."""
    return epochs * (steps_per_epoch if interval == "step" else 1)


def warmup_length(warmup: dict | WarmupConfig | None) -> int:
    """A resolved warmup's length in its scheduler's own steps (epochs or optimizer steps)."""
    if warmup is None:
        return 0
    if isinstance(warmup, dict):
        return warmup.get("steps") or warmup.get("epochs") or 0
    return warmup.steps or warmup.epochs or 0


def resolve_scheduler(
    cfg: SchedulerConfig, epochs: int, steps_per_epoch: int, task: str
) -> SchedulerConfig:
    """Fill in what the run will use: the canonical name, interval, monitor, the lengths a kind
    takes from the run (OneCycleLR's total_steps); refuse what torch would refuse mid-run."""
    resolved = _resolve(cfg, epochs, steps_per_epoch, task)
    if resolved.name != "none":
        _check_lengths(resolved, epochs, steps_per_epoch)
    return resolved


def _resolve(
    cfg: SchedulerConfig, epochs: int, steps_per_epoch: int, task: str, key: str = "scheduler"
):
    name = canonical_name(cfg.name)
    if name == "none":
        _refuse_keys(cfg, "none", ["interval", "monitor", "schedulers", "warmup", *cfg.kwargs])
        return SchedulerConfig(name="none")
    entry = kind(name)
    _check_positive(cfg, name, key)
    children = _resolve_children(cfg, name, epochs, steps_per_epoch, task)
    interval = cfg.interval or _default_interval(name, cfg.schedulers)
    if entry.needs_metric and interval == "step":
        raise ConfigError(
            f"scheduler.interval: {name} is stepped once per epoch, "
            "with that epoch's metric; use interval: epoch",
            "scheduler.interval",
        )
    updates: dict[str, Any] = {"name": name, "interval": interval, "schedulers": children}
    if entry.needs_metric:
        updates["monitor"] = cfg.monitor or "val_loss"
        updates["mode"] = _plateau_mode(cfg, updates["monitor"], task)
    elif cfg.monitor is not None:
        raise ConfigError(
            f"scheduler.monitor: only ReduceLROnPlateau is fed a metric, not {name}",
            "scheduler.monitor",
        )
    if cfg.warmup is not None:
        updates["warmup"] = _resolve_warmup(cfg.warmup, interval, steps_per_epoch)
    if _fills_length(entry, cfg.kwargs):
        length = run_length(interval, epochs, steps_per_epoch)
        updates[entry.length_key] = max(1, length - warmup_length(updates.get("warmup")))
    if entry.arguments is not None:
        length = run_length(interval, epochs, steps_per_epoch)
        length = max(1, length - warmup_length(updates.get("warmup")))
        updates.update(entry.arguments(cfg.kwargs, length, key))
    return SchedulerConfig.model_validate({**cfg.model_dump(exclude_none=True), **updates})


def _fills_length(entry: schedule_kinds.ScheduleKind, kwargs: dict[str, Any]) -> bool:
    if entry.length_key is None or entry.length_key in kwargs:
        return False
    return entry.length_given is None or not entry.length_given(kwargs)


def _check_positive(cfg: SchedulerConfig, name: str, key: str) -> None:
    # 0 raises ZeroDivisionError in torch's first step(); a negative value gives a schedule
    # nobody meant.
    for argument in kind(name).positive:
        value = cfg.kwargs.get(argument)
        if is_int(value) and value < 1:
            where = f"{key}.{argument}"
            raise ConfigError(
                f"{where}: {name}'s {argument} is a number of steps: 1 or more (got {value})",
                where,
            )


def _resolve_warmup(warmup: WarmupConfig, interval: str, steps_per_epoch: int) -> dict:
    """Express the warmup in the units the scheduler is stepped in."""
    if (warmup.epochs is None) == (warmup.steps is None):
        raise ConfigError(
            "scheduler.warmup: give epochs or steps (one of them)", "scheduler.warmup"
        )
    if warmup.steps is not None and interval == "epoch":
        raise ConfigError(
            "scheduler.warmup.steps: this scheduler is stepped once per epoch; give warmup.epochs",
            "scheduler.warmup.steps",
        )
    if interval == "step":
        steps = warmup.steps or warmup.epochs * steps_per_epoch
        return {"steps": steps, "start_factor": warmup.start_factor}
    return {"epochs": warmup.epochs, "start_factor": warmup.start_factor}


def _resolve_children(cfg, name, epochs, steps_per_epoch, task) -> list[SchedulerConfig] | None:
    if not kind(name).composite:
        _refuse_keys(cfg, name, ["schedulers"])
        return None
    if not cfg.schedulers:
        raise ConfigError(
            f"scheduler.schedulers: {name} needs a list of nested scheduler blocks",
            "scheduler.schedulers",
        )
    resolved = []
    for i, child in enumerate(cfg.schedulers):
        key = f"scheduler.schedulers.{i}"
        _refuse_keys(child, "a nested scheduler", ["interval", "monitor", "warmup"], key)
        child_name = canonical_name(child.name)
        if child_name == "none" or kind(child_name).needs_metric:
            raise ConfigError(
                f"{key}.name: {name} cannot hold {child_name}; torch refuses it "
                "(use ReduceLROnPlateau on its own)",
                f"{key}.name",
            )
        resolved.append(_resolve(child, epochs, steps_per_epoch, task, key))
    interval = cfg.interval or _default_interval(name, cfg.schedulers)
    length = run_length(interval, epochs, steps_per_epoch)
    milestones = cfg.kwargs.get("milestones") if name == "SequentialLR" else None
    fitted = []
    for i, (child, given) in enumerate(zip(resolved, cfg.schedulers, strict=True)):
        # Nested schedulers step at the parent's interval; a length filled in from the run
        # spans the child's own segment only.
        data = child.model_dump(exclude_none=True)
        data.pop("interval")
        entry = kind(child.name)
        if _fills_length(entry, given.kwargs):
            data[entry.length_key] = max(_segment_length(i, milestones, length), 1)
        fitted.append(SchedulerConfig.model_validate(data))
    return fitted


def _segment_length(index: int, milestones: list | None, length: int) -> int:
    if not isinstance(milestones, list) or not all(isinstance(m, int) for m in milestones):
        return length
    bounds = [0, *milestones, length]
    if index + 1 >= len(bounds):
        return length
    return bounds[index + 1] - bounds[index]


@dataclass(frozen=True)
class Segment:
    """A scheduler block and the stretch of the run whose lr it sets, in the units the run
    steps the scheduler in (optimizer steps, or epochs)."""

    key: str  # its dotted path in the config
    block: SchedulerConfig
    start: int  # the run's steps before its first
    length: int  # the run's steps whose lr it sets
    # How many times torch steps it: a SequentialLR child that a later one takes over from is
    # stepped once less (the milestone step goes to the next); None where the milestones are
    # invalid, which torch refuses when the scheduler is built.
    steps: int | None


def segments(block: SchedulerConfig, length: int, key: str = "scheduler") -> Iterator[Segment]:
    """A resolved block, then every block nested in it, each with the stretch of a run of
    `length` steps it governs: after the warmup, and between its SequentialLR milestones."""
    warmup = warmup_length(block.warmup)
    yield from _segments(Segment(key, block, warmup, length - warmup, length - warmup))


def _segments(segment: Segment) -> Iterator[Segment]:
    yield segment
    block, children = segment.block, segment.block.schedulers or []
    milestones = block.kwargs.get("milestones")
    if block.name != "SequentialLR":
        bounds = None
    elif _valid_milestones(milestones, len(children)):
        bounds = [0, *milestones, segment.length]
    else:
        bounds = []
    for i, child in enumerate(children):
        where = f"{segment.key}.schedulers.{i}"
        if bounds is None:  # ChainedScheduler: every child runs the whole stretch
            yield from _segments(
                Segment(where, child, segment.start, segment.length, segment.steps)
            )
        elif not bounds or segment.steps is None:
            yield from _segments(Segment(where, child, segment.start, segment.length, None))
        else:
            length = bounds[i + 1] - bounds[i]
            last = i == len(children) - 1
            steps = length - (segment.length - segment.steps) if last else length - 1
            yield from _segments(Segment(where, child, segment.start + bounds[i], length, steps))


def _valid_milestones(milestones: Any, children: int) -> bool:
    return (
        isinstance(milestones, list)
        and len(milestones) == children - 1
        and all(is_int(m) for m in milestones)
        and milestones == sorted(milestones)
    )


def _check_lengths(resolved: SchedulerConfig, epochs: int, steps_per_epoch: int) -> None:
    """Each block's kind refuses now what torch would refuse mid-run."""
    per_step = resolved.interval == "step"
    for segment in segments(resolved, run_length(resolved.interval, epochs, steps_per_epoch)):
        check = kind(segment.block.name).check
        if check is not None:
            check(segment, per_step, epochs, steps_per_epoch)


def _default_interval(name: str, children: list[SchedulerConfig] | None) -> str:
    if children:
        steps = [kind(canonical_name(c.name)).interval for c in children]
        return "step" if "step" in steps else "epoch"
    return kind(name).interval


def _plateau_mode(cfg: SchedulerConfig, monitor: str, task: str) -> str:
    if monitor == "val_accuracy" and task != "classification":
        raise ConfigError(
            "scheduler.monitor: val_accuracy exists only for classification; "
            "this dataset is regression, monitor val_loss",
            "scheduler.monitor",
        )
    wanted = "max" if monitor == "val_accuracy" else "min"
    mode = cfg.kwargs.get("mode", wanted)
    if mode != wanted:
        raise ConfigError(
            f"scheduler.mode: mode {mode!r} contradicts monitor {monitor!r}, which "
            f"should be {'maximised' if wanted == 'max' else 'minimised'}; "
            f"use mode: {wanted}",
            "scheduler.mode",
        )
    return mode


def _refuse_keys(cfg: SchedulerConfig, owner: str, keys: list[str], key: str = "scheduler"):
    given = cfg.model_dump(exclude_none=True)
    for name in keys:
        if name in given and name != "name":
            raise ConfigError(f"{key}.{name}: {owner} takes no {name!r}", f"{key}.{name}")


def check_extensible(block: SchedulerConfig, epochs: int) -> None:
    """Refuse to train a run on to `epochs` where its resolved `block` holds a schedule laid
    out over a fixed number of steps: it ends with the run it was planned for."""
    for segment in segments(block, 0):
        entry = kind(segment.block.name)
        if entry.fixed_length:
            key = entry.length_key
            raise ConfigError(
                f"--epochs {epochs}: {segment.key} is {segment.block.name}, laid out over {key} "
                f"{segment.block.kwargs.get(key)}: torch cannot step it past the run's planned "
                f"end; start a new run with epochs: {epochs}"
            )


def cycles_momentum(block: SchedulerConfig) -> bool:
    """Whether a kind in a resolved `block` cycles the optimizer's momentum or beta1."""
    return any(
        kind(s.block.name).cycles_momentum and schedule_kinds.argument(s.block, "cycle_momentum")
        for s in segments(block, 0)
    )


def peak_lr_key(block: SchedulerConfig) -> str:
    """The config key that holds a schedule's peak lr: `optimizer.lr`, or the scheduler's own
    key for a kind that sets its peak itself (OneCycleLR's and CyclicLR's max_lr)."""
    name = canonical_name(block.name)
    peak = kind(name).peak_lr if name != "none" else None
    return f"scheduler.{peak}" if peak else "optimizer.lr"


def with_peak_lr(cfg: ExperimentConfig, lr: float) -> ExperimentConfig:
    """`cfg` with its peak lr set to `lr`; the keys that move with the peak (CyclicLR's
    base_lr) keep their ratio to it."""
    key = peak_lr_key(cfg.scheduler)
    if key == "optimizer.lr":
        return cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"lr": lr})})
    block = cfg.scheduler
    entry = kind(canonical_name(block.name))
    old = _first(block.kwargs[entry.peak_lr])
    data = block.model_dump(exclude_none=True)
    for name in (entry.peak_lr, *entry.moves_with_peak):
        if name in block.kwargs:
            data[name] = _moved(block.kwargs[name], old, lr)
    return cfg.model_copy(update={"scheduler": SchedulerConfig.model_validate(data)})


def _first(value: Any) -> float:
    """A peak given per parameter group moves with its first group's."""
    return float(value[0] if isinstance(value, list | tuple) else value)


def _moved(value: Any, old: float, new: float) -> Any:
    """`value` (a number, or one per parameter group) times new / old; the old peak itself
    becomes exactly `new`."""
    if isinstance(value, list | tuple):
        return [_moved(item, old, new) for item in value]
    value = float(value)
    return new if value == old else value * new / old
