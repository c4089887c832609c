"""Convolutional network: conv blocks (conv -> [batch norm] -> activation -> [pool]),
then a flatten or global-average-pool head and dense layers.

`conv_impl: im2col` computes each convolution as one matrix product over shifted
slices of the padded input (`dlcli.models.layers.im2col_conv`: XLA's CPU convolution
weight gradient is slow, above all inside `lax.scan`); `conv_impl: xla` keeps
`lax.conv_general_dilated`; `auto` (the default) is im2col on a CPU and xla on a GPU or
TPU. Pooling with window = stride is a reshape and a
reduction, which differentiates cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
from flax import nnx

from dlcli.data import DatasetInfo
from dlcli.models.layers import ACTIVATIONS, DenseStack, conv, dense, norm_layers

if TYPE_CHECKING:  # the specs build these modules; the modules name them in annotations only
    from dlcli.specs.cnn import CNNConfig


class CNN(nnx.Module):
    def __init__(self, cfg: CNNConfig, info: DatasetInfo, *, rngs: nnx.Rngs):
        channels = [info.input_shape[2], *(b.channels for b in cfg.blocks)]
        self.pools = tuple((b.pool, b.pool_size) for b in cfg.blocks)  # static: (kind, size) per block
        self.convs = nnx.List([conv(c_in, b.channels, b.kernel, b.stride, padding=cfg.padding.upper(),
                                    impl=cfg.conv_impl, rngs=rngs)
                               for c_in, b in zip(channels[:-1], cfg.blocks)])
        self.norms = norm_layers("batch" if cfg.batch_norm else "none", [b.channels for b in cfg.blocks], rngs)
        height, width, depth = cfg.feature_shape(info)
        features = depth if cfg.head == "gap" else height * width * depth
        sizes = [features, *cfg.dense]
        self.dense = DenseStack(sizes, rngs=rngs)
        self.out = dense(sizes[-1], info.n_outputs, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.activation = ACTIVATIONS[cfg.activation]
        self.global_pool = cfg.head == "gap"

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, H, W, C) -> outputs (B, n_outputs)."""
        return self.out(self.features(x, rngs=rngs))

    def features(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, H, W, C) -> the head's input (B, F): the last dense layer's activations (or the pooled features)."""
        for i, (layer, (pool, size)) in enumerate(zip(self.convs, self.pools)):
            x = layer(x)  # (B, H', W', channels)
            if self.norms:
                x = self.norms[i](x)
            x = self.activation(x)
            if pool != "none":
                x = window_pool(x, size, pool)
        x = x.mean(axis=(1, 2)) if self.global_pool else x.reshape(x.shape[0], -1)  # (B, F)
        return self.dense(x, self.activation, dropout=self.dropout, rngs=rngs)


def window_pool(x: jax.Array, size: int, kind: str) -> jax.Array:
    """Max or average pooling with window = stride = size, VALID: (B, H, W, C) -> (B, H//size, W//size, C)."""
    batch, height, width, channels = x.shape
    h, w = height // size, width // size
    x = x[:, : h * size, : w * size].reshape(batch, h, size, w, size, channels)
    return x.max(axis=(2, 4)) if kind == "max" else x.mean(axis=(2, 4))
