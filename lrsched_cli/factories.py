"""The user's own `package.module:factory` (or `file.py:factory`) for a model or a dataset: found,
checked in its source, imported and bound to the config's options. Never imports torch."""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrsched_cli.errors import ConfigError
from lrsched_cli.registry import bind_options


def import_factory(target: str, key: str) -> Callable[..., Any]:
    """The factory `module:name`, or `/path/file.py:name` (config.find_factory's form), which is
    imported as a module of its package when its folder has an `__init__.py`; `key` (such as
    `model.name`) is the config key that errors name.

    Only a function or class that the module's own source defines is accepted, and that is
    checked in the source before the module is imported: `os:system`, `builtins:eval` or
    `this:x` are refused with nothing imported, called or printed."""
    module_name, _, attribute = target.rpartition(":")
    source = _factory_source(module_name, target, key)
    _check_defined(source, module_name, attribute, key)
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name), key)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot load factory {target!r}: {exc}", key) from None
    except Exception as exc:  # the module's own code failed as it ran: it does not import
        raise ConfigError(
            f"{key}: cannot load factory {target!r}: importing it raised "
            f"{type(exc).__name__}: {exc}",
            key,
        ) from None
    factory = getattr(module, attribute, None)
    # The source said `def`/`class`, but a decorator or a later assignment can rebind the name.
    defined_here = getattr(factory, "__module__", None) == module.__name__
    if not (inspect.isfunction(factory) or inspect.isclass(factory)) or not defined_here:
        raise ConfigError(
            f"{key}: {module_name}.{attribute} is not a function or class defined in "
            f"{module_name}; a factory must be one",
            key,
        )
    return factory


def bind_factory_options(
    factory: Callable[..., Any], given: dict[str, Any], block: str, target: str, skip: int
) -> dict[str, Any]:
    """A factory's own keys of config `block`, checked against its signature (after its first
    `skip` parameters) as torch's classes' are, with its defaults filled in; a factory with
    `**options` takes any key."""
    params = list(inspect.signature(factory).parameters.values())[skip:]
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    for key in given:
        if key not in named and not takes_any:
            close = difflib.get_close_matches(key, named, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{block}.{key}: {target} takes no {key!r}; {hint}it takes: "
                f"{', '.join(named) or 'no options'}",
                f"{block}.{key}",
            )
    # bind_options checks types and fills in defaults; it is shown the named parameters only.
    checked = functools.update_wrapper(lambda *args, **kwargs: None, factory)
    first = list(inspect.signature(factory).parameters.values())[:skip]
    checked.__signature__ = inspect.Signature([*first, *(p for p in params if p.name in named)])
    named_given = {key: value for key, value in given.items() if key in named}
    options = bind_options(checked, named_given, block, target, skip=skip)
    extra = {key: value for key, value in given.items() if key not in named}
    return {**options, **extra}


def _factory_source(module_name: str, target: str, key: str) -> Path:
    """The Python file that holds `module_name`, found without running any module's code."""
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ConfigError(f"{key}: cannot load factory {target!r}: no such file", key)
        return path
    try:
        spec = _find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot load factory {target!r}: {exc}", key) from None
    if spec is None:
        raise ConfigError(
            f"{key}: cannot load factory {target!r}: no module named {module_name!r}", key
        )
    # Frozen standard modules (os) keep the path of their source in loader_state.
    origin = getattr(spec.loader_state, "filename", None) if spec.origin == "frozen" else None
    origin = origin or (spec.origin if spec.has_location else None)
    if not origin or not origin.endswith(".py"):
        raise ConfigError(
            f"{key}: {module_name} is built into Python or compiled, not a Python file; "
            "a factory must be a function or class defined in a .py module",
            key,
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


def _check_defined(source: Path, module_name: str, attribute: str, key: str) -> None:
    """Refuse `attribute` unless `source` defines it with a top-level `def` or `class`: a name
    imported from elsewhere (os's `system`), a builtin or a plain value is not a factory."""
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot read {source}: {type(exc).__name__}", key) from None
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
            f"{key}: {module_name} defines no function or class {attribute!r}{hint} "
            "(a factory must be defined in the module it is named by)",
            key,
        )


def _import_file(path: Path, key: str):
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
                f"{key}: {path} would be imported as {name!r}, but that name is already "
                f"taken by {taken}; rename the file",
                key,
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
