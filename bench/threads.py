"""How fast lrsched trains on one torch thread, on all of them, and on the count `auto` picks.

    python bench/threads.py [--repeats 3] [--epochs 6]

Three MLPs on 8,000 moons samples, from a toy one whose batch costs well under a MFLOP to one
that costs hundreds. Every setting runs in turn, in one process; the report gives per-epoch
medians (the first epoch of each run left out) and auto's time against the fastest setting.
Then a sweep of MLP widths and batch sizes times single optimizer steps on one thread and on
all of them: where the ratio falls below 1 is where `auto`'s FLOPS_PER_THREAD comes from.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

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


def step_seconds(model: nn.Module, batch: torch.Tensor, threads: int, steps: int) -> float:
    """The best mean time of one optimizer step (forward, backward, SGD) on `threads` threads."""
    torch.set_num_threads(threads)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    target = torch.zeros(len(batch), dtype=torch.long)
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(batch), target).backward()
            optimizer.step()
        best = min(best, (time.perf_counter() - started) / steps)
    return best


def sweep(cores: int, steps: int) -> None:
    """Where a second thread starts to pay: step times of MLPs 2-w-w-2 on 1 and on all threads,
    against the FLOPs of a batch's forward pass, the quantity `threads: auto` reads."""
    print(f"\nsweep: {steps} steps, best of 3; FLOPs of one forward pass, as `auto` counts them")
    print(f"{'MLP, batch':>24} {'MFLOP':>8} {'1 thr':>9} {f'{cores} thr':>9} {'ratio':>6}")
    for width, batch_size in itertools.product((64, 128, 192, 256, 512), (64, 256)):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2)
        )
        batch = torch.randn(batch_size, 2)
        flops = runner.forward_flops(model, batch)
        one, many = (step_seconds(model, batch, threads, steps) for threads in (1, cores))
        print(
            f"{f'2-{width}-{width}-2, {batch_size}':>24} {flops / 1e6:8.2f} "
            f"{one * 1e6:7.0f}us {many * 1e6:7.0f}us {many / one:6.2f}"
        )
    torch.set_num_threads(cores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=200, help="steps per timing in the sweep")
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
    if cores > 1:
        sweep(cores, args.steps)


if __name__ == "__main__":
    main()
