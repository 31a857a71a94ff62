"""Rich tables of runs; they are returned, never printed here. Never imports torch."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from lrsched_cli.stats import ALPHA, ConfigSummary, Estimate, Friedman, differs
from lrsched_cli.store import RunHistory, effective_status

STATUS_STYLES = {
    "completed": "green",
    "interrupted": "yellow",
    "stale": "yellow",
    "diverged": "red",
    "failed": "red",
}
HEAD, TAIL = 5, 5  # rows kept at each end of a long run

# C0 and C1 control characters (ESC starts a terminal escape sequence, BEL ends a title one, CR
# rewrites the line) and the bidirectional overrides that reorder what a reader sees.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_NEWLINE = re.compile(f"[\n{_CONTROL.pattern[1:-1]}]")


def printable(value: Any, lines: bool = False) -> str:
    """`value` as text that shows as written: each control character spelt as an escape
    (`\\x1b`), newlines kept only with `lines`. Rich markup is left alone: print the result
    as a `Text`, never as a markup string."""
    pattern = _CONTROL if lines else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


def plain(value: Any, style: str | None = None, lines: bool = False) -> Text:
    """A user's string (a name, a path, a cell from a file) for the terminal: a `Text`, so
    `[/]` or `[link=...]` stay characters, with control characters escaped."""
    return Text(printable(value, lines), style=style or "")


def render_run(history: RunHistory, max_rows: int = 30) -> Fitted:
    """The per-epoch table: lr, losses, accuracy, time, lr events. Long runs keep both ends,
    the lr events, the best epoch and a sample of the rest, with a "…" row at every gap.

    A terminal too narrow for the whole table with each lr event on two lines at most gets
    it without the time column, then with the events listed under the table."""
    return Fitted(lambda width: _run_table(history, max_rows, width))


def _run_table(history: RunHistory, max_rows: int, width: int | None) -> Table:
    step_interval = history.config.get("scheduler", {}).get("interval") == "step"
    shown = _rows_to_show(history, max_rows)
    rows = [history.epochs[index] for index in shown]
    has_accuracy = any(row.get("val_accuracy") is not None for row in history.epochs)
    headers = ["epoch", "lr (epoch start)" if step_interval else "lr", "train loss", "val loss"]
    headers += ["val acc", "time"] if has_accuracy else ["time"]
    cells = [_cells(row, has_accuracy) for row in rows]
    events = [str(row.get("lr_event") or "") for row in rows]
    with_time, events_in_column = _run_layout(headers, cells, events, width)

    # The name only: render_summary's last line says where the run is
    table = Table(title=plain(history.name), title_justify="left")
    for header in headers if with_time else headers[:-1]:
        table.add_column(header, justify="right", no_wrap=True)  # numbers are never cut
    if events_in_column:
        table.add_column("lr event", overflow="fold")
    best = history.summary.get("best_epoch")
    previous_index = -1
    for index, row, row_cells, event in zip(shown, rows, cells, events, strict=True):
        if index > previous_index + 1:
            table.add_row("…", *[""] * (len(table.columns) - 1), style="dim")
        row_cells = [plain(cell) for cell in (row_cells if with_time else row_cells[:-1])]
        table.add_row(
            *row_cells, *([plain(event)] if events_in_column else []), style=_style(row, best)
        )
        previous_index = index
    if any(events) and not events_in_column:
        listed = [
            f"epoch {row['epoch']}: {event}"
            for row, event in zip(rows, events, strict=True)
            if event
        ]
        caption = plain("\n".join(["lr events:", *map(printable, listed)]), lines=True)
        table.caption, table.caption_justify = caption, "left"
    return table


def _run_layout(
    headers: list[str], cells: list[list[str]], events: list[str], width: int | None
) -> tuple[bool, bool]:
    """(with the time column, with lr events in a column): the first of those layouts that
    fits `width` with no event over two lines; without a width, everything."""
    has_events = any(events)
    if width is None:
        return True, has_events
    layouts = [(True, True), (False, True)] if has_events else []
    layouts += [(True, False), (False, False)]
    columns = [[header, *(row[i] for row in cells)] for i, header in enumerate(headers)]
    event_width = max([len("lr event")] + [_two_line_width(e) for e in events if e])
    for with_time, in_column in layouts:
        widths = [max(map(cell_len, column)) for column in columns[: None if with_time else -1]]
        widths += [event_width] if in_column else []
        if sum(widths) + 3 * len(widths) + 1 <= width:  # padding 1 + 1 and a border each
            return with_time, in_column
    return layouts[-1]


def _two_line_width(text: str) -> int:
    """The narrowest column that word-wraps `text` onto two lines or fewer."""
    words = text.split()
    for width in range(max(map(cell_len, words)), cell_len(text) + 1):
        lines, line = 1, 0
        for word in words:
            if line and line + 1 + cell_len(word) <= width:
                line += 1 + cell_len(word)
            elif line:
                lines, line = lines + 1, cell_len(word)
            else:
                line = cell_len(word)
        if lines <= 2:
            return width
    return cell_len(text)


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
    parts = [plain(title), table]
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
    # summary.json may come from elsewhere: each value it gives is printed as plain text.
    text.append(printable(status), style=STATUS_STYLES.get(status, "bold"))
    seconds = summary.get("train_seconds", summary.get("wall_seconds", 0))
    text.append(
        printable(
            f": {summary.get('epochs_done', len(history.epochs))}/"
            f"{summary.get('epochs_planned', '?')} epochs, {seconds:.1f} s of training "
            f"on {summary.get('device', '?')}{_threads_note(summary)}"
        )
    )
    if "best_val_loss" in summary:
        best = summary["best_val_loss"]
        if best is None or not math.isfinite(best):  # older summary.json files hold NaN
            text.append("; no epoch had a finite val loss")
        else:
            text.append(
                f"; best val loss {format_number(best)} (epoch {summary['best_epoch']}), "
                f"final {format_number(summary['final_val_loss'])}"
            )
    if "final_val_accuracy" in summary:
        text.append(f", final val acc {summary['final_val_accuracy']:.1%}")
    if summary.get("test_loss") is not None:
        text.append(f"; test loss {format_number(summary['test_loss'])}")
        if summary.get("test_accuracy") is not None:
            text.append(f", test acc {summary['test_accuracy']:.1%}")
    if "stopped_early_at" in summary:
        text.append(f"\nstopped early at epoch {summary['stopped_early_at']}: no improvement")
    if status == "stale":
        pid = printable(summary.get("pid"))
        text.append(f"\nprocess {pid} is gone; its finished epochs are kept")
    text.append("\nrun directory: ")
    text.append(printable(history.path), style="bold")
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
    """Indices of the rows to show, about `max_rows` of them: the first and last epochs and the
    best always; then the lr events; then, where room is left, the lr changes (unless there are
    too many to be news) and an even sample of the rest, each row of which usually costs a "…"
    row as well."""
    rows = history.epochs
    if len(rows) <= max_rows:
        return list(range(len(rows)))
    best = history.summary.get("best_epoch")
    chosen = set(range(HEAD)) | set(range(len(rows) - TAIL, len(rows)))
    chosen |= {i for i, row in enumerate(rows) if best is not None and row.get("epoch") == best}
    events = [i for i, row in enumerate(rows) if row.get("lr_event")]
    changes = [i for i in range(1, len(rows)) if rows[i].get("lr") != rows[i - 1].get("lr")]
    chosen |= set(_spread([i for i in events if i not in chosen], max_rows - len(chosen)))
    changes = [i for i in changes if i not in chosen]
    if len(changes) <= (max_rows - len(chosen)) // 2:  # a schedule that changes every epoch
        chosen |= set(changes)  # gets the even sample below instead
    # The sample fills gaps: a row beside one already shown would tell little
    apart = [i for i in range(len(rows)) if not {i - 1, i, i + 1} & chosen]
    chosen |= set(_spread(apart, (max_rows - len(chosen)) // 2))
    return sorted(chosen)


def _spread(items: list[int], count: int) -> list[int]:
    """`count` of `items`, evenly spaced, the first and the last among them."""
    if count >= len(items):
        return items
    if count <= 1:
        return items[len(items) // 2 :][:count]
    return [items[k * (len(items) - 1) // (count - 1)] for k in range(count)]


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


def render_comparison(
    summaries: list[ConfigSummary],
    metric: str,
    pairwise: list[dict[str, Any]] = (),
    baseline: str | None = None,
    picked: dict[str, float | None] | None = None,
) -> Table:
    """Configs ordered by `metric`'s mean (best first, marked ★), each with its 95% interval.
    `picked` (--tune-lr): each config's picked peak lr, in a column of its own.
    ≈ marks a config that the paired, Holm-adjusted test in `pairwise` cannot tell apart from
    the best (or, with `baseline`, from the baseline, marked ◆); never overlapping intervals,
    which throw the pairing of seeds away. ⚠ marks a config whose schedule lint warned; notes
    under the table name them, and say in how many seeds each ReduceLROnPlateau config cut its
    lr (never: it trained at a constant lr)."""
    columns = [metric] + [m for m in COMPARISON_COLUMNS if m != metric]
    table = Table(title=f"ranked by {metric}: mean ± 95% CI over seeds", title_justify="left")
    table.add_column("")
    table.add_column("config")
    table.add_column("seeds", justify="right")
    if picked is not None:
        table.add_column("picked lr", justify="right", no_wrap=True)
    for column in columns:
        table.add_column(COMPARISON_COLUMNS.get(column, column.replace("_", " ")), justify="right")
    table.add_column("runs", justify="right")
    reference = baseline or (summaries[0].name if summaries else None)
    pairs = {frozenset((row["a"], row["b"])): row for row in pairwise}
    marked = False
    for index, summary in enumerate(summaries):
        estimate = summary.metrics[metric]
        mark = "★" if index == 0 and estimate.mean is not None else ""
        if summary.name == baseline:
            mark += "◆"
        elif pairwise and summary.name != reference and estimate.mean is not None:
            if not differs(pairs.get(frozenset((summary.name, reference)))):
                mark, marked = mark + "≈", True
        cells = [format_estimate(summary.metrics[column], column) for column in columns]
        if picked is not None:
            lr = picked.get(summary.name)
            cells.insert(0, "-" if lr is None else f"{lr:.3g}")
        table.add_row(
            mark + ("⚠" if summary.warnings else ""),
            Name(summary.name),
            _seed_count(summary, metric),
            *cells,
            plain(_run_counts(summary)),
            style="bold green" if index == 0 and estimate.mean is not None else None,
        )
    notes = _comparison_notes(summaries)
    if marked:
        against = f"the baseline {printable(baseline)} (◆)" if baseline else "the best (★)"
        notes.insert(
            0,
            f"≈ no significant difference from {against}: paired Wilcoxon, Holm p ≥ {ALPHA:g}",
        )
    if notes:
        caption = plain("\n".join(map(printable, notes)), lines=True)
        table.caption, table.caption_justify = caption, "left"
    return table


def render_friedman(result: Friedman) -> Text:
    """The Friedman test's line: whether the configs differ at all, over the seeds that every
    config completed."""
    k, n = len(result.names), len(result.seeds)
    head = f"Friedman test, {k} configs × {n} seed{'s' if n != 1 else ''}"
    if result.p is None:
        return Text(f"{head}: not computed (it needs 2 or more seeds every config completed)")
    finding = "they differ" if result.p < ALPHA else "no evidence that they differ"
    return Text(f"{head}: χ² = {result.statistic:.3g}, p = {result.p:.2g}: {finding}")


def render_verdicts(lines: list[str]) -> Group:
    """The verdicts in words, one per line (wrapped lines indented), under a heading that says
    how they were reached."""
    heading = Text("verdicts", style="bold")
    heading.append(f" (paired Wilcoxon signed-rank, Holm-adjusted, α = {ALPHA:g}):")
    body = Table.grid(padding=(0, 1))
    body.add_column(no_wrap=True)
    body.add_column()
    for line in lines:
        body.add_row("•", plain(line))
    return Group(heading, body)


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


def render_pairwise(rows: list[dict[str, Any]]) -> Fitted:
    """Each pair: paired seeds, wins, the mean difference A-B and its 95% interval, and the
    Holm-adjusted p of the paired Wilcoxon test (the raw p and the t-test's are in
    pairwise.csv). Where the terminal has no room for both names beside the numbers, each
    pair's names sit above one another and the numbers follow as one wrapped line."""
    return Fitted(lambda width: _pairwise_table(rows, width))


PAIRWISE_HEADERS = ("seeds", "wins", "mean A-B", "95% CI", "Holm p")
NAME_MIN = 10  # a name column narrower than this reads as a column of fragments


def _pairwise_table(rows: list[dict[str, Any]], width: int) -> Table:
    numbers = [
        [
            str(row["paired_seeds"]),
            f"{row['a_wins']}-{row['b_wins']}",
            _difference(row["mean_difference"]),
            _interval(row.get("difference_ci_low"), row.get("difference_ci_high")),
            _p_value(row.get("holm_p")),
        ]
        for row in rows
    ]
    headers = PAIRWISE_HEADERS
    title = "pairwise, on paired seeds; wins: A-B"
    counts = {row["paired_seeds"] for row in rows}
    if len(counts) == 1:  # the same seeds for every pair: said once, in the title
        (count,) = counts
        title = f"pairwise, on {count} paired seed{'s' if count != 1 else ''}; wins: A-B"
        headers, numbers = headers[1:], [cells[1:] for cells in numbers]
    table = Table(title=title, title_justify="left")
    number_width = sum(
        max(cell_len(header), *(cell_len(cells[i]) for cells in numbers)) + 3
        for i, header in enumerate(headers)
    )
    longest = max((cell_len(name) for row in rows for name in (row["a"], row["b"])), default=1)
    if number_width + 2 * (min(longest, NAME_MIN) + 3) + 1 <= width:
        for header in ("A", "B"):
            table.add_column(header)
        for header in headers:  # numbers are never cut
            table.add_column(header, justify="right", no_wrap=True)
        for row, cells in zip(rows, numbers, strict=True):
            table.add_row(Name(row["a"]), Name(row["b"]), *cells)
        return table
    table.add_column("A vs B")
    table.add_column("")
    for row, cells in zip(rows, numbers, strict=True):
        pair = Group(Name(row["a"]), Text("vs", style="dim"), Name(row["b"]))
        labelled = zip(headers, cells, strict=True)
        table.add_row(pair, Text(" · ".join(f"{header} {cell}" for header, cell in labelled)))
    return table


class Fitted:
    """A table laid out for the width it is printed at (Rich passes it in), so that a narrow
    terminal gets a layout that fits rather than cells cut short."""

    def __init__(self, build: Callable[[int], Table]):
        self.build = build

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.build(options.max_width)


class Name:
    """A config name that wraps after its separators (- _ / = space, and a dot before a
    letter, as in `warmup.epochs`, but not in `0.1`), never into an ellipsis: two names that
    differ only at their ends must stay apart in a narrow column."""

    BREAK = re.compile(r"(?<=[-_/= ])|(?<=\.)(?=[A-Za-z])")

    def __init__(self, name: str):
        self.name = printable(name)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        parts = self.BREAK.split(self.name)
        return Measurement(max(map(cell_len, parts)), cell_len(self.name)).with_maximum(
            options.max_width
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text("\n".join(_wrap_name(self.name, options.max_width)), overflow="fold")


def _wrap_name(name: str, width: int) -> list[str]:
    """`name` in lines of at most `width` cells, broken after separators where it can be."""
    lines = [""]
    for part in Name.BREAK.split(name):
        if lines[-1] and cell_len(lines[-1] + part) > width:
            lines.append("")
        lines[-1] += part
        while cell_len(lines[-1]) > width > 0:  # a part wider than the column is folded
            lines[-1:] = [lines[-1][:width], lines[-1][width:]]
    return [line.rstrip() or line for line in lines]


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
    return "-" if value is None else f"{value:.2g}"


def _difference(value: float | None) -> str:
    """Two significant digits: what a handful of seeds can support of a mean difference."""
    return "-" if value is None else f"{value:.2g}"


def _interval(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "-"
    return f"{_difference(low)}, {_difference(high)}"


def _run_counts(summary: ConfigSummary) -> str:
    counts = summary.statuses
    parts = [f"{n} {status}" for status, n in sorted(counts.items()) if status != "completed"]
    text = f"{counts.get('completed', 0)}/{len(summary.runs)}"
    return text + (f" ({', '.join(parts)})" if parts else "")
