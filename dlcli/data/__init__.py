"""Datasets by name. Each entry is a config section that knows its shapes without
loading anything (`info`) and loads its train/val/test splits as NumPy arrays (`load`).
Nothing here imports JAX."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

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

    def info(self) -> DatasetInfo:
        raise NotImplementedError

    def load(self, data_dir: Path) -> "Splits":
        raise NotImplementedError

    def baseline(self, splits: "Splits") -> tuple[str, dict[str, float]] | None:
        return None


def num_examples(x) -> int:
    """The number of examples in an input array or a dict of input arrays."""
    return len(x["inputs"]) if isinstance(x, dict) else len(x)


@dataclasses.dataclass
class Splits:
    """Arrays of one dataset: x float32 (N, *input_shape) (a dict for sequences, see
    `DatasetInfo`); y int32 (N,) or (N, T), or float32 (N, k)."""

    info: DatasetInfo
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]

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
    mean = float(splits.train[0].mean())
    std = float(splits.train[0].std()) or 1.0

    def scale(part):
        return ((part[0] - mean) / std).astype(np.float32), part[1]

    return Splits(splits.info, scale(splits.train), scale(splits.val), scale(splits.test))


def register_builtin_datasets() -> None:
    """Import the modules whose decorators fill `DATASETS`."""
    from dlcli.data import mixtures, seq2seq, sequences, synthetic, text, vision  # noqa: F401
