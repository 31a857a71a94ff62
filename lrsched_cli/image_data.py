"""MNIST, Fashion-MNIST and CIFAR-10 in torchvision's folders under a root, read with numpy;
missing files are downloaded and checked against their published MD5. Never imports torch.

torchvision itself is not used: its wheels are built against one torch build each, and the
one on the registry does not import beside the CPU build of torch."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import math
import os
import pickle
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrsched_cli.errors import ConfigError

DEFAULT_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lrsched" / "data"
# Replaces every dataset's download address (the file's name is appended): a local mirror.
MIRROR_ENV = "LRSCHED_DATA_MIRROR"
DOWNLOAD_TIMEOUT = 60  # seconds without a byte before a download is given up
# The largest IDX payload read: CIFAR-10's 50,000 images are 150 MB; a header claiming more
# than this is damage, and is refused before anything is allocated or decompressed.
MAX_IDX_BYTES = 1 << 30


@dataclass(frozen=True)
class Source:
    """One dataset's files as torchvision lays them out, and where they come from."""

    title: str  # as its authors write it, for messages
    folder: str  # under the root, as torchvision names it
    needed: tuple[str, ...]  # the files read, under `folder`
    downloads: tuple[tuple[str, str], ...]  # (file name, MD5) as torchvision lists them
    mirrors: tuple[str, ...]  # base addresses, tried in order; the file name is appended
    archive_folder: str | None = None  # downloads are a tar.gz holding this folder


SOURCES = {
    "mnist": Source(
        "MNIST",
        "MNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        (
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    ),
    "fashion_mnist": Source(
        "Fashion-MNIST",
        "FashionMNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "cifar10": Source(
        "CIFAR-10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        ("https://www.cs.toronto.edu/~kriz/",),
        archive_folder="cifar-10-batches-py",
    ),
}


def load_images(
    name: str, root: str, n_samples: int | None, download: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The training images of dataset `name` as float32 (N, C, H, W) in [0, 1], as torchvision's
    ToTensor scales them, and their labels; `n_samples` of them, drawn with `rng`, when given.

    The official test images are never read: lrsched holds out its own validation and test
    splits from the training images."""
    source = SOURCES[name]
    folder = _root(root) / source.folder
    files = find_files(source, folder, download)
    if name == "cifar10":
        images, labels = _read_cifar(files)
    else:
        images, labels = _read_idx(files[0], 3), _read_idx(files[1], 1)
        images = images.reshape(len(images), 1, *images.shape[1:])
    if len(images) != len(labels):
        raise ConfigError(
            f"data.root: {folder} holds {len(images):,} images but {len(labels):,} labels; "
            "the files do not belong together",
            "data.root",
        )
    chosen = _subset(len(images), n_samples, rng, source.title)
    pixels = np.asarray(images[chosen], dtype=np.float32)
    pixels /= 255.0
    return pixels, np.asarray(labels[chosen], dtype=np.int64)


def find_files(source: Source, folder: Path, download: bool) -> list[Path]:
    """The files `source.needed` in `folder`, each as it is or gzipped, as torchvision keeps
    them; missing ones are downloaded first, unless `download` is false."""
    found = [_present(folder / name) for name in source.needed]
    if all(found):
        return found
    missing = [name for name, path in zip(source.needed, found, strict=True) if path is None]
    if not download:
        raise ConfigError(_where_to_put(source, folder, missing, None), "data.root")
    with _download_lock(folder.parent if source.archive_folder else folder):
        # Another process may have fetched them while this one waited for the lock.
        if not all(_present(folder / name) for name in missing):
            _fetch(source, folder, missing)
    return [_present(folder / name) for name in source.needed]


def _root(root: str) -> Path:
    path = Path(os.path.expanduser(root))
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"data.root: {path} is a file; data.root must be a folder, the one that holds "
            "torchvision's MNIST/, FashionMNIST/ or cifar-10-batches-py/ (it is made if missing)",
            "data.root",
        )
    return path


def _present(path: Path) -> Path | None:
    if path.is_file():
        return path
    packed = path.with_name(path.name + ".gz")
    return packed if packed.is_file() else None


def _fetch(source: Source, folder: Path, missing: list[str]) -> None:
    """Download `source`'s files into place, each checked against its MD5 before it is used."""
    mirror = os.environ.get(MIRROR_ENV)
    mirrors = (mirror if mirror.endswith("/") else mirror + "/",) if mirror else source.mirrors
    target = folder.parent if source.archive_folder else folder
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"data.root: cannot make {target} to download {source.title} into: {exc.strerror}",
            "data.root",
        ) from None
    for file_name, md5 in source.downloads:
        wanted = file_name.removesuffix(".gz")
        if not source.archive_folder and wanted not in missing:
            continue
        path = target / file_name
        problems = []
        for base in mirrors:
            try:
                _download(base + file_name, path, md5)
                break
            except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
                problems.append(f"{base}{file_name}: {_reason(exc)}")
        else:
            raise ConfigError(
                _where_to_put(source, folder, missing, "; ".join(problems)), "data.root"
            )
        if source.archive_folder:
            _extract(path, source.archive_folder, target)
            path.unlink()
        else:
            _gunzip(path, folder / wanted)


def _download(url: str, path: Path, md5: str) -> None:
    """`url` into `path`, whole and matching `md5`, or nothing at all (ValueError, OSError)."""
    print(f"downloading {url}", file=sys.stderr)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response,
            partial.open("wb") as out,
        ):
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ValueError(
                f"the file's MD5 is {digest.hexdigest()}, not the published {md5}: "
                "damaged or not the dataset; it was not kept"
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc)


def _where_to_put(source: Source, folder: Path, missing: list[str], problem: str | None) -> str:
    """What is missing, why it was not downloaded, and where to put it by hand."""
    names = [f"{name}.gz" for name in missing] if not source.archive_folder else missing
    sources = " or ".join(source.mirrors)
    if source.archive_folder:
        archive = source.downloads[0][0]
        by_hand = f"unpack {archive} (from {sources}) in {folder.parent}, which gives {folder}"
    else:
        by_hand = f"put {' and '.join(names)} (from {sources}) in {folder}"
    why = f"downloading failed ({problem})" if problem else "data.download is false"
    return (
        f"data.root: {source.title} is missing {', '.join(missing)} in {folder}, and {why}. "
        f"Offline, {by_hand}; torchvision's own download of it works as it is: point data.root "
        "at the root you gave torchvision"
    )


@contextmanager
def _download_lock(folder: Path) -> Iterator[None]:
    """One download at a time into `folder`: runs of a comparison may start together."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = (folder / ".lrsched-download.lock").open("a")
    except OSError as exc:
        raise ConfigError(
            f"data.root: cannot download into {folder}: {exc.strerror}", "data.root"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()


def _gunzip(packed: Path, path: Path) -> None:
    """Keep the unpacked copy beside the .gz, as torchvision does, so that both find it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with gzip.open(packed, "rb") as source, partial.open("wb") as out:
            shutil.copyfileobj(source, out)
        os.replace(partial, path)
    except (OSError, EOFError) as exc:
        raise ConfigError(f"data.root: cannot unpack {packed}: {exc}", "data.root") from None
    finally:
        partial.unlink(missing_ok=True)


def _extract(archive: Path, folder: str, target: Path) -> None:
    """The plain files of `folder` inside the checked `archive`, by base name: no member
    writes anywhere but `target / folder`."""
    out = target / folder
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                inside = member.name.startswith(f"{folder}/") and member.name.count("/") == 1
                if not (inside and member.isfile()):
                    continue
                partial = out / f".{os.path.basename(member.name)}.part"
                with tar.extractfile(member) as source, partial.open("wb") as handle:
                    shutil.copyfileobj(source, handle)
                os.replace(partial, out / os.path.basename(member.name))
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise ConfigError(f"data.root: cannot unpack {archive}: {exc}", "data.root") from None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format: magic 0x0801 for labels, 0x0803 for
    images), as a read-only array; an unpacked file is mapped, not read, so a subset costs
    only its own pages."""
    try:
        with _open(path) as handle:
            header = handle.read(4 + 4 * ndim)
            if len(header) < 4 + 4 * ndim or header[:4] != bytes([0, 0, 0x08, ndim]):
                raise _not_idx(path, ndim)
            shape = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
            size = math.prod(shape)
            if size > MAX_IDX_BYTES:
                raise _not_idx(path, ndim)
            if path.suffix != ".gz":
                if path.stat().st_size != len(header) + size:
                    raise _not_idx(path, ndim)
                return np.memmap(path, np.uint8, "r", offset=len(header), shape=shape)
            payload = handle.read(size + 1)
    except (OSError, EOFError) as exc:
        raise ConfigError(f"data.root: cannot read {path}: {exc}", "data.root") from None
    if len(payload) != size:
        raise _not_idx(path, ndim)
    return np.frombuffer(payload, np.uint8).reshape(shape)


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _not_idx(path: Path, ndim: int) -> ConfigError:
    what = "images (magic 2051)" if ndim == 3 else "labels (magic 2049)"
    return ConfigError(
        f"data.root: {path} is not an IDX file of {what}, or it is cut short; delete it to "
        "download it again",
        "data.root",
    )


def _read_cifar(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's python batches: pickled dicts of `data` (N x 3072 bytes, the red, green and
    blue planes of 32 x 32 pixels) and `labels`."""
    images, labels = [], []
    for path in files:
        batch = _unpickle(path)
        data = batch.get(b"data", batch.get("data"))
        found = batch.get(b"labels", batch.get("labels"))
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32
            or not isinstance(found, list | np.ndarray)
        ):
            raise ConfigError(
                f"data.root: {path} is not a CIFAR-10 batch (a dict of data: N x 3072 bytes "
                "and labels); delete it to download it again",
                "data.root",
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(found, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a pickle can name any callable, and a file
    found under a folder is not trusted to be the one the checksum vouched for."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how protocol 2 writes bytes from Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a data batch never does")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = module.replace("numpy.core.", "numpy._core.", 1)  # numpy 2's name for it
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            # latin1 reads the byte strings of the original Python 2 pickles, as torchvision does.
            batch = _BatchUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"data.root: {path} is not a CIFAR-10 batch: {exc}", "data.root"
        ) from None
    if not isinstance(batch, dict):
        raise ConfigError(f"data.root: {path} is not a CIFAR-10 batch", "data.root")
    return batch


def _subset(total: int, n_samples: int | None, rng: np.random.Generator, title: str) -> np.ndarray:
    """Row indices of a seeded subset, in file order so a mapped file is read forwards."""
    if n_samples is None:
        return np.arange(total)
    if n_samples > total:
        raise ConfigError(
            f"data.n_samples: {title}'s training set has {total:,} images; "
            f"n_samples {n_samples:,} asks for more",
            "data.n_samples",
        )
    return np.sort(rng.choice(total, n_samples, replace=False))
