"""Schedules torch has no class for, each built as torch's LambdaLR over a factor function:
Hugging Face transformers' `lr_scheduler_type` vocabulary under an `hf.` prefix, with
transformers' own argument names and defaults, and `wsd` (warmup, stable, decay).

The factor functions follow transformers' `src/transformers/optimization.py` expression for
expression, so that the lrs equal what transformers computes to the last bit; each schedule
function names the transformers function it follows. A schedule function takes the optimizer's
optimizer and the config's arguments, and returns torch's LambdaLR over the factor that
multiplies the optimizer's lr at each of its steps (optimizer steps, or epochs at interval
epoch).

torch is imported inside functions only, so importing this module is free.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from lrsched_cli.errors import ConfigError

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LambdaLR

Factor = Callable[[int], float]
ShapeName = Literal["linear", "cosine", "1-sqrt"]
SHAPES = ("linear", "cosine", "1-sqrt")
PREFIX = "hf."


# transformers' factor functions: current_step counts the scheduler's steps from 0.


def _constant(current_step: int) -> float:
    return 1


def _constant_with_warmup(current_step: int, *, num_warmup_steps: int) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1.0, num_warmup_steps))
    return 1.0


def _linear(current_step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    return max(
        0.0,
        float(num_training_steps - current_step)
        / float(max(1, num_training_steps - num_warmup_steps)),
    )


def _cosine(
    current_step: int,
    *,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float,
    min_lr_rate: float = 0.0,
) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(
        max(1, num_training_steps - num_warmup_steps)
    )
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    factor = factor * (1 - min_lr_rate) + min_lr_rate
    return max(0, factor)


def _cosine_with_hard_restarts(
    current_step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: int
) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(
        max(1, num_training_steps - num_warmup_steps)
    )
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def _polynomial(
    current_step: int,
    *,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: float,
    power: float,
    lr_init: float,
) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    if current_step > num_training_steps:
        return lr_end / lr_init  # LambdaLR multiplies by lr_init
    lr_range = lr_init - lr_end
    decay_steps = num_training_steps - num_warmup_steps
    pct_remaining = 1 - (current_step - num_warmup_steps) / decay_steps
    decay = lr_range * pct_remaining**power + lr_end
    return decay / lr_init


def _inverse_sqrt(current_step: int, *, num_warmup_steps: int, timescale: int) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    shift = timescale - num_warmup_steps
    return 1.0 / math.sqrt((current_step + shift) / timescale)


def _cosine_warmup_lr_rate(
    current_step: int,
    *,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float,
    min_lr_rate: float,
    warmup_lr_rate: float | None,
) -> float:
    current_step = float(current_step)
    num_warmup_steps = float(num_warmup_steps)
    num_training_steps = float(num_training_steps)
    if current_step < num_warmup_steps:
        if warmup_lr_rate is None:
            return (current_step + 1.0) / max(1.0, num_warmup_steps)
        warmup_lr_rate = float(warmup_lr_rate)
        return warmup_lr_rate + (1.0 - warmup_lr_rate) * current_step / max(1, num_warmup_steps - 1)
    progress = (current_step - num_warmup_steps + 1.0) / max(
        1.0, num_training_steps - num_warmup_steps
    )
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    factor = factor * (1 - min_lr_rate) + min_lr_rate
    return max(0, factor)


def _warmup_stable_decay(
    current_step: int,
    *,
    num_warmup_steps: int,
    num_stable_steps: int,
    num_decay_steps: int,
    warmup_type: str,
    decay_type: str,
    min_lr_ratio: float,
    num_cycles: float,
) -> float:
    if current_step < num_warmup_steps:
        progress = float(current_step) / float(max(1, num_warmup_steps))
        if warmup_type == "linear":
            factor = progress
        elif warmup_type == "cosine":
            factor = 0.5 * (1.0 - math.cos(math.pi * progress))
        else:  # 1-sqrt
            factor = 1.0 - math.sqrt(1.0 - progress)
        factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
        return max(0.0, factor)
    if current_step < num_warmup_steps + num_stable_steps:
        return 1.0
    if current_step < num_warmup_steps + num_stable_steps + num_decay_steps:
        progress = float(current_step - num_warmup_steps - num_stable_steps) / float(
            max(1, num_decay_steps)
        )
        if decay_type == "linear":
            factor = 1.0 - progress
        elif decay_type == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        else:  # 1-sqrt
            factor = 1.0 - math.sqrt(progress)
        factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
        return max(0.0, factor)
    return min_lr_ratio


# The schedules: the optimizer and the config's arguments (keyword-only, with transformers'
# defaults) in, torch's LambdaLR out. `num_training_steps` without a default is filled in from
# the run. A warmup of num_warmup_steps=0 is what transformers' Trainer passes when none is
# asked for.


def hf_constant(optimizer) -> LambdaLR:
    """A constant lr (transformers' get_constant_schedule)."""
    return _lambda_lr(optimizer, _constant)


def hf_constant_with_warmup(optimizer, *, num_warmup_steps: int = 0) -> LambdaLR:
    """Linear warmup from 0, then constant (transformers' get_constant_schedule_with_warmup)."""
    return _lambda_lr(optimizer, partial(_constant_with_warmup, num_warmup_steps=num_warmup_steps))


def hf_linear(optimizer, *, num_warmup_steps: int = 0, num_training_steps: int) -> LambdaLR:
    """Linear warmup from 0, then linear decay to 0 (transformers'
    get_linear_schedule_with_warmup)."""
    return _lambda_lr(
        optimizer,
        partial(_linear, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps),
    )


def hf_cosine(
    optimizer, *, num_warmup_steps: int = 0, num_training_steps: int, num_cycles: float = 0.5
) -> LambdaLR:
    """Linear warmup from 0, then a cosine to 0 (transformers'
    get_cosine_schedule_with_warmup)."""
    return _lambda_lr(
        optimizer,
        partial(
            _cosine,
            num_warmup_steps=num_warmup_steps,
            num_training_steps=num_training_steps,
            num_cycles=num_cycles,
        ),
    )


def hf_cosine_with_restarts(
    optimizer, *, num_warmup_steps: int = 0, num_training_steps: int, num_cycles: int = 1
) -> LambdaLR:
    """Linear warmup from 0, then num_cycles cosines to 0, each restarting at the peak.

    transformers' get_cosine_with_hard_restarts_schedule_with_warmup."""
    return _lambda_lr(
        optimizer,
        partial(
            _cosine_with_hard_restarts,
            num_warmup_steps=num_warmup_steps,
            num_training_steps=num_training_steps,
            num_cycles=num_cycles,
        ),
    )


def hf_polynomial(
    optimizer,
    *,
    num_warmup_steps: int = 0,
    num_training_steps: int,
    lr_end: float = 1e-7,
    power: float = 1.0,
) -> LambdaLR:
    """Linear warmup from 0, then a polynomial decay to lr_end.

    transformers' get_polynomial_decay_schedule_with_warmup."""
    _below_lr(optimizer, "lr_end", lr_end)
    if num_warmup_steps >= num_training_steps:
        where = "scheduler.num_warmup_steps"
        raise ConfigError(
            f"{where}: hf.polynomial's warmup of {num_warmup_steps} steps leaves none of its "
            f"{num_training_steps} to decay over (transformers divides by their difference); "
            "shorten num_warmup_steps",
            where,
        )
    return _lambda_lr(
        optimizer,
        partial(
            _polynomial,
            num_warmup_steps=num_warmup_steps,
            num_training_steps=num_training_steps,
            lr_end=lr_end,
            power=power,
            lr_init=optimizer.defaults["lr"],
        ),
    )


def hf_inverse_sqrt(
    optimizer, *, num_warmup_steps: int = 0, timescale: int | None = None
) -> LambdaLR:
    """Linear warmup from 0, then 1 / sqrt(step / timescale) (transformers'
    get_inverse_sqrt_schedule)."""
    if timescale is None:
        timescale = num_warmup_steps or 10_000
    factor = partial(_inverse_sqrt, num_warmup_steps=num_warmup_steps, timescale=timescale)
    return _lambda_lr(optimizer, factor)


def hf_cosine_with_min_lr(
    optimizer,
    *,
    num_warmup_steps: int = 0,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
) -> LambdaLR:
    """Linear warmup from 0, then a cosine to min_lr or min_lr_rate x the peak.

    transformers' get_cosine_with_min_lr_schedule_with_warmup."""
    return _lambda_lr(
        optimizer,
        partial(
            _cosine,
            num_warmup_steps=num_warmup_steps,
            num_training_steps=num_training_steps,
            num_cycles=num_cycles,
            min_lr_rate=_min_lr_rate(optimizer, min_lr, min_lr_rate),
        ),
    )


def hf_cosine_warmup_with_min_lr(
    optimizer,
    *,
    num_warmup_steps: int = 0,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
) -> LambdaLR:
    """Warmup from warmup_lr_rate x the peak, then a cosine to min_lr or min_lr_rate x the peak.

    transformers' get_cosine_with_min_lr_schedule_with_warmup_lr_rate; warmup_lr_rate
    defaults to 1 / num_warmup_steps, and the warmup's and the cosine's steps are counted
    from 1."""
    return _lambda_lr(
        optimizer,
        partial(
            _cosine_warmup_lr_rate,
            num_warmup_steps=num_warmup_steps,
            num_training_steps=num_training_steps,
            num_cycles=num_cycles,
            min_lr_rate=_min_lr_rate(optimizer, min_lr, min_lr_rate),
            warmup_lr_rate=warmup_lr_rate,
        ),
    )


def hf_warmup_stable_decay(
    optimizer,
    *,
    num_warmup_steps: int = 0,
    num_decay_steps: int,
    num_training_steps: int,
    num_stable_steps: int | None = None,
    warmup_type: ShapeName = "linear",
    decay_type: ShapeName = "cosine",
    min_lr_ratio: float = 0,
    num_cycles: float = 0.5,
) -> LambdaLR:
    """Warmup, the peak held, then a decay to min_lr_ratio x the peak (transformers'
    get_wsd_schedule); the warmup starts at min_lr_ratio x the peak."""
    if num_stable_steps is None:
        num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
        if num_stable_steps < 0:
            # transformers would start the decay under the warmup, and jump down at its end.
            where = "scheduler.num_decay_steps"
            raise ConfigError(
                f"{where}: num_warmup_steps {num_warmup_steps} + num_decay_steps "
                f"{num_decay_steps} exceed num_training_steps {num_training_steps}; shorten "
                "them, or give num_stable_steps",
                where,
            )
    return _lambda_lr(
        optimizer,
        partial(
            _warmup_stable_decay,
            num_warmup_steps=num_warmup_steps,
            num_stable_steps=num_stable_steps,
            num_decay_steps=num_decay_steps,
            warmup_type=warmup_type,
            decay_type=decay_type,
            min_lr_ratio=min_lr_ratio,
            num_cycles=num_cycles,
        ),
    )


def _min_lr_rate(optimizer, min_lr: float | None, min_lr_rate: float | None) -> float:
    """transformers' rule: min_lr is an lr, min_lr_rate a fraction of the optimizer's lr; one
    of them. `resolve` has refused both or neither before a schedule is built."""
    if min_lr is None:
        return min_lr_rate
    _below_lr(optimizer, "min_lr", min_lr)
    return min_lr / optimizer.defaults["lr"]


def _lambda_lr(optimizer, factor: Factor) -> LambdaLR:
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, factor)


# wsd: lrsched's warmup-stable-decay (MiniCPM; Hägele et al. 2024, "Scaling Laws and
# Compute-Optimal Training Beyond Fixed Training Durations"), laid out in fractions of the run.


@dataclass(frozen=True)
class Phases:
    """A wsd schedule's phases, in the scheduler's steps: warmup, stable, decay."""

    warmup: int
    stable: int
    decay: int
    total: int

    @property
    def decay_start(self) -> int:
        return self.warmup + self.stable


def wsd_phases(kwargs: dict[str, Any]) -> Phases:
    """The phases of a resolved wsd block: fractions of total_steps rounded half up, a decay of
    at least one step where decay_fraction is above 0. The decay takes the run's last steps;
    where warmup and decay together exceed the run, it starts at the warmup's end and is cut
    short (lint warns)."""
    total = kwargs["total_steps"]
    warmup = kwargs.get("warmup_steps")
    if warmup is None:
        warmup = _round(kwargs["warmup_fraction"] * total)
    fraction = kwargs["decay_fraction"]
    decay = max(_round(fraction * total), 1 if fraction > 0 else 0)
    return Phases(warmup, max(0, total - warmup - decay), decay, total)


def _round(value: float) -> int:
    return int(math.floor(value + 0.5))


def _wsd(
    current_step: int, *, warmup: int, decay_start: int, decay: int, shape: str, floor: float
) -> float:
    if current_step < warmup:
        return current_step / warmup
    if current_step < decay_start:
        return 1.0
    if current_step < decay_start + decay:
        progress = (current_step - decay_start) / decay
        if shape == "linear":
            factor = 1.0 - progress
        elif shape == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:  # 1-sqrt
            factor = 1.0 - math.sqrt(progress)
        return factor * (1.0 - floor) + floor
    return floor


def wsd(
    optimizer,
    *,
    warmup_fraction: float = 0.0,
    warmup_steps: int | None = None,
    decay_fraction: float = 0.2,
    decay_type: ShapeName = "1-sqrt",
    min_lr_ratio: float = 0.0,
    total_steps: int,
) -> LambdaLR:
    """Warmup from 0, the peak held, then a decay over the run's last decay_fraction to
    min_lr_ratio x the peak.

    The decay's shapes are transformers' get_wsd_schedule's; the phases are fractions of
    total_steps (or warmup_steps), see wsd_phases."""
    phases = wsd_phases(
        {
            "warmup_fraction": warmup_fraction,
            "warmup_steps": warmup_steps,
            "decay_fraction": decay_fraction,
            "total_steps": total_steps,
        }
    )
    return _lambda_lr(
        optimizer,
        partial(
            _wsd,
            warmup=phases.warmup,
            decay_start=phases.decay_start,
            decay=phases.decay,
            shape=decay_type,
            floor=min_lr_ratio,
        ),
    )


SCHEDULES: dict[str, Callable[..., LambdaLR]] = {
    "hf.linear": hf_linear,
    "hf.cosine": hf_cosine,
    "hf.cosine_with_restarts": hf_cosine_with_restarts,
    "hf.polynomial": hf_polynomial,
    "hf.constant": hf_constant,
    "hf.constant_with_warmup": hf_constant_with_warmup,
    "hf.inverse_sqrt": hf_inverse_sqrt,
    "hf.cosine_with_min_lr": hf_cosine_with_min_lr,
    "hf.cosine_warmup_with_min_lr": hf_cosine_warmup_with_min_lr,
    "hf.warmup_stable_decay": hf_warmup_stable_decay,
    "wsd": wsd,
}
# The argument each schedule's length goes in; lrsched fills it in from the run.
LENGTH_ARGUMENTS = ("num_training_steps", "total_steps")
# Arguments that count the scheduler's steps (epochs at interval epoch).
COUNTS = ("num_warmup_steps", "num_decay_steps", "num_stable_steps", "warmup_steps")
# The arguments that set the lr's floor, the likeliest culprit for a bad lr first.
LR_ARGUMENTS = ("min_lr", "min_lr_rate", "lr_end", "min_lr_ratio", "warmup_lr_rate")
# Arguments that are fractions of the peak lr or of the run.
FRACTIONS = ("min_lr_rate", "min_lr_ratio", "warmup_lr_rate", "warmup_fraction", "decay_fraction")


def is_schedule_name(name: str) -> bool:
    """Whether `name` is for this module: an `hf.` name (known or not) or `wsd`, any case."""
    return name.lower().startswith(PREFIX) or name.lower() == "wsd"


def canonical_name(name: str, key: str = "scheduler.name") -> str:
    """The schedule `name` means (in any case), or an error with the closest one."""
    if name.lower() in SCHEDULES:
        return name.lower()
    hf_names = [entry for entry in SCHEDULES if entry.startswith(PREFIX)]
    close = difflib.get_close_matches(name.lower(), hf_names, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"{key}: unknown Hugging Face schedule {name!r}; {hint}choose one of: "
        f"{', '.join(sorted(hf_names))}",
        key,
    )


def parameters(name: str) -> dict[str, inspect.Parameter]:
    """The arguments a config may give schedule `name`, as its function declares them (the
    annotations evaluated)."""
    params = list(inspect.signature(SCHEDULES[name]).parameters.values())[1:]
    # The annotations are this module's own text (postponed by `from __future__`).
    return {p.name: p.replace(annotation=eval(p.annotation, globals())) for p in params}


def resolve(name: str, given: dict[str, Any], run_length: int, key: str = "scheduler"):
    """Every argument schedule `name` will be built with: the config's, checked, then the
    defaults, and the run's length (`run_length`, the times the scheduler is stepped) where
    the config leaves it out. Refuses what transformers would refuse, and what would train
    a schedule nobody meant. What depends on the optimizer's lr is checked when the schedule
    is built."""
    accepted = parameters(name)
    for argument in given:
        if argument not in accepted:
            raise ConfigError(_not_taken(name, argument, accepted, key), f"{key}.{argument}")
    if "warmup_fraction" in given and "warmup_steps" in given:
        where = f"{key}.warmup_steps"
        raise ConfigError(
            f"{where}: {name} takes warmup_fraction (of the run) or warmup_steps, not both",
            where,
        )
    arguments: dict[str, Any] = {}
    for argument, param in accepted.items():
        where = f"{key}.{argument}"
        if argument in given:
            arguments[argument] = _check(name, argument, param.annotation, given[argument], key)
        elif argument in LENGTH_ARGUMENTS:
            arguments[argument] = run_length
        elif param.default is inspect.Parameter.empty:
            raise ConfigError(f"{where}: {name} requires {argument}", where)
        elif param.default is not None:
            arguments[argument] = param.default
    _check_lengths(name, arguments, run_length, key)
    _check_min_lr(name, arguments, key)
    _fill_derived(name, arguments)
    return arguments


def _not_taken(name: str, argument: str, accepted: dict, key: str) -> str:
    owners = [other for other in SCHEDULES if argument in parameters(other)]
    close = difflib.get_close_matches(argument, accepted, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    belongs = f" ({argument} is an argument of {', '.join(owners)})" if owners else ""
    return (
        f"{key}.{argument}: {name} does not take {argument!r}{belongs}; {hint}"
        f"it takes: {', '.join(accepted) or 'no arguments'}"
    )


def _check(name: str, argument: str, annotation: Any, value: Any, key: str) -> Any:
    """`value` as the annotation's type, in its range; an error naming the key otherwise."""
    from pydantic import TypeAdapter, ValidationError

    where = f"{key}.{argument}"
    if isinstance(value, str) and argument in ("warmup_type", "decay_type"):
        if value not in SHAPES:
            raise ConfigError(
                f"{where}: {value!r} is not a {argument.replace('_', ' ')}; choose one of: "
                f"{', '.join(SHAPES)}",
                where,
            )
        return value
    wanted = "an integer" if "int" in str(annotation) else "a number"
    if isinstance(value, bool) or (value is None and "None" not in str(annotation)):
        raise ConfigError(f"{where}: {name}'s {argument} is {wanted} (got {value!r})", where)
    try:
        checked = TypeAdapter(annotation).validate_python(value)
    except ValidationError:
        shown = f"one of {', '.join(SHAPES)}" if argument.endswith("_type") else wanted
        raise ConfigError(
            f"{where}: {name}'s {argument} is {shown} (got {value!r})", where
        ) from None
    if isinstance(checked, float) and not math.isfinite(checked):
        raise ConfigError(f"{where}: {name}'s {argument} must be finite (got {value!r})", where)
    if checked is not None:
        _check_range(name, argument, checked, where)
    return checked


def _check_range(name: str, argument: str, value: Any, where: str) -> None:
    if argument in COUNTS and value < 0:
        problem = "a number of steps: 0 or more"
    elif argument in ("timescale", *LENGTH_ARGUMENTS) and value < 1:
        problem = "a number of steps: 1 or more"
    elif argument == "warmup_fraction" and not 0 <= value < 1:
        problem = "a fraction of the run: 0 or more, below 1"
    elif argument in FRACTIONS and not 0 <= value <= 1:
        problem = "a fraction: from 0 to 1"
    elif argument in ("min_lr", "lr_end") and value < 0:
        problem = "an lr: 0 or more"
    elif argument == "num_cycles" and value <= 0:
        problem = "a number of cycles above 0"
    else:
        return
    raise ConfigError(f"{where}: {name}'s {argument} is {problem} (got {value!r})", where)


def _check_lengths(name: str, arguments: dict[str, Any], run_length: int, key: str) -> None:
    """A warmup longer than the run (or than the schedule's own length) never reaches the
    peak."""
    warmup_key = "warmup_steps" if name == "wsd" else "num_warmup_steps"
    warmup = arguments.get(warmup_key)
    if warmup is None:
        return
    length = arguments.get("num_training_steps", arguments.get("total_steps"))
    where = f"{key}.{warmup_key}"
    for limit, what in ((run_length, "the run steps the scheduler"), (length, f"{name} lasts")):
        if limit is not None and warmup > limit:
            raise ConfigError(
                f"{where}: the warmup of {warmup} steps is longer than the {limit} times "
                f"{what}: the lr never reaches its peak; shorten {warmup_key}",
                where,
            )


def _check_min_lr(name: str, arguments: dict[str, Any], key: str) -> None:
    if "min_lr" in arguments and "min_lr_rate" in arguments:
        raise ConfigError(
            f"{key}.min_lr_rate: {name} takes min_lr (an lr) or min_lr_rate (a fraction of "
            "the peak lr), not both",
            f"{key}.min_lr_rate",
        )
    if "min_lr_rate" in parameters(name) and not {"min_lr", "min_lr_rate"} & set(arguments):
        raise ConfigError(
            f"{key}.min_lr_rate: {name} needs min_lr (an lr) or min_lr_rate (a fraction of "
            "the peak lr)",
            f"{key}.min_lr_rate",
        )


def _fill_derived(name: str, arguments: dict[str, Any]) -> None:
    """Defaults that depend on other arguments, filled in so the resolved config shows them."""
    if name == "hf.inverse_sqrt" and "timescale" not in arguments:
        arguments["timescale"] = arguments["num_warmup_steps"] or 10_000
    if name == "wsd" and "warmup_steps" in arguments:
        arguments.pop("warmup_fraction")


def _below_lr(optimizer, argument: str, value: float) -> None:
    """transformers refuses an end lr at or above the lr it decays from: the "decay" would
    climb. Checked when built, where the optimizer's lr is known."""
    lr = optimizer.defaults["lr"]
    if not value < lr:
        where = f"scheduler.{argument}"
        raise ConfigError(
            f"{where}: {argument} {value:g} must be below the initial lr {lr:g} "
            "(optimizer.lr), which the schedule decays from",
            where,
        )


def build(optimizer, name: str, arguments: dict[str, Any]) -> LambdaLR:
    """torch's LambdaLR over schedule `name`'s factor, for a resolved block's arguments."""
    return SCHEDULES[name](optimizer, **arguments)


def phases(name: str, kwargs: dict[str, Any]) -> Phases | None:
    """The warmup, stable and decay phases of a resolved wsd or hf.warmup_stable_decay block,
    in the scheduler's steps (None for the other schedules)."""
    if name == "wsd":
        return wsd_phases(kwargs)
    if name != "hf.warmup_stable_decay":
        return None
    warmup, decay, total = (
        kwargs["num_warmup_steps"],
        kwargs["num_decay_steps"],
        kwargs["num_training_steps"],
    )
    stable = kwargs.get("num_stable_steps")
    if stable is None:  # transformers: what the warmup and the decay leave of the length
        stable = total - warmup - decay
    return Phases(warmup, stable, decay, total)


def lint(name: str, kwargs: dict[str, Any], length: int, key: str, units: str) -> list[str]:
    """What trains without an error and is not what a warmup-stable-decay was meant to be:
    warmup and decay that overlap, a decay after the run's end, a run past the decay's end.
    `length` is the times the run steps the schedule, in `units` (steps or epochs)."""
    shape = phases(name, kwargs)
    if shape is None:
        return []
    decay_key = "decay_fraction" if name == "wsd" else "num_decay_steps"
    fix = (
        "leave total_steps out and lrsched fills in the run's"
        if name == "wsd"
        else "leave num_stable_steps and num_training_steps out and lrsched fits them to the run"
    )
    warnings = []
    if shape.warmup + shape.decay > shape.total:
        done = (shape.total - shape.decay_start) / shape.decay if name == "wsd" else None
        outcome = (
            f"the decay starts at the warmup's end and the run ends {done:.0%} of the way down it"
            if done is not None
            else "the decay's first steps are lost under the warmup"
        )
        warnings.append(
            f"{key}.{decay_key}: the warmup ({shape.warmup} {units}) and the decay "
            f"({shape.decay} {units}) together exceed the run ({shape.total} {units}): there "
            f"is no stable phase, and {outcome}; shorten the warmup or the decay"
        )
    elif shape.decay and shape.decay_start >= length:
        warnings.append(
            f"{key}: the decay starts after {shape.decay_start} {units}, but the run steps "
            f"the schedule {length} times: it never decays; {fix}"
        )
    elif shape.decay_start + shape.decay < length:
        after = length - shape.decay_start - shape.decay
        warnings.append(
            f"{key}: the decay ends after {shape.decay_start + shape.decay} {units}, and the "
            f"run trains {after} more at its floor; {fix}"
        )
    return warnings


def event(name: str, kwargs: dict[str, Any], counter: int) -> str | None:
    """The lr event on the row trained at the schedule's step `counter` (0-based): `stable`
    on the first at the peak after a warmup, `decay start` on the first the decay lowers
    (its first step is still at the peak)."""
    shape = phases(name, kwargs)
    if shape is None:
        return None
    if shape.warmup and counter == shape.warmup:
        return "stable"
    if shape.decay > 1 and counter == shape.decay_start + 1:
        return "decay start"
    return None
