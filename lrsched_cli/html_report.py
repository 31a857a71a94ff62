"""`lrsched report`: one self-contained HTML page of a comparison directory, from its files.

Everything is inline (CSS, PNGs as base64 data URIs): the page opens from a mail attachment or
a file share with no server and no network, and prints. Never imports torch or matplotlib.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import platform
import shlex
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lrsched_cli import __version__, store
from lrsched_cli.errors import RunNotFound, RunUnusable

SUMMARY_FILE, REPORT_FILE = "summary.json", "report.html"
# Tables in the order a reader wants them; any other CSV of the comparison follows.
TABLES = {
    "summary.csv": "Every metric, per config (mean, standard deviation, 95% interval)",
    "pairwise.csv": "Pairwise tests on paired seeds",
    "tuning.csv": "Learning-rate tuning",
}
PLOT_ORDER = ("val_loss", "val_accuracy", "lr", "ranks", "sensitivity")
HEADLINE = {  # summary.csv column stem -> header, shown beside the ranking metric
    "final_val_loss": "final val loss",
    "final_val_accuracy": "val accuracy",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "auc_val_loss": "loss AUC",
}

STYLE = """
:root { --ink: #1d232b; --muted: #5b6675; --line: #d5dae1; --best: #e7f5ea; --warn: #8a5a00; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       max-width: 1100px; margin: 2rem auto; padding: 0 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; } h2 { font-size: 1.2rem; margin: 2rem 0 .6rem;
     border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
.meta, .note, figcaption { color: var(--muted); font-size: .9rem; }
.verdict { background: #f3f6fa; border-left: 4px solid #3a6ea5; padding: .6rem 1rem; }
.verdict li { margin: .2rem 0; }
.warnings li { color: var(--warn); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .3rem 0 1rem; }
th, td { border-bottom: 1px solid var(--line); padding: .25rem .55rem; text-align: right;
         white-space: nowrap; }
th { background: #f5f7f9; } th:first-child, td:first-child { text-align: left; }
td.text, th.text { text-align: left; white-space: normal; }
tr.best td { background: var(--best); font-weight: 600; }
figure { margin: 1rem 0; break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 1rem; }
details { border: 1px solid var(--line); border-radius: 4px; padding: .3rem .8rem;
          margin: .4rem 0; }
summary { cursor: pointer; font-weight: 600; }
pre, code { font: .82rem/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
pre { background: #f7f8fa; padding: .6rem; overflow-x: auto; white-space: pre-wrap; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { color: var(--muted); } dd { margin: 0; }
@media print {
  @page { size: A4; margin: 14mm; }
  body { font-size: 10pt; max-width: none; margin: 0; padding: 0; }
  h2 { break-after: avoid; } table, figure, details, pre { break-inside: avoid; }
  .scroll { overflow: visible; } th, td { padding: .1rem .3rem; }
  table { font-size: 7.5pt; } .plots { display: block; }
  figure img { max-height: 120mm; border: none; }
  details { border: none; padding: 0; } details::details-content { content-visibility: visible; }
  summary { list-style: none; }
}
"""
# Collapsed configs are printed open: a printout has nothing to click.
PRINT_SCRIPT = (
    "window.addEventListener('beforeprint',function(){"
    "document.querySelectorAll('details').forEach(function(d){d.open=true;});});"
)


def read_comparison(path: Path) -> dict[str, Any]:
    """The comparison's summary.json; RunUnusable when `path` is not a comparison directory."""
    path = Path(path)
    if (path / store.METRICS_FILE).is_file():
        raise RunNotFound(
            f"{path} is a run directory, not a comparison; `lrsched compare {path} ...` "
            "makes a comparison of runs"
        )
    try:
        document = json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        what = "does not exist" if not path.exists() else f"has no {SUMMARY_FILE}"
        raise RunNotFound(
            f"{path} {what}; expected a comparison directory made by `lrsched compare`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunUnusable(f"{path / SUMMARY_FILE}: cannot be read ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("configs"), list):
        raise RunNotFound(
            f"{path} is not a comparison directory: its {SUMMARY_FILE} has no configs "
            "(made by `lrsched compare`)"
        )
    return document


def record_command(compare_dir: Path, argv: Sequence[str]) -> None:
    """Add the command line that made a comparison to its summary.json, unless it has one."""
    path = Path(compare_dir) / SUMMARY_FILE
    document = json.loads(path.read_text(encoding="utf-8"))
    if "command" not in document:
        document["command"] = shlex.join(["lrsched", *argv[1:]])
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)


def write_report(compare_dir: Path, out: Path | None = None) -> Path:
    """Write the comparison's HTML report (default: report.html inside it); returns its path.

    Example:
        >>> write_report(Path("runs/20261125-101500-compare"))
    """
    compare_dir = Path(compare_dir)
    document = read_comparison(compare_dir)
    out = Path(out) if out is not None else compare_dir / REPORT_FILE
    page = render_report(compare_dir, document)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    os.replace(temporary, out)
    return out


def render_report(compare_dir: Path, document: dict[str, Any]) -> str:
    """The page as one string of HTML."""
    runs = _read_runs(compare_dir)
    title = f"lrsched comparison: {compare_dir.absolute().name}"
    sections = [
        _header(compare_dir, document, runs),
        _verdict(document),
        _ranking(document),
        _warnings(document),
        _plots(compare_dir),
        _tables(compare_dir, document),
        _configs(runs, [str(row.get("name")) for row in document["configs"]]),
        _provenance(document, runs),
    ]
    body = "\n".join(section for section in sections if section)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n"
        f"<script>{PRINT_SCRIPT}</script>\n</head><body>\n{body}\n</body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    from lrsched_cli.report import format_number

    if value is None or value == "":
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return format_number(value)


def _read_runs(compare_dir: Path) -> list[store.RunHistory]:
    """The comparison's runs that can be read; a damaged one is left out of the configs."""
    runs = []
    if not (compare_dir / "runs").is_dir():
        return runs
    for path in sorted((compare_dir / "runs").iterdir()):
        try:
            runs.append(store.read_run(path))
        except RunUnusable:
            continue
    return runs


def _header(compare_dir: Path, document: dict[str, Any], runs: list) -> str:
    seeds = document.get("seeds") or []
    made = time.strftime("%Y-%m-%d %H:%M", time.localtime(compare_dir.stat().st_mtime))
    confidence = document.get("confidence")
    parts = [
        f"ranked by <b>{_e(document.get('metric', '?'))}</b>",
        f"{len(document['configs'])} configs",
        f"seeds {_e(', '.join(map(str, seeds)))}" if seeds else "",
        f"{len(runs)} runs",
        f"{confidence:.0%} intervals" if isinstance(confidence, int | float) else "",
        f"made {made}",
    ]
    interrupted = (
        '<p class="note"><b>Interrupted:</b> only the runs that ended are compared.</p>'
        if document.get("interrupted")
        else ""
    )
    meta = " · ".join(part for part in parts if part)
    return (
        f"<h1>Comparison {_e(compare_dir.absolute().name)}</h1>\n"
        f'<p class="meta">{meta}</p>{interrupted}'
    )


def _verdict(document: dict[str, Any]) -> str:
    lines = document.get("verdict") or document.get("verdicts") or []
    if isinstance(lines, str):
        lines = lines.splitlines()
    if not lines:
        return ""
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f'<h2>Verdict</h2>\n<div class="verdict"><ul>{items}</ul></div>'


def _estimate(row: dict[str, Any], stem: str) -> str:
    mean = row.get(f"{stem}_mean")
    if mean is None:
        return "–"
    low, high = row.get(f"{stem}_ci_low"), row.get(f"{stem}_ci_high")
    if isinstance(low, int | float) and isinstance(high, int | float):
        return f"{_number(mean)} [{_number(low)}, {_number(high)}]"
    return _number(mean)


def _ranking(document: dict[str, Any]) -> str:
    """The ranked table the terminal shows: best first, each metric's mean [95% interval]."""
    rows, metric = document["configs"], document.get("metric", "")
    stems = [metric] + [stem for stem in HEADLINE if stem != metric]
    stems = [stem for stem in stems if any(row.get(f"{stem}_mean") is not None for row in rows)]
    header = ["rank", "config", "scheduler", "seeds"]
    header += [HEADLINE.get(stem, stem.replace("_", " ")) for stem in stems] + ["completed"]
    body = []
    for rank, row in enumerate(rows, start=1):
        cells = [str(rank), _e(row.get("name", "")), _e(row.get("scheduler", "")), ""]
        cells[3] = _e(row.get("seeds", ""))
        cells += [_e(_estimate(row, stem)) for stem in stems]
        cells.append(f"{_e(row.get('completed', ''))}/{_e(row.get('runs', ''))}")
        css = ' class="best"' if rank == 1 else ""
        tds = [
            f'<td class="text">{cell}</td>' if i in (1, 2) else f"<td>{cell}</td>"
            for i, cell in enumerate(cells)
        ]
        body.append(f"<tr{css}>" + "".join(tds) + "</tr>")
    head = "".join(
        f'<th class="text">{_e(cell)}</th>' if i in (1, 2) else f"<th>{_e(cell)}</th>"
        for i, cell in enumerate(header)
    )
    return (
        f'<h2>Ranking</h2>\n<p class="note">Best first by {_e(metric)}; each cell is the mean '
        "over seeds [95% interval].</p>\n"
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _warnings(document: dict[str, Any]) -> str:
    warnings = document.get("warnings") or []
    if not warnings:
        return ""
    items = "".join(f"<li>{_e(warning)}</li>" for warning in warnings)
    return f'<h2>Warnings</h2>\n<ul class="warnings">{items}</ul>'


def _plots(compare_dir: Path) -> str:
    pngs = sorted(compare_dir.glob("*.png"), key=_plot_order)
    if not pngs:
        return ""
    figures = []
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        caption = png.stem.replace("_", " ")
        figures.append(
            f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(png.name)}</figcaption></figure>"
        )
    return f'<h2>Plots</h2>\n<div class="plots">{"".join(figures)}</div>'


def _plot_order(path: Path) -> tuple[int, str]:
    known = PLOT_ORDER.index(path.stem) if path.stem in PLOT_ORDER else len(PLOT_ORDER)
    return known, path.name


def _tables(compare_dir: Path, document: dict[str, Any]) -> str:
    """Every CSV of the comparison, then its runs; summary.csv turned so configs are columns."""
    csvs = [compare_dir / name for name in TABLES if (compare_dir / name).is_file()]
    csvs += sorted(p for p in compare_dir.glob("*.csv") if p.name not in TABLES)
    parts = ["<h2>Tables</h2>"]
    for path in csvs:
        rows = _read_csv(path)
        title = TABLES.get(path.name, path.stem.replace("_", " "))
        parts.append(f"<h3>{_e(title)} <code>{_e(path.name)}</code></h3>")
        if not rows:
            parts.append('<p class="note">No rows.</p>')
        elif path.name == "summary.csv":
            parts.append(_transposed(rows))
        else:
            parts.append(_table(list(rows[0]), [list(row.values()) for row in rows]))
    runs = document.get("runs") or []
    if runs:
        columns = ["name", "seed", "status", "seconds", "path", "error"]
        parts.append("<h3>Runs <code>summary.json</code></h3>")
        parts.append(_table(columns, [[run.get(c) for c in columns] for run in runs]))
    return "\n".join(parts)


def _read_csv(path: Path) -> list[dict[str, Any]]:
    """A comparison's CSV: names and lists are text, the rest numbers (empty: no value)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [{key: _parse(cell) for key, cell in row.items()} for row in csv.DictReader(handle)]


def _parse(cell: str | None) -> Any:
    if cell is None or cell == "":
        return None
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            continue
    return cell


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="text">{_e(cell)}</td>'
            if isinstance(cell, str)
            else f"<td>{_number(cell)}</td>"
            for cell in row
        )
        + "</tr>"
        for row in rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _transposed(rows: list[dict[str, Any]]) -> str:
    """One row per column of summary.csv, one column per config: forty-odd metrics read down."""
    names = [str(row.get("name", "")) for row in rows]
    columns = [column for column in rows[0] if column != "name"]
    return _table(
        ["", *names], [[column, *(row.get(column) for row in rows)] for column in columns]
    )


def _configs(runs: list[store.RunHistory], ranked: list[str]) -> str:
    """Each config's resolved config.yaml, collapsed, in rank order; seeds of one config
    differ only in their seed."""
    import yaml

    by_name: dict[str, list[store.RunHistory]] = {name: [] for name in ranked}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    if not runs:
        return ""
    parts = ["<h2>Configs</h2>"]
    for name, group in by_name.items():
        if not group:
            continue
        seeds = sorted(str(run.config.get("seed", "?")) for run in group)
        text = yaml.safe_dump(group[0].config, sort_keys=False)
        parts.append(
            f'<details><summary>{_e(name)} <span class="note">(seeds {_e(", ".join(seeds))}; '
            f"shown: seed {_e(group[0].config.get('seed', '?'))})</span></summary>"
            f"<pre>{_e(text)}</pre></details>"
        )
    return "\n".join(parts)


def _provenance(document: dict[str, Any], runs: list[store.RunHistory]) -> str:
    command = document.get("command")
    shown = f"<code>{_e(command)}</code>" if command else "not recorded in summary.json"

    def used(key: str) -> str:
        values = sorted({str(run.summary[key]) for run in runs if run.summary.get(key)})
        return ", ".join(values) or "not recorded"

    rows = [
        ("command", shown),
        ("lrsched (runs)", _e(used("lrsched_version"))),
        ("torch (runs)", _e(used("torch_version"))),
        ("device (runs)", _e(used("device"))),
        ("report", _e(f"lrsched {__version__}, Python {platform.python_version()}")),
    ]
    items = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    return f"<h2>How it was made</h2>\n<dl>{items}</dl>"
