"""Train one config: seed the random streams, build the components, run the loop, store epochs.

The loop calls the schedule's two hooks and nothing else about it: how a scheduler is stepped
is schedule.py's."""

from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lrsched_cli import __version__, store
from lrsched_cli.build import build_optimizer
from lrsched_cli.checkpoint import (
    CheckpointPolicy,
    check_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from lrsched_cli.config import ConfigError, EarlyStoppingConfig, ExperimentConfig, load_config
from lrsched_cli.data import CLASSIFICATION, Dataset, build_dataset, resolve_data
from lrsched_cli.models import build_model, resolve_model
from lrsched_cli.planning import Plan, plan_schedule
from lrsched_cli.schedule import Schedule
from lrsched_cli.schedule_config import check_extensible, resolve_scheduler

# Separate streams, so that two configs differing only in their schedule see identical data,
# weights and batches for the same seed, and nothing one component draws shifts another. New
# streams go at the end: a stream's seed depends on its index here.
STREAMS = ("data", "split", "init", "batches", "dropout", "test")
EVAL_BATCH = 4096
# Every lint but the unclamped lambda's reads the config: rehearsing the first 1,000 epochs
# bounds the wait before training (torch's step() costs ~0.1 ms).
LINT_HORIZON = 1000
# Whether another thread pays for waking it depends on a batch's forward-pass FLOPs: in
# bench/threads.py's sweep on 2 cores, 2 threads were 4% slower than 1 at 0.6 MFLOP, even
# from 2 to 5 MFLOP, and 11-29% faster from 8.5 MFLOP on. `auto` adds one per 4 MFLOP.
FLOPS_PER_THREAD = 4e6


class RunFailed(RuntimeError):
    """Training raised; the run directory keeps every finished epoch and says `failed`."""

    def __init__(self, run_dir: Path, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.run_dir = run_dir


class RunObserver:
    """Hooks for showing progress (the CLI passes any object with these methods); no-ops here."""

    def on_start(self, run_dir: Path, epochs: int, steps_per_epoch: int) -> None: ...

    def on_batches(
        self, epoch: int, done: int, total: int, lr: float, loss: RunningLoss
    ) -> None: ...

    def on_epoch(self, record: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class RunningLoss:
    """The epoch's train loss so far, left on the device: mean() is a host sync, so the loop
    never calls it and an observer calls it only when it shows the value, during on_batches
    (the sum goes on growing after)."""

    total: torch.Tensor
    samples: int

    def mean(self) -> float:
        return self.total.item() / self.samples


@dataclass
class RunResult:
    path: Path
    status: str  # completed | interrupted | diverged | failed
    summary: dict[str, Any]


@dataclass
class Experiment:
    """Everything a run needs, built and checked before any file is written."""

    config: ExperimentConfig  # resolved: every default filled in
    device: torch.device
    dataset: Dataset
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule  # steps torch's scheduler; `none` is a constant lr
    batch_generator: torch.Generator
    dropout_seed: int
    threads: int  # torch CPU threads while training
    # Dropout's stream: the global one for a run alone; in a fused group, a generator per run
    dropout_generator: torch.Generator | None = None

    @property
    def steps_per_epoch(self) -> int:
        return count_steps(self.dataset, self.config.data.batch_size)

    @property
    def metric_columns(self) -> list[str]:
        groups = len(self.optimizer.param_groups)
        columns = ["epoch", "lr", *(f"lr_{i}" for i in range(1, groups)), "train_loss", "val_loss"]
        if self.dataset.task == CLASSIFICATION:
            columns.append("val_accuracy")
        return [*columns, *self.schedule.columns, "seconds"]

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs, as torch's objects give it: model, optimizer, schedule, and the
        random streams' states."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.schedule.state_dict(),
            "batch_rng": self.batch_generator.get_state(),
            **self._dropout_states(),
        }

    def _dropout_states(self) -> dict[str, Any]:
        """Dropout's stream where a run alone keeps it: the global CPU generator's state, and on
        CUDA each device's. A fused run's own generator stands in for its device's."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
        generator = self.dropout_generator
        if generator is None or generator.device.type == "cpu":
            cpu = (generator or torch.random.default_generator).get_state()
            return {"dropout_rng": cpu, "cuda_rng": cuda}
        cuda[generator.device.index or 0] = generator.get_state()
        return {"dropout_rng": torch.get_rng_state(), "cuda_rng": cuda}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state)
        self.batch_generator.set_state(state["batch_rng"].cpu())
        torch.set_rng_state(state["dropout_rng"].cpu())
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])


def derive_seed(seed: int, stream: str) -> int:
    """An independent seed for one named random stream of a run."""
    return int(np.random.SeedSequence([seed, STREAMS.index(stream)]).generate_state(1)[0])


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; an unavailable device is a config error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps and mps.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: {name!r} asked for, but this torch ({torch.__version__}) "
                "sees no CUDA device; use device: auto or cpu",
                "device",
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {name!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)",
                "device",
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "device: 'mps' asked for, but MPS is not available; use auto or cpu", "device"
        )
    return device


def count_steps(dataset: Dataset, batch_size: int) -> int:
    """Optimizer steps per epoch: the last batch may be short."""
    return math.ceil(len(dataset.x_train) / batch_size)


def resolve_experiment(cfg: ExperimentConfig) -> tuple[ExperimentConfig, Dataset]:
    """Fill in every default (data and model options, interval, total_steps) and build the
    data, whose size sets the steps per epoch; raises ConfigError."""
    data_cfg = resolve_data(cfg.data)
    dataset = build_dataset(
        data_cfg,
        derive_seed(cfg.seed, "data"),
        derive_seed(cfg.seed, "split"),
        derive_seed(cfg.seed, "test"),
    )
    steps_per_epoch = count_steps(dataset, data_cfg.batch_size)
    scheduler_cfg = resolve_scheduler(cfg.scheduler, cfg.epochs, steps_per_epoch, dataset.task)
    early = cfg.early_stopping
    if early and early.monitor == "val_accuracy" and dataset.task != CLASSIFICATION:
        raise ConfigError(
            "early_stopping.monitor: val_accuracy exists only for classification",
            "early_stopping.monitor",
        )
    resolved = cfg.model_copy(
        update={"data": data_cfg, "model": resolve_model(cfg.model), "scheduler": scheduler_cfg}
    )
    return resolved, dataset


def plan_experiment(cfg: ExperimentConfig, horizon: int | None = None) -> Plan:
    """The lr the run will use, epoch by epoch and step by step, with warnings; trains nothing.

    With `horizon`, only the first epochs are rehearsed (torch's step() costs ~0.1 ms)."""
    resolved, dataset = resolve_experiment(cfg)
    return plan_schedule(resolved, count_steps(dataset, resolved.data.batch_size), horizon)


def prepare(cfg: ExperimentConfig) -> Experiment:
    """Resolve the config and build data, model, optimizer and scheduler; raises ConfigError."""
    device = resolve_device(cfg.device)
    resolved, dataset = resolve_experiment(cfg)
    steps_per_epoch = count_steps(dataset, resolved.data.batch_size)
    model_cfg = resolved.model
    with torch.random.fork_rng(devices=[]):  # weights from their own stream, global RNG untouched
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = build_model(model_cfg, dataset.input_shape, dataset.n_outputs)
        # In this stream too: lazy modules create their weights on the first forward pass.
        flops = rehearse_model(model, dataset.x_train[: resolved.data.batch_size], model_cfg.name)
    model.to(device)
    optimizer = build_optimizer(model.parameters(), cfg.optimizer)
    schedule = Schedule(optimizer, resolved.scheduler, resolved.epochs, steps_per_epoch)
    return Experiment(
        config=resolved,
        device=device,
        dataset=dataset,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        batch_generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "batches")),
        dropout_seed=derive_seed(cfg.seed, "dropout"),
        threads=choose_threads(cfg.threads, flops, device),
    )


def rehearse_model(model: nn.Module, batch: torch.Tensor, name: str) -> int:
    """One forward pass over a real batch on the CPU, where the model was built, before any
    file is written: a model that does not fit the data is a config error. Returns its FLOPs."""
    try:
        return forward_flops(model, batch)
    except Exception as exc:  # a user's factory can fail in any way
        raise ConfigError(
            f"model.name: {name!r} fails on a batch of shape {list(batch.shape)}: "
            f"{type(exc).__name__}: {exc}",
            "model.name",
        ) from exc


def choose_threads(threads: int | str, flops: float, device: torch.device) -> int:
    """`auto`: one thread, and one more per FLOPS_PER_THREAD of a batch's forward pass, at most
    as many as torch may use now (all cores, or a compare worker's share). Off the CPU, the CPU
    threads do little and stay as they are."""
    if threads != "auto":
        return threads
    available = torch.get_num_threads()
    if device.type != "cpu":
        return available
    return min(available, 1 + int(flops // FLOPS_PER_THREAD))


def forward_flops(model: nn.Module, batch: torch.Tensor) -> int:
    """The FLOPs of one forward pass over `batch`, counted by torch's FlopCounterMode,
    leaving the model's state (batch-norm statistics, mode) and the random streams untouched."""
    from torch.utils.flop_counter import FlopCounterMode

    training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                model(batch)
    finally:
        model.train(training)
    return counter.get_total_flops()


def run_experiment(
    cfg: ExperimentConfig,
    runs_dir: Path,
    observer: RunObserver | None = None,
    label: str | None = None,
    lint: Callable[[list[str]], None] | None = None,
    stop: StopEvent | None = None,
) -> RunResult:
    """Train `cfg` and write its run directory under `runs_dir`: `<timestamp>-<name>`, or
    `label` alone (a comparison's `<config>-seed<N>`, in a directory of its own). `lint`
    gets the schedule's warnings before the directory exists, and may raise to stop the run
    there. Setting `stop` (from another thread or process) stops the run
    after its current batch, as a Ctrl-C does; a Ctrl-C here sets it.

    Example:
        >>> result = run_experiment(load_config(Path("configs/quickstart.yaml")), Path("runs"))
    """
    experiment = prepare(cfg)
    warnings = lint_experiment(experiment)
    if lint is not None:
        lint(warnings)
    path = store.create_run_dir(runs_dir, label or cfg.name, timestamp=label is None)
    with store.locked(path):
        writer = store.RunWriter(path, experiment.config.to_dict(), experiment.metric_columns)
        summary = {**start_summary(experiment), "warnings": warnings}
        return _execute(experiment, path, writer, [], summary, observer, (0, 0), stop)


def lint_experiment(experiment: Experiment) -> list[str]:
    """The schedule's warnings, from a rehearsal of its first LINT_HORIZON epochs."""
    return plan_schedule(experiment.config, experiment.steps_per_epoch, LINT_HORIZON).warnings


def resume_experiment(
    run_dir: Path,
    observer: RunObserver | None = None,
    epochs: int | None = None,
    lint: Callable[[list[str]], None] | None = None,
) -> RunResult:
    """Continue a killed, interrupted or failed run in its own directory, from its checkpoint;
    with `epochs`, train a run (finished or not) on to that many epochs. Everything is checked
    before any file changes; `lint` gets the warnings, a restart from epoch 1 among them."""
    with store.locked(run_dir):
        history = store.read_run(run_dir)
        _check_resumable(run_dir, history, epochs)
        cfg = load_config(run_dir / store.CONFIG_FILE, epochs=epochs)
        if "test_fraction" not in history.config.get("data", {}):  # saved before test splits
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"test_fraction": 0})})
        if epochs is not None:  # the saved config is resolved: its schedule is as it ran
            check_extensible(cfg.scheduler, epochs)
        experiment = prepare(cfg)
        warnings = lint_experiment(experiment) if epochs is not None else []
        # The thread count it started with: another count can round matrix products differently.
        experiment.threads = history.summary.get("threads", experiment.threads)
        state = read_checkpoint(run_dir, experiment.device)
        if state is not None:
            check_checkpoint(
                state,
                built=experiment.state_dict(),
                schedule=experiment.schedule,
                history=history,
                epochs=experiment.config.epochs,
                steps_per_epoch=experiment.steps_per_epoch,
            )
        if epochs is not None and (state is None or state["epoch"] != len(history.epochs)):
            raise ConfigError(
                f"--epochs {epochs}: {run_dir} has no checkpoint of its last epoch "
                f"({len(history.epochs)}), so it cannot be trained on; start a new run"
            )
        if state is None and history.epochs:
            warnings.append(_restart_notice(run_dir, len(history.epochs)))
        if lint is not None:
            lint(warnings)
        return _continue(experiment, run_dir, history, state, epochs is not None, observer)


def _continue(experiment, run_dir, history, state, extended: bool, observer) -> RunResult:
    """Reopen the run's files at the checkpoint (or afresh, the old rows moved aside) and train."""
    columns = experiment.metric_columns
    if state is None:
        for name in (store.METRICS_FILE, store.STEPS_FILE):
            if (run_dir / name).exists():
                store.move_aside(run_dir / name)
        writer = store.RunWriter(run_dir, experiment.config.to_dict(), columns)
        done = (0, 0)
    else:
        experiment.load_state_dict(state)
        done = (state["epoch"], state["step"])
        config = experiment.config.to_dict() if extended else {}
        writer = store.RunWriter(run_dir, config, columns, resume_at=done)
    # The test metrics belong to the final weights of a completed run: these will be others.
    ended = ("error", "stopped_early_at", "test_loss", "test_accuracy")
    earlier = {k: v for k, v in history.summary.items() if k not in ended}
    summary = {**earlier, **start_summary(experiment), "resumed_from_epoch": done[0]}
    summary["started_unix"] = earlier.get("started_unix", summary["started_unix"])
    if extended:
        summary["warnings"] = lint_experiment(experiment)
    records = history.epochs[: done[0]]
    return _execute(experiment, run_dir, writer, records, summary, observer, done)


def _restart_notice(run_dir: Path, epochs: int) -> str:
    return (
        f"{run_dir} has no checkpoint: it starts again from epoch 1; its {epochs} earlier "
        f"epoch(s) are moved aside to {store.METRICS_FILE}.before-restart"
    )


RESUMABLE = store.RESUMABLE
RESUMABLE_REASONS = {
    "running": "it is still running",
    "completed": "it completed all its epochs; give --epochs N to train it on to N epochs",
    "diverged": "it diverged; resuming would repeat that (lower the lr and start again)",
}


def _check_resumable(run_dir: Path, history: store.RunHistory, epochs: int | None) -> None:
    status = store.effective_status(history.summary)
    extensible = epochs is not None and status == "completed"
    if status not in RESUMABLE and not extensible:
        reason = RESUMABLE_REASONS.get(status, f"its status is {status!r}")
        raise ConfigError(f"--resume {run_dir}: cannot resume: {reason}")
    if epochs is None:
        return
    if epochs <= len(history.epochs):
        raise ConfigError(
            f"--epochs {epochs}: {run_dir} has done {len(history.epochs)} epochs already; "
            "give more to train it on"
        )
    if "stopped_early_at" in history.summary:
        raise ConfigError(
            f"--epochs {epochs}: {run_dir} stopped early at epoch "
            f"{history.summary['stopped_early_at']}; early stopping would stop it again"
        )


def _execute(experiment, path, writer, records, summary, observer, start, stop=None) -> RunResult:
    """Train from `start` (epochs, steps done), keeping each epoch on disk as it ends."""
    lane = Lane(experiment, path, writer, records, summary, observer, start)
    run_lanes([lane], SingleEngine(lane), stop)
    if lane.failure is not None:
        raise lane.failure
    return lane.result


class Lane:
    """One run in the loop: its experiment, its files, the epochs it has kept, and how it
    ended. The loop trains every lane alike, one alone or a fused group's many."""

    def __init__(self, experiment, path, writer, records, summary, observer, start):
        self.experiment, self.path, self.writer = experiment, path, writer
        self.records, self.summary = list(records), summary
        self.observer = observer or RunObserver()
        self.start, self.step = start, start[1]
        cfg = experiment.config
        self.checkpoints = CheckpointPolicy(cfg.checkpoint_every, cfg.epochs)
        self.stopper = EarlyStopping.replay(cfg.early_stopping, self.records)
        self.events = None
        # From the rows as they are kept: the events `export tensorboard` writes
        if cfg.tensorboard:
            from lrsched_cli.tensorboard import RunEvents

            self.observer = self.events = RunEvents(path, self.observer)
        self.ended: str | None = None  # the loop's word for how training ended
        self.failure: RunFailed | None = None
        self.sync: Callable[[], None] = lambda: None  # the engine puts its weights in the model

    @property
    def result(self) -> RunResult:
        return RunResult(self.path, self.summary["status"], self.summary)

    def begin(self) -> None:
        self.writer.write_summary(self.summary)
        cfg = self.experiment.config
        self.observer.on_start(self.path, cfg.epochs, self.experiment.steps_per_epoch)

    def end_epoch(self, epoch, lrs, step_lrs, sums, seconds) -> None:
        """Record one trained and validated epoch, hand it to the schedule, keep it on disk,
        and say whether the run ends here."""
        experiment = self.experiment
        record = _epoch_record(experiment, epoch, lrs, *sums)
        record.update(experiment.schedule.after_epoch(record))
        finite = math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"])
        record["seconds"] = seconds
        self.keep_epoch(record, [(self.step + i + 1, epoch, lr) for i, lr in enumerate(step_lrs)])
        self.step += len(step_lrs)
        if not finite and experiment.config.on_nonfinite == "stop":
            self.ended = "diverged"
        elif self.stopper is not None and self.stopper.update(record):
            self.ended = "stopped_early"
        elif epoch >= experiment.config.epochs:
            self.ended = "completed"

    def keep_epoch(self, record: dict[str, Any], steps: list[tuple[int, int, float]]) -> None:
        self.writer.append_epoch(record, steps)
        self.records.append(record)
        if self.checkpoints.due(record["epoch"]):
            with self.checkpoints.timed():
                self.sync()
                state = self.experiment.state_dict()
                save_checkpoint(state, self.path, record["epoch"], steps[-1][0])
        self.writer.write_summary(_finish_summary(self.summary, self.records))
        self.observer.on_epoch(record)

    def finish(self) -> None:
        """The run's last word once training ended: its status, and the test split's metrics
        for a completed run."""
        status = self.ended
        if status == "stopped_early":
            self.summary["stopped_early_at"] = self.records[-1]["epoch"]
            status = "completed"
        if status == "completed":  # diverged or interrupted weights are no result to test
            self.sync()
            self.summary.update(evaluate_test(self.experiment))
        self.summary["status"] = status

    def fail(self, exc: BaseException) -> None:
        self.summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        self.failure = RunFailed(self.path, exc)
        self.failure.__cause__ = exc

    def close(self) -> None:
        _finish_summary(self.summary, self.records)
        try:
            _close(self.writer, self.summary, self.path)
        except RunFailed as exc:
            self.failure = self.failure or exc
        if self.events is not None:
            self.events.close(self.summary)


def run_lanes(lanes: list[Lane], engine: Engine, stop: StopEvent | None = None) -> None:
    """Train the lanes through `engine` until each has ended, then close each run's files;
    every way a run can end is in its summary (and a failure in `lane.failure`)."""
    try:  # from the first summary on, a Ctrl-C ends every unfinished run as `interrupted`
        for lane in lanes:
            lane.begin()
        with torch_threads(lanes[0].experiment.threads):
            train(lanes, engine, stop)
    except KeyboardInterrupt:
        for lane in lanes:
            if lane.summary["status"] == "running":
                lane.summary["status"] = "interrupted"
    except Exception as exc:
        for lane in lanes:
            if lane.summary["status"] == "running":
                lane.fail(exc)
    finally:
        for lane in lanes:
            lane.close()


def _close(writer: store.RunWriter, summary: dict[str, Any], path: Path) -> None:
    """Close the run's files and write its last summary. On a full disk that can fail too:
    a failed run keeps the error that stopped it (it names the directory); a run that had
    ended well fails here, naming it."""
    try:
        writer.close()
    except OSError:
        pass  # every finished epoch was flushed as it ended
    try:
        writer.write_summary(summary)
    except OSError as exc:
        if summary["status"] != "failed":
            raise RunFailed(path, exc) from exc


class Engine(Protocol):
    """What trains the lanes' epochs: one model alone, or a fused group's stacked models."""

    def begin(self) -> None: ...

    def keep(self, lanes: list[Lane]) -> None: ...

    def train_epoch(self, epoch: int, stop: _StopFlag) -> list[tuple[torch.Tensor, list[float]]]:
        """Each kept lane's summed train loss (left on the device) and the lr of each step."""

    def evaluate(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each kept lane's summed validation loss and correct count, left on the device."""


def train(lanes: list[Lane], engine: Engine, stop_event: StopEvent | None = None) -> None:
    """The loop: train every batch, validate, then hand each run's epoch to its schedule,
    until every lane has ended (`lane.ended`); an ended lane leaves the engine. The schedule
    decides what its two hooks do (schedule.py); the engine, how a batch is trained."""
    epoch = lanes[0].start[0]
    engine.begin()
    with _stop_after_batch_on_sigint(stop_event) as stop:
        for lane in lanes:
            if lane.start[0] >= lane.experiment.config.epochs:
                lane.ended = "completed"  # killed after its last epoch was kept
                lane.finish()
        while active := [lane for lane in lanes if lane.ended is None]:
            epoch += 1
            engine.keep(active)
            started = time.perf_counter()
            lrs = [_group_lrs(lane.experiment.optimizer) for lane in active]  # before any step
            trained = engine.train_epoch(epoch, stop)
            if stop.requested:
                for lane in active:  # the unfinished epoch is not recorded
                    lane.ended = "interrupted"
                    lane.finish()
                return
            validated = engine.evaluate()
            # One host sync per epoch: every sum stayed on the device until here.
            sums = [(loss, *val) for (loss, _), val in zip(trained, validated, strict=True)]
            totals = torch.stack([value for row in sums for value in row]).view(-1, 3).tolist()
            seconds = time.perf_counter() - started
            ended = zip(active, lrs, trained, totals, strict=True)
            for lane, lane_lrs, (_, step_lrs), row in ended:
                lane.end_epoch(epoch, lane_lrs, step_lrs, row, seconds)
                if lane.ended is not None:
                    lane.finish()


def _group_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [float(group["lr"]) for group in optimizer.param_groups]


class SingleEngine:
    """One run's model and torch optimizer, trained batch by batch."""

    def __init__(self, lane: Lane):
        self.lane, self.experiment = lane, lane.experiment
        self.data = to_device(self.experiment.dataset, self.experiment.device)

    def begin(self) -> None:
        if self.lane.start == (0, 0):
            torch.manual_seed(self.experiment.dropout_seed)  # the global stream is dropout's alone

    def keep(self, lanes: list[Lane]) -> None:
        pass  # one lane: the loop ends when it does

    def train_epoch(self, epoch: int, stop: _StopFlag) -> list[tuple[torch.Tensor, list[float]]]:
        return [_train_epoch(self.experiment, self.data, epoch, stop, self.lane.observer)]

    def evaluate(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [_evaluate(self.experiment.model, self.data, self.experiment.dataset.task)]


class EarlyStopping:
    """Stop when the monitored metric has not improved by `min_delta` for `patience` epochs."""

    def __init__(self, cfg: EarlyStoppingConfig):
        self.cfg = cfg
        self.sign = -1 if cfg.monitor == "val_accuracy" else 1  # minimise sign * value
        self.best: float | None = None
        self.bad_epochs = 0

    @classmethod
    def replay(cls, cfg: EarlyStoppingConfig | None, records) -> EarlyStopping | None:
        """A stopper that has seen `records`: resuming needs no extra state in the checkpoint."""
        if cfg is None:
            return None
        stopper = cls(cfg)
        for record in records:
            stopper.update(record)
        return stopper

    def update(self, record: dict[str, Any]) -> bool:
        value = record[self.cfg.monitor]
        improved = math.isfinite(value) and (
            self.best is None or self.sign * value < self.sign * self.best - self.cfg.min_delta
        )
        if improved:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.cfg.patience


def _train_epoch(experiment, data, epoch, stop, observer) -> tuple[torch.Tensor, list[float]]:
    model, optimizer, schedule = experiment.model, experiment.optimizer, experiment.schedule
    batch_size, total = experiment.config.data.batch_size, experiment.steps_per_epoch
    loss_fn = loss_function(experiment.dataset.task)
    order = torch.randperm(len(data.x_train), generator=experiment.batch_generator)
    order = order.to(data.x_train.device, non_blocking=True)
    x_epoch, y_epoch = data.x_train[order], data.y_train[order]  # one gather; batches are views
    report_every = max(1, total // 20)
    loss_sum = torch.zeros((), device=data.x_train.device)
    step_lrs = []
    model.train()
    for index in range(total):
        x = x_epoch[index * batch_size : (index + 1) * batch_size]
        y = y_epoch[index * batch_size : (index + 1) * batch_size]
        step_lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        schedule.after_optimizer_step()
        loss_sum += loss.detach() * len(x)
        if (index + 1) % report_every == 0:
            seen = min((index + 1) * batch_size, len(x_epoch))
            observer.on_batches(epoch, index + 1, total, step_lrs[-1], RunningLoss(loss_sum, seen))
        if stop.requested:
            break
    return loss_sum, step_lrs


def _evaluate(model: nn.Module, data: Dataset, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    return evaluate_split(model, data.x_val, data.y_val, task)


def evaluate_test(experiment: Experiment) -> dict[str, float]:
    """The final weights' loss (and accuracy) on the test split: once, when a run completes.
    The split reaches the device only here, so nothing before can have trained on it."""
    dataset = experiment.dataset
    if dataset.x_test is None:
        return {}
    x, y = (tensor.to(experiment.device) for tensor in (dataset.x_test, dataset.y_test))
    experiment.model.eval()
    loss_sum, correct = evaluate_split(experiment.model, x, y, dataset.task)
    loss_total, n_correct = torch.stack([loss_sum, correct]).tolist()
    # Weights that went non-finite under `on_nonfinite: continue` have no test loss (null)
    loss = loss_total / len(x)
    metrics = {"test_loss": loss if math.isfinite(loss) else None}
    if dataset.task == CLASSIFICATION:
        metrics["test_accuracy"] = n_correct / len(x)
    return metrics


@torch.no_grad()
def evaluate_split(
    model: Callable[[torch.Tensor], torch.Tensor],
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    task: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss and correct count of `model` (in eval mode) over a split, in EVAL_BATCH
    slices, left on the device."""
    loss_fn = loss_function(task)
    loss_sum = torch.zeros((), device=x_all.device)
    correct = torch.zeros((), device=x_all.device)
    for start in range(0, len(x_all), EVAL_BATCH):
        x, y = x_all[start : start + EVAL_BATCH], y_all[start : start + EVAL_BATCH]
        output = model(x)
        loss_sum += loss_fn(output, y) * len(x)
        if task == CLASSIFICATION:
            correct += (output.argmax(dim=1) == y).sum()
    return loss_sum, correct


def loss_function(task: str) -> nn.Module:
    return nn.CrossEntropyLoss() if task == CLASSIFICATION else nn.MSELoss()


def to_device(dataset: Dataset, device: torch.device) -> Dataset:
    """The whole dataset lives on the device: batches are slices, never host-to-device copies."""
    pin = device.type == "cuda"
    return Dataset(
        *(
            (tensor.pin_memory() if pin else tensor).to(device, non_blocking=pin)
            for tensor in (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val)
        ),
        dataset.task,
        dataset.n_outputs,
    )


def _epoch_record(experiment, epoch, lrs, train_total, val_total, n_correct) -> dict[str, Any]:
    dataset = experiment.dataset
    record: dict[str, Any] = {"epoch": epoch, "lr": lrs[0]}
    record.update({f"lr_{i}": lr for i, lr in enumerate(lrs[1:], start=1)})
    record["train_loss"] = train_total / len(dataset.x_train)
    record["val_loss"] = val_total / len(dataset.x_val)
    if dataset.task == CLASSIFICATION:
        record["val_accuracy"] = n_correct / len(dataset.x_val)
    return record


def start_summary(experiment: Experiment) -> dict[str, Any]:
    cfg = experiment.config
    return {
        "name": cfg.name,
        "status": "running",
        "epochs_planned": cfg.epochs,
        "seed": cfg.seed,
        "device": str(experiment.device),
        "threads": experiment.threads,
        "fused": False,  # trained alone; a fused group says so, and its size
        "group_size": 1,
        "torch_version": torch.__version__,
        "lrsched_version": __version__,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "started_unix": time.time(),
    }


def _finish_summary(summary: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Fill in what the finished epochs say: best and final val loss, lr cuts, timings."""
    from lrsched_cli.stats import count_lr_cuts  # stats imports scipy only inside functions

    summary["epochs_done"] = len(records)
    summary["updated_unix"] = time.time()  # a heartbeat: when the last epoch was kept
    summary["wall_seconds"] = summary["updated_unix"] - summary["started_unix"]
    if records:
        finite = [r for r in records if math.isfinite(r["val_loss"])]
        # No finite val loss: there is no best epoch (null, as stats.run_metrics says it)
        best = min(finite, key=lambda r: r["val_loss"]) if finite else {}
        summary.update(
            best_val_loss=best.get("val_loss"),
            best_epoch=best.get("epoch"),
            final_val_loss=records[-1]["val_loss"],
            final_epoch=records[-1]["epoch"],
            train_seconds=sum(r["seconds"] for r in records if "seconds" in r),
            # ReduceLROnPlateau with 0 cuts trained at a constant lr; compare says how often
            lr_cuts=count_lr_cuts([r["lr"] for r in records]),
        )
        nonfinite = [
            r["epoch"] for r in records if not math.isfinite(r["train_loss"] + r["val_loss"])
        ]
        if nonfinite:
            summary["nonfinite_epochs"] = nonfinite
        if "val_accuracy" in records[-1]:
            summary["final_val_accuracy"] = records[-1]["val_accuracy"]
            summary["best_val_accuracy"] = max(r["val_accuracy"] for r in records)
    return summary


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's thread count is the process's: set it for the run, then put it back."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class StopEvent(Protocol):
    """What stops a run from outside it: a threading.Event, or a flag shared between processes."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


class _StopFlag:
    """Stop requested by a Ctrl-C in this process, or by whoever else holds `event`."""

    def __init__(self, event: StopEvent | None = None):
        self.event = event
        self._requested = False

    @property
    def requested(self) -> bool:
        return self._requested or (self.event is not None and self.event.is_set())

    def request(self) -> None:
        self._requested = True
        if self.event is not None:
            self.event.set()


@contextmanager
def _stop_after_batch_on_sigint(event: StopEvent | None = None) -> Iterator[_StopFlag]:
    """The first Ctrl-C finishes the current batch and stops; a second one stops at once.

    A process that ignores SIGINT (a compare worker, whose parent decides) keeps ignoring it.
    """
    flag = _StopFlag(event)
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        previous = signal.getsignal(signal.SIGINT)

        def request_stop(signum, frame):
            if flag.requested:
                raise KeyboardInterrupt
            flag.request()

        signal.signal(signal.SIGINT, request_stop)
        try:
            yield flag
        finally:
            signal.signal(signal.SIGINT, previous)
    else:
        yield flag
