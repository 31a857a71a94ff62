"""lrsched report: one self-contained HTML page of a comparison, checked as text and rendered
by a real browser (Debian's chromium, headless)."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli.cli import app
from lrsched_cli.html_report import record_command

cli = CliRunner()
COMMAND = ["lrsched", "compare", "a.yaml", "b.yaml", "--seeds", "2"]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> Path:
    """A real comparison of two tiny configs over two seeds, made through the CLI."""
    directory = tmp_path_factory.mktemp("compare")
    step = write_config(directory, tiny(name="step", epochs=3), "a.yaml")
    cosine = tiny(name="cosine", epochs=3, scheduler={"name": "CosineAnnealingLR", "T_max": 3})
    cosine_path = write_config(directory, cosine, "b.yaml")
    arguments = ["compare", str(step), str(cosine_path), "--seeds", "2", "--jobs", "1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", COMMAND)
        result = cli.invoke(app, [*arguments, "--runs-dir", str(directory / "runs")])
    assert result.exit_code == 0, result.output
    return next((directory / "runs").glob("*compare*"))


@pytest.fixture(scope="module")
def page(comparison) -> str:
    result = cli.invoke(app, ["report", str(comparison)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(comparison / "report.html")
    return (comparison / "report.html").read_text(encoding="utf-8")


def test_compare_records_the_command_that_made_it(comparison):
    assert json.loads((comparison / "summary.json").read_text())["command"] == " ".join(COMMAND)


def test_record_command_keeps_a_command_already_there(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"configs": [], "command": "lrsched x"}))
    record_command(tmp_path, ["lrsched", "y"])
    assert json.loads((tmp_path / "summary.json").read_text())["command"] == "lrsched x"


def test_every_table_of_the_comparison_is_on_the_page(comparison, page):
    for name in ("summary.csv", "pairwise.csv"):
        with (comparison / name).open() as handle:
            header = next(csv.reader(handle))
        assert name in page
        for column in header:
            assert f">{column}<" in page, (name, column)
    runs = json.loads((comparison / "summary.json").read_text())["runs"]
    assert len(runs) == 4
    for run in runs:
        assert run["path"] in page
    best = json.loads((comparison / "summary.json").read_text())["configs"][0]["name"]
    assert re.search(rf'<tr class="best"><td>1</td><td class="text">{best}</td>', page)


def test_every_plot_is_embedded_byte_for_byte(comparison, page):
    pngs = sorted(comparison.glob("*.png"))
    assert {p.name for p in pngs} >= {"lr.png", "val_loss.png", "val_accuracy.png"}
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(data) for data in embedded) == sorted(
        p.read_bytes() for p in pngs
    )


def test_configs_are_collapsed_and_provenance_is_given(comparison, page):
    details = re.findall(r"<details><summary>(.*?)</summary><pre>(.*?)</pre></details>", page, re.S)
    ranked = [
        row["name"] for row in json.loads((comparison / "summary.json").read_text())["configs"]
    ]
    assert [summary.split(" <")[0] for summary, _ in details] == ranked
    assert any("CosineAnnealingLR" in text and "T_max: 3" in text for _, text in details)
    assert "<details open" not in page
    assert f"<code>{' '.join(COMMAND)}</code>" in page
    import torch

    assert torch.__version__ in page and "lrsched (runs)" in page


def test_nothing_on_the_page_loads_from_the_network(page):
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, re.I)
    references += re.findall(r"url\(\s*['\"]?([^)'\"]+)", page, re.I)
    assert references  # the embedded plots, at least
    assert all(not re.match(r"(https?:)?//", ref, re.I) for ref in references), references
    assert "@import" not in page and "<link" not in page.lower()
    assert "@media print" in page


def test_verdict_lines_and_user_text_are_shown_escaped(comparison, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(comparison, copy, symlinks=True)
    document = json.loads((copy / "summary.json").read_text())
    document["verdict"] = ["cosine beats step (p = 0.01)", "no difference <b>at all</b>"]
    document["warnings"] = ["<script>alert(1)</script>"]
    (copy / "summary.json").write_text(json.dumps(document))
    out = tmp_path / "share" / "page.html"
    result = cli.invoke(app, ["report", str(copy), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<li>cosine beats step (p = 0.01)</li>" in page
    assert "no difference &lt;b&gt;at all&lt;/b&gt;" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page


@pytest.mark.parametrize("target", ["run", "empty", "missing"])
def test_report_of_what_is_not_a_comparison_exits_2(comparison, tmp_path, target):
    path = {
        "run": next((comparison / "runs").iterdir()),
        "empty": tmp_path,
        "missing": tmp_path / "nowhere",
    }[target]
    result = cli.invoke(app, ["report", str(path)])
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr and "comparison" in result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def chromium() -> str:
    """The browser binary; without one the test skips, unless CI requires it (then fails).
    Asked for first, so that a skip costs no comparison."""
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    if found is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("LRSCHED_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LRSCHED_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)
    return found


@pytest.mark.browser
def test_chromium_renders_the_page_offline_and_prints_it(chromium, comparison, page, tmp_path):
    import numpy
    from PIL import Image

    report = comparison / "report.html"
    shot, pdf = tmp_path / "report.png", tmp_path / "report.pdf"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        # No name resolves: anything the page fetched from the network would be missing.
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ]
    for output in (f"--screenshot={shot}", f"--print-to-pdf={pdf}"):
        subprocess.run(
            [chromium, *flags, output, "--window-size=1200,1600", report.as_uri()],
            check=True,
            capture_output=True,
            timeout=120,
        )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    pixels = numpy.asarray(image).reshape(-1, 3).astype(int)
    ink = (pixels.min(axis=1) < 200).mean()
    assert ink > 0.02, f"only {ink:.1%} of the page is drawn"
    # The plots' coloured lines are there: pure hues that text and borders never use.
    colours = (pixels.max(axis=1) - pixels.min(axis=1) > 100).sum()
    assert colours > 500, colours
    text = pdf.read_bytes()
    assert text.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", text)) >= 2
