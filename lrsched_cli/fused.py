"""A fused group: runs of one model architecture trained together, their parameters stacked and
one vmapped forward and backward per step (torch.func), as torch documents model ensembling.

Each run stays a run of its own: its own data, split and batch order (its seed's streams), its
own torch optimizer and scheduler, its own run directory written by the runner's lanes. The
scheduler steps that optimizer exactly as it would alone; the optimizer itself never updates a
weight (its parameters have no gradient). Before each epoch, every run's schedule is stepped
through the epoch's steps and the lr (and momentum or betas) of each step read from its
optimizer, so the stacked update (stacked_optim.py) gets them as one [steps, runs] table: one
host-to-device copy per epoch, and one sync, when the epoch's sums are read.
"""

from __future__ import annotations

import copy
import functools
import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from lrsched_cli import runner, stacked_optim, store
from lrsched_cli.config import ExperimentConfig

# The share of the memory free at the start that a worker's group may take; the rest is for
# other workers, the data's copies and torch's own allocations.
MEMORY_SHARE = 0.5
# Bytes: torch's CPU allocator aligns every tensor to 64, so a run alone's batches start at
# this alignment plus their offset; a fused run's blocks are padded to keep the same.
ALIGNMENT = 64
# Activations, their gradients and vmap's batched copies, per element of a layer's output.
ACTIVATION_COPIES = 4


def fusion_key(experiment: runner.Experiment) -> tuple | str:
    """What runs must share to train in one group (their key), or why this run cannot."""
    reason = stacked_optim.unsupported_reason(experiment.optimizer)
    if reason is not None:
        return reason
    model = experiment.model
    if experiment.device.type not in ("cpu", "cuda"):
        return f"device: {experiment.device.type} has no fused groups (cpu and cuda have)"
    if not all(param.requires_grad for param in model.parameters()):
        return f"model.name: {experiment.config.model.name} has frozen parameters"
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and type(module) is not nn.Dropout:
            return f"model.name: {type(module).__name__} has no per-run stream in a fused group"
    if any(True for _ in model.buffers()):
        return f"model.name: {experiment.config.model.name} has buffers (batch norm statistics)"
    dataset = experiment.dataset
    shapes = [
        (tuple(t.shape), t.dtype)
        for t in (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val)
    ]
    test = None if dataset.x_test is None else (tuple(dataset.x_test.shape), dataset.y_test.dtype)
    return (
        str(experiment.device),
        repr(model),  # the architecture: layer types, sizes, activations, dropout
        tuple((name, tuple(p.shape), p.dtype) for name, p in model.named_parameters()),
        tuple(shapes),
        test,
        dataset.task,
        experiment.config.data.batch_size,
        stacked_optim.signature(experiment.optimizer),
        experiment.threads,
    )


def rehearse(experiment: runner.Experiment) -> str | None:
    """Train two stacked copies for one step on a real batch, on the CPU and off every stream:
    a model torch.func cannot batch (a factory's .item() in forward, say), or whose batched
    gradients round otherwise than a run alone's at this batch size, is known before any run
    starts. None when it can be fused."""
    lane = _StandIn(experiment)
    name, rows = experiment.config.model.name, experiment.config.data.batch_size
    try:
        with torch.random.fork_rng(devices=[]):
            unused = _parameters_without_gradient(experiment, rows)
            if unused:
                return f"model.name: {name}: no loss reaches {', '.join(unused[:3])}"
            engine = FusedEngine([lane, lane], device=torch.device("cpu"))
            engine.gradients(engine.x_train[:, :rows], engine.y_train[:, :rows])
    except Exception as exc:  # a user's model can fail in any way
        return f"model.name: {name} cannot be fused: {exc}"
    if not all(engine.batched_exact.values()):
        return (
            f"model.name: {name}'s batched gradients round otherwise than a run alone's at "
            f"data.batch_size {rows} (torch picks other kernels for small products)"
        )
    return None


def _parameters_without_gradient(experiment: runner.Experiment, rows: int) -> list[str]:
    """The parameters that a run alone's backward pass leaves without a gradient: torch's
    optimizer skips them, where a stacked update (given zeros) would decay them."""
    model = copy.deepcopy(experiment.model).cpu()
    x, y = experiment.dataset.x_train[:rows], experiment.dataset.y_train[:rows]
    runner.loss_function(experiment.dataset.task)(model(x), y).backward()
    return [name for name, param in model.named_parameters() if param.grad is None]


def group_limit(experiment: runner.Experiment, workers: int) -> int:
    """How many runs like this one a worker may train in one group: its share of the free
    memory over one run's weights, optimizer state, data and activations."""
    per_run = _run_bytes(experiment)
    free = _free_bytes(experiment.device)
    return max(1, int(free * MEMORY_SHARE / max(1, workers) // per_run))


def _run_bytes(experiment: runner.Experiment) -> int:
    model, dataset = experiment.model, experiment.dataset
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    # weights, gradients, two optimizer states, and the copy written back for a checkpoint
    weights *= 5
    tensors = [dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val]
    data = sum(t.numel() * t.element_size() for t in tensors) * 2  # and the epoch's shuffled copy
    batch = dataset.x_train[: experiment.config.data.batch_size]
    return weights + data + ACTIVATION_COPIES * _activation_bytes(model, batch) + runner.EVAL_BATCH


def _activation_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """The bytes of every module's output for one batch: what a backward pass keeps."""
    sizes: list[int] = []

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    handles = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(batch.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return sum(sizes)


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # no /proc (macOS): assume 4 GiB


def run_group(
    jobs: list[tuple[ExperimentConfig, str]], runs_dir: Path, stop: runner.StopEvent | None = None
) -> list[runner.RunResult]:
    """Train the jobs (config, run directory name) together; each gets its own run directory
    with the files, columns and statuses of a run alone, and `fused`/`group_size` in its
    summary. A failure fails every run of the group, each saying why."""
    experiments = [runner.prepare(cfg) for cfg, _ in jobs]
    warnings: dict[str, list[str]] = {}  # a config's lint is the same for each of its seeds
    for experiment in experiments:
        if experiment.config.name not in warnings:
            warnings[experiment.config.name] = runner.lint_experiment(experiment)
    with ExitStack() as held:
        lanes = []
        for experiment, (_, label) in zip(experiments, jobs, strict=True):
            path = store.create_run_dir(runs_dir, label, timestamp=False)
            held.enter_context(store.locked(path))
            writer = store.RunWriter(path, experiment.config.to_dict(), experiment.metric_columns)
            summary = {
                **runner.start_summary(experiment),
                "warnings": list(warnings[experiment.config.name]),
                "fused": True,
                "group_size": len(jobs),
            }
            lanes.append(runner.Lane(experiment, path, writer, [], summary, None, (0, 0)))
        try:
            engine = FusedEngine(lanes)
        except BaseException as exc:
            for lane in lanes:
                if isinstance(exc, KeyboardInterrupt):  # as a Ctrl-C before the first epoch
                    lane.summary["status"] = "interrupted"
                else:
                    lane.fail(exc)
                lane.close()
            raise
        runner.run_lanes(lanes, engine, stop)
    return [lane.result for lane in lanes]


class FusedEngine:
    """The lanes' models stacked along a first dimension of size len(lanes)."""

    def __init__(self, lanes: list[runner.Lane], device: torch.device | None = None):
        first = lanes[0].experiment
        self.lanes = list(lanes)
        self.device = device or first.device
        self.task, self.batch_size = first.dataset.task, first.config.data.batch_size
        self.steps = first.steps_per_epoch
        self.loss_fn = runner.loss_function(self.task)
        self.model = copy.deepcopy(first.model).to(self.device)  # the architecture, called
        batch = first.dataset.x_train[: self.batch_size].to(self.device)
        self.dropouts = _lane_dropouts(self.model, batch)
        for lane in lanes:  # each run's dropout masks come from its own stream
            experiment = lane.experiment
            generator = torch.Generator(self.device).manual_seed(experiment.dropout_seed)
            experiment.dropout_generator = generator
        params, self.buffers = stack_module_state([lane.experiment.model for lane in lanes])
        self.names = list(params)
        self.params = [_leaf(params[name].to(self.device)) for name in self.names]
        self.optimizer = stacked_optim.StackedOptimizer(
            type(first.optimizer).__name__, self.params, stacked_optim.signature(first.optimizer)
        )
        data = [runner.to_device(lane.experiment.dataset, self.device) for lane in lanes]
        self.x_train, self.y_train, self.x_val, self.y_val = (
            _aligned_copy(torch.stack([getattr(d, name) for d in data]))
            for name in ("x_train", "y_train", "x_val", "y_val")
        )
        # (rows, alignment) -> whether batched gradients equal a run alone's (gradients())
        self.batched_exact: dict[tuple[int, int], bool] = {}
        self._lane_step = grad_and_value(self._loss, has_aux=True)
        self._step = vmap(self._lane_step)
        self._layers = _plain_layers(self.model)
        for lane in self.lanes:
            lane.sync = functools.partial(self.sync, lane)

    def _call(self, params, buffers, x):
        return functional_call(self.model, (params, buffers), (x,))

    def _loss(self, params, buffers, x, y):
        output = self._call(params, buffers, x)
        return self.loss_fn(output, y), output

    def begin(self) -> None:
        for lane in self.lanes:
            # The stand-in steps once: nothing changes (its parameters have no gradient), and
            # its scheduler knows the optimizer stepped before it.
            lane.experiment.optimizer.step()

    def keep(self, lanes: list[runner.Lane]) -> None:
        """Drop the lanes that ended (diverged, stopped early, done): the rest go on alone."""
        if len(lanes) == len(self.lanes):
            return
        index = torch.tensor([self.lanes.index(lane) for lane in lanes], device=self.device)
        self.params = [_leaf(p.index_select(0, index)) for p in self.params]  # fresh: aligned
        self.buffers = {name: b.index_select(0, index) for name, b in self.buffers.items()}
        self.optimizer.select(index)
        self.optimizer.set_params(self.params)
        for name in ("x_train", "y_train", "x_val", "y_val"):
            setattr(self, name, _aligned_copy(getattr(self, name).index_select(0, index)))
        self.lanes = list(lanes)
        self.batched_exact.clear()  # torch may pick other kernels for fewer runs: check again

    def gradients(self, x: torch.Tensor, y: torch.Tensor):
        """Each run's gradients, and its loss as a run alone computes it, on its own batch
        (x, y: [runs, batch, ...]). Batched where that gives a run alone's bits, else run by
        run: for some sizes (few rows, narrow layers) and alignments, batched products take
        other kernels, which round differently. The first batch of each size and alignment is
        trained both ways to know."""
        params = dict(zip(self.names, self.params, strict=True))
        buffers = {**self.buffers, **self._dropout_masks(x.shape[1])}
        shape = (x.shape[1], x.data_ptr() % ALIGNMENT)
        if self.batched_exact.get(shape, True):
            batched = self._batched(params, buffers, x, y)
            if shape in self.batched_exact:
                return batched
        alone = self._run_by_run(params, buffers, x, y)
        if shape not in self.batched_exact:
            self.batched_exact[shape] = _same(batched, alone)
        return alone

    def _batched(self, params, buffers, x, y):
        if self._layers is None:
            grads, (_, outputs) = self._step(params, buffers, x, y)
            with torch.no_grad():
                return grads, self._losses(outputs, y)
        # Plain autograd through batched products, no vmap to dispatch through; each run's loss
        # reduced on its own rows, as a run alone reduces it (vmap's mean sums in another order)
        losses = self._losses(self._plain_forward(params, buffers, x), y)
        found = torch.autograd.grad(losses.sum(), self.params)
        return dict(zip(self.names, found, strict=True)), losses.detach()

    def _plain_forward(self, params, buffers, x: torch.Tensor) -> torch.Tensor:
        """The model over every run's batch at once (x: [runs, batch, ...]), layer by layer:
        linear layers as batched matrix products, the rest elementwise."""
        for name, layer in self._layers:
            if isinstance(layer, nn.Linear):
                weight = params[f"{name}.weight"].transpose(1, 2)
                bias = params.get(f"{name}.bias")
                x = (
                    torch.bmm(x, weight)
                    if bias is None
                    else torch.baddbmm(bias[:, None], x, weight)
                )
            elif isinstance(layer, nn.Flatten):
                x = x.flatten(2)
            elif isinstance(layer, _LaneDropout):
                x = x * buffers[f"{name}.mask"] if layer.training else x
            else:
                x = layer(x)
        return x

    def _run_by_run(self, params, buffers, x, y):
        ends = [
            self._lane_step(
                {name: p[k] for name, p in params.items()},
                {name: b[k] for name, b in buffers.items()},
                x[k],
                y[k],
            )
            for k in range(len(self.lanes))
        ]
        grads = {name: torch.stack([g[name] for g, _ in ends]) for name in self.names}
        return grads, torch.stack([loss for _, (loss, _) in ends])

    def _losses(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pairs = zip(outputs, y, strict=True)
        return torch.stack([self.loss_fn(output, target) for output, target in pairs])

    def _dropout_masks(self, rows: int) -> dict[str, torch.Tensor]:
        """This step's dropout masks, [runs, rows, ...] for each dropout layer, each run's drawn
        from its own generator, layer after layer, as F.dropout draws them on the CPU."""
        masks = {}
        generators = [lane.experiment.dropout_generator for lane in self.lanes]
        for name, p, shape in self.dropouts:
            masks[f"{name}.mask"] = torch.stack(
                [
                    torch.empty((rows, *shape), device=self.device)
                    .bernoulli_(1 - p, generator=generator)
                    .div_(1 - p)
                    for generator in generators
                ]
            )
        return masks

    def train_epoch(self, epoch: int, stop) -> list[tuple[torch.Tensor, list[float]]]:
        rows_per_run = self.x_train.shape[1]
        orders = torch.stack(
            [
                torch.randperm(rows_per_run, generator=lane.experiment.batch_generator)
                for lane in self.lanes
            ]
        )
        orders = _to_device(orders, self.device)
        rows = torch.arange(len(self.lanes), device=self.device)[:, None]
        x_epoch = _aligned_copy(self.x_train[rows, orders])
        y_epoch = _aligned_copy(self.y_train[rows, orders])
        hyper, step_lrs = self._schedules_ahead()
        loss_sum = torch.zeros(len(self.lanes), device=self.device)
        size = self.batch_size
        self.model.train()
        for index in range(self.steps):
            x = x_epoch[:, index * size : (index + 1) * size]
            y = y_epoch[:, index * size : (index + 1) * size]
            grads, losses = self.gradients(x, y)
            step = {key: values[index] for key, values in hyper.items()}
            with torch.no_grad():
                self.optimizer.step([grads[name] for name in self.names], step)
            loss_sum += losses.detach() * x.shape[1]
            if stop.requested:
                break
        return [(loss_sum[k], lrs) for k, lrs in enumerate(step_lrs)]

    def _schedules_ahead(self) -> tuple[dict[str, torch.Tensor], list[list[float]]]:
        """Step every run's schedule through the epoch, reading each step's numbers from its
        optimizer before the step, as a run alone reads them: {key: [steps, runs]}."""
        table: list[list[dict[str, float]]] = []
        for _ in range(self.steps):
            table.append(
                [stacked_optim.hyperparameters(lane.experiment.optimizer) for lane in self.lanes]
            )
            for lane in self.lanes:
                lane.experiment.schedule.after_optimizer_step()
        keys = table[0][0]
        hyper = {}
        for key in keys:
            values = torch.tensor(
                [[row[key] for row in step] for step in table], dtype=torch.float64
            )
            hyper[key] = _to_device(values, self.device)
        step_lrs = [[step[k]["lr"] for step in table] for k in range(len(self.lanes))]
        return hyper, step_lrs

    @torch.no_grad()
    def evaluate(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each run's validation loss and correct count, run by run, as a run alone computes
        them: once an epoch, they cost little, and plateau and early stopping read them."""
        self.model.eval()
        evaluated = []
        for k in range(len(self.lanes)):
            params = {name: p[k] for name, p in zip(self.names, self.params, strict=True)}
            buffers = {name: b[k] for name, b in self.buffers.items()}
            forward = functools.partial(self._call, params, buffers)
            evaluated.append(
                runner.evaluate_split(forward, self.x_val[k], self.y_val[k], self.task)
            )
        return evaluated

    @torch.no_grad()
    def sync(self, lane: runner.Lane) -> None:
        """Put the lane's stacked weights and optimizer state into its own model and torch
        optimizer, where a checkpoint and the test evaluation read them."""
        k = self.lanes.index(lane)
        optimizer = lane.experiment.optimizer
        own = list(lane.experiment.model.parameters())
        for param, stacked in zip(own, self.params, strict=True):
            param.copy_(stacked[k])
        for param, state in zip(own, self.optimizer.state_of(k), strict=True):
            optimizer.state[param] = state


# Layers that act on each element alone: the same on [runs, batch, ...] as on [batch, ...]
ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.Sigmoid, nn.LeakyReLU, nn.Identity)


def _plain_layers(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """A Sequential of linear, flatten, elementwise and dropout layers (the built-in linear and
    mlp models), as (name, layer); None for any other model, which trains through vmap."""
    if type(model) is not nn.Sequential:
        return None
    layers = list(model.named_children())
    for _, layer in layers:
        flat = isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) == (1, -1)
        if not (flat or type(layer) in (nn.Linear, _LaneDropout, *ELEMENTWISE)):
            return None
    return layers


def _aligned_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of a [runs, ...] tensor with each run's block starting at a multiple of ALIGNMENT
    bytes, as a run alone's tensor does: a matrix product of few rows rounds otherwise at
    another alignment."""
    copy = _aligned_empty(tuple(tensor.shape), tensor.dtype, tensor.device)
    return copy.copy_(tensor)


def _aligned_empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
    """An empty [runs, ...] tensor whose runs' blocks each start at a multiple of ALIGNMENT
    bytes from its (aligned) start: the rows of each block are padded to that length."""
    runs, inner = shape[0], shape[1:]
    size = math.prod(inner)
    per_line = max(1, ALIGNMENT // torch.empty((), dtype=dtype).element_size())
    stride = -(-size // per_line) * per_line
    storage = torch.empty((runs, stride), dtype=dtype, device=device)
    return storage[:, :size].view(runs, *inner)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor copied to the device without waiting: from pinned memory on CUDA."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _leaf(tensor: torch.Tensor) -> torch.Tensor:
    """A stacked parameter: a leaf that autograd differentiates and the update changes in place."""
    return tensor.detach().requires_grad_(True)


def _same(one: tuple, other: tuple) -> bool:
    """Whether two (gradients, losses) are bitwise equal."""
    grads, losses = one
    other_grads, other_losses = other
    return torch.equal(losses, other_losses) and all(
        torch.equal(grads[name], other_grads[name]) for name in grads
    )


class _LaneDropout(nn.Module):
    """nn.Dropout whose mask is given, as a buffer, at each step: under vmap each run's mask
    comes in from its own stream."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.register_buffer("mask", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask if self.training else x


def _lane_dropouts(model: nn.Module, batch: torch.Tensor) -> list[tuple[str, float, tuple]]:
    """Replace the model's active nn.Dropout layers with _LaneDropout; returns each one's name,
    p and input shape (one sample's), in the order a forward pass reaches them."""
    found: list[tuple[str, float, tuple]] = []

    def record(name):
        def hook(module, inputs):
            found.append((name, module.p, tuple(inputs[0].shape[1:])))

        return hook

    dropouts = {
        name: module
        for name, module in model.named_modules()
        if type(module) is nn.Dropout and module.p > 0
    }
    handles = [module.register_forward_pre_hook(record(name)) for name, module in dropouts.items()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    if len({name for name, _, _ in found}) < len(found):
        raise ValueError("an nn.Dropout layer runs more than once in a forward pass")
    for name, module in dropouts.items():
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, _LaneDropout(module.p))
    return found


class _StandIn:
    """A lane for rehearse(): an experiment and nothing to write."""

    def __init__(self, experiment: runner.Experiment):
        self.experiment = experiment
        self.sync: Any = None
