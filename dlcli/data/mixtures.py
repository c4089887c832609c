"""2-D Gaussian mixtures of the mode-collapse literature (VEEGAN, PacGAN): `ring8`, 8
modes on a circle of radius 1 with standard deviation 0.01, and `grid25`, 25 modes at
(i, j) for i, j in {-4, -2, 0, 2, 4} with standard deviation 0.05. Each point's label
is its mode; `dlcli.tasks.adversarial` scores generated points the way those papers do."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import ClassVar

import numpy as np

from dlcli.data import DATASETS, DatasetInfo, DatasetSpec, Splits
from dlcli.schema import bounded, seed_field


@dataclasses.dataclass
class MixtureConfig(DatasetSpec):
    """Fixed training, validation and test sets drawn from `seed` (mode chosen uniformly)."""

    name: str
    n_train: int = bounded(100_000, low=1, high=10_000_000)
    n_val: int = bounded(2500, low=1, high=1_000_000)
    n_test: int = bounded(2500, low=1, high=1_000_000)
    seed: int = seed_field()

    def info(self) -> DatasetInfo:
        return DatasetInfo((2,), len(self.centres()), "classification")

    def load(self, data_dir: Path) -> Splits:
        rng = np.random.default_rng(self.seed)
        parts = [self.draw(rng, n) for n in (self.n_train, self.n_val, self.n_test)]
        return Splits(self.info(), *parts)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n points (n, 2) float32 and their modes (n,) int32."""
        centres = self.centres()
        modes = rng.integers(0, len(centres), n).astype(np.int32)
        points = centres[modes] + rng.normal(0.0, self.std, (n, 2))
        return points.astype(np.float32), modes


@DATASETS.register("ring8")
@dataclasses.dataclass
class Ring8Config(MixtureConfig):
    summary: ClassVar[str] = "8 Gaussians (std 0.01) on a circle of radius 1, the mode-collapse benchmark"
    std: ClassVar[float] = 0.01
    name: str = "ring8"

    def centres(self) -> np.ndarray:
        angles = 2 * np.pi * np.arange(8) / 8
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)


@DATASETS.register("grid25")
@dataclasses.dataclass
class Grid25Config(MixtureConfig):
    summary: ClassVar[str] = "25 Gaussians (std 0.05) on a 5x5 grid of spacing 2, the mode-collapse benchmark"
    std: ClassVar[float] = 0.05
    name: str = "grid25"

    def centres(self) -> np.ndarray:
        return np.array(list(itertools.product(range(-4, 5, 2), repeat=2)), dtype=np.float64)

