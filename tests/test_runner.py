"""The loop's invariants: determinism, separate random streams, devices, datasets, models."""

from __future__ import annotations

import csv

import pytest
import torch

from conftest import tiny, train
from image_files import write_image_set
from lrsched_cli import runner
from lrsched_cli.config import ConfigError, validate
from lrsched_cli.data import DATASETS


def metrics_without_time(history) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history.epochs]


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    config = tiny(epochs=3, model={"name": "mlp", "hidden": [8], "dropout": 0.2})
    first, second = train(config, tmp_path), train(config, tmp_path)
    assert first.path != second.path
    assert metrics_without_time(first) == metrics_without_time(second)
    assert first.steps == second.steps


def test_another_seed_gives_other_metrics(tmp_path):
    first = train(tiny(epochs=2), tmp_path)
    second = train(tiny(epochs=2, seed=1), tmp_path)
    assert metrics_without_time(first) != metrics_without_time(second)


def test_schedules_with_one_seed_share_weights_data_and_batches(tmp_path):
    """Common random numbers: only the schedule differs between two configs."""
    step = runner.prepare(validate(tiny()))
    cosine = runner.prepare(
        validate(
            tiny(
                scheduler={"name": "CosineAnnealingLR", "T_max": 4},
                optimizer={"name": "Adam", "lr": 0.1},
            )
        )
    )
    for a, b in zip(
        step.model.state_dict().values(), cosine.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert torch.equal(step.dataset.x_train, cosine.dataset.x_train)
    assert torch.equal(step.dataset.y_val, cosine.dataset.y_val)
    order = [torch.randperm(10, generator=e.batch_generator) for e in (step, cosine)]
    assert torch.equal(*order)


def test_same_lr_in_epoch_one_gives_the_same_epoch_one_losses(tmp_path):
    constant = train(tiny(epochs=2, scheduler={"name": "none"}), tmp_path)
    stepped = train(
        tiny(epochs=2, scheduler={"name": "StepLR", "step_size": 1, "gamma": 0.1}), tmp_path
    )
    assert constant.epochs[0]["train_loss"] == stepped.epochs[0]["train_loss"]
    assert constant.epochs[0]["val_loss"] == stepped.epochs[0]["val_loss"]
    assert constant.epochs[1]["lr"] != stepped.epochs[1]["lr"]


def test_lr_column_is_the_lr_the_epoch_trained_with(tmp_path):
    history = train(tiny(), tmp_path)  # StepLR(step_size=2, gamma=0.5)
    assert history.column("lr") == [0.1, 0.1, 0.05, 0.05]
    for row in history.epochs:
        epoch_steps = [s["lr"] for s in history.steps if s["epoch"] == row["epoch"]]
        assert set(epoch_steps) == {row["lr"]}


def test_step_numbering_and_seconds(tmp_path):
    history = train(tiny(epochs=3), tmp_path)
    assert [s["step"] for s in history.steps] == list(range(1, len(history.steps) + 1))
    assert all(row["seconds"] > 0 for row in history.epochs)
    assert history.summary["best_val_loss"] == min(history.column("val_loss"))


def test_constant_lr_with_none(tmp_path):
    history = train(tiny(scheduler={"name": "none"}), tmp_path)
    assert history.column("lr") == [0.1] * 4
    assert history.config["scheduler"] == {"name": "none"}


def test_lambda_lr_trains_epoch_one_at_lr_zero(tmp_path):
    history = train(tiny(scheduler={"name": "LambdaLR", "lr_lambda": "epoch / 10"}), tmp_path)
    assert history.column("lr") == pytest.approx([0.0, 0.01, 0.02, 0.03])


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_trains(name, tmp_path):
    data = {"name": name, "batch_size": 32}
    if name == "csv":
        path = tmp_path / "points.csv"
        rows = ["x1,x2,label"] + [
            f"{i % 7},{(i * 3) % 5},{'yes' if i % 2 else 'no'}" for i in range(40)
        ]
        path.write_text("\n".join(rows) + "\n")
        data.update(path=str(path), target="label", task="classification")
    elif name in ("mnist", "fashion_mnist", "cifar10"):
        write_image_set(tmp_path / "images", name, 60)
        data.update(root=str(tmp_path / "images"), download=False)
    elif name not in ("digits", "iris", "wine", "breast_cancer", "diabetes"):
        data["n_samples"] = 60
    history = train(tiny(epochs=1, data=data), tmp_path)
    assert len(history.epochs) == 1
    spec = DATASETS[name]
    has_accuracy = history.epochs[0].get("val_accuracy") is not None
    assert has_accuracy == ((spec.task or "classification") == "classification")


def test_split_and_scaling(tmp_path):
    experiment = runner.prepare(
        validate(tiny(data={"name": "moons", "n_samples": 100, "val_fraction": 0.25}))
    )
    data = experiment.dataset
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (55, 25, 20)
    assert data.x_train.mean(0).abs().max() < 1e-5
    assert (data.x_train.std(0, unbiased=False) - 1).abs().max() < 1e-4


@pytest.mark.parametrize(
    "model",
    [{"name": "linear"}, {"name": "mlp", "activation": "tanh"}, {"name": "cnn", "channels": [4]}],
)
def test_models(model, tmp_path):
    history = train(
        tiny(epochs=1, data={"name": "digits", "batch_size": 128}, model=model), tmp_path
    )
    assert history.epochs[0]["val_accuracy"] > 0.1


def test_regression_has_no_accuracy_column(tmp_path):
    history = train(tiny(epochs=1, data={"name": "sine", "n_samples": 50}), tmp_path)
    header = next(csv.reader((history.path / "metrics.csv").open()))
    assert header == ["epoch", "lr", "train_loss", "val_loss", "lr_event", "seconds"]


def test_resolved_config_fills_defaults(tmp_path):
    history = train(
        tiny(
            epochs=1,
            data={"name": "moons"},
            model={"name": "mlp"},
            scheduler={"name": "onecycle", "max_lr": 0.2},
        ),
        tmp_path,
    )
    config = history.config
    assert config["data"]["n_samples"] == 1000 and config["data"]["noise"] == 0.2
    assert config["data"]["test_fraction"] == 0.2
    assert config["model"] == {
        "name": "mlp",
        "hidden": [64, 64],
        "activation": "relu",
        "dropout": 0.0,
    }
    assert config["scheduler"]["name"] == "OneCycleLR"
    # 600 training rows in batches of 64
    assert config["scheduler"]["interval"] == "step" and config["scheduler"]["total_steps"] == 10


def test_device_auto_resolves_to_an_available_device():
    device = runner.resolve_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else device.type)
    assert runner.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_index_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        runner.resolve_device("cuda:1")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiny_run_on_cuda(tmp_path):
    history = train(tiny(device="cuda"), tmp_path)
    assert history.summary["device"].startswith("cuda")
    assert history.column("lr") == [0.1, 0.1, 0.05, 0.05]
