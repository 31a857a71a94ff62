"""The LR range test without torch: its lr grid, loss smoothing, stop rule, the four suggestion
rules, and its directory's files (written and read back).

Torch-free (numpy and store only), so `lrsched plot` redraws lr_find.png from the files alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrsched_cli import store

CURVE_FILE, PNG_FILE = "lr_find.csv", "lr_find.png"
CURVE_COLUMNS = ("step", "lr", "loss", "smoothed_loss")
MODES = ("exp", "linear")
MIN_STEPS = 10
BETA = 0.98  # fastai's and Lightning's smoothing
DIVERGE = 4.0  # stop once the smoothed loss exceeds this multiple of the best so far
MIN_POINTS = 20  # fewer points in the window than this give no suggestion
SKIP_END = 5  # the window drops the last points: the smoothed loss lags the blow-up there
DEFAULT_RULE = "valley"
# Slide compares the slope at r with the slope LR_DIFF points to its left (fastai's numbers).
# fastai's threshold 0.005 is per grid step of its default grid (1e-7 to 10 in 100 steps);
# lrsched's slopes are per unit of ln(lr), so the same threshold is 0.005 / ln(1e8)/99.
SLIDE_LR_DIFF = 15
SLIDE_THRESH = 0.005 / (math.log(10 / 1e-7) / 99)
# A curve whose smoothed loss varies by less than this share of its size over the window is
# flat: the lr makes no difference there, and every rule would only read noise.
FLAT = 1e-3
# The peak lr of these schedulers is their own argument, not the optimizer's lr.
PEAK_LR_KEYS = {"OneCycleLR": "scheduler.max_lr", "CyclicLR": "scheduler.max_lr"}
RULES = {
    "valley": "middle of the longest descent",
    "steep": "steepest descent",
    "minimum": "lowest loss / 10",
    "slide": "where the slope settles, left of the blow-up",
}


@dataclass(frozen=True)
class Grid:
    """The lrs of the test: `exp` spaces them evenly in log lr (the first and last exactly
    `start` and `end`), `linear` evenly in lr. Raises ValueError on a grid that cannot run."""

    start: float = 1e-7
    end: float = 10.0
    steps: int = 100
    mode: str = "exp"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"--mode {self.mode!r}: choose exp or linear")
        for option, value in (("--start", self.start), ("--end", self.end)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{option} {value:g}: an lr must be a positive number")
        if self.start >= self.end:
            raise ValueError(
                f"--start {self.start:g} must be below --end {self.end:g}: the lr grows"
            )
        if self.steps < MIN_STEPS:
            raise ValueError(
                f"--steps {self.steps}: the test needs at least {MIN_STEPS} steps "
                f"(and {MIN_POINTS + SKIP_END + 3} or more for a suggestion)"
            )

    def lrs(self) -> list[float]:
        last = self.steps - 1
        if self.mode == "exp":
            ratio = self.end / self.start
            lrs = [self.start * ratio ** (i / last) for i in range(self.steps)]
        else:
            lrs = [self.start + (self.end - self.start) * i / last for i in range(self.steps)]
        lrs[-1] = self.end  # start * (end/start)**1 can miss end by a rounding error
        return lrs

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "start": self.start, "end": self.end, "steps": self.steps}


class SmoothedLoss:
    """The exponential moving average of the loss, bias-corrected from the test's first step:
    without the correction the first values are pulled towards 0 by the zero it starts from."""

    def __init__(self, beta: float = BETA):
        self.beta, self.average, self.count = beta, 0.0, 0

    def add(self, loss: float) -> float:
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        return self.average / (1 - self.beta**self.count)


class StopRule:
    """Stop at the first non-finite loss, or once the smoothed loss exceeds DIVERGE times the
    best smoothed loss before it. A ratio to a best of 0 or below stops nothing sensible, so
    from the step the best reaches it the ratio rule is off (and `off_at` says where)."""

    def __init__(self) -> None:
        self.best = math.inf
        self.off_at: int | None = None

    def check(self, step: int, loss: float, smoothed: float) -> tuple[str, str] | None:
        """(reason, detail) when the test must stop at this step, else None."""
        if not (math.isfinite(loss) and math.isfinite(smoothed)):
            return "nonfinite", f"the loss is {loss} at step {step}"
        if self.off_at is None and smoothed > DIVERGE * self.best:
            return "diverged", (
                f"smoothed loss {smoothed:.3g} > {DIVERGE:g} x best {self.best:.3g}"
            )
        self.best = min(self.best, smoothed)
        if self.best <= 0 and self.off_at is None:
            self.off_at = step
        return None


@dataclass
class Suggestion:
    """One rule's lr, with the curve point it was read at; `lr` None comes with `reason`."""

    rule: str
    lr: float | None
    step: int | None = None  # the 1-based step of the curve point the rule chose
    smoothed_loss: float | None = None
    reason: str | None = None
    use: str | None = None  # the --set line that puts the lr into a config

    def to_dict(self) -> dict[str, Any]:
        shown = {key: value for key, value in vars(self).items() if value is not None}
        return {**shown, "lr": self.lr, "default": self.rule == DEFAULT_RULE}


def suggest(lrs, losses, peak_key: str = "optimizer.lr") -> list[Suggestion]:
    """Every rule's suggestion from the smoothed curve, in RULES order.

    The curve is cut at its first non-finite point; the rules read the window
    [n//10 : n - SKIP_END] of what is left (fastai's), with slopes taken against ln(lr)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    finite = np.isfinite(losses) & np.isfinite(lrs) & (lrs > 0)
    n = len(losses) if finite.all() else int(np.argmin(finite))
    first, last = n // 10, n - SKIP_END
    reason = _no_suggestion(losses[first : max(first, last)], n)
    if reason is not None:
        return [Suggestion(rule, None, reason=reason) for rule in RULES]
    window_lrs, window = lrs[first:last], losses[first:last]
    found = {
        "valley": valley(window),
        "steep": steep(window_lrs, window),
        "minimum": int(np.argmin(window)),
        "slide": slide(window_lrs, window),
    }
    suggestions = []
    for rule, index in found.items():
        if isinstance(index, str):
            suggestions.append(Suggestion(rule, None, reason=index))
            continue
        lr = float(window_lrs[index]) / (10 if rule == "minimum" else 1)
        point = first + index
        use = f"--set {peak_key}={lr:.1e}"
        suggestions.append(Suggestion(rule, lr, point + 1, float(losses[point]), use=use))
    return suggestions


def _no_suggestion(window: np.ndarray, finite_points: int) -> str | None:
    if len(window) < MIN_POINTS:
        points = f"{len(window)} point{'s' * (len(window) != 1)}"
        return (
            f"only {points} in the window the rules read ({finite_points} finite steps, less "
            f"the first tenth and the last {SKIP_END}); they need {MIN_POINTS}: run more "
            "--steps, or a wider --start/--end"
        )
    low, high = float(window.min()), float(window.max())
    if high - low <= FLAT * max(abs(low), abs(high)):
        return (
            "the loss is flat over the window: these lrs do not change it "
            "(try a wider --start/--end, or check that the model can learn)"
        )
    return None


def valley(losses: np.ndarray) -> int | str:
    """fastai's valley: the longest strictly decreasing subsequence (O(n²)), then the point a
    third plus a sixth of the way along it; the index, or why there is none. Its bookkeeping
    (`max_start` from the length when the record was set) is fastai's, line for line, so that
    both pick the same point of the same curve."""
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end, max_start = i, i - lds[i]
    if lds[max_end] < 2:
        return "the loss never falls"
    sections = (max_end - max_start) / 3
    return max(0, max_start + int(sections) + int(sections / 2))


def steep(lrs: np.ndarray, losses: np.ndarray) -> int | str:
    """The point of the most negative slope d(loss)/d(ln lr)."""
    slopes = np.gradient(losses, np.log(lrs))
    index = int(np.argmin(slopes))
    return index if slopes[index] < 0 else "the loss never falls"


def slide(lrs: np.ndarray, losses: np.ndarray) -> int | str:
    """fastai's slide: from the end, compare the slope at r with the slope SLIDE_LR_DIFF points
    to its left, moving left until they differ by at most SLIDE_THRESH; the point on the left."""
    slopes = np.gradient(losses, np.log(lrs))
    for right in range(len(losses) - 1, SLIDE_LR_DIFF - 1, -1):
        left = right - SLIDE_LR_DIFF
        if abs(slopes[right] - slopes[left]) <= SLIDE_THRESH:
            return left
    return "the slope never settles"


def peak_lr_key(scheduler_name: str) -> str:
    """The config key that holds the run's peak lr: where a suggestion goes."""
    return PEAK_LR_KEYS.get(scheduler_name, "optimizer.lr")


@dataclass
class RangeCurve:
    """The test's record as it runs: one row per step, and where and why it stopped."""

    grid: Grid
    rows: list[dict[str, Any]] = field(default_factory=list)
    stop: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def column(self, name: str) -> list[float]:
        return [row[name] for row in self.rows]


def write_curve(path: Path, curve: RangeCurve, summary: dict[str, Any]) -> None:
    """lr_find.csv, then summary.json, each written whole and then renamed into place."""
    store.write_csv(path / CURVE_FILE, curve.rows, list(CURVE_COLUMNS))
    store.write_json(path / store.SUMMARY_FILE, summary)


def read_curve(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A find-lr directory's rows and summary, through the readers `lrsched plot` trusts."""
    path = Path(path)
    rows = store.read_rows(path / CURVE_FILE, "step")
    return [row for row in rows if row.get("lr") is not None], store.read_summary(
        path / store.SUMMARY_FILE
    )


def is_find_lr_dir(path: Path) -> bool:
    return (Path(path) / CURVE_FILE).is_file()
