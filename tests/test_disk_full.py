"""A full disk, for real: a tmpfs too small for the run. The run fails naming its directory,
keeps every finished epoch, says `failed`, and leaves no temporary files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import tiny, write_config
from lrsched_cli import store


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_fails_the_run_naming_its_directory(tmp_path, small_disk):
    config = write_config(tmp_path, tiny(epochs=5000, checkpoint_every=1))
    result = subprocess.run(
        [sys.executable, "-m", "lrsched_cli", "run", str(config), "--runs-dir", str(small_disk)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    (run_dir,) = small_disk.iterdir()
    assert "No space left on device" in result.stderr
    assert f"run directory: {run_dir}" in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    history = store.read_run(run_dir)
    epochs = [row["epoch"] for row in history.epochs]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 5
