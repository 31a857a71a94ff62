"""torch's CPU thread count: chosen from the model's FLOPs, set for the run, then put back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny, write_config
from lrsched_cli import runner
from lrsched_cli.cli import app
from lrsched_cli.config import validate
from lrsched_cli.runner import torch_threads

WIDE = {
    "data": {"name": "moons", "n_samples": 640, "batch_size": 256},
    "model": {"name": "mlp", "hidden": [512, 512]},
}


def test_forward_flops_is_two_per_multiply_add_of_each_linear_layer():
    model = nn.Sequential(
        nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)
    )
    assert runner.forward_flops(model, torch.zeros(32, 2)) == 2 * 32 * (2 * 64 + 64 * 64 + 64 * 3)


class Noise(nn.Module):
    """A user's module that draws random numbers in every forward pass, in any mode."""

    def forward(self, x):
        return x + torch.randn_like(x)


def test_forward_flops_leaves_model_state_and_random_streams_alone():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), Noise(), nn.Linear(8, 2))
    model.train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    batch = torch.randn(16, 4)
    rng = torch.get_rng_state()
    runner.forward_flops(model, batch)
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_auto_gives_a_toy_mlp_one_thread_however_many_are_free():
    with torch_threads(8):
        assert runner.prepare(validate(tiny())).threads == 1


def test_auto_gives_a_wide_mlp_one_thread_per_share_of_its_flops_up_to_what_is_free():
    cfg = validate(tiny(**WIDE))
    with torch_threads(64):
        experiment = runner.prepare(cfg)
    flops = 2 * 256 * (2 * 512 + 512 * 512 + 512 * 2)
    assert experiment.threads == 1 + int(flops // runner.FLOPS_PER_THREAD) == 34
    with torch_threads(2):  # a compare worker's share of the cores caps it
        assert runner.prepare(cfg).threads == 2


@pytest.mark.parametrize(
    "flops, device, expected",
    [(3.9e6, "cpu", 1), (4e6, "cpu", 2), (8e6, "cpu", 3), (1e12, "cpu", 8), (1e12, "cuda", 8)],
)
def test_auto_adds_a_thread_per_share_of_flops_on_the_cpu(flops, device, expected):
    with torch_threads(8):
        assert runner.choose_threads("auto", flops, torch.device(device)) == expected


def test_explicit_threads_are_used_as_given():
    with torch_threads(1):
        assert runner.prepare(validate(tiny(**WIDE, threads=3))).threads == 3


@pytest.mark.parametrize("threads, expected", [("auto", 1), (3, 3)])
def test_training_runs_on_the_chosen_threads_and_puts_the_count_back(threads, expected, tmp_path):
    seen = []

    class Observer(runner.RunObserver):
        def on_epoch(self, record):
            seen.append(torch.get_num_threads())

    with torch_threads(2):
        result = runner.run_experiment(validate(tiny(threads=threads)), tmp_path, Observer())
        assert torch.get_num_threads() == 2
    assert seen == [expected] * 4
    assert result.summary["threads"] == expected


@pytest.mark.parametrize("value", [0, "two", 1.5])
def test_bad_threads_is_a_config_error(value, tmp_path):
    from typer.testing import CliRunner

    path = write_config(tmp_path, tiny(threads=value))
    result = CliRunner().invoke(app, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    line = path.read_text().splitlines().index(f"threads: {value}") + 1
    message = f"line {line}: threads: input should be 'auto' or an integer from 1 to 1024"
    message += f" (got {value!r})"
    assert result.output.strip().endswith(message)
    assert result.output.count("\n") == 1  # one error, not one per member of the union
    assert not (tmp_path / "runs").exists()


def five_features(input_shape, n_outputs):
    """A user's factory that ignores the data's shape."""
    return nn.Linear(5, n_outputs)


def test_a_model_that_does_not_fit_the_data_fails_before_any_file_is_written(tmp_path):
    from typer.testing import CliRunner

    path = write_config(tmp_path, tiny(model={"name": "test_threads:five_features"}))
    result = CliRunner().invoke(app, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    line = path.read_text().splitlines().index("  name: test_threads:five_features") + 1
    assert (
        f"line {line}: model.name: 'test_threads:five_features' fails on a batch" in result.output
    )
    assert "mat1 and mat2 shapes cannot be multiplied" in result.output
    assert not (tmp_path / "runs").exists()


def lazy_mlp(input_shape, n_outputs):
    """A user's factory whose first layer learns its input size on the first forward pass."""
    return nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, n_outputs))


def test_lazy_weights_come_from_the_seeds_init_stream_before_the_optimizer_sees_them():
    cfg = validate(tiny(model={"name": "test_threads:lazy_mlp"}))
    torch.manual_seed(1)
    first = runner.prepare(cfg)
    torch.manual_seed(2)  # whatever the global stream holds
    rng = torch.get_rng_state()
    second = runner.prepare(cfg)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(first.model[0].weight, second.model[0].weight)
    assert first.model[0].weight.shape == (16, 2)
    assert first.optimizer.param_groups[0]["params"][0] is first.model[0].weight


def test_a_resumed_run_keeps_the_thread_count_it_started_with(tmp_path):
    class InterruptAfterEpochOne(runner.RunObserver):
        def on_epoch(self, record):
            raise KeyboardInterrupt

    class Threads(runner.RunObserver):
        seen: list[int] = []

        def on_epoch(self, record):
            self.seen.append(torch.get_num_threads())

    cfg = validate(tiny(**WIDE, epochs=2, checkpoint_every=1))
    with torch_threads(2):
        result = runner.run_experiment(cfg, tmp_path, InterruptAfterEpochOne())
    assert result.status == "interrupted" and result.summary["threads"] == 2
    with torch_threads(8):
        resumed = runner.resume_experiment(result.path, Threads())
    assert resumed.status == "completed"
    assert Threads.seen == [2] and resumed.summary["threads"] == 2
