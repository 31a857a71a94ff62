"""The Python API for notebooks and scripts: run a config, compare configs, load a run directory.

`run`, `compare`, `load_run` and the results they return are the whole public surface.
Importing this module does not import torch; `run` and `compare` import it when they train.
Errors are raised, not printed: a config the user must fix is a `ConfigError`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrsched_cli.errors import ConfigError, RunUnusable

if TYPE_CHECKING:
    import pandas

    from lrsched_cli.config import ExperimentConfig

    ConfigLike = str | os.PathLike | Mapping[str, Any] | ExperimentConfig

__all__ = ["ComparisonResult", "ConfigError", "Run", "RunUnusable", "compare", "load_run", "run"]


@dataclass(frozen=True)
class Run:
    """A run directory as read back: its resolved config, per-epoch metrics and summary."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]  # one dict per finished epoch, the columns of metrics.csv
    steps: list[dict[str, Any]] = field(repr=False)  # one dict per optimizer step

    @property
    def status(self) -> str:
        """completed, diverged, interrupted or failed, as summary.json says."""
        return str(self.summary.get("status", "unknown"))

    def metrics_frame(self) -> pandas.DataFrame:
        """The per-epoch metrics as a pandas DataFrame indexed by epoch (pandas must be installed).

        Example:
            >>> run = load_run("runs/20261125-101500-cosine")
            >>> run.metrics_frame()[["lr", "val_loss"]].plot(logy=True)
        """
        frame = _pandas().DataFrame.from_records(self.metrics)
        return frame.set_index("epoch") if "epoch" in frame else frame


@dataclass(frozen=True)
class ComparisonResult:
    """A comparison directory: the configs ranked best first, pairwise tests, and every run."""

    path: Path
    metric: str  # what the ranking is by, e.g. final_val_loss
    ranking: list[dict[str, Any]]  # one row per config, as in summary.csv
    pairwise: list[dict[str, Any]]
    runs: list[Run] = field(repr=False)
    interrupted: bool = False

    def ranking_frame(self) -> pandas.DataFrame:
        """The ranking as a pandas DataFrame, best config first (pandas must be installed)."""
        return _pandas().DataFrame.from_records(self.ranking)


def run(
    config: ConfigLike,
    *,
    runs_dir: str | os.PathLike = "runs",
    overrides: Iterable[str] = (),
    epochs: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    plots: bool = True,
) -> Run:
    """Train one config and return its run, as `lrsched run` does (with its PNGs, unless
    `plots` is false). `config` is a YAML file's path, a dict of the same keys (a missing
    `name` is `run`; relative paths are taken from the current directory), or a loaded
    `ExperimentConfig`. `overrides` are `--set` strings such as `"optimizer.lr=0.05"`.

    A run that diverges or is interrupted is returned with that status; a config the user must
    fix raises ConfigError before anything is written.

    Example:
        >>> from lrsched_cli import api
        >>> result = api.run({"data": {"name": "moons"}, "optimizer": {"name": "SGD", "lr": 0.1},
        ...                   "scheduler": {"name": "CosineAnnealingLR", "T_max": 10}}, epochs=10)
        >>> result.summary["best_val_loss"], result.metrics[-1]["lr"]
    """
    from lrsched_cli import runner, store

    cfg = _load_one(config, list(overrides), epochs=epochs, seed=seed, device=device)
    result = runner.run_experiment(cfg, Path(runs_dir))
    history = store.read_run(result.path)
    if plots:
        from lrsched_cli.plots import plot_run

        plot_run(history, history.path)
    return _as_run(history)


def compare(
    configs: Iterable[ConfigLike],
    *,
    seeds: int | Iterable[int] | None = None,
    runs_dir: str | os.PathLike = "runs",
    jobs: int = 1,
    metric: str = "final_val_loss",
    target: float | None = None,
    overrides: Iterable[str] = (),
    epochs: int | None = None,
    force: bool = False,
    plots: bool = True,
) -> ComparisonResult:
    """Run each config over paired seeds and rank them, as `lrsched compare` does, into a new
    `compare-*` directory under `runs_dir`. Each of `configs` is a YAML path (a `sweep:` block
    expands), a folder of configs, a finished run directory, a dict or an ExperimentConfig.
    `seeds` is a count (seeds 0..N-1) or the seeds themselves, by default those `lrsched
    compare` uses (0..9); `jobs` is worker processes;
    `target` is the val loss that `metric="epochs_to_target"` counts epochs to.

    Example:
        >>> from lrsched_cli import api
        >>> result = api.compare(["configs/cosine.yaml", "configs/step.yaml"], seeds=5)
        >>> result.ranking[0]["name"], result.ranking_frame()
    """
    from lrsched_cli import compare as comparing
    from lrsched_cli import stats, store

    overrides = list(overrides)
    found = comparing.Inputs(overrides=overrides)
    paths = []
    for item in configs:
        if isinstance(item, str | os.PathLike):
            paths.append(os.fspath(item))
        else:
            found.configs.append(_load_one(item, overrides, epochs=epochs))
    if paths:
        from_paths = comparing.collect_inputs(paths, overrides, epochs)
        found.configs += from_paths.configs
        found.runs, found.swept, found.files = from_paths.runs, from_paths.swept, from_paths.files
        found.skipped = from_paths.skipped
    names = [cfg.name for cfg in found.configs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"several configs are named {', '.join(repeated)}; give each a name")
    if not found.configs and not found.runs:
        raise ConfigError("nothing to compare: give configs or run directories")
    warnings = comparing.check_comparable(found, force)
    if seeds is None:
        seeds = comparing.DEFAULT_SEEDS
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list or len(set(seed_list)) != len(seed_list) or min(seed_list) < 0:
        raise ConfigError(f"seeds: expected distinct seeds >= 0 (got {seed_list})")
    if metric not in stats.METRICS:
        raise ConfigError(f"metric: unknown {metric!r}; choose one of: {', '.join(stats.METRICS)}")
    if metric == "epochs_to_target" and target is None:
        raise ConfigError("metric epochs_to_target needs target: the val loss to count epochs to")
    out_dir = store.create_run_dir(Path(runs_dir), "compare")
    comparison = comparing.compare(found, seed_list, out_dir, jobs, metric, target, warnings)
    if plots:
        from lrsched_cli.plots import plot_comparison

        plot_comparison({s.name: s.runs for s in comparison.summaries}, comparison.path)
    return ComparisonResult(
        path=comparison.path,
        metric=comparison.metric,
        ranking=[summary.row() for summary in comparison.summaries],
        pairwise=list(comparison.pairwise),
        runs=[_as_run(history) for s in comparison.summaries for history in s.runs],
        interrupted=comparison.interrupted,
    )


def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory that `lrsched run` (or `compare`) wrote; no torch, no training.

    Example:
        >>> from lrsched_cli import api
        >>> run = api.load_run("runs/20261125-101500-cosine")
        >>> [row["lr"] for row in run.metrics], run.summary["status"]
        >>> run.metrics_frame()  # with pandas installed
    """
    from lrsched_cli import store

    return _as_run(store.read_run(Path(path)))


def _load_one(config: ConfigLike, overrides: list[str], **options: Any) -> ExperimentConfig:
    """A path, dict or ExperimentConfig as one validated config, its overrides applied."""
    from lrsched_cli import config as configuring

    if isinstance(config, str | os.PathLike):
        return configuring.load_config(Path(config), overrides, **options)
    if isinstance(config, configuring.ExperimentConfig):
        if not overrides and all(value is None for value in options.values()):
            return config
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"a config is a path, a dict or an ExperimentConfig, not a {type(config).__name__}"
        )
    raw = copy.deepcopy(dict(config))
    for override in overrides:
        configuring._apply_override(raw, override)
    raw.update({key: value for key, value in options.items() if value is not None})
    raw.setdefault("name", "run")
    if configuring.sweep_size(raw) > 1:
        raise ConfigError("its sweep: block makes several configs; run them with compare()")
    raw.pop("sweep", None)
    cfg = configuring.validate(raw)
    return configuring._anchor_files(cfg, Path.cwd(), [])


def _as_run(history: Any) -> Run:
    return Run(history.path, history.config, history.summary, history.epochs, history.steps)


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "a DataFrame needs pandas, which is not installed: pip install pandas "
            "(the same data is in .metrics, a list of dicts)"
        ) from None
    return pandas
