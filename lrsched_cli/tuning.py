"""`lrsched compare --tune-lr`: sweep each config's peak lr on tuning seeds, pick on validation,
then compare the picks on the comparison seeds, ranked by the held-out test metric.

The grid, the selection and the edge extension are plain functions of numbers, so they are
tested without training. torch is imported only where runs train (compare.execute) or where a
grid is centred on a range test (`--lr-center find-lr`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrsched_cli import compare as comparing
from lrsched_cli import stats, store
from lrsched_cli.config import ConfigError, ExperimentConfig
from lrsched_cli.schedule_config import peak_lr_key, with_peak_lr
from lrsched_cli.schedule_kinds import canonical_name, kind

DEFAULT_POINTS = 9  # the default grid: 9 lrs at x2 spacing, 4 on each side of the centre
DEFAULT_SPACING = 2.0
DEFAULT_TUNE_SEEDS = 2
# Tuning seeds start far above the comparison seeds (0..N-1 by default), so that no number used
# for selection comes from a seed the comparison reports on.
TUNING_SEED_START = 1000
EXTENSION_POINTS = 2  # lrs added on the side where the pick sits at the grid's edge
MAX_EXTENSIONS = 2
FLAT_TOLERANCE = 0.01  # "flat near the pick": within 1% of the best mean val metric
CENTERS = ("config", "find-lr")


@dataclass
class ConfigTuning:
    """One config's sweep: its grid (kept sorted), the val metric of every tuning run, the
    pick, and the extensions made because the pick sat at an edge."""

    name: str
    key: str  # the config key of its peak lr
    config_lr: float  # the peak lr its file named
    center: float
    grid: list[float]
    values: dict[float, dict[int, float | None]] = field(default_factory=dict)  # None: worst
    statuses: dict[float, dict[int, str]] = field(default_factory=dict)
    paths: dict[float, dict[int, str | None]] = field(default_factory=dict)
    extensions: list[dict[str, Any]] = field(default_factory=list)  # {"side", "lrs"}
    pick: float | None = None
    at_edge: str | None = None  # the pick's edge once no extension is left

    def scores(self, lower_is_better: bool) -> dict[float, float]:
        return mean_scores(
            {lr: list(self.values.get(lr, {}).values()) for lr in self.grid}, lower_is_better
        )


def parse_grid(text: str) -> list[float]:
    """`low:high:count` -> `count` lrs spaced evenly in log from low to high, both included."""
    parts = text.split(":")
    usage = f"--lr-grid {text!r}: expected LOW:HIGH:COUNT, e.g. 1e-3:1:13"
    if len(parts) != 3:
        raise ConfigError(usage)
    try:
        low, high, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ConfigError(usage) from None
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 or high <= 0:
        raise ConfigError(f"--lr-grid {text!r}: the lrs must be positive and finite")
    if low >= high:
        raise ConfigError(f"--lr-grid {text!r}: LOW must be below HIGH")
    if count < 3:
        raise ConfigError(f"--lr-grid {text!r}: COUNT must be 3 or more, so a pick has sides")
    return log_grid(low, high, count)


def log_grid(low: float, high: float, count: int) -> list[float]:
    ratio = high / low
    return [low * ratio ** (i / (count - 1)) for i in range(count - 1)] + [high]


def centred_grid(
    center: float, points: int = DEFAULT_POINTS, spacing: float = DEFAULT_SPACING
) -> list[float]:
    """`points` lrs at x`spacing`, the centre among them (the middle one for odd `points`)."""
    half = (points - 1) // 2
    return [center * spacing ** (i - half) for i in range(points)]


def mean_scores(
    values: dict[float, list[float | None]], lower_is_better: bool
) -> dict[float, float]:
    """Per lr, the mean val metric over its tuning seeds; a diverged or failed run (None, NaN,
    inf) counts as the worst value there is, so one such seed sinks its lr."""
    worst = math.inf if lower_is_better else -math.inf
    scores = {}
    for lr, found in values.items():
        clean = [v if v is not None and math.isfinite(v) else worst for v in found]
        scores[lr] = statistics.fmean(clean) if clean else worst
    return scores


def select(values: dict[float, list[float | None]], lower_is_better: bool = True) -> float:
    """The lr with the best mean val metric; a tie goes to the smaller lr (the safer one)."""
    scores = mean_scores(values, lower_is_better)
    sign = 1 if lower_is_better else -1
    return min(scores, key=lambda lr: (sign * scores[lr], lr))


def edge(grid: list[float], pick: float) -> str | None:
    """`low` or `high` where the pick is the grid's smallest or largest lr."""
    ordered = sorted(grid)
    if pick == ordered[0]:
        return "low"
    if pick == ordered[-1]:
        return "high"
    return None


def extension(grid: list[float], side: str, points: int = EXTENSION_POINTS) -> list[float]:
    """`points` new lrs beyond the grid's `side`, at the spacing of its outermost step there."""
    ordered = sorted(grid)
    if side == "low":
        step = ordered[1] / ordered[0]
        return [ordered[0] / step ** (i + 1) for i in range(points)][::-1]
    step = ordered[-1] / ordered[-2]
    return [ordered[-1] * step ** (i + 1) for i in range(points)]


def flat_span(
    scores: dict[float, float],
    pick: float,
    lower_is_better: bool,
    tolerance: float = FLAT_TOLERANCE,
) -> tuple[float, float]:
    """The stretch of neighbouring lrs around the pick whose mean lies within `tolerance`
    (relative) of the pick's: how much the choice of lr matters near its best."""
    ordered = sorted(scores)
    best = scores[pick]
    if not math.isfinite(best):
        return pick, pick
    allowed = tolerance * abs(best)

    def near(lr: float) -> bool:
        value = scores[lr]
        return math.isfinite(value) and (
            value - best <= allowed if lower_is_better else best - value <= allowed
        )

    index = ordered.index(pick)
    low = high = index
    while low > 0 and near(ordered[low - 1]):
        low -= 1
    while high < len(ordered) - 1 and near(ordered[high + 1]):
        high += 1
    return ordered[low], ordered[high]


def metrics_for(metric: str) -> tuple[str, str]:
    """(the val metric that selects, the test metric that ranks) for a `--metric`: accuracy
    when ranking by an accuracy, else the loss."""
    if "accuracy" in metric:
        return "final_val_accuracy", "test_accuracy"
    return "final_val_loss", "test_loss"


def tuning_seeds(count: int, comparison_seeds: list[int]) -> list[int]:
    """`count` seeds from TUNING_SEED_START up, none of them a comparison seed."""
    taken, seeds, seed = set(comparison_seeds), [], TUNING_SEED_START
    while len(seeds) < count:
        if seed not in taken:
            seeds.append(seed)
        seed += 1
    return seeds


def peak_lr(cfg: ExperimentConfig) -> float:
    """The peak lr the config names, at its key (the first parameter group's where per group)."""
    key = peak_lr_key(cfg.scheduler)
    value = cfg.optimizer.lr if key == "optimizer.lr" else cfg.scheduler.kwargs.get(key[10:])
    if isinstance(value, list | tuple):
        value = value[0]
    return float(value)


def check_tunable(cfg: ExperimentConfig) -> None:
    """A schedule whose peak lr no one key holds cannot be tuned by moving that key."""
    name = canonical_name(cfg.scheduler.name)
    if name != "none" and kind(name).composite:
        raise ConfigError(
            f"{cfg.name}: --tune-lr needs a schedule with one peak lr, and {name} nests several "
            "schedules; tune its nested blocks by hand (--set), or compare it without --tune-lr"
        )
    key = peak_lr_key(cfg.scheduler)
    if key != "optimizer.lr" and key[10:] not in cfg.scheduler.kwargs:
        raise ConfigError(f"{cfg.name}: --tune-lr needs {key}, its peak lr, in the config")
    value = peak_lr(cfg)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{cfg.name}: --tune-lr needs a positive peak lr at {key}, not {value}")


def plan(
    configs: list[ExperimentConfig],
    grid: list[float] | None,
    center: str = "config",
    valley: Callable[[ExperimentConfig], float | None] | None = None,
    notes: list[str] | None = None,
) -> list[ConfigTuning]:
    """Each config's starting grid: `grid` as given, or 9 lrs at x2 around its centre (its own
    peak lr, or the range test's valley with `center="find-lr"`)."""
    tunings = []
    for cfg in configs:
        check_tunable(cfg)
        own = peak_lr(cfg)
        middle = own
        if grid is None and center == "find-lr":
            found = (valley or _valley)(cfg)
            if found is None or not math.isfinite(found) or found <= 0:
                if notes is not None:
                    notes.append(
                        f"{cfg.name}: the range test gave no valley lr; its grid is centred on "
                        f"its own peak lr {own:.3g}"
                    )
            else:
                middle = found
        points = list(grid) if grid is not None else centred_grid(middle)
        tunings.append(ConfigTuning(cfg.name, peak_lr_key(cfg.scheduler), own, middle, points))
    return tunings


def _valley(cfg: ExperimentConfig) -> float | None:
    from lrsched_cli import find_lr

    return find_lr.valley_lr(cfg)


def _point_name(name: str, lr: float) -> str:
    return f"{name}-lr{lr:.4g}"


def tuning_jobs(
    configs: list[ExperimentConfig], points: dict[str, list[float]], seeds: list[int]
) -> tuple[list[comparing.Job], dict[str, tuple[str, float]]]:
    """Jobs for each config's `points` on every tuning seed, and job name -> (config, lr)."""
    by_name = {cfg.name: cfg for cfg in configs}
    jobs, owners = [], {}
    for name, lrs in points.items():
        for lr in lrs:
            point = _point_name(name, lr)
            owners[point] = (name, lr)
            cfg = with_peak_lr(by_name[name], lr).model_copy(update={"name": point})
            jobs += comparing.plan_jobs([cfg], seeds)
    return jobs, owners


def budget(tunings: list[ConfigTuning], tune_seeds: int, seeds: int) -> dict[str, int]:
    """Runs the tuned comparison will train: the grids, the most extensions may add, the rest."""
    tuning = sum(len(t.grid) for t in tunings) * tune_seeds
    extra = len(tunings) * MAX_EXTENSIONS * EXTENSION_POINTS * tune_seeds
    fresh = len(tunings) * seeds
    return {"tuning": tuning, "extensions_at_most": extra, "fresh": fresh, "total": tuning + fresh}


@dataclass
class TuningResult:
    val_metric: str
    test_metric: str
    seeds: list[int]
    comparison_seeds: list[int]
    center: str
    configs: list[ConfigTuning]
    notes: list[str] = field(default_factory=list)  # extensions, edges: said in the output

    def picks(self) -> dict[str, float | None]:
        return {t.name: t.pick for t in self.configs}

    def flat_lines(self) -> list[str]:
        """Per config: how flat its curve is near the pick."""
        lower = stats.METRICS[self.val_metric]
        lines = []
        for t in self.configs:
            if t.pick is None:
                continue
            scores = t.scores(lower)
            if not math.isfinite(scores[t.pick]):
                lines.append(f"{t.name}: every lr diverged or failed on some tuning seed")
                continue
            low, high = flat_span(scores, t.pick, lower)
            metric = self.val_metric.replace("final_", "")
            if low == high:
                lines.append(
                    f"{t.name}: picked lr {t.pick:.3g}; no neighbouring lr within 1% of its "
                    f"{metric}: sharp"
                )
            else:
                lines.append(
                    f"{t.name}: picked lr {t.pick:.3g}; lrs {low:.3g} to {high:.3g} "
                    f"(x{high / low:.3g}) within 1% of its {metric}"
                )
        return lines

    def document(self) -> dict[str, Any]:
        lower = stats.METRICS[self.val_metric]
        configs = {}
        for t in self.configs:
            scores = t.scores(lower)
            span = flat_span(scores, t.pick, lower) if t.pick is not None else None
            configs[t.name] = {
                "peak_lr_key": t.key,
                "config_lr": t.config_lr,
                "center": t.center,
                "grid": sorted(t.grid),
                "pick": t.pick,
                "pick_over_config_lr": t.pick / t.config_lr if t.pick else None,
                "extensions": t.extensions,
                "at_edge": t.at_edge,
                "flat_within_1pct": list(span) if span else None,
                "points": [
                    {
                        "lr": lr,
                        "mean": _finite(scores[lr]),
                        "values": [t.values.get(lr, {}).get(s) for s in self.seeds],
                        "statuses": [t.statuses.get(lr, {}).get(s) for s in self.seeds],
                    }
                    for lr in sorted(t.grid)
                ],
            }
        return {
            "val_metric": self.val_metric,
            "test_metric": self.test_metric,
            "lower_is_better": lower,
            "tuning_seeds": self.seeds,
            "comparison_seeds": self.comparison_seeds,
            "center": self.center,
            "max_extensions": MAX_EXTENSIONS,
            "extension_points": EXTENSION_POINTS,
            "notes": self.notes,
            "configs": configs,
        }

    def write(self, out_dir: Path) -> None:
        rows = [
            {
                "config": t.name,
                "lr": lr,
                "seed": seed,
                self.val_metric: t.values.get(lr, {}).get(seed),
                "status": t.statuses.get(lr, {}).get(seed),
                "picked": lr == t.pick,
                "path": t.paths.get(lr, {}).get(seed),
            }
            for t in self.configs
            for lr in sorted(t.grid)
            for seed in self.seeds
        ]
        store.write_csv(out_dir / "tuning.csv", rows)
        text = json.dumps(self.document(), indent=2) + "\n"
        (out_dir / "tuning.json").write_text(text, encoding="utf-8")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def sweep(
    configs: list[ExperimentConfig],
    tunings: list[ConfigTuning],
    seeds: list[int],
    val_metric: str,
    run: Callable[[list[comparing.Job], dict[str, tuple[str, float]]], list[comparing.JobResult]],
) -> list[str]:
    """Run every grid point on the tuning seeds, pick, and extend a grid whose pick sits at an
    edge, at most MAX_EXTENSIONS times; returns what the output must say about extensions."""
    lower = stats.METRICS[val_metric]
    notes: list[str] = []
    pending = {t.name: list(t.grid) for t in tunings}
    by_name = {t.name: t for t in tunings}
    while pending:
        jobs, owners = tuning_jobs(configs, pending, seeds)
        for result in run(jobs, owners):
            name, lr = owners[result.name]
            value, status = _val_metric(result, val_metric)
            t = by_name[name]
            t.values.setdefault(lr, {})[result.seed] = value
            t.statuses.setdefault(lr, {})[result.seed] = status
            t.paths.setdefault(lr, {})[result.seed] = result.path
        pending = {}
        for t in tunings:
            t.pick = select(
                {lr: [t.values.get(lr, {}).get(s) for s in seeds] for lr in t.grid}, lower
            )
            side = edge(t.grid, t.pick)
            if side is None:
                t.at_edge = None
                continue
            if len(t.extensions) < MAX_EXTENSIONS:
                added = extension(t.grid, side, EXTENSION_POINTS)
                t.extensions.append({"side": side, "lrs": added})
                t.grid = sorted(t.grid + added)
                pending[t.name] = added
                notes.append(
                    f"{t.name}: the best lr {t.pick:.3g} is the grid's {side}est; extended it "
                    f"by {len(added)} lrs ({', '.join(f'{lr:.3g}' for lr in added)})"
                )
            else:
                t.at_edge = side
                notes.append(
                    f"{t.name}: the pick {t.pick:.3g} is still the grid's {side}est after "
                    f"{MAX_EXTENSIONS} extensions; its best lr may lie beyond it"
                )
    return notes


def _val_metric(result: comparing.JobResult, metric: str) -> tuple[float | None, str]:
    """A tuning run's val metric and status; None (the worst) unless it completed."""
    if result.path is None:
        return None, result.status
    try:
        history = store.read_run(Path(result.path))
    except store.RunCorrupt:
        return None, "failed"
    status = store.effective_status(history.summary)
    if status != "completed":
        return None, status
    value = stats.run_metrics(history)[metric]
    return (value if value is not None and math.isfinite(value) else None), status


def picked_configs(configs: list[ExperimentConfig], tunings: list[ConfigTuning]):
    """Each config at its picked lr, under its own name."""
    picks = {t.name: t.pick for t in tunings}
    return [with_peak_lr(cfg, picks[cfg.name]) for cfg in configs]


def tune_and_compare(
    inputs: comparing.Inputs,
    tunings: list[ConfigTuning],
    tune_seeds: list[int],
    seeds: list[int],
    out_dir: Path,
    workers: int,
    metric: str,
    target: float | None = None,
    warnings: list[str] = (),
    on_result: Callable[[comparing.JobResult], None] = lambda result: None,
    lint: Callable[[dict[str, list[str]]], None] = lambda warnings: None,
    pool=None,
    baseline: str | None = None,
    center: str = "config",
    notes: list[str] = (),
    on_notes: Callable[[list[str]], None] = lambda notes: None,
) -> tuple[comparing.Comparison, TuningResult]:
    """Tune every config's peak lr on `tune_seeds` (runs under out_dir/tuning), then compare the
    picks on `seeds`, ranked by the test metric that matches `metric`. `on_notes` gets the notes
    on configs that cannot be fused, then the tuning's own."""
    val_metric, test_metric = metrics_for(metric)
    stop = comparing.StopFlag()
    linted = False

    def run(jobs: list[comparing.Job], owners: dict[str, tuple[str, float]]):
        nonlocal linted
        # The schedules' lint and the fusion notes are shown once, before the first tuning run;
        # --strict stops there.
        check, show = (lint, on_notes) if not linted else (_ignore, _ignore)
        linted = True
        # A config error names the file of the config the point was made from.
        files = {
            point: inputs.files[name] for point, (name, _) in owners.items() if name in inputs.files
        }
        results = comparing.execute(
            jobs,
            out_dir / "tuning",
            workers,
            on_result,
            lint=check,
            stop=stop,
            files=files,
            overrides=inputs.overrides,
            pool=pool,
            note=show,
        )
        if stop.is_set():
            raise KeyboardInterrupt
        return results

    try:
        sweep_notes = sweep(inputs.configs, tunings, tune_seeds, val_metric, run)
    except BaseException:
        comparing._remove_if_empty(out_dir)
        raise
    result = TuningResult(
        val_metric, test_metric, tune_seeds, seeds, center, tunings, [*notes, *sweep_notes]
    )
    result.write(out_dir)
    on_notes(result.notes)
    picked = comparing.Inputs(
        configs=picked_configs(inputs.configs, tunings),
        files=inputs.files,
        overrides=inputs.overrides,
    )
    comparison = comparing.compare(
        picked,
        seeds,
        out_dir,
        workers,
        test_metric,
        target,
        warnings,
        on_result,
        pool=pool,
        baseline=baseline,
        tuning=result.document(),
    )
    return comparison, result


def _ignore(found: Any) -> None:
    pass
