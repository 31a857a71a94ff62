"""`lrsched plot`: folders of runs, overlay labels, the lr axis, and what goes where."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrsched_cli import plots, store
from lrsched_cli.cli import app

cli = CliRunner()


def fake_run(runs: Path, directory: str, seed: int = 0, lr: float = 0.1, **config) -> Path:
    """A finished run directory written through the store, as `lrsched run` leaves it."""
    path = runs / directory
    path.mkdir(parents=True)
    data = config.pop("data", {"name": "moons", "n_samples": 80})
    regression = data["name"] == "sine"
    columns = ["epoch", "lr", "train_loss", "val_loss"] + ([] if regression else ["val_accuracy"])
    full = {
        "name": config.pop("name", "demo"),
        "seed": seed,
        "data": data,
        "optimizer": {"name": "SGD", "lr": lr},
        "scheduler": {"name": "ExponentialLR", "gamma": 0.1, "interval": "epoch"},
        **config,
    }
    writer = store.RunWriter(path, full, columns)
    for epoch in range(1, 5):
        record = {"epoch": epoch, "lr": lr * 0.1 ** (epoch - 1), "train_loss": 1 / epoch}
        record.update(val_loss=1 / epoch + seed / 10, val_accuracy=0.5 + epoch / 10)
        writer.append_epoch(record, [(epoch, epoch, record["lr"])])
    writer.write_summary({"status": "completed", "seed": seed, "best_epoch": 4})
    writer.close()
    return path


@pytest.fixture
def drawn(monkeypatch):
    """Every figure's axes as saved: its title, legend labels and y scale."""
    saved = {}
    original = plots._save

    def keep(figure, axes, path, legend_title=None):
        labels = axes.get_legend_handles_labels()[1]
        saved[path.name] = {"labels": labels, "yscale": axes.get_yscale()}
        return original(figure, axes, path, legend_title)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_a_folder_of_runs_is_overlaid_under_the_runs_dir(tmp_path, drawn):
    runs = tmp_path / "runs"
    fake_run(runs, "a", seed=0)
    fake_run(runs, "b", seed=1)
    fake_run(runs, "c", name="other")
    result = cli.invoke(app, ["plot", str(runs), "--runs-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (overlay,) = (tmp_path / "out").iterdir()
    assert overlay.name.endswith("-overlay")
    assert str(overlay / "lr.png") in result.output.replace("\n", "")
    assert drawn["val_loss.png"]["labels"] == ["demo (2 seeds)", "other (1 seed)"]
    assert not (Path.cwd() / "overlay").exists()


def test_runs_of_one_config_and_seed_are_labelled_by_what_differs(tmp_path):
    runs = tmp_path / "runs"
    histories = [
        store.read_run(fake_run(runs, "first", seed=0, lr=0.1)),
        store.read_run(fake_run(runs, "again", seed=0, lr=0.1)),
        store.read_run(fake_run(runs, "seed1", seed=1, lr=0.1)),
        store.read_run(fake_run(runs, "halved", seed=0, lr=0.05)),
    ]
    groups = plots.overlay_groups(histories)
    assert list(groups) == [
        "demo optimizer.lr=0.1 seed 0 (first)",
        "demo optimizer.lr=0.1 seed 0 (again)",
        "demo optimizer.lr=0.1 seed 1",
        "demo optimizer.lr=0.05",
    ]
    assert all(len(runs) == 1 for runs in groups.values())


def test_seeds_of_one_config_share_a_band(tmp_path):
    runs = tmp_path / "runs"
    histories = [store.read_run(fake_run(runs, f"s{seed}", seed=seed)) for seed in range(3)]
    assert {name: len(group) for name, group in plots.overlay_groups(histories).items()} == {
        "demo": 3
    }


def test_overlaying_other_data_warns_as_compare_does(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "a", data={"name": "moons", "n_samples": 80, "noise": 0.2})
    fake_run(runs, "b", name="noisy", data={"name": "moons", "n_samples": 80, "noise": 0.5})
    result = cli.invoke(app, ["plot", str(runs), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "warning: noisy uses other data than demo" in result.stderr


def test_the_accuracy_overlay_leaves_regression_runs_out(tmp_path, drawn):
    runs = tmp_path / "runs"
    fake_run(runs, "a", name="classifier")
    fake_run(runs, "b", name="regressor", data={"name": "sine", "n_samples": 80})
    result = cli.invoke(app, ["plot", str(runs), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert drawn["val_accuracy.png"]["labels"] == ["classifier (1 seed)"]
    assert "regressor (1 seed)" in drawn["val_loss.png"]["labels"]


@pytest.mark.parametrize(("scale", "expected"), [("auto", "log"), ("linear", "linear")])
def test_lr_scale_is_the_users_choice(tmp_path, drawn, scale, expected):
    run = fake_run(tmp_path / "runs", "a")  # the lr spans three decades: auto draws log
    result = cli.invoke(app, ["plot", str(run), "--lr-scale", scale, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert drawn["lr.png"]["yscale"] == expected


def test_lr_scale_log_on_a_narrow_range(tmp_path, drawn):
    runs = tmp_path / "runs"
    fake_run(runs, "a")
    fake_run(runs, "b", seed=1)
    result = cli.invoke(app, ["plot", str(runs), "--lr-scale", "log", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert drawn["lr.png"]["yscale"] == "log"
