"""compare under faults, with real processes and real signals: Ctrl-C once and twice, a worker
killed with SIGKILL, a config that crashes in preparation, code in the current directory.

Each test starts `lrsched` in a session of its own and kills that whole process group when it
ends (the forkserver and the workers included), passed or failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli.cli import app

# The installed script: `python -m lrsched_cli` would put the current directory on sys.path.
LRSCHED = str(Path(sys.executable).parent / "lrsched")
FOREVER = 100_000  # epochs: runs that only a signal ends
# Shapes whose batched gradients equal a run alone's, so that their runs are fused
FUSABLE = {"data": {"name": "moons", "n_samples": 400, "batch_size": 32},
           "model": {"name": "mlp", "hidden": [16, 16]}}  # fmt: skip
STARTUP = 60.0  # seconds for the forkserver's torch import and the first epochs, on a busy box


@pytest.fixture
def lrsched():
    """Start `lrsched ARGS...` in a new session; its whole process group is killed at the end."""
    started: list[subprocess.Popen] = []

    def start(*args: str, cwd: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [LRSCHED, *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.communicate()


def write_pair(directory: Path, epochs: int, **shapes) -> list[str]:
    step = tiny(name="step", epochs=epochs, **shapes)
    expo = tiny(
        name="expo", epochs=epochs, scheduler={"name": "ExponentialLR", "gamma": 0.999}, **shapes
    )
    return [str(write_config(directory, cfg, f"{cfg['name']}.yaml")) for cfg in (step, expo)]


def summaries(runs: Path) -> dict[Path, dict]:
    """Every trained run's summary.json under the comparison, by run directory."""
    found = {}
    for path in runs.glob("*-compare/runs/*/summary.json"):
        try:
            found[path.parent] = json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # being replaced right now: read again on the next poll
    return found


def wait_until(condition, process: subprocess.Popen, what: str, timeout: float = STARTUP):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"lrsched ended before {what}: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"not within {timeout} s: {what}")


def training(runs: Path, count: int, process: subprocess.Popen) -> dict[Path, dict]:
    """Wait until `count` runs are training, past their first epoch."""

    def ready():
        running = {
            path: summary
            for path, summary in summaries(runs).items()
            if summary.get("status") == "running" and summary.get("epochs_done", 0) >= 1
        }
        return running if len(running) >= count else None

    return wait_until(ready, process, f"{count} runs training")


def group_gone(process: subprocess.Popen, timeout: float = 10.0) -> bool:
    """Whether every process of the command's group (forkserver, workers) has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("to", ["group", "parent"])
def test_ctrl_c_starts_no_queued_job_and_compares_what_ended(to, tmp_path, lrsched):
    runs = tmp_path / "runs"
    process = lrsched(
        "compare", *write_pair(tmp_path, FOREVER), "--seeds", "2", "--jobs", "2",
        "--fuse", "off", "--runs-dir", str(runs), cwd=tmp_path,
    )  # fmt: skip
    training(runs, 2, process)
    if to == "group":
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C
    else:
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    ended = summaries(runs)
    assert len(ended) == 2, "a queued job started after Ctrl-C"
    assert all(s["status"] == "interrupted" and s["epochs_done"] >= 1 for s in ended.values())
    (out,) = runs.glob("*-compare")
    document = json.loads((out / "summary.json").read_text())
    assert document["interrupted"] is True
    assert sorted(run["status"] for run in document["runs"]) == ["interrupted", "interrupted"]
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert group_gone(process)


def test_a_second_ctrl_c_exits_130_within_seconds(tmp_path, lrsched):
    runs = tmp_path / "runs"
    process = lrsched(
        "compare", *write_pair(tmp_path, FOREVER), "--seeds", "3", "--jobs", "2",
        "--fuse", "off", "--runs-dir", str(runs), cwd=tmp_path,
    )  # fmt: skip
    training(runs, 2, process)
    os.killpg(process.pid, signal.SIGINT)
    try:
        os.killpg(process.pid, signal.SIGINT)  # at once: while the runs end their batch
    except ProcessLookupError:
        pass
    started = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("compare hung after two Ctrl-Cs")
    assert process.returncode == 130, stderr
    assert time.monotonic() - started < 15
    assert "Traceback" not in stderr
    assert group_gone(process), "a worker or the forkserver outlived the command"
    statuses = [s["status"] for s in summaries(runs).values()]
    assert len(statuses) == 2 and "running" not in statuses, statuses


def test_a_killed_worker_fails_its_own_job_only(tmp_path, lrsched):
    runs = tmp_path / "runs"
    process = lrsched(
        "compare", *write_pair(tmp_path, 150), "--seeds", "2", "--jobs", "2",
        "--fuse", "off", "--runs-dir", str(runs), cwd=tmp_path,
    )  # fmt: skip
    running = training(runs, 2, process)
    victim = next(iter(running.values()))["pid"]
    os.kill(victim, signal.SIGKILL)  # as the OOM killer would
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    ended = summaries(runs)
    assert len(ended) == 4, "the queued jobs did not all run"
    failed = [s for s in ended.values() if s["status"] == "failed"]
    assert [s["pid"] for s in failed] == [victim]
    assert f"worker process {victim} died (killed by SIGKILL)" in failed[0]["error"]
    assert sorted(s["status"] for s in ended.values()) == ["completed"] * 3 + ["failed"]
    (out,) = runs.glob("*-compare")
    document = json.loads((out / "summary.json").read_text())
    assert sorted(run["status"] for run in document["runs"]) == ["completed"] * 3 + ["failed"]
    assert {row["name"]: row["completed"] for row in document["configs"]}.values() != {0}


def test_a_killed_worker_fails_its_fused_group_and_the_other_group_goes_on(tmp_path, lrsched):
    runs = tmp_path / "runs"
    process = lrsched(
        "compare", *write_pair(tmp_path, 150, **FUSABLE), "--seeds", "2", "--jobs", "2",
        "--runs-dir", str(runs), cwd=tmp_path,
    )  # fmt: skip
    running = training(runs, 4, process)
    assert {s["group_size"] for s in running.values()} == {2}, "2 groups of 2 runs, one a worker"
    victim = next(iter(running.values()))["pid"]
    os.kill(victim, signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    ended = summaries(runs)
    failed = [s for s in ended.values() if s["status"] == "failed"]
    assert [s["pid"] for s in failed] == [victim, victim]
    assert all(f"worker process {victim} died (killed by SIGKILL)" in s["error"] for s in failed)
    completed = [s for s in ended.values() if s["status"] == "completed"]
    assert len(completed) == 2 and all(s["fused"] and s["pid"] != victim for s in completed)
    (out,) = runs.glob("*-compare")
    document = json.loads((out / "summary.json").read_text())
    assert sorted(run["status"] for run in document["runs"]) == ["completed"] * 2 + ["failed"] * 2


CRASHING_FACTORY = "def build(input_shape, n_outputs):\n    raise RuntimeError('factory broke')\n"


def test_a_crash_in_preparation_fails_that_config_only(tmp_path):
    (tmp_path / "brittle.py").write_text(CRASHING_FACTORY)
    paths = write_pair(tmp_path, 2)
    broken = tiny(name="broken", epochs=2, model={"name": "brittle:build"})
    paths.append(str(write_config(tmp_path, broken, "broken.yaml")))
    result = CliRunner().invoke(
        app, ["compare", *paths, "--seeds", "1", "--jobs", "2", "--runs-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert "RemoteTraceback" not in result.output
    (out,) = (tmp_path / "r").glob("*-compare")
    runs = {run["name"]: run for run in json.loads((out / "summary.json").read_text())["runs"]}
    assert runs["step"]["status"] == runs["expo"]["status"] == "completed"
    assert runs["broken"]["status"] == "failed"
    assert "broken.yaml" in runs["broken"]["error"] and "factory broke" in runs["broken"]["error"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_config_error_names_its_file_and_leaves_no_directory(jobs, tmp_path):
    paths = write_pair(tmp_path, 2)
    # Accepted when loaded; torch refuses it when the optimizer is built.
    bad = tiny(name="bad", optimizer={"name": "SGD", "lr": 0.1, "nesterov": True})
    paths.append(str(write_config(tmp_path, bad, "bad.yaml")))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        app, ["compare", *paths, "--seeds", "1", "--jobs", jobs, "--runs-dir", str(runs)]
    )
    assert result.exit_code == 2, result.output
    assert "bad.yaml, line " in result.output and "Nesterov" in result.output
    assert not runs.exists()


SHADOW = """import importlib, os, sys
here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
open(os.path.join(here, f"ran-in-{os.getpid()}"), "w").close()
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
del sys.modules[__name__]
sys.modules[__name__] = importlib.import_module(__name__)
"""


def test_no_helper_process_imports_from_the_current_directory(tmp_path, lrsched):
    (tmp_path / "multiprocessing").mkdir()
    (tmp_path / "multiprocessing" / "__init__.py").write_text(SHADOW)
    process = lrsched(
        "compare", *write_pair(tmp_path, 2), "--seeds", "1", "--jobs", "2",
        "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path,
    )  # fmt: skip
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert sorted(p.name for p in tmp_path.glob("ran-in-*")) == []
