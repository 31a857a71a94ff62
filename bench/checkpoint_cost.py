"""What checkpointing costs on the quickstart config: time spent saving, as a share of the run.

    python bench/checkpoint_cost.py [--repeats 5]

Runs the config with checkpoint_every 0 (never), 1 (every epoch) and auto, alternating, in one
process, and reports the median run time and the time spent inside save_checkpoint. Whole-run
times on a shared 2-core machine vary by more than the effect; the time inside the saves is the
direct measure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from lrsched_cli import runner
from lrsched_cli.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    args = parser.parse_args()
    base = load_config(args.config, device="cpu")
    saving: list[float] = []
    save = runner.save_checkpoint

    def timed_save(*save_args):
        started = time.perf_counter()
        save(*save_args)
        saving.append(time.perf_counter() - started)

    runner.save_checkpoint = timed_save
    results: dict[str, list[tuple[float, float, int]]] = {"0": [], "1": [], "auto": []}
    for repeat in range(args.repeats + 1):  # the first round warms up and is dropped
        for every in results:
            saving.clear()
            cfg = base.model_copy(
                update={"checkpoint_every": int(every) if every != "auto" else every}
            )
            with tempfile.TemporaryDirectory() as runs:
                started = time.perf_counter()
                runner.run_experiment(cfg, Path(runs))
                total = time.perf_counter() - started
            if repeat:
                results[every].append((total, sum(saving), len(saving)))
    print(f"{args.config.name}, {base.epochs} epochs, median of {args.repeats} runs each")
    print(f"{'checkpoint_every':>16} {'run':>8} {'saves':>6} {'saving':>9} {'share':>7}")
    for every, rows in results.items():
        total = statistics.median(r[0] for r in rows)
        spent = statistics.median(r[1] for r in rows)
        count = statistics.median(r[2] for r in rows)
        print(f"{every:>16} {total:7.3f}s {count:6.0f} {spent * 1000:7.1f}ms {spent / total:7.1%}")


if __name__ == "__main__":
    main()
