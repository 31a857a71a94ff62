"""lrsched compare with --jobs 2 against --jobs 1: 4 configs x 2 seeds, whole commands timed.

    python bench/compare_speedup.py [--repeats 3]

Two workloads: runs of a few seconds each, and tiny runs where start-up dominates. Each
command runs as a user would run it (a fresh `python -m lrsched_cli compare`), alternating
--jobs 1 and --jobs 2, and the report gives median wall times and the speed-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SCHEDULERS = [
    {"name": "StepLR", "step_size": 3, "gamma": 0.5},
    {"name": "ExponentialLR", "gamma": 0.9},
    {"name": "CosineAnnealingLR", "T_max": 10},
    {"name": "OneCycleLR", "max_lr": 0.3},
]
WORKLOADS = {
    "runs of a few seconds": {"epochs": 40, "data": {"name": "moons", "n_samples": 10000}},
    "tiny runs": {"epochs": 3, "data": {"name": "moons", "n_samples": 200}},
}


def write_configs(directory: Path, workload: dict) -> list[str]:
    paths = []
    for scheduler in SCHEDULERS:
        config = {
            "name": scheduler["name"],
            "device": "cpu",
            **workload,
            "model": {"name": "mlp", "hidden": [64, 64]},
            "optimizer": {"name": "SGD", "lr": 0.1, "momentum": 0.9},
            "scheduler": scheduler,
        }
        config["data"] = {**config["data"], "batch_size": 64}
        path = directory / f"{scheduler['name']}.yaml"
        path.write_text(yaml.safe_dump(config))
        paths.append(str(path))
    return paths


def time_compare(configs: list[str], jobs: int, runs_dir: Path) -> float:
    command = [
        sys.executable,
        "-m",
        "lrsched_cli",
        "compare",
        *configs,
        "--seeds",
        "2",
        "--jobs",
        str(jobs),
        "--runs-dir",
        str(runs_dir),
        "--json",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; 4 configs x 2 seeds; median of {args.repeats} each")
    print(f"{'workload':>22} {'--jobs 1':>9} {'--jobs 2':>9} {'speed-up':>9}")
    with tempfile.TemporaryDirectory() as scratch:
        for name, workload in WORKLOADS.items():
            directory = Path(scratch) / name.replace(" ", "-")
            directory.mkdir()
            configs = write_configs(directory, workload)
            times: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.repeats):
                for jobs in times:
                    times[jobs].append(time_compare(configs, jobs, directory / "runs"))
            one, two = statistics.median(times[1]), statistics.median(times[2])
            print(f"{name:>22} {one:8.2f}s {two:8.2f}s {one / two:8.2f}x")


if __name__ == "__main__":
    main()
