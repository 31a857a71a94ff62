"""Statistics across seeds: per-config summaries with confidence intervals, paired tests
with Holm's adjustment, the Friedman test and Nemenyi's critical difference, and verdicts.

The paired test is the Wilcoxon signed-rank test (exact for small samples without ties):
it assumes no normal distribution of the differences between seeds, which a few seeds of a
diverging schedule rarely give. The paired t-test's p stays beside it, unadjusted, as a check.

Reads `RunHistory` objects only; never imports torch. scipy is imported inside the functions.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from lrsched_cli.store import RunHistory, effective_status

CONFIDENCE = 0.95
ALPHA = 0.05  # the family-wise error rate the Holm-adjusted tests hold
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
    "test_loss": True,
    "test_accuracy": False,
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
        "test_loss": run.summary.get("test_loss"),
        "test_accuracy": run.summary.get("test_accuracy"),
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


def pairwise(
    summaries: list[ConfigSummary],
    metric: str,
    target: float | None,
    baseline: str | None = None,
) -> list[dict]:
    """For each pair: the seeds both completed, how often each won, the mean difference A-B
    with its 95% interval, and the paired tests' p-values, the Wilcoxon one Holm-adjusted over
    the pairs compared: all k(k-1)/2, or the k-1 against `baseline` (then A is the other
    config and B the baseline).

    An exact two-sided Wilcoxon p is at least 2^(1-n) for n seeds: a few seeds cannot show a
    difference is real (see `seed_power_note`), and the table says so rather than pretending.
    """
    by_seed = {s.name: _by_seed(s.runs, metric, target) for s in summaries}
    if baseline is None:
        pairs = [(a, b) for i, a in enumerate(summaries) for b in summaries[i + 1 :]]
    else:
        (base,) = [s for s in summaries if s.name == baseline]
        pairs = [(s, base) for s in summaries if s is not base]
    rows = [_pair_row(a.name, b.name, by_seed, metric) for a, b in pairs]
    for row, adjusted in zip(rows, holm([row["wilcoxon_p"] for row in rows]), strict=True):
        row["holm_p"] = adjusted
    return rows


def _pair_row(a: str, b: str, by_seed: dict[str, dict[int, float]], metric: str) -> dict:
    from scipy import stats

    lower_is_better = METRICS[metric]
    seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
    xs, ys = [by_seed[a][s] for s in seeds], [by_seed[b][s] for s in seeds]
    differences = [x - y for x, y in zip(xs, ys, strict=True)]
    a_wins = sum((d < 0) if lower_is_better else (d > 0) for d in differences)
    b_wins = sum((d > 0) if lower_is_better else (d < 0) for d in differences)
    spread = Estimate.of(differences)
    row = {
        "a": a,
        "b": b,
        "metric": metric,
        "paired_seeds": len(seeds),
        "a_wins": a_wins,
        "b_wins": b_wins,
        "ties": len(seeds) - a_wins - b_wins,
        "better": _favoured(a, b, differences, lower_is_better),
        "mean_difference": spread.mean,
        "difference_ci_low": spread.ci_low,
        "difference_ci_high": spread.ci_high,
        "wilcoxon_p": None,
        "holm_p": None,
        "ttest_p": None,
    }
    if not seeds:
        return row
    if not any(differences):
        row["wilcoxon_p"] = 1.0  # the same value in every seed: no evidence of a difference
        return row
    row["wilcoxon_p"] = float(stats.wilcoxon(xs, ys).pvalue)
    # Equal differences in every seed (e.g. "not reached" against a constant) leave the
    # t-test no variance: scipy warns and says p = 0; say nothing.
    if len(set(differences)) > 1:
        row["ttest_p"] = _finite_or_none(float(stats.ttest_rel(xs, ys).pvalue))
    return row


def _favoured(a: str, b: str, differences: list[float], lower_is_better: bool) -> str | None:
    """The config the signed ranks favour (the side the Wilcoxon test weighs); None if even."""
    from scipy import stats

    nonzero = [d for d in differences if d]
    ranks = stats.rankdata([abs(d) for d in nonzero]) if nonzero else []
    balance = sum(r if d > 0 else -r for d, r in zip(nonzero, ranks, strict=True))
    if balance == 0:
        return None
    return a if (balance < 0) == lower_is_better else b


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment: the i-th smallest of m p-values times (m - i + 1), never
    below the one before it, at most 1. None (no test) stays None and is not counted in m.

    Plain Holm, not statsmodels' default Holm-Sidak: 1 - (1 - p)^(m - i + 1) is slightly
    smaller, and the minimum-p arithmetic of `seed_power_note` assumes the plain factor.
    """
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for order, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - order) * p))
        adjusted[i] = running
    return adjusted


def pair_count(configs: int, baseline: bool) -> int:
    """How many pairs the Holm adjustment runs over."""
    return configs - 1 if baseline else configs * (configs - 1) // 2


def smallest_p(seeds: int) -> float:
    """The least two-sided p an exact Wilcoxon signed-rank test can give on `seeds` pairs: all
    differences of one sign, 2 of the 2^n equally likely sign patterns."""
    return min(1.0, 2.0 ** (1 - seeds))


def seeds_needed(pairs: int, alpha: float = ALPHA) -> int:
    """The fewest paired seeds with which some pair can reach Holm p < `alpha`."""
    seeds = 1
    while pairs * smallest_p(seeds) >= alpha:
        seeds += 1
    return seeds


def seed_power_note(seeds: int, pairs: int, alpha: float = ALPHA) -> str | None:
    """Why no verdict can come out significant, when that is decided before any training."""
    if pairs < 1 or pairs * smallest_p(seeds) < alpha:
        return None
    least = min(1.0, pairs * smallest_p(seeds))
    return (
        f"with {seeds} paired seed{'s' if seeds != 1 else ''} no pair can reach Holm p < "
        f"{alpha:g} over {pairs} pair{'s' if pairs != 1 else ''}: the least possible is "
        f"{pairs} × 2^(1-{seeds}) = {least:.2g}; {seeds_needed(pairs, alpha)} seeds or more "
        "can tell configs apart"
    )


@dataclass
class Friedman:
    """The Friedman test across seeds (blocks) where every config completed, the configs'
    mean ranks in those seeds (1 = best) and Nemenyi's critical difference (Demsar 2006)."""

    names: list[str]
    seeds: list[int]
    statistic: float | None
    p: float | None
    mean_ranks: list[float]
    critical_difference: float | None

    def row(self) -> dict[str, Any]:
        return {
            "configs": len(self.names),
            "seeds": len(self.seeds),
            "seed_list": self.seeds,
            "statistic": self.statistic,
            "p": self.p,
            "mean_ranks": dict(zip(self.names, self.mean_ranks, strict=True))
            if self.mean_ranks
            else {},
            "critical_difference": self.critical_difference,
            "alpha": ALPHA,
        }


def friedman(summaries: list[ConfigSummary], metric: str, target: float | None) -> Friedman | None:
    """For 3 or more configs; None for fewer. With fewer than 2 seeds that every config
    completed, there is nothing to test: statistic and p are None."""
    import numpy as np
    from scipy import stats

    # A config with no completed run has no rank to give: it is left out, not a zero.
    ranked = [(s.name, _by_seed(s.runs, metric, target)) for s in summaries]
    ranked = [(name, values) for name, values in ranked if values]
    if len(ranked) < 3:
        return None
    names = [name for name, _ in ranked]
    by_seed = [values for _, values in ranked]
    seeds = sorted(set.intersection(*(set(values) for values in by_seed)))
    if not seeds:
        return Friedman(names, [], None, None, [], None)
    sign = 1 if METRICS[metric] else -1
    table = np.array([[sign * values[seed] for values in by_seed] for seed in seeds])
    mean_ranks = stats.rankdata(table, axis=1).mean(axis=0).tolist()
    statistic = p = critical = None
    if len(seeds) >= 2:
        k = len(names)
        # Tied blocks everywhere leave scipy's tie correction 0/0: no statistic
        result = stats.friedmanchisquare(*table.T)
        statistic = _finite_or_none(float(result.statistic))
        p = _finite_or_none(float(result.pvalue)) if statistic is not None else None
        q = float(stats.studentized_range.ppf(1 - ALPHA, k, np.inf)) / math.sqrt(2)
        critical = q * math.sqrt(k * (k + 1) / (6 * len(seeds)))
    return Friedman(names, seeds, statistic, p, mean_ranks, critical)


def verdicts(rows: list[dict], metric: str) -> list[str]:
    """The pairwise results in words, one line per pair, after a line saying so when too few
    seeds leave every pair short of significance. Never a ranking by mean alone: a pair is
    called only by its Holm-adjusted paired test."""
    lines = []
    pairs = len([row for row in rows if row["wilcoxon_p"] is not None])
    seeds = max((row["paired_seeds"] for row in rows), default=0)
    note = seed_power_note(seeds, pairs) if seeds else None
    if note:
        lines.append(note[0].upper() + note[1:])
    for row in rows:
        lines.append(verdict(row, metric, pairs))
    return lines


def verdict(row: dict, metric: str, pairs: int) -> str:
    """One pair in words: who beats whom, in how many seeds, by how much, and how sure."""
    a, b, n = row["a"], row["b"], row["paired_seeds"]
    p = row["holm_p"]
    if p is None:
        return f"{a} vs {b}: not tested ({n} paired seed{'s' if n != 1 else ''})"
    if p >= ALPHA:
        if pairs * smallest_p(n) >= ALPHA:
            return f"{a} vs {b}: cannot tell with {n} seeds (Holm p = {p:.2g})"
        return f"{a} vs {b}: no significant difference (Holm p = {p:.2g})"
    a_better = row["better"] == a
    winner, loser = (a, b) if a_better else (b, a)
    wins = row["a_wins"] if a_better else row["b_wins"]
    sign = 1 if a_better else -1
    low, high = row["difference_ci_low"], row["difference_ci_high"]
    mean, interval = sign * row["mean_difference"], ""
    if low is not None:
        low, high = sorted((sign * low, sign * high))
        places = _decimals(mean, low, high, metric)
        mean = _signed(mean, metric, places)
        interval = f" [{_signed(low, metric, places)}, {_signed(high, metric, places)}]"
    else:
        mean = _signed(mean, metric, None)
    return f"{winner} beats {loser}: {wins}/{n} seeds, mean {mean}{interval}, Holm p = {p:.2g}"


def _decimals(mean: float, low: float, high: float, metric: str) -> int:
    """Decimals to the interval's half-width's first significant digit, or more where a
    number would otherwise show none of its own (-0.003 as -0.00)."""
    scale = 100 if "accuracy" in metric else 1
    magnitudes = [abs(v) * scale for v in (mean, low, high) if v] + [(high - low) / 2 * scale]
    finite = [m for m in magnitudes if m > 0 and math.isfinite(m)]
    return min(6, max(0, *(-math.floor(math.log10(m)) for m in finite))) if finite else 2


def _signed(value: float, metric: str, places: int | None) -> str:
    """A difference with a real minus sign; accuracies in percentage points."""
    scale, unit = (100, " pp") if "accuracy" in metric else (1, "")
    text = f"{value * scale:.2g}" if places is None else f"{value * scale:.{places}f}"
    return text.replace("-", "\u2212") + unit


def differs(row: dict | None) -> bool:
    """Whether a pairwise row's Holm-adjusted paired test tells its configs apart."""
    return row is not None and row["holm_p"] is not None and row["holm_p"] < ALPHA


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
