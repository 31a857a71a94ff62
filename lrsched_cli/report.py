"""Rich tables of runs; they are returned, never printed here. Never imports torch."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from lrsched_cli.stats import ConfigSummary, Estimate
from lrsched_cli.store import RunHistory, effective_status

STATUS_STYLES = {
    "completed": "green",
    "interrupted": "yellow",
    "stale": "yellow",
    "diverged": "red",
    "failed": "red",
}
HEAD, TAIL = 5, 5  # rows kept at each end of a long run


def render_run(history: RunHistory, max_rows: int = 30) -> Table:
    """The per-epoch table: lr, losses, accuracy, time. Long runs keep both ends, every lr
    change and the best epoch, and mark the rows left out."""
    step_interval = history.config.get("scheduler", {}).get("interval") == "step"
    table = Table(title=f"{history.name}  ({history.path})", title_justify="left")
    table.add_column("epoch", justify="right")
    table.add_column("lr (epoch start)" if step_interval else "lr", justify="right")
    table.add_column("train loss", justify="right")
    table.add_column("val loss", justify="right")
    has_accuracy = any(row.get("val_accuracy") is not None for row in history.epochs)
    if has_accuracy:
        table.add_column("val acc", justify="right")
    table.add_column("time", justify="right")
    has_events = any(row.get("lr_event") for row in history.epochs)
    if has_events:
        table.add_column("lr event")
    best = history.summary.get("best_epoch")
    previous_index = 0
    for index in _rows_to_show(history, max_rows):
        if index > previous_index + 1:
            table.add_row("…", *[""] * (len(table.columns) - 1), style="dim")
        row = history.epochs[index]
        events = [Text(str(row.get("lr_event") or ""))] if has_events else []
        table.add_row(*_cells(row, has_accuracy), *events, style=_style(row, best))
        previous_index = index
    return table


def render_plan(plan) -> Group:
    """The planned lr per epoch: the first and last epochs and every change, with momentum
    where the scheduler cycles it; a note for ReduceLROnPlateau, whose lr depends on
    validation."""
    cfg = plan.config
    title = f"{cfg.name}: {cfg.scheduler.name}, stepped per {plan.interval}, {cfg.epochs} epochs"
    if plan.interval == "step":
        title += f" x {plan.steps_per_epoch} steps"
    table = Table()
    table.add_column("epoch", justify="right")
    table.add_column("lr" if plan.interval == "epoch" else "lr (epoch start)", justify="right")
    if plan.interval == "step":
        table.add_column("lr range in the epoch", justify="right")
    if plan.momentum is not None:
        table.add_column("momentum", justify="right")
    lrs = plan.epoch_lrs
    keep = {0, 1, len(lrs) - 2, len(lrs) - 1} | {
        i for i in range(1, len(lrs)) if lrs[i] != lrs[i - 1]
    }
    shown = sorted(i for i in keep if 0 <= i < len(lrs))
    if len(shown) > 40:  # a schedule that changes every epoch: keep both ends and a sample
        shown = sorted(set(shown[:10] + shown[-10:] + shown[10 : -10 : max(1, len(shown) // 20)]))
    previous = -1
    for index in shown:
        if index > previous + 1:
            table.add_row("…", *[""] * (len(table.columns) - 1), style="dim")
        cells = [str(index + 1), format_number(lrs[index])]
        if plan.interval == "step":
            epoch = plan.step_lrs[index * plan.steps_per_epoch : (index + 1) * plan.steps_per_epoch]
            cells.append(f"{format_number(min(epoch))} – {format_number(max(epoch))}")
        if plan.momentum is not None:
            cells.append(format_number(plan.momentum[index]))
        table.add_row(*cells)
        previous = index
    parts = [Text(title), table]
    if plan.plateau is not None:
        parts.append(
            Text(
                f"ReduceLROnPlateau: the lr depends on validation. Shown: the fastest "
                f"decay it allows (every epoch worse than the best); the floor is "
                f"min_lr = {plan.plateau['floor']}"
            )
        )
    return Group(*parts)


def _threads_note(summary: dict) -> str:
    threads = summary.get("threads")
    if threads is None or summary.get("device") != "cpu":
        return ""
    return f" ({threads} thread{'s' if threads != 1 else ''})"


def render_summary(history: RunHistory) -> Text:
    """One closing paragraph: status, best and final val loss, time, and where the run is."""
    summary = history.summary
    status = effective_status(summary)
    text = Text()
    text.append(f"{status}", style=STATUS_STYLES.get(status, "bold"))
    seconds = summary.get("train_seconds", summary.get("wall_seconds", 0))
    text.append(
        f": {summary.get('epochs_done', len(history.epochs))}/"
        f"{summary.get('epochs_planned', '?')} epochs, {seconds:.1f} s of training "
        f"on {summary.get('device', '?')}{_threads_note(summary)}"
    )
    if "best_val_loss" in summary:
        text.append(
            f"; best val loss {format_number(summary['best_val_loss'])} "
            f"(epoch {summary['best_epoch']}), final "
            f"{format_number(summary['final_val_loss'])}"
        )
    if "final_val_accuracy" in summary:
        text.append(f", final val acc {summary['final_val_accuracy']:.1%}")
    if "stopped_early_at" in summary:
        text.append(f"\nstopped early at epoch {summary['stopped_early_at']}: no improvement")
    if status == "stale":
        text.append(f"\nprocess {summary.get('pid')} is gone; its finished epochs are kept")
    text.append("\nrun directory: ")
    text.append(str(history.path), style="bold")
    return text


def format_number(value: Any) -> str:
    """Four significant digits; small lrs keep theirs (1.000e-05)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


def _rows_to_show(history: RunHistory, max_rows: int) -> list[int]:
    rows = history.epochs
    if len(rows) <= max_rows:
        return list(range(len(rows)))
    keep = set(range(HEAD)) | set(range(len(rows) - TAIL, len(rows)))
    keep |= {i for i in range(1, len(rows)) if rows[i].get("lr") != rows[i - 1].get("lr")}
    keep |= {i for i, row in enumerate(rows) if row.get("lr_event")}
    keep |= {
        i for i, row in enumerate(rows) if row.get("epoch") == history.summary.get("best_epoch")
    }
    return sorted(keep)[: max_rows * 2]


def _cells(row: dict[str, Any], has_accuracy: bool) -> list[str]:
    cells = [
        str(row["epoch"]),
        format_number(row.get("lr")),
        format_number(row.get("train_loss")),
        format_number(row.get("val_loss")),
    ]
    if has_accuracy:
        accuracy = row.get("val_accuracy")
        cells.append("-" if accuracy is None else f"{accuracy:.1%}")
    seconds = row.get("seconds")
    cells.append("-" if seconds is None else f"{seconds:.2f}s")
    return cells


def _style(row: dict[str, Any], best_epoch: Any) -> str | None:
    losses = (row.get("train_loss"), row.get("val_loss"))
    if any(isinstance(v, float) and not math.isfinite(v) for v in losses):
        return "bold red"  # the epoch the run diverged
    return "bold green" if row.get("epoch") == best_epoch else None


def render_comparison(summaries: list[ConfigSummary], metric: str) -> Table:
    """Configs ranked by `metric` (best first, marked ★); a config whose 95% interval overlaps
    the best's is marked ≈: with these seeds it cannot be told apart from the best. ⚠ marks a
    config whose schedule lint warned; notes under the table name them, and say in how many
    seeds each ReduceLROnPlateau config cut its lr (never: it trained at a constant lr)."""
    columns = [metric] + [m for m in COMPARISON_COLUMNS if m != metric]
    table = Table(title=f"ranked by {metric}: mean ± 95% CI over seeds", title_justify="left")
    table.add_column("")
    table.add_column("config")
    table.add_column("seeds", justify="right")
    for column in columns:
        table.add_column(COMPARISON_COLUMNS.get(column, column.replace("_", " ")), justify="right")
    table.add_column("runs", justify="right")
    best = summaries[0].metrics[metric] if summaries else None
    for index, summary in enumerate(summaries):
        estimate = summary.metrics[metric]
        mark = "★" if index == 0 and estimate.mean is not None else ""
        if index and estimate.mean is not None and best is not None and estimate.overlaps(best):
            mark = "≈"
        cells = [format_estimate(summary.metrics[column], column) for column in columns]
        table.add_row(
            mark + ("⚠" if summary.warnings else ""),
            summary.name,
            _seed_count(summary, metric),
            *cells,
            _run_counts(summary),
            style="bold green" if mark == "★" else None,
        )
    notes = _comparison_notes(summaries)
    if notes:
        table.caption, table.caption_justify = "\n".join(notes), "left"
    return table


def _seed_count(summary: ConfigSummary, metric: str) -> str:
    """The seeds in the estimate; for epochs_to_target, those that never got there apart."""
    count = len(summary.metrics[metric].values)
    if metric == "epochs_to_target" and summary.not_reached:
        return f"{count - summary.not_reached} + {summary.not_reached} not reached"
    return str(count)


def _comparison_notes(summaries: list[ConfigSummary]) -> list[str]:
    notes = []
    warned = [summary.name for summary in summaries if summary.warnings]
    if warned:
        notes.append(f"⚠ schedule warnings (printed above, in summary.json): {', '.join(warned)}")
    for summary in summaries:
        if summary.scheduler == "ReduceLROnPlateau":
            cut, runs = summary.lr_cut_runs
            notes.append(f"{summary.name}: lr cut in {cut}/{runs} seeds")
    return notes


COMPARISON_COLUMNS = {  # metric -> header, the columns shown beside the ranking metric
    "final_val_loss": "final val loss",
    "final_val_accuracy": "val acc",
    "auc_val_loss": "loss AUC",
}


def render_pairwise(rows: list[dict[str, Any]]) -> Table:
    """Each pair: paired seeds, wins, and the paired tests' p-values."""
    table = Table(title="pairwise, on paired seeds; wins: A-B", title_justify="left")
    for header in ("A", "B", "seeds", "wins", "mean A-B", "Wilcoxon p", "t-test p"):
        if header in ("A", "B"):  # names wrap in a narrow terminal; numbers are never cut
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["a"],
            row["b"],
            str(row["paired_seeds"]),
            f"{row['a_wins']}-{row['b_wins']}",
            format_number(row["mean_difference"]),
            _p_value(row["wilcoxon_p"]),
            _p_value(row["ttest_p"]),
        )
    return table


def format_estimate(estimate: Estimate, metric: str = "") -> str:
    """`mean ± half-width`; accuracies in percent."""
    if estimate.mean is None:
        return "-"
    if "accuracy" in metric:
        mean, half = f"{estimate.mean:.1%}", None
        if estimate.ci_low is not None:
            half = f"{(estimate.ci_high - estimate.ci_low) / 2:.1%}"
    else:  # three digits of a mean and two of its interval are all that seeds can support
        mean, half = f"{estimate.mean:.3g}", None
        if estimate.ci_low is not None:
            half = f"{(estimate.ci_high - estimate.ci_low) / 2:.2g}"
    return mean if half is None else f"{mean} ± {half}"


def _p_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _run_counts(summary: ConfigSummary) -> str:
    counts = summary.statuses
    parts = [f"{n} {status}" for status, n in sorted(counts.items()) if status != "completed"]
    text = f"{counts.get('completed', 0)}/{len(summary.runs)}"
    return text + (f" ({', '.join(parts)})" if parts else "")
