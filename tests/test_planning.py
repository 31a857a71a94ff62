"""plan, lint, warmup before any scheduler, explained lr events, momentum, list and schema."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch.optim import lr_scheduler as L
from typer.testing import CliRunner

from conftest import CONFIGS, tiny, train, write_config
from lrsched_cli import runner
from lrsched_cli.cli import app
from lrsched_cli.config import load_config, validate
from test_schedules import BLOCKS

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


# Every schedule name a config may give, and each with a warmup in front. ReduceLROnPlateau's
# plan is its fastest decay, not a forecast: it is checked against torch on the run's own
# metrics in test_schedules.py instead.
PLANNED = {
    **{name: block for name, block in BLOCKS.items() if block is not None},
    **{
        f"{name} after a warmup": {**block, "warmup": {"epochs": 2, "start_factor": 0.3}}
        for name, block in BLOCKS.items()
        if block is not None and name not in ("OneCycleLR", "CyclicLR")
    },
    **{
        f"{name} after a warmup in steps": {**BLOCKS[name], "warmup": {"steps": 5}}
        for name in ("OneCycleLR", "CyclicLR")
    },
}


@pytest.mark.parametrize("case", PLANNED, ids=list(PLANNED))
def test_plan_equals_the_run_for_every_schedule(case, tmp_path):
    """plan rehearses through the run's own Schedule and hooks: lrs, steps and momentum agree
    exactly, whatever the kind."""
    name = case.split(" ")[0]
    config = tiny(epochs=6, scheduler={"name": name, **PLANNED[case]})
    planned = runner.plan_experiment(validate(config))
    history = train(config, tmp_path)
    assert planned.epoch_lrs == history.column("lr")
    assert planned.step_lrs == [row["lr"] for row in history.steps]
    if planned.momentum is not None:
        assert planned.momentum == history.column("momentum")
    else:
        assert "momentum" not in history.epochs[0]


LINTS = {
    "T_max shorter than the run": (
        {"name": "CosineAnnealingLR", "T_max": 2},
        "the lr rises again after epoch 3",  # epoch 3 trains at eta_min
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
    "OneCycleLR epochs x steps_per_epoch longer than the run": (
        {"name": "OneCycleLR", "max_lr": 0.2, "epochs": 5, "steps_per_epoch": 4},
        "scheduler.epochs: OneCycleLR's cycle is 20 steps, but it is stepped 16 times: the "
        "cycle is cut short",
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


def test_a_onecycle_total_torch_would_refuse_stops_plan_and_run_with_exit_2(tmp_path):
    block = {"name": "OneCycleLR", "max_lr": 0.2, "total_steps": 10, "cycle_momentum": False}
    config = write_config(tmp_path, tiny(scheduler=block))  # 4 epochs x 4 steps
    runs = tmp_path / "runs"
    for command in (["plan", str(config)], ["run", str(config), "--runs-dir", str(runs)]):
        result = cli.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert "scheduler.total_steps" in result.stderr and "total_steps: 16" in result.stderr
        assert "Traceback" not in result.output and "failed" not in result.stderr
    assert not runs.exists(), "refused before the run directory is made"


def _minimum_epoch(lrs: list[float]) -> int:
    return lrs.index(min(lrs)) + 1


RISING_COSINES = {
    "after a warmup": {"name": "CosineAnnealingLR", "T_max": 8, "warmup": {"epochs": 3}},
    "second SequentialLR child": {
        "name": "SequentialLR",
        "milestones": [5],
        "schedulers": [
            {"name": "ConstantLR", "factor": 0.5, "total_iters": 5},
            {"name": "CosineAnnealingLR", "T_max": 8},
        ],
    },
}


@pytest.mark.parametrize("case", RISING_COSINES, ids=list(RISING_COSINES))
def test_t_max_warning_names_the_run_epoch_where_the_plan_bottoms_out(case):
    planned = runner.plan_experiment(validate(tiny(epochs=20, scheduler=RISING_COSINES[case])))
    (warning,) = [w for w in planned.warnings if "T_max" in w]
    said = int(re.search(r"rises again after epoch (\d+)", warning).group(1))
    assert said == _minimum_epoch(planned.epoch_lrs), warning
    assert planned.epoch_lrs[said] > planned.epoch_lrs[said - 1], "it rises the epoch after"


def test_t_max_warning_in_steps_names_the_step_and_its_epoch():
    block = {"name": "CosineAnnealingLR", "T_max": 6, "interval": "step", "warmup": {"steps": 3}}
    planned = runner.plan_experiment(validate(tiny(epochs=4, scheduler=block)))
    (warning,) = [w for w in planned.warnings if "T_max" in w]
    step, epoch = map(int, re.search(r"after step (\d+) \(epoch (\d+)\)", warning).groups())
    assert step == _minimum_epoch(planned.stepped_lrs), warning
    assert epoch == (step - 1) // planned.steps_per_epoch + 1


def test_t_max_reaching_its_minimum_on_the_last_epoch_is_not_a_rise():
    block = {"name": "CosineAnnealingLR", "T_max": 3}  # epochs 1-4 train at last_epoch 0-3
    assert runner.plan_experiment(validate(tiny(epochs=4, scheduler=block))).warnings == []


def _first_below_1e8_of_peak(scheduler, optimizer, count: int) -> int | None:
    """The 0-based step at which torch's own lr first falls below 1e-8 x its peak so far."""
    peak = 0.0
    for index in range(count):
        lr = optimizer.param_groups[0]["lr"]
        peak = max(peak, lr)
        if lr < 1e-8 * peak:
            return index
        optimizer.step()
        scheduler.step()
    return None


def _sgd():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)


def test_vanishing_lr_per_step_names_the_step_its_epoch_and_interval_epoch():
    block = {"name": "StepLR", "step_size": 3, "gamma": 0.1, "interval": "step"}
    planned = runner.plan_experiment(validate(tiny(epochs=10, scheduler=block)))
    optimizer = _sgd()
    first = _first_below_1e8_of_peak(L.StepLR(optimizer, step_size=3, gamma=0.1), optimizer, 40)
    assert first is not None
    (warning,) = [w for w in planned.warnings if "1e-8 x its peak" in w]
    assert f"at step {first + 1} (epoch {first // 4 + 1})" in warning, warning
    assert "use interval: epoch" in warning


def test_vanishing_lr_per_epoch_names_the_epoch_and_a_larger_gamma():
    block = {"name": "ExponentialLR", "gamma": 0.5}
    planned = runner.plan_experiment(validate(tiny(epochs=50, scheduler=block)))
    optimizer = _sgd()
    first = _first_below_1e8_of_peak(L.ExponentialLR(optimizer, gamma=0.5), optimizer, 50)
    (warning,) = [w for w in planned.warnings if "1e-8 x its peak" in w]
    assert warning.startswith("scheduler: ") and f"at epoch {first + 1}," in warning, warning
    gamma = float(re.search(r"gamma: ([\d.]+)", warning).group(1))
    assert 0.5 < gamma < 1 and gamma**49 == pytest.approx(0.01, rel=1e-3)


def test_vanishing_lr_is_found_within_the_lint_horizon():
    block = {"name": "ExponentialLR", "gamma": 0.5}
    cfg = validate(tiny(epochs=3 * runner.LINT_HORIZON, scheduler=block))
    planned = runner.plan_experiment(cfg, horizon=runner.LINT_HORIZON)
    assert len(planned.epoch_lrs) == runner.LINT_HORIZON
    assert any("at epoch 28," in w and "of the first 1000 epochs" in w for w in planned.warnings)


@pytest.mark.parametrize(
    "block",
    [
        {"name": "OneCycleLR", "max_lr": 0.2, "cycle_momentum": False},
        {"name": "OneCycleLR", "max_lr": 0.2, "cycle_momentum": False, "final_div_factor": 1e12},
        {"name": "CosineAnnealingLR", "T_max": 50 * 4 - 1, "interval": "step"},  # 0 at the end
    ],
    ids=["OneCycleLR", "OneCycleLR final_div_factor 1e12", "cosine to 0 per step"],
)
def test_a_tail_that_ends_near_zero_on_purpose_is_not_flagged(block):
    planned = runner.plan_experiment(validate(tiny(epochs=50, scheduler=block)))
    lrs = planned.stepped_lrs
    assert min(lrs) < 1e-5 * max(lrs), "the tail does go low"
    assert planned.warnings == []


def test_lint_reads_torch_defaults_from_its_signature(monkeypatch):
    """A torch release that changes a default changes the lint, as it changes the run."""

    class ReduceLROnPlateau(L.ReduceLROnPlateau):
        __module__ = L.__name__

        def __init__(self, optimizer, mode="min", factor=0.1, patience=1, **kwargs):
            super().__init__(optimizer, mode=mode, factor=factor, patience=patience, **kwargs)

    block = {"name": "ReduceLROnPlateau"}
    before = runner.plan_experiment(validate(tiny(epochs=8, scheduler=block)))
    assert any("patience 10 >= the 8 epochs" in w for w in before.warnings)
    monkeypatch.setattr(L, "ReduceLROnPlateau", ReduceLROnPlateau)
    after = runner.plan_experiment(validate(tiny(epochs=8, scheduler=block)))
    assert after.warnings == [] and min(after.epoch_lrs) < 0.1
