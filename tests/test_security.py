"""Security boundaries: what a factory name may run, what a message may echo from a file, and
user strings reaching the terminal as plain text."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli.cli import app
from lrsched_cli.config import ConfigError, ModelConfig

runner = CliRunner()

# A module that leaves a marker when its code runs; none of its names but `factory` may be used.
MARKED = """\
import math
import pathlib
from os import system
from torch import nn

pathlib.Path({marker!r}).write_text("imported")
VALUE = 3
helper = print

def factory(input_shape, n_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_outputs))
"""


@pytest.fixture
def marked(tmp_path, monkeypatch):
    """A config folder holding marked.py (and a package whose __init__ leaves a marker); the
    current directory is elsewhere, and sys.path lacks both."""
    folder = tmp_path / "project"
    (folder / "pkg").mkdir(parents=True)
    marker = tmp_path / "marker"
    (folder / "marked.py").write_text(MARKED.format(marker=str(marker)))
    (folder / "pkg" / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('package')\n"
    )
    (folder / "pkg" / "mod.py").write_text(MARKED.format(marker=str(marker)))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in [m for m in sys.modules if m in ("marked", "pkg") or m.startswith("pkg.")]:
        monkeypatch.delitem(sys.modules, name)
    return folder, marker


@pytest.mark.parametrize(
    "name", ["marked:system", "marked:VALUE", "marked:helper", "marked:math", "pkg.mod:VALUE"]
)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_name_the_module_does_not_define_is_refused_before_it_is_imported(
    marked, tmp_path, name, command
):
    folder, marker = marked
    config = write_config(folder, tiny(epochs=1, model={"name": name}))
    args = [command, str(config)] + (
        ["--runs-dir", str(tmp_path / "runs")] if command == "run" else []
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "defines no function or class" in result.stderr
    assert not marker.exists()  # the module's code never ran
    assert not (tmp_path / "runs").exists()


def test_a_factory_the_module_defines_is_imported_and_used(marked, tmp_path):
    folder, marker = marked
    config = write_config(folder, tiny(epochs=1, model={"name": "marked:factory"}))
    result = runner.invoke(app, ["plan", str(config)])
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "imported"  # as documented: naming a factory runs its module


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("os:system", "os defines no function or class 'system'"),
        ("builtins:eval", "builtins is built into Python"),
        ("this:x", "this defines no function or class 'x'"),
        ("os.path:sep", "defines no function or class 'sep'"),
    ],
)
def test_standard_names_that_are_no_factory_are_refused_without_running_anything(
    tmp_path, name, message
):
    # A fresh interpreter: `this` prints the Zen of Python when it is imported, once.
    config = write_config(tmp_path, tiny(epochs=1, model={"name": name}))
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from lrsched_cli.config import ConfigError, load_config\n"
        "from lrsched_cli.models import resolve_model\n"
        f"cfg = load_config(Path({str(config)!r}))\n"
        "try:\n"
        "    resolve_model(cfg.model)\n"
        "except ConfigError as exc:\n"
        "    print('refused:', exc)\n"
        "print('this imported:', 'this' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert message in done.stdout
    assert "this imported: False" in done.stdout
    assert "Beautiful is better" not in done.stdout + done.stderr


def test_a_decorator_that_swaps_in_a_builtin_is_refused_before_it_is_called(tmp_path, monkeypatch):
    from lrsched_cli.models import resolve_model

    (tmp_path / "swapped.py").write_text(
        "def wrap(f):\n    return eval\n\n@wrap\ndef factory(a, b):\n    pass\n"
    )
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.delitem(sys.modules, "swapped", raising=False)
    with pytest.raises(ConfigError, match="swapped.factory is not a function or class defined in"):
        resolve_model(ModelConfig(name="swapped:factory"))


# A name that was markup, a clickable link, and an escape sequence that sets the terminal's title.
HOSTILE = "[/]\x1b]0;pwned\x07[link=https://x]click[/link]\r$a^$"


def shows_plainly(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\r" not in output
    # A narrow column may wrap the name after its `=`, never inside these two pieces.
    assert "[/]\\x1b]0;pwned\\x07[link=" in output
    assert "https://x]click[/link]\\r$a^$" in output


def test_a_hostile_run_name_is_printed_as_written(tmp_path):
    config = write_config(tmp_path, tiny(name=HOSTILE, epochs=2))
    result = runner.invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    shows_plainly(result.stdout)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "lr.png").is_file() and (run_dir / "loss.png").is_file()


def test_a_hostile_name_in_plan_and_its_png(tmp_path):
    config = write_config(tmp_path, tiny(name=HOSTILE, epochs=2))
    png = tmp_path / "plan.png"
    result = runner.invoke(app, ["plan", str(config), "--png", str(png)])
    assert result.exit_code == 0, result.output
    shows_plainly(result.stdout)
    assert png.is_file()


def test_hostile_names_in_compare_and_plot_of_finished_runs(tmp_path):
    from conftest import train

    runs = tmp_path / "runs"
    for name in (HOSTILE, HOSTILE + "-b"):
        for seed in (0, 1):
            train(tiny(name=name, epochs=2, seed=seed), runs)
    result = runner.invoke(app, ["compare", str(runs), "--runs-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    shows_plainly(result.stdout)
    result = runner.invoke(app, ["plot", str(runs), "--runs-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (overlay,) = (tmp_path / "out").glob("*-overlay")
    assert (overlay / "lr.png").is_file()


def test_a_terminal_gets_no_link_and_no_title_from_a_run(tmp_path):
    from rich.console import Console

    from conftest import train
    from lrsched_cli import report

    history = train(tiny(name=HOSTILE, epochs=2), tmp_path)
    history.summary["device"] = "cpu\x1b]0;pwned\x07"
    out = io.StringIO()
    terminal = Console(file=out, width=200, force_terminal=True, color_system="truecolor")
    terminal.print(report.render_run(history))
    terminal.print(report.render_summary(history))
    # Styles are CSI sequences (ESC [); a link or a title would be an OSC one (ESC ]).
    assert "\x1b]" not in out.getvalue() and "\x07" not in out.getvalue()
    assert "pwned" in out.getvalue()


def test_an_error_message_about_a_hostile_path_is_printed_as_written(tmp_path):
    missing = tmp_path / "[/]\x1b]0;pwned\x07[link=x]y[/link]"
    result = runner.invoke(app, ["plot", str(missing)])
    assert result.exit_code == 2, result.output
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "[/]\\x1b]0;pwned\\x07[link=x]y[/link]" in result.stderr.replace("\n", "")


SHADOW = "root:$6$Zq8Rl1Xc$K7uWzjQ3pLm9vT2yB5nE0aH4sD6fG8kJ1rY3wV5xC7:19000:0:99999:7:::\n" * 3


def plan_with_data(tmp_path, content: str) -> str:
    """`lrsched plan` on a CSV dataset holding `content`, target column y; its stderr."""
    path = tmp_path / "shadow"
    path.write_text(content)
    data = {"name": "csv", "path": str(path), "target": "y", "task": "classification"}
    config = write_config(tmp_path, tiny(data={**data, "batch_size": 2}))
    result = runner.invoke(app, ["plan", str(config)])
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr.replace("\n", "")
    return result.stderr


def test_a_file_with_no_such_column_is_not_quoted(tmp_path):
    message = plan_with_data(tmp_path, SHADOW)
    assert "has no column 'y'" in message
    assert "root:" not in message and "$6$" not in message  # a header of names would be listed


def test_a_bad_cell_is_quoted_in_at_most_20_characters(tmp_path):
    line = SHADOW.splitlines()[0].replace(":", ";")
    message = plan_with_data(tmp_path, f"a,y\n{line},1\n{line},0\n")
    assert "line 2, column 'a' holds 'root;$6$Zq8Rl1Xc$K7u...'" in message
    assert not any(line[i : i + 21] in message for i in range(len(line) - 20)), message


def test_a_header_of_names_is_listed_when_the_target_is_missing(tmp_path):
    message = plan_with_data(tmp_path, "x1,x2,label\n1,2,a\n3,4,b\n")
    assert "has no column 'y'; it has: 'x1', 'x2', 'label'" in message
