"""The lrs lrsched records equal torch's own scheduler, stepped by plain code written here."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch.optim import lr_scheduler as L

from conftest import CONFIGS, tiny, train
from lrsched_cli.registry import scheduler_classes

# The test's own lambdas for the expression strings the configs use.
LAMBDAS = {
    "epoch / 10": lambda e: e / 10,
    "0.95": lambda e: 0.95,
    "min(1, (epoch + 1) / 3)": lambda e: min(1, (e + 1) / 3),
}


def steps_per_epoch(config: dict) -> int:
    """Recomputed here from the config: samples minus the validation and test shares, over
    the batch."""
    data = config["data"]
    n = (
        data.get("n_samples")
        or {"digits": 1797, "wine": 178, "breast_cancer": 569, "iris": 150, "diabetes": 442}[
            data["name"]
        ]
    )
    test_fraction = data.get("test_fraction", 0.2)
    n_test = max(1, round(n * test_fraction)) if test_fraction else 0
    n_train = n - max(1, round(n * data.get("val_fraction", 0.2))) - n_test
    return math.ceil(n_train / data["batch_size"])


def reference_scheduler(optimizer, block: dict, total: int):
    """Build the torch scheduler for a config block by hand, without lrsched's registry."""
    kwargs = {k: v for k, v in block.items() if k not in ("name", "interval", "monitor")}
    if "lr_lambda" in kwargs:
        kwargs["lr_lambda"] = LAMBDAS[str(kwargs["lr_lambda"])]
    if block["name"] == "OneCycleLR" and not {"epochs", "steps_per_epoch"} <= set(kwargs):
        kwargs.setdefault("total_steps", total)
    if block["name"] in ("SequentialLR", "ChainedScheduler"):
        children = [reference_scheduler(optimizer, c, total) for c in kwargs.pop("schedulers")]
        if block["name"] == "ChainedScheduler":
            return L.ChainedScheduler(children, optimizer=optimizer)
        return L.SequentialLR(optimizer, children, **kwargs)
    return getattr(L, block["name"])(optimizer, **kwargs)


def expected_lrs(config: dict) -> tuple[list[float], str]:
    """The lr before each optimizer step (interval step) or each epoch (interval epoch)."""
    block = config["scheduler"]
    names = [block["name"], *(child["name"] for child in block.get("schedulers", []))]
    per_step = {"OneCycleLR", "CyclicLR"} & set(names)
    interval = block.get("interval") or ("step" if per_step else "epoch")
    count = config["epochs"] * (steps_per_epoch(config) if interval == "step" else 1)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=config["optimizer"]["lr"], momentum=0.9)
    scheduler = reference_scheduler(optimizer, block, count)
    lrs = []
    for _ in range(count):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs, interval


def recorded_lrs(history, interval: str) -> list[float]:
    return [row["lr"] for row in (history.steps if interval == "step" else history.epochs)]


EXAMPLES = sorted(p for p in CONFIGS.glob("*.yaml") if "ReduceLROnPlateau" not in p.read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_lrs_equal_torch(path, tmp_path):
    config = yaml.safe_load(path.read_text())
    config.update(name=path.stem, device="cpu")
    history = train(config, tmp_path)
    expected, interval = expected_lrs(config)
    assert recorded_lrs(history, interval) == pytest.approx(expected, rel=1e-12)
    assert len(history.epochs) == config["epochs"]
    assert len(history.steps) == config["epochs"] * steps_per_epoch(config)


# One small, distinct block for every scheduler class torch has; a new torch class fails here
# until it gets one, so no class goes untested.
BLOCKS = {
    "LambdaLR": {"lr_lambda": "min(1, (epoch + 1) / 3)"},
    "MultiplicativeLR": {"lr_lambda": "0.95"},
    "StepLR": {"step_size": 2, "gamma": 0.5},
    "MultiStepLR": {"milestones": [1, 3], "gamma": 0.3},
    "ConstantLR": {"factor": 0.5, "total_iters": 2},
    "LinearLR": {"start_factor": 0.2, "total_iters": 3},
    "ExponentialLR": {"gamma": 0.7},
    "PolynomialLR": {"total_iters": 4, "power": 2.0},
    "CosineAnnealingLR": {"T_max": 3, "eta_min": 0.001},
    "CosineAnnealingWarmRestarts": {"T_0": 2, "T_mult": 2},
    "CyclicLR": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3},
    "OneCycleLR": {"max_lr": 0.3},
    "SequentialLR": {
        "milestones": [2],
        "schedulers": [
            {"name": "ConstantLR", "factor": 0.1, "total_iters": 2},
            {"name": "ExponentialLR", "gamma": 0.8},
        ],
    },
    "ChainedScheduler": {
        "schedulers": [
            {"name": "ConstantLR", "factor": 0.5, "total_iters": 2},
            {"name": "ExponentialLR", "gamma": 0.9},
        ]
    },
    "ReduceLROnPlateau": None,  # replayed from its recorded metric, below
}


def test_every_torch_scheduler_has_a_case():
    assert set(scheduler_classes()) == set(BLOCKS)


@pytest.mark.parametrize("name", [n for n, b in BLOCKS.items() if b is not None])
def test_every_scheduler_class_lrs_equal_torch(name, tmp_path):
    config = tiny(epochs=5, scheduler={"name": name, **BLOCKS[name]})
    history = train(config, tmp_path)
    expected, interval = expected_lrs(config)
    assert recorded_lrs(history, interval) == pytest.approx(expected, rel=1e-12)
    assert len(set(expected)) > 1, "the case should make the lr change"


@pytest.mark.parametrize("name", ["OneCycleLR", "CyclicLR", "StepLR"])
def test_interval_can_be_overridden(name, tmp_path):
    block = {"name": name, **BLOCKS[name], "interval": "epoch" if name != "StepLR" else "step"}
    config = tiny(epochs=4, scheduler=block)
    history = train(config, tmp_path)
    expected, interval = expected_lrs(config)
    assert interval == block["interval"]
    assert recorded_lrs(history, interval) == pytest.approx(expected, rel=1e-12)


def replay_plateau(history, block: dict) -> list[float]:
    """Feed the recorded metric, epoch by epoch, through torch's own ReduceLROnPlateau."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=history.config["optimizer"]["lr"])
    kwargs = {k: v for k, v in block.items() if k not in ("name", "monitor")}
    scheduler = L.ReduceLROnPlateau(optimizer, **kwargs)
    lrs = []
    for row in history.epochs:
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step(row[block.get("monitor", "val_loss")])
    return lrs


def test_plateau_example_replays_through_torch(tmp_path):
    path = CONFIGS / "reduce_lr_on_plateau.yaml"
    config = {**yaml.safe_load(path.read_text()), "name": "plateau", "device": "cpu"}
    history = train(config, tmp_path)
    lrs = history.column("lr")
    assert lrs == pytest.approx(replay_plateau(history, config["scheduler"]), rel=1e-12)
    assert min(lrs) < lrs[0], "the example should cut the lr at least once"


def test_plateau_on_accuracy_fills_mode_max(tmp_path):
    block = {"name": "ReduceLROnPlateau", "monitor": "val_accuracy", "patience": 0, "factor": 0.5}
    history = train(tiny(epochs=6, scheduler=block), tmp_path)
    assert history.config["scheduler"]["mode"] == "max"
    assert history.column("lr") == pytest.approx(
        replay_plateau(history, {**block, "mode": "max"}), rel=1e-12
    )


def test_onecycle_total_steps_is_filled_in(tmp_path):
    config = tiny(epochs=3, scheduler={"name": "OneCycleLR", "max_lr": 0.3})
    history = train(config, tmp_path)
    assert history.config["scheduler"]["total_steps"] == 3 * steps_per_epoch(config)
    assert history.config["scheduler"]["interval"] == "step"


def test_onecycle_after_warmup_gets_the_remaining_steps(tmp_path):
    block = {
        "name": "SequentialLR",
        "milestones": [10],
        "schedulers": [
            {"name": "LinearLR", "start_factor": 0.1, "total_iters": 10},
            {"name": "OneCycleLR", "max_lr": 0.3},
        ],
    }
    config = tiny(epochs=3, scheduler=block)
    history = train(config, tmp_path)
    total = 3 * steps_per_epoch(config)
    assert history.config["scheduler"]["interval"] == "step"
    assert history.config["scheduler"]["schedulers"][1]["total_steps"] == total - 10
    child = {"name": "OneCycleLR", "max_lr": 0.3, "total_steps": total - 10}
    expected, _ = expected_lrs(
        {**config, "scheduler": {**block, "schedulers": [block["schedulers"][0], child]}}
    )
    assert recorded_lrs(history, "step") == pytest.approx(expected, rel=1e-12)


def test_scheduler_never_steps_before_optimizer(tmp_path, recwarn):
    for name in ("OneCycleLR", "StepLR", "LambdaLR"):
        train(tiny(epochs=2, scheduler={"name": name, **BLOCKS[name]}), tmp_path)
    messages = [str(w.message) for w in recwarn.list]
    assert not [m for m in messages if "optimizer.step()" in m], messages


def torch_refuses(config: dict) -> bool:
    """Whether torch's own scheduler, stepped by plain code over the run, raises mid-run."""
    try:
        expected_lrs(config)
    except ValueError as exc:
        if "Tried to step" not in str(exc):
            raise
        return True
    return False


def _onecycle(**cycle) -> dict:
    return {"name": "OneCycleLR", "max_lr": 0.2, "cycle_momentum": False, **cycle}


CONSTANT = {"name": "ConstantLR", "factor": 0.5, "total_iters": 2}
# tiny() runs 4 epochs x 4 steps = 16 steps; each case spans the length torch needs.
CYCLE_LENGTHS = {
    "total_steps": [({**_onecycle(total_steps=t)}, "scheduler.total_steps") for t in range(14, 19)],
    "epochs x steps_per_epoch": [
        (_onecycle(epochs=e, steps_per_epoch=4), "scheduler.epochs") for e in (3, 4, 5)
    ],
    "first SequentialLR child": [
        (
            {
                "name": "SequentialLR",
                "milestones": [6],
                "schedulers": [_onecycle(total_steps=t), CONSTANT],
            },
            "scheduler.schedulers.0.total_steps",
        )
        for t in range(3, 8)
    ],
    "last SequentialLR child": [
        (
            {
                "name": "SequentialLR",
                "milestones": [6],
                "schedulers": [CONSTANT, _onecycle(total_steps=t)],
            },
            "scheduler.schedulers.1.total_steps",
        )
        for t in range(8, 12)
    ],
    "ChainedScheduler child": [
        (
            {"name": "ChainedScheduler", "schedulers": [_onecycle(total_steps=t), CONSTANT]},
            "scheduler.schedulers.0.total_steps",
        )
        for t in range(14, 18)
    ],
}


@pytest.mark.parametrize("case", CYCLE_LENGTHS, ids=list(CYCLE_LENGTHS))
def test_a_onecycle_total_torch_refuses_is_a_config_error(case):
    """Refused while resolving the config exactly where torch would raise mid-run, naming the
    key; accepted (and planned as torch steps it) everywhere else."""
    from lrsched_cli import runner
    from lrsched_cli.config import ConfigError, validate

    outcomes = set()
    for block, key in CYCLE_LENGTHS[case]:
        config = tiny(scheduler=block)
        refused = torch_refuses(config)
        outcomes.add(refused)
        if refused:
            with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as caught:
                runner.plan_experiment(validate(config))
            assert caught.value.key == key
        else:
            planned = runner.plan_experiment(validate(config))
            assert planned.step_lrs == pytest.approx(expected_lrs(config)[0], rel=1e-12)
    assert outcomes == {True, False}, "each case must cover both sides of torch's limit"


PACKAGE = Path(__file__).resolve().parent.parent / "lrsched_cli"


def _calls_to_step(path: Path) -> list[str]:
    """The receivers of every `.step(...)` call in a module, as written."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        ast.unparse(node.func.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "step"
    ]


def test_a_scheduler_is_stepped_in_schedule_py_only():
    """The loop and plan call the Schedule's two hooks; only the optimizer (and matplotlib's
    step plot) is stepped anywhere else, so a reader finds how every kind is stepped in one
    place."""
    others = {"optimizer", "axes"}
    elsewhere = {
        path.name: receivers
        for path in PACKAGE.glob("*.py")
        if path.name != "schedule.py"
        and (receivers := [r for r in _calls_to_step(path) if r.split(".")[-1] not in others])
    }
    assert elsewhere == {}
    assert _calls_to_step(PACKAGE / "schedule.py")


def _imports_at_load(path: Path) -> set[str]:
    """The lrsched_cli modules a module imports when it is loaded (not inside functions, not
    for type checking only)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lrsched_cli"):
            if node.module == "lrsched_cli":
                found |= {
                    alias.name for alias in node.names if (PACKAGE / f"{alias.name}.py").exists()
                }
            else:
                found.add(node.module.split(".")[1])
    return found


def test_the_package_imports_in_one_direction():
    graph = {path.stem: _imports_at_load(path) for path in PACKAGE.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join([*trail, module])
        if module not in done:
            for imported in graph.get(module, ()):
                visit(imported, (*trail, module))
            done.add(module)

    for module in graph:
        visit(module, ())
    assert "runner" not in graph["checkpoint"] and "runner" not in graph["schedule"]


def test_a_kind_is_added_by_an_entry_in_the_table(monkeypatch, tmp_path):
    """A schedule torch has no class for: a factory over LambdaLR, its length filled in from
    the run, its peak lr and lint rule, all from its one entry in schedule_kinds.KINDS."""
    from lrsched_cli import runner, schedule_kinds
    from lrsched_cli.config import validate
    from lrsched_cli.schedule_config import peak_lr_key

    def halving(optimizer, total: int, floor: float = 0.25):
        return L.LambdaLR(optimizer, lambda step: max(floor, 0.5 ** (step * 4 // total)))

    def never_floored(segment, plan):
        yield f"{segment.key}: {segment.block.kwargs['total']} steps"

    entry = schedule_kinds.ScheduleKind(
        factory=halving, interval="step", length_key="total", lints=(never_floored,)
    )
    monkeypatch.setitem(schedule_kinds.KINDS, "halving", entry)
    config = tiny(epochs=4, scheduler={"name": "halving"})
    planned = runner.plan_experiment(validate(config))
    history = train(config, tmp_path)
    total = 4 * steps_per_epoch(config)
    assert history.config["scheduler"] == {"name": "halving", "interval": "step", "total": total}
    expected = [0.1 * max(0.25, 0.5 ** (step * 4 // total)) for step in range(total)]
    assert [row["lr"] for row in history.steps] == pytest.approx(expected, rel=1e-12)
    assert planned.step_lrs == [row["lr"] for row in history.steps]
    assert planned.warnings == [f"scheduler: {total} steps"]
    assert peak_lr_key(validate(config).scheduler) == "optimizer.lr"
