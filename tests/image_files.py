"""Tiny MNIST-family and CIFAR-10 files in their real formats, for tests: IDX files with their
magic numbers, and CIFAR-10's pickled batches of b"data" and b"labels"."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

IDX_IMAGES, IDX_LABELS = 2051, 2049  # 0x00000803 and 0x00000801: unsigned bytes, 3 and 1 dims
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def idx_bytes(array: np.ndarray) -> bytes:
    """`array` (uint8) as an IDX file: magic (0, 0, 0x08, ndim), big-endian sizes, the bytes."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def mnist_arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` 28x28 images whose brightest row is their label: a pattern a model can learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    images[np.arange(n), 2 + 2 * labels, :] = 255
    return images, labels.astype(np.uint8)


def write_mnist(root: Path, n: int, name: str = "mnist", packed: bool = False) -> Path:
    """MNIST's (or Fashion-MNIST's) training files in torchvision's layout under `root`, as
    torchvision leaves them (`packed`: only the .gz files)."""
    images, labels = mnist_arrays(n)
    raw = root / FOLDERS[name] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        if packed:
            (raw / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / stem).write_bytes(data)
    return raw


def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = [int(label) for label in np.arange(n) % 10]
    data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
    return {b"batch_label": b"training batch", b"labels": labels, b"data": data}


def cifar_bytes(n: int, seed: int) -> bytes:
    # Protocol 2, as the published batches (Python 2's cPickle) are.
    return pickle.dumps(cifar_batch(n, seed), protocol=2)


def write_cifar(root: Path, per_batch: int) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(cifar_bytes(per_batch, i))
    (folder / "test_batch").write_bytes(cifar_bytes(per_batch, 6))
    return folder


def cifar_archive(per_batch: int) -> bytes:
    """cifar-10-python.tar.gz as published: the folder cifar-10-batches-py and its batches."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
            data = cifar_bytes(per_batch, i)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_image_set(root: Path, name: str, n: int) -> None:
    """`name`'s files (mnist, fashion_mnist or cifar10) with at least `n` images."""
    if name == "cifar10":
        write_cifar(root, -(-n // 5))
    else:
        write_mnist(root, n, name)
