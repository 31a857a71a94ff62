"""Resume checks before it cuts: a checkpoint or run files that disagree are refused, with
nothing touched; no checkpoint restarts only after saying so; one run, one resume at a time."""

from __future__ import annotations

import csv
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny, train, write_config
from lrsched_cli import runner, store
from lrsched_cli.cli import app
from lrsched_cli.config import validate
from test_recovery import InterruptAt, without_time

cli = CliRunner()
CONFIG = tiny(epochs=8, checkpoint_every=2)


def interrupted(tmp_path: Path, at: int = 5, config: dict = CONFIG) -> Path:
    """A run interrupted after epoch `at`, its latest checkpoint from epoch 4."""
    result = runner.run_experiment(validate(config), tmp_path / "runs", InterruptAt(at))
    assert result.status == "interrupted"
    return result.path


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def resume(run_dir: Path, *extra: str):
    return cli.invoke(app, ["run", "--resume", str(run_dir), "--quiet", *extra])


def refused(run_dir: Path, *expected: str) -> None:
    before = snapshot(run_dir)
    result = resume(run_dir)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.stderr, result.stderr
    assert snapshot(run_dir) == before, "a refused resume changed the run's files"


def edit_checkpoint(run_dir: Path, **changes) -> None:
    path = run_dir / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state.update(changes)
    torch.save(state, path)


def test_a_checkpoint_of_another_optimizer_is_refused(tmp_path):
    run_dir = interrupted(tmp_path)
    other = interrupted(
        tmp_path / "adam", config={**CONFIG, "optimizer": {"name": "Adam", "lr": 0.01}}
    )
    shutil.copy(other / "checkpoint.pt", run_dir / "checkpoint.pt")
    refused(run_dir, "optimizer is another class")


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    run_dir = interrupted(tmp_path)
    other = interrupted(
        tmp_path / "wide", config={**CONFIG, "model": {"name": "mlp", "hidden": [9]}}
    )
    shutil.copy(other / "checkpoint.pt", run_dir / "checkpoint.pt")
    refused(run_dir, "has shape [9, 2], the config builds [8, 2]")


def test_a_checkpoint_that_is_a_directory_is_refused(tmp_path):
    run_dir = interrupted(tmp_path)
    (run_dir / "checkpoint.pt").unlink()
    (run_dir / "checkpoint.pt").mkdir()
    refused(run_dir, "checkpoint.pt is not a file")


def test_a_damaged_checkpoint_is_refused(tmp_path):
    run_dir = interrupted(tmp_path)
    (run_dir / "checkpoint.pt").write_bytes(b"\x00garbage" * 10)
    refused(run_dir, "cannot be read as a checkpoint")


@pytest.mark.parametrize("epoch", [20, -3])
def test_a_checkpoint_epoch_out_of_range_is_refused(tmp_path, epoch):
    run_dir = interrupted(tmp_path)
    edit_checkpoint(run_dir, epoch=epoch)
    refused(run_dir, f"its epoch {epoch} is not between 1 and the run's 8")


def test_metrics_cut_below_the_checkpoint_is_refused(tmp_path):
    run_dir = interrupted(tmp_path)
    lines = (run_dir / "metrics.csv").read_text().splitlines(keepends=True)
    (run_dir / "metrics.csv").write_text("".join(lines[:4]))  # the header and 3 epochs
    refused(run_dir, "metrics.csv holds 3 rows, the checkpoint was saved after 4")


def test_a_header_only_metrics_file_is_refused(tmp_path):
    run_dir = interrupted(tmp_path)
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    (run_dir / "metrics.csv").write_text(header + "\n")
    refused(run_dir, "metrics.csv holds 0 rows")


def test_steps_out_of_order_are_refused(tmp_path):
    run_dir = interrupted(tmp_path)
    rows = list(csv.reader((run_dir / "steps.csv").open()))
    rows[3], rows[4] = rows[4], rows[3]
    with (run_dir / "steps.csv").open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    refused(run_dir, "steps.csv does not number its rows")


def test_a_finished_checkpoint_in_an_unfinished_run_is_refused(tmp_path):
    run_dir = interrupted(tmp_path)
    finished = train(CONFIG, tmp_path / "finished")
    shutil.copy(finished.path / "checkpoint.pt", run_dir / "checkpoint.pt")
    refused(run_dir, "metrics.csv holds 5 rows, the checkpoint was saved after 8")


def test_no_checkpoint_restarts_after_saying_so_and_keeps_the_old_rows(tmp_path):
    run_dir = interrupted(tmp_path)
    (run_dir / "checkpoint.pt").unlink()
    old_rows = (run_dir / "metrics.csv").read_text()
    result = cli.invoke(app, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "no checkpoint: it starts again from epoch 1" in result.stderr
    assert (run_dir / "metrics.csv.before-restart").read_text() == old_rows
    reference = train(CONFIG, tmp_path / "reference")
    assert without_time(store.read_run(run_dir).epochs) == without_time(reference.epochs)


def test_a_second_resume_of_the_same_run_is_refused(tmp_path, spawn):
    config = {**CONFIG, "epochs": 100_000, "data": {"name": "moons", "n_samples": 400}}
    run_dir = interrupted(tmp_path, at=2, config=config)
    first = spawn("run", "--resume", str(run_dir), "--quiet")
    deadline = time.monotonic() + 60
    while len(store.read_run(run_dir).epochs) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)  # the first resume is training: it holds the run
    assert first.poll() is None
    second = resume(run_dir)
    assert second.exit_code == 2, second.output
    assert "in use by another lrsched process" in second.stderr
    first.send_signal(signal.SIGINT)
    first.wait(timeout=60)
    summary = store.read_run(run_dir).summary
    assert summary["epochs_done"] == len(store.read_run(run_dir).epochs)


def test_a_new_run_holds_its_directory(tmp_path, spawn):
    config = write_config(tmp_path, {**CONFIG, "epochs": 100_000})
    process = spawn("run", str(config), "--runs-dir", str(tmp_path / "runs"), "--quiet")
    deadline = time.monotonic() + 60
    while not list((tmp_path / "runs").glob("*/metrics.csv")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/metrics.csv")]
    with pytest.raises(store.RunInUse):
        with store.locked(run_dir):
            pass
    process.kill()
    process.wait(timeout=30)
    with store.locked(run_dir):  # the kernel let go of the dead process's lock
        pass
