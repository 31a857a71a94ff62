"""The command line, driven through typer's CliRunner and, where it matters, a real subprocess."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import CONFIGS, tiny, write_config
from lrsched_cli.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.exists() else []


def test_run_writes_the_run_directory_and_shows_the_table(tmp_path):
    config = write_config(tmp_path, tiny())
    result = invoke("run", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path / "runs")
    files = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.csv", "steps.csv", "summary.json"} <= files
    assert {"lr.png", "loss.png", "accuracy.png"} <= files
    for header in ("epoch", "lr", "train loss", "val loss", "val acc", "time"):
        assert header in result.stdout
    assert str(run_dir) in result.stdout.replace("\n", "")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == 4
    assert summary["device"] == "cpu" and summary["seed"] == 0
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert list(rows[0]) == [
        "epoch",
        "lr",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "lr_event",
        "seconds",
    ]
    assert [r["lr_event"] for r in rows] == ["", "", "step_size 2: x0.5", ""]
    assert [float(r["lr"]) for r in rows] == [0.1, 0.1, 0.05, 0.05]


def test_overrides_win_over_the_file(tmp_path):
    config = write_config(tmp_path, tiny())
    result = invoke(
        "run",
        config,
        "--runs-dir",
        tmp_path / "runs",
        "--quiet",
        "--epochs",
        "2",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--set",
        "optimizer.lr=0.05",
        "--set",
        "scheduler.gamma=0.1",
        "--set",
        "name=other",
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert run_dir.name.endswith("-other")
    saved = (run_dir / "config.yaml").read_text()
    assert "lr: 0.05" in saved and "gamma: 0.1" in saved and "seed: 7" in saved
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [float(r["lr"]) for r in rows] == [0.05, 0.05]


def test_quiet_prints_only_the_run_directory(tmp_path):
    config = write_config(tmp_path, tiny(epochs=1))
    result = invoke("run", config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert result.stdout == f"{run_dir}\n"


def test_json_prints_the_summary(tmp_path):
    config = write_config(tmp_path, tiny(epochs=2))
    result = invoke("run", config, "--runs-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    assert Path(summary["run_dir"]).is_dir()


def test_plot_redraws_from_files(tmp_path):
    config = write_config(tmp_path, tiny(epochs=2))
    invoke("run", config, "--runs-dir", tmp_path / "runs", "--quiet")
    (run_dir,) = run_dirs(tmp_path / "runs")
    result = invoke("plot", run_dir, "--out", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    for name in ("lr.png", "loss.png", "accuracy.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_missing_run_is_a_usage_error(tmp_path):
    result = invoke("plot", tmp_path / "nope")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.output


BAD_CONFIGS = {
    "unknown top-level key": (tiny(epochz=3), "epochz: unknown key; did you mean 'epochs'"),
    "unknown data key": (tiny(data={"name": "moons", "batch": 8}), "data.batch: unknown key"),
    "unknown scheduler": (
        tiny(scheduler={"name": "CosineAnealingLR"}),
        "did you mean 'CosineAnnealingLR'",
    ),
    "unknown optimizer": (tiny(optimizer={"name": "Adamm", "lr": 0.1}), "did you mean 'Adam"),
    "unknown dataset": (tiny(data={"name": "moon"}), "did you mean 'moons'"),
    "unknown model": (tiny(model={"name": "mpl"}), "did you mean 'mlp'"),
    "negative epochs": (tiny(epochs=-3), "epochs: input should be greater than 0"),
    "val_fraction above 1": (
        tiny(data={"name": "moons", "val_fraction": 1.5}),
        "data.val_fraction: input should be less than 1",
    ),
    "zero lr": (tiny(optimizer={"name": "SGD", "lr": 0}), "optimizer.lr: input should be greater"),
    "missing lr": (tiny(optimizer={"name": "SGD"}), "optimizer.lr: required key is missing"),
    "unknown scheduler argument": (
        tiny(scheduler={"name": "StepLR", "step_size": 2, "gama": 0.5}),
        "scheduler.gama: StepLR does not take 'gama'; did you mean",
    ),
    "missing scheduler argument": (
        tiny(scheduler={"name": "StepLR"}),
        "scheduler.step_size: StepLR requires step_size",
    ),
    "scheduler argument of the wrong type": (
        tiny(scheduler={"name": "StepLR", "step_size": "often"}),
        "scheduler.step_size",
    ),
    "optimizer argument torch rejects": (
        tiny(optimizer={"name": "SGD", "lr": 0.1, "momentum": -1}),
        "Invalid momentum value",
    ),
    "unknown optimizer argument": (
        tiny(optimizer={"name": "Adam", "lr": 0.1, "momentm": 0.9}),
        "optimizer.momentm",
    ),
    "lr expression that is not arithmetic": (
        tiny(scheduler={"name": "LambdaLR", "lr_lambda": "__import__('os').getcwd()"}),
        "scheduler.lr_lambda: ",
    ),
    "plateau mode against the metric": (
        tiny(scheduler={"name": "ReduceLROnPlateau", "monitor": "val_loss", "mode": "max"}),
        "scheduler.mode: mode 'max' contradicts monitor 'val_loss'",
    ),
    "cuda without cuda": (tiny(device="cuda"), "device: 'cuda' asked for"),
    "lr beyond float32": (tiny(optimizer={"name": "SGD", "lr": 1e308}), "optimizer.lr: input"),
    "differentiable optimizer": (
        tiny(optimizer={"name": "SGD", "lr": 0.1, "differentiable": True}),
        "optimizer: torch's SGD cannot step with these arguments",
    ),
    "capturable on the cpu": (
        tiny(optimizer={"name": "Adam", "lr": 0.1, "capturable": True}),
        "optimizer: torch's Adam cannot step with these arguments",
    ),
    "cnn on tabular data": (tiny(model={"name": "cnn"}), "cnn needs image-shaped data"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_config_is_one_clear_message_and_exit_2(case, tmp_path):
    import torch

    if case == "cuda without cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config, message = BAD_CONFIGS[case]
    path = write_config(tmp_path, config)
    result = invoke("run", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert run_dirs(tmp_path / "runs") == [], "a bad config must not leave a run directory"


BAD_FILES = {
    "missing file": (None, "config file not found"),
    "empty file": ("", "the file is empty"),
    "bad YAML": ("epochs: 3\ndata: {name: moons\noptimizer: x\n", "line 3: invalid YAML"),
    "python tag": (
        "epochs: !!python/object/apply:os.system ['echo hacked']\n",
        "line 1: invalid YAML: tags such as",
    ),
    "not a mapping": ("- a\n- b\n", "the top level must be a mapping"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_file_is_one_clear_message_and_exit_2(case, tmp_path):
    text, message = BAD_FILES[case]
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text)
    result = invoke("run", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert "hacked" not in result.output


def test_errors_name_the_line_of_the_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text((CONFIGS / "quickstart.yaml").read_text().replace("T_max: 20", "T_maks: 20"))
    result = invoke("run", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "T_maks" in t)
    assert f"config.yaml, line {line}: scheduler.T_maks" in result.stderr
    assert "did you mean 'T_max'" in result.stderr


def test_bad_set_is_a_usage_error(tmp_path):
    config = write_config(tmp_path, tiny())
    result = invoke("run", config, "--runs-dir", tmp_path / "runs", "--set", "optimizer.lr")
    assert result.exit_code == 2 and "expected key.path=value" in result.stderr


def test_diverged_run_exits_3_and_keeps_its_epochs(tmp_path):
    config = write_config(
        tmp_path, tiny(epochs=30, optimizer={"name": "SGD", "lr": 1e6}, scheduler={"name": "none"})
    )
    result = invoke("run", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 3, result.output
    (run_dir,) = run_dirs(tmp_path / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["epochs_done"] == len(list(csv.DictReader((run_dir / "metrics.csv").open())))


def test_module_help_runs_in_a_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "lrsched_cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "run" in result.stdout and "plot" in result.stdout


def test_help_and_plot_never_import_torch(tmp_path):
    config = write_config(tmp_path, tiny(epochs=1))
    invoke("run", config, "--runs-dir", tmp_path / "runs", "--quiet")
    (run_dir,) = run_dirs(tmp_path / "runs")
    code = (
        "import sys\n"
        "from lrsched_cli.cli import app\n"
        "for argv in (['--help'], ['plot', sys.argv[1]]):\n"
        "    try:\n"
        "        app(argv, prog_name='lrsched')\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, (argv, exit.code)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code, str(run_dir)], check=True, capture_output=True)


def test_ctrl_c_keeps_finished_epochs_and_exits_130(tmp_path, spawn):
    config = write_config(tmp_path, tiny(epochs=100_000, scheduler={"name": "none"}))
    process = spawn("run", str(config), "--runs-dir", str(tmp_path / "runs"))
    metrics = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list((tmp_path / "runs").glob("*/metrics.csv"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            metrics = found[0]
            break
        time.sleep(0.1)
    assert metrics is not None, "the run never finished two epochs"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((metrics.parent / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    rows = list(csv.DictReader(metrics.open()))
    assert summary["epochs_done"] == len(rows) >= 2
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))


def test_run_json_carries_the_lint_warnings_and_stderr_shows_them(tmp_path):
    config = write_config(tmp_path, tiny(scheduler={"name": "CosineAnnealingLR", "T_max": 2}))
    result = invoke("run", config, "--runs-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (warning,) = document["warnings"]
    assert "T_max" in warning
    assert "T_max" in result.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert json.loads((run_dir / "summary.json").read_text())["warnings"] == [warning]


def test_quiet_silences_warnings_but_keeps_them_in_the_summary(tmp_path):
    config = write_config(tmp_path, tiny(scheduler={"name": "CosineAnnealingLR", "T_max": 2}))
    result = invoke("run", config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert len(json.loads((run_dir / "summary.json").read_text())["warnings"]) == 1
