"""The experiment config: YAML text -> frozen, validated `ExperimentConfig`. Never imports torch."""

from __future__ import annotations

import copy
import difflib
import importlib.util
import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError

from lrsched_cli.errors import ConfigError

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
# Bounds that keep a typo (hidden: [10000000]) from exhausting memory on a toy-model tool.
MAX_SAMPLES, MAX_SIZE, MAX_LAYERS, MAX_EPOCHS = 10_000_000, 65_536, 64, 1_000_000
MAX_THREADS = 1024
FLOAT32_MAX = 3.4e38  # models train in float32: a larger lr overflows inside optimizer.step()


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-3` as the number YAML 1.2 says it is, not a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Open(BaseModel):
    """A block whose other keys are torch's keyword arguments, checked later against torch."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(_Closed):
    name: str = Field(description="a registered dataset (`lrsched list datasets`)")
    batch_size: int = Field(64, gt=0, le=MAX_SIZE)
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of samples held out")
    n_samples: int | None = Field(
        None, gt=1, le=MAX_SAMPLES, description="synthetic datasets: how many"
    )
    noise: float | None = Field(None, ge=0, le=1e6, description="synthetic datasets: noise level")
    path: str | None = Field(None, description="csv: the file to read")
    target: str | None = Field(None, description="csv: the column to predict")
    task: Literal["classification", "regression"] | None = Field(None, description="csv only")


def _factory_options_schema(schema: dict[str, Any]) -> None:
    """Built-in models are closed; a `module:factory` takes its own keys (JSON Schema side)."""
    schema["additionalProperties"] = True
    schema["if"] = {"properties": {"name": {"pattern": ":"}}, "required": ["name"]}
    schema["else"] = {
        "properties": dict.fromkeys(schema["properties"], True),
        "additionalProperties": False,
    }


class ModelConfig(BaseModel):
    """A built-in model's keys are these fields; a `module:factory` also takes its own keyword
    arguments, checked against its signature when the model is resolved."""

    model_config = ConfigDict(
        extra="allow", frozen=True, allow_inf_nan=False, json_schema_extra=_factory_options_schema
    )

    name: str = Field(
        "mlp", description="linear | mlp | cnn | package.module:factory | file.py:factory"
    )
    hidden: list[int] | None = Field(None, description="mlp: hidden layer sizes")
    activation: str | None = Field(None, description="mlp: relu | tanh | gelu | ...")
    dropout: float | None = Field(None, ge=0, lt=1, description="mlp, cnn: dropout rate")
    channels: list[int] | None = Field(None, description="cnn: channels of each conv layer")

    @field_validator("hidden", "channels")
    @classmethod
    def _positive_sizes(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes is not None and not all(0 < size <= MAX_SIZE for size in sizes):
            raise ValueError(f"every size must be an integer from 1 to {MAX_SIZE}")
        if sizes is not None and len(sizes) > MAX_LAYERS:
            raise ValueError(f"at most {MAX_LAYERS} layers")
        return sizes


class EarlyStoppingConfig(_Closed):
    monitor: Literal["val_loss", "val_accuracy", "train_loss"] = "val_loss"
    patience: int = Field(5, gt=0, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="the least change that counts as improvement")


class OptimizerConfig(_Open):
    name: str = Field(description="a torch.optim class name, e.g. SGD, Adam, AdamW")
    lr: float = Field(gt=0, lt=FLOAT32_MAX, description="the initial learning rate")


def AutoOr(least: int, most: int | None = None) -> Any:  # noqa: N802 (used as a type)
    """`auto` or an int in [least, most], reported as one error rather than one per member."""
    bounds = f"from {least} to {most}" if most is not None else f">= {least}"

    def one_error(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError(
                "auto_or_int", f"input should be 'auto' or an integer {bounds}"
            ) from None

    return Annotated[
        Literal["auto"] | Annotated[int, Field(ge=least, le=most)], WrapValidator(one_error)
    ]


class WarmupConfig(_Closed):
    epochs: int | None = Field(None, gt=0, description="warm up over this many epochs")
    steps: int | None = Field(None, gt=0, description="or this many optimizer steps")
    start_factor: float = Field(0.1, gt=0, le=1, description="the first lr, as a share of lr")


class SchedulerConfig(_Open):
    name: str = Field("none", description="a torch.optim.lr_scheduler class name, or none")
    interval: Literal["epoch", "step"] | None = Field(
        None, description="when to step: default step for OneCycleLR and CyclicLR, else epoch"
    )
    monitor: Literal["val_loss", "val_accuracy", "train_loss"] | None = Field(
        None, description="ReduceLROnPlateau: the metric it is fed (default val_loss)"
    )
    schedulers: list[SchedulerConfig] | None = Field(
        None, description="SequentialLR, ChainedScheduler: the nested scheduler blocks"
    )
    warmup: WarmupConfig | None = Field(
        None, description="a linear warmup in front of this scheduler: epochs or steps"
    )


SWEEP_SCHEMA = {
    "type": "object",
    "description": "a grid: key.path: [values]; one config per point, named after its values",
    "minProperties": 1,
    "additionalProperties": {"type": "array", "minItems": 1},
}


def _experiment_schema(schema: dict[str, Any]) -> None:
    """What the loader adds to the model: `name` defaults to the file's stem, and `sweep:`."""
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["required"] = [key for key in schema["required"] if key != "name"]
    schema["properties"]["sweep"] = SWEEP_SCHEMA


class ExperimentConfig(_Closed):
    model_config = ConfigDict(json_schema_extra=_experiment_schema)

    name: str = Field(description="names the run directory; default: the file's stem")
    seed: int = Field(0, ge=0)
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto|cpu|cuda|cuda:N|mps")
    epochs: int = Field(10, gt=0, le=MAX_EPOCHS)
    threads: AutoOr(1, MAX_THREADS) = Field(
        "auto",
        description="torch CPU threads; auto: 1, and 1 more per 4 MFLOP of a batch's forward pass",
    )
    checkpoint_every: AutoOr(0) = Field(
        "auto",
        description="epochs between checkpoints; 0: none; auto: as often as costs at most ~5%",
    )
    on_nonfinite: Literal["stop", "continue"] = Field(
        "stop", description="a NaN or infinite loss: stop the run (diverged) or carry on"
    )
    early_stopping: EarlyStoppingConfig | None = None
    data: DataConfig
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig = SchedulerConfig()

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, leaving out keys that were never set."""
        return self.model_dump(mode="json", exclude_none=True)


def load_config(
    path: Path,
    overrides: list[str] = (),
    *,
    epochs: int | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> ExperimentConfig:
    """Read `path`, apply `--set key.path=value` overrides and options, and validate.

    Example:
        >>> cfg = load_config(Path("configs/quickstart.yaml"), ["optimizer.lr=0.05"])
    """
    configs = load_configs(path, overrides, epochs=epochs, seed=seed, device=device)
    if len(configs) > 1:
        raise ConfigError(
            f"its sweep: block makes {len(configs)} configs; see them with `lrsched plan "
            f"{path}`, run them with `lrsched compare {path}`",
            "sweep",
        )
    return configs[0]


def load_configs(
    path: Path,
    overrides: Sequence[str] = (),
    *,
    epochs: int | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> list[ExperimentConfig]:
    """Like load_config, but a `sweep:` block expands into one config per point of its grid."""
    text = _read_text(path)
    raw = parse_yaml(text, path)
    sources = [_override_source(override) for override in overrides]
    for override in overrides:
        _apply_override(raw, override)
    for key, value in (("epochs", epochs), ("seed", seed), ("device", device)):
        if value is not None:
            raw[key] = value
            sources.append((key, f"--{key} {value}"))
    raw.setdefault("name", path.stem)
    configs = []
    for variant in expand_sweep(raw, text, path):
        cfg = validate(variant, text, path, sources)
        try:
            configs.append(_anchor_files(cfg, path.absolute().parent, sources))
        except ConfigError as exc:
            raise ConfigError(locate(str(exc), exc.key, text, path, sources)) from None
    return configs


def expand_sweep(raw: dict[str, Any], text: str = "", path: Path | None = None) -> list[dict]:
    """`sweep: {scheduler.gamma: [0.1, 0.5], optimizer.lr: [0.01, 0.1]}` gives 4 configs,
    named after the base and each value, e.g. `base-gamma=0.1-lr=0.01`."""
    sweep = raw.pop("sweep", None)
    if sweep is None:
        return [raw]
    if not isinstance(sweep, dict) or not sweep:
        raise ConfigError(
            locate("sweep: expected a mapping of key.path: [values]", "sweep", text, path)
        )
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            message = f"sweep.{key}: expected a non-empty list of values (got {values!r})"
            raise ConfigError(locate(message, f"sweep.{key}", text, path))
    labels = sweep_labels([str(key) for key in sweep])
    variants = []
    for point in itertools.product(*sweep.values()):
        variant = copy.deepcopy(raw)
        for key, value in zip(sweep, point, strict=True):
            try:
                _set_key(variant, str(key), value, f"sweep.{key}")
            except ConfigError as exc:
                raise ConfigError(locate(str(exc), str(key), text, path)) from None
        parts = [f"{labels[str(key)]}={value}" for key, value in zip(sweep, point, strict=True)]
        variant["name"] = "-".join([str(raw["name"]), *parts])
        variants.append(variant)
    return variants


def sweep_labels(keys: list[str]) -> dict[str, str]:
    """Each swept key's shortest dotted suffix that names it alone: no other swept key ends
    with it, and it reads as no top-level key (`scheduler.warmup.epochs` -> `warmup.epochs`,
    not `epochs`); a list index never starts one (`schedulers.0.gamma`, not `0.gamma`)."""
    top_level = {*ExperimentConfig.model_fields, "sweep"}
    labels = {}
    for key in keys:
        parts = key.split(".")
        labels[key] = key
        for size in range(1, len(parts)):
            suffix = ".".join(parts[-size:])
            shared = any(other != key and f".{other}".endswith(f".{suffix}") for other in keys)
            if not (shared or suffix in top_level or parts[-size].isdigit()):
                labels[key] = suffix
                break
    return labels


def validate(
    raw: dict[str, Any],
    text: str = "",
    path: Path | None = None,
    sources: Sequence[tuple[str, str]] = (),
) -> ExperimentConfig:
    """Validate plain data; errors name the key, where it was given (its line in `text`, or
    the command-line option in `sources`), and the nearest valid key."""
    errors = _unknown_model_keys(raw)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        errors = [*exc.errors(), *errors]
    if not errors:
        return cfg
    lines = [
        locate(_describe(error), ".".join(str(part) for part in error["loc"]), text, path, sources)
        for error in errors
    ]
    raise ConfigError("\n".join(lines)) from None  # each line already says where


def locate(
    message: str,
    key: str | None,
    text: str,
    path: Path | None,
    overrides: Sequence[str | tuple[str, str]] = (),
) -> str:
    """Prefix `message` with where `key` got its value: the `sweep:` entry or the line of the
    file, or the `--set` (given as `key=value`, or as a (key, label) pair) that replaced it."""
    where = _where(key or "", text, path, [_override_source(o) for o in overrides])
    return f"{where}: {message}" if where else message


def _where(key: str, text: str, path: Path | None, sources: list[tuple[str, str]]) -> str | None:
    # A sweep's values are applied last, so they beat a --set of the same key.
    line = _sweep_line(text, key) if key else None
    if line is None:
        for given, label in reversed(sources):  # the last --set of a key is the one in effect
            if key == given or key.startswith(f"{given}."):
                return label
    if path is None:
        return None
    line = line or (line_of(text, key) if key else None)
    return f"{path}, line {line}" if line else str(path)


def _override_source(override: str | tuple[str, str]) -> tuple[str, str]:
    if isinstance(override, tuple):
        return override
    return override.partition("=")[0].strip(), f"--set {override}"


def _sweep_line(text: str, key: str) -> int | None:
    """The line of the `sweep:` entry that sets `key` (or a parent of it), if one does."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader) if text else None
    except yaml.YAMLError:
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    sweep = next((v for k, v in node.value if k.value == "sweep"), None)
    if not isinstance(sweep, yaml.MappingNode):
        return None
    for entry, _ in sweep.value:
        if key == entry.value or key.startswith(f"{entry.value}."):
            return entry.start_mark.line + 1
    return None


def _unknown_model_keys(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """A built-in model's unknown keys, as pydantic reports a closed block's; only a
    `module:factory` takes keys of its own."""
    model = raw.get("model")
    if not isinstance(model, dict):
        return []
    name = model.get("name", "mlp")
    if isinstance(name, str) and ":" in name:
        return []
    return [
        {"type": "extra_forbidden", "loc": ("model", key), "msg": "", "input": value}
        for key, value in model.items()
        if key not in ModelConfig.model_fields
    ]


def _anchor_files(cfg: ExperimentConfig, folder: Path, sources) -> ExperimentConfig:
    """Pin the user's own files down while the config's folder is known, as absolute paths,
    so that the resolved config saved with a run finds them from any directory (`--resume`).

    `data.path` is relative to the config's folder, or to the current directory when a
    `--set` gave it; a factory's module is looked for in both, then on sys.path."""
    cwd = Path.cwd()
    update: dict[str, Any] = {}
    if cfg.data.path is not None:
        typed = any(key in ("data", "data.path") for key, _ in sources)
        path = (cwd if typed else folder) / os.path.expanduser(cfg.data.path)
        update["data"] = cfg.data.model_copy(update={"path": os.path.normpath(path)})
    if ":" in cfg.model.name:
        name = find_factory(cfg.model.name, folder, cwd)
        update["model"] = cfg.model.model_copy(update={"name": name})
    return cfg.model_copy(update=update) if update else cfg


def find_factory(target: str, folder: Path, cwd: Path) -> str:
    """`module:factory` or `file.py:factory` as `/absolute/file.py:factory` when the file is
    in the config's `folder` or in `cwd`; unchanged when the module is on sys.path."""
    module, _, attribute = target.rpartition(":")
    if not module or not attribute.isidentifier():
        raise ConfigError(
            f"model.name: expected package.module:factory or file.py:factory (got {target!r})",
            "model.name",
        )
    if module.endswith(".py") or "/" in module or os.sep in module:
        relative = Path(os.path.expanduser(module))
        candidates = [relative] if relative.is_absolute() else [folder / relative, cwd / relative]
        wanted = str(relative)
    else:
        relative = Path(*module.split("."))
        candidates = [
            base / relative.parent / name
            for base in (folder, cwd)
            for name in (f"{relative.name}.py", f"{relative.name}/__init__.py")
        ]
        wanted = f"{relative}.py"
        try:
            if importlib.util.find_spec(module.split(".")[0]) is not None:
                candidates.append(None)  # on sys.path: imported by name when the model is built
        except (ImportError, ValueError):
            pass
    for candidate in candidates:
        if candidate is None:
            return target
        if candidate.is_file():
            return f"{os.path.normpath(candidate.absolute())}:{attribute}"
    if relative.is_absolute():
        looked = "no such file"
    else:
        looked = f"looked in {folder} (the config's folder) and {cwd} (the current directory)"
        looked += "" if wanted == module else ", then on sys.path"
    raise ConfigError(f"model.name: cannot find {wanted} for {target!r}; {looked}", "model.name")


def line_of(text: str, key: str) -> int | None:
    """The 1-based line of dotted `key` in YAML `text`, or of its closest written parent."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in key.split("."):
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                break
            line, node = match[0][0].start_mark.line + 1, match[0][1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_yaml(text: str, path: Path) -> dict[str, Any]:
    """Safe-load `text`: no python tags, a mapping at the top, errors with their line."""
    try:
        raw = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        if "constructor for the tag" in problem:
            problem = f"tags such as {exc.problem.split(chr(39))[1]!r} are not allowed"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; see configs/quickstart.yaml for a start")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {_kind(raw)}")
    return raw


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected key.path=value, e.g. optimizer.lr=0.05")
    try:
        parsed = _load_yaml(value) if value.strip() else value
    except yaml.YAMLError:
        parsed = value
    key = key.strip()
    if key.startswith("sweep.") and isinstance(raw.get("sweep", {}), dict):
        # A sweep's keys are dotted paths themselves: `--set sweep.optimizer.lr=[0.1, 1]`.
        raw.setdefault("sweep", {})[key.removeprefix("sweep.")] = parsed
        return
    _set_key(raw, key, parsed, f"--set {override!r}")


def _set_key(raw: dict[str, Any], key: str, value: Any, label: str) -> None:
    """Set dotted `key`, making the mappings on its way; `label` says who set it in errors."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{label}: {part!r} is not a mapping")
        node = child
    node[parts[-1]] = value


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        choices = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), choices, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{key}: unknown key; {hint}valid keys: {', '.join(choices)}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    return f"{key}: {error['msg'].lower()} (got {error['input']!r})"


def _fields_at(loc: tuple) -> list[str]:
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        model = next(m for m in _models_in(annotation))
    return list(model.model_fields)


def _models_in(annotation: Any):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _models_in(arg)


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string"}.get(type(value), type(value).__name__)
