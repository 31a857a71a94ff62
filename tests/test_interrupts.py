"""Ctrl-C at any moment of `lrsched run`: exit 130, finished epochs kept, how to resume said."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from conftest import tiny, write_config

# Epochs of a few seconds: a Ctrl-C surely lands inside the first one.
SLOW = tiny(epochs=50, data={"name": "moons", "n_samples": 200_000, "batch_size": 8})


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def summary_of(runs: Path) -> dict:
    found = list(runs.glob("*/summary.json"))
    return json.loads(found[0].read_text()) if found else {}


def test_ctrl_c_in_the_first_epoch_is_a_normal_interrupt(tmp_path, spawn):
    config = write_config(tmp_path, SLOW)
    process = spawn("run", str(config), "--runs-dir", str(tmp_path / "runs"))
    wait_for(lambda: summary_of(tmp_path / "runs").get("status") == "running")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert f"resume with: lrsched run --resume {run_dir}" in stderr
    summary = summary_of(tmp_path / "runs")
    assert summary["status"] == "interrupted" and summary["epochs_done"] == 0
    assert (run_dir / "lr.png").stat().st_size > 0 and (run_dir / "loss.png").stat().st_size > 0


@pytest.mark.parametrize("delay", [0.05, 0.4, 1.0])
def test_a_second_ctrl_c_still_says_how_to_resume(tmp_path, spawn, delay):
    config = write_config(tmp_path, {**SLOW, "data": {"name": "moons", "n_samples": 400}})
    process = spawn("run", str(config), "--runs-dir", str(tmp_path / "runs"))
    wait_for(lambda: summary_of(tmp_path / "runs").get("epochs_done", 0) >= 1)
    process.send_signal(signal.SIGINT)
    time.sleep(delay)  # the second lands in the batch, in the summary, or while drawing
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "resume with: lrsched run --resume" in stderr, stderr


def test_ctrl_c_while_plotting_a_finished_run_exits_130_and_it_stays_completed(
    tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from lrsched_cli import cli

    def interrupted_drawing(history, out_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_draw_plots", interrupted_drawing)
    config = write_config(tmp_path, tiny(epochs=2))
    result = CliRunner().invoke(cli.app, ["run", str(config), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 130, result.output
    assert summary_of(tmp_path / "r")["status"] == "completed"
    assert "resume with" not in result.stderr
