"""The experiment config: YAML text -> frozen, validated `ExperimentConfig`. Never imports torch."""

from __future__ import annotations

import copy
import difflib
import itertools
import re
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


class ModelConfig(_Closed):
    name: str = Field("mlp", description="linear | mlp | cnn | package.module:factory")
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


class ExperimentConfig(_Closed):
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
            f"{path}: its sweep: block makes {len(configs)} configs; run them "
            f"with `lrsched compare {path}`",
            "sweep",
        )
    return configs[0]


def load_configs(
    path: Path,
    overrides: list[str] = (),
    *,
    epochs: int | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> list[ExperimentConfig]:
    """Like load_config, but a `sweep:` block expands into one config per point of its grid."""
    text = _read_text(path)
    raw = parse_yaml(text, path)
    for override in overrides:
        _apply_override(raw, override)
    for key, value in (("epochs", epochs), ("seed", seed), ("device", device)):
        if value is not None:
            raw[key] = value
    raw.setdefault("name", path.stem)
    return [validate(variant, text, path) for variant in expand_sweep(raw, text, path)]


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
    variants = []
    for point in itertools.product(*sweep.values()):
        variant = copy.deepcopy(raw)
        labels = []
        for key, value in zip(sweep, point, strict=True):
            _apply_override(variant, f"{key}=__sweep__")
            _set_path(variant, str(key), value)
            labels.append(f"{str(key).split('.')[-1]}={value}")
        variant["name"] = "-".join([str(raw["name"]), *labels])
        variants.append(variant)
    return variants


def _set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    for part in key.split(".")[:-1]:
        node = node[part]
    node[key.split(".")[-1]] = value


def validate(raw: dict[str, Any], text: str = "", path: Path | None = None) -> ExperimentConfig:
    """Validate plain data; errors name the key, its line in `text`, and the nearest valid key."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [
            locate(_describe(error), ".".join(str(part) for part in error["loc"]), text, path)
            for error in exc.errors()
        ]
        raise ConfigError("\n".join(lines)) from None  # each line already says where


def locate(message: str, key: str | None, text: str, path: Path | None) -> str:
    """Prefix `message` with the file and the line where `key` is written, when known."""
    if path is None:
        return message
    line = line_of(text, key) if key else None
    where = f"{path}, line {line}" if line else str(path)
    return f"{where}: {message}"


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
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {part!r} is not a mapping", key.strip())
        node = child
    try:
        node[parts[-1]] = _load_yaml(value) if value.strip() else value
    except yaml.YAMLError:
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
