"""Toy models by name: linear, mlp, cnn, or a `package.module:factory` of the user's."""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lrsched_cli.config import ConfigError, ModelConfig, check_model_size
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
        model = _import_factory(cfg.name)(input_shape, n_outputs, **options)
        # A lazy module's weights have no size until its first forward pass: left uncounted.
        built = sum(
            p.numel()
            for p in (model.parameters() if isinstance(model, nn.Module) else [])
            if not isinstance(p, nn.parameter.UninitializedParameter)
        )
        check_model_size(cfg, input_shape, n_outputs, built)
        return model
    check_model_size(cfg, input_shape, n_outputs)  # counted from the layer sizes, not built
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
    imported as a module of its package when its folder has an `__init__.py`.

    Only a function or class that the module's own source defines is accepted, and that is
    checked in the source before the module is imported: `os:system`, `builtins:eval` or
    `this:x` are refused with nothing imported, called or printed."""
    module_name, _, attribute = target.rpartition(":")
    source = _factory_source(module_name, target)
    _check_defined(source, module_name, attribute)
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
    # The source said `def`/`class`, but a decorator or a later assignment can rebind the name.
    defined_here = getattr(factory, "__module__", None) == module.__name__
    if not (inspect.isfunction(factory) or inspect.isclass(factory)) or not defined_here:
        raise ConfigError(
            f"model.name: {module_name}.{attribute} is not a function or class defined in "
            f"{module_name}; a factory must be one",
            "model.name",
        )
    return factory


def _factory_source(module_name: str, target: str) -> Path:
    """The Python file that holds `module_name`, found without running any module's code."""
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ConfigError(
                f"model.name: cannot load factory {target!r}: no such file", "model.name"
            )
        return path
    try:
        spec = _find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise ConfigError(
            f"model.name: cannot load factory {target!r}: {exc}", "model.name"
        ) from None
    if spec is None:
        raise ConfigError(
            f"model.name: cannot load factory {target!r}: no module named {module_name!r}",
            "model.name",
        )
    # Frozen standard modules (os) keep the path of their source in loader_state.
    origin = getattr(spec.loader_state, "filename", None) if spec.origin == "frozen" else None
    origin = origin or (spec.origin if spec.has_location else None)
    if not origin or not origin.endswith(".py"):
        raise ConfigError(
            f"model.name: {module_name} is built into Python or compiled, not a Python file; "
            "a factory must be a function or class defined in a .py module",
            "model.name",
        )
    return Path(origin)


def _find_spec(name: str):
    """importlib's spec for `name`. Unlike importlib.util.find_spec, a dotted name's parent
    packages are searched, not imported, so their `__init__.py` does not run."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        return getattr(loaded, "__spec__", None)
    parent, _, _ = name.rpartition(".")
    if not parent:
        return importlib.util.find_spec(name)
    parent_spec = _find_spec(parent)
    locations = parent_spec.submodule_search_locations if parent_spec else None
    if not locations:
        return None
    return importlib.machinery.PathFinder.find_spec(name, list(locations))


def _check_defined(source: Path, module_name: str, attribute: str) -> None:
    """Refuse `attribute` unless `source` defines it with a top-level `def` or `class`: a name
    imported from elsewhere (os's `system`), a builtin or a plain value is not a factory."""
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(
            f"model.name: cannot read {source}: {type(exc).__name__}", "model.name"
        ) from None
    defined, pending = set(), list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.If | ast.Try | ast.With):  # `if TYPE_CHECKING:`, `try:` ...
            for block in ("body", "orelse", "handlers", "finalbody"):
                pending += getattr(node, block, [])
        elif isinstance(node, ast.ExceptHandler):
            pending += node.body
    if attribute not in defined:
        names = sorted(n for n in defined if not n.startswith("_"))
        close = difflib.get_close_matches(attribute, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"model.name: {module_name} defines no function or class {attribute!r}{hint} "
            "(a factory must be defined in the module it is named by)",
            "model.name",
        )


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
