"""GAN family: MLP and DCGAN-style generators and discriminators in one module, and the
pair of optimizers that train them.

`generate(z)` maps latents (B, latent) to samples (B, *data_shape) (images through a
sigmoid, so in [0, 1]); `critic(x)` scores samples (B, ...) in packs of `pack`
consecutive samples (PacGAN) -> (B / pack,) logits or critic values; `sample(key, n)`
draws n samples from the prior, with the moving average of the generator when the run
keeps one (`ema`).

Initialisation (`init`): `fan_in_uniform` draws weights and biases from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for dense and conv layers (so the
PyTorch twin of benchmarks/gan_steps.py starts from the same distribution); `flax`
keeps Flax's LeCun-normal weights and zero biases. On gan_ring8 the two gave the same
figures over 5 seeds (experiments/README.md, GAN family).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dlcli.data import DatasetInfo
from dlcli.models.layers import (DenseStack, SpectralNormed, TransposedConv, conv, conv_chain, dense, maybe_norm,
                                 norm_layer, norm_layers, sub_pixel_chain, upsample)


def leaky_relu(h: jax.Array) -> jax.Array:
    """The discriminators' activation: leaky ReLU with slope 0.2."""
    return jax.nn.leaky_relu(h, 0.2)


class MLPGenerator(nnx.Module):
    """z (B, latent) -> dense `generator` widths (norm, ReLU) -> (B, *data_shape)."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        sizes = [cfg.latent, *cfg.generator]
        self.layers = DenseStack(sizes, init=cfg.init, rngs=rngs)
        self.norms = norm_layers(cfg.norm, cfg.generator, rngs)
        self.out = dense(sizes[-1], math.prod(info.input_shape), init=cfg.init, rngs=rngs)
        self.shape = tuple(info.input_shape)
        self.images = info.is_image

    def __call__(self, z: jax.Array) -> jax.Array:
        h = self.layers(z, jax.nn.relu, norms=self.norms)
        x = self.out(h).reshape(z.shape[0], *self.shape)
        return jax.nn.sigmoid(x) if self.images else x


class MLPDiscriminator(nnx.Module):
    """x (B, ...) in packs of `pack` -> (B / pack, pack x data size) -> dense
    `discriminator` widths (leaky ReLU 0.2) -> (B / pack,)."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        sizes = [cfg.pack * math.prod(info.input_shape), *cfg.discriminator]
        self.layers = DenseStack(sizes, init=cfg.init, rngs=rngs)
        self.out = dense(sizes[-1], 1, init=cfg.init, rngs=rngs)
        self.pack = cfg.pack

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.layers(x.reshape(x.shape[0] // self.pack, -1), leaky_relu)
        return self.out(h)[:, 0]


class ConvGenerator(nnx.Module):
    """DCGAN-style: z (B, latent) -> dense `g_dense` widths (norm, ReLU) -> dense ->
    (B, H/2^k, W/2^k, g_channels[0]) -> k upsampling steps (norm, ReLU) through
    g_channels[1:] -> `g_kernel` conv to the image's channels -> sigmoid -> (B, H, W, C);
    a conditional generator takes the one-hot class beside z. An upsampling step is sub-pixel (`g_kernel` conv to 4x the channels, 2x2
    depth-to-space) or a stride-2 transposed convolution (`upsampling: transposed`)."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        self.start = cfg.generator_start(info)
        self.classes = cfg.label_classes(info)
        sizes = [cfg.latent + self.classes, *cfg.g_dense]
        self.hidden = DenseStack(sizes, init=cfg.init, rngs=rngs)
        self.hidden_norms = norm_layers(cfg.norm, cfg.g_dense, rngs)
        self.project = dense(sizes[-1], math.prod(self.start), init=cfg.init, rngs=rngs)
        self.project_norm = norm_layer(cfg.norm, cfg.g_channels[0], rngs)
        chain = cfg.g_channels
        if cfg.upsampling == "transposed":
            self.ups = nnx.List([TransposedConv(a, b, cfg.g_kernel, init=cfg.init, rngs=rngs)
                                 for a, b in zip(chain[:-1], chain[1:])])
        else:
            self.ups = sub_pixel_chain(chain, kernel=cfg.g_kernel, init=cfg.init, rngs=rngs)
        self.transposed = cfg.upsampling == "transposed"
        self.norms = norm_layers(cfg.norm, chain[1:], rngs)
        self.out = conv(chain[-1], info.input_shape[2], cfg.g_kernel, init=cfg.init, rngs=rngs)

    def __call__(self, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """z (B, latent), and for a conditional generator the requested classes (B,) int."""
        if self.classes:
            z = jnp.concatenate([z, jax.nn.one_hot(labels, self.classes, dtype=z.dtype)], axis=-1)
        h = self.hidden(z, jax.nn.relu, norms=self.hidden_norms)
        h = self.project(h).reshape(z.shape[0], *self.start)
        h = jax.nn.relu(maybe_norm(self.project_norm, h))
        for i, up in enumerate(self.ups):
            h = up(h) if self.transposed else upsample(up, h)
            h = jax.nn.relu(self.norms[i](h) if self.norms else h)
        return jax.nn.sigmoid(self.out(h))


class ConvDiscriminator(nnx.Module):
    """DCGAN-style: x (B, H, W, C) in packs of `pack` (stacked on channels) -> `d_kernel`
    stride-2 convs `d_channels` (leaky ReLU 0.2) -> flattened -> dense `d_dense` widths
    (leaky ReLU 0.2) -> dense -> (B / pack,); with `spectral_norm`, every layer's kernel
    divided by its largest singular value (`SpectralNormed`). A conditional one is a
    projection discriminator (Miyato & Koyama 2018): the score adds the inner product of
    a learned embedding of the sample's class with the features the read-out sees."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        convs = conv_chain([cfg.pack * info.input_shape[2], *cfg.d_channels], 2, kernel=cfg.d_kernel, init=cfg.init,
                           rngs=rngs)
        sizes = [cfg.discriminator_features(info), *cfg.d_dense]
        hidden = DenseStack(sizes, init=cfg.init, rngs=rngs)
        out = dense(sizes[-1], 1, init=cfg.init, rngs=rngs)
        if cfg.spectral_norm:
            convs = nnx.List([SpectralNormed(layer, rngs=rngs) for layer in convs])
            hidden = nnx.List([SpectralNormed(layer, rngs=rngs) for layer in hidden])
            out = SpectralNormed(out, rngs=rngs)
        self.convs, self.hidden, self.out = convs, hidden, out
        classes = cfg.label_classes(info)
        self.embed = nnx.Embed(classes, sizes[-1], rngs=rngs) if classes else None
        self.pack = cfg.pack

    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """x (B, H, W, C), and for a conditional (projection) discriminator their classes (B,) int."""
        batch, height, width, channels = x.shape
        h = x.reshape(batch // self.pack, self.pack, height, width, channels).transpose(0, 2, 3, 1, 4)
        h = h.reshape(batch // self.pack, height, width, self.pack * channels)
        for conv_layer in self.convs:
            h = leaky_relu(conv_layer(h))
        h = h.reshape(h.shape[0], -1)
        for layer in self.hidden:
            h = leaky_relu(layer(h))
        score = self.out(h)[:, 0]
        if self.embed is not None:  # the projection: <embedding of the class, last features>
            score = score + jnp.sum(self.embed(labels).astype(h.dtype) * h, axis=-1)
        return score


class Average(nnx.Variable):
    """A moving average of a generator parameter (not trained, not counted as a parameter)."""


def _as_average(generator: nnx.Module) -> nnx.Module:
    """A copy of `generator` (in buffers of its own) whose parameters are `Average` variables."""
    graphdef, state = nnx.split(generator)

    def copy(variable):
        value = jnp.array(variable.get_value(), copy=True)
        return Average(value) if isinstance(variable, nnx.Param) else type(variable)(value)

    state = jax.tree.map(copy, state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    return nnx.merge(graphdef, state)


class GAN(nnx.Module):
    """The generator and discriminator of one run, and (with `ema`) the generator's
    moving average, which evaluation and sampling use."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        conv = cfg.architecture == "dcgan"
        self.generator = (ConvGenerator if conv else MLPGenerator)(cfg, info, rngs=rngs)
        self.discriminator = (ConvDiscriminator if conv else MLPDiscriminator)(cfg, info, rngs=rngs)
        self.average = _as_average(self.generator) if cfg.ema is not None else None
        self.ema, self.latent, self.classes = cfg.ema, cfg.latent, cfg.label_classes(info)

    def generate(self, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """z (B, latent) (and a conditional GAN's classes, (B,) int) -> samples (B, ...)
        of the evaluated generator (the average if kept)."""
        generator = self.average if self.average is not None else self.generator
        return generator(z, labels) if self.classes else generator(z)

    def critic(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        return self.discriminator(x, labels) if self.classes else self.discriminator(x)

    def sample(self, key: jax.Array, n: int, labels: jax.Array | None = None) -> jax.Array:
        """n samples from the prior; a conditional GAN draws `labels` (n,), by default
        rows of a grid per class: the first n / classes samples of class 0, and so on."""
        if self.classes and labels is None:
            labels = jnp.arange(n) * self.classes // n
        return self.generate(jax.random.normal(key, (n, self.latent)), labels)

    def refine_spectral_norms(self) -> None:
        """One power-iteration step of every spectrally normalised layer (none: nothing)."""
        for _, module in nnx.iter_graph(self.discriminator):
            if isinstance(module, SpectralNormed):
                module.refine()

    def update_average(self, updates: jax.Array) -> None:
        """average <- decay * average + (1 - decay) * generator after the generator's
        `updates`-th update, with decay = min(ema, (1 + updates) / (10 + updates)) (the
        warm-up of TensorFlow's ExponentialMovingAverage, so early averages do not
        remember the initial weights); normalisation statistics are copied."""
        if self.average is None:
            return
        decay = jnp.minimum(self.ema, (1.0 + updates) / (10.0 + updates))
        pairs = zip((v for _, v in nnx.iter_graph(self.average) if isinstance(v, nnx.Variable)),
                    (v for _, v in nnx.iter_graph(self.generator) if isinstance(v, nnx.Variable)))
        for kept, current in pairs:
            mixed = decay * kept.get_value() + (1 - decay) * current.get_value()
            kept.set_value(mixed if isinstance(kept, Average) else current.get_value())


class GANOptimizers(nnx.Module):
    """Adam for the generator and for the discriminator, each with its own peak learning
    rate on the run's schedule and the spec's (b1, b2)."""

    def __init__(self, model: GAN, cfg, schedule_for):
        def adam(peak):
            return optax.adam(schedule_for(peak), b1=cfg.b1, b2=cfg.b2)

        self.generator = nnx.Optimizer(model.generator, adam(cfg.g_learning_rate), wrt=nnx.Param)
        self.discriminator = nnx.Optimizer(model.discriminator, adam(cfg.d_learning_rate), wrt=nnx.Param)
