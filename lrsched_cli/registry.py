"""Config names -> torch's optimizer and scheduler classes, with kwargs checked against torch.

torch is imported inside functions only, so importing this module is free.
"""

from __future__ import annotations

import collections.abc
import difflib
import importlib
import inspect
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lrsched_cli.config import (
    ConfigError,
    OptimizerConfig,
    SchedulerConfig,
    WarmupConfig,
    excerpt,
)
from lrsched_cli.expressions import LrExpression

if TYPE_CHECKING:
    import torch

SCHEDULER_MODULE = "torch.optim.lr_scheduler"
# Arguments lrsched owns: torch's `last_epoch` would bypass state_dict on resume.
MANAGED = {"self", "optimizer", "params", "schedulers", "last_epoch"}
# Optimizers whose step() needs more than a plain loss.backward(): a closure or sparse gradients.
UNSUPPORTED_OPTIMIZERS = {
    "LBFGS": "its step() needs a closure that re-evaluates the loss",
    "SparseAdam": "it needs sparse gradients, which these models do not produce",
    "Muon": "it accepts only 2-D parameters, and these models have biases",
}


@dataclass(frozen=True)
class SchedulerSpec:
    """What torch's signature does not say about a scheduler."""

    interval: str = "epoch"  # "step" where the schedule is laid out in optimizer steps
    needs_metric: bool = False  # step(metrics) instead of step()
    expression_args: tuple[str, ...] = ()  # arguments given as LrExpression text
    composite: bool = False  # takes nested `schedulers:` blocks


SPECS = {
    "OneCycleLR": SchedulerSpec(interval="step"),
    "CyclicLR": SchedulerSpec(interval="step"),
    "ReduceLROnPlateau": SchedulerSpec(needs_metric=True),
    "LambdaLR": SchedulerSpec(expression_args=("lr_lambda",)),
    "MultiplicativeLR": SchedulerSpec(expression_args=("lr_lambda",)),
    "SequentialLR": SchedulerSpec(composite=True),
    "ChainedScheduler": SchedulerSpec(composite=True),
}
# Lengths torch divides by (`epoch % step_size`) or that make no schedule below 1: 0 raises
# ZeroDivisionError in the first step(), a negative value gives a schedule nobody meant.
POSITIVE_ARGUMENTS = {
    "StepLR": ("step_size",),
    "CosineAnnealingLR": ("T_max",),
    "CyclicLR": ("step_size_up", "step_size_down"),
}
SCHEDULER_ALIASES = {
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


def scheduler_classes() -> dict[str, type]:
    """Every scheduler class torch.optim.lr_scheduler defines, by class name."""
    module = importlib.import_module(SCHEDULER_MODULE)
    base = module.LRScheduler
    return {
        name: cls
        for name, cls in vars(module).items()
        if isinstance(cls, type)
        and not name.startswith("_")
        and cls.__module__ == SCHEDULER_MODULE
        and (issubclass(cls, base) or name == "ReduceLROnPlateau")
        and cls is not base
    }


def optimizer_classes() -> dict[str, type]:
    """Every torch.optim optimizer that trains with a plain loss.backward(); step()."""
    import torch

    return {
        name: cls
        for name, cls in vars(torch.optim).items()
        if isinstance(cls, type)
        and issubclass(cls, torch.optim.Optimizer)
        and cls is not torch.optim.Optimizer
        and name not in UNSUPPORTED_OPTIMIZERS
    }


def canonical_scheduler_name(name: str) -> str:
    """The torch class name for `name` (an alias or any capitalisation), or `none`."""
    if name.lower() == "none":
        return "none"
    classes = scheduler_classes()
    return lookup_name(name, classes, "scheduler", "scheduler.name", SCHEDULER_ALIASES, ("none",))


def scheduler_spec(name: str) -> SchedulerSpec:
    return SPECS.get(name, SchedulerSpec())


def scheduler_argument(block: SchedulerConfig, argument: str) -> Any:
    """What torch gets for `argument` of a resolved block: the config's value, or the default in
    torch's own signature (which a torch release may change)."""
    if argument in block.kwargs:
        return block.kwargs[argument]
    return inspect.signature(scheduler_classes()[block.name]).parameters[argument].default


def resolve_scheduler(
    cfg: SchedulerConfig, epochs: int, steps_per_epoch: int, task: str
) -> SchedulerConfig:
    """Fill in what the run will use: the class name, interval, monitor, OneCycleLR total_steps;
    refuse what torch would refuse mid-run."""
    resolved = _resolve(cfg, epochs, steps_per_epoch, task)
    if resolved.name != "none":
        _check_cycle_lengths(resolved, epochs, steps_per_epoch)
    return resolved


def _resolve(
    cfg: SchedulerConfig, epochs: int, steps_per_epoch: int, task: str, key: str = "scheduler"
):
    name = canonical_scheduler_name(cfg.name)
    if name == "none":
        _refuse_keys(cfg, "none", ["interval", "monitor", "schedulers", "warmup", *cfg.kwargs])
        return SchedulerConfig(name="none")
    spec = scheduler_spec(name)
    _check_positive(cfg, name, key)
    children = _resolve_children(cfg, name, epochs, steps_per_epoch, task)
    interval = cfg.interval or _default_interval(name, cfg.schedulers)
    if spec.needs_metric and interval == "step":
        raise ConfigError(
            "scheduler.interval: ReduceLROnPlateau is stepped once per epoch, "
            "with that epoch's metric; use interval: epoch",
            "scheduler.interval",
        )
    updates: dict[str, Any] = {"name": name, "interval": interval, "schedulers": children}
    if spec.needs_metric:
        updates["monitor"] = cfg.monitor or "val_loss"
        updates["mode"] = _plateau_mode(cfg, updates["monitor"], task)
    elif cfg.monitor is not None:
        raise ConfigError(
            f"scheduler.monitor: only ReduceLROnPlateau is fed a metric, not {name}",
            "scheduler.monitor",
        )
    run_length = epochs * (steps_per_epoch if interval == "step" else 1)
    if cfg.warmup is not None:
        updates["warmup"] = _resolve_warmup(cfg.warmup, interval, steps_per_epoch)
    if name == "OneCycleLR" and not _has_cycle_length(cfg.kwargs):
        updates["total_steps"] = max(1, run_length - warmup_length(updates.get("warmup")))
    return SchedulerConfig.model_validate({**cfg.model_dump(exclude_none=True), **updates})


def _check_positive(cfg: SchedulerConfig, name: str, key: str) -> None:
    for argument in POSITIVE_ARGUMENTS.get(name, ()):
        value = cfg.kwargs.get(argument)
        if _is_int(value) and value < 1:
            where = f"{key}.{argument}"
            raise ConfigError(
                f"{where}: {name}'s {argument} is a number of steps: 1 or more (got {value})",
                where,
            )


def warmup_length(warmup: dict | WarmupConfig | None) -> int:
    """A resolved warmup's length in its scheduler's own steps (epochs or optimizer steps)."""
    if warmup is None:
        return 0
    if isinstance(warmup, dict):
        return warmup.get("steps") or warmup.get("epochs") or 0
    return warmup.steps or warmup.epochs or 0


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
    _rehearse_step(_construct(cls, [_stand_in(params)], kwargs, "optimizer"))
    return _construct(cls, params, kwargs, "optimizer")


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


def build_scheduler(optimizer, cfg: SchedulerConfig, key: str = "scheduler"):
    """The torch scheduler of a resolved config, or None for `none` (a constant lr)."""
    if cfg.name == "none":
        return None
    if cfg.warmup is not None:
        return _with_warmup(optimizer, cfg, key)
    cls = scheduler_classes()[cfg.name]
    spec = scheduler_spec(cfg.name)
    kwargs = cfg.kwargs
    for arg in spec.expression_args:
        if arg in kwargs:
            kwargs[arg] = _expressions(kwargs[arg], f"{key}.{arg}")
    if spec.composite:
        children = [
            build_scheduler(optimizer, child, f"{key}.schedulers.{i}")
            for i, child in enumerate(cfg.schedulers)
        ]
        first_param = next(iter(inspect.signature(cls).parameters))
        if first_param == "schedulers":  # ChainedScheduler(schedulers, optimizer=None)
            return _construct(cls, children, kwargs, key, {"optimizer": optimizer})
        return _construct(cls, optimizer, kwargs, key, {"schedulers": children})
    return _construct(cls, optimizer, kwargs, key)


def _with_warmup(optimizer, cfg: SchedulerConfig, key: str):
    """torch's LinearLR from start_factor to 1, then the scheduler: joined by SequentialLR, or,
    for ReduceLROnPlateau (which SequentialLR refuses), by WarmupThenPlateau."""
    from torch.optim.lr_scheduler import LinearLR, SequentialLR

    length = warmup_length(cfg.warmup)
    main = build_scheduler(optimizer, cfg.model_copy(update={"warmup": None}), key)
    warmup = LinearLR(optimizer, start_factor=cfg.warmup.start_factor, total_iters=length)
    if scheduler_spec(cfg.name).needs_metric:
        return WarmupThenPlateau(warmup, main, length)
    return SequentialLR(optimizer, [warmup, main], milestones=[length])


class WarmupThenPlateau:
    """Steps a warmup scheduler for its epochs, then feeds each epoch's metric to
    ReduceLROnPlateau. Warmup epochs are not fed to it: their losses say nothing of a plateau."""

    def __init__(self, warmup, plateau, epochs: int):
        self.warmup, self.plateau, self.epochs = warmup, plateau, epochs
        self.epochs_done = 0

    @property
    def optimizer(self):
        return self.plateau.optimizer

    def step(self, metrics: float) -> None:
        if self.epochs_done < self.epochs:
            self.warmup.step()
        else:
            self.plateau.step(metrics)
        self.epochs_done += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs_done": self.epochs_done,
            "warmup": self.warmup.state_dict(),
            "plateau": self.plateau.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_done = state["epochs_done"]
        self.warmup.load_state_dict(state["warmup"])
        self.plateau.load_state_dict(state["plateau"])


def check_expressions(cfg: SchedulerConfig, counters: range, key: str = "scheduler") -> None:
    """Evaluate every lr expression at each counter the run will step through."""
    for arg in scheduler_spec(cfg.name).expression_args:
        if arg in cfg.kwargs:
            for expression in _as_list(_expressions(cfg.kwargs[arg], f"{key}.{arg}")):
                expression.check(counters)
    for i, child in enumerate(cfg.schedulers or []):
        check_expressions(child, counters, f"{key}.schedulers.{i}")


def accepted_arguments(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments a config may give `cls`: its signature less what lrsched manages."""
    return {
        name: param
        for name, param in inspect.signature(cls).parameters.items()
        if name not in MANAGED
        and param.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


def _construct(cls: type, first: Any, kwargs: dict[str, Any], key: str, managed=None):
    """`cls(first, **kwargs, **managed)`, where `kwargs` come from the user and are checked."""
    accepted = accepted_arguments(cls)
    for name in kwargs:
        if name not in accepted:
            where = f"{key}.{name}"
            if name == "last_epoch":
                raise ConfigError(f"{where}: lrsched manages last_epoch; leave it out", where)
            close = difflib.get_close_matches(name, accepted, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{where}: {cls.__name__} does not take {name!r}; {hint}"
                f"it takes: {', '.join(accepted) or 'no arguments'}",
                where,
            )
    missing = [
        name
        for name, param in accepted.items()
        if param.default is inspect.Parameter.empty and name not in kwargs
    ]
    if missing:
        where = f"{key}.{missing[0]}"
        raise ConfigError(f"{where}: {cls.__name__} requires {', '.join(missing)}", where)
    checked = {
        name: _check_type(cls, accepted[name], value, f"{key}.{name}")
        for name, value in kwargs.items()
    }
    try:
        return cls(first, **checked, **(managed or {}))
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, ArithmeticError) as exc:
        raise ConfigError(
            f"{key}: torch's {cls.__name__} rejected these arguments: {one_line(exc)}", key
        ) from None


def one_line(exc: BaseException) -> str:
    """An exception's message as one line: a pydantic error's first problem, without the
    multi-line dump and its URL; anything else's first line, cut short."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        return f"{error['msg'].lower()} (got {excerpt(error.get('input'))})"
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0] if len(lines[0]) <= 300 else lines[0][:297] + "..."


def _check_type(owner: Any, param: inspect.Parameter, value: Any, where: str) -> Any:
    """Validate (and coerce, e.g. "0.1" -> 0.1) `value` against torch's own annotation."""
    from pydantic import ConfigDict, TypeAdapter, ValidationError

    annotation = _annotation(owner, param)
    if annotation is None:
        return value
    try:
        adapter = TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # an annotation pydantic cannot model: leave it to torch
        return value
    expected = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    if isinstance(value, str) and _wants_collection(annotation):
        # pydantic takes a string as an iterable of characters: '30' would be [3, 0].
        name = where.rpartition(".")[2]
        raise ConfigError(
            f"{where}: {owner.__name__} expects a list, not the string "
            f"{excerpt(value)}; write it as a list: {name}: {_as_list_text(value)}",
            where,
        )
    try:
        checked = adapter.validate_python(value)
        if isinstance(checked, collections.abc.Iterator):
            # An Iterable annotation validates lazily, inside torch; check every item now.
            checked = list(checked)
        return checked
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].lower()
        item = error["loc"][0] if error["loc"] else None
        got = f"item {item} is {excerpt(error['input'])}" if _is_int(item) else excerpt(value)
        raise ConfigError(
            f"{where}: {owner.__name__} expects {expected}; {message} (got {got})", where
        ) from None


COLLECTIONS = (
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Iterable,
    collections.abc.Sequence,
    collections.abc.Collection,
    collections.abc.Set,
)


def _wants_collection(annotation: Any) -> bool:
    """Whether `annotation` takes only collections (and perhaps None), no string or number."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(members) and all(_wants_collection(member) for member in members)
    return (origin or annotation) in COLLECTIONS


def _as_list_text(text: str) -> str:
    """`'1,2'` or `'30'` as the YAML list the user meant, where it reads as one."""
    parts = [part for part in text.replace(",", " ").split() if part]
    if parts and len(text) <= 100:
        return f"[{', '.join(parts)}]"
    return "[30, 80]"


def _annotation(owner: Any, param: inspect.Parameter) -> Any:
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        import torch

        namespace = {
            **vars(typing),
            **vars(collections.abc),
            "torch": torch,
            "Tensor": torch.Tensor,
        }
        namespace.update(vars(importlib.import_module(owner.__module__)))
        try:
            annotation = eval(annotation, namespace)  # torch's own annotation text, not user input
        except Exception:
            return None
    return annotation


def lookup_name(
    name: str, table: dict, kind: str, key: str, aliases: dict | None = None, extra: tuple = ()
) -> str:
    """The entry of `table` that `name` means (exactly, by alias, or in any case), or an error
    that names the closest entry and lists them all."""
    aliases = aliases or {}
    if name in table:
        return name
    by_lower = {entry.lower(): entry for entry in table}
    found = aliases.get(name.lower()) or by_lower.get(name.lower())
    if found:
        return found
    pool = {**by_lower, **aliases}
    close = difflib.get_close_matches(name.lower(), pool, n=1, cutoff=0.5)
    hint = f"did you mean {pool[close[0]]!r}? " if close else ""
    raise ConfigError(
        f"{key}: unknown {kind} {name!r}; {hint}choose one of: "
        f"{', '.join([*sorted(table), *extra])}",
        key,
    )


def bind_options(fn, given: dict[str, Any], key: str, owner: str, skip: int) -> dict[str, Any]:
    """Check `given` against `fn`'s keyword parameters (after the first `skip`) and fill in the
    defaults of the rest: the options a resolved config records."""
    params = dict(list(inspect.signature(fn).parameters.items())[skip:])
    for name in given:
        if name not in params:
            raise ConfigError(
                f"{key}.{name}: {owner} takes no {name!r}; it takes: "
                f"{', '.join(params) or 'no options'}",
                f"{key}.{name}",
            )
    options = {}
    for name, param in params.items():
        if name in given:
            options[name] = _check_type(fn, param, given[name], f"{key}.{name}")
        elif param.default is inspect.Parameter.empty:
            raise ConfigError(f"{key}.{name}: {owner} requires {name!r}", f"{key}.{name}")
        else:
            options[name] = param.default
    return options


def _resolve_children(cfg, name, epochs, steps_per_epoch, task) -> list[SchedulerConfig] | None:
    if not scheduler_spec(name).composite:
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
        child_name = canonical_scheduler_name(child.name)
        if scheduler_spec(child_name).needs_metric or child_name == "none":
            raise ConfigError(
                f"{key}.name: {name} cannot hold {child_name}; torch refuses it "
                "(use ReduceLROnPlateau on its own)",
                f"{key}.name",
            )
        resolved.append(_resolve(child, epochs, steps_per_epoch, task, key))
    interval = cfg.interval or _default_interval(name, cfg.schedulers)
    run_length = epochs * (steps_per_epoch if interval == "step" else 1)
    milestones = cfg.kwargs.get("milestones") if name == "SequentialLR" else None
    fitted = []
    for i, (child, given) in enumerate(zip(resolved, cfg.schedulers, strict=True)):
        # Nested schedulers step at the parent's interval; a OneCycleLR spans its segment only.
        data = child.model_dump(exclude_none=True)
        data.pop("interval")
        if child.name == "OneCycleLR" and not _has_cycle_length(given.kwargs):
            data["total_steps"] = max(segment_length(i, milestones, run_length), 1)
        fitted.append(SchedulerConfig.model_validate(data))
    return fitted


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


def segments(block: SchedulerConfig, run_length: int, key: str = "scheduler"):
    """A resolved block, then every block nested in it, each with the stretch of the run it
    governs: after the warmup, and between its SequentialLR milestones."""
    warmup = warmup_length(block.warmup)
    yield from _segments(Segment(key, block, warmup, run_length - warmup, run_length - warmup))


def _segments(segment: Segment):
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
        and all(isinstance(m, int) and not isinstance(m, bool) for m in milestones)
        and milestones == sorted(milestones)
    )


def _check_cycle_lengths(resolved: SchedulerConfig, epochs: int, steps_per_epoch: int) -> None:
    """A OneCycleLR whose cycle is shorter than the steps it is given makes torch raise mid-run:
    refuse it now, naming the key and the length to use."""
    per_step = resolved.interval == "step"
    unit = "step" if per_step else "epoch"
    run_length = epochs * (steps_per_epoch if per_step else 1)
    for segment in segments(resolved, run_length):
        kwargs = segment.block.kwargs
        if segment.block.name != "OneCycleLR" or segment.steps is None:
            continue
        given = kwargs.get("total_steps")
        if given is None:
            cycle_epochs, cycle_steps = kwargs.get("epochs"), kwargs.get("steps_per_epoch")
            if not all(_is_int(n) for n in (cycle_epochs, cycle_steps)):
                continue  # torch's own check of the arguments speaks when it is built
            cycle = cycle_epochs * cycle_steps
        elif _is_int(given):
            cycle = given
        else:
            continue
        if cycle >= segment.steps:
            continue
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def segment_length(index: int, milestones: list | None, run_length: int) -> int:
    if not isinstance(milestones, list) or not all(isinstance(m, int) for m in milestones):
        return run_length
    bounds = [0, *milestones, run_length]
    if index + 1 >= len(bounds):
        return run_length
    return bounds[index + 1] - bounds[index]


def _default_interval(name: str, children: list[SchedulerConfig] | None) -> str:
    if children:
        steps = [scheduler_spec(canonical_scheduler_name(c.name)).interval for c in children]
        return "step" if "step" in steps else "epoch"
    return scheduler_spec(name).interval


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


def _has_cycle_length(kwargs: dict[str, Any]) -> bool:
    return "total_steps" in kwargs or ("epochs" in kwargs and "steps_per_epoch" in kwargs)


def _refuse_keys(cfg: SchedulerConfig, owner: str, keys: list[str], key: str = "scheduler"):
    given = cfg.model_dump(exclude_none=True)
    for name in keys:
        if name in given and name != "name":
            raise ConfigError(f"{key}.{name}: {owner} takes no {name!r}", f"{key}.{name}")


def _expressions(value: Any, key: str):
    if isinstance(value, LrExpression):
        return value
    if isinstance(value, list):
        return [_expressions(item, f"{key}.{i}") for i, item in enumerate(value)]
    return LrExpression(value, key)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]
