"""A run's checkpoint file: written whole or not at all, read back, and checked against a
freshly prepared run and its files before resume changes anything. What it holds is the
experiment's state_dict() (model, optimizer, schedule, random streams) and its position; the
policy says when a run saves one."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lrsched_cli.errors import ConfigError

if TYPE_CHECKING:
    from lrsched_cli.schedule import Schedule
    from lrsched_cli.store import RunHistory

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], run_dir: Path, epoch: int, step: int) -> None:
    """Replace the run's checkpoint with `state` after `epoch` and `step` (write, then rename):
    a kill leaves the previous one whole."""
    buffer = io.BytesIO()  # serialized first: a full disk then raises OSError, not torch's own
    torch.save({"epoch": epoch, "step": step, **state}, buffer)
    temporary = run_dir / f".{CHECKPOINT_FILE}.tmp"
    try:
        temporary.write_bytes(buffer.getbuffer())
        os.replace(temporary, run_dir / CHECKPOINT_FILE)
    except BaseException:  # a full disk: the previous checkpoint stays whole, and no debris
        temporary.unlink(missing_ok=True)
        raise


REQUIRED = ("epoch", "step", "model", "optimizer", "scheduler", "batch_rng", "dropout_rng")


def read_checkpoint(run_dir: Path, device: torch.device) -> dict[str, Any] | None:
    """The run's checkpoint, or None where it has none; one that cannot be read is a
    ConfigError, raised before anything in the run directory is changed."""
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; move it aside to start the run again")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch.load raises many kinds on a damaged file
        raise ConfigError(
            f"{path} cannot be read as a checkpoint ({type(exc).__name__}); nothing was changed"
        ) from None
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing:
        raise ConfigError(f"{path} is not an lrsched checkpoint: it has no {', '.join(missing)}")
    return state


def check_checkpoint(
    state: dict[str, Any],
    *,
    built: dict[str, Any],
    schedule: Schedule,
    history: RunHistory,
    epochs: int,
    steps_per_epoch: int,
) -> None:
    """What resume relies on, checked before it cuts any file: the checkpoint matches the
    state_dict() `built` from the config (state keys and shapes, optimizer and scheduler class,
    epoch in range of the run's `epochs`), and metrics.csv and steps.csv hold the checkpoint's
    epochs and steps, contiguous from 1."""
    problems = _position_problems(state, epochs, steps_per_epoch)
    problems += _state_problems("model", state["model"], built["model"])
    problems += _optimizer_problems(state["optimizer"], built["optimizer"])
    problems += schedule.state_problems(state["scheduler"])
    problems += _rows_problems(METRICS, [r.get("epoch") for r in history.epochs], state["epoch"])
    problems += _rows_problems(STEPS, [r.get("step") for r in history.steps], state["step"])
    if problems:
        raise ConfigError(
            f"--resume {history.path}: the checkpoint and the run's files disagree: "
            + "; ".join(problems[:6])
            + ". Nothing was changed"
        )


METRICS, STEPS = "metrics.csv", "steps.csv"


def _position_problems(state: dict[str, Any], epochs: int, steps_per_epoch: int) -> list[str]:
    epoch, step = state["epoch"], state["step"]
    if not isinstance(epoch, int) or not 1 <= epoch <= epochs:
        return [f"its epoch {epoch!r} is not between 1 and the run's {epochs}"]
    if step != epoch * steps_per_epoch:
        return [f"its step {step!r} is not epoch {epoch} x {steps_per_epoch} steps"]
    return []


def _state_problems(what: str, saved: Any, built: dict[str, Any]) -> list[str]:
    if not isinstance(saved, dict):
        return [f"its {what} state is not a state_dict"]
    missing, unexpected = sorted(set(built) - set(saved)), sorted(set(saved) - set(built))
    if missing or unexpected:
        return [f"its {what} has other parameters (missing {missing[:3]}, extra {unexpected[:3]})"]
    return [
        f"its {what} {key} has shape {list(saved[key].shape)}, the config builds "
        f"{list(built[key].shape)}"
        for key in built
        if hasattr(built[key], "shape") and getattr(saved[key], "shape", None) != built[key].shape
    ][:3]


def _optimizer_problems(saved: Any, built: dict[str, Any]) -> list[str]:
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or len(groups) != len(built["param_groups"]):
        return ["its optimizer has other parameter groups"]
    for old, new in zip(groups, built["param_groups"], strict=True):
        if not isinstance(old, dict) or set(old) != set(new):
            return ["its optimizer is another class, or has other arguments, than the config's"]
        if len(old["params"]) != len(new["params"]):
            return ["its optimizer holds another number of parameters"]
    return []


def _rows_problems(file: str, numbers: list[Any], needed: Any) -> list[str]:
    if numbers != list(range(1, len(numbers) + 1)):
        return [f"{file} does not number its rows 1, 2, 3, ..."]
    if isinstance(needed, int) and len(numbers) < needed:
        return [f"{file} holds {len(numbers)} rows, the checkpoint was saved after {needed}"]
    return []


class CheckpointPolicy:
    """When to save: every N epochs, never (0), or `auto`: at most once per AUTO_INTERVAL
    seconds of wall time (the run's start counts as a save), and never sooner than COST_RATIO
    times what the last save took, so a save slower than AUTO_INTERVAL / COST_RATIO still
    costs about 1/COST_RATIO of the run at most. A run of a few seconds gains nothing from
    resuming, and its metrics are kept per epoch anyway: it saves its final epoch alone. The
    final epoch is always saved (N or auto), so a finished run can be trained on with
    `--resume --epochs`."""

    AUTO_INTERVAL = 30.0  # seconds of wall time from the end of one automatic save to the next
    COST_RATIO = 20

    def __init__(self, every: int | str, epochs: int, clock: Callable[[], float] = time.monotonic):
        self.every, self.epochs = every, epochs
        self.clock = clock
        self.saved_at = clock()  # when the last save ended; the first waits from the start
        self.cost = 0.0  # seconds the last save took

    def due(self, epoch: int) -> bool:
        if self.every == 0:
            return False
        if epoch == self.epochs:
            return True
        if self.every == "auto":
            wait = max(self.AUTO_INTERVAL, self.COST_RATIO * self.cost)
            return self.clock() - self.saved_at >= wait
        return epoch % self.every == 0

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Around a save: the next automatic one waits from its end."""
        started = self.clock()
        yield
        self.saved_at = self.clock()
        self.cost = self.saved_at - started
