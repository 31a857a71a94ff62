"""Run directories whose files were damaged or edited: plot, resume and compare name the file
in one message, and compare goes on with the runs it can read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny, train
from lrsched_cli import store

runner = CliRunner()

GARBAGE = b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary \x00"


def _binary(path: Path) -> None:
    path.write_bytes(GARBAGE)


def _append(line: str):
    def corrupt(path: Path) -> None:
        with path.open("a") as handle:
            handle.write(line)

    return corrupt


# (file, how it is damaged, what the message says about it)
CORRUPTIONS = {
    "binary summary": (store.SUMMARY_FILE, _binary, "not UTF-8 text"),
    "summary [1]": (store.SUMMARY_FILE, lambda p: p.write_text("[1]"), "not a summary"),
    "summary not JSON": (store.SUMMARY_FILE, lambda p: p.write_text("{'a'"), "not valid JSON"),
    "summary field": (
        store.SUMMARY_FILE,
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "train_seconds": "x"})),
        "'train_seconds' is not a number",
    ),
    "garbage row": (store.METRICS_FILE, _append("a,b,c,d,e,f,g\n"), "line 4, column 'epoch'"),
    "short row": (store.METRICS_FILE, _append("3,0.1\n"), "line 4 has 2 of the 7 columns"),
    "binary metrics": (store.METRICS_FILE, _binary, "not UTF-8 text"),
    "NUL in steps": (store.STEPS_FILE, _append("9,1,0.1\x00\n"), "column 'lr' is not a"),
    "bad config": (
        store.CONFIG_FILE,
        lambda p: p.write_text("name: [unclosed\n"),
        "not valid YAML",
    ),
    "config [1]": (store.CONFIG_FILE, lambda p: p.write_text("[1]\n"), "not a config"),
    "binary config": (store.CONFIG_FILE, _binary, "not UTF-8 text"),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """Two finished runs of different configs, trained once for the whole module."""
    runs = tmp_path_factory.mktemp("finished")
    train(tiny(name="good", epochs=2), runs)
    train(tiny(name="damaged", epochs=2, scheduler={"name": "ExponentialLR", "gamma": 0.9}), runs)
    return runs


def damage(finished: Path, tmp_path: Path, corruption: str) -> tuple[Path, Path, str]:
    """A copy of the finished runs with one file of the `damaged` run spoilt: (runs, file,
    what the message should say)."""
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs)
    (run,) = runs.glob("*-damaged")
    name, spoil, said = CORRUPTIONS[corruption]
    spoil(run / name)
    return runs, run / name, said


def one_error_naming(output: str, path: Path, said: str) -> None:
    lines = output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert str(path) in output.replace("\n", "") and said in output, output


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_plot_names_the_corrupt_file(finished, tmp_path, corruption):
    from lrsched_cli.cli import app

    runs, path, said = damage(finished, tmp_path, corruption)
    result = runner.invoke(app, ["plot", str(path.parent)])
    assert result.exit_code == 2, result.output
    one_error_naming(result.stderr, path, said)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_compare_skips_the_corrupt_run_and_reports_it(finished, tmp_path, corruption):
    from lrsched_cli.cli import app

    runs, path, said = damage(finished, tmp_path, corruption)
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", str(runs), "--runs-dir", str(out), "--json"])
    assert result.exit_code == 0, result.output
    stderr = "".join(result.stderr.split())  # Rich wraps long lines where a space was
    assert "skippedtherunin" in stderr and "".join(said.split()) in stderr
    assert str(path) in stderr
    document = json.loads(result.stdout)
    assert [config["name"] for config in document["configs"]] == ["good"]
    assert any(said in warning for warning in document["warnings"])


def test_compare_of_only_corrupt_runs_is_one_error(finished, tmp_path):
    from lrsched_cli.cli import app

    runs, path, said = damage(finished, tmp_path, "summary [1]")
    result = runner.invoke(app, ["compare", str(path.parent), "--runs-dir", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    one_error_naming(result.stderr, path, said)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_resume_names_the_corrupt_file_and_touches_nothing(finished, tmp_path, corruption):
    from lrsched_cli.cli import app

    runs, path, said = damage(finished, tmp_path, corruption)
    before = {p.name: p.read_bytes() for p in path.parent.iterdir() if p.is_file()}
    result = runner.invoke(app, ["run", "--resume", str(path.parent), "--epochs", "3"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert str(path) in result.stderr.replace("\n", ""), result.stderr
    after = {p.name: p.read_bytes() for p in path.parent.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != store.LOCK_FILE} == {
        k: v for k, v in before.items() if k != store.LOCK_FILE
    }
