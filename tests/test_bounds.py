"""Bounded inputs and values read wrongly: each refused with one line and exit 2, before the
expensive work. Costs are bounded by construction (what is counted, built or evaluated), never
by a wall-clock threshold; subprocess timeouts are hang guards only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli import config as config_module
from lrsched_cli.cli import app
from lrsched_cli.config import (
    MAX_CONFIG_BYTES,
    MAX_PARAMETERS,
    ConfigError,
    ModelConfig,
    check_model_size,
    load_config,
    load_configs,
    validate,
)
from lrsched_cli.expressions import LrExpression

cli = CliRunner()


def refused(*arguments: str) -> str:
    """Run the CLI, assert exit 2 with one error line and no traceback; return that line."""
    result = cli.invoke(app, list(arguments))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


def plan_refuses(tmp_path: Path, config: dict, *wanted: str) -> str:
    line = refused("plan", str(write_config(tmp_path, config)))
    for text in wanted:
        assert text in line, line
    return line


def alias_bomb(levels: int) -> str:
    """`levels` anchors, each a list of 9 aliases of the one before: 9**levels values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    return "\n".join(lines)


# --- the config file and its YAML -------------------------------------------------------


def test_config_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = write_config(tmp_path, tiny())
    with path.open("a") as handle:
        handle.write("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config(path)


def test_alias_bomb_is_refused_with_a_short_message(tmp_path):
    # 9**7 values once expanded: before the bound, the message quoted all of them.
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml.safe_dump(tiny()) + alias_bomb(7) + "\nseed: *a6\n")
    with pytest.raises(ConfigError, match="expands to more than 100,000 values") as caught:
        load_config(path)
    assert len(str(caught.value)) < 200


def test_600_byte_alias_bomb_exits_2_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml.safe_dump(tiny()) + alias_bomb(9) + "\nseed: *a8\n")
    assert len(alias_bomb(9)) < 600
    # The timeout guards against a hang only; 9**9 values would take minutes and gigabytes.
    result = subprocess.run(
        [sys.executable, "-m", "lrsched_cli", "plan", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "expands to more than" in result.stderr and len(result.stderr) < 300


def test_a_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny()) + "extra: &loop [*loop]\n")
    with pytest.raises(ConfigError, match="refers to a value that contains it"):
        load_config(path)


@pytest.mark.parametrize("nesting", ["[" * 900 + "]" * 900, "{a: " * 900 + "1" + "}" * 900])
def test_nesting_900_deep_exits_2(tmp_path, nesting):
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(tiny()) + f"extra: {nesting}\n")
    assert "nesting deeper than 32 levels" in refused("plan", str(path))


def test_deep_nesting_from_the_command_line_exits_2(tmp_path):
    path = write_config(tmp_path, tiny())
    assert "nesting deeper than" in refused("plan", str(path), "--set", "x=" + "[" * 900)
    deep_key = ".".join(["a"] * 900)
    assert "nested deeper than" in refused("plan", str(path), "--set", f"{deep_key}=1")


def test_duplicate_keys_are_refused_naming_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny(), sort_keys=False) + "epochs: 9\n")
    first = yaml.safe_dump(tiny(), sort_keys=False).splitlines().index("epochs: 4") + 1
    with pytest.raises(ConfigError, match=rf"duplicate key 'epochs' \(first given on line {first}"):
        load_config(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text(yaml.safe_dump(tiny()) + "early_stopping: {patience: 2, patience: 3}\n")
    with pytest.raises(ConfigError, match="duplicate key 'patience'"):
        load_config(nested)


def test_merge_keys_may_override_what_they_merge(tmp_path):
    path = tmp_path / "c.yaml"
    base = {k: v for k, v in tiny().items() if k != "optimizer"}
    path.write_text(
        yaml.safe_dump(base)
        + "defaults: &sgd {name: SGD, lr: 0.1}\n"
        + "optimizer: {<<: *sgd, lr: 0.2}\n"
    )
    raw = config_module.parse_yaml(path.read_text(), path)
    assert raw["optimizer"] == {"name": "SGD", "lr": 0.2}


def test_an_integer_of_thousands_of_digits_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny()) + "seed: " + "1" * 5000 + "\n")
    with pytest.raises(ConfigError, match="an integer of 5000 digits"):
        load_config(path)


# --- lengths, names, numbers --------------------------------------------------------------


def test_long_strings_and_lists_are_refused_with_an_excerpt(tmp_path):
    path = write_config(tmp_path, tiny())
    line = refused("plan", str(path), "--set", "name=" + "n" * 1000)
    assert "name: string should have at most 200 characters" in line and len(line) < 300
    line = refused("plan", str(path), "--set", "name=" + "n" * 50_000)
    assert "name: a string of 50,000 characters; the limit is 4,096" in line and len(line) < 300
    line = refused("plan", str(path), "--set", "scheduler.note=" + "x" * 50_000)
    assert "a string of 50,000 characters" in line and len(line) < 300
    many = "[" + ", ".join(["1"] * 20_000) + "]"
    line = refused("plan", str(path), "--set", f"scheduler.milestones={many}")
    assert "entries" in line and len(line) < 300


def test_a_long_hidden_list_is_refused_before_it_is_validated_item_by_item():
    hidden = list(range(1, 1_000_001))
    with pytest.raises(ConfigError, match="model.hidden: 1,000,000 entries") as caught:
        validate(tiny(model={"name": "mlp", "hidden": hidden}))
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ("optimizer", "momentum"),
        ("optimizer", "weight_decay"),
        ("scheduler", "gamma"),
    ],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_torch_arguments_are_config_errors(tmp_path, block, key, value):
    config = tiny()
    config[block] = {**config[block], key: value}
    plan_refuses(tmp_path, config, f"{block}.{key}: input should be a finite number")


def test_non_finite_max_lr_is_a_config_error(tmp_path):
    scheduler = {"name": "OneCycleLR", "max_lr": float("nan")}
    plan_refuses(tmp_path, tiny(scheduler=scheduler), "scheduler.max_lr: input should be a finite")


@pytest.mark.parametrize("name", [":x", ".x:y", "x:", "a..b:f", "x:not-a-name"])
def test_malformed_factory_names_exit_2(tmp_path, name):
    plan_refuses(tmp_path, tiny(model={"name": name}), "model.name: expected package.module")


# --- sweeps ------------------------------------------------------------------------------


def test_a_huge_sweep_is_refused_before_any_point_is_built(tmp_path, monkeypatch):
    sweep = {f"optimizer.k{i}": list(range(10)) for i in range(6)}
    path = write_config(tmp_path, {**tiny(), "sweep": sweep})
    built = []
    monkeypatch.setattr(config_module, "validate", lambda *a, **k: built.append(1))
    with pytest.raises(ConfigError, match=r"10 x 10 x 10 x 10 x 10 x 10 = 1,000,000 configs"):
        load_configs(path)
    with pytest.raises(ConfigError, match="1,000,000 configs"):
        load_config(path)
    assert built == []


def test_run_refuses_a_sweep_before_building_its_points(tmp_path, monkeypatch):
    path = write_config(tmp_path, {**tiny(), "sweep": {"optimizer.lr": [0.1, 0.2, 0.3]}})
    built = []
    monkeypatch.setattr(config_module, "validate", lambda *a, **k: built.append(1))
    with pytest.raises(ConfigError, match="makes 3 configs.*lrsched compare"):
        load_config(path)
    assert built == []


# --- model size ----------------------------------------------------------------------------


def test_hidden_layers_too_large_for_any_data_are_refused_with_the_estimate():
    with pytest.raises(ConfigError, match="mlp's layers give at least 4,295,294,981 parameters"):
        validate(tiny(model={"name": "mlp", "hidden": [65536, 65536, 2]}))


def test_the_estimate_uses_the_data_input_size():
    cfg = ModelConfig(name="mlp", hidden=[1000])
    check_model_size(cfg, (2,), 2)  # 5,002 parameters
    with pytest.raises(ConfigError, match=r"model.hidden: 'mlp' for data of shape \[100000\]"):
        check_model_size(cfg, (100_000,), 2)
    with pytest.raises(ConfigError, match="100,003,002 parameters; the limit is 50,000,000"):
        check_model_size(cfg, (100_000,), 2)


def test_a_factory_is_counted_once_built(tmp_path, monkeypatch):
    from lrsched_cli import models

    (tmp_path / "wide.py").write_text(
        "import torch\n\ndef build(input_shape, n_outputs):\n    return torch.nn.Linear(4, 4)\n"
    )
    cfg = ModelConfig(name=f"{tmp_path / 'wide.py'}:build")
    assert models.build_model(cfg, (4,), 2) is not None
    monkeypatch.setattr(config_module, "MAX_PARAMETERS", 10)
    with pytest.raises(ConfigError, match="has 20 parameters; the limit is 10"):
        models.build_model(cfg, (4,), 2)
    assert MAX_PARAMETERS == 50_000_000


# --- lr expressions -------------------------------------------------------------------------


def test_a_huge_power_is_refused_without_building_the_integer():
    expression = LrExpression("9**3999999 % 7 + 1")
    with pytest.raises(ConfigError, match="fails at epoch=0: 9 \\*\\* 4e\\+06 is too large"):
        expression.check(range(3))
    # Powers are taken in floats: a result is one machine number, never an integer's digits.
    assert LrExpression("2**10")(0) == 1024.0 and LrExpression("0.5**epoch")(3) == 0.125


def test_round_with_a_huge_digit_count_is_refused():
    with pytest.raises(ConfigError, match="round\\(\\) takes at most 308 digits"):
        LrExpression("round(epoch, -99999999999999999999)").check(range(2))


def test_expressions_are_evaluated_once_per_counter():
    expression = LrExpression("0.9 ** epoch")
    calls = []
    evaluate = expression._evaluator.eval
    expression._evaluator.eval = lambda *a, **k: calls.append(1) or evaluate(*a, **k)
    expression.check(range(50))
    for counter in range(50):
        expression(counter)
    assert len(calls) == 50


# --- values read wrongly ---------------------------------------------------------------------


@pytest.mark.parametrize(("given", "suggested"), [("30", "[30]"), ("1,2", "[1, 2]")])
def test_a_string_where_a_list_goes_is_refused_with_the_list_form(tmp_path, given, suggested):
    scheduler = {"name": "MultiStepLR", "milestones": given}
    plan_refuses(
        tmp_path,
        tiny(scheduler=scheduler),
        "scheduler.milestones: MultiStepLR expects a list, not the string",
        f"milestones: {suggested}",
    )


def test_a_bad_list_item_is_one_line(tmp_path):
    scheduler = {"name": "MultiStepLR", "milestones": [1, "x"]}
    plan_refuses(tmp_path, tiny(scheduler=scheduler), "scheduler.milestones", "item 1 is 'x'")


@pytest.mark.parametrize(
    ("scheduler", "key"),
    [
        ({"name": "CosineAnnealingLR", "T_max": 0}, "scheduler.T_max"),
        ({"name": "StepLR", "step_size": 0}, "scheduler.step_size"),
        ({"name": "StepLR", "step_size": -2}, "scheduler.step_size"),
    ],
)
def test_zero_lengths_exit_2_in_plan_and_run(tmp_path, scheduler, key):
    line = plan_refuses(tmp_path, tiny(scheduler=scheduler), key, "1 or more")
    path = write_config(tmp_path, tiny(scheduler=scheduler))
    assert refused("run", str(path), "--runs-dir", str(tmp_path / "runs")) == line
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_short_one_cycle_exits_2_in_plan_run_and_strict(tmp_path):
    scheduler = {"name": "OneCycleLR", "max_lr": 0.1, "total_steps": 3}
    path = str(write_config(tmp_path, tiny(scheduler=scheduler)))
    runs = str(tmp_path / "runs")
    for command in (["plan", path], ["run", path, "--runs-dir", runs]):
        for strict in ([], ["--strict"]):
            assert "scheduler.total_steps: OneCycleLR's total_steps is 3" in refused(
                *command, *strict
            )
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    ("gamma", "wanted"),
    [
        (-1, "gives lr -0.1 at epoch 3 (gamma: -1); an lr must not be negative"),
        (1e308, "above float32's largest number"),
    ],
)
def test_a_schedule_that_leaves_the_lr_range_is_refused(tmp_path, gamma, wanted):
    scheduler = {"name": "StepLR", "step_size": 2, "gamma": gamma}
    line = plan_refuses(tmp_path, tiny(scheduler=scheduler), "scheduler.gamma: StepLR", wanted)
    path = write_config(tmp_path, tiny(scheduler=scheduler))
    assert refused("run", str(path), "--runs-dir", str(tmp_path / "runs")) == line
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_nested_scheduler_names_its_own_key(tmp_path):
    scheduler = {
        "name": "SequentialLR",
        "milestones": [2],
        "schedulers": [
            {"name": "ConstantLR", "factor": 0.5, "total_iters": 2},
            {"name": "ExponentialLR", "gamma": -0.5},
        ],
    }
    plan_refuses(tmp_path, tiny(scheduler=scheduler), "scheduler.schedulers.1.gamma")


# --- data -------------------------------------------------------------------------------------


def csv_config(tmp_path: Path, content: bytes) -> Path:
    (tmp_path / "data.csv").write_bytes(content)
    data = {"name": "csv", "path": "data.csv", "target": "t", "task": "classification"}
    return write_config(tmp_path, tiny(data=data))


@pytest.mark.parametrize(
    ("content", "wanted"),
    [
        ("x,y,t\n1,2,caf\xe9\n3,4,a\n".encode("latin-1"), "is not a UTF-8 CSV file"),
        (b"x,y,t\n1,2,a\n3,4\n5,6,b\n", "line 3 has 2 of the 3 columns"),
        (b"x,y,t\n1,nan,a\n3,4,b\n", "column 'y' holds 'nan', not a finite number"),
        (b"x,y,t\n1,1e400,a\n3,4,b\n", "column 'y' holds '1e400', not a finite number"),
        (b"x,y,t\n1,2,a\n", "has 1 sample(s); a run needs at least 3"),
    ],
)
def test_bad_csv_files_exit_2_and_leave_no_run_directory(tmp_path, content, wanted):
    path = csv_config(tmp_path, content)
    runs = tmp_path / "runs"
    assert wanted in refused("plan", str(path))
    assert wanted in refused("run", str(path), "--runs-dir", str(runs))
    assert not runs.exists() or not list(runs.iterdir())


def test_repeated_seeds_exit_2(tmp_path):
    path = write_config(tmp_path, tiny())
    result = cli.invoke(
        app, ["compare", str(path), "--seed-list", "1,1", "--runs-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert "seed 1 is given twice" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()
