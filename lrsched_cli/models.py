"""Toy models by name: linear, mlp, cnn, or a `package.module:factory` of the user's."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lrsched_cli.config import ConfigError, ModelConfig
from lrsched_cli.registry import bind_options, lookup_name

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., nn.Module]  # (input_shape, n_outputs, **options) -> module
    description: str


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, description: str):
    """Add a factory `(input_shape, n_outputs, **options) -> nn.Module` under `name`."""

    def decorate(build):
        MODELS[name] = ModelSpec(build, description)
        return build

    return decorate


def resolve_model(cfg: ModelConfig) -> ModelConfig:
    """`cfg` with the model name checked and its options' defaults filled in."""
    if ":" in cfg.name:
        return _resolve_factory(cfg)
    name = lookup_name(cfg.name, MODELS, "model", "model.name")
    given = cfg.model_dump(exclude_none=True, exclude={"name"})
    options = bind_options(MODELS[name].build, given, "model", f"model {name!r}", skip=2)
    return ModelConfig.model_validate({"name": name, **options})


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """Build a resolved model config for data of `input_shape` (one sample) and `n_outputs`."""
    options = cfg.model_dump(exclude_none=True, exclude={"name"})
    if ":" in cfg.name:
        return _import_factory(cfg.name)(input_shape, n_outputs, **options)
    return MODELS[cfg.name].build(input_shape, n_outputs, **options)


@register_model("linear", "one linear layer: logistic or linear regression")
def linear(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_outputs))


@register_model("mlp", "fully connected layers with an activation and optional dropout")
def mlp(
    input_shape: tuple[int, ...],
    n_outputs: int,
    hidden: list[int] = (64, 64),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Module:
    if activation not in ACTIVATIONS:
        lookup_name(activation, ACTIVATIONS, "activation", "model.activation")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        layers += [nn.Dropout(dropout)] if dropout else []
        width = size
    return nn.Sequential(*layers, nn.Linear(width, n_outputs))


@register_model("cnn", "a small conv net for image-shaped data such as the 8x8 digits")
def cnn(
    input_shape: tuple[int, ...],
    n_outputs: int,
    channels: list[int] = (16, 32),
    dropout: float = 0.0,
) -> nn.Module:
    if len(input_shape) != 3:
        raise ConfigError(
            f"model.name: cnn needs image-shaped data (channels, height, width), "
            f"such as digits; this dataset gives {input_shape[-1]} features; "
            "use mlp",
            "model.name",
        )
    layers: list[nn.Module] = []
    width = input_shape[0]
    for size in channels:
        layers += [nn.Conv2d(width, size, kernel_size=3, padding=1), nn.ReLU()]
        width = size
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    layers += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(width * 4, n_outputs))


def _resolve_factory(cfg: ModelConfig) -> ModelConfig:
    """A factory's own keys, checked against its signature as torch's classes' are; a factory
    with `**options` takes any key."""
    factory = _import_factory(cfg.name)
    given = cfg.model_dump(exclude_none=True, exclude={"name"})
    params = list(inspect.signature(factory).parameters.values())[2:]
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    for key in given:
        if key not in named and not takes_any:
            close = difflib.get_close_matches(key, named, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"model.{key}: {cfg.name} takes no {key!r}; {hint}it takes: "
                f"{', '.join(named) or 'no options'}",
                f"model.{key}",
            )
    # bind_options checks types and fills in defaults; it is shown the named parameters only.
    checked = functools.update_wrapper(lambda *args, **kwargs: None, factory)
    first_two = list(inspect.signature(factory).parameters.values())[:2]
    checked.__signature__ = inspect.Signature([*first_two, *(p for p in params if p.name in named)])
    named_given = {key: value for key, value in given.items() if key in named}
    options = bind_options(checked, named_given, "model", cfg.name, skip=2)
    extra = {key: value for key, value in given.items() if key not in named}
    return ModelConfig.model_validate({"name": cfg.name, **options, **extra})


def _import_factory(target: str) -> Callable[..., nn.Module]:
    """The factory `module:name`, or `/path/file.py:name` (config.find_factory's form), which is
    imported as a module of its package when its folder has an `__init__.py`."""
    module_name, _, attribute = target.rpartition(":")
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name))
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"model.name: cannot load factory {target!r}: {exc}", "model.name"
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        close = difflib.get_close_matches(attribute, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"model.name: {module_name} has no factory {attribute!r}{hint}", "model.name"
        )
    return factory


def _import_file(path: Path):
    """Import `path` under its dotted name below the first folder without an `__init__.py`,
    with that folder first on sys.path for the import, as pytest's `prepend` mode does."""
    parts = [path.stem] if path.name != "__init__.py" else []
    root = path.parent
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    name = ".".join(parts)
    cached = sys.modules.get(name)
    if cached is not None and Path(getattr(cached, "__file__", "") or "") != path:
        if parts[0] not in _FILE_MODULES:
            taken = getattr(cached, "__file__", None) or "a built-in module"
            raise ConfigError(
                f"model.name: {path} would be imported as {name!r}, but that name is already "
                f"taken by {taken}; rename the file",
                "model.name",
            )
        # Another folder's module of the same name (two configs, each with its mymodels.py).
        for loaded in [m for m in sys.modules if m == parts[0] or m.startswith(f"{parts[0]}.")]:
            del sys.modules[loaded]
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(root))
    _FILE_MODULES.add(parts[0])
    return module


# Top-level names that _import_file imported from the user's files: only these may be
# replaced by another folder's file of the same name, never a module someone else imported.
_FILE_MODULES: set[str] = set()
