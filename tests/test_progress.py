"""Live progress: what the runner hands its observer, and what `lrsched run` draws with it."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli import cli, runner, store
from lrsched_cli.config import validate
from lrsched_cli.report import format_number

# Fewer than 20 batches an epoch, the last one short: every batch is a reporting point
SMALL = tiny(data={"name": "moons", "n_samples": 200, "batch_size": 16, "val_fraction": 0.2})


class Recorder(runner.RunObserver):
    """Keeps what each reporting point hands over, reading the running loss at every one."""

    def __init__(self):
        self.reports: list[tuple[int, int, int, float, float]] = []

    def on_batches(self, epoch, done, total, lr, loss):
        self.reports.append((epoch, done, total, lr, loss.mean()))


@pytest.fixture
def count_items(monkeypatch):
    """The number of Tensor.item() calls so far: on a GPU each is a host sync."""
    calls = []
    item = torch.Tensor.item

    def counted(tensor):
        calls.append(1)
        return item(tensor)

    monkeypatch.setattr(torch.Tensor, "item", counted)
    return calls


def test_each_reporting_point_gets_the_steps_lr_and_the_running_train_loss(tmp_path):
    observer = Recorder()
    result = runner.run_experiment(validate(SMALL), tmp_path, observer)
    history = store.read_run(result.path)
    total = observer.reports[0][2]
    assert len(observer.reports) == 4 * total == len(history.steps)
    step_lrs = {
        (row["epoch"], row["step"] - (row["epoch"] - 1) * total): row["lr"] for row in history.steps
    }
    for epoch, done, _, lr, _ in observer.reports:
        assert lr == pytest.approx(step_lrs[epoch, done])
    at_epoch_end = {epoch: mean for epoch, done, _, _, mean in observer.reports if done == total}
    assert at_epoch_end == pytest.approx(
        {row["epoch"]: row["train_loss"] for row in history.epochs}
    )
    assert {lr for *_, lr, _ in observer.reports} == {0.1, 0.05}, "StepLR halves it after 2"


def test_the_loop_reads_the_running_loss_only_for_an_observer_that_asks(tmp_path, count_items):
    runner.run_experiment(validate(SMALL), tmp_path / "quiet", runner.RunObserver())
    assert count_items == [], "a run nobody watches makes no per-batch host sync"
    observer = Recorder()
    runner.run_experiment(validate(SMALL), tmp_path / "watched", observer)
    assert len(count_items) == len(observer.reports)


class Watched(cli._ProgressObserver):
    """The CLI's observer, keeping each description it draws; it reads the loss once only."""

    REFRESH = 3600.0

    def __init__(self):
        super().__init__()
        self.descriptions: list[str] = []

    def _describe(self, *args) -> None:
        super()._describe(*args)
        self.descriptions.append(self.progress.tasks[0].description)


def test_the_progress_line_shows_epoch_lr_running_train_loss_and_val_loss(
    tmp_path, monkeypatch, count_items
):
    terminal = Console(file=io.StringIO(), force_terminal=True, width=120)
    monkeypatch.setattr(cli.console, "_console", terminal)
    with Watched() as observer:
        result = runner.run_experiment(validate(SMALL), tmp_path, observer)
    epochs = store.read_run(result.path).epochs
    assert len(count_items) == 1, "the running loss is read no more often than it is drawn"
    assert observer.descriptions[0].startswith("epoch 1 · lr 0.1 · train ")
    assert observer.descriptions[1:] == [
        f"epoch {row['epoch']} · lr {format_number(row['lr'])} · "
        f"train {format_number(row['train_loss'])} · val {format_number(row['val_loss'])}"
        for row in epochs
    ]


def test_a_piped_run_prints_its_directory_once_before_the_table_and_no_stray_lines(tmp_path):
    config = write_config(tmp_path, tiny())
    result = CliRunner().invoke(cli.app, ["run", str(config), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "r").iterdir()
    lines = result.stdout.splitlines()
    assert lines[0] == f"run directory: {run_dir}"
    assert lines[1].strip() == "tiny", "the table's title follows, with no blank line between"
    assert result.stdout.count(str(run_dir)) == 2, "at the start, and under the table"


def test_a_run_with_no_finite_val_loss_has_no_best_epoch(tmp_path):
    config = tiny(epochs=3, optimizer={"name": "SGD", "lr": 1e6}, scheduler={"name": "none"})
    result = runner.run_experiment(validate(config), tmp_path)
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["best_val_loss"] is None and summary["best_epoch"] is None
