"""Smoke runs of the benchmarks: they run end to end and report; no timing is asserted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


def run_bench(script: str, *args: str) -> str:
    command = [sys.executable, str(ROOT / "bench" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(sys.platform == "win32", reason="peak memory is read with os.wait4")
def test_overhead_bench_reports_a_ratio():
    output = run_bench("overhead.py", "--repeats", "1", "--epochs", "2")
    assert "lrsched / hand-written" in output and "per epoch" in output
    assert "lrsched run configs/quickstart.yaml" in output and "x import torch" in output


def test_threads_bench_reports_autos_choice_for_each_model():
    output = run_bench("threads.py", "--repeats", "1", "--epochs", "2", "--steps", "2")
    assert output.count("(auto: ") == 3
    if "torch default 1 threads" not in output:  # the sweep needs a second thread
        assert "2-512-512-2, 256" in output


def test_checkpoint_bench_reports_each_policy():
    output = run_bench("checkpoint_cost.py", "--repeats", "1")
    assert all(policy in output for policy in ("auto", "share"))
