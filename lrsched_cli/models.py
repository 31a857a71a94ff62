"""Toy models by name: linear, mlp, cnn, or a `package.module:factory` of the user's."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from lrsched_cli.config import ConfigError, ModelConfig, check_model_size
from lrsched_cli.factories import bind_factory_options, import_factory
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
        model = import_factory(cfg.name, "model.name")(input_shape, n_outputs, **options)
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
    """A factory's own keys, checked against its signature as torch's classes' are."""
    factory = import_factory(cfg.name, "model.name")
    given = cfg.model_dump(exclude_none=True, exclude={"name"})
    options = bind_factory_options(factory, given, "model", cfg.name, skip=2)
    return ModelConfig.model_validate({"name": cfg.name, **options})
