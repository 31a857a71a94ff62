import copy

import pytest
import torch
from torch import nn
from torch.func import stack_module_state

from lrsched_cli.stacked_optim import (
    StackedOptimizer,
    hyperparameters,
    signature,
    unsupported_reason,
)

RUNS = 4

CASES = {
    "sgd": (torch.optim.SGD, {"lr": 0.1}),
    "sgd-momentum": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "sgd-nesterov": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    "sgd-weight-decay": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    "sgd-dampening": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    "adam": (torch.optim.Adam, {"lr": 0.01}),
    "adam-weight-decay": (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    "adamw": (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
}


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))


def _run_options(optimizer_class: type, options: dict, run: int) -> dict:
    """Different numbers per run, the same structure."""
    varied = dict(options, lr=options["lr"] * (1 + 0.37 * run))
    if options.get("momentum"):
        varied["momentum"] = options["momentum"] - 0.05 * run
    if options.get("weight_decay"):
        varied["weight_decay"] = options["weight_decay"] * (1 + run)
    if options.get("dampening"):
        varied["dampening"] = options["dampening"] + 0.1 * run
    if optimizer_class is not torch.optim.SGD:
        varied["betas"] = (0.9 - 0.02 * run, 0.999 - 0.001 * run)
        varied["eps"] = 1e-8 * (1 + run)
    return varied


def _scheduler(optimizer: torch.optim.Optimizer, run: int):
    """OneCycleLR, which also cycles momentum or beta1, for half the runs; StepLR for the rest."""
    if run % 2:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
    cycles_momentum = optimizer.defaults.get("momentum", 1) != 0
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=optimizer.defaults["lr"],
        total_steps=200,
        pct_start=0.1,
        cycle_momentum=cycles_momentum,
    )


class Fleet:
    """K torch optimizers stepped one by one beside one StackedOptimizer for all K runs."""

    def __init__(self, case: str):
        optimizer_class, options = CASES[case]
        self.models = [_model(seed) for seed in range(RUNS)]
        self.optimizers = [
            optimizer_class(model.parameters(), **_run_options(optimizer_class, options, run))
            for run, model in enumerate(self.models)
        ]
        self.schedulers = [_scheduler(opt, run) for run, opt in enumerate(self.optimizers)]
        stacked, _ = stack_module_state([copy.deepcopy(model) for model in self.models])
        self.names = list(stacked)
        self.stacked = [stacked[name].detach() for name in self.names]
        self.stacked_optimizer = StackedOptimizer(
            optimizer_class.__name__, self.stacked, signature(self.optimizers[0])
        )
        self.generator = torch.Generator().manual_seed(123)

    def step(self) -> None:
        grads = [torch.randn(p.shape, generator=self.generator) for p in self.stacked]
        per_run = [hyperparameters(opt) for opt in self.optimizers]
        hyper = {
            key: torch.tensor([h[key] for h in per_run], dtype=torch.float64) for key in per_run[0]
        }
        for run, (model, optimizer) in enumerate(zip(self.models, self.optimizers, strict=True)):
            for param, grad in zip(model.parameters(), grads, strict=True):
                param.grad = grad[run].clone()
            optimizer.step()
        for scheduler in self.schedulers:
            scheduler.step()
        self.stacked_optimizer.step(grads, hyper)

    def keep(self, index: list[int]) -> None:
        self.models = [self.models[i] for i in index]
        self.optimizers = [self.optimizers[i] for i in index]
        self.schedulers = [self.schedulers[i] for i in index]
        selected = torch.tensor(index)
        self.stacked = [p.index_select(0, selected) for p in self.stacked]
        self.stacked_optimizer.select(selected)
        self.stacked_optimizer.set_params(self.stacked)

    def assert_equal(self) -> None:
        for run, model in enumerate(self.models):
            for name, param, stacked in zip(
                self.names, model.parameters(), self.stacked, strict=True
            ):
                assert torch.equal(param, stacked[run]), f"run {run}, {name}"


@pytest.mark.parametrize("case", list(CASES))
def test_stacked_update_is_bitwise_equal_to_separate_torch_optimizers(case):
    fleet = Fleet(case)
    for _ in range(50):
        fleet.step()
    fleet.assert_equal()


@pytest.mark.parametrize("case", list(CASES))
def test_state_of_matches_torch_and_lets_torch_continue(case):
    fleet = Fleet(case)
    for _ in range(15):
        fleet.step()
    run = 2
    states = fleet.stacked_optimizer.state_of(run)
    reference = fleet.optimizers[run]
    for param, state in zip(fleet.models[run].parameters(), states, strict=True):
        assert state.keys() == reference.state[param].keys()
        for key, value in state.items():
            assert torch.equal(value, reference.state[param][key]), key
            assert value.dtype == reference.state[param][key].dtype, key

    model = _model(run)
    with torch.no_grad():
        for param, stacked in zip(model.parameters(), fleet.stacked, strict=True):
            param.copy_(stacked[run])
    optimizer_class, options = CASES[case]
    resumed = optimizer_class(model.parameters(), **_run_options(optimizer_class, options, run))
    resumed.param_groups[0].update(
        {key: value for key, value in reference.param_groups[0].items() if key != "params"}
    )
    for param, state in zip(model.parameters(), states, strict=True):
        resumed.state[param].update(state)
    fleet.models[run], fleet.optimizers[run] = model, resumed
    for _ in range(10):
        fleet.step()
    fleet.assert_equal()


@pytest.mark.parametrize("case", ["sgd-nesterov", "adamw"])
def test_select_keeps_the_remaining_runs_on_course(case):
    fleet = Fleet(case)
    for _ in range(10):
        fleet.step()
    fleet.keep([0, 2, 3])
    for _ in range(10):
        fleet.step()
    assert fleet.stacked[0].shape[0] == 3
    fleet.assert_equal()


def _params():
    return list(_model(0).parameters())


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: torch.optim.RMSprop(_params()), "optimizer.name: RMSprop"),
        (lambda: torch.optim.Adam(_params(), amsgrad=True), "optimizer.amsgrad"),
        (lambda: torch.optim.SGD(_params(), maximize=True), "optimizer.maximize"),
        (lambda: torch.optim.SGD(_params(), foreach=True), "optimizer.foreach"),
        (lambda: torch.optim.Adam(_params(), lr=torch.tensor(0.01)), "optimizer.lr"),
        (
            lambda: torch.optim.SGD(
                [{"params": _params()[:2]}, {"params": _params()[2:], "lr": 0.5}], lr=0.1
            ),
            "optimizer.param_groups",
        ),
    ],
)
def test_unsupported_reason_names_the_key(make, key):
    reason = unsupported_reason(make())
    assert reason is not None and reason.startswith(key)


@pytest.mark.parametrize("case", list(CASES))
def test_supported_optimizers_have_no_reason(case):
    optimizer_class, options = CASES[case]
    assert unsupported_reason(optimizer_class(_params(), **options)) is None


def test_signature_separates_structure_and_ignores_numbers():
    def sgd(**options):
        return signature(torch.optim.SGD(_params(), **options))

    assert sgd(lr=0.1, momentum=0.9) == sgd(lr=0.5, momentum=0.8, dampening=0.1)
    assert sgd(lr=0.1, momentum=0.9) != sgd(lr=0.1, momentum=0.9, nesterov=True)
    assert sgd(lr=0.1) != sgd(lr=0.1, momentum=0.9)
    assert sgd(lr=0.1) != sgd(lr=0.1, weight_decay=0.01)
    adam = signature(torch.optim.Adam(_params(), lr=0.1, weight_decay=0.01))
    adamw = signature(torch.optim.AdamW(_params(), lr=0.1, weight_decay=0.01))
    assert adam != adamw
