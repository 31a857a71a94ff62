"""Config names -> torch's optimizer and scheduler classes, found by reflection over torch, and
the lookup that turns a name as written (an alias, any capitalisation) into one of them.

torch is imported inside functions only, so importing this module is free.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from lrsched_cli.config import ConfigError
from lrsched_cli.signatures import check_type

SCHEDULER_MODULE = "torch.optim.lr_scheduler"
# Optimizers whose step() needs more than a plain loss.backward(): a closure or sparse gradients.
UNSUPPORTED_OPTIMIZERS = {
    "LBFGS": "its step() needs a closure that re-evaluates the loss",
    "SparseAdam": "it needs sparse gradients, which these models do not produce",
    "Muon": "it accepts only 2-D parameters, and these models have biases",
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
            options[name] = check_type(fn, param, given[name], f"{key}.{name}")
        elif param.default is inspect.Parameter.empty:
            raise ConfigError(f"{key}.{name}: {owner} requires {name!r}", f"{key}.{name}")
        else:
            options[name] = param.default
    return options
