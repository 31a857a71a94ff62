"""Fused groups: runs trained together in one batched loop equal the same runs trained alone."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli import compare, fused, runner, store
from lrsched_cli.cli import app
from lrsched_cli.config import validate

# 240 rows to train: 7 steps of 32, then one of 16 (batched), or of 10 with 230 (run by run)
DATA = {"name": "moons", "n_samples": 400, "batch_size": 32}
SGD = {"name": "SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}
ADAM = {"name": "Adam", "lr": 0.01, "weight_decay": 1e-3}
ADAMW = {"name": "AdamW", "lr": 0.01, "weight_decay": 0.1}
SCHEDULES = {
    "cosine": {"name": "CosineAnnealingLR", "T_max": 5},
    "onecycle": {"name": "OneCycleLR", "max_lr": 0.05},  # per step; cycles momentum or beta1
    "plateau": {"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.5, "warmup": {"epochs": 1}},
    "none": {"name": "none"},
}


def config(name: str, scheduler: dict, seed: int = 0, optimizer: dict = SGD, **changes):
    return validate(
        tiny(
            **{
                "name": name,
                "seed": seed,
                "epochs": 5,
                "threads": 1,
                "data": DATA,
                "model": {"name": "mlp", "hidden": [16, 16]},
                "optimizer": optimizer,
                "scheduler": scheduler,
                **changes,
            }
        )
    )


def fused_and_alone(jobs, tmp_path):
    together = fused.run_group(jobs, tmp_path / "fused")
    alone = [runner.run_experiment(cfg, tmp_path / "alone", label=label) for cfg, label in jobs]
    return together, alone


def weights(path):
    return torch.load(path / "checkpoint.pt", weights_only=False)["model"]


def assert_same_run(fused_path, alone_path) -> None:
    """Every recorded number but the epoch's seconds, and the final weights: bitwise."""
    together, alone = store.read_run(fused_path), store.read_run(alone_path)
    assert together.summary["status"] == alone.summary["status"]
    for key in ("test_loss", "test_accuracy", "best_val_loss", "stopped_early_at", "lr_cuts"):
        assert together.summary.get(key) == alone.summary.get(key), key
    mine = [{k: v for k, v in row.items() if k != "seconds"} for row in together.epochs]
    theirs = [{k: v for k, v in row.items() if k != "seconds"} for row in alone.epochs]
    assert repr(mine) == repr(theirs)  # repr: a diverged run's nan equals nan
    assert together.steps == alone.steps
    if (alone_path / "checkpoint.pt").exists():
        mine, theirs = weights(fused_path), weights(alone_path)
        for name in theirs:
            assert torch.equal(mine[name], theirs[name]), name


@pytest.mark.parametrize("optimizer", [SGD, ADAM, ADAMW], ids=["SGD", "Adam", "AdamW"])
def test_fused_runs_equal_runs_alone(optimizer, tmp_path):
    jobs = [
        (config(name, scheduler, seed, optimizer), f"{name}-seed{seed}")
        for seed in (0, 1)
        for name, scheduler in SCHEDULES.items()
    ]
    together, alone = fused_and_alone(jobs, tmp_path)
    for mine, theirs in zip(together, alone, strict=True):
        assert mine.status == "completed"
        assert mine.summary["fused"] is True and mine.summary["group_size"] == 8
        assert theirs.summary["fused"] is False and theirs.summary["group_size"] == 1
        assert "test_loss" in mine.summary
        assert_same_run(mine.path, theirs.path)


def test_short_batches_and_dropout_stay_bitwise(tmp_path):
    """A last batch of 10 rows (trained run by run) and dropout masks from each run's stream."""
    data = {**DATA, "n_samples": 384}
    model = {"name": "mlp", "hidden": [16, 16], "dropout": 0.3}
    jobs = [
        (config(name, SCHEDULES[name], seed, data=data, model=model), f"{name}-seed{seed}")
        for seed in (0, 1)
        for name in ("cosine", "onecycle")
    ]
    assert runner.count_steps(runner.prepare(jobs[0][0]).dataset, 32) == 8
    together, alone = fused_and_alone(jobs, tmp_path)
    for mine, theirs in zip(together, alone, strict=True):
        assert_same_run(mine.path, theirs.path)


def test_runs_whose_blocks_are_not_64_byte_multiples_stay_bitwise(tmp_path):
    """wine: 106 rows x 13 features a run, batches of 13 and a last one of 2 rows: without
    padding, run k's rows would sit at another alignment than a run alone's, and a product of
    few rows rounds otherwise there."""
    data, model = {"name": "wine", "batch_size": 13}, {"name": "mlp", "hidden": [24, 16]}
    jobs = [
        (
            config("wine", SCHEDULES["cosine"], seed, ADAM, epochs=3, data=data, model=model),
            f"w{seed}",
        )
        for seed in range(3)
    ]
    together, alone = fused_and_alone(jobs, tmp_path)
    for mine, theirs in zip(together, alone, strict=True):
        assert_same_run(mine.path, theirs.path)


def test_a_diverged_run_leaves_the_group_and_the_others_go_on(tmp_path):
    wild = {**SGD, "lr": 1e4}
    jobs = [
        (config("wild", SCHEDULES["none"], optimizer=wild), "wild"),
        (config("early", SCHEDULES["none"], early_stopping={"patience": 1}), "early"),
        (config("short", SCHEDULES["cosine"], epochs=3), "short"),
        (config("cosine", SCHEDULES["cosine"]), "cosine"),
    ]
    together, alone = fused_and_alone(jobs, tmp_path)
    statuses = [result.status for result in together]
    assert statuses == [result.status for result in alone]
    assert statuses[0] == "diverged" and statuses[2:] == ["completed", "completed"]
    for mine, theirs in zip(together, alone, strict=True):
        assert mine.summary.get("stopped_early_at") == theirs.summary.get("stopped_early_at")
        assert_same_run(mine.path, theirs.path)


class StopAfter:
    """A stop event that is set once it has been asked `polls` times (once per step)."""

    def __init__(self, polls: int):
        self.polls = polls

    def is_set(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def set(self) -> None:
        self.polls = -1


def test_a_stopped_group_keeps_finished_epochs_and_each_run_resumes_alone(tmp_path):
    jobs = [
        (config(name, SCHEDULES[name], checkpoint_every=1), name) for name in ("cosine", "onecycle")
    ]
    stopped = fused.run_group(jobs, tmp_path / "fused", stop=StopAfter(8 + 3))  # in epoch 2
    assert [result.status for result in stopped] == ["interrupted", "interrupted"]
    for result in stopped:
        assert len(store.read_run(result.path).epochs) == 1
    for result, (cfg, label) in zip(stopped, jobs, strict=True):
        resumed = runner.resume_experiment(result.path)
        assert resumed.status == "completed"
        alone = runner.run_experiment(cfg, tmp_path / "alone", label=label)
        assert_same_run(result.path, alone.path)


def test_what_cannot_be_fused_says_why():
    rmsprop = runner.prepare(
        config("rms", SCHEDULES["none"], optimizer={"name": "RMSprop", "lr": 0.01})
    )
    assert fused.fusion_key(rmsprop) == "optimizer.name: RMSprop has no stacked update"
    norm = runner.prepare(config("norm", SCHEDULES["none"]))
    norm.model.append(torch.nn.BatchNorm1d(2))
    assert "buffers" in fused.fusion_key(norm)
    plain = [runner.prepare(config(n, s)) for n, s in SCHEDULES.items()]
    assert len({fused.fusion_key(experiment) for experiment in plain}) == 1
    wider = runner.prepare(config("wide", SCHEDULES["none"], model={"name": "mlp", "hidden": [32]}))
    assert fused.fusion_key(wider) != fused.fusion_key(plain[0])
    assert fused.rehearse(plain[0]) is None


@pytest.mark.parametrize("rows", [32, 16, 10, 3])
def test_gradients_are_batched_only_where_they_give_a_run_alone_s_bits(rows):
    experiments = [runner.prepare(config("a", SCHEDULES["none"], seed)) for seed in range(3)]
    engine = fused.FusedEngine([fused._StandIn(e) for e in experiments])
    x, y = engine.x_train[:, :rows], engine.y_train[:, :rows]
    grads, losses = engine.gradients(x, y)
    loss_fn = runner.loss_function("classification")
    for k, experiment in enumerate(experiments):
        loss = loss_fn(experiment.model(x[k]), y[k])
        loss.backward()
        assert torch.equal(losses[k], loss.detach())
        for name, param in experiment.model.named_parameters():
            assert torch.equal(grads[name][k], param.grad), name
    params = dict(zip(engine.names, engine.params, strict=True))
    batched = engine._batched(params, engine.buffers, x, y)
    assert list(engine.batched_exact.values()) == [fused._same(batched, (grads, losses))]


def job(name: str, seed: int, **changes) -> compare.Job:
    return compare.Job(validate(tiny(name=name, seed=seed, **changes)), f"{name}-seed{seed}")


def test_groups_are_split_across_workers_and_by_memory():
    jobs = [job(name, seed) for seed in range(10) for name in ("a", "b")]
    checks = compare.Checks(fusion={n: compare.Fusion("key", limit=100) for n in ("a", "b")})
    units, notes = compare.plan_units(jobs, checks, workers=2)
    assert sorted(len(unit) for unit in units) == [10, 10] and not notes
    assert sorted(job.label for unit in units for job in unit) == sorted(j.label for j in jobs)
    checks.fusion["a"] = compare.Fusion("key", limit=3)
    units, _ = compare.plan_units(jobs, checks, workers=2)
    assert max(len(unit) for unit in units) <= 3 and len(units) == 7


def test_configs_that_asked_to_be_fused_and_cannot_are_named_with_the_reason():
    jobs = [
        *(job("a", seed, fuse=True) for seed in range(2)),
        *(job("b", seed, fuse=True, model={"name": "mlp", "hidden": [4]}) for seed in range(2)),
        *(job("c", seed, optimizer={"name": "RMSprop", "lr": 0.01}) for seed in range(2)),
    ]
    reason = "optimizer.name: RMSprop has no stacked update"
    checks = compare.Checks(
        fusion={
            "a": compare.Fusion("one", limit=10),
            "b": compare.Fusion("two", limit=10),
            "c": compare.Fusion(None, reason),
        }
    )
    units, notes = compare.plan_units(jobs, checks, workers=1)
    assert sorted(len(unit) for unit in units) == [1, 1, 2, 2]
    assert notes == [f"c: {reason}: its runs train one by one"]
    alone = [job("a", 0, fuse=True), job("b", 0, fuse=True, model={"name": "mlp", "hidden": [4]})]
    _, notes = compare.plan_units(alone, checks, workers=1)
    assert notes == [
        "a: fuse: true, but it differs from b in model.hidden; it runs unfused",
        "b: fuse: true, but it differs from a in model.hidden; it runs unfused",
    ]


def test_compare_fuses_by_default_and_not_with_fuse_off(tmp_path):
    shapes = {"epochs": 2, "data": DATA, "model": {"name": "mlp", "hidden": [16, 16]}}
    first = write_config(tmp_path, tiny(name="step", **shapes), "step.yaml")
    rms = tiny(name="rms", optimizer={"name": "RMSprop", "lr": 0.01}, **shapes)
    second = write_config(tmp_path, rms, "rms.yaml")
    for mode, fused_runs in (("auto", 2), ("off", 0)):
        runs = tmp_path / mode
        args = ["compare", str(first), str(second), "--seeds", "2", "--jobs", "1"]
        result = CliRunner().invoke(app, [*args, "--runs-dir", str(runs), "--fuse", mode])
        assert result.exit_code == 0, result.output
        summaries = [
            json.loads(path.read_text()) for path in sorted(runs.glob("*/runs/*/summary.json"))
        ]
        assert len(summaries) == 4
        assert sum(summary["fused"] for summary in summaries) == fused_runs
        assert all(s["group_size"] == (2 if s["fused"] else 1) for s in summaries)
        has_note = "rms: optimizer.name: RMSprop has no stacked update" in result.output
        assert has_note == (mode == "auto")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_a_group_trains_without_host_syncs_inside_an_epoch(tmp_path):
    jobs = [
        (config(name, SCHEDULES[name], seed, device="cuda"), f"{name}-seed{seed}")
        for seed in (0, 1)
        for name in SCHEDULES
    ]
    experiments = [runner.prepare(cfg) for cfg, _ in jobs]
    engine = fused.FusedEngine([fused._StandIn(e) for e in experiments])
    engine.begin()
    stop = runner._StopFlag()
    engine.train_epoch(1, stop)  # the first batch of each size is also trained run by run
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums = engine.train_epoch(2, stop)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(loss.device.type == "cuda" for loss, _ in sums)
    together, alone = fused_and_alone(jobs, tmp_path)
    for mine, theirs in zip(together, alone, strict=True):
        assert mine.status == theirs.status == "completed"
        a, b = store.read_run(mine.path), store.read_run(theirs.path)
        assert [r["lr"] for r in a.steps] == [r["lr"] for r in b.steps]
        for x, y in zip(a.epochs, b.epochs, strict=True):
            assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-5)


class TwiceDropped(torch.nn.Module):
    """One dropout layer called twice: a run alone draws two masks a step."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(2, 16), torch.nn.Linear(16, 2)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):
        return self.second(self.drop(self.drop(self.first(x)).relu()))


def test_models_a_stacked_update_would_train_otherwise_are_not_fused():
    frozen = runner.prepare(config("frozen", SCHEDULES["none"]))
    frozen.model[1].weight.requires_grad_(False)
    assert fused.fusion_key(frozen) == "model.name: mlp has frozen parameters"
    unused = runner.prepare(config("unused", SCHEDULES["none"]))
    unused.model.register_parameter("spare", torch.nn.Parameter(torch.zeros(3)))
    assert fused.rehearse(unused) == "model.name: mlp: no loss reaches spare"
    twice = runner.prepare(config("twice", SCHEDULES["none"]))
    twice.model = TwiceDropped()
    assert "runs more than once" in fused.rehearse(twice)


def test_a_dead_worker_fails_the_runs_of_its_group_that_had_not_ended(tmp_path):
    ended, running = job("short", 0), job("long", 0)
    for found, status in ((ended, "completed"), (running, "running")):
        path = tmp_path / found.label
        path.mkdir()
        summary = {"name": found.config.name, "seed": 0, "status": status, "pid": 4242}
        store.write_json(path / store.SUMMARY_FILE, {**summary, "hostname": socket.gethostname()})
    died = compare.WorkerDied(4242, -9)
    short, long = (compare._died(found, died, tmp_path) for found in (ended, running))
    assert (short.status, short.path) == ("completed", str(tmp_path / ended.label))
    assert long.status == "failed" and "killed by SIGKILL" in long.error
    assert store.read_summary(tmp_path / running.label / store.SUMMARY_FILE)["status"] == "failed"


def test_a_bad_fuse_value_is_one_message():
    from lrsched_cli.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        validate(tiny(fuse="maybe"))
    assert str(caught.value) == "fuse: input should be auto, true or false (got 'maybe')"
