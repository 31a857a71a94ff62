"""A tuned comparison's cost: `lrsched compare configs/compare/ --tune-lr --jobs 2`, timed whole.

    python bench/tuning.py [--lr-grid LOW:HIGH:N] [--tune-seeds 2] [--seeds 10] [--epochs N]
                           [--keep DIR]

With no options it times the command's defaults: 9 lrs per config around its own, 2 tuning
seeds, 10 comparison seeds: 140 runs.

Runs the command once, as a user would (a fresh `python -m lrsched_cli compare`), and reports
its wall time, the CPU time of the command and all its processes (the forkserver's workers are
not the command's children, so getrusage misses them: their /proc times are sampled every
0.1 s and the last sample of each counts, a slight undercount), the sum of the runs' own
train_seconds (tuning runs and fresh runs), and the share of the wall time outside training:
1 - train_seconds / (wall x jobs), the start-up, gathering, statistics and plots that the jobs'
training did not fill. `--keep DIR` keeps the comparison there and prints the command's output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def session_cpu(session: int) -> dict[int, float]:
    """user + system CPU seconds of every live process in `session`, by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        # after the name: state, ppid, pgrp, session, ..., utime (12), stime (13)
        if int(fields[3]) == session:
            found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


def wait_timed(process: subprocess.Popen, started: float) -> tuple[float, float]:
    """Wait for `process`, started in a session of its own at `started` (perf_counter): its wall
    time, and the CPU time of every process in its session."""
    cpu_by_pid: dict[int, float] = {}
    while process.poll() is None:
        cpu_by_pid.update(session_cpu(process.pid))
        time.sleep(0.1)
    return time.perf_counter() - started, sum(cpu_by_pid.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-grid", default=None, help="default: the command's own grid")
    parser.add_argument("--tune-seeds", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()

    runs_dir = args.keep or Path(tempfile.mkdtemp(prefix="lrsched-tuning-bench-"))
    command = [
        sys.executable, "-m", "lrsched_cli", "compare", str(ROOT / "configs" / "compare"),
        "--tune-lr", "--tune-seeds", str(args.tune_seeds),
        "--seeds", str(args.seeds), "--jobs", str(args.jobs), "--runs-dir", str(runs_dir),
    ]  # fmt: skip
    if args.lr_grid is not None:
        command += ["--lr-grid", args.lr_grid]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            command,
            stdout=stdout,
            stderr=stderr,
            text=True,
            env={**os.environ, "COLUMNS": "80"},
            start_new_session=True,
        )
        wall, cpu = wait_timed(process, started)
        stdout.seek(0)
        stderr.seek(0)
        output, errors = stdout.read(), stderr.read()
    if process.returncode != 0:
        sys.exit(f"the command failed ({process.returncode}):\n{errors}")
    out = max(runs_dir.glob("*-compare"), key=lambda path: path.stat().st_mtime)
    train = tuning_runs = fresh_runs = 0
    for summary in out.glob("*/*/summary.json"):
        found = json.loads(summary.read_text())
        train += found.get("train_seconds") or 0.0
        if summary.parent.parent.name == "tuning":
            tuning_runs += 1
        else:
            fresh_runs += 1
    outside = 1 - train / (wall * args.jobs)
    print(" ".join(command[2:]))
    print(f"runs: {tuning_runs} tuning + {fresh_runs} fresh = {tuning_runs + fresh_runs}")
    print(f"wall {wall:.1f} s, CPU {cpu:.1f} s (all processes), on {os.cpu_count()} cores")
    print(f"runs' train_seconds: {train:.1f} s in all, {train / args.jobs:.1f} s per job slot")
    print(f"share of the wall time outside training: {outside:.0%}")
    if args.keep:
        print(output, end="")
        print(errors, end="", file=sys.stderr)


if __name__ == "__main__":
    main()
