"""TensorBoard events: written while training and exported from files, read back with
TensorBoard's own EventAccumulator and checked against the run's CSV files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli import store
from lrsched_cli.cli import app

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard (in the dev extra) reads the events back",
)
pytest.importorskip("tensorboardX", reason="the tensorboard extra writes the events")
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

cli = CliRunner()
ONE_CYCLE = tiny(
    name="one-cycle",
    epochs=3,
    scheduler={"name": "OneCycleLR", "max_lr": 0.5},  # per step, cycles momentum
)


def read_events(directory: Path) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def session(accumulator, kind: str):
    content = accumulator.PluginTagToContent("hparams")[f"_hparams_/session_{kind}_info"]
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    return getattr(data, f"session_{kind}_info")


def assert_events_match_files(run_dir: Path, events_dir: Path) -> None:
    """Every per-epoch column and every step's lr, as the files hold them (float32 in events)."""
    history = store.read_run(run_dir)
    events = read_events(events_dir)
    columns = {
        "loss/train": "train_loss",
        "loss/val": "val_loss",
        "accuracy/val": "val_accuracy",
        "lr/group0": "lr",
        "momentum/group0": "momentum",
    }
    for tag, column in columns.items():
        expected = [(row["epoch"], pytest.approx(row[column], rel=1e-6)) for row in history.epochs]
        assert scalars(events, tag) == expected, tag
    steps = [(row["step"], pytest.approx(row["lr"], rel=1e-6)) for row in history.steps]
    assert scalars(events, "lr_by_step/group0") == steps


@pytest.fixture(scope="module")
def live_run(tmp_path_factory) -> Path:
    """One real run with --tensorboard, shared by the tests that read it."""
    directory = tmp_path_factory.mktemp("live")
    config = write_config(directory, ONE_CYCLE)
    result = cli.invoke(
        app, ["run", str(config), "--tensorboard", "-q", "--runs-dir", str(directory)]
    )
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def test_run_with_tensorboard_writes_every_epoch_and_step_into_its_directory(live_run):
    assert list(live_run.glob("events.out.tfevents.*"))
    # The hparams session sits in the run's own directory: no sub-run named after the time.
    assert [p for p in live_run.iterdir() if p.is_dir()] == []
    assert_events_match_files(live_run, live_run)


def test_hparams_session_is_named_grouped_by_config_and_ended(live_run):
    events = read_events(live_run)
    start = session(events, "start")
    assert start.group_name == "one-cycle"
    assert start.hparams["optimizer.lr"].number_value == pytest.approx(0.1)
    assert start.hparams["scheduler.name"].string_value == "OneCycleLR"
    assert start.hparams["seed"].number_value == 0
    assert start.hparams["model.hidden"].string_value == "[8]"
    assert "device" not in start.hparams and "name" not in start.hparams
    assert session(events, "end").status == 1  # STATUS_SUCCESS
    assert yaml.safe_load((live_run / "config.yaml").read_text())["tensorboard"] is True


def test_export_writes_the_same_events_as_training(live_run, tmp_path):
    result = cli.invoke(app, ["export", "tensorboard", str(live_run), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    exported = tmp_path / "one-cycle" / "seed0"
    assert_events_match_files(live_run, exported)
    live, again = read_events(live_run), read_events(exported)
    assert sorted(again.Tags()["scalars"]) == sorted(live.Tags()["scalars"])
    assert session(again, "start").hparams == session(live, "start").hparams


def test_export_into_the_run_directory_replaces_its_events(live_run, tmp_path):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(live_run), str(run_dir)], check=True)
    for _ in range(2):
        result = cli.invoke(app, ["export", "tensorboard", str(run_dir)])
        assert result.exit_code == 0, result.output
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert_events_match_files(run_dir, run_dir)  # once each, not twice


def write_run(directory: Path, name: str, seed: int, losses: list[float]) -> Path:
    """A run directory as `lrsched run` leaves it, written by hand: two parameter groups."""
    directory.mkdir(parents=True)
    config = {**tiny(name=name, seed=seed), "epochs": len(losses)}
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rows = ["epoch,lr,lr_1,train_loss,val_loss,val_accuracy,lr_event,seconds"]
    rows += [
        f"{e},{0.1 / e},{0.01 / e},{loss + 0.1},{loss},0.5,{'cut' if e == 2 else ''},0.5"
        for e, loss in enumerate(losses, start=1)
    ]
    (directory / "metrics.csv").write_text("\n".join(rows) + "\n")
    steps = ["step,epoch,lr"] + [
        f"{2 * e - 1 + i},{e},{0.1 / e}" for e in range(1, len(losses) + 1) for i in range(2)
    ]
    (directory / "steps.csv").write_text("\n".join(steps) + "\n")
    summary = {"status": "completed", "name": name, "seed": seed, "started_unix": 1.7e9}
    summary["test_loss"] = losses[-1] + 0.01
    (directory / "summary.json").write_text(json.dumps(summary))
    return directory


def write_comparison(directory: Path) -> Path:
    for seed in (0, 1):
        for name in ("step", "cosine"):
            losses = [1.0 - 0.1 * seed, 0.5, 0.25 + (name == "step")]
            write_run(
                directory / "runs" / f"2026010{seed}-000000-{name}-seed{seed}", name, seed, losses
            )
    (directory / "summary.json").write_text(json.dumps({"metric": "final_val_loss", "configs": []}))
    return directory


def test_export_from_files_alone_never_imports_torch(tmp_path):
    """A fresh interpreter: the CLI's export path reads files and writes events, no torch."""
    comparison = write_comparison(tmp_path / "compare-1")
    out = tmp_path / "tb"
    code = (
        "import sys\n"
        "from lrsched_cli.cli import app\n"
        f"try: app(['export', 'tensorboard', {str(comparison)!r}, '--out', {str(out)!r}])\n"
        "except SystemExit as exit: assert exit.code in (0, None), exit.code\n"
        "loaded = [m for m in ('torch', 'tensorflow') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    events = read_events(out / "compare-1" / "step" / "seed1")
    assert scalars(events, "loss/val") == [
        (1, pytest.approx(0.9)),
        (2, pytest.approx(0.5)),
        (3, pytest.approx(1.25)),
    ]
    assert scalars(events, "lr/group1") == [(e, pytest.approx(0.01 / e)) for e in (1, 2, 3)]
    assert [step for step, _ in scalars(events, "lr_by_step/group0")] == [1, 2, 3, 4, 5, 6]
    assert scalars(events, "test/loss") == [(3, pytest.approx(1.26))]  # at the last epoch
    assert "accuracy/val" in events.Tags()["scalars"]
    assert "momentum/group0" not in events.Tags()["scalars"]  # not cycled: no column


def test_a_comparison_is_laid_out_by_config_then_seed(tmp_path):
    comparison = write_comparison(tmp_path / "compare-1")
    out = tmp_path / "tb"
    result = cli.invoke(app, ["export", "tensorboard", str(comparison), "--out", str(out)])
    assert result.exit_code == 0, result.output
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(out))
    runs = sorted(multiplexer.Runs())
    assert runs == [
        f"compare-1/{name}/seed{seed}" for name in ("cosine", "step") for seed in (0, 1)
    ]
    for run in runs:
        start = session(read_events(out / run), "start")
        assert start.group_name == run.split("/")[1]  # the hparams tab groups seeds by config


def test_runs_with_the_same_config_and_seed_are_kept_apart(tmp_path):
    first = write_run(tmp_path / "a" / "r1", "same", 0, [1.0])
    second = write_run(tmp_path / "b" / "r2", "same", 0, [2.0])
    result = cli.invoke(
        app, ["export", "tensorboard", str(first), str(second), "--out", str(tmp_path / "tb")]
    )
    assert result.exit_code == 0, result.output
    assert scalars(read_events(tmp_path / "tb" / "same" / "seed0"), "loss/val")[0][1] == 1.0
    assert scalars(read_events(tmp_path / "tb" / "same" / "r2"), "loss/val")[0][1] == 2.0


@pytest.mark.parametrize("target", ["empty", "missing", "file"])
def test_export_of_what_is_not_a_run_or_comparison_exits_2(tmp_path, target):
    path = tmp_path / target
    if target == "empty":
        path.mkdir()
    elif target == "file":
        path.write_text("not a run")
    result = cli.invoke(app, ["export", "tensorboard", str(path)])
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr and "run" in result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def without_extra(monkeypatch):
    """tensorboardX as if not installed: find_spec and import both see no module."""
    monkeypatch.setitem(sys.modules, "tensorboardX", None)


def test_tensorboard_flag_without_the_extra_names_it(tmp_path, without_extra):
    config = write_config(tmp_path, tiny())
    result = cli.invoke(
        app, ["run", str(config), "--tensorboard", "--runs-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert (
        "--tensorboard" in result.stderr and "pip install 'lrsched[tensorboard]'" in result.stderr
    )
    assert not (tmp_path / "r").exists()  # refused before any run directory


def test_tensorboard_key_without_the_extra_names_it_and_its_line(tmp_path, without_extra):
    config = write_config(tmp_path, tiny(tensorboard=True))
    result = cli.invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    line = config.read_text().splitlines().index("tensorboard: true") + 1
    assert "lrsched[tensorboard]" in result.stderr and f"line {line}" in result.stderr
    assert not (tmp_path / "r").exists()


def test_export_without_the_extra_names_it(tmp_path, without_extra):
    run_dir = write_run(tmp_path / "run", "x", 0, [1.0])
    result = cli.invoke(app, ["export", "tensorboard", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "pip install 'lrsched[tensorboard]'" in result.stderr


def test_help_and_plot_import_neither_torch_nor_tensorboardx():
    code = (
        "import sys, lrsched_cli.cli, lrsched_cli.plots, lrsched_cli.tensorboard;"
        "bad = [m for m in ('torch', 'tensorboardX') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
