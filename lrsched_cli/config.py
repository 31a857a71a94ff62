"""The experiment config: YAML text -> frozen, validated `ExperimentConfig`. Never imports torch."""

from __future__ import annotations

import copy
import difflib
import importlib.util
import itertools
import math
import os
import re
import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError

from lrsched_cli.errors import ConfigError
from lrsched_cli.hf_schedules import SCHEDULES

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
# Bounds that keep a typo (hidden: [10000000]) from exhausting memory on a toy-model tool.
MAX_SAMPLES, MAX_SIZE, MAX_LAYERS, MAX_EPOCHS = 10_000_000, 65_536, 64, 1_000_000
MAX_THREADS = 1024
FLOAT32_MAX = 3.4e38  # models train in float32: a larger lr overflows inside optimizer.step()
# Input bounds: a config is a page of text, and every step after reading it (validation,
# sweep expansion, messages) costs time in its size. These keep a hostile or mistaken file
# (an alias bomb, a 50 MB list) down to one error line in well under a second.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32  # nesting of mappings and lists; PyYAML and pydantic recurse per level
MAX_NODES = 100_000  # values in the document once aliases are expanded
MAX_ITEMS = 10_000  # entries of one list or mapping
MAX_STRING = 4096  # characters of one string (PATH_MAX)
MAX_NAME = 200  # characters of `name`, which names run directories and plot titles
MAX_NUMBER_DIGITS = 100  # an integer literal; int() of 4,300+ digits raises in Python
MAX_SWEEP = 1000  # configs one sweep: block may make, each trained for every seed
# A toy-model tool: float32 weights, gradients and Adam's two moments take 16 bytes a
# parameter, 800 MB at this limit, and a CPU step over them takes a tenth of a second.
MAX_PARAMETERS = 50_000_000


class InputTooLarge(yaml.MarkedYAMLError):
    """A YAML document past one of the input bounds, or one that repeats a key."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(problem=problem, problem_mark=mark)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-3` as the number YAML 1.2 says it is, not a string;
    it refuses a repeated key and bounds nesting and alias expansion while it composes, before
    any Python value is built."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        # Values composed so far with aliases expanded, and each finished node's share: an
        # alias reuses its node, so this is one pass over the text however far it would expand,
        # and composing stops at the value that crosses a bound, not at the end of the file.
        self._total = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        entries = len(parent.value) if isinstance(parent, yaml.MappingNode) else index
        if isinstance(entries, int) and entries >= MAX_ITEMS:
            raise InputTooLarge(f"more than {MAX_ITEMS:,} entries in one value", event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            node = self.anchors.get(event.anchor)
            if node is not None and id(node) not in self._sizes:
                raise InputTooLarge(
                    f"alias *{event.anchor} refers to a value that contains it", event.start_mark
                )
            self._add(self._sizes[id(node)] if node is not None else 1, event)
            return super().compose_node(parent, index)
        self._add(1, event)
        before = self._total
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise InputTooLarge(f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._total - before + 1
        return node

    def _add(self, values: int, event: Any) -> None:
        self._total += values
        if self._total > MAX_NODES:
            raise InputTooLarge(
                f"the document expands to more than {MAX_NODES:,} values (aliases included)",
                event.start_mark,
            )

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            if (key.tag, key.value) in first:
                raise InputTooLarge(
                    f"duplicate key {excerpt(key.value)} (first given on line "
                    f"{first[key.tag, key.value]}); give each key once",
                    key.start_mark,
                )
            first[key.tag, key.value] = key.start_mark.line + 1
        return node

    def construct_yaml_int(self, node: Any) -> int:
        if len(node.value) > MAX_NUMBER_DIGITS:
            raise InputTooLarge(
                f"an integer of {len(node.value)} digits; at most {MAX_NUMBER_DIGITS}",
                node.start_mark,
            )
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxstring, _EXCERPT.maxother = 3, 40, 40
_EXCERPT.maxlist = _EXCERPT.maxtuple = _EXCERPT.maxdict = _EXCERPT.maxset = 6


def excerpt(value: Any, limit: int = 60) -> str:
    """`value` as a short repr for a message: cut inside (at most a few levels, items and
    characters, so the cost is bounded however large `value` is) and at `limit` characters."""
    try:
        text = _EXCERPT.repr(value)
    except Exception:  # an int past Python's digit limit, a broken __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Open(BaseModel):
    """A block whose other keys are torch's keyword arguments, checked later against torch."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _factory_options_schema(schema: dict[str, Any]) -> None:
    """Built-in models and datasets are closed; a `module:factory` takes its own keys (JSON
    Schema side)."""
    schema["additionalProperties"] = True
    schema["if"] = {"properties": {"name": {"pattern": ":"}}, "required": ["name"]}
    schema["else"] = {
        "properties": dict.fromkeys(schema["properties"], True),
        "additionalProperties": False,
    }


def check_factory_form(name: str) -> str:
    """`name` unchanged when it is no `module:factory`, or is one in a form the loader takes."""
    if ":" not in name:
        return name
    module, _, attribute = name.rpartition(":")
    is_file = module.endswith(".py") or "/" in module or os.sep in module
    dotted = all(part.isidentifier() for part in module.split("."))
    if not module or not attribute.isidentifier() or not (is_file or dotted):
        raise PydanticCustomError(
            "factory_name",
            "expected package.module:factory or file.py:factory, e.g. mymodule:build",
        )
    return name


class DataConfig(BaseModel):
    """A registered dataset's keys are these fields; a `module:factory` also takes its own
    keyword arguments, checked against its signature when the data is resolved."""

    model_config = ConfigDict(
        extra="allow", frozen=True, allow_inf_nan=False, json_schema_extra=_factory_options_schema
    )

    name: str = Field(
        description="a registered dataset (`lrsched list datasets`), package.module:factory "
        "or file.py:factory"
    )
    batch_size: int = Field(64, gt=0, le=MAX_SIZE)
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of samples held out")
    test_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="share of samples held out for test: evaluated once, on the final weights",
    )
    n_samples: int | None = Field(
        None, gt=1, le=MAX_SAMPLES, description="synthetic: how many; images: a seeded subset"
    )
    noise: float | None = Field(None, ge=0, le=1e6, description="synthetic datasets: noise level")
    path: str | None = Field(None, description="csv: the file to read")
    target: str | None = Field(None, description="csv: the column to predict")
    task: Literal["classification", "regression"] | None = Field(None, description="csv only")
    root: str | None = Field(
        None,
        description="mnist, fashion_mnist, cifar10: the folder that holds torchvision's "
        "MNIST/, FashionMNIST/ or cifar-10-batches-py/ (default ~/.cache/lrsched/data)",
    )
    download: bool | None = Field(
        None, description="mnist, fashion_mnist, cifar10: fetch missing files (default true)"
    )
    standardize: Literal["feature", "channel", "none"] | None = Field(
        None,
        description="scale by the train split's mean and std: each feature, or each image "
        "channel; none: as loaded (default: channel for mnist, fashion_mnist, cifar10, "
        "else feature)",
    )

    @field_validator("name")
    @classmethod
    def _factory_form(cls, name: str) -> str:
        return check_factory_form(name)


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

    @field_validator("name")
    @classmethod
    def _factory_form(cls, name: str) -> str:
        return check_factory_form(name)

    @field_validator("hidden", "channels")
    @classmethod
    def _positive_sizes(cls, sizes: list[int] | None, info: ValidationInfo):
        if sizes is not None and not all(0 < size <= MAX_SIZE for size in sizes):
            raise ValueError(f"every size must be an integer from 1 to {MAX_SIZE}")
        if sizes is not None and len(sizes) > MAX_LAYERS:
            raise ValueError(f"at most {MAX_LAYERS} layers")
        name = info.data.get("name", "mlp")
        # The data is not known yet: the least any data gives (one feature, one output) is
        # already too many for layers like [65536, 65536].
        least = parameter_estimate(name, {info.field_name: sizes}, (1, 1, 1), 1)
        if sizes is not None and least is not None and least > MAX_PARAMETERS:
            raise PydanticCustomError(
                "too_many_parameters",
                f"this {name}'s layers give at least {least:,} parameters; the limit is "
                f"{MAX_PARAMETERS:,} (lrsched trains toy models); use fewer or smaller layers",
            )
        return sizes


def parameter_estimate(
    name: str, options: dict[str, Any], input_shape: tuple[int, ...], n_outputs: int
) -> int | None:
    """How many parameters the built-in model `name` has for data of `input_shape` (one
    sample) and `n_outputs`, counted from its layer sizes without building it; None for a
    factory, whose size is known only once it is built."""
    name = name.lower()
    features = math.prod(input_shape)
    if name == "linear":
        return features * n_outputs + n_outputs
    if name == "mlp":
        widths = [features, *(options.get("hidden") or (64, 64)), n_outputs]
        return sum(a * b + b for a, b in itertools.pairwise(widths))
    if name == "cnn":
        widths = [input_shape[0], *(options.get("channels") or (16, 32))]
        convolutions = sum(a * b * 9 + b for a, b in itertools.pairwise(widths))
        return convolutions + widths[-1] * 4 * n_outputs + n_outputs
    return None


def check_model_size(
    cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int, built: int | None = None
) -> None:
    """Refuse a model over MAX_PARAMETERS: a built-in one before it is built, from its layer
    sizes and the data's shape; a factory's once it is built (`built`, its parameter count)."""
    options = cfg.model_dump(exclude_none=True)
    count = (
        built
        if built is not None
        else parameter_estimate(cfg.name, options, input_shape, n_outputs)
    )
    if count is None or count <= MAX_PARAMETERS:
        return
    key = {"mlp": "model.hidden", "cnn": "model.channels"}.get(cfg.name.lower(), "model.name")
    raise ConfigError(
        f"{key}: {excerpt(cfg.name)} for data of shape {list(input_shape)} with {n_outputs} "
        f"outputs has {count:,} parameters; the limit is {MAX_PARAMETERS:,} (lrsched trains "
        "toy models); use fewer or smaller layers",
        key,
    )


class EarlyStoppingConfig(_Closed):
    monitor: Literal["val_loss", "val_accuracy", "train_loss"] = "val_loss"
    patience: int = Field(5, gt=0, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="the least change that counts as improvement")


class OptimizerConfig(_Open):
    name: str = Field(description="a torch.optim class name, e.g. SGD, Adam, AdamW")
    lr: float = Field(gt=0, lt=FLOAT32_MAX, description="the initial learning rate")


def _auto_or_bool(value: Any, handler: Any) -> Any:
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError("auto_or_bool", "input should be auto, true or false") from None


# `auto` or a boolean, reported as one error rather than one per member
AutoOrBool = Annotated[Literal["auto"] | bool, WrapValidator(_auto_or_bool)]


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
    name: str = Field(
        "none",
        description=(
            "a torch.optim.lr_scheduler class name (or alias), none, a Hugging Face "
            "transformers schedule under the hf. prefix with transformers' argument names ("
            + ", ".join(name for name in SCHEDULES if name.startswith("hf."))
            + "), or wsd (warmup, stable, decay over a fraction of the run)"
        ),
        examples=["CosineAnnealingLR", "OneCycleLR", "hf.cosine", "wsd"],
    )
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

    name: str = Field(
        max_length=MAX_NAME, description="names the run directory; default: the file's stem"
    )
    seed: int = Field(0, ge=0)
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto|cpu|cuda|cuda:N|mps")
    epochs: int = Field(10, gt=0, le=MAX_EPOCHS)
    threads: AutoOr(1, MAX_THREADS) = Field(
        "auto",
        description="torch CPU threads; auto: 1, and 1 more per 4 MFLOP of a batch's forward pass",
    )
    checkpoint_every: AutoOr(0) = Field(
        "auto",
        description="epochs between checkpoints; 0: none; auto: at most one save per 30 s",
    )
    fuse: AutoOrBool = Field(
        "auto",
        description="compare: train with runs of the same model, data and optimizer in one "
        "batched loop; auto: where it can; true: and say why where it cannot; false: never",
    )
    on_nonfinite: Literal["stop", "continue"] = Field(
        "stop", description="a NaN or infinite loss: stop the run (diverged) or carry on"
    )
    early_stopping: EarlyStoppingConfig | None = None
    tensorboard: bool | None = Field(
        None, description="write TensorBoard events into the run directory as it trains"
    )
    data: DataConfig
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig = SchedulerConfig()

    @field_validator("tensorboard")
    @classmethod
    def _tensorboard_installed(cls, wanted: bool | None) -> bool | None:
        # Checked with the config, before any run directory exists: run, compare and resume alike.
        if wanted and importlib.util.find_spec("tensorboardX") is None:
            raise PydanticCustomError(
                "extra_missing",
                "TensorBoard events need the tensorboard extra: pip install 'lrsched[tensorboard]'",
            )
        return wanted

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
    return _load(path, overrides, {"epochs": epochs, "seed": seed, "device": device}, True)[0]


def load_configs(
    path: Path,
    overrides: Sequence[str] = (),
    *,
    epochs: int | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> list[ExperimentConfig]:
    """Like load_config, but a `sweep:` block expands into one config per point of its grid."""
    return _load(path, overrides, {"epochs": epochs, "seed": seed, "device": device}, False)


def _load(
    path: Path, overrides: Sequence[str], options: dict[str, Any], single: bool
) -> list[ExperimentConfig]:
    text = _read_text(path)
    raw = parse_yaml(text, path)
    sources = [_override_source(override) for override in overrides]
    for override in overrides:
        _apply_override(raw, override)
    for key, value in options.items():
        if value is not None:
            raw[key] = value
            sources.append((key, f"--{key} {value}"))
    raw.setdefault("name", path.stem)
    # Counted before anything is expanded or validated: each point costs a deep copy and a
    # validation, and `run` refuses a sweep whatever its size.
    points = sweep_size(raw, text, path)
    if single and points > 1:
        raise ConfigError(
            f"its sweep: block makes {points} configs; see them with `lrsched plan "
            f"{path}`, run them with `lrsched compare {path}`",
            "sweep",
        )
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
    sweep_size(raw, text, path)
    sweep = raw.pop("sweep", None)
    if sweep is None:
        return [raw]
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


def sweep_size(raw: dict[str, Any], text: str = "", path: Path | None = None) -> int:
    """How many configs the `sweep:` block of `raw` makes (1 without one), after checking its
    shape and that it makes at most MAX_SWEEP; nothing is expanded."""
    sweep = raw.get("sweep")
    if sweep is None:
        return 1
    if not isinstance(sweep, dict) or not sweep:
        raise ConfigError(
            locate("sweep: expected a mapping of key.path: [values]", "sweep", text, path)
        )
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            message = f"sweep.{key}: expected a non-empty list of values (got {excerpt(values)})"
            raise ConfigError(locate(message, f"sweep.{key}", text, path))
    points = math.prod(len(values) for values in sweep.values())
    if points > MAX_SWEEP:
        sizes = " x ".join(str(len(values)) for values in sweep.values())
        message = (
            f"sweep: the grid makes {sizes} = {points:,} configs; the limit is {MAX_SWEEP:,}: "
            "sweep fewer keys or values"
        )
        raise ConfigError(locate(message, "sweep", text, path))
    return points


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
    errors = _bound_errors(raw)
    if not errors:  # within bounds: validating it costs little, whatever it holds
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
    shown = override if len(override) <= 80 else f"{override[:77]}..."
    return override.partition("=")[0].strip(), f"--set {shown}"


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


def _bound_errors(raw: Any, most: int = 5) -> list[dict[str, Any]]:
    """Values past the input bounds, anywhere in `raw` (torch's keyword arguments included):
    nesting, list and string lengths, and numbers that are not finite, which no key takes.
    In pydantic's error form; iterative, so that a deep `--set a.b.c...` cannot recurse."""
    errors: list[dict[str, Any]] = []
    stack: list[tuple[tuple, Any]] = [((), raw)]
    while stack and len(errors) < most:
        loc, value = stack.pop()
        problem = None
        if len(loc) > MAX_DEPTH:
            problem = f"nested deeper than {MAX_DEPTH} levels"
        elif isinstance(value, str) and len(value) > MAX_STRING:
            problem = f"a string of {len(value):,} characters; the limit is {MAX_STRING:,}"
        elif isinstance(value, float) and not math.isfinite(value):
            problem = "input should be a finite number"
        elif isinstance(value, list | dict) and len(value) > MAX_ITEMS:
            problem = f"{len(value):,} entries; the limit is {MAX_ITEMS:,}"
        elif isinstance(value, dict):
            for key, child in reversed(value.items()):
                if isinstance(key, str) and len(key) > MAX_STRING:
                    stack.append(((*loc, excerpt(key, 20)), key))
                else:
                    stack.append(((*loc, key), child))
        elif isinstance(value, list):
            stack.extend(((*loc, i), child) for i, child in reversed(list(enumerate(value))))
        if problem:
            where = loc or ("config",)
            errors.append({"type": "bound", "loc": where, "msg": problem, "input": value})
    return errors


def _unknown_model_keys(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """A built-in model's or dataset's unknown keys, as pydantic reports a closed block's; only
    a `module:factory` takes keys of its own."""
    errors = []
    for block, fields in (("data", DataConfig.model_fields), ("model", ModelConfig.model_fields)):
        given = raw.get(block)
        if not isinstance(given, dict):
            continue
        name = given.get("name", "mlp")
        if isinstance(name, str) and ":" in name:
            continue
        errors += [
            {"type": "extra_forbidden", "loc": (block, key), "msg": "", "input": value}
            for key, value in given.items()
            if key not in fields
        ]
    return errors


def _anchor_files(cfg: ExperimentConfig, folder: Path, sources) -> ExperimentConfig:
    """Pin the user's own files down while the config's folder is known, as absolute paths,
    so that the resolved config saved with a run finds them from any directory (`--resume`).

    `data.path` and `data.root` are relative to the config's folder, or to the current
    directory when a `--set` gave them; a factory's module is looked for in both, then on
    sys.path."""
    cwd = Path.cwd()
    update: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for key in ("path", "root"):
        value = getattr(cfg.data, key)
        if value is not None:
            typed = any(given in ("data", f"data.{key}") for given, _ in sources)
            path = (cwd if typed else folder) / os.path.expanduser(value)
            data[key] = os.path.normpath(path)
    if ":" in cfg.data.name:
        data["name"] = find_factory(cfg.data.name, folder, cwd, "data.name")
    if data:
        update["data"] = cfg.data.model_copy(update=data)
    if ":" in cfg.model.name:
        name = find_factory(cfg.model.name, folder, cwd)
        update["model"] = cfg.model.model_copy(update={"name": name})
    return cfg.model_copy(update=update) if update else cfg


def find_factory(target: str, folder: Path, cwd: Path, key: str = "model.name") -> str:
    """`module:factory` or `file.py:factory` as `/absolute/file.py:factory` when the file is
    in the config's `folder` or in `cwd`; unchanged when the module is on sys.path. `key` is
    the config key that names it."""
    module, _, attribute = target.rpartition(":")
    if not module or not attribute.isidentifier():
        raise ConfigError(
            f"{key}: expected package.module:factory or file.py:factory (got {excerpt(target)})",
            key,
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
                candidates.append(None)  # on sys.path: imported by name when it is built
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
    raise ConfigError(f"{key}: cannot find {wanted} for {target!r}; {looked}", key)


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
        if not isinstance(exc, InputTooLarge):
            problem = f"invalid YAML: {problem}"
        raise ConfigError(f"{where}: {problem}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; see configs/quickstart.yaml for a start")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {_kind(raw)}")
    return raw


def _read_text(path: Path) -> str:
    """The file's text, read no further than the size limit."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: the config file is larger than {MAX_CONFIG_BYTES >> 20} MiB, the "
                "limit; a config is a page of YAML (data goes in a CSV file: data.path)"
            )
        return data.decode("utf-8")
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
    except InputTooLarge as exc:
        raise ConfigError(f"--set {excerpt(override)}: {exc.problem}") from None
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
    return f"{key}: {error['msg'].lower()} (got {excerpt(error['input'])})"


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
