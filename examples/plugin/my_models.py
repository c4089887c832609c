"""An example dlcli plugin: a model family and a dataset of your own, outside dlcli's source.

Copy this file, change the classes, and name them in an experiment file:

    model:
      name: ./my_models.py:ResidualMLP   # a path relative to the experiment file, then ':' and the class
      width: 32                          # the spec's own fields, checked like a built-in's
    data:
      name: ./my_models.py:TwoSpirals

(or `mypkg.my_models:ResidualMLP` for a module on PYTHONPATH or installed). Each class
is written exactly like a built-in one:

- a model spec is a dataclass subclass of `ModelSpec` whose fields are the config
  section's keys (with `name`), plus `summary`, `reference_dataset`, `build(info, rngs)`
  returning a Flax NNX module, and optionally `param_count(info)` in closed form (without
  it dlcli counts the parameters of an abstract build) and `check_input(info)`;
- a dataset is a dataclass subclass of `DatasetSpec` with `name`, `summary`, `info()`
  (shapes, without loading anything) and `load(data_dir)` (the train/val/test splits).

Bad values of the fields (`model.width: 0`, an unknown key) fail with the same one-line
errors as the built-ins'. dlcli trains, evaluates, resumes and compares these as it
does its own.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar, Literal

import jax
import numpy as np
from flax import nnx

from dlcli.data import DatasetInfo, DatasetSpec, Splits, split_by_fraction
from dlcli.errors import BadInput
from dlcli.schema import bounded, seed_field
from dlcli.specs import ModelSpec

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jax.numpy.tanh}


# ----- the model: its config section (the spec) and its Flax NNX module ---------------

@dataclasses.dataclass
class ResidualMLP(ModelSpec):
    """A projection to `width`, `blocks` pre-norm residual blocks x + W2 act(W1 LayerNorm(x)),
    a final LayerNorm and a linear head."""

    summary: ClassVar[str] = "residual MLP: projection, pre-norm residual blocks, linear head"
    reference_dataset: ClassVar[str] = "spirals"  # the dataset `dlcli models` counts its parameters on
    name: str = "residual_mlp"
    width: int = bounded(64, low=1)
    blocks: int = bounded(2, low=0, high=64)
    expansion: int = bounded(2, low=1, high=16)  # a block's hidden layer is expansion x width
    activation: Literal["relu", "gelu", "tanh"] = "gelu"
    dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)

    def check_input(self, info: DatasetInfo) -> None:
        if info.sequence:
            raise BadInput("model ResidualMLP takes fixed-size inputs, not sequences; use model.name: lstm or gru")

    def param_count(self, info: DatasetInfo) -> int:
        """Trainable parameters in closed form: weights and biases of every Linear, scale
        and bias of every LayerNorm."""
        d_in, w, h = math.prod(info.input_shape), self.width, self.expansion * self.width
        block = 2 * w + (w * h + h) + (h * w + w)
        return (d_in * w + w) + self.blocks * block + 2 * w + (w * info.n_outputs + info.n_outputs)

    def build(self, info: DatasetInfo, rngs: nnx.Rngs) -> "ResidualMLPModule":
        return ResidualMLPModule(self, info, rngs=rngs)


class ResidualBlock(nnx.Module):
    def __init__(self, width: int, hidden: int, dropout: float, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, hidden, rngs=rngs)
        self.down = nnx.Linear(hidden, width, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, activation, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, width) -> (B, width)."""
        return x + self.dropout(self.down(activation(self.up(self.norm(x)))), rngs=rngs)


class ResidualMLPModule(nnx.Module):
    def __init__(self, cfg: ResidualMLP, info: DatasetInfo, *, rngs: nnx.Rngs):
        hidden = cfg.expansion * cfg.width
        self.project = nnx.Linear(math.prod(info.input_shape), cfg.width, rngs=rngs)
        self.blocks = nnx.List([ResidualBlock(cfg.width, hidden, cfg.dropout, rngs=rngs) for _ in range(cfg.blocks)])
        self.norm = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.head = nnx.Linear(cfg.width, info.n_outputs, rngs=rngs)
        self.activation = ACTIVATIONS[cfg.activation]

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, *input_shape) -> logits (B, n_outputs); `rngs` feeds dropout while training."""
        x = self.project(x.reshape(x.shape[0], -1))  # (B, width)
        for block in self.blocks:
            x = block(x, self.activation, rngs=rngs)
        return self.head(self.norm(x))


# ----- the dataset ----------------------------------------------------------------------

@dataclasses.dataclass
class TwoSpirals(DatasetSpec):
    """Lang and Witbrock's two-spirals benchmark: two spirals r = t, angle = t and angle + pi,
    t in (0, turns x 2 pi], scaled to radius 1, plus Gaussian noise; one class per spiral."""

    summary: ClassVar[str] = "two interleaved spirals (Lang and Witbrock), 2-D points, 2 classes"
    name: str = "two_spirals"
    n_samples: int = bounded(2000, low=10, high=10_000_000)
    turns: float = bounded(1.5, low=0.25, high=10.0)
    noise: float = bounded(0.02, low=0.0)
    seed: int = seed_field()
    val_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)
    test_fraction: float = bounded(0.15, low=0.0, high=0.5, low_open=True)

    def info(self) -> DatasetInfo:
        return DatasetInfo(input_shape=(2,), n_outputs=2, kind="classification")

    def load(self, data_dir: Path) -> Splits:
        """Generated from `seed` (no files: `data_dir` is unused); x (N, 2) float32, y (N,) int32."""
        rng = np.random.default_rng(self.seed)
        y = rng.integers(0, 2, self.n_samples).astype(np.int32)
        t = np.sqrt(rng.uniform(0.0, 1.0, self.n_samples)) * self.turns * 2 * np.pi  # denser towards the rim
        angle = t + np.pi * y
        radius = t / (self.turns * 2 * np.pi)
        x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        x = (x + rng.normal(0.0, self.noise, x.shape)).astype(np.float32)
        return split_by_fraction(x, y, self.val_fraction, self.test_fraction, self.info(), self.seed)
