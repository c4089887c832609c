"""Synthetic datasets generated from `data.seed`: 2-D moons and spirals
(classification) and a 1-D regression function. No files, no download."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from dlcli.data import DATASETS, DatasetInfo, DatasetSpec, Splits, split_by_fraction
from dlcli.schema import bounded, seed_field


@dataclasses.dataclass
class SyntheticConfig(DatasetSpec):
    """Fields every synthetic dataset shares."""

    name: str
    n_samples: int = bounded(3000, low=10, high=10_000_000)
    noise: float = bounded(0.1, low=0.0)
    seed: int = seed_field()
    val_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)
    test_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)

    def load(self, data_dir: Path) -> Splits:
        x, y = self.generate(np.random.default_rng(self.seed))
        return split_by_fraction(x, y, self.val_fraction, self.test_fraction, self.info(), self.seed)


@DATASETS.register("moons")
@dataclasses.dataclass
class MoonsConfig(SyntheticConfig):
    summary: ClassVar[str] = "two interleaving half circles in 2-D, 2 classes"
    name: str = "moons"

    def info(self) -> DatasetInfo:
        return DatasetInfo((2,), 2, "classification")

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) points on two half circles plus Gaussian noise; labels (N,)."""
        y = rng.integers(0, 2, self.n_samples).astype(np.int32)
        angle = rng.uniform(0.0, np.pi, self.n_samples)
        upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
        lower = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
        x = np.where(y[:, None] == 0, upper, lower) + rng.normal(0.0, self.noise, (self.n_samples, 2))
        return x.astype(np.float32), y


@DATASETS.register("spirals")
@dataclasses.dataclass
class SpiralsConfig(SyntheticConfig):
    summary: ClassVar[str] = "interleaved 2-D spiral arms, one class per arm"
    name: str = "spirals"
    arms: int = bounded(2, low=2, high=10)
    turns: float = bounded(1.5, low=0.25, high=10.0)

    def info(self) -> DatasetInfo:
        return DatasetInfo((2,), self.arms, "classification")

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) points along `arms` spirals of `turns` turns, radius in (0, 1]; labels (N,)."""
        y = rng.integers(0, self.arms, self.n_samples).astype(np.int32)
        radius = rng.uniform(0.05, 1.0, self.n_samples)
        angle = 2 * np.pi * (self.turns * radius + y / self.arms)
        x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        x = x + rng.normal(0.0, self.noise * 0.1, x.shape)
        return x.astype(np.float32), y


@DATASETS.register("regression1d")
@dataclasses.dataclass
class Regression1DConfig(SyntheticConfig):
    summary: ClassVar[str] = "noisy 1-D function y = f(x) on [-1, 1] (sine, cubic or abs), regression"
    name: str = "regression1d"
    function: Literal["sine", "cubic", "abs"] = "sine"

    def info(self) -> DatasetInfo:
        return DatasetInfo((1,), 1, "regression")

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """x (N, 1) uniform on [-1, 1]; y (N, 1) = f(x) + Gaussian noise."""
        x = rng.uniform(-1.0, 1.0, (self.n_samples, 1))
        clean = {"sine": np.sin(2 * np.pi * x), "cubic": 4 * x**3 - 2 * x, "abs": np.abs(x) * 2 - 1}[self.function]
        y = clean + rng.normal(0.0, self.noise, x.shape)
        return x.astype(np.float32), y.astype(np.float32)


@DATASETS.register("sawtooth")
@dataclasses.dataclass
class SawtoothConfig(SyntheticConfig):
    """Telgarsky's sawtooth: the tent map t(x) = 1 - |2x - 1| composed `folds` times on
    [0, 1], a function with 2^folds linear pieces. A deep ReLU network represents it with
    O(folds) units; a shallow one needs about 2^folds."""

    summary: ClassVar[str] = "Telgarsky's sawtooth: the tent map composed k times on [0, 1] (2^k pieces), regression"
    name: str = "sawtooth"
    noise: float = bounded(0.0, low=0.0)
    folds: int = bounded(4, low=1, high=20)

    def info(self) -> DatasetInfo:
        return DatasetInfo((1,), 1, "regression")

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """x (N, 1) uniform on [0, 1]; y (N, 1) = t^folds(x) + Gaussian noise."""
        x = rng.uniform(0.0, 1.0, (self.n_samples, 1))
        y = x.copy()
        for _ in range(self.folds):
            y = 1.0 - np.abs(2.0 * y - 1.0)
        y = y + rng.normal(0.0, self.noise, y.shape)
        return x.astype(np.float32), y.astype(np.float32)


@DATASETS.register("parity")
@dataclasses.dataclass
class ParityConfig(SyntheticConfig):
    """Parity of `bits` random ±1 inputs: the label is 1 when the number of +1 bits is odd."""

    summary: ClassVar[str] = "parity of n random ±1 bits, 2 classes"
    name: str = "parity"
    bits: int = bounded(8, low=1, high=64)

    def info(self) -> DatasetInfo:
        return DatasetInfo((self.bits,), 2, "classification")

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """x (N, bits) in {-1, +1}; y (N,) = (number of +1 bits) mod 2."""
        bits = rng.integers(0, 2, (self.n_samples, self.bits))
        return (2.0 * bits - 1.0).astype(np.float32), (bits.sum(axis=1) % 2).astype(np.int32)
