"""compare --executor ray, on one local Ray started once for the whole test run.

Its workers get a TMPDIR of their own, as machines without a shared filesystem would: a run they
train is found there while it trains, and reaches the comparison only as the bytes a task returns.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli import compare, store
from lrsched_cli.cli import app

STARTUP = 60.0  # seconds for a Ray worker's torch import and first epochs, on a busy box


@pytest.fixture(scope="session")
def ray_scratch(tmp_path_factory):
    """A local Ray with 2 CPUs for the session; yields the workers' temporary directory."""
    ray = pytest.importorskip("ray")
    scratch = tmp_path_factory.mktemp("ray-workers")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        runtime_env={"env_vars": {"TMPDIR": str(scratch)}},
    )
    yield scratch
    ray.shutdown()


# Shapes whose batched gradients equal a run alone's: such runs train in fused groups
FUSABLE = {"data": {"name": "moons", "n_samples": 400, "batch_size": 32},
           "model": {"name": "mlp", "hidden": [16, 16]}}  # fmt: skip


def write_pair(directory: Path, epochs: int = 4, **shapes) -> list[str]:
    step = tiny(name="step", epochs=epochs, **shapes)
    cosine = tiny(
        name="cosine", epochs=epochs, scheduler={"name": "CosineAnnealingLR", "T_max": 4}, **shapes
    )
    return [
        str(write_config(directory, step, "step.yaml")),
        str(write_config(directory, cosine, "cosine.yaml")),
    ]


def compare_dir(runs: Path) -> Path:
    (out,) = runs.glob("*-compare")
    return out


def run_files(out: Path) -> dict[str, dict[str, object]]:
    """Per run (config and seed): its metrics without `seconds`, steps, config and file names."""
    found = {}
    for path in sorted((out / "runs").iterdir()):
        rows = list(csv.DictReader((path / store.METRICS_FILE).open()))
        for row in rows:
            row.pop("seconds")
        summary = json.loads((path / store.SUMMARY_FILE).read_text())
        found[f"{summary['name']}-{summary['seed']}"] = {
            "metrics": rows,
            "steps": (path / store.STEPS_FILE).read_text(),
            "config": (path / store.CONFIG_FILE).read_text(),
            "files": sorted(p.name for p in path.iterdir()),
            "status": summary["status"],
        }
    return found


def test_ray_runs_equal_the_local_pools(ray_scratch, tmp_path):
    paths = write_pair(tmp_path, **FUSABLE)  # fused: a group of each config's 2 seeds a task
    before = set(ray_scratch.glob("lrsched-*"))
    outs = {}
    groups = {}
    for executor in ("local", "ray"):
        runs = tmp_path / executor
        result = CliRunner().invoke(
            app,
            ["compare", *paths, "--seeds", "2", "--jobs", "2", "--executor", executor,
             "--runs-dir", str(runs)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert result.output.count("completed ") == 4  # a progress line per run, as locally
        outs[executor] = run_files(compare_dir(runs))
        summaries = (compare_dir(runs) / "runs").glob(f"*/{store.SUMMARY_FILE}")
        groups[executor] = sorted(json.loads(path.read_text())["group_size"] for path in summaries)
    assert groups["ray"] == groups["local"] == [2, 2, 2, 2]
    assert len(outs["ray"]) == 4
    assert outs["ray"] == outs["local"]  # bitwise, apart from `seconds`
    assert "checkpoint.pt" in outs["ray"]["step-0"]["files"]
    assert set(ray_scratch.glob("lrsched-*")) == before, "a run stayed behind on a worker"


def test_with_storage_the_workers_write_the_comparison_there(ray_scratch, tmp_path):
    paths = write_pair(tmp_path, **FUSABLE)  # fused groups, whose tasks write there too
    local, shared = tmp_path / "local", tmp_path / "shared"
    for extra in (["--runs-dir", str(local)], ["--executor", "ray", "--storage", str(shared)]):
        result = CliRunner().invoke(app, ["compare", *paths, "--seeds", "2", "--jobs", "2", *extra])
        assert result.exit_code == 0, result.output
    out = compare_dir(shared)  # --storage replaces --runs-dir: the comparison lives in DIR
    assert run_files(out) == run_files(compare_dir(local))
    document = json.loads((out / "summary.json").read_text())
    assert {Path(run["path"]).parent for run in document["runs"]} == {out / "runs"}


def victim_killer(root: Path, summaries: str, killed: list[int]) -> threading.Thread:
    """A thread that SIGKILLs, as the OOM killer would, the worker training the run whose
    summary matches `summaries` under `root`, once it has kept two epochs; its pid goes in
    `killed`."""

    def kill_the_victim() -> None:
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline and not killed:
            for path in root.glob(summaries):
                metrics = path.with_name(store.METRICS_FILE)
                if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
                    killed.append(json.loads(path.read_text())["pid"])
                    os.kill(killed[0], signal.SIGKILL)
                    return
            time.sleep(0.1)

    return threading.Thread(target=kill_the_victim)


def test_with_storage_a_killed_worker_leaves_its_run_marked_failed(ray_scratch, tmp_path):
    from lrsched_cli import ray_executor

    victim = write_config(tmp_path, tiny(name="victim", epochs=100_000), "victim.yaml")
    paths = [write_pair(tmp_path)[0], str(victim)]
    out = tmp_path / "shared" / "cmp"
    killed: list[int] = []
    # Its run is in the shared directory while it trains: the worker writes there itself.
    killer = victim_killer(out, f"runs/*victim*/{store.SUMMARY_FILE}", killed)
    killer.start()
    comparison = compare.compare(
        compare.collect_inputs(paths), [0], out, 2, "final_val_loss",
        pool=ray_executor.pool(storage=True),
    )  # fmt: skip
    killer.join()
    assert killed, "the victim never trained in the shared directory"
    runs = {result.name: result for result in comparison.results}
    assert runs["step"].status == "completed"
    assert runs["victim"].status == "failed"
    # On disk too: left `running` by a process that is gone, it must not read as still training
    # (nor be taken up by `run --resume` as one in progress).
    (victim_dir,) = out.glob("runs/*victim*")
    assert runs["victim"].path == str(victim_dir)
    summary = json.loads((victim_dir / store.SUMMARY_FILE).read_text())
    assert summary["status"] == "failed"
    assert "Ray lost the task (WorkerCrashedError)" in summary["error"]
    assert summary["epochs_done"] >= 2  # what it trained before it died stays readable
    document = json.loads((out / "summary.json").read_text())
    assert sorted(run["status"] for run in document["runs"]) == ["completed", "failed"]


def _processes_marked(marker: str) -> list[int]:
    """The pids whose environment carries `marker`: the command and everything it started,
    Ray's own daemons included, whichever session or group they moved to."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue  # gone, or not ours
    return found


@pytest.fixture
def ray_command(tmp_path):
    """Start `lrsched ARGS...` in a new session, on a local Ray of its own; at the end, kill its
    process group and whatever it started elsewhere (`ray stop --force`, but only for what this
    test started: the session's Ray goes on)."""
    pytest.importorskip("ray")
    marker = f"LRSCHED_RAY_TEST={tmp_path}"
    started: list[subprocess.Popen] = []

    def start(*args: str, scratch: Path) -> subprocess.Popen:
        env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
        # Its workers' temporary directories in `scratch`; Ray's sockets where they always go,
        # whose paths must stay under the 107 bytes a Unix socket's may have.
        env.update(TMPDIR=str(scratch), RAY_TMPDIR="/tmp", LRSCHED_RAY_TEST=str(tmp_path))
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "lrsched"), *args], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.communicate()
    for pid in _processes_marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_ctrl_c_keeps_finished_runs_starts_no_queued_one_and_exits_130(ray_command, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    forever = [
        tiny(name=name, epochs=100_000, scheduler={"name": "ExponentialLR", "gamma": 0.999})
        for name in ("slow", "slower")
    ]
    paths = [
        str(write_config(tmp_path, config, f"{config['name']}.yaml"))
        for config in (tiny(name="quick", epochs=3), *forever)
    ]
    runs = tmp_path / "runs"
    # 6 jobs, 2 at a time (--jobs 2 on a Ray of 2 CPUs): the quick ones end, then two forever
    # runs train and the others wait in Ray's queue.
    process = ray_command(
        "compare", *paths, "--seeds", "2", "--jobs", "2", "--executor", "ray",
        "--runs-dir", str(runs), scratch=scratch,
    )  # fmt: skip

    def statuses(pattern: str) -> dict[str, dict]:
        found = {}
        for path in runs.parent.glob(pattern):
            try:
                summary = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced right now: read again on the next look
            found[f"{summary['name']}-{summary['seed']}"] = summary
        return found

    deadline = time.monotonic() + STARTUP
    while True:
        returned = statuses(f"runs/*-compare/runs/*/{store.SUMMARY_FILE}")
        training = {
            key: summary
            for key, summary in statuses(f"scratch/lrsched-*/*/{store.SUMMARY_FILE}").items()
            # The quick ones' too would race the Ctrl-C: they may end before it reaches them.
            if summary["status"] == "running"
            and summary.get("epochs_done", 0) >= 1
            and summary["name"] != "quick"
        }
        if returned and len(training) == 2:
            break
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"not mid-run within {STARTUP} s: {returned}"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: Ray's daemons get it too
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("compare --executor ray hung after a Ctrl-C")
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted" in stderr
    ended = statuses(f"runs/*-compare/runs/*/{store.SUMMARY_FILE}")
    # The finished runs are kept, the two that trained come back interrupted (their bytes too),
    # and none of the queued ones started.
    by_status: dict[str, set[str]] = {}
    for key, summary in ended.items():
        by_status.setdefault(summary["status"], set()).add(key)
    assert set(by_status) == {"completed", "interrupted"}, by_status
    assert by_status["completed"] >= set(returned)
    assert by_status["interrupted"] == set(training)
    assert all(ended[key]["epochs_done"] >= 1 for key in training)
    assert len(ended) < 6, "a queued job started after the Ctrl-C"
    (out,) = runs.glob("*-compare")
    document = json.loads((out / "summary.json").read_text())
    assert document["interrupted"] is True
    assert len(document["runs"]) == len(ended)
    assert not list(scratch.glob("lrsched-*")), "a run stayed behind on a worker"


TWO_NODES = """\
import json, logging, os, sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from lrsched_cli import compare, ray_executor

out, paths = Path(sys.argv[1]), sys.argv[2:]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
cluster.wait_for_nodes()
try:
    raylets = [node.all_processes["raylet"][0].process.pid for node in cluster.list_all_nodes()]
    comparison = compare.compare(
        compare.collect_inputs(paths), [0], out, 2, "final_val_loss", pool=ray_executor.pool()
    )
    where = {}  # run -> the raylet whose worker trained it: which node ran what
    for result in comparison.results:
        pid = json.loads((Path(result.path) / "summary.json").read_text())["pid"]
        where[result.name] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    print(json.dumps({"raylets": raylets, "where": where}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_a_simulated_two_node_cluster_runs_one_job_per_node_as_the_local_pool(tmp_path):
    # A process of its own: a Ray cluster cannot share one with the session's Ray. About 20 s on
    # 2 cores, most of it the two nodes' start-up.
    pytest.importorskip("ray")
    paths = write_pair(tmp_path, 600)  # runs of a few seconds: on one node, they would overlap
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env["LRSCHED_RAY_TEST"] = str(tmp_path)
    try:
        process = subprocess.run(
            [sys.executable, "-c", TWO_NODES, str(tmp_path / "cluster"), *paths],
            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
        )  # fmt: skip
    finally:  # a hung or failed cluster leaves no raylet behind
        for pid in _processes_marked(f"LRSCHED_RAY_TEST={tmp_path}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert process.returncode == 0, process.stderr[-3000:]
    found = json.loads(process.stdout.strip().splitlines()[-1])
    # 2 nodes of 1 CPU, 2 jobs of 1 CPU each at once: one on each node.
    assert sorted(found["where"].values()) == sorted(found["raylets"])
    compare.compare(compare.collect_inputs(paths), [0], tmp_path / "local", 2, "final_val_loss")
    assert run_files(tmp_path / "cluster") == run_files(tmp_path / "local")


MODEL_THAT_BREAKS_IN_TRAINING = """\
import torch


class Breaks(torch.nn.Linear):
    def forward(self, x):
        if self.training:
            raise RuntimeError("broke while training")
        return super().forward(x)


def build(input_shape, n_outputs):
    return Breaks(input_shape[0], n_outputs)
"""


def test_a_task_that_raises_fails_its_run_only(ray_scratch, tmp_path):
    from lrsched_cli import ray_executor

    with ray_executor.pool()(2, False) as executor:  # an exception that leaves the task
        assert isinstance(executor.submit(int, "x").exception(timeout=STARTUP), ValueError)
    (tmp_path / "brittle.py").write_text(MODEL_THAT_BREAKS_IN_TRAINING)
    broken = tiny(name="broken", epochs=2, model={"name": f"{tmp_path / 'brittle.py'}:build"})
    paths = [write_pair(tmp_path, 2)[0], str(write_config(tmp_path, broken, "broken.yaml"))]
    inputs = compare.collect_inputs(paths)
    out = tmp_path / "out"
    comparison = compare.compare(inputs, [0], out, 2, "final_val_loss", pool=ray_executor.pool())
    runs = {result.name: result for result in comparison.results}
    assert runs["step"].status == "completed"
    assert runs["broken"].status == "failed"
    assert "broke while training" in runs["broken"].error
    assert Path(runs["broken"].path).parent == out / "runs"  # its files came back too
    assert str(ray_scratch) not in runs["broken"].error


def test_a_killed_worker_fails_its_own_run_and_the_comparison_completes(ray_scratch, tmp_path):
    from lrsched_cli import ray_executor

    victim = write_config(tmp_path, tiny(name="victim", epochs=100_000), "victim.yaml")
    paths = [write_pair(tmp_path)[0], str(victim)]
    killed: list[int] = []
    killer = victim_killer(ray_scratch, f"lrsched-*/*victim*/{store.SUMMARY_FILE}", killed)
    killer.start()
    comparison = compare.compare(
        compare.collect_inputs(paths), [0], tmp_path / "out", 2, "final_val_loss",
        pool=ray_executor.pool(),
    )  # fmt: skip
    killer.join()
    assert killed, "the victim never trained in a worker's temporary directory"
    runs = {result.name: result for result in comparison.results}
    assert runs["step"].status == "completed"
    assert runs["victim"].status == "failed"
    assert "Ray lost the task (WorkerCrashedError)" in runs["victim"].error
    document = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted(run["status"] for run in document["runs"]) == ["completed", "failed"]


def test_a_run_of_1000_epochs_comes_back_whole(ray_scratch, tmp_path):
    from lrsched_cli import ray_executor

    config = tiny(
        name="long", epochs=1000, data={"name": "moons", "n_samples": 40, "batch_size": 16}
    )
    from lrsched_cli.config import validate

    (job,) = compare.plan_jobs([validate(config)], [3])
    before = set(ray_scratch.glob("lrsched-*"))
    results = compare.execute([job], tmp_path / "runs", 1, pool=ray_executor.pool())
    (result,) = results
    assert result.status == "completed", result.error
    run = store.read_run(Path(result.path))
    assert len(run.epochs) == 1000 and run.epochs[-1]["epoch"] == 1000
    assert len(run.steps) == 1000 * 2  # 24 training samples in batches of 16
    assert run.summary["status"] == "completed" and run.summary["seed"] == 3
    files = {p.name for p in Path(result.path).iterdir()}
    expected = {"config.yaml", "metrics.csv", "steps.csv", "summary.json", "checkpoint.pt"}
    assert files == expected | {".lock"}
    import torch

    state = torch.load(Path(result.path) / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1000
    assert set(ray_scratch.glob("lrsched-*")) == before, "a run stayed behind on a worker"


HIDE_RAY = (
    "import sys\n"
    "sys.modules['ray'] = None\n"  # an import of ray now fails, as where it is not installed
    "from lrsched_cli.cli import app\n"
    "app(sys.argv[1:], prog_name='lrsched')\n"
)


def test_without_ray_the_executor_names_the_extra_and_exits_2(tmp_path):
    config = write_config(tmp_path, tiny())
    runs = tmp_path / "runs"
    command = [sys.executable, "-c", HIDE_RAY, "compare", str(config), "--executor", "ray"]
    result = subprocess.run([*command, "--runs-dir", str(runs)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "pip install 'lrsched[ray]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not runs.exists()


def test_an_unreachable_address_exits_2_within_seconds(tmp_path):
    pytest.importorskip("ray")
    config = write_config(tmp_path, tiny())
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "lrsched_cli", "compare", str(config), "--executor", "ray",
             "--address", address, "--runs-dir", str(tmp_path / "runs")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert f"--address {address}: no Ray head node answers" in result.stderr
        assert "Traceback" not in result.stderr
        assert time.monotonic() - started < 30
