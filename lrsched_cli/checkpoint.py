"""The latest checkpoint of a run: model, optimizer, scheduler and random states, by state_dict."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lrsched_cli.runner import Experiment

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(experiment: Experiment, run_dir: Path, epoch: int, step: int) -> None:
    """Replace the run's checkpoint (write, then rename): a kill leaves the previous one whole."""
    state = {
        "epoch": epoch,
        "step": step,
        "pending_event": experiment.pending_event,
        "model": experiment.model.state_dict(),
        "optimizer": experiment.optimizer.state_dict(),
        "scheduler": _without_lambdas(experiment.scheduler.state_dict())
        if experiment.scheduler is not None
        else None,
        "batch_rng": experiment.batch_generator.get_state(),
        "dropout_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    temporary = run_dir / f".{CHECKPOINT_FILE}.tmp"
    torch.save(state, temporary)
    os.replace(temporary, run_dir / CHECKPOINT_FILE)


def load_checkpoint(experiment: Experiment, run_dir: Path) -> tuple[int, int]:
    """Restore a freshly prepared experiment to the checkpoint; returns (epoch, step) done.

    Without a checkpoint, nothing is restored and the run starts again from epoch 0.
    """
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        return 0, 0
    state = torch.load(path, map_location=experiment.device, weights_only=True)
    experiment.model.load_state_dict(state["model"])
    experiment.optimizer.load_state_dict(state["optimizer"])
    if experiment.scheduler is not None:
        experiment.scheduler.load_state_dict(state["scheduler"])
    experiment.batch_generator.set_state(state["batch_rng"].cpu())
    torch.set_rng_state(state["dropout_rng"].cpu())
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    experiment.pending_event = state.get("pending_event")
    return state["epoch"], state["step"]


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
