"""Hostile input: random mutations of valid configs exit 0, 2 or 3, never with a traceback."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import tiny
from lrsched_cli.cli import app

cli = CliRunner()

BASES = [
    tiny(),
    tiny(scheduler={"name": "LambdaLR", "lr_lambda": "min(1, (epoch + 1) / 3)"}),
    tiny(scheduler={"name": "ReduceLROnPlateau", "patience": 1}, early_stopping={"patience": 2}),
    tiny(
        scheduler={
            "name": "SequentialLR",
            "milestones": [2],
            "schedulers": [
                {"name": "LinearLR", "start_factor": 0.1, "total_iters": 2},
                {"name": "OneCycleLR", "max_lr": 0.3},
            ],
        }
    ),
    tiny(data={"name": "digits", "batch_size": 256}, model={"name": "cnn", "channels": [4]}),
]
# Values chosen to probe edges without a valid one taking minutes (n_samples: 10**9 is refused).
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([-(2**63), -1, 0, 1, 2, 3, 7, 100, 10**9, 2**64]),
    st.integers(-5, 50),
    st.sampled_from([-1.0, 0.0, 1e-300, 0.5, 1e300, float("nan"), float("inf"), -float("inf")]),
    st.text(max_size=12),
    st.sampled_from(["", "..", "../../etc", "/tmp/x", "epoch / 0", "9**9**9", "none", "ÄÖÜ🙂"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def paths(node, prefix=()):
    """Every key path in a nested config, lists included."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*prefix, index))


@st.composite
def mutated_configs(draw):
    config = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in paths(config) if p]))
        parent = config
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
        else:
            parent[path[-1]] = draw(VALUES)
    return config


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=mutated_configs())
def test_mutated_configs_never_crash(config, tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    runs = directory / "runs"
    result = cli.invoke(app, ["run", str(path), "--runs-dir", str(runs), "--epochs", "2", "-q"])
    assert result.exit_code in (0, 2, 3), (config, result.output)
    assert "Traceback" not in result.output, (config, result.output)
    if result.exit_code == 2:
        assert result.stderr.startswith("error:"), result.output
    for run_dir in runs.glob("*") if runs.exists() else []:
        assert Path(run_dir).parent == runs  # names never escape the runs directory
