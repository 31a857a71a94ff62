"""lrsched compare: inputs -> runs over paired seeds, executed in parallel -> one comparison.

torch is imported only where runs are trained (`_run_job`, `validate_configs`), so a comparison
of finished run directories never imports it.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lrsched_cli import stats, store
from lrsched_cli.config import ConfigError, ExperimentConfig, load_configs, locate
from lrsched_cli.errors import RunUnusable

# Ten: the fewest with which a Holm-adjusted exact Wilcoxon test can tell apart some pair of
# five configs (10 pairs x 2^(1-n) < 0.05 needs n >= 9), and DeepOBS's count for its reruns.
DEFAULT_SEEDS = tuple(range(10))
# Preloaded once by the forkserver, so a worker starts as a fork, not a 3-5 s import of torch.
WORKER_PRELOAD = ["torch", "torch._dynamo", "lrsched_cli.runner"]
STOP_GRACE = 30.0  # seconds the running jobs get to end their batch after a Ctrl-C


@dataclass(frozen=True)
class Job:
    config: ExperimentConfig  # with the job's seed set
    label: str  # the run directory's name: config name and seed


@dataclass
class JobResult:
    name: str
    seed: int
    status: str  # completed | diverged | interrupted | failed
    path: str | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Inputs:
    configs: list[ExperimentConfig] = field(default_factory=list)
    runs: list[store.RunHistory] = field(default_factory=list)
    swept: dict[str, dict[str, Any]] = field(default_factory=dict)  # sweep member -> values
    files: dict[str, Path] = field(default_factory=dict)  # config name -> the file it came from
    overrides: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished runs whose files are corrupt


@dataclass
class Comparison:
    path: Path
    metric: str
    summaries: list[stats.ConfigSummary]  # ranked, best first
    pairwise: list[dict[str, Any]]
    results: list[JobResult]
    warnings: list[str]
    interrupted: bool = False  # Ctrl-C: the jobs that had not started never ran
    baseline: str | None = None  # the config every other one is tested against; None: all pairs
    friedman: stats.Friedman | None = None  # 3 or more configs
    verdicts: list[str] = field(default_factory=list)
    tuning: dict[str, Any] | None = None  # --tune-lr: tuning.json's document


def collect_inputs(
    arguments: list[str], overrides: list[str] = (), epochs: int | None = None
) -> Inputs:
    """Configs (files, globs, folders of configs) and finished run directories, in order."""
    inputs = Inputs(overrides=list(overrides))
    for argument in arguments:
        for path in _expand(argument):
            if path.is_dir() and (path / store.METRICS_FILE).is_file():
                _add_run(inputs, path)
            elif path.is_dir():
                _collect_folder(path, inputs, overrides, epochs)
            else:
                _add_configs(inputs, load_configs(path, overrides, epochs=epochs), path)
    names = [cfg.name for cfg in inputs.configs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"several configs are named {', '.join(repeated)}; give each its own "
            "`name:` so their results can be told apart"
        )
    if not inputs.configs and not inputs.runs:
        if inputs.skipped:
            raise store.RunUnusable("nothing to compare: " + "; ".join(inputs.skipped))
        raise ConfigError(f"nothing to compare in {' '.join(arguments)}")
    return inputs


def _add_run(inputs: Inputs, path: Path) -> None:
    """A finished run; one whose files are corrupt is skipped and reported, so that it does not
    sink the comparison of the others."""
    try:
        inputs.runs.append(store.read_run(path))
    except store.RunCorrupt as exc:
        inputs.skipped.append(f"skipped the run in {path}: {exc}")


def names_of(inputs: Inputs) -> list[str]:
    """The configs the comparison will hold: each config, and each finished run's name."""
    return list(dict.fromkeys([cfg.name for cfg in inputs.configs] + [r.name for r in inputs.runs]))


def check_baseline(inputs: Inputs, baseline: str | None) -> None:
    """`--baseline` must name one of the configs compared."""
    names = names_of(inputs)
    if baseline is not None and baseline not in names:
        raise ConfigError(
            f"--baseline {baseline!r} names no config compared; choose one of: {', '.join(names)}"
        )


def seed_power_note(inputs: Inputs, seeds: list[int], baseline: str | None) -> str | None:
    """Before training: when these seeds are too few for any pair to come out significant."""
    if not inputs.configs:
        return None
    pairs = stats.pair_count(len(names_of(inputs)), baseline is not None)
    return stats.seed_power_note(len(seeds), pairs)


def check_comparable(inputs: Inputs, force: bool) -> list[str]:
    """Runs on different data cannot be compared; say so (an error unless `force`)."""
    datasets = [(cfg.name, cfg.data.model_dump(exclude_none=True)) for cfg in inputs.configs]
    # A run saved before there was a test split held none out: test_fraction 0, not missing
    datasets += [
        (run.name, {"test_fraction": 0.0, **run.config.get("data", {})}) for run in inputs.runs
    ]
    problems = store.data_differences(datasets)
    if problems and not force:
        raise ConfigError(
            "a comparison across datasets is meaningless: "
            + "; ".join(problems)
            + ". Use --force to compare anyway"
        )
    return [*inputs.skipped, *problems]


def plan_jobs(configs: list[ExperimentConfig], seeds: list[int]) -> list[Job]:
    """Every config with every seed: paired seeds give each config the same data, initial
    weights and batch order for a given seed, so differences come from the schedule alone."""
    return [
        Job(cfg.model_copy(update={"seed": seed}), f"{cfg.name}-seed{seed}")
        for seed in seeds
        for cfg in configs
    ]


@dataclass
class Checks:
    """What building each config once (no training) found."""

    warnings: dict[str, list[str]] = field(default_factory=dict)  # the schedule's lint
    config_errors: dict[str, ConfigError] = field(default_factory=dict)  # the user's to fix
    crashes: dict[str, str] = field(default_factory=dict)  # anything else: its jobs fail
    fusion: dict[str, Fusion] = field(default_factory=dict)  # configs with fuse not false


@dataclass(frozen=True)
class Fusion:
    """Whether a config's runs can train in a fused group, and with which others."""

    key: str | None  # runs whose configs have equal keys can share a group; None: they cannot
    reason: str | None = None  # why not
    limit: int = 1  # the most runs like these a worker's memory holds in one group


def validate_configs(
    configs: list[ExperimentConfig], workers: int = 1, fuse: bool = True
) -> Checks:
    """Build each config once (no training), so a bad one stops the comparison before it starts;
    collects each config's schedule warnings, as `lrsched plan` and `run` give them, and
    whether its runs can be fused (for `workers` workers; not asked when `fuse` is false). A
    config that crashes otherwise is that config's failure alone: the others still run."""
    from lrsched_cli import planning, runner

    checks = Checks()
    for cfg in configs:
        try:
            experiment = runner.prepare(cfg)
            plan = planning.plan_schedule(
                experiment.config, experiment.steps_per_epoch, runner.LINT_HORIZON
            )
        except ConfigError as exc:
            checks.config_errors[cfg.name] = exc
        except Exception as exc:  # noqa: BLE001 - reported as that config's failed runs
            checks.crashes[cfg.name] = f"{type(exc).__name__}: {exc}"
        else:
            checks.warnings[cfg.name] = list(plan.warnings)
            if fuse and cfg.fuse is not False:
                try:
                    checks.fusion[cfg.name] = _fusion_of(experiment, workers)
                except Exception as exc:  # noqa: BLE001 - a user's model: it runs unfused
                    reason = f"model.name: {cfg.model.name} cannot be fused: {exc}"
                    checks.fusion[cfg.name] = Fusion(None, reason)
    return checks


def _fusion_of(experiment: Any, workers: int) -> Fusion:
    from lrsched_cli import fused

    key = fused.fusion_key(experiment)
    if isinstance(key, str):
        return Fusion(None, key)
    reason = fused.rehearse(experiment)
    if reason is not None:
        return Fusion(None, reason)
    try:
        limit = fused.group_limit(experiment, workers)
    except Exception as exc:  # noqa: BLE001 - a user's model: it fails its own runs later
        return Fusion(None, f"model.name: sizing a group failed: {type(exc).__name__}: {exc}")
    # A string: the key's torch dtypes would import torch where it is read
    return Fusion(repr(key), limit=limit)


def plan_units(jobs: list[Job], checks: Checks, workers: int) -> tuple[list[list[Job]], list[str]]:
    """The jobs as units of work: fused groups of runs that share a fusion key, split so that
    every worker gets one and none outgrows its memory, and runs alone. Larger units first, so
    that no worker is left with a long one at the end. Also the notes on configs that asked to
    be fused (`fuse: true`) and cannot be, or whose optimizer has no stacked update."""
    shared: dict[str, list[Job]] = {}
    units: list[list[Job]] = []
    for job in jobs:
        fusion = checks.fusion.get(job.config.name)
        if fusion is None or fusion.key is None:
            units.append([job])
        else:
            shared.setdefault(fusion.key, []).append(job)
    for members in shared.values():
        limit = min(checks.fusion[job.config.name].limit for job in members)
        count = max(-(-len(members) // limit), min(workers, len(members) // 2), 1)
        units += [members[i::count] for i in range(count)]
    units.sort(key=len, reverse=True)
    return units, _fusion_notes(jobs, checks, units)


def _fusion_notes(jobs: list[Job], checks: Checks, units: list[list[Job]]) -> list[str]:
    configs = {job.config.name: job.config for job in jobs}
    fused = {job.config.name for unit in units if len(unit) > 1 for job in unit}
    notes = []
    for name, cfg in configs.items():
        fusion = checks.fusion.get(name)
        if fusion is not None and fusion.reason is not None:
            notes.append(f"{name}: {fusion.reason}: its runs train one by one")
        elif cfg.fuse is True and name not in fused:
            notes.append(f"{name}: fuse: true, but {_alone_because(cfg, configs, checks)}")
    return notes


def _alone_because(cfg: ExperimentConfig, configs: dict[str, ExperimentConfig], checks) -> str:
    """Which key keeps a config that asked to be fused out of every group."""
    others = [
        other for other in configs.values() if other.name != cfg.name and other.fuse is not False
    ]
    if not others:
        return "it has one run and no other config to share a group with; it runs unfused"
    ignore = ("name", "seed", "epochs", "fuse", "checkpoint_every", "tensorboard")
    differing = [
        key
        for key in store.differing_keys([cfg.to_dict(), others[0].to_dict()])
        if not key.startswith(("scheduler.", *ignore)) and key not in ("optimizer.lr",)
    ]
    keys = ", ".join(differing[:3]) or "its data or model shapes"
    return f"it differs from {others[0].name} in {keys}; it runs unfused"


def execute(
    jobs: list[Job],
    runs_dir: Path,
    workers: int,
    on_result: Callable[[JobResult], None] = lambda result: None,
    run_plots: bool = False,
    pool: Callable[[int, bool], AbstractContextManager[Executor]] | None = None,
    lint: Callable[[dict[str, list[str]]], None] = lambda warnings: None,
    stop: StopFlag | None = None,
    files: dict[str, Path] | None = None,
    overrides: list[str] = (),
    note: Callable[[list[str]], None] = lambda notes: None,
) -> list[JobResult]:
    """Check every config, then run the jobs on `workers` processes (in this one for 1).

    A bad config raises ConfigError, naming its file (`files`: config name -> path), before any
    job starts; a failing job is a result, not a stop. `lint` gets each config's schedule
    warnings before any job starts, and may raise to stop there. With workers, the check runs in
    a worker too, so this process never imports torch. A worker that dies fails its own job
    only: its run is marked failed, and a new worker takes up the queue.

    Ctrl-C (in the main thread) sets `stop`: no job starts after it, and the running ones end
    after their current batch, as results. A second Ctrl-C kills the workers, marks their runs
    `interrupted`, and raises KeyboardInterrupt.

    `pool(workers, run_plots)` is the seam for other executors: any context manager yielding a
    concurrent.futures.Executor (a cluster engine's, say) can replace the local process pool.

    Runs that can train together are fused (plan_units): each worker trains a group of them in
    one batched loop (fused.py). `note` gets the notes on configs that cannot be fused.
    """
    stop = stop if stop is not None else StopFlag()
    configs = list({job.config.name: job.config for job in jobs}.values())
    where = (files or {}, list(overrides))
    # Another executor (a cluster's) runs every job, a single one included.
    if pool is None and (workers <= 1 or len(jobs) <= 1):
        with _interrupts(stop):
            checks = validate_configs(configs)
            _accept(checks, lint, where)
            units, notes = plan_units(jobs, checks, 1)
            note(notes)
            results = []
            for unit in units:
                if stop.is_set():
                    break
                if unit[0].config.name in checks.crashes:  # a crashed config's runs are alone
                    ended = [_crashed(job, checks, where) for job in unit]
                else:
                    ended = _run_unit(unit, runs_dir, None, run_plots, stop)
                for result in ended:
                    results.append(result)
                    on_result(result)
            return results
    workers = min(workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    with (pool or _worker_pool)(workers, run_plots) as executor:
        try:
            with _interrupts(stop, getattr(executor, "stop", None)):
                _import_what_gathering_needs()  # on the core left idle while the forkserver imports
                fuses = pool is None or getattr(executor, "fuses", False)  # else: runs alone
                checks = executor.submit(validate_configs, configs, workers, fuses).result()
                _accept(checks, lint, where)
                units, notes = plan_units(jobs, checks, workers)
                note(notes)
                return _gather(
                    executor, units, checks, where, (runs_dir, threads, run_plots), stop, on_result
                )
        except BaseException as exc:
            _stop_workers(executor, runs_dir, exc)
            raise
        finally:
            executor.shutdown(wait=False, cancel_futures=True)


def _gather(executor, units, checks, where, job_args, stop, on_result) -> list[JobResult]:
    """Submit the units and collect their results as they end, until all have or Ctrl-C."""
    runs_dir = job_args[0]
    results: list[JobResult] = []
    if stop.is_set():
        return results
    futures = {}
    for unit in units:
        if unit[0].config.name in checks.crashes:  # a unit holds one config's jobs, or fuses
            for job in unit:
                results.append(_crashed(job, checks, where))
                on_result(results[-1])
        elif len(unit) == 1:
            futures[executor.submit(_run_job, unit[0], *job_args)] = unit
        else:
            futures[executor.submit(_run_group, unit, *job_args)] = unit
    pending = set(futures)
    while pending:
        # A short timeout, not a wait for the next result: the Ctrl-C handler only sets a
        # flag (a signal handler must take no lock), and this loop acts on it.
        done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
        for future in done:
            for result in _results_of(future, futures[future], runs_dir):
                results.append(result)
                on_result(result)
        if stop.is_set():
            executor.shutdown(wait=False, cancel_futures=True)  # no queued job starts
    return results


def _accept(checks: Checks, lint, where: tuple[dict[str, Path], list[str]]) -> None:
    """Stop at the first config error, naming the config's file; else lint the warnings."""
    files, overrides = where
    for name, exc in checks.config_errors.items():
        path = files.get(name)
        if path is None:
            raise exc
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            text = ""
        raise ConfigError(locate(str(exc), exc.key, text, path, overrides)) from None
    lint(checks.warnings)


def _crashed(job: Job, checks: Checks, where: tuple[dict[str, Path], list[str]]) -> JobResult:
    """A job of a config that could not be prepared: failed, without running."""
    path = where[0].get(job.config.name)
    error = checks.crashes[job.config.name]
    error = f"{path}: {error}" if path else error
    return JobResult(job.config.name, job.config.seed, "failed", error=f"preparing: {error}")


class StopFlag:
    """Set from a signal handler: a plain attribute, no lock (the interrupted thread may hold
    the one a threading.Event would take)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@contextmanager
def _interrupts(stop: StopFlag, workers_stop: Any = None) -> Iterator[None]:
    """Ctrl-C for the comparison as a whole: the first sets `stop` and the workers' flag, the
    next raises KeyboardInterrupt. A run in this process replaces this handler while it trains
    and sets `stop` itself. Where SIGINT is ignored (started in the background), it stays so."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        yield
        return

    def interrupt(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if workers_stop is not None:
            workers_stop.set()

    signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_workers(executor: Executor, runs_dir: Path, exc: BaseException) -> None:
    """Kill the workers now (a second Ctrl-C, or an error here), and mark the runs they leave."""
    terminate = getattr(executor, "terminate", None)
    if terminate is None:
        return
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    error = None if status == "interrupted" else f"stopped: {type(exc).__name__}: {exc}"
    for pid in terminate():
        marked: set[Path] = set()
        while (path := _mark_run(runs_dir, {"pid": pid}, status, error)) not in marked:
            marked.add(path)  # a fused group leaves several; None or a repeat: all are marked


def _mark_run(runs_dir: Path, match: dict[str, Any], status: str, error: str | None):
    """How a run that a dead worker left `running` ended (`match`: its pid, and its name and
    seed where the worker trained a group); returns its directory, or None."""
    match = {**match, "hostname": socket.gethostname()}
    return store.end_running_run(runs_dir, match, status, error)


def compare(
    inputs: Inputs,
    seeds: list[int],
    out_dir: Path,
    workers: int,
    metric: str,
    target: float | None = None,
    warnings: list[str] = (),
    on_result: Callable[[JobResult], None] = lambda result: None,
    run_plots: bool = False,
    lint: Callable[[dict[str, list[str]]], None] = lambda warnings: None,
    pool: Callable[[int, bool], AbstractContextManager[Executor]] | None = None,
    baseline: str | None = None,
    tuning: dict[str, Any] | None = None,
    note: Callable[[list[str]], None] = lambda notes: None,
) -> Comparison:
    """Run the configs over the seeds, gather them with the finished runs, and write the
    comparison's files into `out_dir`. Pairs are tested all against all, or each against
    `baseline`; a Friedman test comes first for 3 or more configs.

    `lint` gets the schedule warnings of every config, and those the finished runs recorded,
    once per config and before any training; it may raise to stop (`--strict`). A comparison
    stopped before any run leaves no empty directory behind. After a Ctrl-C it compares the
    runs that ended, and says `interrupted`; before any run began, KeyboardInterrupt.
    """
    check_baseline(inputs, baseline)
    schedule_warnings = _recorded_warnings(inputs.runs)

    def check(config_warnings: dict[str, list[str]]) -> None:
        for name, found in config_warnings.items():
            schedule_warnings[name] = list(dict.fromkeys(schedule_warnings.get(name, []) + found))
        lint({name: found for name, found in schedule_warnings.items() if found})

    jobs = plan_jobs(inputs.configs, seeds)
    stop = StopFlag()
    try:
        if jobs:
            results = execute(
                jobs,
                out_dir / "runs",
                workers,
                on_result,
                run_plots,
                lint=check,
                stop=stop,
                files=inputs.files,
                overrides=inputs.overrides,
                pool=pool,
                note=note,
            )
        else:
            check({})
            results = []
        if stop.is_set() and not inputs.runs and not any(r.path for r in results):
            raise KeyboardInterrupt  # interrupted before any run began: nothing to compare
    except BaseException:
        _remove_if_empty(out_dir)
        raise
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    groups = _group(inputs.runs, results)
    for run in inputs.runs:
        _link(run.path, out_dir / "runs" / run.path.name)
    summaries = stats.rank(stats.summarize(groups, target), metric)
    for summary in summaries:
        summary.swept = inputs.swept.get(summary.name, {})
        found = summary.warnings + schedule_warnings.get(summary.name, [])
        summary.warnings = list(dict.fromkeys(found))
    if baseline is not None and baseline not in groups:
        baseline = None  # interrupted before any of its runs began: all pairs, as without
    pairwise = stats.pairwise(summaries, metric, target, baseline)
    comparison = Comparison(
        out_dir,
        metric,
        summaries,
        pairwise,
        results,
        list(warnings) + [f"{s.name}: {w}" for s in summaries for w in s.warnings],
        interrupted=stop.is_set(),
        baseline=baseline,
        friedman=stats.friedman(summaries, metric, target),
        verdicts=stats.verdicts(pairwise, metric),
        tuning=tuning,
    )
    write_comparison(comparison, seeds, target)
    return comparison


def write_comparison(comparison: Comparison, seeds: list[int], target: float | None) -> None:
    """summary.csv, summary.json and pairwise.csv; the plots are the CLI's to draw."""
    rows = [summary.row() for summary in comparison.summaries]
    # One cell per config: the warnings' count here, their texts in summary.json.
    store.write_csv(
        comparison.path / "summary.csv", [{**row, "warnings": len(row["warnings"])} for row in rows]
    )
    store.write_csv(comparison.path / "pairwise.csv", comparison.pairwise)
    document = {
        "metric": comparison.metric,
        "seeds": seeds,
        "target": target,
        "confidence": stats.CONFIDENCE,
        "configs": rows,
        # what `holm_p` adjusts, and over which pairs; `ttest_p` is raw, a check beside it
        "paired_test": "wilcoxon signed-rank, two-sided; holm_p: Holm-adjusted",
        "baseline": comparison.baseline,
        "friedman": comparison.friedman.row() if comparison.friedman else None,
        "verdicts": comparison.verdicts,
        # --tune-lr: each config's picked peak lr; the sweep itself is in tuning.json
        "picked_lr": _picks(comparison.tuning),
        "pairwise": comparison.pairwise,
        "runs": [asdict(result) for result in comparison.results],
        "interrupted": comparison.interrupted,
        "warnings": comparison.warnings,
    }
    (comparison.path / "summary.json").write_text(json.dumps(document, indent=2) + "\n")


def _picks(tuning: dict[str, Any] | None) -> dict[str, float | None] | None:
    if tuning is None:
        return None
    return {name: entry["pick"] for name, entry in tuning["configs"].items()}


def _run_job(
    job: Job,
    runs_dir: Path,
    threads: int | None,
    run_plots: bool,
    stop: StopFlag | None = None,
) -> JobResult:
    """Train one job (and draw its plots); every way it can end becomes a JobResult. In a
    worker, `stop` is the flag the parent process sets on Ctrl-C."""
    import torch

    from lrsched_cli import plots, runner

    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    result = JobResult(job.config.name, job.config.seed, "failed")
    try:
        outcome = runner.run_experiment(
            job.config, runs_dir, label=job.label, stop=stop or _worker_stop
        )
        result.status, result.path = outcome.status, str(outcome.path)
        if run_plots:
            plots.plot_run(store.read_run(outcome.path), outcome.path)
    except ConfigError as exc:
        result.error = str(exc)
    except runner.RunFailed as exc:
        result.path, result.error = str(exc.run_dir), str(exc)
    except Exception as exc:  # a crash in one run must not stop the others
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - started
    return result


def _run_unit(unit: list[Job], *args: Any) -> list[JobResult]:
    """A unit of work in this process: a job alone, or a fused group."""
    return [_run_job(unit[0], *args)] if len(unit) == 1 else _run_group(unit, *args)


def _run_group(
    unit: list[Job],
    runs_dir: Path,
    threads: int | None,
    run_plots: bool,
    stop: StopFlag | None = None,
) -> list[JobResult]:
    """Train the unit's jobs together in one fused group (fused.py): a result for each, and
    the group's failure in each's error."""
    import torch

    from lrsched_cli import fused, plots

    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        outcomes = fused.run_group(
            [(job.config, job.label) for job in unit], runs_dir, stop or _worker_stop
        )
    except Exception as exc:  # noqa: BLE001 - each run of the group fails with it
        error = f"{type(exc).__name__}: {exc}"
        return [JobResult(job.config.name, job.config.seed, "failed", error=error) for job in unit]
    seconds = time.perf_counter() - started
    results = []
    for job, outcome in zip(unit, outcomes, strict=True):
        error = outcome.summary.get("error")
        result = JobResult(
            job.config.name, job.config.seed, outcome.status, str(outcome.path), error, seconds
        )
        if run_plots:
            try:
                plots.plot_run(store.read_run(outcome.path), outcome.path)
            except Exception as exc:  # noqa: BLE001 - the run is kept; its plots are not
                result.error = f"plotting: {type(exc).__name__}: {exc}"
        results.append(result)
    return results


def _import_what_gathering_needs() -> None:
    """The statistics and the overlay plots need scipy and matplotlib once the runs are done."""
    import matplotlib.figure  # noqa: F401
    import scipy.stats  # noqa: F401


def _results_of(future: Future, unit: list[Job], runs_dir: Path) -> list[JobResult]:
    """The unit's results; none for a unit cancelled before it started (after a Ctrl-C)."""
    if future.cancelled():
        return []
    try:
        result = future.result()
    except WorkerDied as exc:  # killed, out of memory: this unit alone
        return [_died(job, exc, runs_dir) for job in unit]
    except Exception as exc:  # another executor's failure (a cluster's lost node)
        error = f"worker died: {type(exc).__name__}: {exc}"
        return [JobResult(job.config.name, job.config.seed, "failed", error=error) for job in unit]
    return result if isinstance(result, list) else [result]


def _died(job: Job, exc: WorkerDied, runs_dir: Path) -> JobResult:
    """A job of a unit whose worker died: its run failed, unless it had ended before (a fused
    group's run that completed, stopped early or diverged keeps that)."""
    cfg = job.config
    path = runs_dir / store.safe_name(job.label)
    try:
        summary = store.read_summary(path / store.SUMMARY_FILE)
    except RunUnusable:
        summary = {}
    if summary.get("pid") == exc.pid and summary.get("status") not in (None, "running"):
        return JobResult(cfg.name, cfg.seed, summary["status"], str(path), summary.get("error"))
    match = {"pid": exc.pid, "name": cfg.name, "seed": cfg.seed}
    marked = _mark_run(runs_dir, match, "failed", str(exc))
    return JobResult(cfg.name, cfg.seed, "failed", str(marked) if marked else None, str(exc))


@contextmanager
def _worker_pool(workers: int, run_plots: bool) -> Iterator[_Pool]:
    """A process pool whose workers fork from a forkserver with torch preloaded: forking a
    process whose torch threads run can deadlock, and spawning pays torch's import per worker."""
    import multiprocessing
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD + (["matplotlib.figure"] if run_plots else []))
    # Start the forkserver's imports now: the first worker would wait for them to finish. The
    # forkserver then serves this process's later pools too, with this first preload list.
    with _helpers_without_current_directory() as environ:
        forkserver.ensure_running()
    pool = _Pool(workers, context, environ)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _helpers_without_current_directory() -> Iterator[dict[str, str | None]]:
    """The forkserver and the resource tracker start as `python -c`, which puts the current
    directory first on sys.path: a `multiprocessing/` or `torch.py` there would run in them and
    in every worker. PYTHONSAFEPATH (Python 3.11+) leaves it off, as the `lrsched` script's own
    start does. Yields the environment to give back to the workers, which inherit this one."""
    before = {"PYTHONSAFEPATH": os.environ.get("PYTHONSAFEPATH")}
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield before
    finally:
        _set_environ(before)


def _set_environ(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class WorkerDied(RuntimeError):
    """The worker process running a job ended without its result (killed, out of memory)."""

    def __init__(self, pid: int, exitcode: int | None):
        self.pid, self.exitcode = pid, exitcode
        if exitcode is not None and exitcode < 0:
            try:
                how = f"killed by {signal.Signals(-exitcode).name}"
            except ValueError:
                how = f"killed by signal {-exitcode}"
        else:
            how = f"exit code {exitcode}"
        super().__init__(f"worker process {pid} died ({how})")


class _SharedFlag:
    """The parent's Ctrl-C, as the workers' runs see it after every batch: one shared byte,
    read without a lock (a multiprocessing.Event takes a semaphore on every read), and set
    from a signal handler."""

    def __init__(self, context: Any):
        self._value = context.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)


_worker_stop: _SharedFlag | None = None  # in a worker: its pool's flag


def _serve_jobs(conn: Any, stop: _SharedFlag, environ: dict[str, str | None]) -> None:
    """A worker: run the jobs sent down `conn`, one at a time, until told to end."""
    global _worker_stop
    # Ctrl-C reaches the whole process group; the parent decides, and tells the runs via `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_environ(environ)
    _worker_stop = stop
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone
            return
        if task is None:
            return
        fn, args, kwargs = task
        try:
            reply = (True, fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - the parent's to raise
            reply = (False, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - a result or error pickle cannot carry
            conn.send((False, RuntimeError(f"the result could not be sent back: {exc}")))


@dataclass(eq=False)
class _Worker:
    process: Any  # a multiprocessing Process
    conn: Any  # this process's end of the pipe to it
    future: Future | None = None  # the job it runs
    closed: bool = False  # its pipe ended: it is dying


class _Pool(Executor):
    """Worker processes that run one job at a time each. When one dies, only its own job
    fails; a new worker takes its place and the queue goes on. (ProcessPoolExecutor instead
    fails every pending job and terminates the other workers mid-run, and its exit joins
    workers that may be gone.) Every wait here is on a process's sentinel or a pipe, so no
    end of a worker leaves anything waiting."""

    def __init__(self, workers: int, context: Any, environ: dict[str, str | None]):
        self.stop = _SharedFlag(context)
        self._size, self._context, self._environ = workers, context, environ
        self._lock = threading.RLock()
        self._queue: deque[tuple[Future, Callable, tuple, dict]] = deque()
        self._workers: list[_Worker] = []
        self._closing = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Workers start in this thread: starting one waits until the forkserver has imported
        # torch, and this process has other imports to do meanwhile.
        self._thread = threading.Thread(target=self._dispatch, name="lrsched-pool", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("the worker pool is shut down")
            self._queue.append((future, fn, args, kwargs))
        self._wake()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closing = True
            if cancel_futures:
                self._cancel_queued()
        self._wake()
        if wait:
            self._thread.join()

    def terminate(self, timeout: float = 5.0) -> list[int]:
        """Kill every worker now; returns, once they are gone, the pids of those that were
        running a job."""
        from multiprocessing.connection import wait as ready

        with self._lock:
            self._closing = True
            self._cancel_queued()
            workers = list(self._workers)
        for worker in workers:
            worker.process.kill()
        busy = [worker for worker in workers if worker.future is not None]
        sentinels = [worker.process.sentinel for worker in busy]
        deadline = time.monotonic() + timeout
        while sentinels and time.monotonic() < deadline:
            for sentinel in ready(sentinels, deadline - time.monotonic()):
                sentinels.remove(sentinel)
        self._wake()
        return [worker.process.pid for worker in busy]

    def _cancel_queued(self) -> None:
        while self._queue:
            future = self._queue.popleft()[0]
            if future.cancel():
                future.set_running_or_notify_cancel()  # what wakes wait() and as_completed()

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w is not None:
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:
                    pass  # already woken

    def _dispatch(self) -> None:
        from multiprocessing.connection import wait as ready_of

        try:
            while True:
                self._fill()
                with self._lock:
                    self._assign()
                    busy = [worker for worker in self._workers if worker.future is not None]
                    if self._closing and not self._queue and not busy:
                        return
                    watched = [self._wake_r] + [w.process.sentinel for w in self._workers]
                    watched += [w.conn for w in busy if not w.closed]
                ready = ready_of(watched)
                if self._wake_r in ready:
                    self._drain()
                for worker in list(self._workers):
                    if worker.conn in ready or worker.process.sentinel in ready:
                        self._collect(worker, worker.process.sentinel in ready)
        except BaseException as exc:  # noqa: BLE001 - the pool broke: fail its jobs, never hang
            with self._lock:
                self._closing = True
                failed = [w.future for w in self._workers if w.future is not None]
                failed += [item[0] for item in self._queue]
                self._queue.clear()
            for future in failed:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._release()

    def _fill(self) -> None:
        """Start workers up to the pool's size (a dead one's replacement among them)."""
        while True:
            with self._lock:
                if self._closing or len(self._workers) >= self._size:
                    return
            parent_end, child_end = self._context.Pipe()
            process = self._context.Process(
                target=_serve_jobs,
                args=(child_end, self.stop, self._environ),
                name="lrsched-worker",
                daemon=True,
            )
            process.start()
            child_end.close()
            with self._lock:
                self._workers.append(_Worker(process, parent_end))

    def _assign(self) -> None:
        """Give each idle worker the next queued job; none after a Ctrl-C."""
        from multiprocessing.reduction import ForkingPickler

        if self.stop.is_set():
            self._cancel_queued()
        for worker in self._workers:
            while worker.future is None and not worker.closed and self._queue:
                future, fn, args, kwargs = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    payload = ForkingPickler.dumps((fn, args, kwargs))
                except Exception as exc:  # noqa: BLE001 - this job's failure
                    future.set_exception(exc)
                    continue
                worker.future = future
                try:
                    worker.conn.send_bytes(payload)
                except OSError:
                    worker.closed = True  # it died: its sentinel fails this job

    def _collect(self, worker: _Worker, died: bool) -> None:
        """Take a worker's result, and bury it if it has ended."""
        if worker.future is not None and not worker.closed and worker.conn.poll():
            try:
                ok, value = worker.conn.recv()
            except (EOFError, OSError):
                worker.closed = True
            except Exception as exc:  # noqa: BLE001 - a result that does not unpickle
                worker.future.set_exception(exc)
                worker.future = None
            else:
                future, worker.future = worker.future, None
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        if not died:
            return
        with self._lock:
            self._workers.remove(worker)
        worker.process.join()  # its sentinel is ready: at once
        worker.conn.close()
        if worker.future is not None:
            worker.future.set_exception(WorkerDied(worker.process.pid, worker.process.exitcode))

    def _drain(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _release(self) -> None:
        """End the idle workers (each finishes nothing: it has no job), killing any that
        does not end within seconds, and close the pipes."""
        with self._lock:
            workers, self._workers = list(self._workers), []
        for worker in workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 5.0
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join(1.0)
            worker.conn.close()
        with self._lock:
            descriptors, self._wake_w = (self._wake_r, self._wake_w), None
        for descriptor in descriptors:
            os.close(descriptor)


def _group(runs: list[store.RunHistory], results: list[JobResult]) -> dict[str, list]:
    groups: dict[str, list[store.RunHistory]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    for result in results:
        if result.path is not None:
            groups.setdefault(result.name, []).append(store.read_run(Path(result.path)))
        else:  # failed before a run directory existed: count it, with its error
            failed = store.RunHistory(
                Path(result.name),
                {"name": result.name, "seed": result.seed},
                [],
                [],
                {"status": "failed", "seed": result.seed},
            )
            groups.setdefault(result.name, []).append(failed)
    for runs in groups.values():  # by seed, however the workers finished
        runs.sort(key=lambda run: run.summary.get("seed", run.config.get("seed", 0)) or 0)
    return groups


def _add_configs(inputs: Inputs, configs: list[ExperimentConfig], path: Path) -> None:
    """Add one file's configs; a sweep's members carry the values they were swept over."""
    inputs.configs += configs
    inputs.files.update((cfg.name, path) for cfg in configs)
    if len(configs) > 1:
        inputs.swept.update(swept_values(configs))


def swept_values(configs: list[ExperimentConfig]) -> dict[str, dict[str, Any]]:
    """Per config, the key paths (e.g. `optimizer.lr`) whose values differ between the
    members of one sweep, found by comparing the configs: however the members are named."""
    dicts = [cfg.to_dict() for cfg in configs]
    differ = store.differing_keys(dicts, ignore=("name",))
    return {
        cfg.name: {key: store.flatten(values).get(key) for key in differ}
        for cfg, values in zip(configs, dicts, strict=True)
    }


def _recorded_warnings(runs: list[store.RunHistory]) -> dict[str, list[str]]:
    """The warnings finished runs saved in summary.json, once per config."""
    found: dict[str, list[str]] = {}
    for run in runs:
        for warning in run.summary.get("warnings") or []:
            if warning not in found.setdefault(run.name, []):
                found[run.name].append(warning)
    return found


def _remove_if_empty(out_dir: Path) -> None:
    for directory in (out_dir / "runs", out_dir):
        try:
            directory.rmdir()
        except OSError:
            pass  # not empty (or never made): keep it


def _expand(argument: str) -> Iterator[Path]:
    if any(char in argument for char in "*?[") and not Path(argument).exists():
        matches = sorted(glob.glob(argument))
        if not matches:
            raise ConfigError(f"{argument}: the pattern matches no file")
        yield from (Path(match) for match in matches)
    else:
        path = Path(argument)
        if not path.exists():
            raise ConfigError(f"{argument}: no such config file or run directory")
        yield path


def _collect_folder(path: Path, inputs: Inputs, overrides, epochs) -> None:
    """A folder of configs, or a folder of run directories (a runs/ or a compare directory)."""
    configs = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))
    if configs:
        for config in configs:
            _add_configs(inputs, load_configs(config, overrides, epochs=epochs), config)
        return
    runs = sorted(p.parent for p in path.glob("*/metrics.csv"))
    runs += sorted(p.parent for p in path.glob("runs/*/metrics.csv"))
    if not runs:
        raise store.RunNotFound(f"{path} holds no configs (*.yaml) and no run directories")
    for run in runs:
        _add_run(inputs, run)


def _link(target: Path, link: Path) -> None:
    if not link.exists():
        try:
            link.symlink_to(target.resolve(), target_is_directory=True)
        except OSError:
            pass  # a filesystem without links: summary.json still names every run's path
