"""The user's own files: a model factory next to the config, its options, and CSV datasets."""

from __future__ import annotations

import sys

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli.cli import app
from lrsched_cli.config import ConfigError, load_config

runner = CliRunner()

FACTORY = """\
import math
from torch import nn

def factory(input_shape, n_outputs, width=8, depth=1):
    layers = [nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, n_outputs))
"""


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A current directory that is not the config's, and a sys.path that lacks it too."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    return cwd


def project(tmp_path, module: str, source: str = FACTORY, **model) -> tuple:
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(source)
    config = write_config(folder, tiny(epochs=2, model={"name": f"{module}:factory", **model}))
    return folder, config


def test_a_factory_next_to_the_config_is_found_from_another_directory(tmp_path, elsewhere):
    from lrsched_cli import runner, store

    folder, config = project(tmp_path, "models_next_to_config", width=16)
    result = runner.run_experiment(load_config(config), tmp_path / "runs")
    saved = yaml.safe_load((result.path / store.CONFIG_FILE).read_text())
    assert saved["model"] == {
        "name": f"{folder / 'models_next_to_config.py'}:factory",
        "width": 16,
        "depth": 1,
    }
    assert store.read_run(result.path).summary["status"] == "completed"


def test_the_saved_config_finds_the_factory_again(tmp_path, elsewhere):
    from lrsched_cli.models import build_model, resolve_model

    _, config = project(tmp_path, "models_for_resume", width=5)
    saved = write_config(tmp_path, load_config(config).to_dict(), "saved.yaml")
    model = build_model(resolve_model(load_config(saved).model), (2,), 3)
    assert model[1].out_features == 5


def test_two_folders_with_the_same_module_name_each_get_their_own(tmp_path, elsewhere):
    from lrsched_cli.models import build_model, resolve_model

    widths = []
    for folder, width in (("a", 3), ("b", 7)):
        (tmp_path / folder).mkdir()
        source = FACTORY.replace("width=8", f"width={width}")
        (tmp_path / folder / "samename.py").write_text(source)
        cfg = load_config(write_config(tmp_path / folder, tiny(model={"name": "samename:factory"})))
        widths.append(build_model(resolve_model(cfg.model), (2,), 2)[1].out_features)
    assert widths == [3, 7]


def test_the_current_directory_is_searched_after_the_config_folder(tmp_path, elsewhere):
    (elsewhere / "models_in_cwd.py").write_text(FACTORY)
    config = write_config(tmp_path, tiny(model={"name": "models_in_cwd:factory"}))
    assert load_config(config).model.name == f"{elsewhere / 'models_in_cwd.py'}:factory"


def test_a_module_on_sys_path_keeps_its_name(tmp_path, elsewhere):
    config = write_config(tmp_path, tiny(model={"name": "json:loads"}))
    assert load_config(config).model.name == "json:loads"


def test_a_missing_module_says_where_it_looked(tmp_path, elsewhere):
    config = write_config(tmp_path, tiny(model={"name": "nosuchmodels:factory"}))
    result = runner.invoke(app, ["plan", str(config)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"{config}, line" in message and "nosuchmodels.py" in message
    assert str(tmp_path) in message and str(elsewhere) in message and "sys.path" in message
    assert "Traceback" not in result.output


def test_a_factory_receives_its_own_options(tmp_path, elsewhere):
    from lrsched_cli.models import build_model, resolve_model

    _, config = project(tmp_path, "models_with_width", width=12)
    resolved = resolve_model(load_config(config).model)
    assert resolved.model_dump(exclude_none=True) == {
        "name": resolved.name,
        "width": 12,
        "depth": 1,
    }
    assert build_model(resolved, (2,), 2)[1].out_features == 12


def test_an_unknown_factory_option_names_the_closest(tmp_path, elsewhere):
    _, config = project(tmp_path, "models_with_typo", widht=12)
    result = runner.invoke(app, ["plan", str(config)])
    assert result.exit_code == 2, result.output
    assert "model.widht" in result.stderr and "did you mean 'width'" in result.stderr


def test_a_factory_with_var_keywords_takes_any_option(tmp_path, elsewhere):
    from lrsched_cli.models import build_model, resolve_model

    source = FACTORY.replace("depth=1)", "**options)").replace("width=8", "width=8, depth=1")
    _, config = project(tmp_path, "models_var_kw", source, width=4, colour="red")
    resolved = resolve_model(load_config(config).model)
    assert resolved.model_dump(exclude_none=True)["colour"] == "red"
    assert build_model(resolved, (2,), 2)[1].out_features == 4


def test_an_unknown_key_of_a_built_in_model_stays_an_error(tmp_path):
    with pytest.raises(ConfigError, match="model.hiden: unknown key; did you mean 'hidden'"):
        load_config(write_config(tmp_path, tiny(model={"name": "mlp", "hiden": [8]})))


def csv_config(folder, path, **data) -> dict:
    return tiny(
        data={
            "name": "csv",
            "path": path,
            "target": "y",
            "task": "classification",
            "batch_size": 2,
            **data,
        }
    )


def test_data_path_is_relative_to_the_config_and_saved_absolute(tmp_path, elsewhere):
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "d.csv").write_text("a,y\n1,0\n2,1\n3,0\n4,1\n")
    cfg = load_config(write_config(folder, csv_config(folder, "data/d.csv")))
    assert cfg.data.path == str(folder / "data" / "d.csv")
    assert cfg.to_dict()["data"]["path"] == str(folder / "data" / "d.csv")


def test_data_path_given_with_set_is_relative_to_the_current_directory(tmp_path, elsewhere):
    config = write_config(tmp_path, csv_config(tmp_path, "x.csv"))
    cfg = load_config(config, ["data.path=mine.csv"])
    assert cfg.data.path == str(elsewhere / "mine.csv")


def load_csv(tmp_path, text: str):
    from lrsched_cli.data import build_dataset, resolve_data

    (tmp_path / "d.csv").write_text(text)
    cfg = load_config(write_config(tmp_path, csv_config(tmp_path, "d.csv")))
    return build_dataset(resolve_data(cfg.data), 0, 0)


def test_a_word_in_a_feature_column_names_the_column_and_the_line(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_csv(tmp_path, "a,colour,y\n1,2,0\n3,red,1\n5,6,0\n")
    message = str(caught.value)
    assert "line 3" in message and "column 'colour'" in message and "'red'" in message
    assert "could not convert" not in message and "3,red,1" not in message


def test_a_long_bad_cell_is_quoted_short(tmp_path):
    cell = "x" * 5000
    with pytest.raises(ConfigError) as caught:
        load_csv(tmp_path, f"a,y\n1,0\n{cell},1\n")
    assert "line 3" in str(caught.value) and len(str(caught.value)) < 400


def test_a_short_row_names_its_line(tmp_path):
    with pytest.raises(ConfigError, match=r"line 4 has 1 of the 3 columns"):
        load_csv(tmp_path, "a,b,y\n1,2,0\n3,4,1\n5\n")


def test_a_csv_with_a_word_fails_on_the_command_line_with_exit_2(tmp_path, elsewhere):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n3,red,1\n5,6,0\n7,8,1\n")
    config = write_config(tmp_path, csv_config(tmp_path, "d.csv"))
    result = runner.invoke(app, ["plan", str(config)])
    assert result.exit_code == 2, result.output
    assert "column 'b'" in result.stderr and "line 3" in result.stderr


def test_a_factory_file_named_like_an_imported_module_is_refused(tmp_path, elsewhere):
    from lrsched_cli.models import resolve_model

    (tmp_path / "json.py").write_text(FACTORY)
    cfg = load_config(write_config(tmp_path, tiny(model={"name": "json:factory"})))
    with pytest.raises(ConfigError, match="already taken by .*rename the file"):
        resolve_model(cfg.model)
    assert hasattr(sys.modules["json"], "dumps")  # the standard library's json is untouched
