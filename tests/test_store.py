"""The run directory: unique names, appends that survive a kill, summary replaced whole."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from lrsched_cli import store


def test_run_directories_never_collide(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: store.create_run_dir(tmp_path, "same"), range(20)))
    assert len(set(paths)) == 20


def test_names_cannot_escape_the_runs_directory(tmp_path):
    path = store.create_run_dir(tmp_path, "../../etc/passwd")
    assert path.parent == tmp_path and ".." not in path.name and "/" not in path.name
    assert store.safe_name("...") == "run"


def test_written_epochs_read_back(tmp_path):
    writer = store.RunWriter(tmp_path, {"name": "x"}, ["epoch", "lr", "val_loss"])
    writer.append_epoch({"epoch": 1, "lr": 0.1, "val_loss": 0.5}, [(1, 1, 0.1), (2, 1, 0.1)])
    writer.write_summary({"status": "running"})
    writer.close()
    history = store.read_run(tmp_path)
    assert history.epochs == [{"epoch": 1, "lr": 0.1, "val_loss": 0.5}]
    assert history.steps == [{"step": 1, "epoch": 1, "lr": 0.1}, {"step": 2, "epoch": 1, "lr": 0.1}]
    assert history.summary == {"status": "running"} and history.name == "x"
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_unterminated_last_line_is_dropped(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,lr\n1,0.1\n2,0.0")
    (tmp_path / "summary.json").write_text(json.dumps({"status": "running"}))
    history = store.read_run(tmp_path)
    assert history.epochs == [{"epoch": 1, "lr": 0.1}]
    assert history.steps == []


def test_floats_keep_full_precision(tmp_path):
    writer = store.RunWriter(tmp_path, {}, ["epoch", "lr"])
    writer.append_epoch({"epoch": 1, "lr": 0.1 * 0.1 * 0.1}, [])
    writer.close()
    assert store.read_run(tmp_path).epochs[0]["lr"] == 0.1 * 0.1 * 0.1


def test_numpy_scalars_and_lists_are_written_as_plain_numbers(tmp_path):
    import numpy as np

    rows = [{"x": np.float64(0.1), "n": np.int64(3), "f": np.float32(0.5), "seeds": [0, 1]}]
    store.write_csv(tmp_path / "t.csv", rows)
    assert (tmp_path / "t.csv").read_text() == "x,n,f,seeds\n0.1,3,0.5,0;1\n"


def test_estimates_are_plain_floats():
    from lrsched_cli.stats import Estimate

    estimate = Estimate.of([0.1, 0.2, 0.4])
    parts = (estimate.mean, estimate.std, estimate.ci_low, estimate.ci_high)
    assert all(type(part) is float for part in parts), [type(part) for part in parts]
