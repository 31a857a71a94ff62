"""Nothing lost: kill -9, resume from checkpoints, early stopping, non-finite losses."""

from __future__ import annotations

import csv
import json
import random
import signal
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny, train, write_config
from lrsched_cli import runner, store
from lrsched_cli.checkpoint import CheckpointPolicy
from lrsched_cli.cli import app
from lrsched_cli.config import ConfigError, validate
from test_schedules import BLOCKS

cli = CliRunner()


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def wait_for_epochs(runs: Path, count: int, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for metrics in runs.glob("*/metrics.csv"):
            if len(metrics.read_text().splitlines()) > count:
                return metrics.parent
        time.sleep(0.02)
    raise AssertionError(f"no run finished {count} epochs in {timeout} s")


def test_kill_9_at_random_points_leaves_readable_contiguous_epochs(tmp_path, spawn):
    config = write_config(
        tmp_path, tiny(epochs=100_000, data={"name": "moons", "n_samples": 400, "batch_size": 8})
    )
    rng = random.Random(0)
    for attempt in range(3):
        runs = tmp_path / f"runs{attempt}"
        process = spawn("run", str(config), "--runs-dir", str(runs))
        run_dir = wait_for_epochs(runs, 1)
        time.sleep(rng.uniform(0, 0.5))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        history = store.read_run(run_dir)
        epochs = [row["epoch"] for row in history.epochs]
        assert epochs == list(range(1, len(epochs) + 1)) and epochs
        assert all(isinstance(row["val_loss"], float) for row in history.epochs)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "running"
        assert store.effective_status(summary) == "stale"
        steps = [row["step"] for row in history.steps]
        assert steps == list(range(1, len(steps) + 1))


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, spawn):
    config = tiny(
        epochs=12,
        checkpoint_every=1,
        data={"name": "moons", "n_samples": 600, "batch_size": 8},
        model={"name": "mlp", "hidden": [16], "dropout": 0.2},
    )
    reference = train(config, tmp_path / "reference")
    path = write_config(tmp_path, config)
    process = spawn("run", str(path), "--runs-dir", str(tmp_path / "runs"))
    run_dir = wait_for_epochs(tmp_path / "runs", 4)  # epoch 3's checkpoint is surely saved
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = len(store.read_run(run_dir).epochs)
    assert killed_at < 12, "the run finished before it was killed"
    result = cli.invoke(app, ["run", "--resume", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    resumed = store.read_run(run_dir)
    assert without_time(resumed.epochs) == without_time(reference.epochs)
    assert resumed.steps == reference.steps
    assert resumed.summary["status"] == "completed"
    assert resumed.summary["resumed_from_epoch"] >= 3


class InterruptAt:
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_start(self, *args): ...

    def on_batches(self, *args): ...

    def on_epoch(self, record):
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_resume_parity_for_every_scheduler(name, tmp_path):
    block = BLOCKS[name] or {"patience": 0, "factor": 0.5}
    config = tiny(epochs=5, checkpoint_every=1, scheduler={"name": name, **block})
    reference = train(config, tmp_path / "reference")
    result = runner.run_experiment(validate(config), tmp_path / "runs", InterruptAt(2))
    assert result.status == "interrupted"
    runner.resume_experiment(result.path)
    resumed = store.read_run(result.path)
    assert without_time(resumed.epochs) == without_time(reference.epochs)
    assert resumed.steps == reference.steps


WARMED_UP = {
    "ReduceLROnPlateau": {"patience": 0, "factor": 0.5, "threshold": 0.05},
    "ChainedScheduler": BLOCKS["ChainedScheduler"],
    "SequentialLR": BLOCKS["SequentialLR"],
}


@pytest.mark.parametrize("interrupted_at", [2, 5], ids=["in the warmup", "after it"])
@pytest.mark.parametrize("name", WARMED_UP)
def test_resume_behind_a_warmup_equals_an_uninterrupted_run_bitwise(name, interrupted_at, tmp_path):
    """The schedule's state_dict carries the warmup, the scheduler behind it (ReduceLROnPlateau's
    counters included) and the event pending for the next row: every value, lr_event and
    plateau_* columns included, is the uninterrupted run's, to the last bit."""
    block = {"name": name, **WARMED_UP[name], "warmup": {"epochs": 3, "start_factor": 0.25}}
    config = tiny(epochs=10, checkpoint_every=1, scheduler=block)
    reference = train(config, tmp_path / "reference")
    result = runner.run_experiment(validate(config), tmp_path / "runs", InterruptAt(interrupted_at))
    assert result.status == "interrupted"
    runner.resume_experiment(result.path)
    resumed = store.read_run(result.path)
    assert without_time(resumed.epochs) == without_time(reference.epochs)
    assert resumed.steps == reference.steps
    events = [row.get("lr_event") for row in reference.epochs]
    assert events[3] == "warmup end"
    if name == "ReduceLROnPlateau":
        assert any(event and event.startswith("plateau:") for event in events), events


def test_resume_from_an_older_checkpoint_redoes_later_epochs(tmp_path):
    config = tiny(epochs=6, checkpoint_every=2)
    reference = train(config, tmp_path / "reference")
    result = runner.run_experiment(validate(config), tmp_path / "runs", InterruptAt(3))
    assert len(store.read_run(result.path).epochs) == 3
    runner.resume_experiment(result.path)
    resumed = store.read_run(result.path)
    assert without_time(resumed.epochs) == without_time(reference.epochs)
    assert resumed.summary["resumed_from_epoch"] == 2


def test_auto_checkpoints_save_at_most_once_per_interval():
    now = [0.0]
    policy = CheckpointPolicy("auto", epochs=100, clock=lambda: now[0])
    assert policy.AUTO_INTERVAL == 30
    now[0] = 29.9  # a run of a few seconds: no save before its final epoch
    assert not policy.due(1)
    now[0] = 30.0
    assert policy.due(2)
    with policy.timed():
        now[0] = 30.5  # a half-second save: the next waits 30 s from its end
    assert policy.cost == 0.5
    now[0] = 60.4
    assert not policy.due(3)
    now[0] = 60.5
    assert policy.due(4)
    with policy.timed():
        now[0] = 70.5  # a 10 s save: the next waits COST_RATIO x 10 s, not 30 s
    now[0] = 70.5 + 199
    assert not policy.due(5)
    now[0] = 70.5 + 200
    assert policy.due(6)
    assert policy.due(100) and not CheckpointPolicy(0, 100).due(100)
    every_3 = CheckpointPolicy(3, 10)
    assert [e for e in range(1, 11) if every_3.due(e)] == [3, 6, 9, 10]


def test_completed_and_diverged_runs_are_not_resumed(tmp_path):
    history = train(tiny(epochs=1), tmp_path)
    with pytest.raises(ConfigError, match="completed all its epochs"):
        runner.resume_experiment(history.path)
    result = cli.invoke(app, ["run", "--resume", str(history.path)])
    assert result.exit_code == 2 and "cannot resume" in result.stderr


def test_resume_takes_no_overrides_but_epochs(tmp_path):
    for extra in (["--seed", "3"], ["--set", "optimizer.lr=0.5"], ["--device", "cpu"]):
        result = cli.invoke(app, ["run", "--resume", str(tmp_path), *extra])
        assert result.exit_code == 2, extra
        assert "--epochs only" in result.output


def test_resume_with_more_epochs_trains_a_finished_run_on(tmp_path):
    config = tiny(epochs=6, checkpoint_every=2)
    reference = train(config, tmp_path / "reference")
    short = train({**config, "epochs": 4}, tmp_path / "runs")
    result = cli.invoke(app, ["run", "--resume", str(short.path), "--epochs", "6", "--quiet"])
    assert result.exit_code == 0, result.output
    extended = store.read_run(short.path)
    assert without_time(extended.epochs) == without_time(reference.epochs)
    assert extended.steps == reference.steps
    assert extended.summary["status"] == "completed"
    assert extended.summary["epochs_planned"] == extended.summary["epochs_done"] == 6
    assert validate(yaml.safe_load((short.path / "config.yaml").read_text())).epochs == 6


def test_resume_with_more_epochs_refuses_a_fixed_length_schedule(tmp_path):
    history = train(tiny(scheduler={"name": "OneCycleLR", "max_lr": 0.1}), tmp_path)
    before = {p.name: p.read_bytes() for p in history.path.iterdir() if p.is_file()}
    result = cli.invoke(app, ["run", "--resume", str(history.path), "--epochs", "8"])
    assert result.exit_code == 2, result.output
    assert "OneCycleLR" in result.stderr and "total_steps" in result.stderr
    assert "epochs: 8" in result.stderr
    assert before == {p.name: p.read_bytes() for p in history.path.iterdir() if p.is_file()}


@pytest.mark.parametrize("epochs", ["2", "4"])
def test_resume_with_epochs_must_go_past_what_is_done(tmp_path, epochs):
    history = train(tiny(), tmp_path)
    result = cli.invoke(app, ["run", "--resume", str(history.path), "--epochs", epochs])
    assert result.exit_code == 2, result.output
    assert "has done 4 epochs already" in result.stderr


def test_a_completed_run_says_how_to_train_it_on(tmp_path):
    history = train(tiny(epochs=1), tmp_path)
    result = cli.invoke(app, ["run", "--resume", str(history.path)])
    assert result.exit_code == 2
    assert "--epochs N" in result.stderr


def test_early_stopping_stops_and_is_recorded(tmp_path):
    config = tiny(
        epochs=50,
        scheduler={"name": "none"},
        optimizer={"name": "SGD", "lr": 1e-9},
        early_stopping={"monitor": "val_loss", "patience": 2, "min_delta": 0.1},
    )
    history = train(config, tmp_path)
    assert len(history.epochs) == 3  # epoch 1 sets the best; 2 and 3 fail to beat it by 0.1
    assert history.summary["status"] == "completed"
    assert history.summary["stopped_early_at"] == 3
    assert history.config["early_stopping"] == {
        "monitor": "val_loss",
        "patience": 2,
        "min_delta": 0.1,
    }


def test_nonfinite_continue_keeps_training_and_never_feeds_nan_to_plateau(tmp_path):
    config = tiny(
        epochs=4,
        on_nonfinite="continue",
        optimizer={"name": "SGD", "lr": 1e30},
        scheduler={"name": "ReduceLROnPlateau", "patience": 0},
    )
    history = train(config, tmp_path)
    assert len(history.epochs) == 4 and history.summary["status"] == "completed"
    assert history.summary["nonfinite_epochs"]
    assert history.column("lr") == [1e30] * 4  # NaN epochs are skipped, not counted as bad


def test_nonfinite_continue_steps_an_epoch_schedule_as_planned(tmp_path):
    config = tiny(
        epochs=5,
        on_nonfinite="continue",
        optimizer={"name": "SGD", "lr": 1e30},
        scheduler={"name": "StepLR", "step_size": 1, "gamma": 0.5},
    )
    history = train(config, tmp_path)
    assert history.summary["nonfinite_epochs"]
    assert history.column("lr") == runner.plan_experiment(validate(config)).epoch_lrs
    assert history.column("lr")[-1] == 1e30 * 0.5**4


def test_diverged_run_stops_at_the_first_nonfinite_epoch(tmp_path):
    history = train(tiny(epochs=20, optimizer={"name": "SGD", "lr": 1e30}), tmp_path)
    assert history.summary["status"] == "diverged"
    last = history.epochs[-1]
    assert not (last["train_loss"] < float("inf") and last["val_loss"] < float("inf"))
    rows = list(csv.DictReader((history.path / "metrics.csv").open()))
    assert len(rows) == history.summary["epochs_done"]
    text = (history.path / "summary.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"summary.json holds {name}"))
    assert history.summary["final_val_loss"] is None
