"""Datasets by name. Each entry is a config section that knows its shapes without
loading anything (`info`) and loads its train/val/test splits as NumPy arrays (`load`).
Nothing here imports JAX."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from dlcli.errors import BadInput
from dlcli.registry import Registry

DATASETS: Registry[type] = Registry("dataset")

TaskKind = Literal["classification", "regression", "token_classification", "sequence_to_sequence"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a task need to know about a dataset before it is loaded.

    Sequence datasets (`sequence`) give x as {"inputs": (N, T, F) float32 or (N, T)
    int32 tokens, "lengths": (N,) int32}; steps at or past an example's length are
    padding. `vocab_size` > 0 marks token inputs; `vocab` holds a text corpus's characters.
    A `token_classification` dataset has one label per step, y (N, T) int32, -1 = ignore;
    `autoregressive` means the labels are the next inputs, so a model must not look ahead.
    A `sequence_to_sequence` dataset maps a source (N, S) to a target of up to
    `target_length` tokens: x also holds the decoder's inputs "targets_in" (N,
    target_length), the target shifted right behind a start token, and y (N,
    target_length) is the target followed by an end token, -1 after it.
    """

    input_shape: tuple[int, ...]  # one example, e.g. (28, 28, 1), (2,), or (T, F) / (T,) for sequences
    n_outputs: int  # classes, or regression targets
    kind: TaskKind
    sequence: bool = False
    vocab_size: int = 0
    vocab: str | None = None
    autoregressive: bool = False
    target_length: int = 0

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3 and not self.sequence


class DatasetSpec:
    """What every dataset config section declares (each family's base subclasses it):
    `info()` its shapes without loading anything, `load(data_dir)` its splits, and
    `baseline(splits)`, the dataset's reference predictor measured on the test split,
    as (its name, {"test/<metric>": value}), or None for a dataset that has none."""

    summary: ClassVar[str]  # one line for `dlcli datasets`
    path_fields: ClassVar[tuple[str, ...]] = ()  # fields naming the user's files: relative to the config file

    def info(self) -> DatasetInfo:
        raise NotImplementedError

    def info_from_run(self, preprocessing: dict) -> DatasetInfo:
        """The shapes as a run saw them, given its preprocessing record (see
        `preprocessing_record`); a dataset of the user's files knows them only once read."""
        return self.info()

    def load(self, data_dir: Path) -> "Splits":
        raise NotImplementedError

    def baseline(self, splits: "Splits") -> tuple[str, dict[str, float]] | None:
        return None


DATASETS.accept_plugins(DatasetSpec, "dlcli.datasets", needs=("summary", "info", "load"))  # the user's own: dlcli.registry


def num_examples(x) -> int:
    """The number of examples in an input array or a dict of input arrays."""
    return len(x["inputs"]) if isinstance(x, dict) else len(x)


@dataclasses.dataclass
class Splits:
    """Arrays of one dataset: x float32 (N, *input_shape) (a dict for sequences, see
    `DatasetInfo`); y int32 (N,) or (N, T), or float32 (N, k).

    `preprocessing` says how raw inputs became x, so that new inputs can be treated
    alike (`apply_scaling`): "inputs" is "pixels" (values in [0, 1]: 8-bit images
    divided by 255) or "features" (numbers as the file gives them); "scaling" is the
    record of `standardize`, `standardize_features`, `binarize` or {"normalize": "unit"};
    a dataset of the user's files adds "files" ({path: sha256} of every file read) and
    "classes" (the name of each class index) or "features" (CSV column names)."""

    info: DatasetInfo
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    preprocessing: dict[str, Any] = dataclasses.field(default_factory=dict)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def user_cache_dir() -> Path:
    """dlcli's folder in the user's cache directory (XDG_CACHE_HOME, else ~/.cache)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dlcli"


def default_data_dir() -> Path:
    """`DLCLI_DATA_DIR`, else the user's cache directory."""
    if os.environ.get("DLCLI_DATA_DIR"):
        return Path(os.environ["DLCLI_DATA_DIR"]).expanduser()
    return user_cache_dir() / "data"


def split_by_fraction(x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float,
                      info: DatasetInfo, split_seed: int = 0) -> Splits:
    """A fixed shuffled split: the same `split_seed` always gives the same three parts."""
    order = np.random.default_rng(split_seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    n_val = int(round(len(x) * val_fraction))
    test, val, train = np.split(order, [n_test, n_test + n_val])
    return Splits(info, (x[train], y[train]), (x[val], y[val]), (x[test], y[test]))


def standardize(splits: Splits) -> Splits:
    """Scale every split by the training set's scalar mean and standard deviation."""
    x = splits.train[0]
    return scaled(splits, {"normalize": "standard", "mean": float(x.mean()), "std": float(x.std()) or 1.0})


def standardize_features(splits: Splits) -> Splits:
    """Scale every split by the training set's mean and standard deviation of each input
    value (each CSV column, each pixel); a constant one keeps a deviation of 1."""
    x = splits.train[0]
    std = x.std(axis=0)
    record = {"normalize": "per_feature", "mean": x.mean(axis=0).tolist(), "std": np.where(std > 0, std, 1).tolist()}
    return scaled(splits, record)


def binarize(splits: Splits, threshold: float) -> Splits:
    """Every value 1 if it is above `threshold`, else 0."""
    return scaled(splits, {"binarize": threshold})


def scaled(splits: Splits, scaling: dict) -> Splits:
    """`splits` with every x passed through `apply_scaling(x, scaling)`, the record kept."""

    def scale(part):
        return apply_scaling(part[0], scaling), part[1]

    return Splits(splits.info, scale(splits.train), scale(splits.val), scale(splits.test),
                  {**splits.preprocessing, "scaling": scaling})


def apply_scaling(x: np.ndarray, scaling: dict) -> np.ndarray:
    """Raw inputs (N, *input_shape) -> float32 as the model saw them in training, by a
    scaling record of `Splits.preprocessing` ({} or {"normalize": "unit"}: as they are)."""
    if "binarize" in scaling:
        return (x > scaling["binarize"]).astype(np.float32)
    if scaling.get("normalize") == "standard":
        return ((x - scaling["mean"]) / scaling["std"]).astype(np.float32)
    if scaling.get("normalize") == "per_feature":
        mean = np.asarray(scaling["mean"], np.float32)
        std = np.asarray(scaling["std"], np.float32)
        return ((x - mean) / std).astype(np.float32)
    return np.asarray(x, np.float32)


def preprocessing_record(splits: Splits) -> dict:
    """What a run folder keeps to treat new inputs as the training data (preprocessing.json):
    `Splits.preprocessing` with the dataset's shapes."""
    info = splits.info
    return {"input_shape": list(info.input_shape), "n_outputs": info.n_outputs, "kind": info.kind,
            **splits.preprocessing}


def anchor_data_paths(raw: dict, folder: Path) -> None:
    """Make the relative file paths of a config file's data section (the fields its
    dataset declares in `path_fields`) relative to `folder`, the config file's own."""
    data = raw.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return  # parsing names the problem
    try:
        spec = DATASETS.get(data["name"])
    except BadInput:
        return  # as above
    for field in spec.path_fields:
        value = data.get(field)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            data[field] = os.path.abspath(folder / value)


def register_builtin_datasets() -> None:
    """Import the modules whose decorators fill `DATASETS`."""
    from dlcli.data import files, mixtures, seq2seq, sequences, synthetic, text, vision  # noqa: F401
