"""compare --tune-lr: the grid, the selection, the edge extension, and a tiny tuned comparison."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli import compare, tuning
from lrsched_cli.cli import app
from lrsched_cli.config import ConfigError, validate

cli = CliRunner()


# selection


def test_select_picks_the_argmin_of_the_mean_over_seeds():
    values = {0.01: [0.50, 0.40], 0.1: [0.30, 0.36], 1.0: [0.20, 0.50]}
    # means: 0.45, 0.33, 0.35 -- 1.0 has the single best seed, 0.1 the best mean
    assert tuning.select(values) == 0.1


def test_a_diverged_or_failed_seed_counts_as_the_worst_value():
    values = {0.01: [0.9, 0.9], 0.1: [0.1, None], 1.0: [0.05, math.nan]}
    assert tuning.select(values) == 0.01
    assert tuning.mean_scores(values, True)[0.1] == math.inf


def test_accuracy_is_picked_by_its_maximum():
    values = {0.01: [0.7, 0.8], 0.1: [0.9, 0.85], 1.0: [None, 0.99]}
    assert tuning.select(values, lower_is_better=False) == 0.1


def test_the_default_grid_is_nine_lrs_at_x2_around_the_centre():
    grid = tuning.centred_grid(0.1)
    assert len(grid) == 9 and grid[4] == 0.1
    assert all(b / a == pytest.approx(2) for a, b in zip(grid, grid[1:], strict=False))


def test_lr_grid_is_log_spaced_with_both_ends_exact():
    grid = tuning.parse_grid("1e-3:1:13")
    assert len(grid) == 13 and grid[0] == 1e-3 and grid[-1] == 1
    assert all(b / a == pytest.approx(10**0.25) for a, b in zip(grid, grid[1:], strict=False))


@pytest.mark.parametrize("text", ["1e-3:1", "a:1:5", "1:1e-3:5", "0:1:5", "1e-3:1:2", "-1:1:4"])
def test_a_malformed_lr_grid_is_a_config_error(text):
    with pytest.raises(ConfigError, match="--lr-grid"):
        tuning.parse_grid(text)


# edge extension


def _fake_runs(curve):
    """A run function for tuning.sweep whose val loss is curve(lr), the same on every seed."""
    calls = []

    def run(jobs, owners):
        calls.append(sorted({owners[job.config.name][1] for job in jobs}))
        return [
            compare.JobResult(job.config.name, job.config.seed, "completed", path=None)
            for job in jobs
        ]

    return run, calls


def _sweep(curve, grid):
    cfg = validate(tiny())
    plan = tuning.plan([cfg], grid)
    run, calls = _fake_runs(curve)
    # the fake results have no run directory: read the val metric from the curve instead
    original = tuning._val_metric
    tuning._val_metric = lambda result, metric: (curve(_lr_of(result.name)), "completed")
    try:
        notes = tuning.sweep([cfg], plan, [1000, 1001], "final_val_loss", run)
    finally:
        tuning._val_metric = original
    return plan[0], calls, notes


def _lr_of(name: str) -> float:
    return float(name.rsplit("-lr", 1)[1])


def test_a_pick_at_the_edge_extends_the_grid_by_two_lrs_and_stops_inside():
    # the best lr is 0.8: past the grid's top (0.4), inside the first extension
    t, calls, notes = _sweep(lambda lr: (math.log(lr) - math.log(0.8)) ** 2, [0.1, 0.2, 0.4])
    assert calls == [[0.1, 0.2, 0.4], [0.8, 1.6]]
    assert t.pick == pytest.approx(0.8) and t.at_edge is None
    assert t.extensions == [{"side": "high", "lrs": [pytest.approx(0.8), pytest.approx(1.6)]}]
    assert "extended" in notes[0] and "highest" in notes[0]


def test_edge_extension_stops_after_two_and_says_so():
    t, calls, notes = _sweep(lambda lr: lr, [0.1, 0.2, 0.4])  # always best lower
    assert len(calls) == 3 and calls[1] == pytest.approx([0.025, 0.05])
    assert calls[2] == pytest.approx([0.00625, 0.0125])
    assert len(t.extensions) == 2 and t.at_edge == "low"
    assert t.pick == pytest.approx(0.00625)
    assert "still the grid's lowest after 2 extensions" in notes[-1]


def test_flat_span_is_the_stretch_within_one_percent_of_the_pick():
    scores = {0.01: 0.5, 0.02: 0.302, 0.04: 0.300, 0.08: 0.3025, 0.16: 0.31}
    assert tuning.flat_span(scores, 0.04, True) == (0.02, 0.08)


def test_tuning_seeds_are_disjoint_from_comparison_seeds():
    assert tuning.tuning_seeds(2, list(range(10))) == [1000, 1001]
    assert tuning.tuning_seeds(2, [1000, 5]) == [1001, 1002]


# the command


def _configs(tmp_path: Path) -> list[str]:
    step = write_config(tmp_path, tiny(name="step", epochs=2), "step.yaml")
    onecycle = tiny(name="onecycle", epochs=2, scheduler={"name": "OneCycleLR", "max_lr": 0.2})
    return [str(step), str(write_config(tmp_path, onecycle, "onecycle.yaml"))]


def test_a_tuned_comparison_ranks_fresh_seeds_by_the_test_metric(tmp_path):
    runs = tmp_path / "runs"
    args = ["compare", *_configs(tmp_path), "--tune-lr", "--lr-grid", "0.03:0.3:3"]
    result = cli.invoke(app, [*args, "--seeds", "2", "--jobs", "1", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "picked lr" in result.output and "within 1%" in result.output
    out = next(runs.glob("*-compare"))
    summary = json.loads((out / "summary.json").read_text())
    document = json.loads((out / "tuning.json").read_text())
    assert summary["metric"] == "test_loss"
    assert summary["seeds"] == [0, 1] and document["tuning_seeds"] == [1000, 1001]
    assert not set(summary["seeds"]) & set(document["tuning_seeds"])
    # the ranking is by the mean test loss of the fresh runs, best first
    means = [row["test_loss_mean"] for row in summary["configs"]]
    assert means == sorted(means)
    for row in summary["configs"]:
        pick = document["configs"][row["name"]]["pick"]
        assert summary["picked_lr"][row["name"]] == pick
        for run_dir in (out / "runs").glob(f"{row['name']}-seed*"):
            config = (run_dir / "config.yaml").read_text()
            key = "max_lr" if row["name"] == "onecycle" else "lr"
            assert f"{key}: {pick}" in config
    with open(out / "tuning.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    grid_points = sum(len(entry["grid"]) for entry in document["configs"].values())
    assert len(rows) == grid_points * 2
    assert {int(row["seed"]) for row in rows} == {1000, 1001}
    assert (out / "sensitivity.png").stat().st_size > 0


def test_dry_run_prints_the_jobs_and_trains_nothing(tmp_path):
    runs = tmp_path / "runs"
    args = ["compare", *_configs(tmp_path), "--tune-lr", "--lr-grid", "0.03:0.3:3"]
    result = cli.invoke(app, [*args, "--seeds", "2", "--dry-run", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "step-lr0.03-seed1000" in result.output and "scheduler.max_lr=0.3" in result.output
    assert "16 runs; nothing trained" in result.output  # 2 configs x 3 lrs x 2 + 2 x 2
    assert "12 tuning" in result.output
    assert not runs.exists()


def test_a_schedule_without_one_peak_lr_is_refused_before_training(tmp_path):
    nested = tiny(
        name="nested",
        scheduler={
            "name": "SequentialLR",
            "milestones": [2],
            "schedulers": [
                {"name": "ConstantLR", "factor": 0.5, "total_iters": 2},
                {"name": "StepLR", "step_size": 1},
            ],
        },
    )
    path = write_config(tmp_path, nested)
    runs = tmp_path / "runs"
    result = cli.invoke(app, ["compare", str(path), "--tune-lr", "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    assert "one peak lr" in result.output and not runs.exists()


def test_a_malformed_lr_grid_exits_2_before_training(tmp_path):
    runs = tmp_path / "runs"
    args = ["compare", *_configs(tmp_path), "--tune-lr", "--lr-grid", "1:0.1:5"]
    result = cli.invoke(app, [*args, "--runs-dir", str(runs)])
    assert result.exit_code == 2 and "LOW must be below HIGH" in result.output
    assert not runs.exists()


def test_lr_center_find_lr_centres_the_grid_on_the_valley_lr():
    from lrsched_cli import find_lr

    cfg = validate(tiny())
    valley = find_lr.valley_lr(cfg)
    assert valley is not None and valley != cfg.optimizer.lr
    (planned,) = tuning.plan([cfg], None, "find-lr")
    assert planned.center == valley and planned.grid[4] == valley
    assert planned.config_lr == cfg.optimizer.lr
