"""lrsched's training loop against a hand-written torch loop, and Lightning, doing the same work.

    python bench/overhead.py [--repeats 5] [--epochs 20] [--device cpu]
    python bench/overhead.py --whole-process [--repeats 5] [--epochs 150]

Both train an MLP 2->64->64->2 on 8,000 moons samples (6,400 train, 1,600 validation), batch
64, SGD with momentum and StepLR, validating every epoch, with the data on the device and
batches taken by slicing. They run alternately in one process; the report gives per-epoch
medians and the ratio.

--whole-process times whole commands instead, each in a process of its own: `lrsched run` with
its default settings, `lrsched run` with checkpoint_every 0, and the hand-written loop (on the
thread count lrsched picks, 1 here), each for 2 and for 2 + --epochs epochs. An epoch costs
the difference over --epochs, in wall time and in CPU time (user + system, all threads), so
start-up, plotting and the first epochs' one-off costs cancel out.
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

import torch
from hand_written import hand_written_epochs
from torch import nn

from lrsched_cli import runner, store
from lrsched_cli.config import validate

HAND = "hand_written.py"
LAUNCHER = """import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
process.returncode = os.waitstatus_to_exitcode(status)
print(usage.ru_maxrss)
sys.exit(process.returncode)
"""
QUICKSTART = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"
# Building any torch.optim optimizer imports torch._dynamo (torch's own _disable_dynamo).
BUILD_OPTIMIZER = "import torch; torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)"
# What `lrsched run` imports, matplotlib for its PNGs included, without training or drawing.
LRSCHED_IMPORTS = (
    "import lrsched_cli.cli, lrsched_cli.runner, lrsched_cli.plots, matplotlib.figure; "
    + BUILD_OPTIMIZER
)

CONFIG = {
    "name": "overhead",
    "seed": 0,
    # The hand-written loop's split: 6,400 train, 1,600 validation, no test split
    "data": {
        "name": "moons",
        "n_samples": 8000,
        "noise": 0.2,
        "batch_size": 64,
        "test_fraction": 0,
    },
    "model": {"name": "mlp", "hidden": [64, 64]},
    "optimizer": {"name": "SGD", "lr": 0.1, "momentum": 0.9},
    "scheduler": {"name": "StepLR", "step_size": 5, "gamma": 0.5},
    "checkpoint_every": 0,
}


def lrsched_epochs(epochs: int, device: str) -> list[float]:
    """Per-epoch seconds (train plus validation) as lrsched records them."""
    cfg = validate({**CONFIG, "epochs": epochs, "device": device})
    with tempfile.TemporaryDirectory() as runs:
        result = runner.run_experiment(cfg, Path(runs))
        return [row["seconds"] for row in store.read_run(result.path).epochs]


def lightning_epochs(epochs: int, device: str) -> list[float]:
    """The same model, data and schedule through Lightning's Trainer, as its users write it:
    DataLoaders over tensors, logging and checkpoints off."""
    import lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8000, 2, generator=generator)
    y = (x[:, 0] * x[:, 1] > 0).long()

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
            )
            self.loss_fn = nn.CrossEntropyLoss()

        def training_step(self, batch, _):
            return self.loss_fn(self.net(batch[0]), batch[1])

        def validation_step(self, batch, _):
            self.loss_fn(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
            return [optimizer], [scheduler]

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.seconds, self.started = [], 0.0

        def on_train_epoch_start(self, trainer, module):
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):  # after the epoch's validation
            self.seconds.append(time.perf_counter() - self.started)

    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=device,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
    )
    train = DataLoader(TensorDataset(x[:6400], y[:6400]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(x[6400:], y[6400:]), batch_size=1600)
    trainer.fit(Module(), train, val)
    return timer.seconds


def alternate(loops: dict, repeats: int, epochs_per_run: int, device: str):
    """Run the loops in turn, `repeats` rounds after one warm-up round; per-epoch and
    whole-run seconds for each."""
    epochs: dict[str, list[float]] = {name: [] for name in loops}
    runs: dict[str, list[float]] = {name: [] for name in loops}
    for repeat in range(repeats + 1):
        for name, loop in loops.items():
            started = time.perf_counter()
            seconds = loop(epochs_per_run, device)
            if repeat:
                runs[name].append(time.perf_counter() - started)
                epochs[name] += seconds[1:]  # epoch 1 pays one-off allocation costs
    return epochs, runs


def report(epochs: dict, runs: dict, name: str) -> None:
    per_epoch = statistics.median(epochs[name]) / statistics.median(epochs["hand-written"])
    whole = statistics.median(runs[name]) / statistics.median(runs["hand-written"])
    for each in (name, "hand-written"):
        print(
            f"{each:>14} {statistics.median(epochs[each]) * 1000:8.2f}ms "
            f"{statistics.median(runs[each]):9.3f}s"
        )
    print(f"{'ratio':>14} {per_epoch:10.3f} {whole:10.3f}   ({name} / hand-written)")


def command_seconds(command: list[str], repeats: int) -> float:
    """The median wall time of a whole command, start-up included."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def light_commands(repeats: int) -> None:
    """`lrsched --help` against importing typer and rich; `lrsched plot` of a finished run."""
    cli = [sys.executable, "-m", "lrsched_cli"]
    baseline = command_seconds([sys.executable, "-c", "import typer, rich"], repeats)
    help_seconds = command_seconds([*cli, "--help"], repeats)
    with tempfile.TemporaryDirectory() as runs:
        cfg = validate({**CONFIG, "epochs": 2, "device": "cpu"})
        run_dir = runner.run_experiment(cfg, Path(runs)).path
        plot_seconds = command_seconds([*cli, "plot", str(run_dir)], repeats)
    print(f"{'import typer, rich':>22} {baseline:7.3f}s")
    print(f"{'lrsched --help':>22} {help_seconds:7.3f}s  ({help_seconds / baseline:.2f}x)")
    print(f"{'lrsched plot RUN':>22} {plot_seconds:7.3f}s  (3 PNGs; no torch import)")
    print("compare --jobs 1 against --jobs 2: python bench/compare_speedup.py")


def peak_megabytes(command: list[str]) -> float:
    """The peak resident memory of a command's process (its maxrss), in MB. A small launcher
    starts it, because a child's maxrss starts from that of the process it was forked from."""
    launched = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, check=True
    )
    return int(launched.stdout) / (1024 * 1024 if sys.platform == "darwin" else 1024)


def peak_memory(repeats: int) -> None:
    """`lrsched run` on the quickstart config against `import torch` and a hand-written loop,
    each in a process of its own."""
    python = sys.executable
    with tempfile.TemporaryDirectory() as runs:
        commands = {
            "import torch": [python, "-c", "import torch"],
            "import torch, build an SGD optimizer": [python, "-c", BUILD_OPTIMIZER],
            "hand-written loop, 20 epochs": [python, str(Path(__file__).with_name(HAND))],
            "lrsched's imports, then build an SGD optimizer": [python, "-c", LRSCHED_IMPORTS],
            "lrsched run configs/quickstart.yaml": [
                *[python, "-m", "lrsched_cli", "run", str(QUICKSTART)],
                *["--runs-dir", runs, "--quiet"],
            ],
        }
        peaks = {
            name: statistics.median(peak_megabytes(command) for _ in range(repeats))
            for name, command in commands.items()
        }
    torch_alone, loop = peaks["import torch"], peaks["hand-written loop, 20 epochs"]
    print(f"peak memory, each in a process of its own (median of {repeats}):")
    for name, megabytes in peaks.items():
        print(
            f"{name:>46} {megabytes:6.0f} MB  {megabytes / torch_alone:.2f}x import torch, "
            f"{megabytes / loop:.2f}x the hand-written loop"
        )


def process_seconds(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, all its threads) of a command in a process of its
    own, start-up included."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise subprocess.CalledProcessError(os.waitstatus_to_exitcode(status), command)
    return wall, usage.ru_utime + usage.ru_stime


def whole_process(repeats: int, epochs: int) -> None:
    """Per-epoch wall and CPU time of whole commands: `lrsched run` with its defaults and with
    checkpoint_every 0, against the hand-written loop, each timed for 2 and 2 + `epochs` epochs
    in turn (the order rotates each round); an epoch costs the difference over `epochs`."""
    import yaml

    python = sys.executable
    with tempfile.TemporaryDirectory() as scratch:
        configs = {}
        for name, update in (("defaults", {}), ("never", {"checkpoint_every": 0})):
            config = {k: v for k, v in CONFIG.items() if k != "checkpoint_every"} | update
            configs[name] = Path(scratch) / f"{name}.yaml"
            configs[name].write_text(yaml.safe_dump({**config, "device": "cpu"}))
        lrsched = [python, "-m", "lrsched_cli", "run", "--runs-dir", scratch, "--quiet"]
        sides = {
            "lrsched run (defaults)": [*lrsched, str(configs["defaults"]), "--epochs"],
            "lrsched run, checkpoint_every: 0": [*lrsched, str(configs["never"]), "--epochs"],
            "hand-written loop": [python, str(Path(__file__).with_name(HAND)), "--threads", "1"]
            + ["--epochs"],
        }
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        names = list(sides)
        for repeat in range(repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in order:
                lengths = (2, 2 + epochs) if repeat % 2 == 0 else (2 + epochs, 2)
                timed = {n: process_seconds([*sides[name], str(n)]) for n in lengths}
                long, short = timed[2 + epochs], timed[2]
                rounds[name].append(((long[0] - short[0]) / epochs, (long[1] - short[1]) / epochs))
    hand = rounds["hand-written loop"]
    print(
        f"whole process, per epoch = (time of {2 + epochs} epochs - time of 2) / {epochs}; "
        f"medians of {repeats} rounds"
    )
    print(f"{'':>34} {'wall':>9} {'CPU':>9} {'wall ratio':>11} {'CPU ratio':>10}")
    for name, timings in rounds.items():
        wall = statistics.median(t[0] for t in timings)
        cpu = statistics.median(t[1] for t in timings)
        wall_ratio = wall / statistics.median(t[0] for t in hand)
        cpu_ratio = cpu / statistics.median(t[1] for t in hand)
        print(
            f"{name:>34} {wall * 1000:7.2f}ms {cpu * 1000:7.2f}ms {wall_ratio:11.3f} "
            f"{cpu_ratio:10.3f}"
        )
    for name in names[:2]:
        walls = sorted(t[0] / h[0] for t, h in zip(rounds[name], hand, strict=True))
        cpus = sorted(t[1] / h[1] for t, h in zip(rounds[name], hand, strict=True))
        print(
            f"{name:>34} per-epoch overhead ratio, round by round: wall "
            f"{walls[0]:.3f}-{walls[-1]:.3f}, CPU {cpus[0]:.3f}-{cpus[-1]:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lightning", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--whole-process",
        action="store_true",
        help="time whole commands, each in its own process; --epochs beyond the first 2",
    )
    args = parser.parse_args()
    if args.whole_process:
        whole_process(args.repeats, args.epochs)
        return
    if args.lightning:  # in a process of its own: importing Lightning slows later torch loops
        report(
            *alternate(
                {"Lightning": lightning_epochs, "hand-written": hand_written_epochs},
                args.repeats,
                args.epochs,
                args.device,
            ),
            "Lightning",
        )
        return
    print(
        f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
        f"{args.repeats} runs x {args.epochs} epochs each, medians"
    )
    print(f"{'':>14} {'per epoch':>10} {'whole run':>10}")
    report(
        *alternate(
            {"lrsched": lrsched_epochs, "hand-written": hand_written_epochs},
            args.repeats,
            args.epochs,
            args.device,
        ),
        "lrsched",
    )
    print(
        "whole run: lrsched includes building from the config, the run directory and its "
        "per-epoch writes"
    )
    light_commands(args.repeats)
    peak_memory(max(1, args.repeats // 2))
    try:
        import lightning  # noqa: F401
    except ImportError:
        print("(pytorch-lightning is not installed: its loop is left out)")
        return
    command = [
        sys.executable,
        __file__,
        "--lightning",
        "--repeats",
        str(args.repeats),
        "--epochs",
        str(args.epochs),
        "--device",
        args.device,
    ]
    lightning = subprocess.run(command, capture_output=True, text=True, check=True)
    print("Lightning, in its own process against a hand-written loop timed there:")
    print(lightning.stdout, end="")


if __name__ == "__main__":
    main()
