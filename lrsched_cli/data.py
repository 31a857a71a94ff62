"""Datasets by name: synthetic, scikit-learn's shipped ones, CSV files, MNIST-family images and
the user's own `package.module:factory`; split and scaled."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lrsched_cli.config import ConfigError, DataConfig, excerpt
from lrsched_cli.factories import bind_factory_options, import_factory
from lrsched_cli.image_data import DEFAULT_ROOT, load_images
from lrsched_cli.registry import bind_options, lookup_name

CLASSIFICATION, REGRESSION = "classification", "regression"


@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[..., tuple[np.ndarray, np.ndarray]]
    task: str | None  # None: the config says (csv)
    description: str
    standardize: str = "feature"  # data.standardize's default: feature | channel | none


@dataclass(frozen=True)
class Dataset:
    """Standardized train, validation and test tensors, on the CPU until the runner moves the
    train and validation ones; the test split (empty with `test_fraction: 0`) stays apart, for
    the one evaluation of the final weights."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    task: str
    n_outputs: int  # classes for classification, 1 for regression
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


DATASETS: dict[str, DatasetSpec] = {}
# DataConfig keys that say how to split, scale and batch, not what to load
SPLIT_KEYS = {"name", "batch_size", "val_fraction", "test_fraction", "standardize"}


def register_dataset(name: str, task: str | None, description: str, standardize: str = "feature"):
    """Add a loader `(rng, **options) -> (features, targets)` under `name`."""

    def decorate(load):
        DATASETS[name] = DatasetSpec(load, task, description, standardize)
        return load

    return decorate


def resolve_data(cfg: DataConfig) -> DataConfig:
    """`cfg` with the dataset's name checked and its options' defaults filled in; a factory's
    options are checked against its signature, as a model factory's are."""
    name = cfg.name if ":" in cfg.name else lookup_name(cfg.name, DATASETS, "dataset", "data.name")
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise ConfigError(
            f"data.test_fraction: {cfg.test_fraction} held out for test and {cfg.val_fraction} "
            "for validation leave nothing to train on; their sum must be below 1",
            "data.test_fraction",
        )
    given = cfg.model_dump(exclude_none=True, exclude=SPLIT_KEYS)
    if ":" in name:
        factory = import_factory(name, "data.name")
        options = bind_factory_options(factory, given, "data", name, skip=1)
        standardize = cfg.standardize or "feature"
    else:
        options = bind_options(DATASETS[name].load, given, "data", f"dataset {name!r}", skip=1)
        standardize = cfg.standardize or DATASETS[name].standardize
    resolved = {**cfg.model_dump(), "name": name, **options, "standardize": standardize}
    return DataConfig.model_validate(resolved)


def build_dataset(
    cfg: DataConfig, data_seed: int, split_seed: int, test_seed: int | None = None
) -> Dataset:
    """Load a resolved `cfg`, split it (test rows with `test_seed`, then validation rows with
    `split_seed`) and standardize with train statistics."""
    features, targets, task = load_data(cfg, data_seed)
    train, val, test = split_rows(len(features), cfg, split_seed, test_seed)
    x_train, x_val, x_test = _scale(cfg.standardize, features[train], features[val], features[test])
    if task == CLASSIFICATION:
        classes, labels = np.unique(targets, return_inverse=True)
        y = torch.as_tensor(labels.reshape(-1), dtype=torch.long)
        y_train, y_val, y_test, n_outputs = y[train], y[val], y[test], len(classes)
    else:
        column = targets.reshape(-1, 1)
        y_train, y_val, y_test = _standardize(column[train], column[val], column[test])
        n_outputs = 1
    if not len(test):
        x_test = y_test = None
    return Dataset(x_train, y_train, x_val, y_val, task, n_outputs, x_test, y_test)


def split_rows(
    n: int, cfg: DataConfig, split_seed: int, test_seed: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of the train, validation and test splits; every split gets at least one row.

    The test rows are drawn first, from a stream of their own, and the validation rows then
    from the rest with the split stream, as they were before there was a test split: with
    `test_fraction: 0` the train and validation rows are those of earlier versions. Both
    fractions are shares of all `n` rows. A given seed gives every config of the same data the
    same three splits, so paired runs stay paired.
    """
    n_test = max(1, round(n * cfg.test_fraction)) if cfg.test_fraction > 0 else 0
    n_val = max(1, round(n * cfg.val_fraction))
    if n - n_test - n_val < 1:
        key = "data.path" if cfg.name == "csv" else "data.n_samples"
        where = f"{cfg.path} has" if cfg.name == "csv" else f"dataset {cfg.name!r} gives"
        test = f", {n_test} to test" if n_test else ""
        raise ConfigError(
            f"{key}: {where} {n} sample(s); a run needs at least {n_val + n_test + 1}: "
            f"{n_val} to validate{test} and 1 to train on",
            key,
        )
    rows = np.arange(n)
    if n_test:
        if test_seed is None:
            raise ValueError("a test split needs its own seed (test_seed)")
        test = np.sort(np.random.default_rng(test_seed).permutation(n)[:n_test])
        rows = np.setdiff1d(rows, test)
    else:
        test = rows[:0]
    order = rows[np.random.default_rng(split_seed).permutation(len(rows))]
    return order[n_val:], order[:n_val], test


def load_data(cfg: DataConfig, data_seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The features (float32), targets and task of a resolved `cfg`: a registered dataset's,
    or what its factory returned, once checked."""
    options = cfg.model_dump(exclude_none=True, exclude=SPLIT_KEYS)
    if ":" in cfg.name:
        factory = import_factory(cfg.name, "data.name")
        return _check_factory_data(factory(data_seed, **options), cfg.name)
    spec = DATASETS[cfg.name]
    features, targets = spec.load(np.random.default_rng(data_seed), **options)
    return features.astype(np.float32, copy=False), targets, spec.task or options["task"]


def _scale(mode: str | None, train: np.ndarray, *others: np.ndarray) -> tuple[torch.Tensor, ...]:
    """The splits as tensors, standardized as `data.standardize` says, with train statistics."""
    if mode == "none":
        return tuple(torch.from_numpy(np.ascontiguousarray(split)) for split in (train, *others))
    if mode == "channel":
        if train.ndim < 3:
            raise ConfigError(
                f"data.standardize: channel needs images, each sample (channels, height, "
                f"width); this data's samples have shape {list(train.shape[1:])}: use feature",
                "data.standardize",
            )
        # As torchvision's Normalize(mean, std) does: one mean and std per channel.
        return _standardize(train, *others, axis=(0, *range(2, train.ndim)))
    return _standardize(train, *others)


def _standardize(
    train: np.ndarray, *others: np.ndarray, axis: int | tuple[int, ...] = 0
) -> tuple[torch.Tensor, ...]:
    """Scale each feature (or what `axis` leaves: a channel) by train mean and std; constant
    features (digit corners) stay 0."""
    train = train.astype(np.float32)
    mean, std = train.mean(axis=axis, keepdims=True), train.std(axis=axis, keepdims=True)
    std[std < 1e-8] = 1.0
    return tuple(
        torch.from_numpy((split.astype(np.float32) - mean) / std) for split in (train, *others)
    )


# The synthetic sets are a few lines of numpy each: `import sklearn` alone takes 1.4 s here,
# longer than a whole toy run, so scikit-learn is imported only for its shipped datasets.
@register_dataset("moons", CLASSIFICATION, "two interleaving half circles, 2 features")
def moons(rng, n_samples: int = 1000, noise: float = 0.2):
    labels = np.arange(n_samples) % 2
    angle = rng.uniform(0, math.pi, n_samples)
    points = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    points[labels == 1] = [1, 0.5] - points[labels == 1]
    return points + rng.normal(0, noise, points.shape), labels


@register_dataset("circles", CLASSIFICATION, "a circle inside a circle, 2 features")
def circles(rng, n_samples: int = 1000, noise: float = 0.1):
    labels = np.arange(n_samples) % 2
    angle = rng.uniform(0, 2 * math.pi, n_samples)
    radius = np.where(labels == 1, 0.5, 1.0)[:, None]
    points = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return points + rng.normal(0, noise, points.shape), labels


@register_dataset("blobs", CLASSIFICATION, "three Gaussian clusters, 2 features")
def blobs(rng, n_samples: int = 1000, noise: float = 1.0):
    centers = rng.uniform(-5, 5, (3, 2))
    labels = np.arange(n_samples) % 3
    return centers[labels] + rng.normal(0, noise, (n_samples, 2)), labels


@register_dataset("spirals", CLASSIFICATION, "two interleaved spirals, 2 features")
def spirals(rng, n_samples: int = 1000, noise: float = 0.2):
    labels = rng.integers(0, 2, n_samples)
    radius = rng.uniform(0.1, 1.0, n_samples)
    angle = 3 * math.pi * radius + math.pi * labels
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return points + rng.normal(0, noise * 0.1, points.shape), labels


@register_dataset(
    "xor", CLASSIFICATION, "label = sign(x1 * x2) on noisy uniform points, 2 features"
)
def xor(rng, n_samples: int = 1000, noise: float = 0.1):
    points = rng.uniform(-1, 1, (n_samples, 2))
    labels = (points[:, 0] * points[:, 1] > 0).astype(np.int64)
    return points + rng.normal(0, noise, points.shape), labels


@register_dataset("sine", REGRESSION, "y = sin(x) + noise on [-pi, pi], 1 feature")
def sine(rng, n_samples: int = 1000, noise: float = 0.1):
    x = rng.uniform(-math.pi, math.pi, (n_samples, 1))
    return x, np.sin(x[:, 0]) + rng.normal(0, noise, n_samples)


@register_dataset("linear", REGRESSION, "y = x @ w + b + noise, 5 features")
def linear(rng, n_samples: int = 1000, noise: float = 0.1):
    x = rng.normal(0, 1, (n_samples, 5))
    weights, bias = rng.normal(0, 1, 5), rng.normal()
    return x, x @ weights + bias + rng.normal(0, noise, n_samples)


def _shipped(loader_name: str, image_shape: tuple[int, ...] | None = None):
    """A scikit-learn dataset that ships inside the package: nothing is downloaded."""

    def load(rng):
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        features = bunch.data if image_shape is None else bunch.data.reshape(-1, *image_shape)
        return features, bunch.target

    return load


register_dataset("digits", CLASSIFICATION, "8x8 images of digits, 10 classes, 1,797 samples")(
    _shipped("load_digits", image_shape=(1, 8, 8))
)
register_dataset("iris", CLASSIFICATION, "iris flowers, 4 features, 3 classes, 150 samples")(
    _shipped("load_iris")
)
register_dataset("wine", CLASSIFICATION, "wine cultivars, 13 features, 3 classes, 178 samples")(
    _shipped("load_wine")
)
register_dataset("breast_cancer", CLASSIFICATION, "tumours, 30 features, 2 classes, 569 samples")(
    _shipped("load_breast_cancer")
)
register_dataset("diabetes", REGRESSION, "disease progression, 10 features, 442 samples")(
    _shipped("load_diabetes")
)


@register_dataset("csv", None, "a CSV file of numbers: data.path, data.target, data.task")
def csv_file(rng, path: str, target: str, task: str):
    """Numeric feature columns; the target column may hold class labels of any text."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            rows = [(reader.line_num, row) for row in reader if row]
    except OSError as exc:
        raise ConfigError(f"data.path: cannot read {path}: {exc.strerror}", "data.path") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(
            f"data.path: {path} is not a UTF-8 CSV file: {exc}", "data.path"
        ) from None
    if not rows:
        raise ConfigError(f"data.path: {path} has no data rows", "data.path")
    if target not in header:
        # Only a header of short names is listed: the first line of a file that is no CSV
        # (`path: /etc/shadow`) must not be echoed.
        names = [repr(c) for c in header if c.isprintable() and len(c) <= 20 and ":" not in c]
        listed = f"it has: {', '.join(names[:10])}" if names else "its first line names none"
        raise ConfigError(
            f"data.target: {path} has no column {target!r}; {listed}"
            + (f" (and {len(header) - 10} more)" if names[10:] else ""),
            "data.target",
        )
    features, targets = [], []
    for line, row in rows:
        if len(row) != len(header):
            raise ConfigError(
                f"data.path: {path}, line {line} has {len(row)} of the {len(header)} columns",
                "data.path",
            )
        values = dict(zip(header, row, strict=True))
        features.append([_number(values[c], c, line, path) for c in header if c != target])
        label = values[target]
        targets.append(label if task == CLASSIFICATION else _number(label, target, line, path))
    return np.array(features, dtype=np.float64), np.array(targets)


def _number(cell: str, column: str, line: int, path: str) -> float:
    """A CSV cell as a finite float, or an error that names its column and line."""
    try:
        value = float(cell)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        what = "is empty" if not cell.strip() else f"holds {_excerpt(cell)}, not a finite number"
        raise ConfigError(
            f"data.path: {path}, line {line}, column {_excerpt(column)} {what}; every column "
            "but the target must hold numbers",
            "data.path",
        )
    return value


def _excerpt(text: str, limit: int = 20) -> str:
    """`text` quoted, cut to `limit` characters and with unprintable characters escaped: a
    message must never echo a whole line of the user's file."""
    short = text if len(text) <= limit else text[:limit] + "..."
    return repr(short) if short.isprintable() else ascii(short)


def _images(name: str):
    """A torchvision image dataset under `root`: see image_data."""

    def load(
        rng, root: str = str(DEFAULT_ROOT), n_samples: int | None = None, download: bool = True
    ):
        return load_images(name, root, n_samples, download, rng)

    return load


register_dataset(
    "mnist", CLASSIFICATION, "28x28 handwritten digits, 10 classes, 60,000 images", "channel"
)(_images("mnist"))
register_dataset(
    "fashion_mnist", CLASSIFICATION, "28x28 clothing images, 10 classes, 60,000 images", "channel"
)(_images("fashion_mnist"))
register_dataset(
    "cifar10", CLASSIFICATION, "32x32 colour images, 10 classes, 50,000 images", "channel"
)(_images("cifar10"))


def _check_factory_data(result, target: str) -> tuple[np.ndarray, np.ndarray, str]:
    """A dataset factory's `(x, y, task)` as float32 features, targets and task, or a config
    error that says what is wrong with it, before any training."""
    expected = (
        "a dataset factory returns (x, y, task): x an array or tensor of N samples (N, ...), "
        "y of their N targets, task 'classification' or 'regression'"
    )
    if not isinstance(result, tuple | list) or len(result) != 3:
        got = f"a {type(result).__name__}" + (
            f" of {len(result)}" if isinstance(result, tuple | list) else ""
        )
        raise ConfigError(f"data.name: {target} returned {got}; {expected}", "data.name")
    x, y, task = result
    if task not in (CLASSIFICATION, REGRESSION):
        raise ConfigError(
            f"data.name: {target} returned the task {excerpt(task)}; {expected}", "data.name"
        )
    x, y = _factory_array(x, "x", target), _factory_array(y, "y", target)
    problem = None
    if x.ndim < 2:
        problem = (
            f"x has shape {list(x.shape)}: one row per sample is (N, features), e.g. x[:, None]"
        )
    elif x.dtype.kind not in "biuf":
        problem = f"x holds {x.dtype}, not numbers"
    elif y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
        problem = f"y has shape {list(y.shape)}; it needs one target per sample, (N,)"
    elif len(y) != len(x):
        problem = f"x has {len(x)} samples but y has {len(y)} targets"
    elif task == CLASSIFICATION and y.dtype.kind not in "biuUS":
        problem = f"y holds {y.dtype}: class labels are integers or strings (or use 'regression')"
    elif task == REGRESSION and y.dtype.kind not in "biuf":
        problem = f"y holds {y.dtype}, not numbers, for regression"
    if problem is None:
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            problem = "x holds NaN or infinite values (or numbers beyond float32)"
        elif task == REGRESSION and not np.isfinite(y.astype(np.float64)).all():
            problem = "y holds NaN or infinite values"
    if problem is not None:
        raise ConfigError(
            f"data.name: {target} returned data lrsched cannot use: {problem}", "data.name"
        )
    return x, y.reshape(-1), task


def _factory_array(value, name: str, target: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise ConfigError(
        f"data.name: {target} returned {name} as a {type(value).__name__}; it must be a numpy "
        "array or a torch tensor",
        "data.name",
    )
