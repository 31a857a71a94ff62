"""`lrsched schema` against the loader: every shipped config passes, bad ones fail, both ways."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from conftest import CONFIGS, tiny, write_config
from lrsched_cli.cli import app
from lrsched_cli.config import ConfigError, load_configs

SHIPPED = sorted({*CONFIGS.glob("*.yaml"), *CONFIGS.glob("**/*.yaml")})


@pytest.fixture(scope="module")
def validator():
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_shipped_configs_are_found():
    assert len(SHIPPED) >= 16 and any(p.parent.name == "compare" for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_is_valid(validator, path):
    errors = [error.message for error in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


SWEEP = {"scheduler.gamma": [0.1, 0.5], "optimizer.lr": [0.01, 0.1]}
ACCEPTED = {
    "no name: the file's stem": {k: v for k, v in tiny().items() if k != "name"},
    "a sweep block": tiny(sweep=SWEEP),
    "a factory's own options": tiny(model={"name": "mymodels:factory", "width": 16}),
    "a device by number": tiny(device="cuda:1"),
}
REJECTED = {
    "unknown top-level key": tiny(epoch=3),
    "missing data": {k: v for k, v in tiny().items() if k != "data"},
    "epochs of the wrong type": tiny(epochs="ten"),
    "bad device": tiny(device="tpu"),
    "an unknown key of a built-in model": tiny(model={"name": "mlp", "hiden": [8]}),
    "a sweep that is a list": tiny(sweep=[1, 2]),
    "a sweep key without values": tiny(sweep={"optimizer.lr": []}),
}


@pytest.mark.parametrize("config", ACCEPTED.values(), ids=ACCEPTED)
def test_schema_accepts_what_the_loader_accepts(validator, tmp_path, config):
    (tmp_path / "mymodels.py").write_text("def factory(input_shape, n_outputs, width=8): ...\n")
    load_configs(write_config(tmp_path, config))
    assert [error.message for error in validator.iter_errors(config)] == []


@pytest.mark.parametrize("config", REJECTED.values(), ids=REJECTED)
def test_schema_rejects_what_the_loader_rejects(validator, tmp_path, config):
    with pytest.raises(ConfigError):
        load_configs(write_config(tmp_path, config))
    assert not validator.is_valid(config)
