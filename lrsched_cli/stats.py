"""Statistics across seeds: per-config summaries with confidence intervals, and paired tests.

Reads `RunHistory` objects only; never imports torch. scipy is imported inside the functions.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from lrsched_cli.store import RunHistory, effective_status

CONFIDENCE = 0.95
# name -> True where lower is better
METRICS = {
    "final_val_loss": True,
    "best_val_loss": True,
    "best_epoch": True,
    "final_val_accuracy": False,
    "best_val_accuracy": False,
    "auc_val_loss": True,
    "epochs_to_target": True,
    "train_seconds": True,
}


@dataclass
class Estimate:
    """Mean, sample standard deviation and a t-based confidence interval of a few values."""

    values: list[float]
    mean: float | None = None
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Estimate:
        from scipy import stats

        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return cls(values)
        mean = statistics.fmean(values)
        if len(values) < 2:
            return cls(values, mean)
        std = statistics.stdev(values)
        # float(): scipy returns numpy scalars, whose repr (numpy 2) is no number in a CSV file
        t = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1))
        half = t * std / math.sqrt(len(values))
        return cls(values, mean, std, mean - half, mean + half)

    def overlaps(self, other: Estimate) -> bool:
        """Whether the two intervals overlap (unknown intervals count as overlapping)."""
        if None in (self.ci_low, self.ci_high, other.ci_low, other.ci_high):
            return True
        return self.ci_low <= other.ci_high and other.ci_low <= self.ci_high


@dataclass
class ConfigSummary:
    """One config's runs across seeds.

    `not_reached`: with a target, the completed runs whose val loss never got to it; their
    `epochs_to_target` counts as the planned epochs + 1 (see `run_metrics`). `swept`: a sweep
    member's values, by key path. `warnings`: the schedule's lint warnings, once per config.
    """

    name: str
    scheduler: str
    runs: list[RunHistory]
    metrics: dict[str, Estimate] = field(default_factory=dict)
    not_reached: int | None = None
    swept: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [run.summary.get("seed", run.config.get("seed")) for run in self.runs]

    @property
    def lr_cut_runs(self) -> tuple[int, int]:
        """(runs whose lr was cut at least once, runs with at least one epoch)."""
        cuts = [lr_cuts(run) for run in self.runs if run.epochs]
        return sum(n > 0 for n in cuts), len(cuts)

    @property
    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in self.runs:
            status = effective_status(run.summary)
            counts[status] = counts.get(status, 0) + 1
        return counts

    def row(self) -> dict[str, Any]:
        """A flat row for summary.csv and summary.json."""
        row: dict[str, Any] = {
            "name": self.name,
            "scheduler": self.scheduler,
            **self.swept,
            "seeds": len(set(self.seeds)),
            "seed_list": self.seeds,  # a list; ";"-separated in summary.csv
            "runs": len(self.runs),
            "completed": self.statuses.get("completed", 0),
            "diverged": self.statuses.get("diverged", 0),
            "failed": sum(
                n for s, n in self.statuses.items() if s not in ("completed", "diverged")
            ),
            "not_reached": self.not_reached,
            "lr_cut_runs": self.lr_cut_runs[0],
            "warnings": list(self.warnings),
        }
        for metric, estimate in self.metrics.items():
            for part in ("mean", "std", "ci_low", "ci_high"):
                row[f"{metric}_{part}"] = getattr(estimate, part)
        return row


def lr_cuts(run: RunHistory) -> int:
    """How often the lr went down from one epoch to the next: a ReduceLROnPlateau run with 0
    trained at a constant lr. From summary.json where the run recorded it, else its epochs."""
    recorded = run.summary.get("lr_cuts")
    return recorded if isinstance(recorded, int) else count_lr_cuts(run.column("lr"))


def count_lr_cuts(lrs: list[float | None]) -> int:
    """The number of epochs whose lr is lower than the previous epoch's."""
    known = [lr for lr in lrs if lr is not None]
    return sum(after < before for before, after in zip(known, known[1:], strict=False))


def run_metrics(run: RunHistory, target: float | None = None) -> dict[str, float | None]:
    """The per-run numbers a comparison is made of.

    A run whose val loss never gets to `target` has `epochs_to_target` = its planned epochs
    + 1: it needed more than its whole budget, so it ranks, and loses each pairing, behind
    every run that got there, without being dropped (which would rank it on its luckier seeds).
    """
    val_losses = [v for v in run.column("val_loss") if v is not None]
    accuracy = [v for v in run.column("val_accuracy") if v is not None]
    finite = [v for v in val_losses if math.isfinite(v)]
    best_epoch = None
    if finite:
        best_epoch = next(r["epoch"] for r in run.epochs if r.get("val_loss") == min(finite))
    reached = [r["epoch"] for r in run.epochs if target is not None and _at_target(r, target)]
    return {
        "final_val_loss": val_losses[-1] if val_losses else None,
        "best_val_loss": min(finite) if finite else None,
        "best_epoch": best_epoch,
        "final_val_accuracy": accuracy[-1] if accuracy else None,
        "best_val_accuracy": max(accuracy) if accuracy else None,
        # The mean over epochs: the area under the val-loss curve per epoch, comparable across
        # runs of equal length; lower means the schedule got low early and stayed there.
        "auc_val_loss": statistics.fmean(val_losses) if finite == val_losses and finite else None,
        "epochs_to_target": _epochs_to_target(run, target, reached),
        "train_seconds": run.summary.get("train_seconds"),
    }


def _epochs_to_target(run: RunHistory, target: float | None, reached: list[int]) -> int | None:
    if target is None:
        return None
    if reached:
        return reached[0]
    return int(run.summary.get("epochs_planned") or len(run.epochs)) + 1


def reached_target(run: RunHistory, target: float) -> bool:
    return any(_at_target(row, target) for row in run.epochs)


def _at_target(row: dict[str, Any], target: float) -> bool:
    return row.get("val_loss") is not None and row["val_loss"] <= target


def summarize(groups: dict[str, list[RunHistory]], target: float | None) -> list[ConfigSummary]:
    """One ConfigSummary per config; only completed runs enter the estimates."""
    summaries = []
    for name, runs in groups.items():
        completed = [run for run in runs if effective_status(run.summary) == "completed"]
        per_run = [run_metrics(run, target) for run in completed]
        scheduler = str(runs[0].config.get("scheduler", {}).get("name", "none"))
        summary = ConfigSummary(name, scheduler, runs)
        if target is not None:
            summary.not_reached = sum(not reached_target(run, target) for run in completed)
        for metric in METRICS:
            summary.metrics[metric] = Estimate.of([m[metric] for m in per_run])
        summaries.append(summary)
    return summaries


def rank(summaries: list[ConfigSummary], metric: str) -> list[ConfigSummary]:
    """Best first by the metric's mean; configs with no estimate go last."""
    lower_is_better = METRICS[metric]

    def key(summary: ConfigSummary) -> tuple[int, float]:
        mean = summary.metrics[metric].mean
        if mean is None:
            return (1, 0.0)
        return (0, mean if lower_is_better else -mean)

    return sorted(summaries, key=key)


def pairwise(summaries: list[ConfigSummary], metric: str, target: float | None) -> list[dict]:
    """For each pair: the seeds both completed, how often each won, and paired tests' p-values.

    With 3 seeds, Wilcoxon's exact two-sided p is at least 0.25: a few seeds cannot show a
    difference is real, and the table says so rather than pretending otherwise.
    """
    from scipy import stats

    lower_is_better = METRICS[metric]
    by_seed = {s.name: _by_seed(s.runs, metric, target) for s in summaries}
    rows = []
    for i, a in enumerate(summaries):
        for b in summaries[i + 1 :]:
            seeds = sorted(set(by_seed[a.name]) & set(by_seed[b.name]))
            xs = [by_seed[a.name][s] for s in seeds]
            ys = [by_seed[b.name][s] for s in seeds]
            a_wins = sum(
                (x < y) if lower_is_better else (x > y) for x, y in zip(xs, ys, strict=True)
            )
            b_wins = sum(
                (y < x) if lower_is_better else (y > x) for x, y in zip(xs, ys, strict=True)
            )
            row = {
                "a": a.name,
                "b": b.name,
                "metric": metric,
                "paired_seeds": len(seeds),
                "a_wins": a_wins,
                "b_wins": b_wins,
                "ties": len(seeds) - a_wins - b_wins,
                "mean_difference": statistics.fmean(x - y for x, y in zip(xs, ys, strict=True))
                if seeds
                else None,
                "wilcoxon_p": None,
                "ttest_p": None,
            }
            if len(seeds) >= 2 and any(x != y for x, y in zip(xs, ys, strict=True)):
                row["wilcoxon_p"] = float(stats.wilcoxon(xs, ys).pvalue)
                # Equal differences in every seed (e.g. "not reached" against a constant)
                # leave the t-test no variance: scipy warns and says p = 0; say nothing.
                if len({x - y for x, y in zip(xs, ys, strict=True)}) > 1:
                    row["ttest_p"] = _finite_or_none(float(stats.ttest_rel(xs, ys).pvalue))
            rows.append(row)
    return rows


def _by_seed(runs: list[RunHistory], metric: str, target: float | None) -> dict[int, float]:
    values = {}
    for run in runs:
        if effective_status(run.summary) != "completed":
            continue
        value = run_metrics(run, target)[metric]
        seed = run.summary.get("seed", run.config.get("seed"))
        if value is not None and math.isfinite(value) and seed not in values:
            values[seed] = value
    return values


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
