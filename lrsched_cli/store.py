"""The run directory: create it, append each finished epoch, write the summary, read runs back.

Stdlib only: `lrsched plot` and `compare` read runs through this module without importing torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lrsched_cli.errors import RunInUse, RunNotFound, RunUnusable

LOCK_FILE = ".lock"
CONFIG_FILE, METRICS_FILE, STEPS_FILE, SUMMARY_FILE = (
    "config.yaml",
    "metrics.csv",
    "steps.csv",
    "summary.json",
)
STEP_COLUMNS = ("step", "epoch", "lr")


@dataclass
class RunHistory:
    """A run as read back from its directory."""

    path: Path
    config: dict[str, Any]
    epochs: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.epochs]


def create_run_dir(runs_dir: Path, name: str, timestamp: bool = True) -> Path:
    """A new directory `runs_dir/<timestamp>-<name>[-N]` (without the timestamp inside a
    comparison, whose runs then list by config and seed); two runs never get the same one."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    stem = safe_name(name)
    if timestamp:
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}"
    for attempt in range(1, 10_000):
        path = runs_dir / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            path.mkdir()  # atomic: a concurrent run that lost the race tries the next suffix
            return path
        except FileExistsError:
            continue
    raise OSError(f"no free run directory name under {runs_dir} for {stem}")


def safe_name(name: str) -> str:
    """`name` as a single path component: no separators, no `..`, nothing hidden."""
    cleaned = re.sub(r"[^A-Za-z0-9._=-]+", "-", name).strip(".-=")
    return cleaned[:80] or "run"


class RunWriter:
    """Appends epochs as they finish; every write leaves the files readable if the process dies.

    With `resume_at=(epochs, steps)`, an existing run is reopened: rows past that point (work
    done after the last checkpoint) are dropped and appending continues; `config`, when not
    empty, replaces the saved one.
    """

    def __init__(
        self,
        path: Path,
        config: dict[str, Any],
        metric_columns: list[str],
        resume_at: tuple[int, int] | None = None,
    ):
        self.path = path
        self.metric_columns = metric_columns
        if config:  # a resumed run keeps its config, unless it is trained on to more epochs
            _replace_text(path / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
        if resume_at is None:
            self._metrics = _open_csv(path / METRICS_FILE, metric_columns)
            self._steps = _open_csv(path / STEPS_FILE, STEP_COLUMNS)
        else:
            epochs, steps = resume_at
            self._metrics = _reopen_csv(path / METRICS_FILE, "epoch", epochs)
            self._steps = _reopen_csv(path / STEPS_FILE, "step", steps)

    def append_epoch(self, record: dict[str, Any], steps: list[tuple[int, int, float]]) -> None:
        """Write one finished epoch: its steps first, so a metrics row implies its steps."""
        self._steps.writer.writerows(steps)
        self._steps.handle.flush()
        self._metrics.writer.writerow([_cell(record.get(c)) for c in self.metric_columns])
        self._metrics.handle.flush()

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Replace summary.json whole (write, then rename): readers never see half a file."""
        write_json(self.path / SUMMARY_FILE, summary)

    def close(self) -> None:
        self._metrics.handle.close()
        self._steps.handle.close()


RESUMABLE = ("interrupted", "failed", "stale")  # what `lrsched run --resume` continues


def resumable(path: Path) -> bool:
    """Whether the run in `path` stopped part way, by its summary.json."""
    try:
        summary = json.loads((Path(path) / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and effective_status(summary) in RESUMABLE


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(item) for item in value]
    return value


def effective_status(summary: dict[str, Any]) -> str:
    """The summary's status, or `stale` for a `running` run whose process is gone."""
    status = summary.get("status", "unknown")
    if status == "running" and summary.get("hostname") == socket.gethostname():
        if not _process_alive(summary.get("pid")):
            return "stale"
    return status


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:  # a full disk: leave no half-written file behind
        temporary.unlink(missing_ok=True)
        raise


@dataclass
class _CsvFile:
    handle: io.TextIOWrapper
    writer: Any


def _open_csv(path: Path, columns) -> _CsvFile:
    handle = path.open("w", newline="", encoding="utf-8")
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    handle.flush()
    return _CsvFile(handle, writer)


def _reopen_csv(path: Path, key: str, keep: int) -> _CsvFile:
    """Keep the header and the complete rows whose `key` is at most `keep`, then append."""
    text = _read_text(path)
    header = text.splitlines()[0] if text else ""
    rows = [row for row in read_rows(path) if isinstance(row.get(key), int) and row[key] <= keep]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([_cell(row.get(c)) for c in header.split(",")] for row in rows)
    _replace_text(path, f"{header}\n{buffer.getvalue()}")
    handle = path.open("a", newline="", encoding="utf-8")
    return _CsvFile(handle, csv.writer(handle, lineterminator="\n"))


def _cell(value: Any) -> str:
    """A value as CSV text that `csv`, pandas and `_number` read back as the same value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ";".join(_cell(item) for item in value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        # Full precision, so plots and comparisons see what torch saw. float() first: numpy's
        # float64 is a float whose repr is `np.float64(0.1)` under numpy 2.
        return repr(float(value))
    return str(value)


def write_json(path: Path, document: Any) -> None:
    """Replace a JSON file whole (write, then rename). A non-finite number (a diverged run's
    loss) is written as null: strict JSON has none."""
    text = json.dumps(_finite_or_null(document), indent=2, allow_nan=False)
    _replace_text(path, text + "\n")


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Rows of dicts as a CSV file whose columns are every key, in first-seen order (or
    `columns`, which also gives a file of no rows its header)."""
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(row.get(column)) for column in columns] for row in rows)
    _replace_text(path, buffer.getvalue())


def read_run(path: Path) -> RunHistory:
    """Read a run directory; an unterminated last line (a run killed mid-write) is dropped.

    A file that is not what lrsched writes (binary, `[1]`, a row of text) is a RunCorrupt
    naming that file: plot, compare and resume say so instead of failing somewhere later."""
    path = Path(path)
    if not (path / METRICS_FILE).is_file():
        what = "does not exist" if not path.exists() else f"has no {METRICS_FILE}"
        raise RunNotFound(f"{path} {what}; expected a run directory made by `lrsched run`")
    return RunHistory(
        path=path,
        config=_read_config(path / CONFIG_FILE),
        epochs=read_rows(path / METRICS_FILE, "epoch"),
        steps=read_rows(path / STEPS_FILE, "step"),
        summary=read_summary(path / SUMMARY_FILE),
    )


class RunCorrupt(RunUnusable):
    """A run directory's file that lrsched did not write as it is: edited or damaged."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}; the run cannot be read")
        self.path = path


CONFIG_BLOCKS = ("data", "model", "optimizer", "scheduler")
# summary.json keys that the tables, plots and statistics read as numbers (null: not finite).
SUMMARY_NUMBERS = (
    "epochs_planned", "epochs_done", "seed", "threads", "wall_seconds", "train_seconds",
    "best_val_loss", "best_epoch", "final_val_loss", "final_epoch", "lr_cuts",
    "final_val_accuracy", "best_val_accuracy", "test_loss", "test_accuracy", "stopped_early_at",
)  # fmt: skip
TEXT_COLUMNS = ("lr_event",)  # every other column of metrics.csv and steps.csv is a number


def _read_config(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        config = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RunCorrupt(path, f"not valid YAML{where}") from None
    if not isinstance(config, dict):
        raise RunCorrupt(path, f"holds a {type(config).__name__}, not a config")
    for block in CONFIG_BLOCKS:
        if not isinstance(config.get(block, {}), dict):
            raise RunCorrupt(path, f"its {block!r} is not a mapping")
    return config


def read_summary(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        summary = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise RunCorrupt(path, f"not valid JSON (line {exc.lineno})") from None
    if not isinstance(summary, dict):
        raise RunCorrupt(path, f"holds a JSON {type(summary).__name__}, not a summary")
    for key in SUMMARY_NUMBERS:
        value = summary.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise RunCorrupt(path, f"its {key!r} is not a number")
    if not isinstance(summary.get("status", ""), str):
        raise RunCorrupt(path, "its 'status' is not text")
    if not isinstance(summary.get("warnings", []), list):
        raise RunCorrupt(path, "its 'warnings' is not a list")
    return summary


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError as exc:
        raise RunCorrupt(path, f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:  # a directory where the file goes, no permission
        raise RunCorrupt(path, f"cannot be read: {exc.strerror}") from None


def read_rows(path: Path, key: str | None = None) -> list[dict[str, Any]]:
    """The rows of a CSV file lrsched wrote: every row as long as the header, numbers in
    every column but the text ones, and `key` (epoch, step), when given, an integer."""
    text = _read_text(path)
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:  # a NUL byte
        raise RunCorrupt(path, f"not a CSV file ({exc})") from None
    if not lines:
        return []
    header, rows = lines[0], []
    if (key is not None and key not in header) or len(set(header)) != len(header):
        raise RunCorrupt(path, f"its first line is not the header lrsched writes (no {key!r})")
    for number, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(header):
            raise RunCorrupt(path, f"line {number} has {len(cells)} of the {len(header)} columns")
        row = {column: _number(cell) for column, cell in zip(header, cells, strict=True)}
        for column, value in row.items():
            if isinstance(value, str) and column not in TEXT_COLUMNS:
                raise RunCorrupt(path, f"line {number}, column {column!r} is not a number")
        if key is not None and not isinstance(row[key], int):
            raise RunCorrupt(path, f"line {number} has no whole {key} number")
        rows.append(row)
    return rows


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def find_runs(path: Path) -> list[Path]:
    """`path` itself when it is a run directory, else the run directories in it: a runs/
    folder, or a comparison directory (whose runs sit in its runs/)."""
    path = Path(path)
    if (path / METRICS_FILE).is_file() or not path.is_dir():
        return [path]
    runs = sorted(p.parent for p in path.glob(f"*/{METRICS_FILE}"))
    runs += sorted(p.parent for p in path.glob(f"runs/*/{METRICS_FILE}"))
    if not runs:
        raise RunNotFound(f"{path} holds no run directories (none has a {METRICS_FILE})")
    return runs


def data_differences(datasets: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """For (name, data block) pairs: each run whose data differ from the first's, and how.
    The batch size is left out: it changes the optimizer steps, not the data."""
    reference_name, reference = datasets[0]
    problems = []
    for name, data in datasets[1:]:
        shared = (set(data) & set(reference)) - {"batch_size"}
        differ = sorted(key for key in shared if data[key] != reference[key])
        if data.get("name") != reference.get("name") or differ:
            keys = ", ".join(differ) or "name"
            problems.append(f"{name} uses other data than {reference_name} ({keys} differ)")
    return problems


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the run directory for this process while it trains there: a second process (two
    resumes of one run) is refused at once. The kernel lets go when the process dies."""
    import fcntl

    handle = (Path(path) / LOCK_FILE).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunInUse(f"{path} is in use by another lrsched process; wait for it to end") from None
    try:
        yield
    finally:
        handle.close()


def move_aside(path: Path) -> Path:
    """Rename `path` to a free `<name>.before-restart[-N]` beside it; returns the new path."""
    for attempt in range(1, 10_000):
        suffix = ".before-restart" + ("" if attempt == 1 else f"-{attempt}")
        target = path.with_name(path.name + suffix)
        if not target.exists():
            os.replace(path, target)
            return target
    raise OSError(f"no free name to move {path} aside")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: {"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing_keys(configs: list[dict[str, Any]], ignore: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys whose values are not the same in every config, in first-seen order."""
    flat = [flatten(config) for config in configs]
    keys = dict.fromkeys(key for values in flat for key in values if key not in ignore)
    return [key for key in keys if len({repr(values.get(key)) for values in flat}) > 1]


def end_running_run(runs_dir: Path, match: dict[str, Any], status: str, error: str | None):
    """The run under `runs_dir` left `running` by a process that died (its summary matches
    `match`, e.g. its pid and host, or its name and seed), marked `status` so that it is never
    read as still running and `run --resume` takes it; returns its directory, or None."""
    for path in sorted(Path(runs_dir).glob(f"*/{SUMMARY_FILE}")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(summary, dict) or summary.get("status") != "running":
            continue
        if any(summary.get(key) != value for key, value in match.items()):
            continue
        summary["status"] = status
        if error:
            summary["error"] = error
        try:
            with locked(path.parent):  # free: the kernel let go when the process died
                write_json(path, summary)
        except (OSError, RunInUse):
            pass  # still read as `stale` once its process is gone
        return path.parent
    return None
