"""Multilayer perceptron: flatten -> [dense -> norm -> activation -> dropout] x depth -> dense."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
from flax import nnx

from dlcli.data import DatasetInfo
from dlcli.models.layers import ACTIVATIONS, DenseStack, dense, norm_layers

if TYPE_CHECKING:  # the specs build these modules; the modules name them in annotations only
    from dlcli.specs.mlp import MLPConfig


class MLP(nnx.Module):
    def __init__(self, cfg: MLPConfig, info: DatasetInfo, *, rngs: nnx.Rngs):
        sizes = [math.prod(info.input_shape), *cfg.hidden_widths()]
        self.hidden = DenseStack(sizes, rngs=rngs)
        self.norms = norm_layers(cfg.norm, sizes[1:], rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.out = dense(sizes[-1], info.n_outputs, rngs=rngs)
        self.activation = ACTIVATIONS[cfg.activation]

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, *input_shape) -> outputs (B, n_outputs)."""
        return self.out(self.features(x, rngs=rngs))

    def features(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, *input_shape) -> the last hidden layer's activations (B, width), the head's input."""
        x = x.reshape(x.shape[0], -1)  # (B, D)
        return self.hidden(x, self.activation, norms=self.norms, dropout=self.dropout, rngs=rngs)
