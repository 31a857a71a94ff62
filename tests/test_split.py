"""The held-out test split: its rows, its pairing across configs, and that no training sees it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli import runner
from lrsched_cli.cli import app
from lrsched_cli.config import validate
from lrsched_cli.data import split_rows

cli = CliRunner()

RECORDER = '''
from torch import nn


class Recorder(nn.Module):
    """A linear model that appends every row it is shown to `log`, with its mode."""

    def __init__(self, input_shape, n_outputs, log):
        super().__init__()
        self.linear = nn.Linear(input_shape[0], n_outputs)
        self.log = log

    def forward(self, x):
        mode = "train" if self.training else "eval"
        with open(self.log, "a") as handle:
            for row in x.tolist():
                handle.write(mode + " " + " ".join(f"{v:.5f}" for v in row) + "\\n")
        return self.linear(x)


def factory(input_shape, n_outputs, log=""):
    return Recorder(input_shape, n_outputs, log)
'''


def rows(tensor) -> set[str]:
    return {" ".join(f"{v:.5f}" for v in row) for row in tensor.tolist()}


def test_the_three_splits_are_disjoint_and_cover_the_data():
    cfg = validate(tiny(data={"name": "moons", "n_samples": 100, "batch_size": 16})).data
    train, val, test = split_rows(100, cfg, split_seed=1, test_seed=2)
    assert (len(train), len(val), len(test)) == (60, 20, 20)
    assert sorted([*train, *val, *test]) == list(range(100))


def test_without_a_test_split_train_and_val_rows_are_those_of_earlier_versions():
    data = {"name": "moons", "n_samples": 100, "batch_size": 16, "test_fraction": 0}
    cfg = validate(tiny(data=data)).data
    train, val, test = split_rows(100, cfg, split_seed=7, test_seed=None)
    order = np.random.default_rng(7).permutation(100)  # the split before there was a test one
    assert list(val) == list(order[:20]) and list(train) == list(order[20:]) and not len(test)


def test_a_seed_gives_every_config_the_same_test_rows_and_another_seed_others():
    step = tiny(name="step")
    cosine = tiny(
        name="cosine",
        optimizer={"name": "Adam", "lr": 0.01},
        scheduler={"name": "CosineAnnealingLR", "T_max": 4},
    )
    a, b = (runner.prepare(validate({**c, "seed": 3})).dataset for c in (step, cosine))
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert getattr(a, name).equal(getattr(b, name)), name
    other = runner.prepare(validate({**step, "seed": 4})).dataset
    assert rows(other.x_test) != rows(a.x_test)
    assert not rows(a.x_test) & (rows(a.x_train) | rows(a.x_val))


def test_training_never_sees_the_test_rows_and_the_final_weights_see_them_once(tmp_path):
    (tmp_path / "recorder.py").write_text(RECORDER)
    log = tmp_path / "seen.txt"
    config = tiny(model={"name": "recorder:factory", "log": str(log)}, seed=5)
    path = write_config(tmp_path, config)
    result = cli.invoke(app, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output

    (run_dir,) = (tmp_path / "runs").iterdir()
    resolved = json.loads((run_dir / "summary.json").read_text())
    seen = [line.split(" ", 1) for line in log.read_text().splitlines()]
    dataset = runner.prepare(validate(config)).dataset  # the run's splits, rebuilt
    test, train, val = rows(dataset.x_test), rows(dataset.x_train), rows(dataset.x_val)
    assert len(test) == 20
    last = seen[-len(test) :]
    assert {row for _, row in last} == test and {mode for mode, _ in last} == {"eval"}
    earlier = seen[: -len(test)]
    assert not {row for _, row in earlier} & test  # no batch, no validation, nothing before
    assert {row for mode, row in earlier if mode == "train"} <= train
    assert {row for _, row in earlier} == train | val
    assert resolved["status"] == "completed"
    assert 0 <= resolved["test_accuracy"] <= 1 and resolved["test_loss"] > 0
    assert "test loss" in result.stdout and "test acc" in result.stdout


def test_an_interrupted_or_diverged_run_has_no_test_metrics(tmp_path):
    diverging = tiny(optimizer={"name": "SGD", "lr": 1e30})
    result = cli.invoke(
        app, ["run", str(write_config(tmp_path, diverging)), "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 3, result.output
    (summary,) = tmp_path.glob("*/summary.json")
    document = json.loads(summary.read_text())
    assert document["status"] == "diverged" and "test_loss" not in document


def test_a_regression_run_has_a_test_loss_and_no_accuracy(tmp_path):
    result = runner.run_experiment(
        validate(tiny(data={"name": "sine", "n_samples": 100, "batch_size": 16})), tmp_path
    )
    assert result.summary["test_loss"] > 0 and "test_accuracy" not in result.summary


def test_test_fraction_zero_turns_the_split_off(tmp_path):
    data = {"name": "moons", "n_samples": 100, "batch_size": 16, "test_fraction": 0}
    experiment = runner.prepare(validate(tiny(data=data)))
    assert experiment.dataset.x_test is None and len(experiment.dataset.x_train) == 80
    result = runner.run_experiment(validate(tiny(data=data)), tmp_path)
    assert "test_loss" not in result.summary


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"name": "moons", "n_samples": 100, "val_fraction": 0.5, "test_fraction": 0.5},
            "data.test_fraction: 0.5 held out for test and 0.5 for validation leave nothing",
        ),
        (
            {"name": "moons", "n_samples": 100, "val_fraction": 0.3, "test_fraction": 0.8},
            "their sum must be below 1",
        ),
        (
            {"name": "moons", "n_samples": 2},
            "data.n_samples: dataset 'moons' gives 2 sample(s); a run needs at least 3: "
            "1 to validate, 1 to test and 1 to train on",
        ),
    ],
)
def test_splits_that_leave_nothing_to_train_on_exit_2_before_training(tmp_path, data, message):
    path = write_config(tmp_path, tiny(data=data))
    for command in (["run", str(path)], ["compare", str(path), "--seeds", "1", "--jobs", "1"]):
        result = cli.invoke(app, [*command, "--runs-dir", str(tmp_path / "runs")])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.stderr.split()), result.stderr
        assert not list((tmp_path / "runs").rglob("metrics.csv"))


def old_run(tmp_path):
    """A finished run as versions before the test split saved it: no data.test_fraction."""
    import yaml

    data = {"name": "moons", "n_samples": 100, "batch_size": 16, "test_fraction": 0}
    result = runner.run_experiment(validate(tiny(epochs=2, data=data)), tmp_path / "old")
    saved = yaml.safe_load((result.path / "config.yaml").read_text())
    del saved["data"]["test_fraction"]
    (result.path / "config.yaml").write_text(yaml.safe_dump(saved))
    return result.path


def test_a_run_saved_before_test_splits_resumes_on_its_own_rows(tmp_path):
    path = old_run(tmp_path)
    result = cli.invoke(app, ["run", "--resume", str(path), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    document = json.loads((path / "summary.json").read_text())
    assert document["epochs_done"] == 3 and "test_loss" not in document
    assert "test_fraction: 0" in (path / "config.yaml").read_text()


def test_a_run_saved_before_test_splits_is_other_data_for_compare(tmp_path):
    path = old_run(tmp_path)
    config = write_config(tmp_path, tiny(name="new", epochs=2))
    result = cli.invoke(app, ["compare", str(path), str(config), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "test_fraction differ" in " ".join(result.stderr.split())
