"""Synthetic sequence tasks generated from `data.seed`, for the recurrent family:

- `adding`: the adding problem (Hochreiter & Schmidhuber 1997), regression on the last step;
- `copy_memory`: the copy task of Arjovsky et al. (2016), one label per step;
- `forecast`: multi-step forecasting of a noisy sum of sines;
- `varlen_parity`: parity of ±1 bits in sequences of random length (padded);
- `associative_recall`: key-value pairs, then query keys: recall each one's value.

Each split is drawn from its own stream of (seed, split), so the splits never share an
example by construction. Each task also names the baseline a model must beat and
measures it on the test split (`baseline`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar

import numpy as np

from dlcli.data import DATASETS, DatasetInfo, DatasetSpec, Splits
from dlcli.errors import BadInput
from dlcli.schema import bounded, seed_field

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class SequenceConfig(DatasetSpec):
    """Fields every synthetic sequence task shares."""

    name: str
    n_train: int = bounded(20000, low=1, high=10_000_000)
    n_val: int = bounded(2000, low=1, high=1_000_000)
    n_test: int = bounded(2000, low=1, high=1_000_000)
    seed: int = seed_field()

    def load(self, data_dir: Path) -> Splits:
        sizes = {"train": self.n_train, "val": self.n_val, "test": self.n_test}
        parts = [self.generate(np.random.default_rng([self.seed, i]), sizes[split]) for i, split in enumerate(SPLITS)]
        return Splits(self.info(), *parts)

    def full_length(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"inputs": inputs, "lengths": np.full(len(inputs), inputs.shape[1], np.int32)}


def check_length_range(path: str, min_length: int, max_length: int) -> None:
    if min_length > max_length:
        raise BadInput(f"{path}.min_length {min_length} is above {path}.max_length {max_length}; "
                       "make min_length <= max_length")


@DATASETS.register("adding")
@dataclasses.dataclass
class AddingConfig(SequenceConfig):
    """Channel 0 holds values U(0, 1), channel 1 marks two of them (one in each half of
    the sequence); the target is the sum of the two marked values."""

    summary: ClassVar[str] = "adding problem: sum the two marked values of a length-T sequence, regression"
    name: str = "adding"
    length: int = bounded(100, low=2, high=100_000)

    def info(self) -> DatasetInfo:
        return DatasetInfo((self.length, 2), 1, "regression", sequence=True)

    def generate(self, rng: np.random.Generator, n: int):
        """x inputs (n, T, 2), y (n, 1)."""
        half = self.length // 2
        values = rng.uniform(0.0, 1.0, (n, self.length)).astype(np.float32)
        first = rng.integers(0, half, n)
        second = rng.integers(half, self.length, n)
        markers = np.zeros((n, self.length), np.float32)
        rows = np.arange(n)
        markers[rows, first] = markers[rows, second] = 1.0
        target = values[rows, first] + values[rows, second]
        return self.full_length(np.stack([values, markers], axis=-1)), target[:, None].astype(np.float32)

    def baseline(self, splits: Splits) -> tuple[str, dict[str, float]]:
        _, y = splits.test
        return "always predict 1", {"test/loss": float(np.mean((y - 1.0) ** 2))}


@DATASETS.register("copy_memory")
@dataclasses.dataclass
class CopyMemoryConfig(SequenceConfig):
    """Tokens: 0 blank, 1..alphabet symbols, alphabet+1 the delimiter. The input is
    `symbols` random symbols, T-1 blanks, the delimiter and `symbols` blanks (T + 2 x
    symbols steps); the target is blank everywhere except the last `symbols` steps,
    which must repeat the first ones."""

    summary: ClassVar[str] = "copy memory: recall 10 symbols after T blanks, a label per step"
    name: str = "copy_memory"
    delay: int = bounded(50, low=1, high=100_000)
    symbols: int = bounded(10, low=1, high=1000)
    alphabet: int = bounded(8, low=2, high=1000)

    @property
    def length(self) -> int:
        return self.delay + 2 * self.symbols

    def info(self) -> DatasetInfo:
        vocab = self.alphabet + 2
        return DatasetInfo((self.length,), vocab, "token_classification", sequence=True, vocab_size=vocab)

    def generate(self, rng: np.random.Generator, n: int):
        """x inputs (n, T + 2 symbols) int32, y (n, T + 2 symbols) int32."""
        memory = rng.integers(1, self.alphabet + 1, (n, self.symbols)).astype(np.int32)
        inputs = np.zeros((n, self.length), np.int32)
        inputs[:, : self.symbols] = memory
        inputs[:, self.delay + self.symbols - 1] = self.alphabet + 1
        targets = np.zeros((n, self.length), np.int32)
        targets[:, -self.symbols:] = memory
        return self.full_length(inputs), targets

    def baseline(self, splits: Splits) -> tuple[str, dict[str, float]]:
        """Blanks until the delimiter, then a uniform guess: symbols x ln(alphabet) / length."""
        return "memoryless (blanks, then uniform)", {"test/loss": self.symbols * math.log(self.alphabet) / self.length}


@DATASETS.register("forecast")
@dataclasses.dataclass
class ForecastConfig(SequenceConfig):
    """Each example is a window of a series s(t) = sum_k a_k sin(2 pi t / p_k + phi_k) +
    noise with random amplitudes and phases; the model reads `window` steps and predicts
    the next `horizon` observed (noisy) values."""

    summary: ClassVar[str] = "forecast the next H steps of a noisy sum of sines from a window, regression"
    name: str = "forecast"
    window: int = bounded(64, low=2, high=100_000)
    horizon: int = bounded(8, low=1, high=10_000)
    periods: list[float] = dataclasses.field(default_factory=lambda: [9.0, 23.0, 41.0])
    noise: float = bounded(0.05, low=0.0)

    def info(self) -> DatasetInfo:
        return DatasetInfo((self.window, 1), self.horizon, "regression", sequence=True)

    def generate(self, rng: np.random.Generator, n: int):
        """x inputs (n, window, 1), y (n, horizon)."""
        t = np.arange(self.window + self.horizon)
        periods = np.asarray(self.periods, np.float64)
        amplitude = rng.uniform(0.5, 1.0, (n, len(periods), 1))
        phase = rng.uniform(0.0, 2 * np.pi, (n, len(periods), 1))
        series = (amplitude * np.sin(2 * np.pi * t / periods[:, None] + phase)).sum(axis=1)
        series = (series + rng.normal(0.0, self.noise, series.shape)).astype(np.float32)
        return self.full_length(series[:, : self.window, None]), series[:, self.window:]

    def baseline(self, splits: Splits) -> tuple[str, dict[str, float]]:
        x, y = splits.test
        last = x["inputs"][:, -1, :]  # (n, 1)
        return "repeat the last value", {"test/loss": float(np.mean((y - last) ** 2))}


@DATASETS.register("varlen_parity")
@dataclasses.dataclass
class VarlenParityConfig(SequenceConfig):
    """±1 bits in sequences of random length in [min_length, max_length], padded with
    zeros to max_length; the label is 1 when the number of +1 bits is odd."""

    summary: ClassVar[str] = "parity of ±1 bits in sequences of random length (padded), 2 classes"
    name: str = "varlen_parity"
    min_length: int = bounded(2, low=1, high=10_000)
    max_length: int = bounded(12, low=1, high=10_000)

    def validate(self, path: str) -> None:
        check_length_range(path, self.min_length, self.max_length)

    def info(self) -> DatasetInfo:
        return DatasetInfo((self.max_length, 1), 2, "classification", sequence=True)

    def generate(self, rng: np.random.Generator, n: int):
        """x inputs (n, max_length, 1) with lengths (n,), y (n,)."""
        lengths = rng.integers(self.min_length, self.max_length + 1, n).astype(np.int32)
        bits = rng.integers(0, 2, (n, self.max_length))
        valid = np.arange(self.max_length) < lengths[:, None]
        bits = bits * valid
        inputs = np.where(valid, 2.0 * bits - 1.0, 0.0).astype(np.float32)[..., None]
        return {"inputs": inputs, "lengths": lengths}, (bits.sum(axis=1) % 2).astype(np.int32)

    def baseline(self, splits: Splits) -> tuple[str, dict[str, float]]:
        _, y = splits.test
        return "majority class", {"test/accuracy": float(max(y.mean(), 1 - y.mean()))}


@DATASETS.register("associative_recall")
@dataclasses.dataclass
class AssociativeRecallConfig(SequenceConfig):
    """Multi-query associative recall (as in Arora et al. 2023). Tokens: 0 the separator,
    1..keys the keys, keys+1..keys+values the values. The input lists `pairs` key-value
    pairs (distinct keys, k1 v1 k2 v2 ...), the separator, then `queries` of those keys;
    each query is labelled with the value that followed its key (every other step -1).
    Both order (a value belongs to the key before it) and long-range context (the pair
    asked for may be the first one) matter."""

    summary: ClassVar[str] = "associative recall: key-value pairs, then query keys; recall each one's value"
    name: str = "associative_recall"
    pairs: int = bounded(16, low=1, high=10_000)
    queries: int = bounded(8, low=1, high=10_000)
    keys: int = bounded(16, low=1, high=10_000)
    values: int = bounded(16, low=2, high=10_000)

    def validate(self, path: str) -> None:
        if self.pairs > self.keys:
            raise BadInput(f"{path}.pairs {self.pairs} needs as many distinct keys, but {path}.keys is {self.keys}; "
                           "raise keys or lower pairs")

    @property
    def length(self) -> int:
        return 2 * self.pairs + 1 + self.queries

    def info(self) -> DatasetInfo:
        return DatasetInfo((self.length,), self.values, "token_classification", sequence=True,
                           vocab_size=1 + self.keys + self.values)

    def generate(self, rng: np.random.Generator, n: int):
        """x inputs (n, 2 pairs + 1 + queries) int32, y (n, same) the queried values, -1 elsewhere."""
        keys = np.argsort(rng.random((n, self.keys)), axis=1)[:, : self.pairs] + 1
        values = rng.integers(0, self.values, (n, self.pairs))
        asked = rng.integers(0, self.pairs, (n, self.queries))
        rows = np.arange(n)[:, None]
        inputs = np.zeros((n, self.length), np.int32)
        inputs[:, 0: 2 * self.pairs: 2], inputs[:, 1: 2 * self.pairs: 2] = keys, values + self.keys + 1
        inputs[:, 2 * self.pairs + 1:] = keys[rows, asked]
        labels = np.full((n, self.length), -1, np.int32)
        labels[:, 2 * self.pairs + 1:] = values[rows, asked]
        return self.full_length(inputs), labels

    def baseline(self, splits: Splits) -> tuple[str, dict[str, float]]:
        _, y = splits.test
        asked = y[y >= 0]
        return "most frequent value", {"test/accuracy": float(np.bincount(asked, minlength=self.values).max() / len(asked))}
