"""plan, lint, warmup before any scheduler, explained lr events, momentum, list and schema."""

from __future__ import annotations

import json

import pytest
import torch
from torch.optim import lr_scheduler as L
from typer.testing import CliRunner

from conftest import CONFIGS, tiny, train, write_config
from lrsched_cli import runner
from lrsched_cli.cli import app
from lrsched_cli.config import load_config, validate

cli = CliRunner()


@pytest.mark.parametrize(
    "name", ["step_lr", "warmup_cosine", "one_cycle_lr", "lambda_lr", "cyclic_lr"]
)
def test_plan_equals_what_the_run_records(name, tmp_path):
    cfg = load_config(CONFIGS / f"{name}.yaml", epochs=None, device="cpu")
    cfg = cfg.model_copy(update={"epochs": min(cfg.epochs, 12)})
    planned = runner.plan_experiment(cfg)
    history = train(cfg.to_dict(), tmp_path)
    assert planned.epoch_lrs == history.column("lr")
    assert planned.step_lrs == [row["lr"] for row in history.steps]


LINTS = {
    "T_max shorter than the run": (
        {"name": "CosineAnnealingLR", "T_max": 2},
        "the lr rises again after epoch 2",
    ),
    "OneCycleLR per epoch": (
        {"name": "OneCycleLR", "max_lr": 0.2, "interval": "epoch", "cycle_momentum": False},
        "set interval: step",
    ),
    "CyclicLR per epoch": (
        {
            "name": "CyclicLR",
            "base_lr": 0.01,
            "max_lr": 0.1,
            "interval": "epoch",
            "cycle_momentum": False,
        },
        "set interval: step",
    ),
    "OneCycleLR total_steps off": (
        {"name": "OneCycleLR", "max_lr": 0.2, "total_steps": 1000, "cycle_momentum": False},
        "the cycle is cut short",
    ),
    "warmup longer than the run": (
        {"name": "StepLR", "step_size": 2, "warmup": {"epochs": 6}},
        "the scheduler after it never runs",
    ),
    "lr 0 in epoch 1": ({"name": "LambdaLR", "lr_lambda": "epoch / 10"}, "epoch 1 trains at lr 0"),
    "unclamped lambda": ({"name": "LambdaLR", "lr_lambda": "1 + epoch"}, "is not clamped"),
    "momentum cycled": ({"name": "OneCycleLR", "max_lr": 0.2}, "cycles the optimizer's momentum"),
    "patience >= epochs": ({"name": "ReduceLROnPlateau", "patience": 5}, "can never cut"),
}


@pytest.mark.parametrize("case", LINTS, ids=list(LINTS))
def test_each_lint_fires_on_its_problem(case):
    block, message = LINTS[case]
    planned = runner.plan_experiment(validate(tiny(epochs=4, scheduler=block)))
    assert any(message in warning for warning in planned.warnings), planned.warnings


def test_adam_beta1_is_named_when_cycled():
    cfg = validate(
        tiny(
            optimizer={"name": "Adam", "lr": 0.01}, scheduler={"name": "OneCycleLR", "max_lr": 0.1}
        )
    )
    assert any("cycles the optimizer's beta1" in w for w in runner.plan_experiment(cfg).warnings)


def test_lint_is_silent_on_the_examples_without_a_pitfall():
    for path in sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("compare/*.yaml")):
        warnings = runner.plan_experiment(load_config(path, device="cpu")).warnings
        if path.stem == "lambda_lr":  # the tutorial's example shows the lr-0 pitfall on purpose
            assert len(warnings) == 1 and "lr 0" in warnings[0]
        else:
            assert warnings == [], (path.name, warnings)


def test_strict_turns_warnings_into_exit_2(tmp_path):
    config = write_config(tmp_path, tiny(scheduler={"name": "CosineAnnealingLR", "T_max": 2}))
    for command in (["plan", str(config)], ["run", str(config), "--runs-dir", str(tmp_path)]):
        result = cli.invoke(app, [*command, "--strict"])
        assert result.exit_code == 2, result.output
        assert "T_max 2 is shorter" in result.stderr
    assert not list(tmp_path.glob("*-tiny")), "--strict must stop before training"
    result = cli.invoke(app, ["run", str(config), "--runs-dir", str(tmp_path), "-q"])
    assert result.exit_code == 0 and list(tmp_path.glob("*-tiny"))


def test_plan_cli_table_and_png(tmp_path):
    config = write_config(
        tmp_path,
        tiny(epochs=6, scheduler={"name": "ReduceLROnPlateau", "patience": 1, "min_lr": 0.001}),
    )
    result = cli.invoke(app, ["plan", str(config), "--png", str(tmp_path / "plan.png")])
    assert result.exit_code == 0, result.output
    assert "depends on validation" in result.stdout and "min_lr = 0.001" in result.stdout
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"


def test_plateau_fastest_decay_matches_torch():
    cfg = validate(
        tiny(
            epochs=8,
            scheduler={"name": "ReduceLROnPlateau", "patience": 1, "factor": 0.5, "min_lr": 0.02},
        )
    )
    planned = runner.plan_experiment(cfg)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    plateau = L.ReduceLROnPlateau(optimizer, patience=1, factor=0.5, min_lr=0.02)
    expected = []
    for epoch in range(1, 9):
        expected.append(optimizer.param_groups[0]["lr"])
        plateau.step(float(epoch))  # worse every epoch
    assert planned.epoch_lrs == pytest.approx(expected)
    assert min(planned.epoch_lrs) == 0.02


def test_warmup_then_plateau_replays_through_torch(tmp_path):
    block = {
        "name": "ReduceLROnPlateau",
        "patience": 0,
        "factor": 0.5,
        "warmup": {"epochs": 3, "start_factor": 0.25},
    }
    history = train(tiny(epochs=10, scheduler=block), tmp_path)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    plateau = L.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    warmup = L.LinearLR(optimizer, start_factor=0.25, total_iters=3)
    expected = []
    for index, row in enumerate(history.epochs):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        warmup.step() if index < 3 else plateau.step(row["val_loss"])
    assert history.column("lr") == pytest.approx(expected, rel=1e-12)
    assert history.column("lr")[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert history.epochs[3]["lr_event"] == "warmup end"


def test_warmup_in_steps_before_a_step_scheduler(tmp_path):
    block = {
        "name": "OneCycleLR",
        "max_lr": 0.2,
        "cycle_momentum": False,
        "warmup": {"steps": 4, "start_factor": 0.5},
    }
    history = train(tiny(epochs=3, scheduler=block), tmp_path)
    assert history.config["scheduler"]["total_steps"] == 3 * 4 - 4  # the steps after warmup
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    warm = L.LinearLR(optimizer, start_factor=0.5, total_iters=4)
    main = L.OneCycleLR(optimizer, max_lr=0.2, total_steps=8, cycle_momentum=False)
    sequence = L.SequentialLR(optimizer, [warm, main], milestones=[4])
    expected = []
    for _ in range(12):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sequence.step()
    assert [row["lr"] for row in history.steps] == pytest.approx(expected, rel=1e-12)


def test_warmup_steps_need_a_step_scheduler():
    with pytest.raises(Exception, match="give warmup.epochs"):
        runner.plan_experiment(
            validate(tiny(scheduler={"name": "StepLR", "step_size": 2, "warmup": {"steps": 3}}))
        )


def test_events_explain_step_multistep_and_plateau(tmp_path):
    step = train(tiny(epochs=5), tmp_path)  # StepLR(step_size=2, gamma=0.5)
    assert [r["lr_event"] for r in step.epochs] == [
        None,
        None,
        "step_size 2: x0.5",
        None,
        "step_size 2: x0.5",
    ]
    multi = train(
        tiny(epochs=4, scheduler={"name": "MultiStepLR", "milestones": [1, 3], "gamma": 0.1}),
        tmp_path,
    )
    assert [r["lr_event"] for r in multi.epochs] == [
        None,
        "milestone 1: x0.1",
        None,
        "milestone 3: x0.1",
    ]
    plateau = train(
        tiny(
            epochs=8,
            optimizer={"name": "SGD", "lr": 1e-6},
            scheduler={"name": "ReduceLROnPlateau", "patience": 1, "factor": 0.5, "threshold": 0.5},
        ),
        tmp_path,
    )
    rows = plateau.epochs
    cuts = [i for i in range(1, len(rows)) if rows[i]["lr"] < rows[i - 1]["lr"]]
    assert cuts, "this plateau config should cut"
    for i in cuts:
        assert rows[i]["lr_event"] == "plateau: 2 bad epochs > patience 1, x0.5"
        assert rows[i - 1]["plateau_bad_epochs"] == 0  # torch resets the count at a cut
    assert {"plateau_best", "plateau_bad_epochs", "plateau_cooldown"} <= set(rows[0])


def test_momentum_is_recorded_when_cycled(tmp_path):
    history = train(tiny(epochs=3, scheduler={"name": "OneCycleLR", "max_lr": 0.2}), tmp_path)
    momentum = history.column("momentum")
    assert len(set(momentum)) > 1 and momentum[0] == pytest.approx(0.95)
    plain = train(tiny(epochs=2), tmp_path)
    assert "momentum" not in plain.epochs[0]


def test_list_names_every_kind():
    result = cli.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for name in (
        "ReduceLROnPlateau",
        "SequentialLR",
        "AdamW",
        "mlp",
        "cnn",
        "digits",
        "csv",
        "none",
        "T_max",
        "hidden",
    ):
        assert name in result.stdout, name
    result = cli.invoke(app, ["list", "schedulers"])
    assert "StepLR" in result.stdout and "moons" not in result.stdout


def test_schema_is_the_config_models_json_schema():
    result = cli.invoke(app, ["schema"])
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert {"data", "optimizer", "scheduler", "epochs"} <= set(schema["properties"])
    assert "warmup" in json.dumps(schema)
