"""The one owner of stepping: a Schedule wraps torch's scheduler objects for a resolved
scheduler block and knows everything about how it is stepped.

- the interval: after every optimizer step, or once per epoch after validation;
- the metric an epoch schedule is fed (ReduceLROnPlateau's), never a non-finite one;
- a linear warmup in front of any kind, ReduceLROnPlateau included;
- ReduceLROnPlateau's own counters, as the plateau_* columns;
- the lr_event words, on the row of the first epoch trained at the new lr;
- the momentum (or beta1) that OneCycleLR and CyclicLR cycle;
- its state_dict, lr expressions left out (they are rebuilt from the config text).

The training loop and `lrsched plan` both call its two hooks, after_optimizer_step() and
after_epoch(record), and nothing else steps a scheduler. What differs between kinds sits in
schedule_kinds.KINDS; the number of times it is stepped is schedule_config.run_length().
"""

from __future__ import annotations

import math
from typing import Any

from lrsched_cli import schedule_kinds
from lrsched_cli.config import SchedulerConfig
from lrsched_cli.schedule_config import cycles_momentum, run_length, warmup_length

PLATEAU_COLUMNS = ("plateau_best", "plateau_bad_epochs", "plateau_cooldown")


class Schedule:
    """A resolved scheduler block, built on `optimizer` for a run of `epochs` epochs of
    `steps_per_epoch` optimizer steps. Building it sets the optimizer's lr (and momentum) for
    the first step, as torch's schedulers do: record the lr after it is built."""

    def __init__(self, optimizer, block: SchedulerConfig, epochs: int, steps_per_epoch: int):
        self.optimizer, self.block = optimizer, block
        self.length = run_length(block.interval, epochs, steps_per_epoch)
        kind = schedule_kinds.kind(block.name)
        if block.name == "none":
            self.scheduler = None
        else:
            schedule_kinds.check_expressions(block, range(self.length + 1))
            self.scheduler = _with_warmup(optimizer, block)
        self.per_step = self.scheduler is not None and block.interval == "step"
        self.per_epoch = self.scheduler is not None and not self.per_step
        self.monitor = block.monitor if kind.needs_metric else None
        self.cycles_momentum = momentum_of(optimizer) is not None and cycles_momentum(block)
        self.pending_event: str | None = None  # why the next epoch's lr differs
        self._epoch_momentum: float | None = None
        self._epoch_started = False

    @property
    def columns(self) -> list[str]:
        """The metrics.csv columns after_epoch() fills in, in their order."""
        columns = ["momentum"] if self.cycles_momentum else []
        if self.per_epoch:
            columns.append("lr_event")
        if self.monitor is not None:
            columns += PLATEAU_COLUMNS
        return columns

    def after_optimizer_step(self) -> None:
        """Call after every optimizer.step(): a step schedule steps (never before the
        optimizer, so torch's order warning cannot appear)."""
        if not self._epoch_started:  # what the epoch's first step used, before any change
            self._epoch_started = True
            self._epoch_momentum = momentum_of(self.optimizer) if self.cycles_momentum else None
        if self.per_step:
            self.scheduler.step()

    def after_epoch(self, record: dict[str, Any]) -> dict[str, Any]:
        """Call after each epoch's validation with its record (`epoch`, `lr`, the metrics).
        An epoch schedule steps once, fed the monitored metric where it takes one; a
        non-finite metric is not fed (it would count as a bad epoch) and that step is skipped.
        Returns this epoch's columns: the momentum it trained with, the event that explains its
        lr, and the plateau counters after the step."""
        columns: dict[str, Any] = {}
        if self.cycles_momentum:
            columns["momentum"] = self._epoch_momentum
        if self.per_epoch:
            columns["lr_event"] = self.pending_event
        self.pending_event = None
        self._epoch_started = False
        fed = self.monitor is None or math.isfinite(record[self.monitor])
        if not (self.per_epoch and fed):
            return columns
        before = plateau_state(self.scheduler) or {}
        if self.monitor is None:
            self.scheduler.step()
        else:
            self.scheduler.step(record[self.monitor])
        new_lr = float(self.optimizer.param_groups[0]["lr"])
        self.pending_event = self._explain(record["epoch"], before, new_lr, record["lr"])
        after = plateau_state(self.scheduler)
        if after is not None:
            columns.update(zip(PLATEAU_COLUMNS, after.values(), strict=True))
        return columns

    def _explain(self, epoch: int, before: dict, new_lr: float, old_lr: float) -> str | None:
        """Why the step at the end of `epoch` changed the lr (None: it did not, or it changes
        every epoch, which needs no explaining)."""
        if new_lr == old_lr:
            return None
        warmup = warmup_length(self.block.warmup)
        if warmup and epoch == warmup:
            return "warmup end"
        if warmup and epoch < warmup:
            return None
        explain = schedule_kinds.kind(self.block.name).explain
        if explain is None:
            return None
        ratio = f"x{new_lr / old_lr:.3g}" if old_lr else f"to {new_lr:.3g}"
        return explain(self.block, epoch, before, ratio)

    def state_dict(self) -> dict[str, Any]:
        """torch's scheduler state, without its lr expressions, and the pending event."""
        state = None if self.scheduler is None else _without_lambdas(self.scheduler.state_dict())
        return {"scheduler": state, "pending_event": self.pending_event}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.pending_event = state.get("pending_event")

    def state_problems(self, saved: Any) -> list[str]:
        """Why a saved state_dict() cannot be loaded into this schedule (none: it can)."""
        if self.scheduler is None or saved is None:
            if self.scheduler is None and saved is None:
                return []
            return ["its scheduler is not the config's"]
        if not isinstance(saved, dict) or set(saved) != set(self.scheduler.state_dict()):
            return [f"its scheduler state is not a {type(self.scheduler).__name__}'s"]
        return []


def _with_warmup(optimizer, block: SchedulerConfig):
    """The block's torch scheduler, after torch's LinearLR from start_factor to 1 where it has
    a warmup: joined by torch's SequentialLR, or by WarmupThen where SequentialLR cannot join
    them (it refuses ReduceLROnPlateau, and steps a nested composite with an epoch argument
    the composite does not take)."""
    if block.warmup is None:
        return schedule_kinds.build(optimizer, block)
    from torch.optim.lr_scheduler import LinearLR, SequentialLR

    length = warmup_length(block.warmup)
    kind = schedule_kinds.kind(block.name)
    main = schedule_kinds.build(optimizer, block.model_copy(update={"warmup": None}))
    warmup = LinearLR(optimizer, start_factor=block.warmup.start_factor, total_iters=length)
    if kind.needs_metric or kind.composite:
        return WarmupThen(warmup, main, length, fed=kind.needs_metric)
    return SequentialLR(optimizer, [warmup, main], milestones=[length])


class WarmupThen:
    """Steps a warmup scheduler `length` times, then the main one, which continues from the lr
    the warmup reached. A main scheduler fed a metric is not fed the warmup epochs': their
    losses say nothing of a plateau."""

    def __init__(self, warmup, main, length: int, fed: bool):
        self.warmup, self.main, self.length, self.fed = warmup, main, length, fed
        self.steps_done = 0
        # The state keys of earlier versions' checkpoints (which held a warmup before
        # ReduceLROnPlateau only), so that they resume unchanged.
        self._main_key = "plateau" if fed else "main"

    @property
    def optimizer(self):
        return self.warmup.optimizer

    def step(self, metrics: float | None = None) -> None:
        if self.steps_done < self.length:
            self.warmup.step()
        elif self.fed:
            self.main.step(metrics)
        else:
            self.main.step()
        self.steps_done += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs_done": self.steps_done,
            "warmup": self.warmup.state_dict(),
            self._main_key: self.main.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_done = state["epochs_done"]
        self.warmup.load_state_dict(state["warmup"])
        self.main.load_state_dict(state[self._main_key])


def plateau_state(scheduler) -> dict[str, Any] | None:
    """ReduceLROnPlateau's own counters (best, bad epochs, cooldown left), or None."""
    plateau = getattr(scheduler, "main", scheduler)  # behind a warmup: WarmupThen
    if not hasattr(plateau, "num_bad_epochs"):
        return None
    return {
        "best": float(plateau.best),
        "bad_epochs": int(plateau.num_bad_epochs),
        "cooldown": int(plateau.cooldown_counter),
    }


def momentum_of(optimizer) -> float | None:
    """SGD's momentum, or Adam's beta1: what OneCycleLR and CyclicLR cycle."""
    group = optimizer.param_groups[0]
    if "momentum" in group:
        return float(group["momentum"])
    if "betas" in group:
        return float(group["betas"][0])
    return None


def _without_lambdas(state: Any) -> Any:
    """torch stores a callable object's attributes under `lr_lambdas`; lrsched rebuilds its
    expressions from the config text instead, so store None (load_state_dict skips None)."""
    if isinstance(state, dict):
        return {
            key: [None] * len(value) if key == "lr_lambdas" else _without_lambdas(value)
            for key, value in state.items()
        }
    if isinstance(state, list):
        return [_without_lambdas(item) for item in state]
    return state
