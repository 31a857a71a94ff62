"""Fused training against runs alone: whole commands, and the training loop itself.

    python bench/fuse.py whole [--repeats 3] [--jobs 2]      # compare 5 configs x 10 seeds
    python bench/fuse.py tuned [--repeats 1] [--jobs 2]      # compare --tune-lr (140 runs)
    python bench/fuse.py loop [--sizes 1,5,15,50] [--epochs 30] [--repeats 3] [--device cpu]

`whole` and `tuned` run `lrsched compare configs/compare/` as a user would (a fresh process),
fused (the default) and with `--fuse off`, alternately, and report each one's wall time and
the CPU time of all its processes (bench/tuning.py's sampling of /proc, by session).

`loop` trains K runs of the quickstart model (K seeds of configs/quickstart.yaml, one torch
thread) as one fused group, and the same runs alone one after another, each in a process of its
own. It reports per epoch (training plus validation, the median of the last 8) the wall time,
the speed-up K x alone / fused by wall and by CPU time (CPU per epoch: a run of --epochs less
one of 2 epochs, so that set-up cancels out), and the peak resident memory (VmHWM). Alone, at
most 5 runs are timed and the rest counted at their median: runs alone share nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuning import wait_timed

ROOT = Path(__file__).resolve().parent.parent
COMPARE = ROOT / "configs" / "compare"
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def timed_command(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (all the command's processes) of one fresh command."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        start_new_session=True,
    )
    wall, cpu = wait_timed(process, started)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{process.stderr.read()}")
    return wall, cpu


def commands(args: argparse.Namespace, runs_dir: Path) -> dict[str, list[str]]:
    base = [sys.executable, "-m", "lrsched_cli", "compare", str(COMPARE), "--jobs", str(args.jobs)]
    base += ["--runs-dir", str(runs_dir)]
    if args.mode == "tuned":
        base += ["--tune-lr"]
    return {"fused": [*base, "--fuse", "auto"], "alone": [*base, "--fuse", "off"]}


def whole(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="lrsched-fuse-bench-") as runs:
        timings: dict[str, list[tuple[float, float]]] = {"fused": [], "alone": []}
        for _ in range(args.repeats):
            for name, command in commands(args, Path(runs)).items():  # alternately
                timings[name].append(timed_command(command))
    print(" ".join(commands(args, Path("RUNS"))["fused"][2:]), f"x {args.repeats}, alternating")
    for name, found in timings.items():
        walls, cpus = zip(*found, strict=True)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        each = ", ".join(f"{w:.1f}" for w in walls)
        print(f"{name:6} wall {wall:6.1f} s   CPU {cpu:6.1f} s   (walls: {each})")
    ratio = statistics.median(w for w, _ in timings["alone"]) / statistics.median(
        w for w, _ in timings["fused"]
    )
    cpu_ratio = statistics.median(c for _, c in timings["alone"]) / statistics.median(
        c for _, c in timings["fused"]
    )
    print(f"fused is {ratio:.2f}x faster by wall time, {cpu_ratio:.2f}x by CPU time")


def loop(args: argparse.Namespace) -> None:
    print(
        f"quickstart model, {args.epochs} epochs, 1 thread, {args.device}; per epoch, "
        f"median of {args.repeats} alternating measurements"
    )
    header = "   K  alone (K runs)    fused      speed-up      peak memory"
    print(header + "\n" + "-" * len(header))
    for size in (int(k) for k in args.sizes.split(",")):
        fused = _median([measure(size, True, args) for _ in range(args.repeats)])
        alone = _median([measure(min(size, 5), False, args) for _ in range(args.repeats)])
        scale = size / min(size, 5)
        wall_alone, cpu_alone = alone["wall"] * scale, alone["cpu"] * scale
        print(
            f"{size:4}  {wall_alone * 1e3:7.0f} ms  {fused['wall'] * 1e3:7.0f} ms"
            f"  {wall_alone / fused['wall']:5.2f}x wall {cpu_alone / fused['cpu']:5.2f}x CPU"
            f"  {fused['peak'] / 2**20:5.0f} MiB fused, {alone['peak'] / 2**20:4.0f} MiB alone"
        )


def _median(found: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(one[key] for one in found) for key in found[0]}


def measure(size: int, fused: bool, args: argparse.Namespace) -> dict[str, float]:
    """`size` runs fused or alone, in child processes: the median epoch's wall time, CPU time
    per epoch (the difference between a run of --epochs and one of 2, over the epochs between:
    set-up cancels out), and the longer run's peak memory."""
    found = [_child(size, fused, epochs, args.device) for epochs in (args.epochs, 2)]
    cpu = (found[0]["cpu"] - found[1]["cpu"]) / (args.epochs - 2)
    return {"wall": found[0]["wall"], "cpu": cpu, "peak": found[0]["peak"]}


def _child(size: int, fused: bool, epochs: int, device: str) -> dict[str, float]:
    child = [sys.executable, __file__, "child", str(size), str(int(fused)), str(epochs), device]
    output = subprocess.run(child, capture_output=True, text=True, check=True).stdout
    return json.loads(output.splitlines()[-1])


def child(size: int, fused_group: bool, epochs: int, device: str) -> None:
    import torch

    from lrsched_cli import fused, runner, store
    from lrsched_cli.config import load_config

    torch.set_num_threads(1)
    base = load_config(QUICKSTART).model_copy(
        update={"epochs": epochs, "device": device, "threads": 1, "checkpoint_every": 0}
    )
    jobs = [
        (base.model_copy(update={"seed": seed}), f"quickstart-seed{seed}") for seed in range(size)
    ]
    with tempfile.TemporaryDirectory() as runs:
        cpu = time.process_time()
        if fused_group:
            paths = [result.path for result in fused.run_group(jobs, Path(runs))]
        else:
            paths = [
                runner.run_experiment(cfg, Path(runs), label=label).path for cfg, label in jobs
            ]
        cpu = time.process_time() - cpu
        epochs_by_run = [store.read_run(path).epochs for path in paths]
    # The group's epochs are shared; alone, the runs' epochs add up.
    per_epoch = [statistics.median(row["seconds"] for row in rows[-8:]) for rows in epochs_by_run]
    wall = per_epoch[0] if fused_group else sum(per_epoch)
    peak = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    print(json.dumps({"wall": wall, "cpu": cpu, "peak": peak}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        size, fused_group, epochs, device = sys.argv[2:6]
        child(int(size), fused_group == "1", int(epochs), device)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["whole", "tuned", "loop"])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sizes", default="1,5,15,50")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.mode == "tuned" else 3)
    if args.mode == "loop":
        loop(args)
        return
    whole(args)


if __name__ == "__main__":
    main()
