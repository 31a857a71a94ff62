"""YAML -> ExperimentConfig: safe loading, overrides, and messages that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CONFIGS, tiny, write_config
from lrsched_cli.config import ConfigError, line_of, load_config, load_configs, sweep_labels


def test_every_example_config_loads():
    for path in CONFIGS.glob("*.yaml"):
        cfg = load_config(path)
        assert cfg.name == path.stem or path.stem == "quickstart"


def test_defaults_and_name_from_the_file_stem(tmp_path):
    config = tiny()
    del config["name"], config["device"]
    cfg = load_config(write_config(tmp_path, config, "my-run.yaml"))
    assert (cfg.name, cfg.seed, cfg.device) == ("my-run", 0, "auto")
    assert cfg.data.val_fraction == 0.2 and cfg.data.batch_size == 16


def test_precedence_file_then_set_then_options(tmp_path):
    path = write_config(tmp_path, tiny(epochs=4))
    cfg = load_config(
        path, ["epochs=6", "optimizer.lr=0.5", "scheduler.milestones=[1, 2]"], epochs=8, seed=3
    )
    assert cfg.epochs == 8 and cfg.seed == 3 and cfg.optimizer.lr == 0.5
    assert cfg.scheduler.kwargs["milestones"] == [1, 2]


def test_scientific_notation_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "epochs: 2\ndata: {name: moons}\noptimizer: {name: SGD, lr: 1e-3}\n"
        "scheduler: {name: CosineAnnealingLR, T_max: 2, eta_min: 1e-5}\n"
    )
    cfg = load_config(path)
    assert cfg.optimizer.lr == 0.001 and cfg.scheduler.kwargs["eta_min"] == 1e-5


def test_several_errors_are_all_reported_with_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 0\ndata:\n  name: moons\n  val_fraction: 2\noptimizer: {name: SGD}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}, line 1: epochs" in message
    assert f"{path}, line 4: data.val_fraction" in message
    assert f"{path}, line 5: optimizer.lr: required key is missing" in message


def test_line_of_nested_keys():
    text = (CONFIGS / "warmup_cosine.yaml").read_text()
    lines = text.splitlines()
    line = line_of(text, "scheduler.schedulers.1.T_max")
    assert "CosineAnnealingLR" in lines[line - 1]
    assert "milestones" in lines[line_of(text, "scheduler.milestones") - 1]


def test_device_must_be_a_known_kind(tmp_path):
    with pytest.raises(ConfigError, match="device"):
        load_config(write_config(tmp_path, tiny(device="tpu")))


def test_directory_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(Path(tmp_path))


def test_a_bad_set_value_is_blamed_on_the_set_not_the_file(tmp_path):
    path = write_config(tmp_path, tiny())
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["optimizer.lr=abc"])
    assert str(caught.value).startswith("--set optimizer.lr=abc: optimizer.lr:")
    assert "line" not in str(caught.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("scheduler.warmup.epochs=x", "scheduler.warmup.epochs"),
        ("data={name: moons, batch_size: 0}", "data.batch_size"),
        ("model.hidden=[0]", "model.hidden"),
    ],
)
def test_nested_and_parent_sets_are_blamed(tmp_path, override, key):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, tiny()), [override])
    assert str(caught.value).startswith(f"--set {override}: {key}")


def test_the_last_set_of_a_key_is_the_one_blamed(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, tiny()), ["optimizer.lr=abc", "optimizer.lr=-1"])
    assert str(caught.value).startswith("--set optimizer.lr=-1:")


def test_an_option_is_blamed_on_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"^--device tpu: device"):
        load_config(write_config(tmp_path, tiny()), device="tpu")


def test_a_bad_sweep_value_is_blamed_on_its_sweep_entry(tmp_path):
    path = write_config(tmp_path, tiny(sweep={"optimizer.lr": [0.1, "abc"]}))
    line = path.read_text().splitlines().index("  optimizer.lr:") + 1
    with pytest.raises(ConfigError) as caught:
        load_configs(path, ["optimizer.lr=0.5"])
    assert str(caught.value).startswith(f"{path}, line {line}: optimizer.lr:")


def test_a_sweep_through_a_value_that_is_not_a_mapping_names_the_sweep(tmp_path):
    path = write_config(tmp_path, tiny(sweep={"optimizer.lr.peak": [0.1]}))
    with pytest.raises(ConfigError, match=r"line \d+: sweep.optimizer.lr.peak: 'lr' is not a"):
        load_configs(path)


def test_sweep_names_use_the_shortest_suffix_that_reads_alone(tmp_path):
    sweep = {"scheduler.warmup.epochs": [2, 4], "optimizer.lr": [0.1], "optimizer.momentum": [0.9]}
    config = tiny(scheduler={"name": "StepLR", "step_size": 2, "warmup": {"epochs": 1}})
    names = [c.name for c in load_configs(write_config(tmp_path, {**config, "sweep": sweep}))]
    assert names == [
        "tiny-warmup.epochs=2-lr=0.1-momentum=0.9",
        "tiny-warmup.epochs=4-lr=0.1-momentum=0.9",
    ]


@pytest.mark.parametrize(
    "keys, labels",
    [
        (["scheduler.gamma", "optimizer.lr"], ["gamma", "lr"]),
        (["epochs", "scheduler.warmup.epochs"], ["epochs", "warmup.epochs"]),
        (
            ["scheduler.gamma", "scheduler.schedulers.1.gamma"],
            ["scheduler.gamma", "schedulers.1.gamma"],
        ),
        (["data.seed", "scheduler.name"], ["data.seed", "scheduler.name"]),
        (["a.x.lr", "b.x.lr"], ["a.x.lr", "b.x.lr"]),
    ],
)
def test_sweep_labels(keys, labels):
    assert list(sweep_labels(keys).values()) == labels


def test_a_set_adds_a_sweep_key_whole(tmp_path):
    path = write_config(tmp_path, tiny(sweep={"scheduler.gamma": [0.1, 0.5]}))
    configs = load_configs(path, ["sweep.optimizer.lr=[0.01, 1]"])
    assert [c.name for c in configs][-1] == "tiny-gamma=0.5-lr=1"
    assert len(configs) == 4
