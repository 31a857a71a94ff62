"""The Python API: run a config (path, dict or loaded), compare, and load a run directory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import tiny, write_config
from lrsched_cli import api
from lrsched_cli.config import load_config


def test_importing_the_api_imports_no_torch():
    code = (
        "import sys, lrsched_cli, lrsched_cli.api;"
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_a_path_a_dict_and_a_loaded_config_alike(tmp_path):
    path = write_config(tmp_path, tiny())
    from_path = api.run(path, runs_dir=tmp_path / "runs", plots=False)
    from_dict = api.run(tiny(), runs_dir=tmp_path / "runs", plots=False)
    loaded = api.run(load_config(path), runs_dir=tmp_path / "runs")
    assert from_path.status == from_dict.status == loaded.status == "completed"
    untimed = [{k: v for k, v in row.items() if k != "seconds"} for row in from_path.metrics]
    for result in (from_dict, loaded):
        assert [{k: v for k, v in row.items() if k != "seconds"} for row in result.metrics] == (
            untimed
        )
    assert [row["lr"] for row in from_path.metrics] == [0.1, 0.1, 0.05, 0.05]
    assert from_path.path.parent == tmp_path / "runs" and from_path.path.is_dir()
    assert from_path.summary["epochs_done"] == 4 and len(from_path.steps) == 4 * 4
    assert (loaded.path / "lr.png").is_file() and not (from_path.path / "lr.png").exists()


def test_run_takes_overrides_and_options(tmp_path):
    result = api.run(
        tiny(), runs_dir=tmp_path, overrides=["optimizer.lr=0.05"], epochs=2, seed=3, plots=False
    )
    assert [row["lr"] for row in result.metrics] == [0.05, 0.05]
    assert result.config["seed"] == 3 and result.summary["seed"] == 3


def test_a_dict_without_a_name_is_named_run_and_relative_paths_are_the_cwds(tmp_path, monkeypatch):
    (tmp_path / "points.csv").write_text(
        "a,b,label\n" + "".join(f"{i % 5},{i % 3},{i % 2}\n" for i in range(40))
    )
    monkeypatch.chdir(tmp_path)
    config = {key: value for key, value in tiny().items() if key != "name"}
    config["data"] = {"name": "csv", "path": "points.csv", "target": "label"}
    config["data"]["task"] = "classification"
    result = api.run(config, runs_dir="runs", plots=False)
    assert result.config["name"] == "run" and result.path.name.endswith("-run")
    assert result.config["data"]["path"] == str(tmp_path / "points.csv")


def test_a_bad_config_raises_config_error_and_writes_nothing(tmp_path):
    with pytest.raises(api.ConfigError, match="optimizer.lr"):
        api.run(tiny(optimizer={"name": "SGD", "lr": -1}), runs_dir=tmp_path / "runs")
    with pytest.raises(api.ConfigError, match="a config is a path, a dict"):
        api.run(42, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_compare_ranks_dicts_and_paths_over_paired_seeds(tmp_path):
    step = tiny(name="step")
    cosine = tiny(name="cosine", scheduler={"name": "CosineAnnealingLR", "T_max": 4})
    result = api.compare(
        [write_config(tmp_path, step), cosine], seeds=[0, 1], runs_dir=tmp_path / "out"
    )
    assert result.path.parent == tmp_path / "out" and result.metric == "final_val_loss"
    assert {row["name"] for row in result.ranking} == {"step", "cosine"}
    assert all(row["runs"] == 2 for row in result.ranking)
    assert len(result.runs) == 4 and {run.status for run in result.runs} == {"completed"}
    means = [row["final_val_loss_mean"] for row in result.ranking]
    assert means == sorted(means)  # best first
    assert (result.path / "summary.json").is_file() and (result.path / "lr.png").is_file()
    frame = result.ranking_frame()
    assert list(frame["name"]) == [row["name"] for row in result.ranking]


def test_compare_refuses_what_the_cli_refuses(tmp_path):
    with pytest.raises(api.ConfigError, match="several configs are named tiny"):
        api.compare([tiny(), tiny()], runs_dir=tmp_path)
    with pytest.raises(api.ConfigError, match="metric: unknown 'loss'"):
        api.compare([tiny()], metric="loss", runs_dir=tmp_path)
    with pytest.raises(api.ConfigError, match="distinct seeds"):
        api.compare([tiny()], seeds=[1, 1], runs_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_load_run_gives_metrics_as_dicts_and_as_a_dataframe(tmp_path):
    made = api.run(tiny(), runs_dir=tmp_path, plots=False)
    run = api.load_run(str(made.path))
    assert run == made
    assert list(run.metrics[0])[:5] == ["epoch", "lr", "train_loss", "val_loss", "val_accuracy"]
    frame = run.metrics_frame()
    assert list(frame.index) == [1, 2, 3, 4]
    assert list(frame["lr"]) == [row["lr"] for row in run.metrics]


def test_without_pandas_the_dataframe_says_how_to_get_it(tmp_path, monkeypatch):
    run = api.run(tiny(epochs=1), runs_dir=tmp_path, plots=False)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        run.metrics_frame()
    assert run.metrics[0]["epoch"] == 1


def test_load_run_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(api.RunUnusable, match="expected a run directory"):
        api.load_run(tmp_path)
