"""Datasets by name: synthetic, scikit-learn's shipped ones, and CSV files; split and scaled."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lrsched_cli.config import ConfigError, DataConfig
from lrsched_cli.registry import bind_options, lookup_name

CLASSIFICATION, REGRESSION = "classification", "regression"


@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[..., tuple[np.ndarray, np.ndarray]]
    task: str | None  # None: the config says (csv)
    description: str


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
# DataConfig keys that say how to split and batch, not what to load
SPLIT_KEYS = {"name", "batch_size", "val_fraction", "test_fraction"}


def register_dataset(name: str, task: str | None, description: str):
    """Add a loader `(rng, **options) -> (features, targets)` under `name`."""

    def decorate(load):
        DATASETS[name] = DatasetSpec(load, task, description)
        return load

    return decorate


def resolve_data(cfg: DataConfig) -> DataConfig:
    """`cfg` with the dataset's name checked and its options' defaults filled in."""
    name = lookup_name(cfg.name, DATASETS, "dataset", "data.name")
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise ConfigError(
            f"data.test_fraction: {cfg.test_fraction} held out for test and {cfg.val_fraction} "
            "for validation leave nothing to train on; their sum must be below 1",
            "data.test_fraction",
        )
    given = cfg.model_dump(exclude_none=True, exclude=SPLIT_KEYS)
    options = bind_options(DATASETS[name].load, given, "data", f"dataset {name!r}", skip=1)
    return DataConfig.model_validate({**cfg.model_dump(), "name": name, **options})


def build_dataset(
    cfg: DataConfig, data_seed: int, split_seed: int, test_seed: int | None = None
) -> Dataset:
    """Load a resolved `cfg`, split it (test rows with `test_seed`, then validation rows with
    `split_seed`) and standardize with train statistics."""
    spec = DATASETS[cfg.name]
    options = cfg.model_dump(exclude_none=True, exclude=SPLIT_KEYS)
    task = spec.task or options["task"]
    features, targets = spec.load(np.random.default_rng(data_seed), **options)
    features = features.astype(np.float32)
    train, val, test = split_rows(len(features), cfg, split_seed, test_seed)
    x_train, x_val, x_test = _standardize(features[train], features[val], features[test])
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


def _standardize(train: np.ndarray, *others: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Scale each feature by train mean and std; constant features (digit corners) stay 0."""
    train = train.astype(np.float32)
    mean, std = train.mean(axis=0), train.std(axis=0)
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
