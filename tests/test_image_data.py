"""MNIST, Fashion-MNIST and CIFAR-10: torchvision's layout read with numpy, downloads checked
against their MD5 (from a local HTTP server), and the messages for missing or bad files."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import pickle
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tiny, write_config
from image_files import (
    cifar_archive,
    cifar_batch,
    idx_bytes,
    mnist_arrays,
    write_cifar,
    write_mnist,
)
from lrsched_cli import image_data, runner
from lrsched_cli.cli import app
from lrsched_cli.config import ConfigError, validate
from lrsched_cli.image_data import SOURCES, Source, load_images

cli = CliRunner()


def image_config(root: Path, name: str = "mnist", **data) -> dict:
    return tiny(
        epochs=1,
        data={"name": name, "root": str(root), "batch_size": 16, **data},
        model={"name": "cnn", "channels": [4]},
        scheduler={"name": "none"},
    )


def load(name: str, root: Path, n_samples=None, download=False, seed=0):
    return load_images(name, str(root), n_samples, download, np.random.default_rng(seed))


@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "gz only"])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_read_as_torchvision_scales_them(tmp_path, name, packed):
    write_mnist(tmp_path, 30, name, packed=packed)
    images, labels = mnist_arrays(30)
    x, y = load(name, tmp_path)
    assert x.shape == (30, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0], images / np.float32(255))  # ToTensor: /255
    np.testing.assert_array_equal(y, labels)


def test_cifar_batches_are_read_as_channel_planes(tmp_path):
    write_cifar(tmp_path, 4)
    x, y = load("cifar10", tmp_path)
    assert x.shape == (20, 3, 32, 32)
    first = cifar_batch(4, 1)
    np.testing.assert_array_equal(x[:4], first[b"data"].reshape(4, 3, 32, 32) / np.float32(255))
    assert list(y[:4]) == first[b"labels"]


def test_cifar_batches_pickled_by_python_2_are_read(tmp_path):
    """The published batches are Python 2 pickles with str keys; latin1 reads them."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        batch = cifar_batch(2, i)
        text_keys = {"data": batch[b"data"], "labels": batch[b"labels"]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(text_keys, protocol=2))
    x, y = load("cifar10", tmp_path)
    assert x.shape == (10, 3, 32, 32) and list(y[:2]) == [0, 1]


def test_n_samples_takes_a_seeded_subset(tmp_path):
    write_mnist(tmp_path, 100)
    images, labels = mnist_arrays(100)
    x, y = load("mnist", tmp_path, n_samples=10, seed=3)
    again, _ = load("mnist", tmp_path, n_samples=10, seed=3)
    other, _ = load("mnist", tmp_path, n_samples=10, seed=4)
    np.testing.assert_array_equal(x, again)
    assert not np.array_equal(x, other)
    rows = [
        int(np.flatnonzero((images == np.rint(image[0] * 255)).all(axis=(1, 2)))[0]) for image in x
    ]
    assert len(set(rows)) == 10 and list(y) == list(labels[rows])
    with pytest.raises(ConfigError, match="training set has 100 images; n_samples 101") as caught:
        load("mnist", tmp_path, n_samples=101)
    assert caught.value.key == "data.n_samples"


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_cnn_trains_on_each_image_shape_standardized_per_channel(tmp_path, name):
    (write_cifar(tmp_path, 12) if name == "cifar10" else write_mnist(tmp_path, 60))
    experiment = runner.prepare(validate(image_config(tmp_path, name, download=False)))
    data = experiment.dataset
    channels = 3 if name == "cifar10" else 1
    assert data.input_shape == ((3, 32, 32) if name == "cifar10" else (1, 28, 28))
    assert experiment.config.data.standardize == "channel"
    per_channel = data.x_train.transpose(0, 1).reshape(channels, -1)
    assert per_channel.mean(1).abs().max() < 1e-4
    assert (per_channel.std(1, unbiased=False) - 1).abs().max() < 1e-3


def test_standardize_none_keeps_the_pixels_in_zero_to_one(tmp_path):
    write_mnist(tmp_path, 40)
    cfg = validate(image_config(tmp_path, standardize="none", download=False))
    data = runner.prepare(cfg).dataset
    assert data.x_train.min() >= 0 and data.x_train.max() == 1.0


def test_a_relative_root_is_the_config_folders(tmp_path, monkeypatch):
    write_mnist(tmp_path / "data", 40)
    config = write_config(tmp_path, image_config(Path("data"), download=False))
    monkeypatch.chdir(tmp_path.parent)
    result = cli.invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    saved = (Path(result.stdout.strip()) / "config.yaml").read_text()
    assert f"root: {tmp_path / 'data'}" in saved


class Mirror:
    """A local HTTP server standing in for the datasets' addresses."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                mirror.requests.append(self.path)
                body = mirror.files.get(self.path.rsplit("/", 1)[-1])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/datasets/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(monkeypatch):
    """Serves the given files, and makes them the published ones: their MD5s replace the
    real datasets' in SOURCES for the test."""
    servers = []

    def serve(name: str, files: dict[str, bytes]) -> Mirror:
        server = Mirror(files)
        servers.append(server)
        source = SOURCES[name]
        downloads = tuple(
            (file, hashlib.md5(files[file]).hexdigest()) for file, _ in source.downloads
        )
        monkeypatch.setitem(SOURCES, name, Source(**{**source.__dict__, "downloads": downloads}))
        monkeypatch.setenv(image_data.MIRROR_ENV, server.url)
        return server

    yield serve
    for server in servers:
        server.close()


def mnist_gz(n: int) -> dict[str, bytes]:
    images, labels = mnist_arrays(n)
    return {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(images)),
        "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(labels)),
    }


def test_missing_idx_files_are_downloaded_checked_and_kept_as_torchvision_keeps_them(
    tmp_path, mirror
):
    server = mirror("mnist", mnist_gz(20))
    x, y = load("mnist", tmp_path, download=True)
    assert x.shape == (20, 1, 28, 28) and list(y[:3]) == [0, 1, 2]
    raw = tmp_path / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".")) == [
        "train-images-idx3-ubyte",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte",
        "train-labels-idx1-ubyte.gz",
    ]
    assert server.requests == [
        "/datasets/train-images-idx3-ubyte.gz",
        "/datasets/train-labels-idx1-ubyte.gz",
    ]
    load("mnist", tmp_path, download=True)
    assert len(server.requests) == 2  # present now: nothing fetched again


def test_only_the_missing_file_is_downloaded(tmp_path, mirror):
    server = mirror("fashion_mnist", mnist_gz(20))
    raw = write_mnist(tmp_path, 20, "fashion_mnist")
    (raw / "train-labels-idx1-ubyte").unlink()
    load("fashion_mnist", tmp_path, download=True)
    assert server.requests == ["/datasets/train-labels-idx1-ubyte.gz"]


def test_a_download_that_fails_its_checksum_is_not_kept(tmp_path, mirror):
    files = mnist_gz(20)
    mirror("mnist", files)
    files["train-images-idx3-ubyte.gz"] = gzip.compress(b"tampered")
    with pytest.raises(ConfigError, match="MD5 is .*, not the published") as caught:
        load("mnist", tmp_path, download=True)
    assert caught.value.key == "data.root"
    raw = tmp_path / "MNIST" / "raw"
    assert not [p for p in raw.iterdir() if p.name.startswith("train-images")]
    assert not [p for p in raw.iterdir() if p.name.endswith(".part")]


def test_cifar_archive_is_downloaded_checked_and_unpacked(tmp_path, mirror):
    server = mirror("cifar10", {"cifar-10-python.tar.gz": cifar_archive(3)})
    x, y = load("cifar10", tmp_path, download=True)
    assert x.shape == (15, 3, 32, 32)
    folder = tmp_path / "cifar-10-batches-py"
    assert {p.name for p in folder.iterdir()} >= {f"data_batch_{i}" for i in range(1, 6)}
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()
    assert server.requests == ["/datasets/cifar-10-python.tar.gz"]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_offline_the_message_says_where_to_put_the_files_and_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv(image_data.MIRROR_ENV, closed_port_url())
    config = write_config(tmp_path, image_config(tmp_path / "data"))
    result = cli.invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert "downloading failed" in message and "Connection refused" in message
    assert "put train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz" in message
    assert f"in {raw}" in message and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_download_false_says_where_to_put_the_archive(tmp_path):
    with pytest.raises(ConfigError, match="data.download is false") as caught:
        load("cifar10", tmp_path, download=False)
    assert (
        f"unpack cifar-10-python.tar.gz (from https://www.cs.toronto.edu/~kriz/) in {tmp_path}"
        in str(caught.value)
    )


def test_a_root_that_is_a_file_exits_2(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    config = write_config(tmp_path, image_config(tmp_path / "data"))
    result = cli.invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert f"data.root: {tmp_path / 'data'} is a file" in " ".join(result.stderr.split())


def test_a_file_with_the_wrong_magic_number_is_named(tmp_path):
    raw = write_mnist(tmp_path, 10)
    images, _ = mnist_arrays(10)
    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(images)[:-1])  # cut short
    with pytest.raises(ConfigError, match="is not an IDX file of images .*cut short"):
        load("mnist", tmp_path)
    labels = idx_bytes(np.zeros(10, np.uint8))
    (raw / "train-images-idx3-ubyte").write_bytes(labels)  # labels where images belong
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte is not an IDX file of images"):
        load("mnist", tmp_path)


def test_a_pickle_that_names_a_callable_is_refused_unrun(tmp_path):
    write_cifar(tmp_path, 2)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ConfigError, match="data_batch_3 is not a CIFAR-10 batch: it names"):
        load("cifar10", tmp_path)
    assert not marker.exists()
