"""Every CSV file lrsched writes reads back, with `csv` and with pandas, numbers as numbers."""

from __future__ import annotations

import csv
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli.cli import app

cli = CliRunner()
# The columns that hold text; every other column of every CSV file must be numeric.
TEXT_COLUMNS = {"name", "scheduler", "seed_list", "lr_event", "a", "b", "better", "metric"}
WRITTEN = {"metrics.csv", "steps.csv", "summary.csv", "pairwise.csv"}


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """A real comparison: a sweep, a plateau scheduler and a target, so that every column
    (swept values, lr events, not-reached counts, intervals) has values in it."""
    directory = tmp_path_factory.mktemp("csv")
    sweep = tiny(name="sweep", epochs=3, sweep={"optimizer.lr": [0.05, 0.1]})
    plateau = tiny(name="plateau", epochs=3, scheduler={"name": "ReduceLROnPlateau", "patience": 0})
    paths = [str(write_config(directory, c, f"{c['name']}.yaml")) for c in (sweep, plateau)]
    result = cli.invoke(
        app,
        ["compare", *paths, "--seed-list", "0,1", "--jobs", "1", "--target", "0.6"]
        + ["--runs-dir", str(directory / "runs")],
    )
    assert result.exit_code == 0, result.output
    (out,) = (directory / "runs").glob("*-compare")
    return out


def test_every_kind_of_csv_file_is_checked(comparison):
    assert {path.name for path in comparison.rglob("*.csv")} == WRITTEN


def test_every_csv_file_reads_back_with_numbers_as_numbers(comparison):
    for path in sorted(comparison.rglob("*.csv")):
        frame = pd.read_csv(path)
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == len(frame) > 0, path
        for column in frame.columns:
            if column in TEXT_COLUMNS:
                continue
            assert pd.api.types.is_numeric_dtype(frame[column]), (path, column, frame[column])
            for row in rows:  # and with nothing but the csv module
                assert row[column] == "" or math.isfinite(float(row[column])), (path, column)


def test_summary_csv_has_seed_counts_swept_values_and_intervals(comparison):
    frame = pd.read_csv(comparison / "summary.csv").set_index("name")
    assert list(frame["seeds"]) == [2, 2, 2] and set(frame["seed_list"]) == {"0;1"}
    assert sorted(frame["optimizer.lr"].dropna()) == [0.05, 0.1]  # the sweep's members
    assert math.isnan(frame.loc["plateau", "optimizer.lr"])  # no sweep member
    assert (frame["final_val_loss_ci_low"] <= frame["final_val_loss_mean"]).all()
    assert (frame["not_reached"] >= 0).all() and frame["lr_cut_runs"].dtype.kind == "i"
