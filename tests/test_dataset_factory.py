"""`data.name: package.module:factory`: the user's own dataset, found and checked as a model
factory is, split, standardized and batched as lrsched's own; bad returns are config errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny, write_config
from lrsched_cli import runner
from lrsched_cli.cli import app
from lrsched_cli.config import ConfigError, validate

cli = CliRunner()

FACTORY = '''
import numpy as np
import torch


def make(seed, n_samples: int = 60, shift: float = 0.0):
    """Two shifted blobs: x from numpy, labels as a torch tensor."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % 2
    x = rng.normal(0, 1, (n_samples, 3)) + 3 * y[:, None] + shift
    return x, torch.as_tensor(y), "classification"


def regression(seed, n_samples: int = 40):
    x = torch.linspace(-1, 1, n_samples)[:, None]
    return x, 2 * x[:, 0] + 100, "regression"


def images(seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (30, 2, 6, 6)), np.arange(30) % 3, "classification"
'''


def factory_config(tmp_path: Path, name: str = "mydata.py:make", source: str = FACTORY, **data):
    """A config in tmp_path naming factory `name`, whose module holds `source`."""
    module = name.split(":")[0].removesuffix(".py")
    path = tmp_path / f"{module.replace('.', '/')}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return write_config(tmp_path, tiny(epochs=2, data={"name": name, "batch_size": 16, **data}))


def run_cli(config: Path, tmp_path: Path, *extra: str):
    return cli.invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs"), *extra])


def test_a_factory_next_to_the_config_trains_and_is_saved_resolved(tmp_path, monkeypatch):
    config = factory_config(tmp_path, shift=0.5)
    monkeypatch.chdir(tmp_path.parent)  # found in the config's folder, not the current one
    result = run_cli(config, tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((Path(result.stdout.strip()) / "config.yaml").read_text())
    assert saved["data"]["name"] == f"{tmp_path / 'mydata.py'}:make"
    assert saved["data"]["n_samples"] == 60 and saved["data"]["shift"] == 0.5
    assert saved["data"]["standardize"] == "feature"
    metrics = (Path(result.stdout.strip()) / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3 and "val_accuracy" in metrics[0]


def test_a_dotted_module_on_the_config_folder_is_found(tmp_path):
    config = factory_config(tmp_path, "pkg.sets:make")
    (tmp_path / "pkg" / "__init__.py").write_text("")
    assert run_cli(config, tmp_path).exit_code == 0


def test_the_factory_gets_the_data_seed_and_lrsched_splits_and_standardizes(tmp_path):
    factory_config(tmp_path)
    data = {"name": f"{tmp_path / 'mydata.py'}:make", "n_samples": 100, "test_fraction": 0.1}
    first = runner.prepare(validate(tiny(data=data))).dataset
    again = runner.prepare(validate(tiny(data=data))).dataset
    other = runner.prepare(validate(tiny(data=data, seed=1))).dataset
    assert (len(first.x_train), len(first.x_val), len(first.x_test)) == (70, 20, 10)
    assert first.x_train.equal(again.x_train) and not first.x_train.equal(other.x_train)
    assert first.x_train.mean(0).abs().max() < 1e-5
    assert (first.x_train.std(0, unbiased=False) - 1).abs().max() < 1e-4
    assert first.task == "classification" and first.n_outputs == 2


def test_tensors_and_regression_are_taken_and_standardize_none_keeps_them(tmp_path):
    factory_config(tmp_path)
    data = {"name": f"{tmp_path / 'mydata.py'}:regression", "standardize": "none"}
    dataset = runner.prepare(validate(tiny(data=data))).dataset
    assert dataset.task == "regression" and dataset.n_outputs == 1
    assert dataset.x_train.abs().max() <= 1.0  # as returned: in [-1, 1]
    assert dataset.y_train.mean().abs() < 1.0  # targets are standardized all the same


def test_image_shaped_data_trains_a_cnn_standardized_per_channel(tmp_path):
    factory_config(tmp_path)
    cfg = tiny(
        data={"name": f"{tmp_path / 'mydata.py'}:images", "standardize": "channel"},
        model={"name": "cnn", "channels": [4]},
    )
    experiment = runner.prepare(validate(cfg))
    x = experiment.dataset.x_train
    assert x.shape[1:] == (2, 6, 6)
    assert x.transpose(0, 1).reshape(2, -1).mean(1).abs().max() < 1e-5


def test_channel_standardizing_of_flat_features_is_refused(tmp_path):
    factory_config(tmp_path)
    data = {"name": f"{tmp_path / 'mydata.py'}:make", "standardize": "channel"}
    with pytest.raises(ConfigError, match="channel needs images.*shape \\[3\\]: use feature"):
        runner.prepare(validate(tiny(data=data)))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("return x, y", "returned a tuple of 2; a dataset factory returns (x, y, task)"),
        ("return x, y, 'classify'", "returned the task 'classify'"),
        ("return x.tolist(), y, 'classification'", "returned x as a list; it must be a numpy"),
        ("return x[:, 0], y, 'classification'", "x has shape [20]: one row per sample"),
        ("return x.astype(str), y, 'classification'", "x holds <U32, not numbers"),
        ("return x, y[:-1], 'classification'", "x has 20 samples but y has 19 targets"),
        ("return x, y + 0.5, 'classification'", "y holds float64: class labels are integers"),
        ("return x, y.reshape(4, 5), 'classification'", "y has shape [4, 5]"),
        ("x[3, 1] = np.nan; return x, y, 'classification'", "x holds NaN or infinite"),
        ("return x, y.astype(str), 'regression'", "y holds <U21, not numbers, for regression"),
        ("return {'x': x}", "returned a dict;"),
    ],
)
def test_a_factory_that_returns_the_wrong_thing_exits_2_before_training(tmp_path, body, problem):
    source = f"""
    import numpy as np


    def make(seed):
        x = np.ones((20, 2))
        y = np.arange(20) % 2
        {body}
    """
    config = factory_config(tmp_path, source=source)
    result = run_cli(config, tmp_path)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"data.name: {tmp_path / 'mydata.py'}:make returned" in message
    assert problem in message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("name", "source", "problem"),
    [
        ("missing:make", None, "data.name: cannot find missing.py for 'missing:make'"),
        ("mydata:make", f"import not_a_package\n{FACTORY}", "No module named 'not_a_package'"),
        ("mydata:make", f"{FACTORY}\nmake(0)[5]\n", "importing it raised IndexError"),
        ("mydata:mkae", FACTORY, "defines no function or class 'mkae'; did you mean 'make'?"),
        ("mydata:np", "import numpy as np\n", "defines no function or class 'np'"),
        ("os:system", None, "os defines no function or class 'system'"),
        ("mydata:make", "def make(seed:\n", "cannot read"),
        ("mydata.py:", FACTORY, "expected package.module:factory or file.py:factory"),
    ],
)
def test_a_factory_that_does_not_import_exits_2(tmp_path, name, source, problem):
    if source is not None:
        (tmp_path / "mydata.py").write_text(source)
    config = write_config(tmp_path, tiny(data={"name": name}))
    result = run_cli(config, tmp_path)
    assert result.exit_code == 2, result.output
    assert problem in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_a_factorys_options_are_checked_against_its_signature(tmp_path):
    config = factory_config(tmp_path, shfit=1.0)
    result = run_cli(config, tmp_path)
    assert result.exit_code == 2, result.output
    assert "data.shfit: " in result.stderr and "did you mean 'shift'?" in result.stderr
    config = factory_config(tmp_path, shift="far")
    result = run_cli(config, tmp_path)
    assert result.exit_code == 2 and "data.shift:" in result.stderr


def test_a_registered_dataset_still_refuses_unknown_keys(tmp_path):
    result = run_cli(write_config(tmp_path, tiny(data={"name": "moons", "shift": 1})), tmp_path)
    assert result.exit_code == 2, result.output
    assert "data.shift: unknown key" in " ".join(result.stderr.split())
    result = run_cli(write_config(tmp_path, tiny(data={"name": "moons", "root": "x"})), tmp_path)
    assert result.exit_code == 2 and "takes no 'root'" in result.stderr


def test_resume_finds_the_factory_from_another_directory(tmp_path, monkeypatch):
    config = factory_config(tmp_path)
    result = run_cli(config, tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    run_dir = Path(result.stdout.strip())
    monkeypatch.chdir(tmp_path.parent)
    result = cli.invoke(app, ["run", "--resume", str(run_dir), "--epochs", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 4
