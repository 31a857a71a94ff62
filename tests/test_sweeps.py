"""`lrsched plan` on a config with a `sweep:` block: every member planned, named and linted."""

from __future__ import annotations

from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli.cli import app

runner = CliRunner()

SWEEP = {"scheduler.T_max": [4, 2], "optimizer.lr": [0.1, 0.01]}


def sweep_config(tmp_path):
    config = tiny(scheduler={"name": "CosineAnnealingLR", "T_max": 4}, sweep=SWEEP)
    return write_config(tmp_path, config, "sweep.yaml")


def test_plan_shows_every_member_of_a_sweep_by_name(tmp_path):
    result = runner.invoke(app, ["plan", str(sweep_config(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "4 configs from its sweep: block" in result.stdout
    for name in ("T_max=4-lr=0.1", "T_max=4-lr=0.01", "T_max=2-lr=0.1", "T_max=2-lr=0.01"):
        assert f"tiny-{name}: CosineAnnealingLR" in result.stdout


def test_plan_warns_per_member_and_strict_refuses_the_sweep(tmp_path):
    path = sweep_config(tmp_path)
    result = runner.invoke(app, ["plan", str(path)])
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    # T_max 2 over 4 epochs rises again: both of its members warn, neither T_max=4 member does.
    assert warned and all("T_max=2" in line.split(":")[1] for line in warned)
    assert any("tiny-T_max=2-lr=0.1:" in line for line in warned)
    assert any("tiny-T_max=2-lr=0.01:" in line for line in warned)
    strict = runner.invoke(app, ["plan", str(path), "--strict"])
    assert strict.exit_code == 2 and "--strict" in strict.stderr
    assert strict.stdout.count("CosineAnnealingLR") == 4  # every member shown before refusing


def test_plan_draws_one_png_per_member(tmp_path):
    result = runner.invoke(
        app, ["plan", str(sweep_config(tmp_path)), "--png", str(tmp_path / "p.png")]
    )
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("p-tiny-T_max=*-lr=*.png"))) == 4


def test_a_bad_swept_torch_argument_is_blamed_on_the_sweep_entry(tmp_path):
    path = write_config(tmp_path, tiny(sweep={"scheduler.gamma": [0.5, "abc"]}), "sweep.yaml")
    line = path.read_text().splitlines().index("  scheduler.gamma:") + 1
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path}, line {line}: scheduler.gamma" in " ".join(result.stderr.split())


def test_a_bad_set_of_a_torch_argument_is_blamed_on_the_set(tmp_path):
    path = write_config(tmp_path, tiny())
    result = runner.invoke(
        app, ["plan", str(path), "--set", "scheduler={name: StepLR, step_size: x}"]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --set scheduler={name: StepLR, step_size: x}: ")
