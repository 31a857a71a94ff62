"""The LR range test: train a throwaway copy of a config's model while the lr grows, one
optimizer step per lr, and keep the loss curve, where it stopped and what each rule suggests.

The config's data, model, optimizer and seed streams are used; its scheduler is not: the test
sets the lr itself, step by step. The model and optimizer are local and thrown away.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lrsched_cli import __version__, runner, store
from lrsched_cli.build import build_optimizer
from lrsched_cli.config import ExperimentConfig
from lrsched_cli.lr_rules import (
    BETA,
    DEFAULT_RULE,
    DIVERGE,
    Grid,
    RangeCurve,
    SmoothedLoss,
    StopRule,
    peak_lr_key,
    suggest,
    write_curve,
)

OnStep = Callable[[int, int, float, float], None]  # step, steps, lr, smoothed loss


@dataclass
class FindLrResult:
    path: Path
    status: str  # completed | interrupted
    summary: dict[str, Any]


def find_lr(
    cfg: ExperimentConfig,
    runs_dir: Path,
    grid: Grid | None = None,
    on_step: OnStep | None = None,
    stop: runner.StopEvent | None = None,
) -> FindLrResult:
    """Run the range test on `cfg` and write `runs_dir/<timestamp>-<name>-find-lr/`:
    lr_find.csv, summary.json (the PNG is the caller's: plots.plot_lr_find). A Ctrl-C stops
    after the current step and keeps the curve so far.

    Example:
        >>> result = find_lr(load_config(Path("configs/quickstart.yaml")), Path("runs"))
    """
    grid = grid or Grid()
    experiment = runner.prepare(cfg)
    path = store.create_run_dir(runs_dir, f"{cfg.name}-find-lr")
    curve = RangeCurve(grid)
    started = time.time()
    try:
        status = sweep(experiment, curve, on_step, stop)
    except Exception as exc:
        summary = summarise(experiment, curve, "failed", started)
        summary["error"] = f"{type(exc).__name__}: {exc}"
        write_curve(path, curve, summary)
        raise runner.RunFailed(path, exc) from exc
    summary = summarise(experiment, curve, status, started)
    write_curve(path, curve, summary)
    return FindLrResult(path, status, summary)


def valley_lr(cfg: ExperimentConfig, grid: Grid | None = None) -> float | None:
    """The valley rule's lr for `cfg` from a range test that writes nothing, or None when the
    curve gives none (too short, flat): where a sweep of peak lrs can be centred."""
    curve = RangeCurve(grid or Grid())
    experiment = runner.prepare(cfg)
    sweep(experiment, curve)
    found = suggest(curve.column("lr"), curve.column("smoothed_loss"))
    return next(s.lr for s in found if s.rule == DEFAULT_RULE)


def sweep(
    experiment: runner.Experiment,
    curve: RangeCurve,
    on_step: OnStep | None = None,
    stop_event: runner.StopEvent | None = None,
) -> str:
    """Step through the grid, one batch per lr, filling `curve`; returns the status."""
    lrs = curve.grid.lrs()
    data = runner.to_device(experiment.dataset, experiment.device)
    model, loss_fn = experiment.model, runner.loss_function(experiment.dataset.task)
    # A fresh optimizer: the one prepare() made has already been moved by the config's
    # scheduler (LambdaLR scales its lr, OneCycleLR rewrites lr and momentum at construction).
    optimizer = build_optimizer(model.parameters(), experiment.config.optimizer)
    batches = _cycle_batches(data, experiment.config.data.batch_size, experiment.batch_generator)
    smoothing, stop_rule = SmoothedLoss(BETA), StopRule()
    curve.stop = {"step": None, "lr": None, "reason": "end_of_grid", "detail": "the grid ended"}
    model.train()
    cuda = [experiment.device] if experiment.device.type == "cuda" else []
    # The global stream is dropout's: seeded as a run seeds it, and put back afterwards.
    with runner.torch_threads(experiment.threads), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(experiment.dropout_seed)
        with runner._stop_after_batch_on_sigint(stop_event) as stop:
            try:
                for step, lr in enumerate(lrs, start=1):
                    value = _train_step(model, optimizer, loss_fn, next(batches), lr)
                    smoothed = smoothing.add(value)
                    row = {"step": step, "lr": lr, "loss": value, "smoothed_loss": smoothed}
                    curve.rows.append(row)
                    if on_step is not None:
                        on_step(step, len(lrs), lr, smoothed)
                    stopped = stop_rule.check(step, value, smoothed)
                    if stopped is not None:
                        _stopped_at(curve, *stopped)
                        break
                    if stop.requested:
                        _stopped_at(curve, "interrupted", "Ctrl-C")
                        return "interrupted"
            except KeyboardInterrupt:  # a second Ctrl-C stops mid-step: the rows so far stand
                _stopped_at(curve, "interrupted", "Ctrl-C")
                return "interrupted"
    if stop_rule.off_at is not None:
        curve.notes.append(
            f"the {DIVERGE:g} x best stop rule is off from step {stop_rule.off_at}: the smoothed "
            "loss reached 0 or below, where a ratio to it means nothing; only a non-finite "
            "loss or the end of the grid stops the test"
        )
    if not curve.stop["step"] and curve.rows:
        curve.stop.update(step=curve.rows[-1]["step"], lr=curve.rows[-1]["lr"])
    return "completed"


def _train_step(model, optimizer, loss_fn, batch, lr: float) -> float:
    """One optimizer step at `lr` (every parameter group); the batch's loss before the step."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()  # the stop rule needs it now: one host sync per step


def _stopped_at(curve: RangeCurve, reason: str, detail: str) -> None:
    last = curve.rows[-1] if curve.rows else {"step": None, "lr": None}
    curve.stop = {"step": last["step"], "lr": last["lr"], "reason": reason, "detail": detail}


def _cycle_batches(
    data, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches in a run's order (the seed's batch stream), pass after pass."""
    while True:
        order = torch.randperm(len(data.x_train), generator=generator)
        order = order.to(data.x_train.device)
        x_all, y_all = data.x_train[order], data.y_train[order]
        for start in range(0, len(x_all), batch_size):
            yield x_all[start : start + batch_size], y_all[start : start + batch_size]


def summarise(
    experiment: runner.Experiment, curve: RangeCurve, status: str, started: float
) -> dict[str, Any]:
    """summary.json: the grid, where and why the test stopped, and every rule's suggestion."""
    cfg = experiment.config
    peak_key = peak_lr_key(cfg.scheduler.name)
    found = suggest(curve.column("lr"), curve.column("smoothed_loss"), peak_key)
    # Too short or flat: every rule is silent for one reason, said once at the top.
    reasons = {s.reason for s in found}
    shared = reasons.pop() if len(reasons) == 1 else None
    return {
        "kind": "find-lr",
        "name": cfg.name,
        "status": status,
        "grid": curve.grid.to_dict(),
        "beta": BETA,
        "stop_rule": f"smoothed loss above {DIVERGE:g} x its best so far, or a non-finite loss",
        "steps_done": len(curve.rows),
        "stopped": curve.stop,
        "suggestions": [s.to_dict() for s in found],
        "default_rule": DEFAULT_RULE,
        "peak_lr_key": peak_key,
        "no_suggestion": shared,
        "notes": curve.notes,
        "optimizer": cfg.optimizer.name,
        "scheduler": cfg.scheduler.name,
        "seed": cfg.seed,
        "device": str(experiment.device),
        "threads": experiment.threads,
        "torch_version": torch.__version__,
        "lrsched_version": __version__,
        "pid": os.getpid(),
        "wall_seconds": time.time() - started,
    }
