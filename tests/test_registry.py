"""Names -> torch classes and schedule kinds, kwargs checked against torch, safe lr
expressions, and the peak lr key a sweep of lrs moves."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny
from lrsched_cli.build import build_optimizer
from lrsched_cli.config import ConfigError, OptimizerConfig, SchedulerConfig, validate
from lrsched_cli.expressions import LrExpression
from lrsched_cli.registry import UNSUPPORTED_OPTIMIZERS, optimizer_classes
from lrsched_cli.schedule_config import peak_lr_key, resolve_scheduler, with_peak_lr
from lrsched_cli.schedule_kinds import build, canonical_name


def params():
    return [torch.nn.Parameter(torch.zeros(2, 2))]


@pytest.mark.parametrize("name", sorted(optimizer_classes()))
def test_every_optimizer_builds_and_steps(name):
    weights = params()
    optimizer = build_optimizer(weights, OptimizerConfig(name=name, lr=0.01))
    weights[0].sum().backward()
    optimizer.step()
    assert optimizer.param_groups[0]["lr"] == 0.01


def test_optimizers_cover_torch_except_the_documented_ones():
    torch_names = {
        n
        for n, c in vars(torch.optim).items()
        if isinstance(c, type) and issubclass(c, torch.optim.Optimizer)
    }
    assert set(optimizer_classes()) == torch_names - {"Optimizer"} - set(UNSUPPORTED_OPTIMIZERS)


def test_unsupported_optimizer_says_why():
    with pytest.raises(ConfigError, match="LBFGS is not supported: its step"):
        build_optimizer(params(), OptimizerConfig(name="LBFGS", lr=0.1))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("cosine", "CosineAnnealingLR"),
        ("steplr", "StepLR"),
        ("plateau", "ReduceLROnPlateau"),
        ("None", "none"),
    ],
)
def test_aliases_and_any_case(given, expected):
    assert canonical_name(given) == expected


def test_string_numbers_are_coerced_by_torch_annotation():
    optimizer = build_optimizer(params(), OptimizerConfig(name="SGD", lr=0.1, momentum="0.5"))
    assert optimizer.param_groups[0]["momentum"] == 0.5


def test_last_epoch_is_managed():
    optimizer = build_optimizer(params(), OptimizerConfig(name="SGD", lr=0.1))
    block = SchedulerConfig(name="StepLR", step_size=1, last_epoch=3)
    with pytest.raises(ConfigError, match="lrsched manages last_epoch"):
        build(optimizer, block)


def test_composites_refuse_plateau():
    block = SchedulerConfig(
        name="SequentialLR",
        milestones=[2],
        schedulers=[{"name": "ConstantLR"}, {"name": "plateau"}],
    )
    with pytest.raises(ConfigError, match="cannot hold ReduceLROnPlateau"):
        resolve_scheduler(block, 4, 10, "classification")


def test_monitor_is_for_plateau_only():
    with pytest.raises(ConfigError, match="only ReduceLROnPlateau is fed a metric"):
        resolve_scheduler(
            SchedulerConfig(name="StepLR", step_size=1, monitor="val_loss"), 4, 10, "classification"
        )


def test_plateau_on_accuracy_needs_classification():
    block = SchedulerConfig(name="ReduceLROnPlateau", monitor="val_accuracy")
    with pytest.raises(ConfigError, match="only for classification"):
        resolve_scheduler(block, 4, 10, "regression")


@pytest.mark.parametrize(
    ("text", "counter", "value"),
    [
        ("epoch / 10", 3, 0.3),
        ("0.95", 7, 0.95),
        (0.5, 1, 0.5),
        ("min(1, (step + 1) / 5)", 2, 0.6),
        ("0.5 ** (epoch // 2)", 5, 0.25),
        ("exp(-epoch) if epoch > 2 else 1", 1, 1.0),
        ("cos(pi * epoch / 4)", 4, -1.0),
    ],
)
def test_expressions_evaluate(text, counter, value):
    assert LrExpression(text)(counter) == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('echo hi')",
        "epoch.__class__",
        "open('x')",
        "'a' * 3",
        "[1, 2][0]",
        "lambda: 1",
        "x + 1",
        "1 << 10",
        "epoch in (1, 2)",
        "epoch = 1",
        "exp(x=1)",
        "True",
        "{'a': 1}",
        "1 +",
    ],
)
def test_expressions_refuse_anything_but_arithmetic(text):
    with pytest.raises(ConfigError, match="scheduler.lr_lambda"):
        LrExpression(text)


@pytest.mark.parametrize(
    "text", ["9 ** 9 ** 9", "epoch / (epoch - 2)", "exp(1000 * epoch)", "-1", "log(epoch - 5)"]
)
def test_expressions_are_checked_over_the_whole_run(text):
    with pytest.raises(ConfigError, match="scheduler.lr_lambda"):
        LrExpression(text).check(range(10))


def test_expressions_have_a_length_limit():
    with pytest.raises(ConfigError, match="longer than"):
        LrExpression("1 + " * 100 + "1")


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"name": "cosine", "T_max": 5}, "optimizer.lr"),
        ({"name": "none"}, "optimizer.lr"),
        ({"name": "onecycle", "max_lr": 0.3}, "scheduler.max_lr"),
        ({"name": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1}, "scheduler.max_lr"),
    ],
)
def test_peak_lr_key_names_the_key_a_sweep_moves(block, key):
    assert peak_lr_key(SchedulerConfig(**block)) == key


def test_with_peak_lr_sets_the_peak_and_moves_cyclic_base_lr_with_it():
    cyclic = validate(tiny(scheduler={"name": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1}))
    moved = with_peak_lr(cyclic, 0.4)
    assert moved.scheduler.kwargs["max_lr"] == 0.4
    assert moved.scheduler.kwargs["base_lr"] == pytest.approx(0.04, rel=1e-12)
    assert moved.optimizer.lr == cyclic.optimizer.lr
    step = validate(tiny())
    assert with_peak_lr(step, 0.05).optimizer.lr == 0.05
    assert with_peak_lr(step, 0.05).scheduler == step.scheduler
