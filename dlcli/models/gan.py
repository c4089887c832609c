"""GAN family: a generator and a discriminator in one module, and the pair of
optimizers that train them.

`generate(z)` maps latents (B, latent) to samples (B, *data_shape) (images through a
sigmoid, so in [0, 1]); `critic(x)` scores samples (B, ...) in packs of `pack`
consecutive samples -> (B / pack,) logits or critic values; `sample(key, n)` draws n
samples from the prior.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dlcli.data import DatasetInfo

NORMS = {"batch": lambda n, rngs: nnx.BatchNorm(n, rngs=rngs), "layer": lambda n, rngs: nnx.LayerNorm(n, rngs=rngs)}


class MLPGenerator(nnx.Module):
    """z (B, latent) -> dense `generator` widths (norm, ReLU) -> (B, *data_shape)."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        sizes = [cfg.latent, *cfg.generator]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.norms = nnx.List([NORMS[cfg.norm](b, rngs) for b in cfg.generator] if cfg.norm != "none" else [])
        self.out = nnx.Linear(sizes[-1], math.prod(info.input_shape), rngs=rngs)
        self.shape = tuple(info.input_shape)
        self.images = info.is_image

    def __call__(self, z: jax.Array) -> jax.Array:
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if self.norms:
                h = self.norms[i](h)
            h = jax.nn.relu(h)
        x = self.out(h).reshape(z.shape[0], *self.shape)
        return jax.nn.sigmoid(x) if self.images else x


class MLPDiscriminator(nnx.Module):
    """(B', pack x data size) -> dense `discriminator` widths (leaky ReLU 0.2) -> (B',)."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        sizes = [cfg.pack * math.prod(info.input_shape), *cfg.discriminator]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(sizes[-1], 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for layer in self.layers:
            h = jax.nn.leaky_relu(layer(h), 0.2)
        return self.out(h)[:, 0]


def critic(discriminator: nnx.Module, x: jax.Array, pack: int) -> jax.Array:
    """x (B, ...) -> (B / pack,): each score reads `pack` consecutive samples."""
    return discriminator(x.reshape(x.shape[0] // pack, -1))


class GAN(nnx.Module):
    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        self.generator = MLPGenerator(cfg, info, rngs=rngs)
        self.discriminator = MLPDiscriminator(cfg, info, rngs=rngs)
        self.latent, self.pack = cfg.latent, cfg.pack

    def generate(self, z: jax.Array) -> jax.Array:
        return self.generator(z)

    def critic(self, x: jax.Array) -> jax.Array:
        return critic(self.discriminator, x, self.pack)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        return self.generate(jax.random.normal(key, (n, self.latent)))


class GANOptimizers(nnx.Module):
    """Adam for the generator and for the discriminator (learning rates on the run's
    schedule). (WIP: the `ema` average of the generator's weights is not built yet.)"""

    def __init__(self, model: GAN, cfg, schedule_for):
        def adam(peak):
            return optax.adam(schedule_for(peak), b1=cfg.b1, b2=cfg.b2)

        self.generator = nnx.Optimizer(model.generator, adam(cfg.g_learning_rate), wrt=nnx.Param)
        self.discriminator = nnx.Optimizer(model.discriminator, adam(cfg.d_learning_rate), wrt=nnx.Param)
