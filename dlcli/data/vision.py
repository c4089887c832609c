"""Image classification datasets: scikit-learn's 8x8 digits, MNIST and Fashion-MNIST.

MNIST-style datasets are read from gzip'd IDX files in `<data_dir>/<name>/`. Missing
files are downloaded from the canonical mirrors (a mirror named by `DLCLI_DATA_MIRROR`
is tried first), written to a temporary name, checked against their published sha256
and only then moved into place, so a corrupt download never lands in the cache.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from dlcli.data import DATASETS, DatasetInfo, DatasetSpec, Splits, binarize, scaled, split_by_fraction, standardize
from dlcli.errors import BadInput
from dlcli.schema import bounded

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}


class PixelScaling(DatasetSpec):
    """How pixel values reach the model (fields `normalize`, `binarize` and `subset` of
    each image dataset): `normalize: standard` (the training set's mean 0 and standard
    deviation 1) or `unit` (values in [0, 1], which autoencoders need); `binarize: T`
    makes every value 1 if it is above T (of [0, 1]) and 0 otherwise (static
    binarisation, for Bernoulli likelihoods); `subset: N` keeps only the first N
    examples of each split (quick trials)."""

    normalize: str
    binarize: float | None
    subset: int | None

    def scale(self, splits: Splits) -> Splits:
        """Splits with values in [0, 1] -> cut to `subset`, scaled as configured; the
        preprocessing record says so (`Splits.preprocessing`)."""
        if self.subset is not None:
            def cut(part):
                return part[0][: self.subset], part[1][: self.subset]

            splits = Splits(splits.info, cut(splits.train), cut(splits.val), cut(splits.test), splits.preprocessing)
        splits.preprocessing = {**splits.preprocessing, "inputs": "pixels"}
        if self.binarize is not None:
            return binarize(splits, self.binarize)
        return standardize(splits) if self.normalize == "standard" else scaled(splits, {"normalize": "unit"})


Normalize = Literal["standard", "unit"]
BINARIZE = dict(low=0.0, high=1.0, low_open=True, high_open=True)


@DATASETS.register("digits")
@dataclasses.dataclass
class DigitsConfig(PixelScaling):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download)."""

    summary: ClassVar[str] = "8x8 handwritten digits bundled with scikit-learn (1,797 images, 10 classes)"
    name: str = "digits"
    val_fraction: float = bounded(0.1, low=0.0, high=0.5, low_open=True)
    test_fraction: float = bounded(0.2, low=0.0, high=0.5, low_open=True)
    normalize: Normalize = "standard"
    binarize: float | None = bounded(None, **BINARIZE)
    subset: int | None = bounded(None, low=1)

    def info(self) -> DatasetInfo:
        return DatasetInfo((8, 8, 1), 10, "classification")

    def load(self, data_dir: Path) -> Splits:
        x, y = read_bundled_digits()
        return self.scale(split_by_fraction(x, y, self.val_fraction, self.test_fraction, self.info()))


def read_bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits.csv.gz, read as `sklearn.datasets.load_digits` reads it but
    without importing scikit-learn (most of a short run's start-up time): images
    (1797, 8, 8, 1) float32 in [0, 1] and labels (1797,) int32."""
    import importlib.util

    package = importlib.util.find_spec("sklearn")
    path = Path(package.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    data = np.loadtxt(path, delimiter=",")
    return (data[:, :-1].reshape(-1, 8, 8, 1) / 16.0).astype(np.float32), data[:, -1].astype(np.int32)


@dataclasses.dataclass
class IdxImagesConfig(PixelScaling):
    """28x28 grayscale images from gzip'd IDX files; the validation set is a fixed
    `val_size` images held out of the official training set."""

    name: str
    val_size: int = bounded(5000, low=1, high=30000)
    normalize: Normalize = "standard"
    binarize: float | None = bounded(None, **BINARIZE)
    subset: int | None = bounded(None, low=1)

    def info(self) -> DatasetInfo:
        return DatasetInfo((28, 28, 1), 10, "classification")

    def load(self, data_dir: Path) -> Splits:
        folder = Path(data_dir) / self.name
        paths = {f: ensure_file(folder, self.name, f) for f in IDX_FILES}
        x_train = read_idx(paths["train-images-idx3-ubyte.gz"], 2051)
        y_train = read_idx(paths["train-labels-idx1-ubyte.gz"], 2049)
        x_test = read_idx(paths["t10k-images-idx3-ubyte.gz"], 2051)
        y_test = read_idx(paths["t10k-labels-idx1-ubyte.gz"], 2049)
        if len(x_train) != len(y_train) or len(x_test) != len(y_test):
            raise BadInput(f"{folder}: image and label files disagree in length; replace them with the published files")
        order = np.random.default_rng(0).permutation(len(x_train))
        keep = slice(None, self.subset)  # cut before converting, so a subset converts only its own images
        val, train, test = order[: self.val_size][keep], order[self.val_size:][keep], np.arange(len(x_test))[keep]

        def images(a):
            return (a.astype(np.float32) / 255.0)[..., None]

        splits = Splits(self.info(),
                        (images(x_train[train]), y_train[train].astype(np.int32)),
                        (images(x_train[val]), y_train[val].astype(np.int32)),
                        (images(x_test[test]), y_test[test].astype(np.int32)))
        return self.scale(splits)


@DATASETS.register("mnist")
@dataclasses.dataclass
class MnistConfig(IdxImagesConfig):
    summary: ClassVar[str] = "MNIST handwritten digits, 28x28 (60,000 train, 10,000 test); downloaded once"
    name: str = "mnist"


@DATASETS.register("fashion_mnist")
@dataclasses.dataclass
class FashionMnistConfig(IdxImagesConfig):
    summary: ClassVar[str] = "Fashion-MNIST clothing images, 28x28 (60,000 train, 10,000 test); downloaded once"
    name: str = "fashion_mnist"


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Decode a gzip'd IDX file (big-endian header: magic, counts, then uint8 data) into
    a read-only array. Decoded files are kept per process (a worker's runs, a test
    session's), keyed by the file's size and modification time, so a replaced file is
    read again."""
    stat = Path(path).stat()
    return _read_idx(Path(path).absolute(), magic, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_idx(path: Path, magic: int, size: int, mtime_ns: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise BadInput(f"{path} is not a readable gzip file ({err}); delete it so dlcli downloads it again") from None
    header = np.frombuffer(raw[:4], dtype=">i4")
    if len(header) != 1 or header[0] != magic:
        raise BadInput(f"{path} is not an IDX file with magic {magic}; delete it so dlcli downloads it again")
    ndim = magic & 0xFF
    dims = np.frombuffer(raw[4: 4 + 4 * ndim], dtype=">i4").tolist()
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise BadInput(f"{path} is truncated ({data.size} of {int(np.prod(dims))} bytes); delete it so dlcli downloads it again")
    return data.reshape(dims)


def ensure_file(folder: Path, dataset: str, filename: str) -> Path:
    """Return `folder/filename`, downloading and verifying it first if it is absent."""
    target = folder / filename
    if target.exists():
        return target
    mirrors = MIRRORS[dataset]
    if os.environ.get("DLCLI_DATA_MIRROR"):
        mirrors = [os.environ["DLCLI_DATA_MIRROR"].rstrip("/") + f"/{dataset}/"] + mirrors
    problems = []
    for base in mirrors:
        url = base + filename
        try:
            download_verified(url, target, SHA256[dataset][filename])
            return target
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            problems.append(f"{url}: {getattr(err, 'reason', err)}")
    files = ", ".join(IDX_FILES)
    raise BadInput(f"{dataset} file {filename} is missing and no intact copy could be downloaded ({'; '.join(problems)}); "
                   f"put {files} in {folder}/ or point --data-dir (DLCLI_DATA_DIR) at a folder holding {dataset}/")


def download_verified(url: str, target: Path, sha256: str) -> None:
    """Fetch `url` to a temporary file beside `target`; move it into place only if its
    sha256 matches. Raises ValueError for a mismatch, leaving nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ValueError(f"checksum mismatch (sha256 {digest.hexdigest()[:12]}..., expected {sha256[:12]}...)")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def shift_images(x: np.ndarray, max_shift: int, seed: int = 0) -> np.ndarray:
    """Translate each image (N, H, W, C) by a random offset of up to `max_shift` pixels
    in each direction, filling the uncovered border with the background (the minimum)."""
    rng = np.random.default_rng(seed)
    shifted = np.full_like(x, x.min())
    _, height, width, _ = x.shape
    for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, (len(x), 2))):
        shifted[i, max(dy, 0): height + min(dy, 0), max(dx, 0): width + min(dx, 0)] = \
            x[i, max(-dy, 0): height + min(-dy, 0), max(-dx, 0): width + min(-dx, 0)]
    return shifted
