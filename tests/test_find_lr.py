"""The LR range test: its grid, smoothing, stop rules, the four suggestion rules on curves whose
answers are known by construction, its files, its command line, and that it leaves no trace."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tiny, train, write_config
from lrsched_cli import find_lr, lr_rules
from lrsched_cli.cli import app
from lrsched_cli.config import validate
from lrsched_cli.lr_rules import Grid, SmoothedLoss, StopRule, suggest

runner = CliRunner()

FACTORY_NAN = """\
import math

from torch import nn


class NanFrom(nn.Module):
    '''An MLP whose training forward passes return NaN from the `start`-th on.'''

    def __init__(self, n_inputs, width, n_outputs, start):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, width), nn.ReLU())
        self.head = nn.Linear(width, n_outputs)
        self.start, self.calls = start, 0

    def forward(self, x):
        out = self.head(self.body(x))
        if self.training:
            self.calls += 1
            if self.calls >= self.start:
                out = out * float("nan")
        return out


def factory(input_shape, n_outputs, start=7):
    return NanFrom(math.prod(input_shape), 8, n_outputs, start)
"""


# -- the grid -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "steps"),
    # 3.7e-4 to 0.1 and 1.1e-5 to 3: where start * (end / start) misses end by a rounding error
    [(1e-7, 10.0, 100), (3.7e-4, 0.1, 37), (1.1e-5, 3.0, 10)],
)
def test_exp_grid_starts_and_ends_exactly_and_is_even_in_log_lr(start, end, steps):
    lrs = Grid(start, end, steps).lrs()
    assert len(lrs) == steps
    assert lrs[0] == start and lrs[-1] == end
    gaps = np.diff(np.log(lrs))
    # Every gap, the first one included, is the same ratio: no uneven first step.
    np.testing.assert_allclose(gaps, math.log(end / start) / (steps - 1), rtol=1e-9)


def test_linear_grid_starts_and_ends_exactly_and_is_even_in_lr():
    lrs = Grid(0.01, 2.0, 50, "linear").lrs()
    assert lrs[0] == 0.01 and lrs[-1] == 2.0
    np.testing.assert_allclose(np.diff(lrs), (2.0 - 0.01) / 49, rtol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": 1.0, "end": 1.0}, "must be below --end"),
        ({"start": 2.0, "end": 1.0}, "must be below --end"),
        ({"steps": 9}, "at least 10 steps"),
        ({"start": 0.0}, "positive"),
        ({"end": -1.0}, "positive"),
        ({"end": math.inf}, "positive"),
        ({"mode": "cosine"}, "exp or linear"),
    ],
)
def test_a_grid_that_cannot_run_is_refused_with_its_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Grid(**kwargs)


# -- smoothing and the stop rules -----------------------------------------------------------


def test_the_smoothed_loss_is_debiased_from_the_first_step():
    smoothing = SmoothedLoss(0.98)
    got = [smoothing.add(loss) for loss in (2.0, 1.0, 4.0)]
    # By hand: a = 0.98 a + 0.02 loss from a = 0, divided by 1 - 0.98^k at step k.
    a1 = 0.02 * 2.0
    a2 = 0.98 * a1 + 0.02 * 1.0
    a3 = 0.98 * a2 + 0.02 * 4.0
    expected = [a1 / (1 - 0.98), a2 / (1 - 0.98**2), a3 / (1 - 0.98**3)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[0] == pytest.approx(2.0)  # debiased: the first value is the first loss itself


def test_the_test_stops_once_the_smoothed_loss_passes_4x_the_best_before_it():
    rule = StopRule()
    assert rule.check(1, 1.0, 1.0) is None
    assert rule.check(2, 0.5, 0.5) is None
    assert rule.check(3, 2.0, 2.0) is None  # exactly 4 x 0.5 does not stop it
    reason, detail = rule.check(4, 9.0, 2.01)
    assert reason == "diverged" and "4 x best 0.5" in detail


def test_the_test_stops_at_the_first_non_finite_loss():
    rule = StopRule()
    assert rule.check(1, 1.0, 1.0) is None
    assert rule.check(2, math.nan, math.nan)[0] == "nonfinite"
    assert StopRule().check(1, math.inf, 1.0)[0] == "nonfinite"


def test_the_ratio_rule_is_off_once_the_best_loss_reaches_zero():
    rule = StopRule()
    assert rule.check(1, 1.0, 1.0) is None
    assert rule.check(2, 0.0, 0.0) is None
    assert rule.off_at == 2
    assert rule.check(3, 5.0, 5.0) is None  # 5 > 4 x 0 would stop it: the rule is off


# -- the suggestion rules on synthetic curves -----------------------------------------------

N = 100  # on the default grid: window [10:95]
A, B, D = 20, 60, 80  # descent from A to B (steepest at 40), flat bottom to D, then a rise


def valley_curve() -> np.ndarray:
    """0.75 up to A, a half cosine down to 0.25 at B, flat to D, then a quadratic rise."""
    i = np.arange(N, dtype=float)
    loss = np.full(N, 0.75)
    down = (i >= A) & (i <= B)
    loss[down] = 0.5 + 0.25 * np.cos(np.pi * (i[down] - A) / (B - A))
    loss[i > B] = 0.25
    loss[i > D] = 0.25 + 0.02 * (i[i > D] - D) ** 2
    return loss


def by_rule(found) -> dict:
    return {s.rule: s for s in found}


def test_the_rules_on_a_clean_valley():
    lrs = np.array(Grid().lrs())
    found = by_rule(suggest(lrs, valley_curve()))
    # valley: the strict descent is one plateau point and A+1..B, 41 points ending at B (window
    # index 50), so fastai's start is 50 - 41 = 9 and the pick 9 + int(41/3) + int(41/6) = 28,
    # which is step 10 + 28 = 38 of the curve.
    assert found["valley"].step == 38 + 1 and found["valley"].lr == lrs[38]
    # steep: a half cosine falls fastest half way, at 40
    assert found["steep"].lr == lrs[40]
    # minimum: the first point of the flat bottom, B, divided by 10
    assert found["minimum"].lr == pytest.approx(lrs[B] / 10) and found["minimum"].step == B + 1
    # slide: from the end, the slopes 15 apart first agree with r = D - 1 (the last flat
    # point) and l = D - 16; every r on the rise differs from the flat l by more than 0.027
    assert found["slide"].lr == lrs[D - 16]
    assert all(s.use == f"--set optimizer.lr={s.lr:.1e}" for s in found.values())


def test_an_early_spike_fools_steep_but_not_valley():
    lrs = np.array(Grid().lrs())
    loss = valley_curve()
    loss[12] = 5.0
    found = by_rule(suggest(lrs, loss))
    # the fall from the spike is the steepest slope on the curve: steep picks the point after
    assert found["steep"].lr == lrs[13]
    # valley: the spike starts a descent one point longer (42), so start 50 - 42 = 8 and the
    # pick 8 + 14 + 7 = 29 of the window: step 39, beside the 38 without it
    assert found["valley"].lr == lrs[39]
    assert found["minimum"].lr == pytest.approx(lrs[B] / 10)
    assert found["slide"].lr == lrs[D - 16]


def test_a_flat_curve_gives_no_suggestion_and_says_why():
    found = suggest(Grid().lrs(), np.full(N, 0.69))
    assert [s.lr for s in found] == [None] * 4
    assert all("flat" in s.reason for s in found)


def test_a_curve_too_short_gives_no_suggestion_and_says_why():
    found = suggest(Grid(steps=25).lrs(), valley_curve()[:25])
    # window [2:20]: 18 points, 2 short of the 20 the rules need
    assert [s.lr for s in found] == [None] * 4
    assert all(s.reason.startswith("only 18 points in the window") for s in found)


def test_the_curve_is_cut_at_its_first_non_finite_point():
    lrs = np.array(Grid().lrs())
    loss = valley_curve()
    loss[70:] = np.nan  # stopped at step 71 with a NaN: the window becomes [7:65]
    found = by_rule(suggest(lrs, loss))
    assert found["minimum"].lr == pytest.approx(lrs[B] / 10)
    assert all(s.step is not None and s.step <= 65 for s in found.values())
    loss[25] = np.inf  # 25 finite points: the window [2:20] holds 18, too few
    assert all(s.lr is None for s in suggest(lrs, loss))


def test_slopes_are_taken_against_ln_lr_not_the_index_or_lr():
    """On a linear grid, steps are even in lr, not in ln(lr): a curve that falls fastest per
    unit of ln(lr) at 0.2 falls fastest per step (and per unit lr) at a lower lr."""
    lrs = np.array(Grid(1e-3, 1.0, 100, "linear").lrs())
    centre = lrs[np.argmin(abs(lrs - 0.2))]
    loss = 1 - 0.4 / (1 + np.exp(-(np.log(lrs) - np.log(centre)) / 0.6))
    found = by_rule(suggest(lrs, loss))
    window = slice(10, 95)
    by_ln = lrs[window][np.argmin(np.gradient(loss[window], np.log(lrs[window])))]
    by_index = lrs[window][np.argmin(np.gradient(loss[window]))]
    by_lr = lrs[window][np.argmin(np.gradient(loss[window], lrs[window]))]
    assert found["steep"].lr == by_ln == centre
    assert by_index != centre and by_lr != centre  # the test can tell the three apart


def test_onecycle_and_cycliclr_suggest_their_max_lr():
    assert lr_rules.peak_lr_key("OneCycleLR") == "scheduler.max_lr"
    assert lr_rules.peak_lr_key("CyclicLR") == "scheduler.max_lr"
    assert lr_rules.peak_lr_key("CosineAnnealingLR") == "optimizer.lr"
    found = suggest(Grid().lrs(), valley_curve(), "scheduler.max_lr")
    assert found[0].use == f"--set scheduler.max_lr={found[0].lr:.1e}"


# -- the test itself, on a real tiny model --------------------------------------------------


def run_find_lr(tmp_path, config=None, grid=None, **kwargs):
    cfg = validate(config or tiny())
    return find_lr.find_lr(cfg, tmp_path / "runs", grid or Grid(steps=60), **kwargs)


def read_rows(path):
    rows, summary = lr_rules.read_curve(path)
    return rows, summary


def test_find_lr_writes_the_curve_the_grid_and_every_suggestion(tmp_path):
    result = run_find_lr(tmp_path)
    assert result.path.name.endswith("-tiny-find-lr")
    rows, summary = read_rows(result.path)
    assert [row["step"] for row in rows] == list(range(1, len(rows) + 1))
    assert [row["lr"] for row in rows] == Grid(steps=60).lrs()[: len(rows)]
    # The file's smoothed column is the debiased average of its own loss column.
    smoothing = SmoothedLoss()
    assert [row["smoothed_loss"] for row in rows] == pytest.approx(
        [smoothing.add(row["loss"]) for row in rows], rel=1e-12
    )
    assert summary["grid"] == {"mode": "exp", "start": 1e-7, "end": 10.0, "steps": 60}
    assert summary["stopped"]["step"] == len(rows)
    assert [s["rule"] for s in summary["suggestions"]] == ["valley", "steep", "minimum", "slide"]
    assert summary["suggestions"] == result.summary["suggestions"]


def test_a_diverging_test_stops_at_4x_its_best_smoothed_loss(tmp_path):
    result = run_find_lr(tmp_path, grid=Grid(1e-4, 100.0, 100))
    rows, summary = read_rows(result.path)
    assert summary["stopped"]["reason"] == "diverged"
    smoothed = [row["smoothed_loss"] for row in rows]
    assert smoothed[-1] > 4 * min(smoothed[:-1])
    assert all(s <= 4 * min(smoothed[:k]) for k, s in enumerate(smoothed[:-1]) if k)
    assert len(rows) < 100


def test_a_nan_loss_stops_the_test_at_that_step(tmp_path):
    (tmp_path / "nan_from_step.py").write_text(FACTORY_NAN)
    config = write_config(tmp_path, tiny(model={"name": "nan_from_step:factory", "start": 7}))
    from lrsched_cli.config import load_config

    result = find_lr.find_lr(load_config(config), tmp_path / "runs", Grid(steps=40))
    rows, summary = read_rows(result.path)
    assert len(rows) == 7 and math.isnan(rows[-1]["loss"])
    assert all(math.isfinite(row["loss"]) for row in rows[:-1])
    assert summary["stopped"]["reason"] == "nonfinite" and summary["stopped"]["step"] == 7
    assert summary["no_suggestion"].startswith("only 1 point in the window")


def test_the_same_config_gives_the_same_curve(tmp_path):
    first, _ = read_rows(run_find_lr(tmp_path).path)
    second, _ = read_rows(run_find_lr(tmp_path).path)
    assert first == second


def test_a_run_after_find_lr_in_the_same_process_is_identical_to_a_run_alone(tmp_path):
    config = tiny(scheduler={"name": "none"})
    alone = train(config, tmp_path / "alone")
    run_find_lr(tmp_path, config, Grid(1e-4, 100.0, 60))
    after = train(config, tmp_path / "after")

    def metrics(history):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history.epochs]

    assert metrics(after) == metrics(alone)


def test_valley_lr_is_the_valley_suggestion_of_the_same_test(tmp_path):
    summary = run_find_lr(tmp_path, grid=Grid(steps=60)).summary
    valley = next(s["lr"] for s in summary["suggestions"] if s["rule"] == "valley")
    assert find_lr.valley_lr(validate(tiny()), Grid(steps=60)) == valley


def test_a_stop_request_keeps_the_curve_so_far(tmp_path):
    import threading

    event = threading.Event()

    def stop_at_5(step, steps, lr, smoothed):
        if step == 5:
            event.set()

    result = run_find_lr(tmp_path, on_step=stop_at_5, stop=event)
    rows, summary = read_rows(result.path)
    assert result.status == summary["status"] == "interrupted"
    assert len(rows) == 5 and summary["stopped"] == {
        "step": 5, "lr": rows[-1]["lr"], "reason": "interrupted", "detail": "Ctrl-C"
    }  # fmt: skip


# -- the command line -----------------------------------------------------------------------


def test_find_lr_prints_the_table_and_draws_the_png(tmp_path):
    config = write_config(tmp_path, tiny())
    result = runner.invoke(
        app, ["find-lr", str(config), "--steps", "40", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    assert "valley *" in result.output and "--set optimizer.lr=" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "lr_find.png").stat().st_size > 0


def test_find_lr_json_prints_the_summary(tmp_path):
    config = write_config(tmp_path, tiny())
    args = ["find-lr", str(config), "--steps", "40", "--json", "--runs-dir", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "find-lr" and summary["grid"]["steps"] == 40
    assert len(summary["suggestions"]) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "1", "--end", "0.1"], "must be below --end"),
        (["--steps", "9"], "at least 10 steps"),
        (["--start", "0"], "positive"),
        (["--start", "-1e-3"], "positive"),
        (["--mode", "cosine"], "cosine"),
    ],
)
def test_bad_grid_options_exit_2_with_one_message(tmp_path, args, message):
    config = write_config(tmp_path, tiny())
    result = runner.invoke(app, ["find-lr", str(config), *args, "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_a_config_that_fails_to_load_exits_2(tmp_path):
    config = write_config(tmp_path, tiny(optimizer={"name": "SGD", "lr": 0.1, "momentun": 0.9}))
    result = runner.invoke(app, ["find-lr", str(config), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "momentun" in result.output and "momentum" in result.output
    missing = runner.invoke(app, ["find-lr", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2, missing.output


def test_ctrl_c_exits_130_and_keeps_the_curve(tmp_path, monkeypatch):
    taken = []
    step = find_lr._train_step

    def interrupted_at_6(*args):
        if len(taken) == 5:
            raise KeyboardInterrupt  # a second Ctrl-C, mid-step
        taken.append(1)
        return step(*args)

    monkeypatch.setattr(find_lr, "_train_step", interrupted_at_6)
    config = write_config(tmp_path, tiny())
    result = runner.invoke(app, ["find-lr", str(config), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 130, result.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows, summary = read_rows(run_dir)
    assert len(rows) == 5 and summary["status"] == "interrupted"
    assert (run_dir / "lr_find.png").is_file()


def test_plot_redraws_a_find_lr_directory_without_torch(tmp_path):
    run_dir = run_find_lr(tmp_path).path
    code = (
        "import sys; from pathlib import Path; from lrsched_cli.cli import app;"
        f"sys.argv = ['lrsched', 'plot', {str(run_dir)!r}];"
        "\ntry:\n    app()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "assert 'torch' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (run_dir / "lr_find.png").stat().st_size > 0
    assert str(run_dir / "lr_find.png") in done.stdout
