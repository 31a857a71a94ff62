"""`python -m lrsched_cli`."""

from lrsched_cli.cli import app

app(prog_name="lrsched")
