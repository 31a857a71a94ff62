"""Security boundaries: what a factory name may run, what a message may echo from a file, and
user strings reaching the terminal as plain text."""

from __future__ import annotations

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
