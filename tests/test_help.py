"""Help text a user reads at 80 columns: plain metavars, whole command summaries."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

COMMANDS = ("run", "compare", "plot", "plan", "list", "schema")


def help_text(*args: str) -> str:
    env = {"COLUMNS": "80", "TERMINAL_WIDTH": "80", "_TYPER_FORCE_DISABLE_TERMINAL": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "lrsched_cli", *args, "--help"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env},
        check=True,
    )
    return result.stdout


def test_command_summaries_are_whole():
    text = help_text()
    commands = text.split("Commands:")[1]
    assert "..." not in commands and "…" not in commands, commands
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\S", commands, re.M), command


@pytest.mark.parametrize("command", COMMANDS)
def test_metavars_are_words_a_user_knows(command):
    text = help_text(command)
    assert not re.search(r"<(list|int|float|str|path|dir)\b[^>]*>", text), text
    assert not re.search(r"\{\w+\}", text), text
    assert max(len(line) for line in text.splitlines()) <= 80, text
