"""PNG plots of a run, drawn from its stored files with matplotlib's Figure API (no pyplot state).

matplotlib is imported inside the functions and torch never, so `lrsched plot` starts fast.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from lrsched_cli import store
from lrsched_cli.store import RunHistory

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DECADE_RATIO = 10  # a range spanning this factor or more is drawn on a log axis
FIGSIZE, DPI = (7, 4), 120
LR_SCALES = ("auto", "linear", "log")  # auto: log where the lr spans a decade or more


def plot_run(history: RunHistory, out_dir: Path, lr_scale: str = "auto") -> list[Path]:
    """Draw lr.png, loss.png and, for classification, accuracy.png; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not history.epochs:  # stopped before its first epoch ended: a normal state, said so
        return [_no_epochs(history, out_dir / name) for name in ("lr.png", "loss.png")]
    paths = [
        plot_lr(history, out_dir / "lr.png", lr_scale),
        plot_losses(history, out_dir / "loss.png"),
    ]
    if any(value is not None for value in history.column("val_accuracy")):
        paths.append(plot_accuracy(history, out_dir / "accuracy.png"))
    return paths


def plot_lr(history: RunHistory, path: Path, lr_scale: str = "auto") -> Path:
    """The lr each epoch trained with; for step schedules, every optimizer step as well."""
    figure, axes = _figure(f"{history.name}: learning rate ({_scheduler_name(history)})")
    epochs, lrs = history.column("epoch"), history.column("lr")
    steps = [row for row in history.steps if row.get("lr") is not None]
    if _varies_within_epochs(history):
        axes.plot(
            _fractional_epochs(steps),
            [row["lr"] for row in steps],
            color="tab:blue",
            lw=1.2,
            label="lr per step",
        )
        axes.plot(epochs, lrs, "o", color="tab:orange", ms=3, label="lr at epoch start")
        values = [row["lr"] for row in steps]
    else:
        # Epoch e trains on [e, e + 1): repeat the last value so the final epoch has its span.
        axes.step(
            [*epochs, epochs[-1] + 1],
            [*lrs, lrs[-1]],
            where="post",
            color="tab:blue",
            lw=1.5,
            label="lr (whole epoch)",
        )
        axes.plot(epochs, lrs, "o", color="tab:blue", ms=3)
        values = lrs
    _set_lr_scale(axes, values, lr_scale)
    axes.set_ylabel("learning rate")
    _mark_events(axes, history)
    _plot_momentum(axes, history.column("epoch"), history.column("momentum"))
    return _save(figure, axes, path)


def plot_plan(plan, path: Path) -> Path:
    """The planned lr: per step for step schedules, per epoch otherwise."""
    cfg = plan.config
    figure, axes = _figure(f"{cfg.name}: planned learning rate ({cfg.scheduler.name})")
    epochs = list(range(1, len(plan.epoch_lrs) + 1))
    if plan.interval == "step":
        x = [1 + i / plan.steps_per_epoch for i in range(len(plan.step_lrs))]
        axes.plot(x, plan.step_lrs, color="tab:blue", lw=1.2, label="lr per step")
        values = plan.step_lrs
    else:
        axes.step(
            [*epochs, epochs[-1] + 1],
            [*plan.epoch_lrs, plan.epoch_lrs[-1]],
            where="post",
            color="tab:blue",
            lw=1.5,
            label="lr (whole epoch)",
        )
        values = plan.epoch_lrs
    if plan.plateau is not None:
        axes.lines[-1].set_label("fastest decay ReduceLROnPlateau allows")
        axes.axhline(plan.plateau["floor"] or min(values), color="grey", ls=":", label="min_lr")
    _log_scale_if_wide(axes, values)
    axes.set_ylabel("learning rate")
    _plot_momentum(axes, epochs, plan.momentum or [])
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(figure, axes, path)


def _mark_events(axes: Axes, history: RunHistory) -> None:
    """A dotted line and a label at each epoch whose lr an event explains."""
    events = [(row["epoch"], row["lr_event"]) for row in history.epochs if row.get("lr_event")]
    for epoch, text in events[:12]:  # more would be unreadable
        axes.axvline(epoch, color="grey", ls=":", lw=0.8)
        axes.annotate(
            _literal(text),
            (epoch, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color="dimgrey",
            xytext=(-2, -4),
            textcoords="offset points",
        )


TITLES = {"lr": "learning rate", "loss": "loss"}


def _no_epochs(history: RunHistory, path: Path) -> Path:
    figure, axes = _figure(f"{history.name}: {TITLES[path.stem]}")
    status = history.summary.get("status", "unknown")
    note = _literal(f"no finished epoch yet (status: {status})")
    axes.text(0.5, 0.5, note, ha="center", va="center")
    axes.set_xticks([])
    axes.set_yticks([])
    figure.savefig(path)
    return path


def _plot_momentum(axes: Axes, epochs: list, momentum: list) -> None:
    """Momentum (or Adam's beta1) on a second axis, where a scheduler cycles it."""
    if not momentum or all(m is None for m in momentum):
        return
    twin = axes.twinx()
    twin.plot(
        epochs,
        momentum,
        color="tab:purple",
        lw=1,
        ls="--",
        marker=".",
        ms=3,
        label="momentum / beta1 (epoch start)",
    )
    twin.set_ylabel("momentum / beta1")
    handles, labels = twin.get_legend_handles_labels()
    axes.plot([], [], color="tab:purple", ls="--", label=labels[0])


def plot_losses(history: RunHistory, path: Path) -> Path:
    """Train and val loss per epoch, the best val epoch marked."""
    figure, axes = _figure(f"{history.name}: loss")
    epochs = history.column("epoch")
    train, val = history.column("train_loss"), history.column("val_loss")
    axes.plot(epochs, train, marker="o", ms=3, label="train loss")
    axes.plot(epochs, val, marker="o", ms=3, label="val loss")
    best = history.summary.get("best_epoch")
    if best is not None:
        axes.axvline(best, color="grey", ls=":", lw=1, label=f"best val loss (epoch {best})")
    _log_scale_if_wide(axes, train + val)
    axes.set_ylabel("loss")
    return _save(figure, axes, path)


def plot_accuracy(history: RunHistory, path: Path) -> Path:
    """Validation accuracy per epoch."""
    figure, axes = _figure(f"{history.name}: validation accuracy")
    accuracy = [None if v is None else 100 * v for v in history.column("val_accuracy")]
    axes.plot(
        history.column("epoch"), accuracy, marker="o", ms=3, color="tab:green", label="val accuracy"
    )
    axes.set_ylabel("accuracy (%)")
    return _save(figure, axes, path)


def _figure(title: str, wide: bool = False):
    from matplotlib.figure import Figure

    # Wide figures leave the plot its width beside a legend of many configs.
    size = (FIGSIZE[0] * 1.45, FIGSIZE[1]) if wide else FIGSIZE
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(_literal(title))
    axes.set_xlabel("epoch")
    axes.grid(True, which="major", alpha=0.3)
    return figure, axes


def _save(figure, axes: Axes, path: Path, legend_title: str | None = None) -> Path:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes.get_legend_handles_labels()
    labels = [_literal(label) for label in labels]  # run names
    if len(handles) > 4:  # many configs: keep the curves clear
        axes.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            fontsize="small",
            title=legend_title,
            title_fontsize="small",
        )
    else:
        axes.legend(handles, labels, loc="best", title=legend_title, title_fontsize="small")
    figure.savefig(path)
    return path


def _literal(text: object) -> str:
    """`text` drawn as written: a `$` pair would start matplotlib's mathtext (a name such as
    `a$^$` fails to parse), and control characters are spelt as escapes."""
    shown = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(text)
    )
    return shown.replace("$", r"\$")


def _set_lr_scale(axes: Axes, values: list, lr_scale: str) -> None:
    """`log` and `linear` as asked; `auto` is log where the lr spans a decade or more. A log
    axis bends CyclicLR's triangles into arcs, and a final 1e-8 flattens the rest: hence the
    choice."""
    if lr_scale == "log":
        axes.set_yscale("log", nonpositive="mask")
    elif lr_scale == "auto":
        _log_scale_if_wide(axes, values)


def _log_scale_if_wide(axes: Axes, values: list) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not finite or len(finite) != len([v for v in values if v is not None]):
        return  # a log axis would hide zeros and negatives
    ratio = max(finite) / min(finite)
    if ratio < DECADE_RATIO:
        return
    axes.set_yscale("log")
    if ratio < DECADE_RATIO**2:  # about one decade: label a few minor ticks, as plain numbers
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        axes.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
        axes.yaxis.set_major_formatter(plain)
        axes.yaxis.set_minor_formatter(plain)


def _fractional_epochs(steps: list[dict]) -> list[float]:
    """Step i of n in epoch e sits at e + i/n, so steps line up with the epoch axis."""
    per_epoch = Counter(row["epoch"] for row in steps)
    seen: Counter = Counter()
    positions = []
    for row in steps:
        positions.append(row["epoch"] + seen[row["epoch"]] / per_epoch[row["epoch"]])
        seen[row["epoch"]] += 1
    return positions


def _varies_within_epochs(history: RunHistory) -> bool:
    first_lr: dict[int, float] = {}
    for row in history.steps:
        if first_lr.setdefault(row["epoch"], row["lr"]) != row["lr"]:
            return True
    return False


def _scheduler_name(history: RunHistory) -> str:
    return str(history.config.get("scheduler", {}).get("name", "none"))


def plot_comparison(
    groups: dict[str, list[RunHistory]], out_dir: Path, lr_scale: str = "auto"
) -> list[Path]:
    """Overlays of several configs (each a list of runs over seeds): lr.png, val_loss.png and,
    for classification, val_accuracy.png. Losses and accuracy show the mean across seeds with
    a band from the lowest to the highest seed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_overlay_lr(groups, out_dir / "lr.png", lr_scale)]
    paths.append(_overlay_metric(groups, "val_loss", "validation loss", out_dir / "val_loss.png"))
    if any(
        v is not None for runs in groups.values() for r in runs for v in r.column("val_accuracy")
    ):
        paths.append(
            _overlay_metric(
                groups,
                "val_accuracy",
                "validation accuracy (%)",
                out_dir / "val_accuracy.png",
                scale=100,
            )
        )
    return paths


def _overlay_lr(groups: dict[str, list[RunHistory]], path: Path, lr_scale: str) -> Path:
    """One lr curve per config (its first run: the schedule does not depend on the seed,
    except ReduceLROnPlateau, whose seeds are drawn thin)."""
    figure, axes = _figure("learning rate", wide=len(groups) > 4)
    values = []
    for colour, (name, runs) in zip(_colours(len(groups)), groups.items(), strict=False):
        for index, run in enumerate(r for r in runs if r.epochs):
            xs, ys, drawstyle = _lr_curve(run)
            values += ys
            label = name if index == 0 else None
            axes.plot(
                xs,
                ys,
                drawstyle=drawstyle,
                color=colour,
                lw=1.5 if index == 0 else 0.6,
                alpha=1.0 if index == 0 else 0.5,
                label=label,
            )
    _set_lr_scale(axes, values, lr_scale)
    axes.set_ylabel("learning rate")
    return _save(figure, axes, path)


def _overlay_metric(groups, column: str, label: str, path: Path, scale: float = 1.0) -> Path:
    figure, axes = _figure(label, wide=len(groups) > 4)
    values = []
    for colour, (name, runs) in zip(_colours(len(groups)), groups.items(), strict=False):
        curves = [
            [None if v is None else v * scale for v in r.column(column)]
            for r in runs
            if any(v is not None for v in r.column(column))  # a regression run has no accuracy
        ]
        if not curves:
            continue
        length = min(len(c) for c in curves)  # diverged seeds stop early: compare what all have
        columns = [
            [c[i] for c in curves if c[i] is not None and math.isfinite(c[i])]
            for i in range(length)
        ]
        epochs = [i + 1 for i in range(length) if columns[i]]
        columns = [c for c in columns if c]
        mean = [sum(c) / len(c) for c in columns]
        seeds = len({seed_of(r) for r in runs if r.epochs})
        axes.plot(
            epochs, mean, color=colour, lw=1.5, label=f"{name} ({seeds} seed{'s' * (seeds > 1)})"
        )
        axes.fill_between(
            epochs,
            [min(c) for c in columns],
            [max(c) for c in columns],
            color=colour,
            alpha=0.18,
            lw=0,
        )
        values += [v for c in columns for v in c]
    if scale == 1.0:
        _log_scale_if_wide(axes, values)
    axes.set_ylabel(label)
    return _save(figure, axes, path, legend_title="mean over seeds; band: lowest to highest")


def _lr_curve(run: RunHistory) -> tuple[list[float], list[float], str]:
    """x, y and drawstyle: every step where the lr changes within epochs, else a step curve."""
    if _varies_within_epochs(run):
        steps = [row for row in run.steps if row.get("lr") is not None]
        return _fractional_epochs(steps), [row["lr"] for row in steps], "default"
    epochs, lrs = run.column("epoch"), run.column("lr")
    return [*epochs, epochs[-1] + 1], [*lrs, lrs[-1]], "steps-post"


def _colours(count: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def seed_of(run: RunHistory) -> int | None:
    return run.summary.get("seed", run.config.get("seed"))


def overlay_groups(runs: list[RunHistory]) -> dict[str, list[RunHistory]]:
    """Runs grouped for an overlay, each group labelled by what sets it apart: runs of one
    config over several seeds share a label (and a band); runs of one name whose configs
    differ are labelled by the differing keys (`quickstart optimizer.lr=0.05`), and runs that
    differ in nothing but their directory by its name."""
    by_name: dict[str, list[RunHistory]] = {}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    groups: dict[str, list[RunHistory]] = {}
    for name, members in by_name.items():
        seeds = [seed_of(run) for run in members]
        if len(set(seeds)) == len(seeds):
            groups[name] = members
            continue
        keys = store.differing_keys([run.config for run in members], ignore=("seed", "name"))
        labelled: dict[str, list[RunHistory]] = {}
        for run in members:
            values = store.flatten(run.config)
            label = " ".join([name, *(f"{k}={values.get(k)}" for k in keys)])
            labelled.setdefault(label, []).append(run)
        for label, same in labelled.items():
            if len({seed_of(run) for run in same}) == len(same):
                groups[label] = same
                continue
            for run in same:  # the same config run again: its seed, or its directory, tells
                seed = seed_of(run)
                repeated = [seed_of(other) for other in same].count(seed) > 1
                groups[f"{label} seed {seed}" + (f" ({run.path.name})" if repeated else "")] = [run]
    return groups


# One colour and marker per rule, the same in every lr_find.png.
RULE_STYLES = {
    "valley": ("tab:green", "o"),
    "steep": ("tab:orange", "v"),
    "minimum": ("tab:purple", "s"),
    "slide": ("tab:cyan", "D"),
}
STOP_LABELS = {
    "diverged": "stopped: loss above 4 x best",
    "nonfinite": "stopped: non-finite loss",
    "interrupted": "stopped: Ctrl-C",
    "end_of_grid": "end of grid",
}


def plot_lr_find(run_dir: Path, out_dir: Path | None = None) -> Path:
    """lr_find.png of a find-lr directory, from its lr_find.csv and summary.json alone: loss
    against lr (log axis), raw faint, smoothed bold, each rule's lr and the stop point marked."""
    import numpy as np

    from lrsched_cli.lr_rules import PNG_FILE, read_curve

    rows, summary = read_curve(run_dir)
    out_dir = out_dir or Path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = summary.get("name") or Path(run_dir).name
    figure, axes = _figure(f"{name}: LR range test ({summary.get('optimizer', '?')})")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss")
    lrs = [row["lr"] for row in rows]
    raw = [row["loss"] for row in rows]
    smoothed = [row["smoothed_loss"] for row in rows]
    if not rows:
        return _no_curve(figure, axes, out_dir / PNG_FILE, summary)
    axes.set_xscale("log")
    axes.plot(lrs, raw, color="tab:blue", lw=0.8, alpha=0.3, label="loss (each batch)")
    axes.plot(lrs, smoothed, color="tab:blue", lw=2, label="smoothed loss")
    finite = [(lr, s) for lr, s in zip(lrs, smoothed, strict=True) if math.isfinite(s)]
    for item in summary.get("suggestions", []):
        if item.get("lr") is None or not finite:
            continue
        colour, marker = RULE_STYLES.get(item["rule"], ("black", "o"))
        # minimum's lr is a tenth of the point it read: mark the lr itself, on the curve
        x = [np.log(lr) for lr, _ in finite]
        y = float(np.interp(np.log(item["lr"]), x, [s for _, s in finite]))
        default = " (default)" if item.get("default") else ""
        axes.plot(
            item["lr"], y, marker, color=colour, ms=8, mec="black", mew=0.6, zorder=3,
            label=f"{item['rule']}{default}: {item['lr']:.1e}",
        )  # fmt: skip
    _mark_stop(axes, rows, summary.get("stopped") or {})
    _fit_loss_axis(axes, raw, smoothed)
    handles, labels = axes.get_legend_handles_labels()
    axes.legend(handles, [_literal(label) for label in labels], loc="best", fontsize="small")
    path = out_dir / PNG_FILE
    figure.savefig(path)
    return path


def _mark_stop(axes: Axes, rows: list[dict], stopped: dict) -> None:
    """A red dotted line at the lr where the test stopped, and a cross on the curve there."""
    step = stopped.get("step")
    at = next((row for row in rows if row["step"] == step), rows[-1])
    label = STOP_LABELS.get(stopped.get("reason"), "stopped")
    axes.axvline(at["lr"], color="tab:red", ls=":", lw=1.2, label=f"{label} ({at['lr']:.2g})")
    if math.isfinite(at["smoothed_loss"]):
        axes.plot(at["lr"], at["smoothed_loss"], "X", color="tab:red", ms=9, zorder=3)


def _fit_loss_axis(axes: Axes, raw: list, smoothed: list) -> None:
    """The y range of the curve the rules read, with room: the blow-up that stops the test
    (up to 4 x the best loss, and a raw loss beyond) would squash it. The stop line shows
    where the curve leaves the top."""
    from lrsched_cli.lr_rules import SKIP_END

    read = smoothed[:-SKIP_END] if len(smoothed) > 2 * SKIP_END else smoothed
    values = [v for v in read if v is not None and math.isfinite(v)]
    if not values:
        return
    low = min([*values, *(v for v in raw if v is not None and math.isfinite(v))])
    high = max(values)
    pad = 0.08 * (high - low or abs(high) or 1)
    axes.set_ylim(low - pad, high + pad)


def _no_curve(figure, axes: Axes, path: Path, summary: dict) -> Path:
    note = _literal(f"no step finished (status: {summary.get('status', 'unknown')})")
    axes.text(0.5, 0.5, note, ha="center", va="center")
    axes.set_xticks([])
    axes.set_yticks([])
    figure.savefig(path)
    return path


def plot_ranks(result, path: Path) -> Path:
    """The critical-difference diagram (Demsar 2006) of a `stats.Friedman` result: each
    config at its mean rank across seeds (1 = best, on the left), and a bar under every group
    whose ranks lie within Nemenyi's critical difference. A picture only: the verdicts come
    from the Holm-adjusted paired tests, which keep the size of each seed's difference."""
    from matplotlib.figure import Figure

    k = len(result.names)
    order = sorted(range(k), key=lambda i: result.mean_ranks[i])
    ranks = [result.mean_ranks[i] for i in order]
    names = [_literal(result.names[i]) for i in order]
    left = (k + 1) // 2  # the better half is labelled on the left, the rest on the right
    label_rows = max(left, k - left)
    height = 1.6 + 0.32 * label_rows
    figure = Figure(figsize=(FIGSIZE[0], height), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.set_xlim(0.5, k + 0.5)
    axes.set_ylim(-0.35 * (label_rows + 1), 1.1)
    axes.axis("off")
    axes.hlines(0, 1, k, color="black", lw=1)
    for tick in range(1, k + 1):
        axes.vlines(tick, 0, 0.08, color="black", lw=1)
        axes.text(tick, 0.12, str(tick), ha="center", va="bottom", fontsize="small")
    colours = _colours(k)
    for index, (rank, name) in enumerate(zip(ranks, names, strict=True)):
        on_left = index < left
        row = index if on_left else k - 1 - index
        y = -0.35 * (row + 1)
        x_text = 0.55 if on_left else k + 0.45
        axes.plot([rank, rank, x_text], [0, y, y], color=colours[order[index]], lw=1.2)
        axes.text(
            x_text + (-0.03 if on_left else 0.03),
            y,
            f"{name} ({rank:.2f})" if on_left else f"({rank:.2f}) {name}",
            ha="right" if on_left else "left",
            va="center",
            fontsize="small",
        )
    cd = result.critical_difference
    if cd is not None:
        axes.plot([1, 1 + cd], [0.75, 0.75], color="black", lw=1.5)
        axes.vlines([1, 1 + cd], 0.7, 0.8, color="black", lw=1.5)
        axes.text(1 + cd / 2, 0.82, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize="small")
        for level, (start, end) in enumerate(_cliques(ranks, cd)):
            y = -0.1 - 0.07 * level
            axes.plot([ranks[start] - 0.03, ranks[end] + 0.03], [y, y], color="black", lw=3)
    seeds = len(result.seeds)
    title = f"mean rank over {seeds} seed{'s' if seeds != 1 else ''} (1 = best)"
    if result.p is not None:
        title += f"; Friedman p = {result.p:.2g}"
    axes.set_title(title + "\na bar joins configs Nemenyi cannot tell apart", fontsize="medium")
    figure.savefig(path)
    return path


def _cliques(ranks: list[float], cd: float) -> list[tuple[int, int]]:
    """The maximal runs of configs (sorted by rank) spanning less than `cd`, of two or more."""
    spans = []
    for start in range(len(ranks)):
        end = start
        while end + 1 < len(ranks) and ranks[end + 1] - ranks[start] < cd:
            end += 1
        if end > start and not any(s <= start and end <= e for s, e in spans):
            spans.append((start, end))
    return spans


def plot_sensitivity(tuning: dict, path: Path) -> Path:
    """`compare --tune-lr`'s sweep (tuning.json's document): each config's mean val metric
    against its peak lr (log x), a band from the best to the worst tuning seed, an x where a
    tuning run diverged or failed (at the top edge: it has no value), and a star at the pick."""
    from matplotlib.transforms import blended_transform_factory

    metric = tuning["val_metric"].replace("final_", "")
    seeds = len(tuning["tuning_seeds"])
    figure, axes = _figure(
        f"{metric} against peak lr: mean and range over {seeds} tuning seed"
        f"{'s' if seeds != 1 else ''}",
        wide=len(tuning["configs"]) > 4,
    )
    axes.set_xscale("log")
    axes.set_xlabel("peak lr")
    axes.set_ylabel(f"{metric} (final epoch)")
    top = blended_transform_factory(axes.transData, axes.transAxes)
    colours = _colours(len(tuning["configs"]))
    finite_values = []
    for colour, (name, entry) in zip(colours, tuning["configs"].items(), strict=False):
        points = entry["points"]
        lrs = [p["lr"] for p in points]
        seen = [[v for v in p["values"] if v is not None and math.isfinite(v)] for p in points]
        finite_values += [v for values in seen for v in values]
        means = [p["mean"] for p in points]
        axes.plot(
            lrs,
            [math.nan if m is None else m for m in means],
            marker="o",
            ms=3,
            color=colour,
            label=_literal(f"{name} (pick {entry['pick']:.3g})" if entry["pick"] else name),
        )
        # The band spans the seeds that finished; where one diverged, the x says so.
        low = [min(values) if values else math.nan for values in seen]
        high = [max(values) if values else math.nan for values in seen]
        axes.fill_between(lrs, low, high, color=colour, alpha=0.15, lw=0)
        failed = [p["lr"] for p in points if any(v is None for v in p["values"])]
        if failed:
            axes.plot(failed, [0.97] * len(failed), "x", color=colour, ms=7, mew=2, transform=top)
        pick = next((p for p in points if p["lr"] == entry["pick"]), None)
        if pick is not None and pick["mean"] is not None:
            axes.plot([pick["lr"]], [pick["mean"]], "*", color=colour, ms=14, mec="black", mew=0.6)
    notes = "★ pick   × a tuning seed diverged or failed"
    ceiling = _loss_ceiling(tuning) if tuning.get("lower_is_better", True) else None
    if ceiling is not None and finite_values and max(finite_values) > ceiling:
        # A blown-up loss (1e25) would flatten every curve near its best: cut the axis above
        # twice the worst loss at a grid's smallest lr or pick, and mark what lies beyond.
        low = min(finite_values)
        if low > 0 and ceiling / low > 10:
            axes.set_yscale("log")
            axes.set_ylim(low / 1.5, ceiling)
        else:
            axes.set_ylim(low - 0.05 * (ceiling - low), ceiling)
        for index, (colour, entry) in enumerate(
            zip(colours, tuning["configs"].values(), strict=False)
        ):
            over = [p["lr"] for p in entry["points"] if (p["mean"] or 0) > ceiling]
            y = 0.95 - 0.035 * index  # one row per config, so that none hides another
            if over:
                axes.plot(over, [y] * len(over), "^", color=colour, ms=6, transform=top)
        notes += "   ▲ mean above the axis"
    elif tuning.get("lower_is_better", True) and finite_values and min(finite_values) > 0:
        if max(finite_values) / min(finite_values) > 10:  # losses near their best are small
            axes.set_yscale("log")
    axes.text(0.01, 0.01, notes, transform=axes.transAxes, fontsize="small", color="0.3")
    handles, labels = axes.get_legend_handles_labels()
    if len(handles) > 4:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    else:
        axes.legend(loc="best", fontsize="small")
    figure.savefig(path)
    return path


def _loss_ceiling(tuning: dict) -> float | None:
    """Twice the worst mean loss at any config's smallest lr or at its pick: the scale on which
    the curves near their best can be read."""
    anchors = []
    for entry in tuning["configs"].values():
        points = entry["points"]
        anchors += [p["mean"] for p in points[:1] if p["mean"] is not None]
        anchors += [p["mean"] for p in points if p["lr"] == entry["pick"] and p["mean"]]
    return 2 * max(anchors) if anchors and max(anchors) > 0 else None
