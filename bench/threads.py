"""How fast lrsched trains on one torch thread, on all of them, and on the count `auto` picks.

    python bench/threads.py [--repeats 3] [--epochs 6]

Three MLPs on 8,000 moons samples, from a toy one whose batch costs well under a MFLOP to one
that costs hundreds. Every setting runs in turn, in one process; the report gives per-epoch
medians (the first epoch of each run left out) and auto's time against the fastest setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from lrsched_cli import runner, store
from lrsched_cli.config import validate

MODELS = {
    "toy MLP 2-64-64-2, batch 64": ([64, 64], 64),
    "MLP 2-256-256-2, batch 64": ([256, 256], 64),
    "MLP 2-512-512-2, batch 256": ([512, 512], 256),
}


def config(hidden: list[int], batch_size: int, threads: int | str, epochs: int):
    return validate(
        {
            "name": "threads",
            "epochs": epochs,
            "device": "cpu",
            "threads": threads,
            "data": {"name": "moons", "n_samples": 8000, "batch_size": batch_size},
            "model": {"name": "mlp", "hidden": hidden},
            "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
            "scheduler": {"name": "StepLR", "step_size": 2, "gamma": 0.5},
            "checkpoint_every": 0,
        }
    )


def epoch_seconds(cfg, runs: Path) -> tuple[list[float], int]:
    result = runner.run_experiment(cfg, runs)
    seconds = [row["seconds"] for row in store.read_run(result.path).epochs]
    return seconds[1:], result.summary["threads"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    cores = torch.get_num_threads()
    settings: list[int | str] = sorted({1, cores}) + ["auto"]
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, torch default {cores} threads")
    header = " ".join(
        f"{setting if setting == 'auto' else f'{setting} thr':>10}" for setting in settings
    )
    print(f"{'':>28} {header}  auto/best")
    with tempfile.TemporaryDirectory() as runs:
        for name, (hidden, batch_size) in MODELS.items():
            times: dict[int | str, list[float]] = {setting: [] for setting in settings}
            chosen = None
            for _ in range(args.repeats):
                for setting in settings:
                    cfg = config(hidden, batch_size, setting, args.epochs)
                    seconds, threads = epoch_seconds(cfg, Path(runs))
                    times[setting] += seconds
                    chosen = threads if setting == "auto" else chosen
            medians = {setting: statistics.median(times[setting]) for setting in settings}
            best = min(medians[setting] for setting in settings if setting != "auto")
            cells = " ".join(f"{medians[setting] * 1000:8.1f}ms" for setting in settings)
            print(f"{name:>28} {cells}  {medians['auto'] / best:.2f} (auto: {chosen} thr)")


if __name__ == "__main__":
    main()
