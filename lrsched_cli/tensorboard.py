"""TensorBoard event files from a run directory's own files: while it trains, or afterwards.

Both ways read the rows `store` wrote (metrics.csv, steps.csv, summary.json), so a live run and
`lrsched export tensorboard` write the same events. Never imports torch: tensorboardX is the
writer (the `lrsched[tensorboard]` extra), imported with torch hidden from it.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsched_cli import store
from lrsched_cli.errors import ConfigError, RunNotFound

EXTRA = "pip install 'lrsched[tensorboard]'"
EVENTS_GLOB = "events.out.tfevents.*"
# Keys of the resolved config that say where or how a run ran, not what it trained: they are
# left out of the hparams, so that sessions of one config differ only in their seed.
NOT_HPARAMS = ("name", "device", "threads", "checkpoint_every", "tensorboard")
# Per-epoch metrics.csv columns and their tags; lr_N and momentum are added as found.
EPOCH_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "val_accuracy": "accuracy/val"}
SUMMARY_TAGS = {"test_loss": "test/loss", "test_accuracy": "test/accuracy"}
STEP_TAG = "lr_by_step/group0"  # x axis: the optimizer step, not the epoch


def require_extra(what: str = "tensorboard: true") -> None:
    """Raise ConfigError naming the extra when tensorboardX is not installed (no import)."""
    if importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError(
            f"{what} writes TensorBoard events, which needs the tensorboard extra: {EXTRA}"
        )


def _tensorboardx():
    """The tensorboardX module. It imports torch only to accept tensors, and lrsched gives it
    floats: where torch is not loaded yet (`export`), it stays unloaded (2-3 s saved)."""
    require_extra("lrsched export tensorboard")
    if "torch" in sys.modules:
        import tensorboardX

        return tensorboardX
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX allows
    try:
        import tensorboardX
        import tensorboardX.summary  # noqa: F401
        from tensorboardX.proto import plugin_hparams_pb2  # noqa: F401
    finally:
        del sys.modules["torch"]
    return tensorboardX


def hparams_of(config: dict[str, Any]) -> dict[str, str | float | bool]:
    """The resolved config as flat hparams: dotted keys, lists and mappings as JSON text."""
    flat = store.flatten({k: v for k, v in config.items() if k not in NOT_HPARAMS})
    values: dict[str, str | float | bool] = {}
    for key, value in flat.items():
        if value is None:
            continue
        if isinstance(value, bool | str):
            values[key] = value
        elif isinstance(value, int | float):
            values[key] = float(value)
        else:
            values[key] = json.dumps(value)
    return values


class _CsvTail:
    """The complete rows appended to a CSV file since the last read: a live run's files grow
    by whole epochs, and an unterminated last line (a write in progress) waits for the next."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.header: list[str] | None = None

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        lines = list(csv.reader(io.StringIO(complete.decode("utf-8"))))
        if self.header is None and lines:
            self.header, lines = lines[0], lines[1:]
        return [
            {column: _number(cell) for column, cell in zip(self.header, cells, strict=False)}
            for cells in lines
        ]


def _number(text: str) -> Any:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text  # lr_event: text, not a metric


@dataclass
class _Session:
    """What the hparams plugin shows of one run: its group (the config) and its hparams."""

    group: str
    hparams: dict[str, str | float | bool]
    started: float


class EventWriter:
    """Writes one run's events into `events_dir`, replacing events written there before.

    Per epoch (x: the epoch): losses, val accuracy, the lr of every group, momentum where it is
    cycled. Per optimizer step (x: the step): the lr of group 0. One hparams session per run,
    grouped by config name, written into the events directory itself: tensorboardX's
    add_hparams would open a sub-run named after the time.
    """

    def __init__(self, run_dir: Path, events_dir: Path | None = None):
        self.run_dir = Path(run_dir)
        self.events_dir = Path(events_dir or run_dir)
        tbx = _tensorboardx()
        self._summary_module = tbx.summary
        self.events_dir.mkdir(parents=True, exist_ok=True)
        for old in self.events_dir.glob(EVENTS_GLOB):
            old.unlink()  # a resumed run, or a second export: the rows are all written again
        self._writer = tbx.FileWriter(str(self.events_dir), flush_secs=10)
        self._metrics = _CsvTail(self.run_dir / store.METRICS_FILE)
        self._steps = _CsvTail(self.run_dir / store.STEPS_FILE)
        self._epoch_end: float | None = None
        self._last_epoch = 0

    def start(self, config: dict[str, Any], summary: dict[str, Any]) -> None:
        """The hparams session: the config's name is its group, so seeds of one config sit
        together on the HPARAMS tab."""
        started = summary.get("started_unix") or time.time()
        session = _Session(str(config.get("name", self.run_dir.name)), hparams_of(config), started)
        self._add(_session_start(session), 0, started)
        self._epoch_end = started

    def write_new_rows(self, live: bool = True) -> None:
        """Events for the rows appended since the last call. Live, they are stamped now;
        from files, at the run's start plus each epoch's recorded seconds."""
        steps_by_epoch: dict[int, list[dict[str, Any]]] = {}
        for row in self._steps.read():
            steps_by_epoch.setdefault(int(row["epoch"]), []).append(row)
        for row in self._metrics.read():
            epoch = int(row["epoch"])
            if live or self._epoch_end is None:
                walltime = time.time()
            else:
                walltime = self._epoch_end + float(row.get("seconds") or 0.0)
            self._epoch_end = walltime
            for step in steps_by_epoch.pop(epoch, []):
                self._scalar(STEP_TAG, step["lr"], int(step["step"]), walltime)
            for column, value in row.items():
                tag = _epoch_tag(column)
                if tag is not None and isinstance(value, float):
                    self._scalar(tag, value, epoch, walltime)
            self._last_epoch = epoch
        self._writer.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        """The test metrics at the last epoch, the session's end status, then close."""
        walltime = self._epoch_end or time.time()
        for key, tag in SUMMARY_TAGS.items():
            if isinstance(summary.get(key), int | float):
                self._scalar(tag, summary[key], self._last_epoch, walltime)
        self._add(_session_end(summary.get("status", "")), self._last_epoch, walltime)
        self._writer.close()

    def _scalar(self, tag: str, value: float, step: int, walltime: float) -> None:
        self._add(self._summary_module.scalar(tag, float(value)), step, walltime)

    def _add(self, summary: Any, step: int, walltime: float) -> None:
        self._writer.add_summary(summary, global_step=step, walltime=walltime)


def _epoch_tag(column: str) -> str | None:
    if column in EPOCH_TAGS:
        return EPOCH_TAGS[column]
    if column == "lr":
        return "lr/group0"
    if column.startswith("lr_") and column[3:].isdigit():
        return f"lr/group{column[3:]}"
    if column == "momentum":
        return "momentum/group0"
    return None


def _plugin_summary(tag: str, **content: Any):
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    data = HParamsPluginData(version=0, **content).SerializeToString()
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=data)
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


def _session_start(session: _Session):
    from tensorboardX.proto.plugin_hparams_pb2 import SessionStartInfo

    info = SessionStartInfo(group_name=session.group, start_time_secs=session.started)
    for key, value in session.hparams.items():
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif isinstance(value, float):
            info.hparams[key].number_value = value
        else:
            info.hparams[key].string_value = value
    return _plugin_summary("_hparams_/session_start_info", session_start_info=info)


# The run's status as the hparams plugin's session status; the plugin has none for a run
# stopped by the user (interrupted), which stays unknown.
SESSION_STATUS = {
    "completed": "STATUS_SUCCESS",
    "diverged": "STATUS_FAILURE",
    "failed": "STATUS_FAILURE",
}


def _session_end(status: str):
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import SessionEndInfo

    info = SessionEndInfo(
        status=Status.Value(SESSION_STATUS.get(status, "STATUS_UNKNOWN")),
        end_time_secs=time.time(),
    )
    return _plugin_summary("_hparams_/session_end_info", session_end_info=info)


class RunEvents:
    """A run observer (see runner.RunObserver) that writes TensorBoard events into the run
    directory as each epoch is kept, from the rows just written, and passes every hook on to
    the observer it wraps."""

    def __init__(self, run_dir: Path, observer: Any):
        self.run_dir, self.observer = Path(run_dir), observer
        self.writer: EventWriter | None = None

    def on_start(self, run_dir: Path, epochs: int, steps_per_epoch: int) -> None:
        history = store.read_run(self.run_dir)  # a resumed run's earlier epochs are written too
        self.writer = EventWriter(self.run_dir)
        self.writer.start(history.config, history.summary)
        self.writer.write_new_rows(live=False)
        self.observer.on_start(run_dir, epochs, steps_per_epoch)

    def on_batches(self, *args: Any) -> None:
        self.observer.on_batches(*args)

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.writer.write_new_rows()
        self.observer.on_epoch(record)

    def close(self, summary: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.finish(summary)


def export_run(run_dir: Path, events_dir: Path | None = None) -> Path:
    """Write the events of a finished (or stopped) run from its files; returns where."""
    history = store.read_run(run_dir)
    writer = EventWriter(run_dir, events_dir)
    writer.start(history.config, history.summary)
    writer.write_new_rows(live=False)
    writer.finish(history.summary)
    return writer.events_dir


def comparison_of(run_dir: Path) -> Path | None:
    """The comparison directory holding `run_dir` (in its runs/), if it is in one."""
    parent = Path(run_dir).absolute().parent
    if parent.name == "runs" and (parent.parent / "summary.json").is_file():
        return parent.parent
    return None


def export(inputs: list[Path], out: Path | None = None) -> list[Path]:
    """Events for every run in `inputs` (run directories, comparisons, folders of runs).

    Without `out`, into each run's own directory. With it, into `out/<config>/seed<N>`, and
    for a comparison's runs `out/<comparison>/<config>/seed<N>`: TensorBoard lists runs by
    path, so a comparison's seeds of one config sit together.

    Example:
        >>> export([Path("runs/compare-20261125-101500")], Path("tb"))
    """
    runs = [run for each in inputs for run in store.find_runs(each)]
    for run in runs:
        if not (run / store.METRICS_FILE).is_file():
            raise RunNotFound(
                f"{run} is not a run or comparison directory: it has no {store.METRICS_FILE}"
            )
    if out is None:
        return [export_run(run) for run in runs]
    targets: dict[Path, Path] = {}
    for run in runs:
        history = store.read_run(run)
        config = store.safe_name(history.name)
        where = out / store.safe_name(comparison_of(run).name) if comparison_of(run) else out
        target = where / config / f"seed{history.config.get('seed', 0)}"
        if target in targets.values():  # the same config and seed twice: keep both apart
            target = where / config / store.safe_name(run.name)
        targets[run] = target
    return [export_run(run, target) for run, target in targets.items()]
