"""Rich tables and plots of stored runs, rendered without a terminal."""

from __future__ import annotations

import io
import math
from pathlib import Path

from rich.console import Console

from lrsched_cli import plots, report
from lrsched_cli.store import RunHistory


def history(n: int, lr=lambda e: 0.1 * 0.5 ** (e // 10), interval="epoch") -> RunHistory:
    epochs = [
        {
            "epoch": e,
            "lr": lr(e),
            "train_loss": 1 / e,
            "val_loss": 1 / e + 0.1,
            "val_accuracy": 0.5 + e / (2 * n),
            "seconds": 0.01,
        }
        for e in range(1, n + 1)
    ]
    steps = [
        {"step": 2 * e - 1 + i, "epoch": e, "lr": lr(e) * (1 - i / 2)}
        for e in range(1, n + 1)
        for i in range(2)
    ]
    summary = {
        "status": "completed",
        "epochs_done": n,
        "epochs_planned": n,
        "best_epoch": n,
        "best_val_loss": 1 / n + 0.1,
        "final_val_loss": 1 / n + 0.1,
        "device": "cpu",
        "wall_seconds": 1.0,
        "final_val_accuracy": 1.0,
    }
    config = {"name": "demo", "scheduler": {"name": "StepLR", "interval": interval}}
    return RunHistory(Path("runs/demo"), config, epochs, steps, summary)


def render(renderable, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_table_shows_every_epoch_of_a_short_run():
    text = render(report.render_run(history(5)))
    for header in ("epoch", "lr", "train loss", "val loss", "val acc", "time"):
        assert header in text
    assert all(f"│ {e:>5} │" in text for e in range(1, 6))


def test_long_runs_keep_ends_lr_changes_and_best():
    text = render(report.render_run(history(100)))
    shown = {
        int(line.split("│")[1])
        for line in text.splitlines()
        if line.startswith("│") and line.split("│")[1].strip().isdigit()
    }
    assert {1, 5, 10, 20, 50, 96, 100} <= shown and 37 not in shown
    assert "…" in text


def test_step_schedules_say_the_lr_is_taken_at_epoch_start():
    assert "lr (epoch start)" in render(report.render_run(history(3, interval="step")))


def test_summary_names_status_and_directory():
    text = render(report.render_summary(history(3)))
    assert "completed" in text and "runs/demo" in text and "best val loss" in text


def test_numbers_are_formatted_for_reading():
    assert report.format_number(0.1) == "0.1"
    assert report.format_number(1e-5) == "1.000e-05"
    assert report.format_number(math.nan) == "nan"


def test_plots_write_pngs_with_a_log_axis_when_lr_spans_decades(tmp_path):
    run = history(40, lr=lambda e: 0.1 * 0.1 ** (e // 10))
    paths = plots.plot_run(run, tmp_path)
    assert sorted(p.name for p in paths) == ["accuracy.png", "loss.png", "lr.png"]
    figure, axes = plots._figure("probe")
    plots._log_scale_if_wide(axes, run.column("lr"))
    assert axes.get_yscale() == "log"
    plots._log_scale_if_wide(axes := plots._figure("flat")[1], [0.1, 0.05])
    assert axes.get_yscale() == "linear"


def test_pairwise_numbers_are_never_cut_in_an_80_column_terminal():
    row = {
        "a": "cosine-annealing-warm-restarts",
        "b": "exponential",
        "paired_seeds": 10,
        "a_wins": 7,
        "b_wins": 3,
        "mean_difference": -0.001234567,
        "wilcoxon_p": 0.0419921875,
        "ttest_p": 0.000123456,
    }
    output = render(report.render_pairwise([row]), width=80)
    assert "…" not in output
    assert all(cell in output for cell in ("7-3", "-0.001235", "0.042", "0.000123"))
