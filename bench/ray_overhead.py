"""The same comparison on the local pool and on a local Ray with 2 CPUs: what Ray costs.

    python bench/ray_overhead.py [--epochs 40] [--seeds 2]

4 configs x seeds, each variant in a fresh process (as a user's command would be). Reported:

- wall time of the whole comparison, and the CPU time of that process and all it started;
- for Ray, apart: its start-up (`ray.init` with 2 CPUs and the first task's worker), and its
  per-task overhead (the round trip of empty tasks on a warm Ray);
- the training inside the jobs (the sum of the runs' own seconds), the same work either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

SCHEDULERS = [
    {"name": "StepLR", "step_size": 3, "gamma": 0.5},
    {"name": "ExponentialLR", "gamma": 0.9},
    {"name": "CosineAnnealingLR", "T_max": 10},
    {"name": "OneCycleLR", "max_lr": 0.3},
]
EMPTY_TASKS = 200
TICKS = os.sysconf("SC_CLK_TCK")


class TreeCpu:
    """CPU seconds of a process and every process it starts (Ray's raylet and workers are not
    this process's children to wait for, so rusage misses them): /proc sampled every 0.1 s."""

    def __init__(self, root: int):
        self.root, self.seen, self._done = root, {}, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.1):
            parents, times = {}, {}
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents[int(entry)] = int(fields[1])
                times[int(entry)] = (int(fields[11]) + int(fields[12])) / TICKS
            for pid, seconds in times.items():
                ancestor = pid
                while ancestor not in (self.root, 0, 1) and ancestor in parents:
                    ancestor = parents[ancestor]
                if ancestor == self.root:
                    self.seen[pid] = max(self.seen.get(pid, 0.0), seconds)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return sum(self.seen.values())


def write_configs(directory: Path, epochs: int) -> list[str]:
    paths = []
    for scheduler in SCHEDULERS:
        config = {
            "name": scheduler["name"],
            "device": "cpu",
            "epochs": epochs,
            "data": {"name": "moons", "n_samples": 4000, "batch_size": 64},
            "model": {"name": "mlp", "hidden": [64, 64]},
            "optimizer": {"name": "SGD", "lr": 0.1, "momentum": 0.9},
            "scheduler": scheduler,
        }
        path = directory / f"{scheduler['name']}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        paths.append(str(path))
    return paths


def one(variant: str, paths: list[str], seeds: int, out: Path) -> dict:
    """In a fresh process: the comparison on `variant`; timings as JSON."""
    from lrsched_cli import compare

    inputs = compare.collect_inputs(paths)
    found: dict = {}
    started = time.perf_counter()
    if variant == "local":
        comparison = compare.compare(inputs, list(range(seeds)), out, 2, "final_val_loss")
    else:
        import ray

        from lrsched_cli import ray_executor

        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
        ray.get(ray.remote(lambda: None).remote())  # the first worker, as a comparison needs one
        found["ray_startup_s"] = time.perf_counter() - started
        noop = ray.remote(num_cpus=1)(lambda: None)
        ray.get([noop.remote() for _ in range(20)])  # warm: both CPUs' workers exist
        timed = time.perf_counter()
        ray.get([noop.remote() for _ in range(EMPTY_TASKS)])
        found["ray_per_task_ms"] = (time.perf_counter() - timed) / EMPTY_TASKS * 1000 * 2
        started = time.perf_counter()
        comparison = compare.compare(
            inputs, list(range(seeds)), out, 2, "final_val_loss", pool=ray_executor.pool()
        )
        found["compare_s"] = time.perf_counter() - started
        ray.shutdown()
        started -= found["ray_startup_s"]
    found["wall_s"] = time.perf_counter() - started
    found["training_s"] = sum(result.seconds for result in comparison.results)
    found["runs"] = [result.status for result in comparison.results].count("completed")
    return found


def measure(variant: str, paths: list[str], seeds: int, out: Path) -> dict:
    command = [sys.executable, __file__, "--one", variant, "--seeds", str(seeds), "--out", str(out)]
    process = subprocess.Popen([*command, *paths], stdout=subprocess.PIPE, text=True)
    cpu = TreeCpu(process.pid)
    stdout, _ = process.communicate()
    found = json.loads(stdout.strip().splitlines()[-1])
    found["cpu_s"] = cpu.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--one", choices=["local", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.paths, args.seeds, args.out)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_configs(Path(scratch), args.epochs)
        found = {
            variant: measure(variant, paths, args.seeds, Path(scratch) / variant)
            for variant in ("local", "ray")
        }
    jobs = len(SCHEDULERS) * args.seeds
    print(f"{len(SCHEDULERS)} configs x {args.seeds} seeds = {jobs} runs of {args.epochs} epochs")
    print(f"{'':24}{'wall s':>9}{'CPU s':>9}{'training s':>12}{'runs':>6}")
    for variant, label in (("local", "local pool (--jobs 2)"), ("ray", "local Ray (2 CPUs)")):
        row = found[variant]
        print(
            f"{label:24}{row['wall_s']:9.1f}{row['cpu_s']:9.1f}{row['training_s']:12.1f}"
            f"{row['runs']:>4}/{jobs}"
        )
    ray = found["ray"]
    print(f"Ray start-up (init + first worker): {ray['ray_startup_s']:.1f} s")
    print(f"Ray per-task overhead (empty task, per CPU): {ray['ray_per_task_ms']:.1f} ms")
    print(f"Ray comparison after start-up: {ray['compare_s']:.1f} s")


if __name__ == "__main__":
    main()
