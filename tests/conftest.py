"""Shared helpers: tiny configs and real runs into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

TINY = {
    "name": "tiny",
    "epochs": 4,
    "device": "cpu",
    # 20 rows to validate, 20 to test, 60 to train: 4 steps of 16 (the last one 12)
    "data": {"name": "moons", "n_samples": 100, "batch_size": 16},
    "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "SGD", "lr": 0.1, "momentum": 0.9},
    "scheduler": {"name": "StepLR", "step_size": 2, "gamma": 0.5},
}


@pytest.fixture(autouse=True)
def _sigint_restored():
    """A command that exits 130 ignores SIGINT on its way out, as the process it ends should;
    in-process invocations must not pass that on to the next test's subprocesses."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.fixture(autouse=True)
def _quiet_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("TERMINAL_WIDTH", "120")
    monkeypatch.setenv("_TYPER_FORCE_DISABLE_TERMINAL", "1")


def write_config(directory: Path, data: dict, name: str = "config.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def tiny(**changes) -> dict:
    """TINY with top-level keys replaced, e.g. tiny(scheduler={...}, epochs=3)."""
    return {**TINY, **changes}


def train(config: dict, runs_dir: Path):
    """Run a config dict through the real runner; returns the stored RunHistory."""
    from lrsched_cli import runner, store
    from lrsched_cli.config import validate

    result = runner.run_experiment(validate(config), runs_dir)
    return store.read_run(result.path)


@pytest.fixture
def spawn():
    """Start `python -m lrsched_cli ARGS...`; every process is killed when the test ends,
    passed or failed, so none is left training in the background."""
    import subprocess
    import sys

    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "lrsched_cli", *args]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()
