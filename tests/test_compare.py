"""lrsched compare: paired seeds, statistics, failures as results, finished runs, sweeps."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from conftest import tiny, train, write_config
from lrsched_cli import compare, runner, stats, store
from lrsched_cli.cli import app
from lrsched_cli.config import ConfigError, load_configs, validate

cli = CliRunner()
STEP = tiny(name="step", epochs=3)
COSINE = tiny(name="cosine", epochs=3, scheduler={"name": "CosineAnnealingLR", "T_max": 3})


def write_pair(directory: Path, *extra: dict) -> list[str]:
    configs = [STEP, COSINE, *extra]
    return [str(write_config(directory, c, f"{c['name']}.yaml")) for c in configs]


def run_compare(runs_dir: Path, *arguments: str):
    """`lrsched compare ARGUMENTS... --runs-dir RUNS_DIR`, in this process."""
    return cli.invoke(app, ["compare", *arguments, "--runs-dir", str(runs_dir)])


def test_paired_seeds_share_weights_split_and_batches_across_configs():
    jobs = compare.plan_jobs([validate(STEP), validate(COSINE)], [0, 1])
    assert [(j.config.name, j.config.seed) for j in jobs] == [
        ("step", 0),
        ("cosine", 0),
        ("step", 1),
        ("cosine", 1),
    ]
    prepared = [runner.prepare(job.config) for job in jobs]
    for a, b in ((prepared[0], prepared[1]), (prepared[2], prepared[3])):
        for wa, wb in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert wa.equal(wb)
        assert a.dataset.x_val.equal(b.dataset.x_val)
        assert a.batch_generator.get_state().equal(b.batch_generator.get_state())
    assert not prepared[0].dataset.x_val.equal(prepared[2].dataset.x_val)


def history(values: list[float], seed: int, name: str, status: str = "completed"):
    epochs = [
        {"epoch": i + 1, "lr": 0.1, "val_loss": v, "train_loss": v} for i, v in enumerate(values)
    ]
    summary = {"status": status, "seed": seed, "train_seconds": 1.0}
    return store.RunHistory(
        Path(f"{name}-{seed}"), {"name": name, "scheduler": {"name": "X"}}, epochs, [], summary
    )


def test_statistics_match_hand_computed_values():
    finals = {"a": [0.30, 0.20, 0.25], "b": [0.40, 0.35, 0.45]}
    groups = {
        name: [history([1.0, v], seed, name) for seed, v in enumerate(values)]
        for name, values in finals.items()
    }
    summaries = stats.rank(stats.summarize(groups, target=0.5), "final_val_loss")
    a = summaries[0].metrics["final_val_loss"]
    assert summaries[0].name == "a"
    assert a.mean == pytest.approx(0.25) and a.std == pytest.approx(0.05)
    half = 4.302652729911275 * 0.05 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert (a.ci_low, a.ci_high) == pytest.approx((0.25 - half, 0.25 + half))
    # per run, the mean of its val-loss curve [1.0, final]; then the mean over seeds
    assert summaries[0].metrics["auc_val_loss"].mean == pytest.approx((1.3 + 1.2 + 1.25) / 6)
    assert summaries[0].metrics["epochs_to_target"].mean == 2
    (pair,) = stats.pairwise(summaries, "final_val_loss", None)
    assert (pair["a_wins"], pair["b_wins"], pair["paired_seeds"]) == (3, 0, 3)
    assert pair["mean_difference"] == pytest.approx(-0.15)
    assert pair["wilcoxon_p"] == pytest.approx(0.25)
    expected_t = scipy_stats.ttest_rel(finals["a"], finals["b"]).pvalue
    assert pair["ttest_p"] == pytest.approx(expected_t)


def test_failed_and_diverged_runs_are_counted_not_averaged():
    groups = {
        "a": [
            history([0.5], 0, "a"),
            history([float("nan")], 1, "a", "diverged"),
            history([0.1], 2, "a", "failed"),
        ]
    }
    (summary,) = stats.summarize(groups, None)
    assert summary.metrics["final_val_loss"].values == [0.5]
    assert summary.row()["completed"] == 1 and summary.row()["diverged"] == 1
    assert summary.row()["failed"] == 1


def test_compare_cli_writes_the_comparison(tmp_path):
    paths = write_pair(tmp_path)
    result = run_compare(tmp_path / "runs", *paths, "--seed-list", "0,1", "--jobs", "1")
    assert result.exit_code == 0, result.output
    (out,) = (tmp_path / "runs").glob("*-compare")
    for name in (
        "summary.csv",
        "summary.json",
        "pairwise.csv",
        "lr.png",
        "val_loss.png",
        "val_accuracy.png",
    ):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["name"] for r in rows} == {"step", "cosine"}
    assert all(r["seeds"] == "2" and r["seed_list"] == "0;1" for r in rows)
    assert all(r["completed"] == "2" for r in rows)
    for column in (
        "final_val_loss_mean",
        "final_val_loss_std",
        "final_val_loss_ci_low",
        "best_val_loss_mean",
        "best_epoch_mean",
        "final_val_accuracy_mean",
        "auc_val_loss_mean",
        "epochs_to_target_mean",
        "train_seconds_mean",
    ):
        assert column in rows[0]
    assert len(list((out / "runs").iterdir())) == 4
    assert "ranked by final_val_loss" in result.stdout and "★" in result.stdout


def test_a_failing_config_does_not_stop_the_others(tmp_path, monkeypatch):
    real = runner.run_experiment

    def fail_cosine(cfg, runs_dir, observer=None, label=None, **options):
        if cfg.name == "cosine":
            raise RuntimeError("boom")
        return real(cfg, runs_dir, observer, label, **options)

    monkeypatch.setattr(runner, "run_experiment", fail_cosine)
    inputs = compare.collect_inputs(write_pair(tmp_path), ["fuse=false"])  # runs alone
    comparison = compare.compare(inputs, [0, 1], tmp_path / "out", 1, "final_val_loss")
    statuses = {(r.name, r.seed): r.status for r in comparison.results}
    assert statuses == {
        ("step", 0): "completed",
        ("step", 1): "completed",
        ("cosine", 0): "failed",
        ("cosine", 1): "failed",
    }
    assert all("boom" in r.error for r in comparison.results if r.name == "cosine")
    assert comparison.summaries[0].name == "step"


def test_parallel_workers_run_every_job(tmp_path):
    inputs = compare.collect_inputs(write_pair(tmp_path))
    comparison = compare.compare(inputs, [0, 1], tmp_path / "out", 2, "final_val_loss")
    assert sorted((r.name, r.seed, r.status) for r in comparison.results) == [
        ("cosine", 0, "completed"),
        ("cosine", 1, "completed"),
        ("step", 0, "completed"),
        ("step", 1, "completed"),
    ]
    serial = compare.compare(inputs, [0, 1], tmp_path / "serial", 1, "final_val_loss")
    finals = {s.name: s.metrics["final_val_loss"].values for s in comparison.summaries}
    assert finals == {s.name: s.metrics["final_val_loss"].values for s in serial.summaries}


def test_finished_runs_are_gathered_without_training_or_torch(tmp_path):
    runs = tmp_path / "runs"
    for config in (STEP, COSINE):
        for seed in (0, 1):
            train({**config, "seed": seed}, runs)
    code = (
        "import sys\nfrom lrsched_cli.cli import app\n"
        "try:\n    app(['compare', sys.argv[1], '--runs-dir', sys.argv[2]])\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(runs), str(tmp_path / "out")],
        check=True,
        capture_output=True,
    )
    (out,) = (tmp_path / "out").glob("*-compare")
    document = json.loads((out / "summary.json").read_text())
    assert document["runs"] == []  # nothing was trained
    assert {c["name"]: c["runs"] for c in document["configs"]} == {"step": 2, "cosine": 2}


def test_configs_and_finished_runs_mix(tmp_path):
    finished = train({**tiny(name="old", epochs=3), "seed": 0}, tmp_path / "old")
    paths = write_pair(tmp_path)
    inputs = compare.collect_inputs([*paths, str(finished.path)])
    comparison = compare.compare(inputs, [0], tmp_path / "out", 1, "final_val_loss")
    assert {s.name for s in comparison.summaries} == {"step", "cosine", "old"}
    assert len(comparison.results) == 2


def test_sweep_expands_a_grid(tmp_path):
    config = {**STEP, "sweep": {"scheduler.gamma": [0.1, 0.5], "optimizer.lr": [0.01, 0.1]}}
    configs = load_configs(write_config(tmp_path, config))
    assert [c.name for c in configs] == [
        "step-gamma=0.1-lr=0.01",
        "step-gamma=0.1-lr=0.1",
        "step-gamma=0.5-lr=0.01",
        "step-gamma=0.5-lr=0.1",
    ]
    assert [(c.scheduler.kwargs["gamma"], c.optimizer.lr) for c in configs] == [
        (0.1, 0.01),
        (0.1, 0.1),
        (0.5, 0.01),
        (0.5, 0.1),
    ]
    result = cli.invoke(app, ["run", str(tmp_path / "config.yaml"), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "lrsched compare" in result.stderr


def test_bad_sweep_is_a_config_error(tmp_path):
    path = write_config(tmp_path, {**STEP, "sweep": {"optimizer.lr": 0.1}})
    with pytest.raises(ConfigError, match="sweep.optimizer.lr: expected a non-empty list"):
        load_configs(path)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nothing-*.yaml"], "the pattern matches no file"),
        (["missing.yaml"], "no such config file or run directory"),
        (["."], "holds no configs"),
    ],
)
def test_bad_inputs_are_usage_errors(arguments, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_compare(tmp_path / "runs", *arguments)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_different_datasets_need_force(tmp_path):
    other = tiny(name="circles", epochs=2, data={"name": "circles", "n_samples": 80})
    paths = write_pair(tmp_path, other)
    result = run_compare(tmp_path / "runs", *paths)
    assert result.exit_code == 2 and "comparison across datasets is meaningless" in result.stderr
    result = run_compare(tmp_path / "runs", *paths, "--force", "--seeds", "1", "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "warning: circles uses other data" in result.stderr


def test_plot_overlays_several_runs_without_torch(tmp_path):
    first, second = train(STEP, tmp_path), train(COSINE, tmp_path)
    code = (
        "import sys\nfrom lrsched_cli.cli import app\n"
        "try:\n    app(['plot', sys.argv[1], sys.argv[2], '--out', sys.argv[3]])\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(first.path), str(second.path), str(tmp_path / "overlay")],
        check=True,
        capture_output=True,
    )
    assert {p.name for p in (tmp_path / "overlay").glob("*.png")} >= {"lr.png", "val_loss.png"}


def test_the_executor_is_a_seam(tmp_path):
    """Any concurrent.futures.Executor can run the jobs: here, threads in this process."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import contextmanager

    used = []

    @contextmanager
    def threads(workers, run_plots):
        used.append(workers)
        with ThreadPoolExecutor(workers) as executor:
            yield executor

    import torch

    from lrsched_cli.runner import torch_threads

    jobs = compare.plan_jobs([validate(STEP), validate(COSINE)], [0])
    with torch_threads(torch.get_num_threads()):  # the jobs set this process's threads
        results = compare.execute(jobs, tmp_path, 2, pool=threads)
    assert used == [2] and sorted(r.status for r in results) == ["completed", "completed"]


def test_metric_alias_val_loss(tmp_path):
    paths = write_pair(tmp_path)
    result = run_compare(
        tmp_path / "runs", *paths, "--seeds", "1", "--jobs", "1", "--metric", "val_loss"
    )
    assert result.exit_code == 0, result.output
    assert "ranked by final_val_loss" in result.stdout


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_worker_pool_is_importing_torch_before_the_first_job_is_submitted():
    """The forkserver imports torch while the command imports scipy and matplotlib; a first
    submit would otherwise block until the forkserver were ready, and nothing would overlap."""
    code = (
        "import os, pathlib\nfrom lrsched_cli import compare\n"
        "with compare._worker_pool(2, False):\n"
        "    children = [p for p in pathlib.Path('/proc').iterdir() if p.name.isdigit()\n"
        "        and (p / 'stat').exists()\n"
        "        and (p / 'stat').read_text().rsplit(')', 1)[1].split()[1] == str(os.getpid())]\n"
        "    command_lines = [(p / 'cmdline').read_bytes() for p in children]\n"
        "    assert any(b'forkserver' in line for line in command_lines), command_lines\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


SHORT_COSINE = tiny(name="short", epochs=4, scheduler={"name": "CosineAnnealingLR", "T_max": 2})


def test_schedule_warnings_reach_stderr_summary_and_table_once_per_config(tmp_path):
    paths = [str(write_config(tmp_path, c, f"{c['name']}.yaml")) for c in (STEP, SHORT_COSINE)]
    result = run_compare(tmp_path / "runs", *paths, "--seed-list", "0,1", "--jobs", "1")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: short:")]
    assert len(warned) == 1 and "T_max" in warned[0], result.stderr  # once, not once per seed
    assert "warning: step:" not in result.stderr
    (out,) = (tmp_path / "runs").glob("*-compare")
    document = json.loads((out / "summary.json").read_text())
    configs = {c["name"]: c for c in document["configs"]}
    assert len(configs["short"]["warnings"]) == 1 and configs["step"]["warnings"] == []
    assert document["warnings"] == [f"short: {configs['short']['warnings'][0]}"]
    row = next(line for line in result.stdout.splitlines() if " short " in line)
    assert "⚠" in row
    assert "⚠ schedule warnings (printed above, in summary.json): short" in result.stdout
    rows = {r["name"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert (rows["short"]["warnings"], rows["step"]["warnings"]) == ("1", "0")


def test_strict_compare_refuses_before_training(tmp_path):
    paths = [str(write_config(tmp_path, c, f"{c['name']}.yaml")) for c in (STEP, SHORT_COSINE)]
    result = run_compare(tmp_path / "runs", *paths, "--seeds", "1", "--jobs", "1", "--strict")
    assert result.exit_code == 2, result.output
    assert "warning: short:" in result.stderr and "--strict" in result.stderr
    assert not list((tmp_path / "runs").rglob("metrics.csv"))  # nothing trained
    assert not list((tmp_path / "runs").glob("*-compare"))  # and no empty comparison left


def test_parallel_validation_returns_the_warnings_from_the_workers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import contextmanager

    @contextmanager
    def threads(workers, run_plots):
        with ThreadPoolExecutor(workers) as executor:
            yield executor

    import torch

    from lrsched_cli.runner import torch_threads

    found = {}
    jobs = compare.plan_jobs([validate(STEP), validate(SHORT_COSINE)], [0, 1])
    with torch_threads(torch.get_num_threads()):
        compare.execute(jobs, tmp_path, 2, pool=threads, lint=found.update)
    assert found["step"] == [] and any("T_max" in w for w in found["short"])


def test_finished_runs_bring_their_recorded_warnings(tmp_path):
    finished = train({**STEP, "seed": 0}, tmp_path / "old")
    summary = {**finished.summary, "warnings": ["the lr rises again after epoch 2"]}
    (finished.path / "summary.json").write_text(json.dumps(summary))
    seen = []
    inputs = compare.collect_inputs([str(finished.path)])
    comparison = compare.compare(
        inputs, [0], tmp_path / "out", 1, "final_val_loss", lint=seen.append
    )
    assert seen == [{"step": ["the lr rises again after epoch 2"]}]
    assert comparison.summaries[0].warnings == ["the lr rises again after epoch 2"]


def test_epochs_to_target_needs_a_target(tmp_path):
    result = run_compare(tmp_path / "runs", *write_pair(tmp_path), "--metric", "epochs_to_target")
    assert result.exit_code == 2, result.output
    assert "--target" in result.stderr and "epochs_to_target" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_seeds_that_never_reach_the_target_count_as_not_reached():
    from rich.console import Console

    from lrsched_cli import report

    groups = {  # 3 epochs each; "a" gets to 0.5 in epochs 1, 1 and never
        "a": [
            history([0.4, 0.3, 0.2], 0, "a"),
            history([0.5, 0.3, 0.2], 1, "a"),
            history([0.9, 0.8, 0.7], 2, "a"),
        ],
        "b": [history([0.9, 0.5, 0.4], seed, "b") for seed in range(3)],
    }
    summaries = stats.rank(stats.summarize(groups, target=0.5), "epochs_to_target")
    by_name = {s.name: s for s in summaries}
    # not reached counts as the budget + 1 (4): in the ranking, the mean and every pairing
    assert by_name["a"].metrics["epochs_to_target"].values == [1, 1, 4]
    assert (by_name["a"].not_reached, by_name["b"].not_reached) == (1, 0)
    assert by_name["a"].row()["not_reached"] == 1
    (pair,) = stats.pairwise(summaries, "epochs_to_target", 0.5)
    assert pair["paired_seeds"] == 3
    wins = {pair["a"]: pair["a_wins"], pair["b"]: pair["b_wins"]}
    assert wins == {"a": 2, "b": 1}
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(report.render_comparison(summaries, "epochs_to_target"))
    assert "2 + 1 not reached" in console.file.getvalue()


def test_runs_record_their_lr_cuts(tmp_path):
    run = train(STEP, tmp_path)  # StepLR step_size 2 over 3 epochs: 0.1, 0.1, 0.05
    assert run.column("lr") == [0.1, 0.1, 0.05]
    assert run.summary["lr_cuts"] == 1
    assert stats.count_lr_cuts([0.01, 0.1, 0.1, 0.03, 0.03, 0.01]) == 2  # warmup is no cut


def test_a_plateau_that_never_cut_says_so(tmp_path):
    never = tiny(name="flat", epochs=3, scheduler={"name": "ReduceLROnPlateau", "patience": 50})
    paths = [str(write_config(tmp_path, c, f"{c['name']}.yaml")) for c in (STEP, never)]
    result = run_compare(tmp_path / "runs", *paths, "--seed-list", "0,1", "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "flat: lr cut in 0/2 seeds" in result.stdout
    assert "step: lr cut" not in result.stdout  # only ReduceLROnPlateau configs get the note
    (out,) = (tmp_path / "runs").glob("*-compare")
    configs = {c["name"]: c for c in json.loads((out / "summary.json").read_text())["configs"]}
    assert (configs["flat"]["lr_cut_runs"], configs["step"]["lr_cut_runs"]) == (0, 2)


def test_the_readme_plateau_config_cuts_its_lr_in_every_default_seed(tmp_path):
    (cfg,) = load_configs(Path(__file__).parent.parent / "configs" / "compare" / "plateau.yaml")
    for seed in compare.DEFAULT_SEEDS:
        result = runner.run_experiment(cfg.model_copy(update={"seed": seed}), tmp_path)
        assert store.read_run(result.path).summary["lr_cuts"] > 0, seed


def test_sweep_members_carry_their_swept_values_whatever_their_names(tmp_path):
    config = {**STEP, "sweep": {"scheduler.gamma": [0.1, 0.5], "optimizer.lr": [0.01, 0.1]}}
    configs = load_configs(write_config(tmp_path, config))
    renamed = [c.model_copy(update={"name": f"member{i}"}) for i, c in enumerate(configs)]
    assert compare.swept_values(renamed) == {
        "member0": {"optimizer.lr": 0.01, "scheduler.gamma": 0.1},
        "member1": {"optimizer.lr": 0.1, "scheduler.gamma": 0.1},
        "member2": {"optimizer.lr": 0.01, "scheduler.gamma": 0.5},
        "member3": {"optimizer.lr": 0.1, "scheduler.gamma": 0.5},
    }
    inputs = compare.collect_inputs([str(tmp_path / "config.yaml"), *write_pair(tmp_path)[1:]])
    assert set(inputs.swept) == {c.name for c in configs}  # cosine is no sweep member


def test_equal_differences_in_every_seed_give_no_t_test(recwarn):
    groups = {
        "a": [history([0.9, 0.5, 0.4], seed, "a") for seed in range(3)],
        "b": [history([0.9, 0.8, 0.7], seed, "b") for seed in range(3)],
    }
    summaries = stats.rank(stats.summarize(groups, target=0.5), "epochs_to_target")
    (pair,) = stats.pairwise(summaries, "epochs_to_target", 0.5)
    assert pair["mean_difference"] == -2 and pair["ttest_p"] is None
    assert pair["wilcoxon_p"] == pytest.approx(0.25)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_three_configs_get_friedman_holm_verdicts_and_ranks_png(tmp_path):
    third = tiny(name="exp", epochs=3, scheduler={"name": "ExponentialLR", "gamma": 0.5})
    paths = write_pair(tmp_path, third)
    result = run_compare(tmp_path / "runs", *paths, "--seed-list", "0,1", "--jobs", "1")
    assert result.exit_code == 0, result.output
    # before training, and again in the verdicts: 2 seeds cannot make any of 3 pairs significant
    assert "warning: with 2 paired seeds no pair can reach Holm p < 0.05 over 3 pairs" in (
        " ".join(result.stderr.split())
    )
    output = " ".join(result.stdout.split())
    assert "Friedman test, 3 configs × 2 seeds" in output
    assert "With 2 paired seeds no pair can reach Holm p < 0.05" in output
    assert "cannot tell with 2 seeds" in output
    (out,) = (tmp_path / "runs").glob("*-compare")
    assert (out / "ranks.png").is_file()
    rows = list(csv.DictReader((out / "pairwise.csv").open()))
    assert len(rows) == 3
    assert {"wilcoxon_p", "holm_p", "ttest_p", "difference_ci_low", "better"} <= set(rows[0])
    document = json.loads((out / "summary.json").read_text())
    assert document["friedman"]["configs"] == 3 and document["friedman"]["seeds"] == 2
    assert document["verdicts"][0].startswith("With 2 paired seeds")
    assert document["baseline"] is None and "wilcoxon" in document["paired_test"]


def test_a_baseline_tests_k_minus_1_pairs(tmp_path):
    third = tiny(name="exp", epochs=3, scheduler={"name": "ExponentialLR", "gamma": 0.5})
    paths = write_pair(tmp_path, third)
    result = run_compare(
        tmp_path / "runs", *paths, "--seeds", "1", "--jobs", "1", "--baseline", "step"
    )
    assert result.exit_code == 0, result.output
    (out,) = (tmp_path / "runs").glob("*-compare")
    pairs = [(r["a"], r["b"]) for r in csv.DictReader((out / "pairwise.csv").open())]
    assert sorted(pairs) == [("cosine", "step"), ("exp", "step")]
    assert "over 2 pairs" in " ".join(result.stderr.split())
    assert "from the baseline step (◆)" in result.stdout


def test_a_baseline_that_names_no_config_exits_2_before_training(tmp_path):
    result = run_compare(tmp_path / "runs", *write_pair(tmp_path), "--baseline", "cosin")
    assert result.exit_code == 2, result.output
    assert "--baseline 'cosin' names no config compared; choose one of: step, cosine" in (
        " ".join(result.stderr.split())
    )
    assert not (tmp_path / "runs").exists()


def test_the_default_is_ten_seeds():
    assert compare.DEFAULT_SEEDS == tuple(range(10))
    result = cli.invoke(app, ["compare", "--help"])
    assert "default 10" in result.stdout


def test_enough_seeds_give_no_warning_and_a_verdict_that_names_the_winner():
    finals = {"a": [0.1 + 0.01 * i for i in range(10)], "b": [0.2 + 0.013 * i for i in range(10)]}
    groups = {
        name: [history([1.0, v], seed, name) for seed, v in enumerate(values)]
        for name, values in finals.items()
    }
    summaries = stats.rank(stats.summarize(groups, None), "final_val_loss")
    rows = stats.pairwise(summaries, "final_val_loss", None)
    assert stats.verdicts(rows, "final_val_loss") == [
        "a beats b: 10/10 seeds, mean −0.114 [−0.120, −0.107], Holm p = 0.002"
    ]
    inputs = compare.Inputs(configs=[validate(STEP), validate(COSINE)])
    assert compare.seed_power_note(inputs, list(range(6)), None) is None
    assert "5 paired seeds" in compare.seed_power_note(inputs, list(range(5)), None)
