"""The hf.* schedules and wsd: the lrs lrsched records equal transformers' published formulas
(src/transformers/optimization.py), written out plainly here, and the lists transformers' own
test suite pins (tests/optimization/test_optimization.py); their arguments, defaults and the
bad input they refuse."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import CONFIGS, tiny, train, write_config
from lrsched_cli import hf_schedules
from lrsched_cli.cli import app
from lrsched_cli.errors import ConfigError
from test_recovery import InterruptAt

# transformers' ScheduleInitTest: AdamW(lr=10.0), 10 steps, the lr before each step, to the
# tolerance it pins them with (1e-2).
PINNED = {
    "hf.constant": ({}, [10.0] * 10),
    "hf.constant_with_warmup": (
        {"num_warmup_steps": 4},
        [0.0, 2.5, 5.0, 7.5, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
    ),
    "hf.linear": (
        {"num_warmup_steps": 2, "num_training_steps": 10},
        [0.0, 5.0, 10.0, 8.75, 7.5, 6.25, 5.0, 3.75, 2.5, 1.25],
    ),
    "hf.cosine": (
        {"num_warmup_steps": 2, "num_training_steps": 10},
        [0.0, 5.0, 10.0, 9.61, 8.53, 6.91, 5.0, 3.08, 1.46, 0.38],
    ),
    "hf.cosine_with_restarts": (
        {"num_warmup_steps": 2, "num_training_steps": 10, "num_cycles": 2},
        [0.0, 5.0, 10.0, 8.53, 5.0, 1.46, 10.0, 8.53, 5.0, 1.46],
    ),
    "hf.polynomial": (
        {"num_warmup_steps": 2, "num_training_steps": 10, "power": 2.0, "lr_end": 1e-7},
        [0.0, 5.0, 10.0, 7.656, 5.625, 3.906, 2.5, 1.406, 0.625, 0.156],
    ),
    "hf.inverse_sqrt": (
        {"num_warmup_steps": 2},
        [0.0, 5.0, 10.0, 8.165, 7.071, 6.325, 5.774, 5.345, 5.0, 4.714],
    ),
}


def stepped(name: str, given: dict, steps: int, lr: float) -> list[float]:
    """The lr before each of `steps` optimizer steps, the schedule resolved as lrsched does."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=lr)
    scheduler = hf_schedules.build(optimizer, name, hf_schedules.resolve(name, given, steps))
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("name", PINNED)
def test_transformers_pinned_lists(name):
    given, expected = PINNED[name]
    assert stepped(name, given, 10, 10.0) == pytest.approx(expected, abs=1e-2)


# transformers' formulas, written out plainly: the factor at 0-based step s of T, warmup w.


def warmup(s, w):
    return s / max(1, w)


def f_linear(s, T, w=0):
    return warmup(s, w) if s < w else max(0.0, (T - s) / max(1, T - w))


def f_cosine(s, T, w=0, cycles=0.5, floor=0.0):
    if s < w:
        return warmup(s, w)
    progress = (s - w) / max(1, T - w)
    return max(0.0, floor + (1 - floor) * 0.5 * (1 + math.cos(2 * math.pi * cycles * progress)))


def f_restarts(s, T, w=0, cycles=1):
    if s < w:
        return warmup(s, w)
    progress = (s - w) / max(1, T - w)
    if progress >= 1:
        return 0.0
    return 0.5 * (1 + math.cos(math.pi * ((cycles * progress) % 1)))


def f_polynomial(s, T, w=0, lr_end=1e-7, power=1.0, lr=1.0):
    if s < w:
        return warmup(s, w)
    if s > T:
        return lr_end / lr
    remaining = 1 - (s - w) / (T - w)
    return ((lr - lr_end) * remaining**power + lr_end) / lr


def f_inverse_sqrt(s, w=0, timescale=None):
    timescale = timescale or w or 10_000
    return warmup(s, w) if s < w else math.sqrt(timescale / (s + timescale - w))


def f_cosine_warmup_lr_rate(s, T, w=0, cycles=0.5, floor=0.0, start=None):
    if s < w:
        return (s + 1) / max(1, w) if start is None else start + (1 - start) * s / max(1, w - 1)
    progress = (s - w + 1) / max(1, T - w)
    return max(0.0, floor + (1 - floor) * 0.5 * (1 + math.cos(2 * math.pi * cycles * progress)))


SHAPE = {
    "linear": lambda p: 1 - p,
    "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
    "1-sqrt": lambda p: 1 - math.sqrt(p),
}
WARMUP_SHAPE = {
    "linear": lambda p: p,
    "cosine": lambda p: 0.5 * (1 - math.cos(math.pi * p)),
    "1-sqrt": lambda p: 1 - math.sqrt(1 - p),
}


def f_hf_wsd(s, T, w, decay, stable=None, warmup_type="linear", decay_type="cosine", floor=0.0):
    stable = T - w - decay if stable is None else stable
    if s < w:
        return floor + (1 - floor) * WARMUP_SHAPE[warmup_type](s / max(1, w))
    if s < w + stable:
        return 1.0
    if s < w + stable + decay:
        return floor + (1 - floor) * SHAPE[decay_type]((s - w - stable) / decay)
    return floor


def f_wsd(s, T, w, decay, decay_type, floor):
    """lrsched's wsd: from 0 over w steps, the peak, then the last `decay` steps of T."""
    if s < w:
        return s / w
    if s < T - decay:
        return 1.0
    return floor + (1 - floor) * SHAPE[decay_type]((s - (T - decay)) / decay)


# Through a real run of tiny() for EPOCHS epochs at peak lr LR; each formula takes the step s
# and the run's length T, counted from what the run recorded.
EPOCHS, LR = 5, 0.08
CASES = {
    "hf.linear": ({"num_warmup_steps": 3}, lambda s, T: f_linear(s, T, 3)),
    "hf.cosine": (
        {"num_warmup_steps": 4, "num_cycles": 0.7},
        lambda s, T: f_cosine(s, T, 4, 0.7),
    ),
    "hf.cosine_with_restarts": (
        {"num_warmup_steps": 2, "num_cycles": 3},
        lambda s, T: f_restarts(s, T, 2, 3),
    ),
    "hf.polynomial": (
        {"num_warmup_steps": 5, "power": 1.7, "lr_end": 0.002},
        lambda s, T: f_polynomial(s, T, 5, 0.002, 1.7, LR),
    ),
    "hf.constant": ({}, lambda s, T: 1.0),
    "hf.constant_with_warmup": ({"num_warmup_steps": 7}, lambda s, T: min(1.0, s / 7)),
    "hf.inverse_sqrt": (
        {"num_warmup_steps": 3, "timescale": 5},
        lambda s, T: f_inverse_sqrt(s, 3, 5),
    ),
    "hf.cosine_with_min_lr": (
        {"num_warmup_steps": 2, "min_lr": 0.01},
        lambda s, T: f_cosine(s, T, 2, 0.5, 0.01 / LR),
    ),
    "hf.cosine_warmup_with_min_lr": (
        {"num_warmup_steps": 4, "min_lr_rate": 0.1, "warmup_lr_rate": 0.2, "num_cycles": 0.4},
        lambda s, T: f_cosine_warmup_lr_rate(s, T, 4, 0.4, 0.1, 0.2),
    ),
    "hf.warmup_stable_decay": (
        {
            "num_warmup_steps": 3,
            "num_decay_steps": 6,
            "warmup_type": "1-sqrt",
            "decay_type": "linear",
            "min_lr_ratio": 0.1,
        },
        lambda s, T: f_hf_wsd(s, T, 3, 6, None, "1-sqrt", "linear", 0.1),
    ),
}


def recorded_step_lrs(block: dict, tmp_path) -> list[float]:
    config = tiny(epochs=EPOCHS, optimizer={"name": "SGD", "lr": LR}, scheduler=block)
    history = train(config, tmp_path)
    assert len(history.steps) >= 3 * EPOCHS  # long enough for every phase to show
    return [row["lr"] for row in history.steps]


@pytest.mark.parametrize("name", CASES)
def test_recorded_lrs_equal_the_formula(name, tmp_path):
    given, formula = CASES[name]
    lrs = recorded_step_lrs({"name": name, **given}, tmp_path)
    T = len(lrs)
    assert lrs == pytest.approx([LR * formula(s, T) for s in range(T)], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("decay_type", ["linear", "cosine", "1-sqrt"])
def test_wsd_recorded_lrs_equal_the_formula(decay_type, tmp_path):
    # Warmup over 20% of the run, decay over its last 40%, down to 0.05 x the peak; the
    # fractions rounded half up to steps.
    block = {
        "name": "wsd",
        "warmup_fraction": 0.2,
        "decay_fraction": 0.4,
        "decay_type": decay_type,
        "min_lr_ratio": 0.05,
    }
    lrs = recorded_step_lrs(block, tmp_path)
    T = len(lrs)
    warmup, decay = math.floor(0.2 * T + 0.5), math.floor(0.4 * T + 0.5)
    expected = [LR * f_wsd(s, T, warmup, decay, decay_type, 0.05) for s in range(T)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("decay_type", ["linear", "cosine", "1-sqrt"])
def test_hf_wsd_decay_shapes(decay_type, tmp_path):
    block = {
        "name": "hf.warmup_stable_decay",
        "num_warmup_steps": 4,
        "num_decay_steps": 8,
        "decay_type": decay_type,
        "warmup_type": "cosine",
        "min_lr_ratio": 0.2,
    }
    lrs = recorded_step_lrs(block, tmp_path)
    T = len(lrs)
    expected = [LR * f_hf_wsd(s, T, 4, 8, None, "cosine", decay_type, 0.2) for s in range(T)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_wsd_by_epoch(tmp_path):
    # 10 epochs: warmup 2 epochs (from lr 0), stable, decay over the last 3 (0.3 x 10).
    block = {"name": "wsd", "warmup_steps": 2, "decay_fraction": 0.3, "decay_type": "linear"}
    config = tiny(epochs=10, optimizer={"name": "SGD", "lr": LR}, scheduler={**block})
    config["scheduler"]["interval"] = "epoch"
    history = train(config, tmp_path)
    lrs = [row["lr"] for row in history.epochs]
    assert lrs == pytest.approx([LR * f_wsd(e, 10, 2, 3, "linear", 0.0) for e in range(10)])
    events = [row.get("lr_event") for row in history.epochs]
    # The first epoch at the peak, and the first epoch the decay lowers the lr.
    assert events[2] == "stable"
    assert events[8] == "decay start"
    assert [e for i, e in enumerate(events) if i not in (2, 8)] == [None] * 8


@pytest.mark.parametrize("name", [*CASES, "wsd"])
def test_plan_equals_run(name, tmp_path):
    from lrsched_cli import runner
    from lrsched_cli.config import validate

    given = CASES[name][0] if name in CASES else {"warmup_fraction": 0.1, "decay_type": "linear"}
    config = tiny(epochs=EPOCHS, scheduler={"name": name, **given})
    plan = runner.plan_experiment(validate(config))
    history = train(config, tmp_path)
    assert plan.stepped_lrs == [row["lr"] for row in history.steps]
    # A warmup from 0 per step trains one step at lr 0, not the first epoch.
    assert not [w for w in plan.warnings if "epoch 1 trains at lr 0" in w]


def test_resolved_config_names_every_argument(tmp_path):
    config = tiny(
        epochs=EPOCHS,
        scheduler={"name": "HF.Cosine", "num_warmup_steps": 2},
    )
    history = train(config, tmp_path)
    T = len(history.steps)
    assert history.config["scheduler"] == {
        "name": "hf.cosine",
        "interval": "step",
        "num_warmup_steps": 2,
        "num_training_steps": T,
        "num_cycles": 0.5,
    }
    wsd = train(tiny(epochs=EPOCHS, scheduler={"name": "wsd"}), tmp_path).config["scheduler"]
    assert wsd == {
        "name": "wsd",
        "interval": "step",
        "warmup_fraction": 0.0,
        "decay_fraction": 0.2,
        "decay_type": "1-sqrt",
        "min_lr_ratio": 0.0,
        "total_steps": T,
    }
    inverse = train(tiny(scheduler={"name": "hf.inverse_sqrt"}), tmp_path).config["scheduler"]
    assert inverse["timescale"] == 10_000  # transformers: num_warmup_steps or 10_000


def test_a_given_length_is_kept(tmp_path):
    # A schedule laid out for a longer run than is trained: the decay is not squeezed in.
    block = {"name": "hf.linear", "num_warmup_steps": 2, "num_training_steps": 40}
    lrs = recorded_step_lrs(block, tmp_path)
    assert lrs == pytest.approx([LR * f_linear(s, 40, 2) for s in range(len(lrs))], rel=1e-12)


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_resume_of_a_wsd_run_equals_an_uninterrupted_run(interval, tmp_path):
    from lrsched_cli import runner, store
    from lrsched_cli.config import validate

    block = {
        "name": "wsd",
        "interval": interval,
        "warmup_fraction": 0.2,
        "decay_fraction": 0.4,
        "decay_type": "cosine",
    }
    config = tiny(epochs=6, checkpoint_every=1, scheduler=block)
    whole = train(config, tmp_path / "whole")
    result = runner.run_experiment(validate(config), tmp_path / "runs", InterruptAt(3))
    assert result.status == "interrupted"
    runner.resume_experiment(result.path)
    resumed = store.read_run(result.path)

    def without_time(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert without_time(resumed.epochs) == without_time(whole.epochs)
    assert resumed.steps == whole.steps


# Bad input: one message naming the key, exit 2.


def run_cli(config: dict, tmp_path):
    path = write_config(tmp_path, config)
    return CliRunner().invoke(app, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])


@pytest.mark.parametrize(
    ("block", "key", "words"),
    [
        ({"name": "hf.cosin"}, "scheduler.name", ["did you mean 'hf.cosine'"]),
        ({"name": "hf.linear", "num_cycles": 2}, "scheduler.num_cycles", ["hf.cosine"]),
        ({"name": "wsd", "num_warmup_steps": 2}, "scheduler.num_warmup_steps", ["warmup_steps"]),
        (
            {"name": "hf.cosine", "num_warmup_steps": 500},
            "scheduler.num_warmup_steps",
            ["500", "longer than the"],
        ),
        ({"name": "wsd", "warmup_steps": 500}, "scheduler.warmup_steps", ["longer than the"]),
        (
            {"name": "wsd", "decay_type": "sqrt"},
            "scheduler.decay_type",
            ["'sqrt'", "linear, cosine, 1-sqrt"],
        ),
        (
            {"name": "hf.warmup_stable_decay", "num_decay_steps": 2, "decay_type": "sqrt"},
            "scheduler.decay_type",
            ["linear, cosine, 1-sqrt"],
        ),
        (
            {"name": "hf.cosine_with_min_lr", "min_lr": 0.01, "min_lr_rate": 0.1},
            "scheduler.min_lr_rate",
            ["not both"],
        ),
        ({"name": "hf.cosine_with_min_lr"}, "scheduler.min_lr_rate", ["min_lr"]),
        ({"name": "hf.warmup_stable_decay"}, "scheduler.num_decay_steps", ["requires"]),
        ({"name": "hf.polynomial", "lr_end": 0.5}, "scheduler.lr_end", ["below the initial"]),
        ({"name": "wsd", "decay_fraction": 1.5}, "scheduler.decay_fraction", ["from 0 to 1"]),
        ({"name": "hf.cosine", "num_cycles": "many"}, "scheduler.num_cycles", ["a number"]),
    ],
)
def test_bad_input_names_the_key(block, key, words, tmp_path):
    result = run_cli(tiny(scheduler=block), tmp_path)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"{key}:" in message
    for word in words:
        assert word in message
    assert "Traceback" not in result.output


def test_resolve_refuses_both_warmups():
    with pytest.raises(ConfigError, match=r"scheduler.warmup_steps: .*not both"):
        hf_schedules.resolve("wsd", {"warmup_fraction": 0.1, "warmup_steps": 2}, 20)


def test_wsd_phases_round_half_up_and_keep_a_decay():
    phases = hf_schedules.wsd_phases(
        {"warmup_fraction": 0.05, "decay_fraction": 0.01, "total_steps": 50}
    )
    assert (phases.warmup, phases.stable, phases.decay) == (3, 46, 1)


def test_lint_warns_when_wsd_warmup_and_decay_exceed_the_run(tmp_path):
    block = {"name": "wsd", "warmup_fraction": 0.6, "decay_fraction": 0.5}
    path = write_config(tmp_path, tiny(epochs=EPOCHS, scheduler=block))
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    message = " ".join(result.output.split())
    assert "scheduler.decay_fraction" in message
    assert "exceed the run" in message


def test_list_schedulers_shows_every_name_with_defaults():
    result = CliRunner().invoke(app, ["list", "schedulers"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for name in hf_schedules.SCHEDULES:
        assert name in text
    assert "num_cycles=0.5" in text
    assert "decay_fraction=0.2" in text


def test_schema_names_the_new_schedules():
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    name = json.loads(result.stdout)["$defs"]["SchedulerConfig"]["properties"]["name"]
    for schedule in hf_schedules.SCHEDULES:
        assert schedule in json.dumps(name)


def test_wsd_vs_cosine_configs_share_peak_lr_and_length():
    directory = CONFIGS / "wsd_vs_cosine"
    configs = [yaml.safe_load(path.read_text()) for path in sorted(directory.glob("*.yaml"))]
    assert sorted(c["scheduler"]["name"] for c in configs) == ["hf.cosine", "wsd"]
    for key in ("epochs", "data", "model", "optimizer"):
        assert configs[0][key] == configs[1][key]
