"""A callable's keyword arguments, checked against its own signature and annotations: which
ones a config may give, their types (coerced as the annotation says), and the checked call.

torch is imported inside functions only, so importing this module is free.
"""

from __future__ import annotations

import collections.abc
import difflib
import importlib
import inspect
import types
import typing
from typing import Any

from lrsched_cli.config import ConfigError, excerpt

# Arguments lrsched owns: torch's `last_epoch` would bypass state_dict on resume.
MANAGED = {"self", "optimizer", "params", "schedulers", "last_epoch"}


def accepted_arguments(target: Any) -> dict[str, inspect.Parameter]:
    """The keyword arguments a config may give `target`: its signature less what lrsched
    manages."""
    return {
        name: param
        for name, param in inspect.signature(target).parameters.items()
        if name not in MANAGED
        and param.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


def construct(target: Any, first: Any, kwargs: dict[str, Any], key: str, managed=None):
    """`target(first, **kwargs, **managed)`, where `kwargs` come from the user and are checked:
    unknown and missing keys, and each value against its annotation."""
    name = getattr(target, "__name__", str(target))
    accepted = accepted_arguments(target)
    for given in kwargs:
        if given not in accepted:
            where = f"{key}.{given}"
            if given == "last_epoch":
                raise ConfigError(f"{where}: lrsched manages last_epoch; leave it out", where)
            close = difflib.get_close_matches(given, accepted, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{where}: {name} does not take {given!r}; {hint}"
                f"it takes: {', '.join(accepted) or 'no arguments'}",
                where,
            )
    missing = [
        argument
        for argument, param in accepted.items()
        if param.default is inspect.Parameter.empty and argument not in kwargs
    ]
    if missing:
        where = f"{key}.{missing[0]}"
        raise ConfigError(f"{where}: {name} requires {', '.join(missing)}", where)
    checked = {
        argument: check_type(target, accepted[argument], value, f"{key}.{argument}")
        for argument, value in kwargs.items()
    }
    try:
        return target(first, **checked, **(managed or {}))
    except ConfigError:  # a factory of lrsched's own that has named the key already
        raise
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, ArithmeticError) as exc:
        raise ConfigError(
            f"{key}: torch's {name} rejected these arguments: {one_line(exc)}", key
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


def check_type(owner: Any, param: inspect.Parameter, value: Any, where: str) -> Any:
    """Validate (and coerce, e.g. "0.1" -> 0.1) `value` against `owner`'s own annotation."""
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
        got = f"item {item} is {excerpt(error['input'])}" if is_int(item) else excerpt(value)
        raise ConfigError(
            f"{where}: {owner.__name__} expects {expected}; {message} (got {got})", where
        ) from None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
            annotation = eval(annotation, namespace)  # the library's own annotation text
        except Exception:
            return None
    return annotation
