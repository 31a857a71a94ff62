"""lrsched compare: inputs -> runs over paired seeds, executed in parallel -> one comparison.

torch is imported only where runs are trained (`_run_job`, `validate_configs`), so a comparison
of finished run directories never imports it.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lrsched_cli import stats, store
from lrsched_cli.config import ConfigError, ExperimentConfig, load_configs

DEFAULT_SEEDS = (0, 1, 2)
# Preloaded once by the forkserver, so a worker starts as a fork, not a 3-5 s import of torch.
WORKER_PRELOAD = ["torch", "torch._dynamo", "lrsched_cli.runner"]


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


@dataclass
class Comparison:
    path: Path
    metric: str
    summaries: list[stats.ConfigSummary]  # ranked, best first
    pairwise: list[dict[str, Any]]
    results: list[JobResult]
    warnings: list[str]


def collect_inputs(
    arguments: list[str], overrides: list[str] = (), epochs: int | None = None
) -> Inputs:
    """Configs (files, globs, folders of configs) and finished run directories, in order."""
    inputs = Inputs()
    for argument in arguments:
        for path in _expand(argument):
            if path.is_dir() and (path / store.METRICS_FILE).is_file():
                inputs.runs.append(store.read_run(path))
            elif path.is_dir():
                _collect_folder(path, inputs, overrides, epochs)
            else:
                _add_configs(inputs, load_configs(path, overrides, epochs=epochs))
    names = [cfg.name for cfg in inputs.configs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"several configs are named {', '.join(repeated)}; give each its own "
            "`name:` so their results can be told apart"
        )
    if not inputs.configs and not inputs.runs:
        raise ConfigError(f"nothing to compare in {' '.join(arguments)}")
    return inputs


def check_comparable(inputs: Inputs, force: bool) -> list[str]:
    """Runs on different data cannot be compared; say so (an error unless `force`)."""
    datasets = [(cfg.name, cfg.data.model_dump(exclude_none=True)) for cfg in inputs.configs]
    datasets += [(run.name, dict(run.config.get("data", {}))) for run in inputs.runs]
    problems = store.data_differences(datasets)
    if problems and not force:
        raise ConfigError(
            "a comparison across datasets is meaningless: "
            + "; ".join(problems)
            + ". Use --force to compare anyway"
        )
    return problems


def plan_jobs(configs: list[ExperimentConfig], seeds: list[int]) -> list[Job]:
    """Every config with every seed: paired seeds give each config the same data, initial
    weights and batch order for a given seed, so differences come from the schedule alone."""
    return [
        Job(cfg.model_copy(update={"seed": seed}), f"{cfg.name}-seed{seed}")
        for seed in seeds
        for cfg in configs
    ]


def validate_configs(configs: list[ExperimentConfig]) -> dict[str, list[str]]:
    """Build each config once (no training), so a bad one stops the comparison before it starts;
    returns each config's schedule warnings, as `lrsched plan` and `run` give them."""
    from lrsched_cli import planning, runner

    warnings = {}
    for cfg in configs:
        experiment = runner.prepare(cfg)
        plan = planning.plan_schedule(
            experiment.config, experiment.steps_per_epoch, runner.LINT_HORIZON
        )
        warnings[cfg.name] = list(plan.warnings)
    return warnings


def execute(
    jobs: list[Job],
    runs_dir: Path,
    workers: int,
    on_result: Callable[[JobResult], None] = lambda result: None,
    run_plots: bool = False,
    pool: Callable[[int, bool], AbstractContextManager[Executor]] | None = None,
    lint: Callable[[dict[str, list[str]]], None] = lambda warnings: None,
) -> list[JobResult]:
    """Check every config, then run the jobs on `workers` processes (in this one for 1).

    A bad config raises ConfigError before any job starts; a failing job is a result, not a
    stop. `lint` gets each config's schedule warnings before any job starts, and may raise to
    stop there. With workers, the check runs in a worker too, so this process never imports torch.
    `pool(workers, run_plots)` is the seam for other executors: any context manager yielding a
    concurrent.futures.Executor (a cluster engine's, say) can replace the local process pool.
    """
    pool = pool or _worker_pool
    configs = list({job.config.name: job.config for job in jobs}.values())
    if workers <= 1 or len(jobs) <= 1:
        lint(validate_configs(configs))
        results = []
        for job in jobs:
            results.append(_run_job(job, runs_dir, None, run_plots))
            on_result(results[-1])
        return results
    workers = min(workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    with pool(workers, run_plots) as executor:
        _import_what_gathering_needs()  # on the core left idle while the forkserver imports torch
        lint(executor.submit(validate_configs, configs).result())  # re-raises a ConfigError
        futures = {
            executor.submit(_run_job, job, runs_dir, threads, run_plots): job for job in jobs
        }
        results = []
        for future in as_completed(futures):
            results.append(_result_of(future, futures[future]))
            on_result(results[-1])
    return results


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
) -> Comparison:
    """Run the configs over the seeds, gather them with the finished runs, and write the
    comparison's files into `out_dir`.

    `lint` gets the schedule warnings of every config, and those the finished runs recorded,
    once per config and before any training; it may raise to stop (`--strict`). A comparison
    stopped before any run leaves no empty directory behind.
    """
    schedule_warnings = _recorded_warnings(inputs.runs)

    def check(config_warnings: dict[str, list[str]]) -> None:
        for name, found in config_warnings.items():
            schedule_warnings[name] = list(dict.fromkeys(schedule_warnings.get(name, []) + found))
        lint({name: found for name, found in schedule_warnings.items() if found})

    jobs = plan_jobs(inputs.configs, seeds)
    try:
        if jobs:
            results = execute(jobs, out_dir / "runs", workers, on_result, run_plots, lint=check)
        else:
            check({})
            results = []
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
    comparison = Comparison(
        out_dir,
        metric,
        summaries,
        stats.pairwise(summaries, metric, target),
        results,
        list(warnings) + [f"{s.name}: {w}" for s in summaries for w in s.warnings],
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
        "pairwise": comparison.pairwise,
        "runs": [asdict(result) for result in comparison.results],
        "warnings": comparison.warnings,
    }
    (comparison.path / "summary.json").write_text(json.dumps(document, indent=2) + "\n")


def _run_job(job: Job, runs_dir: Path, threads: int | None, run_plots: bool) -> JobResult:
    """Train one job (and draw its plots); every way it can end becomes a JobResult."""
    import torch

    from lrsched_cli import plots, runner

    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    result = JobResult(job.config.name, job.config.seed, "failed")
    try:
        outcome = runner.run_experiment(job.config, runs_dir, label=job.label)
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


def _import_what_gathering_needs() -> None:
    """The statistics and the overlay plots need scipy and matplotlib once the runs are done."""
    import matplotlib.figure  # noqa: F401
    import scipy.stats  # noqa: F401


def _result_of(future: Future, job: Job) -> JobResult:
    try:
        return future.result()
    except Exception as exc:  # the worker process died (killed, out of memory)
        return JobResult(
            job.config.name,
            job.config.seed,
            "failed",
            error=f"worker died: {type(exc).__name__}: {exc}",
        )


@contextmanager
def _worker_pool(workers: int, run_plots: bool) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers fork from a forkserver with torch preloaded: forking a
    process whose torch threads run can deadlock, and spawning pays torch's import per worker."""
    import multiprocessing
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD + (["matplotlib.figure"] if run_plots else []))
    # Start the forkserver's imports now: the first submit would wait for them to finish. The
    # forkserver then serves this process's later pools too, with this first preload list.
    forkserver.ensure_running()
    pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


def _add_configs(inputs: Inputs, configs: list[ExperimentConfig]) -> None:
    """Add one file's configs; a sweep's members carry the values they were swept over."""
    inputs.configs += configs
    if len(configs) > 1:
        inputs.swept.update(swept_values(configs))


def swept_values(configs: list[ExperimentConfig]) -> dict[str, dict[str, Any]]:
    """Per config, the key paths (e.g. `optimizer.lr`) whose values differ between the
    members of one sweep, found by comparing the configs: however the members are named."""
    flat = [_flatten(cfg.to_dict()) for cfg in configs]
    keys = list(dict.fromkeys(key for values in flat for key in values if key != "name"))
    differ = [key for key in keys if len({repr(values.get(key)) for values in flat}) > 1]
    return {
        cfg.name: {key: values.get(key) for key in differ}
        for cfg, values in zip(configs, flat, strict=True)
    }


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
            _add_configs(inputs, load_configs(config, overrides, epochs=epochs))
        return
    runs = sorted(p.parent for p in path.glob("*/metrics.csv"))
    runs += sorted(p.parent for p in path.glob("runs/*/metrics.csv"))
    if not runs:
        raise store.RunNotFound(f"{path} holds no configs (*.yaml) and no run directories")
    inputs.runs += [store.read_run(run) for run in runs]


def _link(target: Path, link: Path) -> None:
    if not link.exists():
        try:
            link.symlink_to(target.resolve(), target_is_directory=True)
        except OSError:
            pass  # a filesystem without links: summary.json still names every run's path
