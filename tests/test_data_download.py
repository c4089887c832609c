"""The MNIST download path, for real, against a local HTTP mirror on 127.0.0.1.

Every test keeps the canonical mirrors unreachable: in-process they are replaced by a
refused local port, and a dlcli subprocess sends them through a dead proxy.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import socketserver
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY, cli_env, run_cli, sets

from dlcli.data import vision
from dlcli.data.vision import IDX_FILES, MnistConfig
from dlcli.errors import BadInput

LABELS = "train-labels-idx1-ubyte.gz"


@pytest.fixture
def closed_url():
    """http://127.0.0.1:PORT where PORT is bound but never listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(autouse=True)
def no_canonical_mirrors(monkeypatch, closed_url):
    for dataset in vision.MIRRORS:
        monkeypatch.setitem(vision.MIRRORS, dataset, [f"{closed_url}/{dataset}/"])


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@contextlib.contextmanager
def serve(server: socketserver.BaseServer):
    """Run `server` in a background thread; yields its base URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirror(tmp_path, shared_data, monkeypatch):
    """A local mirror serving copies of the real MNIST files as `<root>/mnist/<file>`,
    named by DLCLI_DATA_MIRROR; `requests` lists the paths it was asked for."""
    root = tmp_path / "mirror"
    shutil.copytree(shared_data / "mnist", root / "mnist")
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(Path(self.path).name)
            super().do_GET()

        def log_message(self, *args):
            pass

    with serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        monkeypatch.setenv("DLCLI_DATA_MIRROR", url)
        yield SimpleNamespace(url=url, folder=root / "mnist", requests=requests)


@pytest.fixture
def published(shared_data) -> dict[str, str]:
    """file name -> sha256 of the MNIST files, from the shared data's SHA256SUMS."""
    lines = (shared_data / "SHA256SUMS").read_text().splitlines()
    return {path.removeprefix("mnist/"): digest for digest, path in map(str.split, lines) if path.startswith("mnist/")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_bytes(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16]) + data[middle + 16:]


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def test_download_fills_an_empty_cache_once(mirror, data_dir, published):
    """The four files are fetched, verified and cached; a second load reads the cache."""
    splits = MnistConfig().load(data_dir)

    assert [x.shape for x, _ in (splits.train, splits.val, splits.test)] == [
        (55_000, 28, 28, 1), (5_000, 28, 28, 1), (10_000, 28, 28, 1)]
    assert [y.shape for _, y in (splits.train, splits.val, splits.test)] == [(55_000,), (5_000,), (10_000,)]
    cached = data_dir / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(IDX_FILES)  # no .part left
    assert {name: sha256(cached / name) for name in IDX_FILES} == published
    assert sorted(mirror.requests) == sorted(IDX_FILES)

    MnistConfig().load(data_dir)
    assert len(mirror.requests) == len(IDX_FILES)


@pytest.mark.parametrize("damage", [flip_bytes, truncate])
def test_corrupt_download_is_not_cached(mirror, data_dir, damage):
    """A checksum mismatch is BadInput; only verified files stay, and repairing the
    mirror completes the cache without fetching them again."""
    served = mirror.folder / LABELS
    good = served.read_bytes()
    served.write_bytes(damage(good))

    with pytest.raises(BadInput, match="checksum mismatch") as err:
        MnistConfig().load(data_dir)

    assert LABELS in str(err.value)
    fetched_good = set(mirror.requests) - {LABELS}
    assert {p.name for p in (data_dir / "mnist").iterdir()} == fetched_good

    served.write_bytes(good)
    MnistConfig().load(data_dir)
    assert Counter(mirror.requests) == {name: 2 if name == LABELS else 1 for name in IDX_FILES}


def test_unreachable_mirror_names_the_files_and_folder(closed_url, data_dir, monkeypatch):
    """With no server, the one-line BadInput says which files to put where."""
    monkeypatch.setenv("DLCLI_DATA_MIRROR", closed_url)
    with pytest.raises(BadInput) as err:
        MnistConfig().load(data_dir)

    message = str(err.value)
    assert "\n" not in message
    assert f"{closed_url}/mnist/{IDX_FILES[0]}" in message
    assert all(name in message for name in IDX_FILES)
    assert f"in {data_dir / 'mnist'}/" in message
    assert not any((data_dir / "mnist").iterdir())


class Banner(socketserver.BaseRequestHandler):
    """Reads the request, then answers like an SSH server instead of with HTTP."""

    def handle(self):
        self.request.recv(65536)
        self.request.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")


def test_mirror_that_does_not_speak_http_is_bad_input(data_dir, monkeypatch):
    with serve(socketserver.TCPServer(("127.0.0.1", 0), Banner)) as url:
        monkeypatch.setenv("DLCLI_DATA_MIRROR", url)
        with pytest.raises(BadInput, match="no intact copy could be downloaded"):
            MnistConfig().load(data_dir)


@pytest.mark.e2e
def test_cli_refuses_a_corrupt_download(mirror, data_dir, closed_url, tmp_path):
    """Through the CLI: exit 2, one line naming the file and the checksum, nothing cached
    for it, and no run folder created."""
    (mirror.folder / LABELS).write_bytes(flip_bytes((mirror.folder / LABELS).read_bytes()))
    run_dir = tmp_path / "run"
    env = cli_env(data_dir, DLCLI_DATA_MIRROR=mirror.url, no_proxy="127.0.0.1",
                  http_proxy=closed_url, https_proxy=closed_url)

    result = run_cli("train", "--run-dir", str(run_dir), *sets(*TINY, "data.name=mnist"), env=env)

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert f"{mirror.url}/mnist/{LABELS}: checksum mismatch" in lines[0]
    assert LABELS in mirror.requests
    assert not (data_dir / "mnist" / LABELS).exists()
    assert not list((data_dir / "mnist").glob("*.part"))
    assert not run_dir.exists()


def test_bundled_digits_are_read_as_scikit_learn_reads_them():
    from sklearn.datasets import load_digits

    from dlcli.data.vision import read_bundled_digits

    reference = load_digits()
    images, labels = read_bundled_digits()
    np.testing.assert_array_equal(images, (reference.images / 16.0).astype(np.float32)[..., None])
    np.testing.assert_array_equal(labels, reference.target)


def test_a_subset_is_the_first_images_of_each_full_split(shared_data):
    """data.subset cuts the splits before converting them: the same images, bit for bit,
    as cutting the fully converted splits."""
    full = MnistConfig(normalize="unit").load(shared_data)
    cut = MnistConfig(normalize="unit", subset=300).load(shared_data)
    for whole, part in zip((full.train, full.val, full.test), (cut.train, cut.val, cut.test)):
        np.testing.assert_array_equal(part[0], whole[0][:300])
        np.testing.assert_array_equal(part[1], whole[1][:300])


def test_a_replaced_file_is_read_again(shared_data, tmp_path):
    """Decoded files are kept per process, but a file replaced on disk is decoded anew."""
    folder = tmp_path / "mnist"
    shutil.copytree(shared_data / "mnist", folder)
    before = MnistConfig(subset=100).load(tmp_path).train[1]
    shutil.copyfile(shared_data / "fashion_mnist" / LABELS, folder / LABELS)
    after = MnistConfig(subset=100).load(tmp_path).train[1]
    fashion = vision.read_idx(shared_data / "fashion_mnist" / LABELS, 2049)
    order = np.random.default_rng(0).permutation(60_000)[5_000:5_100]  # the first 100 training images
    np.testing.assert_array_equal(after, fashion[order])
    assert not np.array_equal(before, after)
