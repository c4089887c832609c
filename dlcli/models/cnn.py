"""Convolutional network: conv blocks (conv -> [batch norm] -> activation -> [pool]),
then a flatten or global-average-pool head and dense layers."""

from __future__ import annotations

import jax
from flax import nnx

from dlcli.data import DatasetInfo
from dlcli.models import ACTIVATIONS
from dlcli.specs.cnn import CNNConfig


class CNN(nnx.Module):
    def __init__(self, cfg: CNNConfig, info: DatasetInfo, *, rngs: nnx.Rngs):
        channels = [info.input_shape[2], *(b.channels for b in cfg.blocks)]
        self.pools = tuple((b.pool, b.pool_size) for b in cfg.blocks)  # static: (kind, size) per block
        self.convs = nnx.List([
            nnx.Conv(c_in, b.channels, (b.kernel, b.kernel), strides=b.stride, padding=cfg.padding.upper(), rngs=rngs)
            for c_in, b in zip(channels[:-1], cfg.blocks)
        ])
        self.norms = nnx.List([nnx.BatchNorm(b.channels, rngs=rngs) for b in cfg.blocks] if cfg.batch_norm else [])
        height, width, depth = cfg.feature_shape(info)
        features = depth if cfg.head == "gap" else height * width * depth
        sizes = [features, *cfg.dense]
        self.dense = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(sizes[-1], info.n_outputs, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.activation = ACTIVATIONS[cfg.activation]
        self.global_pool = cfg.head == "gap"

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, H, W, C) -> outputs (B, n_outputs)."""
        for i, (conv, (pool, size)) in enumerate(zip(self.convs, self.pools)):
            x = conv(x)  # (B, H', W', channels)
            if self.norms:
                x = self.norms[i](x)
            x = self.activation(x)
            if pool != "none":
                pool_fn = nnx.max_pool if pool == "max" else nnx.avg_pool
                x = pool_fn(x, (size, size), strides=(size, size))
        x = x.mean(axis=(1, 2)) if self.global_pool else x.reshape(x.shape[0], -1)  # (B, F)
        for layer in self.dense:
            x = self.dropout(self.activation(layer(x)), rngs=rngs)
        return self.out(x)
