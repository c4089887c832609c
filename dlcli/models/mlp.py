"""Multilayer perceptron: flatten -> [dense -> norm -> activation -> dropout] x depth -> dense."""

from __future__ import annotations

import math

import jax
from flax import nnx

from dlcli.data import DatasetInfo
from dlcli.models import ACTIVATIONS
from dlcli.specs.mlp import MLPConfig


class MLP(nnx.Module):
    def __init__(self, cfg: MLPConfig, info: DatasetInfo, *, rngs: nnx.Rngs):
        sizes = [math.prod(info.input_shape), *cfg.hidden_widths()]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        norm = {"batch": nnx.BatchNorm, "layer": nnx.LayerNorm}.get(cfg.norm)
        self.norms = nnx.List([norm(b, rngs=rngs) for b in sizes[1:]] if norm else [])
        self.dropout = nnx.Dropout(cfg.dropout)
        self.out = nnx.Linear(sizes[-1], info.n_outputs, rngs=rngs)
        self.activation = ACTIVATIONS[cfg.activation]

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, *input_shape) -> outputs (B, n_outputs)."""
        return self.out(self.features(x, rngs=rngs))

    def features(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, *input_shape) -> the last hidden layer's activations (B, width), the head's input."""
        x = x.reshape(x.shape[0], -1)  # (B, D)
        for i, layer in enumerate(self.hidden):
            x = layer(x)
            if self.norms:
                x = self.norms[i](x)
            x = self.dropout(self.activation(x), rngs=rngs)
        return x
