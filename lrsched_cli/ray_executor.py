"""`lrsched compare --executor ray`: every job of a comparison, or fused group of jobs, as a
Ray task.

Imported only when that option is given, so `lrsched --help` and `lrsched plot` never import Ray.
The executor plugs into `compare.execute`'s pool seam: a context manager yielding a
concurrent.futures.Executor, whose `submit(compare._run_job, job, runs_dir, threads, run_plots)`
becomes a task that trains the job on whichever node Ray picks.

No shared filesystem is assumed: a task trains into a temporary directory of its own worker and
returns that run directory as bytes, which the driver writes under the comparison directory. With
`storage=True` the workers write straight into the driver's `runs_dir`, which must then be the
same path on every node.

Ctrl-C, as with the local pool: the first one cancels the tasks that have not started
(`ray.cancel`) and has the running ones stop after their current batch, their runs kept as
`interrupted`; a second one force-cancels what still runs.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lrsched_cli import store
from lrsched_cli.compare import StopFlag
from lrsched_cli.errors import ConfigError

MISSING = "--executor ray needs Ray, which is not installed: pip install 'lrsched[ray]'"
CONNECT_TIMEOUT = 10.0  # seconds for the head node to answer before we give up on --address
POLL = 0.5  # seconds between a running task's looks at the comparison's stop flag
RAY_CLIENT_PORT, GCS_PORT = 10001, 6379


def import_ray() -> Any:
    """Ray, or a ConfigError (exit 2) that names the extra which installs it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(MISSING) from None
    return ray


@contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Ray, connected: to the cluster at `address` (`auto`, `HOST:PORT`, `ray://HOST:PORT`), or
    a local Ray on this machine's cores, without a dashboard. A Ray already initialised in this
    process (a test's, a notebook's) is used as it is and left running."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    if address not in (None, "auto"):
        _probe(address)
    options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        options["include_dashboard"] = False
    try:
        ray.init(address=address, **options)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        where = address or "a local Ray"
        raise ConfigError(f"--address {where}: cannot connect to Ray: {_first_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _probe(address: str) -> None:
    """Fail within CONNECT_TIMEOUT when nothing answers at `address`: Ray's own connect retries
    for a minute or more (Ray Client), or forever (a GCS address)."""
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        port = parts.port or (RAY_CLIENT_PORT if parts.scheme == "ray" else GCS_PORT)
    except ValueError:
        raise ConfigError(f"--address {address}: expected HOST:PORT or ray://HOST:PORT") from None
    if not parts.hostname:
        raise ConfigError(f"--address {address}: expected HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ConfigError(
            f"--address {address}: no Ray head node answers at {parts.hostname}:{port} "
            f"({exc.strerror or type(exc).__name__})"
        ) from None


def pool(storage: bool = False, gpus_per_job: float = 0.0) -> Callable[[int, bool], Any]:
    """The `pool` for `compare.execute`: Ray must be connected (see `connected`) while it runs."""

    @contextmanager
    def ray_pool(workers: int, run_plots: bool) -> Iterator[RayExecutor]:
        executor = RayExecutor(storage, gpus_per_job)
        try:
            yield executor
        except BaseException:
            executor.terminate()
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    return ray_pool


class TaskLost(RuntimeError):
    """Ray lost the task (its worker or its node died) before it returned."""


@dataclass(eq=False)
class _Task:
    future: Future
    ref: Any  # the ObjectRef of its result
    key: int  # what the task tells the control actor when it starts
    job: Any = None  # a compare.Job, or a fused group's list of them; None for any other function
    runs_dir: Path | None = None


class RayExecutor(Executor):
    """Runs `compare._run_job` as a Ray task per job, `compare._run_group` as one per fused
    group, anything else as a plain task. One thread waits on the tasks, writes the returned
    runs, and resolves the futures."""

    fuses = True  # compare.execute may hand it fused groups

    def __init__(self, storage: bool, gpus_per_job: float):
        import ray

        self.stop = StopFlag()  # what `compare.execute`'s Ctrl-C handler sets
        self._ray, self._storage, self._gpus = ray, storage, gpus_per_job
        self._control = ray.remote(num_cpus=0, max_restarts=0)(_Control).remote()
        self._job = ray.remote(max_retries=0)(_train)
        self._call = ray.remote(max_retries=0)(_call)
        self._largest_node = max(
            (node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")),
            default=1,
        )
        self._lock = threading.Lock()
        self._tasks: dict[Any, _Task] = {}  # ObjectRef -> task
        self._keys = 0
        self._closing = self._cancelling = self._stopped = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._dispatch, name="lrsched-ray", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        from lrsched_cli import compare

        future: Future = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("the Ray executor is shut down")
            self._keys += 1
            if fn is compare._run_job or fn is compare._run_group:
                job, runs_dir, threads, run_plots = args[:4]
                first = job[0] if isinstance(job, list) else job
                cpus = first.config.threads if isinstance(first.config.threads, int) else threads
                options = {
                    "num_cpus": max(1, min(cpus or 1, self._largest_node)),
                    "num_gpus": self._gpus,
                    "name": first.label if first is job else f"{first.label}+{len(job) - 1}",
                }
                where = str(runs_dir) if self._storage else None
                ref = self._job.options(**options).remote(
                    job, threads, run_plots, where, self._control, self._keys
                )
                task = _Task(future, ref, self._keys, job, Path(runs_dir))
            else:
                ref = self._call.options(num_cpus=1).remote(fn, args, kwargs)
                task = _Task(future, ref, self._keys)
            self._tasks[ref] = task
        self._wake.set()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closing = True
            self._cancelling = self._cancelling or cancel_futures
        self._wake.set()
        if wait:
            self._thread.join()
            self._ray.kill(self._control)

    def terminate(self) -> list[int]:
        """Force-cancel every task now (a second Ctrl-C); their runs are lost. Returns no pids:
        the runs were on other machines, or in temporary directories."""
        with self._lock:
            self._closing = True
            tasks = list(self._tasks.values())
        for task in tasks:
            self._ray.cancel(task.ref, force=True)
            if task.future.cancel():
                task.future.set_running_or_notify_cancel()
        self._wake.set()
        return []

    def _dispatch(self) -> None:
        ray = self._ray
        while True:
            with self._lock:
                refs = list(self._tasks)
                if self._closing and not refs:
                    return
            if self.stop.is_set() or self._cancelling:
                self._cancel_unstarted()
            if not refs:
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.1)
            for ref in ready:
                with self._lock:
                    task = self._tasks.pop(ref)
                self._resolve(task)

    def _cancel_unstarted(self) -> None:
        """Once: no task starts from now on; those that have not started are cancelled, the
        running ones see the flag within POLL seconds and stop after their batch."""
        if self._stopped:
            return
        self._stopped = True
        try:
            started = set(self._ray.get(self._control.stop.remote(), timeout=30))
        except Exception:  # noqa: BLE001 - the actor is gone: the tasks cannot start either
            started = set()
        with self._lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            if task.job is not None and task.key not in started:
                self._ray.cancel(task.ref)

    def _resolve(self, task: _Task) -> None:
        from ray.exceptions import RayTaskError, TaskCancelledError

        if task.future.done():  # cancelled by terminate()
            return
        try:
            value = self._ray.get(task.ref)
        except TaskCancelledError:
            value = None  # cancelled before it started: as a queued job after a Ctrl-C
        except RayTaskError as exc:  # the function raised: its own exception, as locally
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            task.future.set_exception(cause)
            return
        except Exception as exc:  # noqa: BLE001 - the worker or its node died, or Ray broke
            self._lost(task, exc)
            return
        if task.job is None and value is not None:
            task.future.set_result(value)
        elif value is None:  # cancelled, or it saw the stop flag before it started
            if task.future.cancel():
                task.future.set_running_or_notify_cancel()
        else:
            results, packs = value
            if not isinstance(results, list):  # a job alone
                results, packs = [results], [packs]
            elif packs is None:  # a group on shared storage: nothing to write here
                packs = [None] * len(results)
            jobs = task.job if isinstance(task.job, list) else [task.job]
            for result, packed, job in zip(results, packs, jobs, strict=True):
                try:
                    if packed is not None:
                        _unpack(result, packed, task.runs_dir, job.label)
                except OSError as exc:
                    result.status, result.path = "failed", None
                    result.error = f"writing its run directory here: {exc}"
            task.future.set_result(results if isinstance(task.job, list) else results[0])

    def _lost(self, task: _Task, exc: BaseException) -> None:
        """A failed run, with the cause, for a job whose task Ray lost; the others go on."""
        if task.job is None:
            task.future.set_exception(TaskLost(f"{type(exc).__name__}: {_first_line(exc)}"))
            return
        from lrsched_cli.compare import JobResult

        error = f"Ray lost the task ({type(exc).__name__}): {_first_line(exc)}"
        results = []
        for job in task.job if isinstance(task.job, list) else [task.job]:
            cfg = job.config
            path = _mark_lost(task.runs_dir, cfg, error) if self._storage else None
            results.append(
                JobResult(cfg.name, cfg.seed, "failed", str(path) if path else None, error)
            )
        task.future.set_result(results if isinstance(task.job, list) else results[0])


class _Control:
    """The comparison's stop flag, held by a Ray actor that every task can reach: tasks report
    that they start, and running ones look at the flag every POLL seconds."""

    def __init__(self) -> None:
        self._started: set[int] = set()
        self._stopped = False

    def begin(self, key: int) -> bool:
        if not self._stopped:
            self._started.add(key)
        return not self._stopped

    def stop(self) -> list[int]:
        self._stopped = True
        return sorted(self._started)

    def stopped(self) -> bool:
        return self._stopped


class _RemoteStop:
    """In a task: the comparison's stop flag, as `runner.run_experiment` reads it after every
    batch (a plain attribute), kept up to date from the control actor by a thread."""

    def __init__(self, control: Any):
        import ray

        self._set = False
        self._done = threading.Event()

        def watch() -> None:
            while not self._done.wait(POLL):
                try:
                    if ray.get(control.stopped.remote(), timeout=10):
                        self._set = True
                        return
                except Exception:  # noqa: BLE001 - a slow or lost actor: Ray ends the tasks
                    continue  # of a driver that is gone, so keep training and keep looking

        threading.Thread(target=watch, name="lrsched-stop", daemon=True).start()

    def is_set(self) -> bool:
        return self._set

    def close(self) -> None:
        self._done.set()


def _train(job, threads, run_plots, runs_dir: str | None, control, key: int):
    """The task: train `job`, or a fused group's list of jobs (None if the comparison stopped
    before it started). Returns its JobResult and, without shared storage, its run directory as
    {relative path: bytes}; for a group, the lists of both."""
    import ray

    from lrsched_cli import compare

    if not ray.get(control.begin.remote(key)):
        return None
    train = compare._run_group if isinstance(job, list) else compare._run_job
    stop = _RemoteStop(control)
    try:
        if runs_dir is not None:
            return train(job, Path(runs_dir), threads, run_plots, stop), None
        with tempfile.TemporaryDirectory(prefix="lrsched-") as scratch:
            result = train(job, Path(scratch), threads, run_plots, stop)
            if isinstance(result, list):
                return result, [_pack(one.path, scratch) for one in result]
            return result, _pack(result.path, scratch)
    finally:
        stop.close()


def _call(fn: Callable, args: tuple, kwargs: dict) -> Any:
    return fn(*args, **kwargs)


def _pack(path: str | None, scratch: str) -> dict[str, Any] | None:
    """The run directory's files (config.yaml, metrics.csv, steps.csv, summary.json, the
    checkpoint, any plots, the empty lock file), without half-written temporaries."""
    if path is None:
        return None
    root = Path(path)
    files = {
        str(file.relative_to(root)): file.read_bytes()
        for file in sorted(root.rglob("*"))
        if file.is_file() and not (file.name.startswith(".") and file.name.endswith(".tmp"))
    }
    return {"name": root.name, "scratch": scratch, "files": files}


def _unpack(result: Any, packed: dict[str, Any], runs_dir: Path, label: str) -> None:
    """Write a returned run directory under `runs_dir`, and point `result` at it."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    target = runs_dir / store.safe_name(packed["name"])
    try:
        target.mkdir()
    except FileExistsError:
        target = store.create_run_dir(runs_dir, label)
    files = packed["files"]
    # summary.json last: until it is there, the directory reads as a run that never started.
    for name in sorted(files, key=lambda name: name == store.SUMMARY_FILE):
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise OSError(f"refused a returned file outside the run directory: {name}")
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(files[name])
    old = str(Path(packed["scratch"]) / packed["name"])
    result.path = str(target)
    if result.error:
        result.error = result.error.replace(old, str(target))


def _mark_lost(runs_dir: Path | None, cfg: Any, error: str) -> Path | None:
    """On shared storage, the lost task's run directory, marked failed (it was left
    `running`, by a process on another machine)."""
    if runs_dir is None:
        return None
    return store.end_running_run(runs_dir, {"name": cfg.name, "seed": cfg.seed}, "failed", error)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
