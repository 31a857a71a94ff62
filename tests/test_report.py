"""Rich tables and plots of stored runs, rendered without a terminal."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
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


def pairwise_row(a: str, b: str) -> dict:
    """A pairwise-table row with long numbers: 7-3 wins over 10 seeds."""
    return {
        "a": a,
        "b": b,
        "paired_seeds": 10,
        "a_wins": 7,
        "b_wins": 3,
        "mean_difference": -0.001234567,
        "difference_ci_low": -0.002345678,
        "difference_ci_high": -0.000123456,
        "wilcoxon_p": 0.0419921875,
        "holm_p": 0.0419921875,
        "ttest_p": 0.000123456,
    }


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
    row = pairwise_row("cosine-annealing-warm-restarts", "exponential")
    output = render(report.render_pairwise([row]), width=80)
    assert "…" not in output
    assert all(cell in output for cell in ("7-3", "-0.0012", "-0.0023, -0.00012", "0.042"))
    assert "on 10 paired seeds" in output  # the same for every pair: said once


def shown_rows(text: str) -> list[str]:
    """The first cell of every body row of a rendered run table: an epoch number or "…"."""
    return [
        line.split("│")[1].strip()
        for line in text.splitlines()
        if line.startswith("│") and line.split("│")[1].strip()
    ]


def test_a_long_run_whose_lr_changes_every_epoch_keeps_both_ends_and_marks_every_gap():
    run = history(100, lr=lambda e: 0.05 * (1 + math.cos(math.pi * (e - 1) / 100)))
    run.summary.update(best_epoch=52, best_val_loss=0.01)
    for epoch in (30, 70):
        run.epochs[epoch - 1]["lr_event"] = f"event at {epoch}"
    rows = shown_rows(render(report.render_run(run)))
    epochs = [int(cell) for cell in rows if cell != "…"]
    assert rows[-1] == "100", "the last row is the last epoch"
    assert {1, 2, 3, 4, 5, 30, 52, 70, 96, 97, 98, 99, 100} <= set(epochs)
    assert epochs == sorted(epochs) and len(epochs) <= 30
    for before, after in zip(rows, rows[1:], strict=False):
        if "…" not in (before, after):
            assert int(after) == int(before) + 1, f"rows {before} and {after} with no … between"


def test_a_run_with_more_lr_events_than_rows_keeps_the_table_bounded():
    run = history(200, lr=lambda e: 0.1 * 0.99**e)
    for row in run.epochs:
        row["lr_event"] = "step_size 1: x0.99"
    rows = shown_rows(render(report.render_run(run)))
    assert rows[:5] == list("12345") and rows[-5:] == [str(e) for e in range(196, 201)]
    assert len([cell for cell in rows if cell != "…"]) <= 30


def test_a_run_without_a_finite_val_loss_says_so_instead_of_a_best_epoch():
    run = history(3)
    run.summary.update(best_val_loss=None, best_epoch=None, final_val_loss=math.nan)
    text = render(report.render_summary(run))
    assert "no epoch had a finite val loss" in text and "best val loss" not in text
    run.summary.update(best_val_loss=math.nan, best_epoch=1)  # as older summary.json files say
    assert "no epoch had a finite val loss" in render(report.render_summary(run))


EVENT = "plateau: 4 bad epochs > patience 3, x0.1"
KEYS = ("lr", "train_loss", "val_loss")
SWEEP = ["wc-lr=0.01-momentum=0.9", "wc-lr=0.01-momentum=0.5", "cosine-annealing-warm-restarts"]


def column_cells(text: str, column: int, anchor: int) -> list[list[str]]:
    """Column `column` of a rendered table's body, one list of wrapped lines per row; a row
    starts where column `anchor` is not empty."""
    cells: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        parts = line.split("│")[1:-1]
        if parts[anchor].strip():
            cells.append([])
        if cells and parts[column].strip():
            cells[-1].append(parts[column].strip())
    return cells


def fits(text: str, width: int) -> None:
    assert max(len(line) for line in text.splitlines()) <= width


def plateau_history() -> RunHistory:
    run = history(40, lr=lambda e: 0.1 * 0.1 ** ((e + 2) // 8))
    for epoch in (6, 14, 22):
        run.epochs[epoch - 1]["lr_event"] = EVENT
    run.summary.update(best_epoch=9)
    return run


def test_run_table_at_80_columns_keeps_numbers_whole_and_events_on_two_lines():
    run = plateau_history()
    text = render(report.render_run(run), width=80)
    fits(text, 80)
    events = [lines for lines in column_cells(text, -1, 0) if lines]
    assert len(events) == 3 and all(" ".join(lines) == EVENT for lines in events)
    assert all(len(lines) <= 2 for lines in events), events
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0].isdigit():
            row = run.epochs[int(cells[0]) - 1]
            assert cells[1:4] == [report.format_number(row[key]) for key in KEYS], line


def test_run_table_at_60_columns_lists_the_events_under_it():
    run = plateau_history()
    text = render(report.render_run(run), width=60)
    fits(text, 60)
    for epoch in (6, 14, 22):
        assert f"epoch {epoch}: {EVENT}" in text
    assert all(cell.isdigit() or cell == "…" for cell in shown_rows(text))
    lrs = [lines[0] for lines in column_cells(text, 1, 0) if lines]
    assert lrs[:3] == ["0.1", "0.1", "0.1"] and "1.000e-04" in lrs


def comparison(names: list[str]):
    from lrsched_cli.stats import ConfigSummary, Estimate

    def estimate(mean: float) -> Estimate:
        return Estimate([mean] * 10, mean, 0.003, mean - 0.0021, mean + 0.0021)

    return [
        ConfigSummary(
            name,
            "SGD",
            [RunHistory(Path("runs/x"), {}, [], [], {"status": "completed"})] * 10,
            {
                "final_val_loss": estimate(0.0448 + i / 1000),
                "final_val_accuracy": estimate(0.981),
                "auc_val_loss": estimate(0.0512 + i / 1000),
            },
        )
        for i, name in enumerate(names)
    ]


@pytest.mark.parametrize("width", [60, 80])
def test_comparison_names_wrap_whole_and_stay_apart(width):
    text = render(report.render_comparison(comparison(SWEEP), "final_val_loss"), width=width)
    fits(text, width)
    assert "…" not in text
    names = ["".join(lines) for lines in column_cells(text, 1, 2)]
    assert names == SWEEP
    for mean in ("0.0448", "0.0458", "0.0468", "0.0512", "98.1%"):
        assert mean in text


@pytest.mark.parametrize("width", [60, 80])
def test_pairwise_names_never_wrap_a_character_per_line(width):
    rows = [pairwise_row(a, b) for a, b in ((SWEEP[0], SWEEP[1]), (SWEEP[2], "exponential"))]
    text = render(report.render_pairwise(rows), width=width)
    fits(text, width)
    assert "…" not in text
    if width < 80:  # each pair's names stacked, A above "vs" above B
        names = "".join(line for lines in column_cells(text, 0, 0) for line in lines)
        assert names == f"{SWEEP[0]}vs{SWEEP[1]}{SWEEP[2]}vsexponential"
    else:
        assert ["".join(lines) for lines in column_cells(text, 0, 2)] == [SWEEP[0], SWEEP[2]]
        assert ["".join(lines) for lines in column_cells(text, 1, 2)] == [SWEEP[1], "exponential"]
    name_lines = [line for lines in column_cells(text, 0, 0) for line in lines]
    assert min(len(line) for line in name_lines if line != "vs") >= 3
    for number in ("-0.0012", "0.042", "-0.0023,", "-0.00012", "7-3"):
        assert text.count(number) == 2


def test_names_wrap_at_key_dots_but_never_inside_a_number():
    assert report._wrap_name("cfg-lr=0.05-warmup.epochs=1", 11) == [
        "cfg-lr=",
        "0.05-",
        "warmup.",
        "epochs=1",
    ]
