"""The `lrsched` command line: parse, call one library function, render, map errors to exit codes.

torch is imported only inside the commands that train, so `--help` and `plot` start fast.
"""

from __future__ import annotations

import json
import math
import os
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
import typer.core

from lrsched_cli import __version__
from lrsched_cli.errors import ConfigError, RunUnusable

if TYPE_CHECKING:
    from lrsched_cli.config import ExperimentConfig
    from lrsched_cli.runner import RunningLoss
    from lrsched_cli.store import RunHistory

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_FAILED = 2, 3, 130, 1
STATUS_EXIT_CODES = {"completed": 0, "diverged": EXIT_DIVERGED, "interrupted": EXIT_INTERRUPTED}


class _PlainHelp(typer.core.TyperCommand):
    """Help in the words a user reads: `RUN...` rather than `{run_dirs}... <list[Path]>`, and
    the whole first sentence of each command's help in the command list, wrapped, never cut."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument):
                param.display_type_rich = lambda ctx: None  # the metavar says it

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument):
                name = param.metavar or param.name.upper()
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces += param.get_usage_pieces(ctx)
        return pieces

    def get_short_help_str(self, limit: int = 45) -> str:
        return (self.help or "").split("\n\n")[0].replace("\n", " ").strip()


app = typer.Typer(
    name="lrsched",
    rich_markup_mode=None,  # plain help: Typer's Rich help costs 0.15 s of imports per --help
    help="Compare PyTorch learning-rate schedulers on small models, from a YAML config.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _LazyConsole:
    """A Rich Console made on first use: `lrsched --help` never needs one (rich.console costs
    a third of the help's start-up)."""

    def __init__(self, **options: Any):
        self._options, self._console = options, None

    def get(self):
        """The real Console, for Rich objects that take one (Progress)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


console = _LazyConsole()
err = _LazyConsole(stderr=True)


def _styled(*parts) -> Any:
    """Rich Text from plain strings and (string, style) pairs: never parsed as markup, and
    control characters escaped (names, paths and messages quote user input). Everything that
    prints a user's string goes through here or through report.plain."""
    from rich.text import Text

    from lrsched_cli.report import printable

    return Text.assemble(
        *(
            (printable(part[0], lines=True), part[1])
            if isinstance(part, tuple)
            else printable(part, lines=True)
            for part in parts
        )
    )


RunsDir = Annotated[
    Path,
    typer.Option(
        "--runs-dir", help="Where run directories are created.", file_okay=False, metavar="DIR"
    ),
]
Kind = Literal["schedulers", "optimizers", "models", "datasets"]
LrScale = Literal["auto", "linear", "log"]
METRIC_ALIASES = {"val_loss": "final_val_loss", "val_accuracy": "final_val_accuracy"}
Metric = Literal[
    "val_loss",
    "val_accuracy",
    "final_val_loss",
    "best_val_loss",
    "final_val_accuracy",
    "best_val_accuracy",
    "auc_val_loss",
    "epochs_to_target",
    "train_seconds",
    "test_loss",
    "test_accuracy",
]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a config value: key.path=value (repeatable).",
        metavar="KEY=VALUE",
    ),
]


def _show_version(value: bool) -> None:
    if value:
        console.print(f"lrsched {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Compare PyTorch learning-rate schedulers on small models, from a YAML config."""


@app.command(cls=_PlainHelp)
def run(
    config: Annotated[
        Path | None, typer.Argument(help="The experiment's YAML config.", metavar="CONFIG")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue a killed or interrupted run in its directory; with --epochs N, "
            "train a run on to N epochs.",
            file_okay=False,
            metavar="RUN",
        ),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    overrides: Overrides = None,
    epochs: Annotated[int | None, typer.Option(help="Override epochs.", min=1, metavar="N")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the seed.", min=0, metavar="N")] = None,
    device: Annotated[
        str | None, typer.Option(help="auto | cpu | cuda | cuda:N | mps", metavar="DEVICE")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the run dir.")] = False,
    strict: Annotated[bool, typer.Option(help="Refuse to train when lint warns.")] = False,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard",
            help="Also write TensorBoard events into the run directory (lrsched[tensorboard]).",
        ),
    ] = False,
) -> None:
    """Train one config and save its run directory: metrics, steps, summary and plots."""
    from lrsched_cli import store

    if (config is None) == (resume is None):
        raise typer.BadParameter("give a CONFIG to run, or --resume RUN_DIR, not both")
    if resume is not None and (overrides or seed is not None or device or tensorboard):
        raise typer.BadParameter(
            "--resume continues the run's saved config; of the overrides it takes --epochs only"
        )
    observer = _ProgressObserver(enabled=not (quiet or as_json))
    with _exit_codes(config, overrides):
        try:
            if resume is not None:
                result = _train(None, resume, observer, quiet, strict, epochs)
            else:
                from lrsched_cli.config import load_config  # pydantic: only for commands that load

                if tensorboard:
                    from lrsched_cli.tensorboard import require_extra

                    require_extra("--tensorboard")
                    overrides = [*(overrides or []), "tensorboard=true"]
                cfg = load_config(config, overrides or [], epochs=epochs, seed=seed, device=device)
                result = _train(cfg, runs_dir, observer, quiet, strict)
            history = store.read_run(result.path)
            _draw_plots(history, history.path)
            _render_result(history, as_json, quiet)
        except KeyboardInterrupt:  # a second Ctrl-C, after training: still say how to go on
            _print_resume_hint(observer.run_dir)
            raise
        if result.status == "interrupted":
            _exit_interrupted()
        raise typer.Exit(STATUS_EXIT_CODES.get(result.status, EXIT_FAILED))


@app.command(cls=_PlainHelp)
def compare(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Configs, globs, folders of configs, or run directories.", metavar="INPUT..."
        ),
    ],
    seeds: Annotated[
        int | None, typer.Option(help="Run seeds 0..N-1 (default 10).", min=1, metavar="N")
    ] = None,
    seed_list: Annotated[
        str | None, typer.Option(help="Seeds to run, e.g. 0,1,2.", metavar="LIST")
    ] = None,
    jobs: Annotated[
        int | None, typer.Option(help="Worker processes (default: cores).", min=1, metavar="N")
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    metric: Annotated[
        Metric,
        typer.Option(
            help="What to rank by (lower is better for losses): "
            + ", ".join(typing.get_args(Metric))
            + ".",
            metavar="METRIC",
        ),
    ] = "final_val_loss",
    target: Annotated[
        float | None, typer.Option(help="Count the epochs until val loss <= this.", metavar="LOSS")
    ] = None,
    overrides: Overrides = None,
    epochs: Annotated[int | None, typer.Option(help="Override epochs.", min=1, metavar="N")] = None,
    force: Annotated[bool, typer.Option(help="Compare runs on different data anyway.")] = False,
    run_plots: Annotated[
        bool, typer.Option(help="Also draw each run's own PNGs (about 1 s a run).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print summary.json.")] = False,
    strict: Annotated[
        bool, typer.Option(help="Refuse to train when a config's schedule lint warns.")
    ] = False,
    executor: Annotated[
        Literal["local", "ray"],
        typer.Option(help="Where the runs train: local processes, or Ray tasks (lrsched[ray])."),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: a local Ray).",
            metavar="ADDR",
        ),
    ] = None,
    storage: Annotated[
        Path | None,
        typer.Option(
            help="Storage every Ray node mounts at this path: the comparison goes there and "
            "workers write their runs into it directly (instead of --runs-dir).",
            metavar="DIR",
        ),
    ] = None,
    gpus_per_job: Annotated[
        float, typer.Option(help="GPUs each Ray task asks for.", min=0, metavar="N")
    ] = 0.0,
    no_checkpoints: Annotated[
        bool,
        typer.Option("--no-checkpoints", help="Write no checkpoints (the runs cannot be resumed)."),
    ] = False,
    baseline: Annotated[
        str | None,
        typer.Option(help="Test each config against this one only (k-1 pairs).", metavar="NAME"),
    ] = None,
    tune_lr: Annotated[
        bool,
        typer.Option(
            "--tune-lr",
            help="Sweep each config's peak lr on tuning seeds (1000, 1001, ...), pick the best "
            "mean val metric, rerun each pick on --seeds and rank by the test metric.",
        ),
    ] = False,
    lr_grid: Annotated[
        str | None,
        typer.Option(
            help="--tune-lr's grid, log-spaced LOW:HIGH:COUNT (default: 9 lrs at x2 around "
            "each config's peak lr).",
            metavar="LOW:HIGH:N",
        ),
    ] = None,
    tune_seeds: Annotated[
        int, typer.Option(help="--tune-lr: tuning seeds per lr.", min=1, metavar="N")
    ] = 2,
    lr_center: Annotated[
        Literal["config", "find-lr"],
        typer.Option(
            help="--tune-lr: centre each grid on the config's peak lr, or on the range "
            "test's valley lr (find-lr).",
        ),
    ] = "config",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the jobs and the run count; train nothing.")
    ] = False,
    fuse: Annotated[
        Literal["auto", "off"],
        typer.Option(
            help="Train the runs that share data, model and optimizer together in one batched "
            "loop (auto), or every run alone (off).",
        ),
    ] = "auto",
) -> None:
    """Compare schedules over paired seeds: rank them, with 95% intervals and paired tests.

    Pairs are tested with the Wilcoxon signed-rank test, Holm-adjusted over all pairs (or
    those against --baseline), after a Friedman test for 3 or more configs; the verdicts
    under the tables say in words which differences are significant."""
    from lrsched_cli import store

    if metric == "epochs_to_target" and target is None:
        raise typer.BadParameter(
            "--metric epochs_to_target needs --target LOSS: the val loss to count epochs to",
            param_hint="--target",
        )
    with _exit_codes(None, overrides):
        from lrsched_cli import compare as comparing

        _check_executor(executor, address, storage, gpus_per_job)
        if storage is not None:
            runs_dir = storage
        if no_checkpoints:
            overrides = [*(overrides or []), "checkpoint_every=0"]
        if fuse == "off":
            overrides = [*(overrides or []), "fuse=false"]
        found = comparing.collect_inputs(inputs, overrides or [], epochs)
        warnings = comparing.check_comparable(found, force)
        for warning in warnings:
            err.print(_styled(("warning: ", "yellow"), warning))
        comparing.check_baseline(found, baseline)
        seed_values = _seeds(seeds, seed_list, comparing.DEFAULT_SEEDS)
        note = comparing.seed_power_note(found, seed_values, baseline)
        if note:
            err.print(_styled(("warning: ", "yellow"), note))
        if tune_lr or lr_grid is not None or lr_center != "config":
            _compare_tuned(
                found,
                seed_values,
                runs_dir,
                jobs,
                metric,
                target,
                warnings,
                as_json,
                strict,
                (executor, address, storage, gpus_per_job),
                baseline,
                (tune_lr, lr_grid, tune_seeds, lr_center, dry_run),
            )
            return
        if dry_run:
            planned = comparing.plan_jobs(found.configs, seed_values)
            _print_jobs([(job.label, "") for job in planned])
            return
        made_runs_dir = not runs_dir.exists()
        out_dir = store.create_run_dir(runs_dir, "compare")
        progress = _CompareProgress(len(found.configs) * len(seed_values), quiet=as_json)
        try:
            with progress, _executor(executor, address, storage, gpus_per_job) as pool:
                comparison = comparing.compare(
                    found,
                    seed_values,
                    out_dir,
                    jobs or os.cpu_count() or 1,
                    METRIC_ALIASES.get(metric, metric),
                    target,
                    warnings,
                    progress.on_result,
                    run_plots,
                    lint=lambda found: _warn_configs(found, strict),
                    pool=pool,
                    baseline=baseline,
                    note=_print_notes(progress),
                )
        except BaseException:
            if made_runs_dir:  # stopped before any run: leave no empty directory behind
                try:
                    runs_dir.rmdir()
                except OSError:
                    pass  # not empty: other runs live there
            raise
        _record_command(comparison.path)
        _draw_comparison(comparison)
        _render_comparison(comparison, as_json)
        if comparison.interrupted:
            ended = "compared the runs that ended; the others never started"
            err.print(_styled(("interrupted", "yellow"), f": {ended}"))
            _exit_interrupted()


@app.command(cls=_PlainHelp)
def plot(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories, or folders of them (runs/, a comparison directory).",
            metavar="RUN...",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where the PNGs go (default: the run directory; for several runs, a new "
            "directory under --runs-dir).",
            metavar="DIR",
            file_okay=False,
        ),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    lr_scale: Annotated[
        LrScale, typer.Option(help="The lr axis: auto (log where it spans a decade), linear, log.")
    ] = "auto",
) -> None:
    """Redraw finished runs' PNGs from their files, trains nothing; several runs are overlaid."""
    from lrsched_cli import plots, store

    with _exit_codes(None):
        from lrsched_cli.lr_rules import is_find_lr_dir

        # A find-lr directory holds a loss curve, not epochs: it has its own PNG.
        for each in [each for each in inputs if is_find_lr_dir(each)]:
            console.print(_styled(str(plots.plot_lr_find(each, out))), soft_wrap=True)
        inputs = [each for each in inputs if not is_find_lr_dir(each)]
        if not inputs:
            return
        histories = [store.read_run(run) for each in inputs for run in store.find_runs(each)]
        if len(histories) == 1:
            paths = plots.plot_run(histories[0], out or histories[0].path, lr_scale)
        else:
            datasets = [(run.name, dict(run.config.get("data", {}))) for run in histories]
            for warning in store.data_differences(datasets):
                err.print(_styled(("warning: ", "yellow"), warning), soft_wrap=True)
            out = out or store.create_run_dir(runs_dir, "overlay")
            paths = plots.plot_comparison(plots.overlay_groups(histories), out, lr_scale)
        for path in paths:
            console.print(_styled(str(path)), soft_wrap=True)


def _train(
    cfg: ExperimentConfig | None,
    directory: Path,
    observer: _ProgressObserver,
    quiet: bool,
    strict: bool,
    epochs: int | None = None,
):
    """Run `cfg` under the runs directory, or resume the run in `directory` when cfg is None
    (on to `epochs`, if given). Lint warnings go to stderr first, --json or not (and stop the
    run, with --strict); --quiet silences them."""
    from lrsched_cli import runner  # torch is imported here, only by commands that train

    def lint(warnings: list[str]) -> None:
        _warn(warnings, strict, quiet)

    with observer:
        if cfg is None:
            return runner.resume_experiment(directory, observer, epochs, lint)
        return runner.run_experiment(cfg, directory, observer, lint=lint)


@app.command(cls=_PlainHelp)
def plan(
    config: Annotated[Path, typer.Argument(help="The experiment's YAML config.", metavar="CONFIG")],
    png: Annotated[
        Path | None, typer.Option(help="Also draw the planned lr to this PNG.", metavar="FILE")
    ] = None,
    overrides: Overrides = None,
    epochs: Annotated[int | None, typer.Option(help="Override epochs.", min=1, metavar="N")] = None,
    strict: Annotated[bool, typer.Option(help="Exit 2 when lint warns.")] = False,
) -> None:
    """Show the lr each epoch (and step) will use, and warnings, before training anything."""
    with _exit_codes(config, overrides):
        from lrsched_cli.config import load_configs

        configs = load_configs(config, overrides or [], epochs=epochs)
        if len(configs) > 1:
            console.print(_styled(f"{config}: {len(configs)} configs from its sweep: block"))
        warnings = [_plan_one(cfg, png, sweep=len(configs) > 1) for cfg in configs]
        if strict and any(warnings):
            _print_error("error", f"{sum(map(len, warnings))} warning(s) and --strict")
            raise typer.Exit(EXIT_USAGE)


def _plan_one(cfg: ExperimentConfig, png: Path | None, sweep: bool) -> list[str]:
    """Print one config's plan and its warnings (a sweep member's named); return them."""
    from lrsched_cli import report, runner

    planned = runner.plan_experiment(cfg)
    console.print(report.render_plan(planned))
    if png is not None:
        from lrsched_cli.plots import plot_plan

        # One PNG per sweep member, named after it, beside the one asked for.
        member = cfg.name.replace("/", "_")
        path = png.with_name(f"{png.stem}-{member}{png.suffix}") if sweep else png
        console.print(_styled(str(plot_plan(planned, path))), soft_wrap=True)
    warnings = [f"{cfg.name}: {w}" if sweep else w for w in planned.warnings]
    _warn(warnings, strict=False, quiet=False)
    return warnings


def _warn(warnings: list[str], strict: bool, quiet: bool) -> None:
    """Print lint warnings; with --strict they are an error (exit 2)."""
    for warning in warnings:
        if not quiet or strict:
            err.print(_styled(("warning: ", "yellow"), warning), soft_wrap=True)
    if strict and warnings:
        _print_error("error", f"{len(warnings)} warning(s) and --strict")
        raise typer.Exit(EXIT_USAGE)


GridMode = Literal["exp", "linear"]


@app.command("find-lr", cls=_PlainHelp)
def find_lr(
    config: Annotated[Path, typer.Argument(help="The experiment's YAML config.", metavar="CONFIG")],
    start: Annotated[float, typer.Option(help="The first lr of the grid.", metavar="LR")] = 1e-7,
    end: Annotated[float, typer.Option(help="The last lr of the grid.", metavar="LR")] = 10.0,
    steps: Annotated[
        int, typer.Option(help="Optimizer steps, one lr each (at least 10).", metavar="N")
    ] = 100,
    mode: Annotated[
        GridMode, typer.Option(help="exp: lrs evenly spaced in log lr; linear: in lr.")
    ] = "exp",
    runs_dir: RunsDir = Path("runs"),
    overrides: Overrides = None,
    seed: Annotated[int | None, typer.Option(help="Override the seed.", min=0, metavar="N")] = None,
    device: Annotated[
        str | None, typer.Option(help="auto | cpu | cuda | cuda:N | mps", metavar="DEVICE")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the directory.")] = False,
) -> None:
    """The LR range test: the loss as the lr grows, and what each rule suggests.

    Trains a throwaway copy of the config's model on its data, with its optimizer and seed,
    one step per lr; the config's scheduler is not used. Writes lr_find.csv, summary.json and
    lr_find.png to a new directory under --runs-dir."""
    from lrsched_cli.lr_rules import Grid

    try:
        grid = Grid(start, end, steps, mode)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with _exit_codes(config, overrides):
        from lrsched_cli import find_lr as range_test  # torch: only for the commands that train
        from lrsched_cli.config import load_config
        from lrsched_cli.plots import plot_lr_find

        cfg = load_config(config, overrides or [], seed=seed, device=device)
        with _FindLrProgress(enabled=not (quiet or as_json)) as progress:
            result = range_test.find_lr(cfg, runs_dir, grid, progress.on_step)
        plot_lr_find(result.path)
        _render_find_lr(result.path, result.summary, as_json, quiet)
        if result.status == "interrupted":
            err.print(_styled(("interrupted", "yellow"), ": the curve so far is kept"))
            _exit_interrupted()


def _render_find_lr(path: Path, summary: dict[str, Any], as_json: bool, quiet: bool) -> None:
    """The suggestions as a table, then where the test stopped and where its files are."""
    if as_json:
        print(json.dumps({"run_dir": str(path), **summary}, indent=2))
        return
    if quiet:
        print(path)
        return
    from rich.table import Table

    from lrsched_cli.lr_rules import RULES

    table = Table(title="suggested lr", title_justify="left")
    for header in ("rule", "lr", "step", "use it with"):
        table.add_column(header, overflow="fold", justify="right" if header == "step" else "left")
    for item in summary["suggestions"]:
        name = item["rule"] + (" *" if item["default"] else "")
        if item["lr"] is None:
            table.add_row(name, "-", "", _styled((item["reason"], "dim")))
        else:
            table.add_row(name, f"{item['lr']:.1e}", str(item["step"]), item["use"])
    console.print(table)
    rules = " · ".join(f"{rule}: {text}" for rule, text in RULES.items())
    console.print(_styled((f"* the default. {rules}", "dim")))
    stopped = summary["stopped"]
    if stopped.get("step"):
        where = f"stopped at step {stopped['step']} (lr {stopped['lr']:.2g}): {stopped['detail']}"
        console.print(_styled(where))
    for note in summary.get("notes", []):
        err.print(_styled(("note: ", "yellow"), note), soft_wrap=True)
    console.print(_styled("directory: ", (str(path), "bold")), soft_wrap=True)


class _FindLrProgress:
    """The range test's steps as a transient bar, with the lr and smoothed loss reached; drawn
    only on a terminal, as the run's progress is."""

    def __init__(self, enabled: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            console=console.get(),
            transient=True,
        )
        self.enabled = enabled and console.is_terminal
        self.task = None
        self.described_at = -math.inf

    def __enter__(self) -> _FindLrProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def on_step(self, step: int, steps: int, lr: float, smoothed: float) -> None:
        if not self.enabled:
            return
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("lr range test", total=steps)
        now = time.monotonic()
        if now - self.described_at >= _ProgressObserver.REFRESH:
            self.described_at = now
            text = f"lr {lr:.1e} · smoothed loss {smoothed:.4g}"
            self.progress.update(self.task, description=text)
        self.progress.update(self.task, completed=step)


def _record_command(compare_dir: Path) -> None:
    """The command line goes into summary.json, for `lrsched report` to show."""
    import sys

    from lrsched_cli.html_report import record_command

    record_command(compare_dir, sys.argv)


export_app = typer.Typer(
    help="Write finished runs' files in another tool's format.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(export_app, name="export")


@export_app.command("tensorboard", cls=_PlainHelp)
def export_tensorboard(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories, comparison directories, or folders of runs.",
            metavar="RUN_OR_COMPARE_DIR...",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write under DIR/<config>/seed<N> (a comparison's runs under "
            "DIR/<comparison>/...), not into each run directory.",
            metavar="DIR",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """TensorBoard event files for finished runs, from their files; trains nothing.

    Needs the tensorboard extra: pip install 'lrsched[tensorboard]'."""
    with _exit_codes(None):
        from lrsched_cli.tensorboard import export

        written = export(inputs, out)
        for path in written:
            console.print(_styled(str(path)), soft_wrap=True)
        where = out or (inputs[0] if len(inputs) == 1 else Path("."))
        console.print(_styled("view with: ", (f"tensorboard --logdir {where}", "bold")))


@app.command("report", cls=_PlainHelp)
def report_comparison(
    compare_dir: Annotated[
        Path, typer.Argument(help="A comparison directory.", metavar="COMPARE_DIR")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="The HTML file to write (default: report.html in COMPARE_DIR).",
            metavar="FILE",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """One self-contained HTML page of a comparison: tables, verdict, plots, configs.

    Opens in any browser with no server or network, and prints."""
    with _exit_codes(None):
        from lrsched_cli.html_report import write_report

        console.print(_styled(str(write_report(compare_dir, out))), soft_wrap=True)


@app.command("list", cls=_PlainHelp)
def list_names(
    kind: Annotated[
        Kind | None,
        typer.Argument(
            help="One kind: " + ", ".join(typing.get_args(Kind)) + "; default: all four.",
            metavar="KIND",
        ),
    ] = None,
) -> None:
    """List every name a config may use, with its parameters and defaults."""
    from rich.table import Table

    from lrsched_cli.catalog import KINDS, list_entries

    for each in [kind] if kind else KINDS:
        table = Table(title=each, title_justify="left", show_lines=False)
        for header in ("name", "parameters (default)", "description"):
            table.add_column(header, overflow="fold")
        for entry in list_entries(each):
            table.add_row(
                *(_styled(cell) for cell in (entry.name, entry.parameters, entry.description))
            )
        console.print(table)


@app.command(cls=_PlainHelp)
def schema() -> None:
    """Print the config's JSON Schema, for editors' YAML support."""
    from lrsched_cli.config import ExperimentConfig

    print(json.dumps(ExperimentConfig.model_json_schema(), indent=2))


def _seeds(count: int | None, listed: str | None, default: tuple[int, ...]) -> list[int]:
    # ConfigError, not typer.BadParameter: this runs inside _exit_codes, past click's parsing,
    # where a BadParameter would be reported as a failure (exit 1) instead of bad usage.
    if count is not None and listed is not None:
        raise ConfigError("give --seeds or --seed-list, not both")
    if listed is None:
        return list(range(count)) if count else list(default)
    shown = listed if len(listed) <= 40 else f"{listed[:37]}..."
    try:
        values = [int(part) for part in listed.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seed-list {shown!r}: expected integers, e.g. 0,1,2") from None
    seen: set[int] = set()
    repeated = next((value for value in values if value in seen or seen.add(value)), None)
    if repeated is not None:
        raise ConfigError(
            f"--seed-list {shown!r}: seed {repeated} is given twice; expected distinct seeds"
        )
    if not values or min(values) < 0:
        raise ConfigError(f"--seed-list {shown!r}: expected distinct seeds >= 0, e.g. 0,1,2")
    return values


def _check_executor(kind: str, address: str | None, storage: Path | None, gpus: float) -> None:
    """Before any work: the Ray options go with Ray, and Ray is installed."""
    if kind == "ray":
        from lrsched_cli import ray_executor

        ray_executor.import_ray()
    elif address is not None or storage is not None or gpus:
        raise ConfigError("--address, --storage and --gpus-per-job go with --executor ray")


@contextmanager
def _executor(kind: str, address: str | None, storage: Path | None, gpus: float) -> Iterator[Any]:
    """The pool for `compare`: None for the local one; for Ray, connected until the end."""
    if kind == "local":
        yield None
        return
    from lrsched_cli import ray_executor

    with ray_executor.connected(address):
        yield ray_executor.pool(storage=storage is not None, gpus_per_job=gpus)


def _draw_comparison(comparison) -> list[Path]:
    from lrsched_cli.plots import plot_comparison, plot_ranks, plot_sensitivity

    groups = {summary.name: summary.runs for summary in comparison.summaries}
    paths = plot_comparison(groups, comparison.path)
    if comparison.friedman is not None and comparison.friedman.critical_difference is not None:
        paths.append(plot_ranks(comparison.friedman, comparison.path / "ranks.png"))
    if comparison.tuning is not None:
        paths.append(plot_sensitivity(comparison.tuning, comparison.path / "sensitivity.png"))
    return paths


def _compare_tuned(
    found,
    seed_values,
    runs_dir,
    jobs,
    metric,
    target,
    warnings,
    as_json,
    strict,
    where,
    baseline,
    options,
) -> None:
    """compare --tune-lr: check everything, say the budget, tune, compare the picks."""
    from lrsched_cli import store, tuning

    tune_lr, lr_grid, tune_seeds, lr_center, dry_run = options
    if not tune_lr:
        raise ConfigError("--lr-grid and --lr-center set up --tune-lr; add --tune-lr")
    if found.runs:
        raise ConfigError(
            "--tune-lr trains every config at several lrs: give configs, not finished runs "
            f"({', '.join(str(run.path) for run in found.runs)})"
        )
    if lr_grid is not None and lr_center != "config":
        raise ConfigError("--lr-grid sets the grid itself; --lr-center has nothing to centre")
    grid = tuning.parse_grid(lr_grid) if lr_grid is not None else None
    for cfg in found.configs:  # before a range test takes its time
        tuning.check_tunable(cfg)
    notes: list[str] = []
    if lr_center == "find-lr":
        err.print("finding each config's valley lr (lrsched find-lr) to centre its grid")
    tunings = tuning.plan(found.configs, grid, lr_center, notes=notes)
    tune_seed_values = tuning.tuning_seeds(tune_seeds, seed_values)
    count = tuning.budget(tunings, len(tune_seed_values), len(seed_values))
    val_metric, test_metric = tuning.metrics_for(METRIC_ALIASES.get(metric, metric))
    err.print(
        f"runs: {count['tuning']} tuning (up to {count['extensions_at_most']} more where a "
        f"pick sits at a grid edge) + {count['fresh']} at the picked lrs = {count['total']}; "
        f"picked on {val_metric} over tuning seeds "
        f"{', '.join(map(str, tune_seed_values))}, ranked by {test_metric} over seeds "
        f"{_seed_range(seed_values)}"
    )
    for text in notes:
        err.print(_styled(("note: ", "yellow"), text))
    if dry_run:
        planned, _ = tuning.tuning_jobs(
            found.configs, {t.name: t.grid for t in tunings}, tune_seed_values
        )
        rows = [
            (job.label, f"{t.key}={lr:.4g}")
            for t in tunings
            for lr in t.grid
            for job in planned
            if job.config.name == tuning._point_name(t.name, lr)
        ]
        rows += [
            (f"{cfg.name}-seed{seed}", "at its picked lr")
            for seed in seed_values
            for cfg in found.configs
        ]
        _print_jobs(rows)
        return
    executor, address, storage, gpus_per_job = where
    made_runs_dir = not runs_dir.exists()
    out_dir = store.create_run_dir(runs_dir, "compare")
    progress = _CompareProgress(count["total"], quiet=as_json)
    try:
        with progress, _executor(executor, address, storage, gpus_per_job) as pool:
            comparison, result = tuning.tune_and_compare(
                found,
                tunings,
                tune_seed_values,
                seed_values,
                out_dir,
                jobs or os.cpu_count() or 1,
                METRIC_ALIASES.get(metric, metric),
                target,
                warnings,
                progress.on_result,
                lint=lambda found: _warn_configs(found, strict),
                pool=pool,
                baseline=baseline,
                center=lr_center,
                on_notes=_print_notes(progress),
            )
    except BaseException:
        if made_runs_dir:
            try:
                runs_dir.rmdir()
            except OSError:
                pass  # not empty: other runs live there
        raise
    _record_command(comparison.path)
    _draw_comparison(comparison)
    _render_comparison(comparison, as_json)
    if not as_json:
        for line in result.flat_lines():
            console.print(line)
    if comparison.interrupted:
        err.print(_styled(("interrupted", "yellow"), ": compared the runs that ended"))
        _exit_interrupted()


def _seed_range(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _print_notes(progress) -> Callable[[list[str]], None]:
    def show(lines: list[str]) -> None:
        for line in lines:
            progress.progress.console.print(_styled(("note: ", "yellow"), line))

    return show


def _print_jobs(rows: list[tuple[str, str]]) -> None:
    """--dry-run: one line per job that would train, and their count."""
    for label, detail in rows:
        console.print(f"{label}  {detail}".rstrip(), highlight=False)
    console.print(f"{len(rows)} runs; nothing trained (--dry-run)")


def _warn_configs(warnings: dict[str, list[str]], strict: bool) -> None:
    """Each config's schedule warnings, once per config (not per seed); --strict stops here."""
    _warn([f"{name}: {text}" for name, found in warnings.items() for text in found], strict, False)


def comparing_picks(comparison) -> dict[str, float | None] | None:
    """--tune-lr: each config's picked lr, for the ranking table's column."""
    if getattr(comparison, "tuning", None) is None:
        return None
    return {name: entry["pick"] for name, entry in comparison.tuning["configs"].items()}


def _render_comparison(comparison, as_json: bool) -> None:
    from lrsched_cli import report

    if as_json:
        print((comparison.path / "summary.json").read_text(), end="")
        return
    console.print(
        report.render_comparison(
            comparison.summaries,
            comparison.metric,
            comparison.pairwise,
            comparison.baseline,
            picked=comparing_picks(comparison),
        )
    )
    if comparison.friedman is not None:
        console.print(report.render_friedman(comparison.friedman))
    if comparison.pairwise:
        console.print(report.render_pairwise(comparison.pairwise))
        console.print(report.render_verdicts(comparison.verdicts))
    for result in comparison.results:
        if result.error:
            _print_error(f"{result.name} seed {result.seed} {result.status}", result.error)
    console.print(_styled("comparison directory: ", (str(comparison.path), "bold")))


def _draw_plots(history: RunHistory, out_dir: Path) -> list[Path]:
    from lrsched_cli.plots import plot_run

    return plot_run(history, out_dir)


def _render_result(history: RunHistory, as_json: bool, quiet: bool) -> None:
    from lrsched_cli import report

    if as_json:
        print(json.dumps({"run_dir": str(history.path), **history.summary}, indent=2))
    elif quiet:
        print(history.path)
    else:
        console.print(report.render_run(history))
        console.print(report.render_summary(history))
    _print_resume_hint(history.path)


def _print_resume_hint(run_dir: Path | None) -> None:
    """How to go on with a run that stopped part way (none for a finished one)."""
    from lrsched_cli import store

    if run_dir is not None and store.resumable(run_dir):
        err.print(_styled(f"resume with: lrsched run --resume {run_dir}"), soft_wrap=True)


def _exit_interrupted() -> None:
    """Exit 130. Exiting is all that is left: a Ctrl-C in the interpreter's shutdown, which
    puts back the default handler, would kill the process by SIGINT instead."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise typer.Exit(EXIT_INTERRUPTED)


@contextmanager
def _exit_codes(config_path: Path | None, overrides: list[str] | None = None) -> Iterator[None]:
    """Turn the errors a user can cause into one red line and the exit code DESIGN.md gives."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        _exit_interrupted()
    except ConfigError as exc:
        _print_error("error", _locate(exc, config_path, overrides or []))
        raise typer.Exit(EXIT_USAGE) from None
    except RunUnusable as exc:
        _print_error("error", str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except Exception as exc:
        run_dir = getattr(exc, "run_dir", None)
        where = f"\nrun directory: {run_dir}" if run_dir else ""
        cause = exc.__cause__ or exc
        _print_error("failed", f"{type(cause).__name__}: {cause}{where}")
        raise typer.Exit(EXIT_FAILED) from None


def _locate(exc: ConfigError, config_path: Path | None, overrides: list[str]) -> str:
    """Say where the error is: the --set that gave the key, or the key's line in the file."""
    if exc.key is None or (config_path is None and not overrides):
        return str(exc)
    from lrsched_cli.config import locate

    try:
        text = config_path.read_text(encoding="utf-8") if config_path else ""
    except OSError:
        text = ""
    return locate(str(exc), exc.key, text, config_path, overrides)


def _print_error(label: str, message: str) -> None:
    # Text, not markup: messages quote user input such as "[30, 80]"; soft_wrap keeps lines whole.
    err.print(_styled((f"{label}: ", "bold red"), message), soft_wrap=True)


class _CompareProgress:
    """Runs finished out of the total, and one status line per run as it ends."""

    def __init__(self, total: int, quiet: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.quiet = quiet or total == 0
        self.progress = Progress(
            TextColumn("runs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err.get(),
            transient=True,
        )
        self.task = self.progress.add_task("runs", total=total)

    def __enter__(self) -> _CompareProgress:
        if not self.quiet:
            self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def on_result(self, result) -> None:
        from lrsched_cli import report

        self.progress.advance(self.task)
        if self.quiet:
            return
        style = report.STATUS_STYLES.get(result.status, "red")
        line = _styled(
            (f"{result.status:>11} ", style),
            f"{result.name} seed {result.seed} ({result.seconds:.1f} s)",
        )
        self.progress.console.print(line)


class _ProgressObserver:
    """The runner's observer hooks drawn as a Rich progress display: the epoch, the lr it trains
    at, its running train loss and the last val loss. Rich's own thread redraws it at most 10
    times a second; the loop only updates counters, and the running loss (a host sync) is read
    no more often than the display can show it. Off a terminal (piped, redirected) nothing is
    drawn: a live display there only leaves stray lines in the output."""

    LONG_EPOCH = 100  # batches; shorter epochs get no batch bar
    REFRESH = 0.1  # seconds: Rich's redraw interval; reading the loss more often shows nothing

    def __init__(self, enabled: bool = True):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        # At 80 columns the bar gives way, never the counts or the time left
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TimeRemainingColumn(table_column=Column(no_wrap=True)),
            console=console.get(),
            transient=True,
        )
        self.enabled = enabled
        self.epochs_task = self.batches_task = None
        self.run_dir: Path | None = None  # known once the run directory exists
        self.val_loss: float | None = None
        self.described_at = -math.inf

    def __enter__(self) -> _ProgressObserver:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def on_start(self, run_dir: Path, epochs: int, steps_per_epoch: int) -> None:
        self.run_dir = run_dir
        if not self.enabled:
            return
        console.print(_styled("run directory: ", (str(run_dir), "bold")))
        if not console.is_terminal:
            return
        # Started here, not on entry: a config error raised earlier leaves no blank live area.
        self.progress.start()
        self.epochs_task = self.progress.add_task("epochs", total=epochs)
        if steps_per_epoch >= self.LONG_EPOCH:
            self.batches_task = self.progress.add_task("batches", total=steps_per_epoch)

    def on_batches(self, epoch: int, done: int, total: int, lr: float, loss: RunningLoss) -> None:
        if self.epochs_task is None:
            return
        if self.batches_task is not None:
            self.progress.update(self.batches_task, completed=done)
        now = time.monotonic()
        if now - self.described_at >= self.REFRESH:
            self.described_at = now
            self._describe(epoch, lr, loss.mean())

    def on_epoch(self, record: dict[str, Any]) -> None:
        if self.epochs_task is None:
            return
        self.val_loss = record["val_loss"]
        self._describe(record["epoch"], record["lr"], record["train_loss"])
        self.progress.update(self.epochs_task, advance=1)

    def _describe(self, epoch: int, lr: float, train_loss: float) -> None:
        from lrsched_cli.report import format_number

        # Short labels: the bar, the count and the times must still fit 80 columns
        parts = [f"epoch {epoch}", f"lr {format_number(lr)}", f"train {format_number(train_loss)}"]
        if self.val_loss is not None:
            parts.append(f"val {format_number(self.val_loss)}")
        self.progress.update(self.epochs_task, description=" · ".join(parts))
