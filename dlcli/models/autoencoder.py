"""Autoencoder family: MLP and convolutional encoders/decoders, the deterministic
autoencoder (plain, denoising, sparse), the variational autoencoder, and a classifier
on a pre-trained encoder.

Every autoencoder offers `encode(x)` -> code (B, code) (a VAE: the posterior mean),
`decode(code)` -> logits (B, *input_shape) (the reconstruction is their sigmoid), and
`forward(x, keys)` -> the dict of outputs the reconstruction task's loss reads, where
`keys` (B,) are per-example random keys for the corruption or the latent sample, so an
example's noise does not depend on the batch it is in. Calling the model draws those
keys from the `noise` stream of `rngs` (training), or, without `rngs`, from the
examples' positions in the batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from dlcli.data import DatasetInfo
from dlcli.models.layers import ACTIVATIONS, DenseStack, conv_chain, dense, sub_pixel_chain, upsample

CODE_ACTIVATIONS = {"linear": lambda h: h, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}


EVAL_NOISE_KEY = 20260525  # evaluation noise: fixed per example index, so every evaluation sees the same


def fixed_keys(index: jax.Array) -> jax.Array:
    """(B,) example indices -> (B,) random keys, each a function of its index alone."""
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(EVAL_NOISE_KEY), i))(index)


def example_keys(batch: int, rngs: nnx.Rngs | None) -> jax.Array:
    """(batch,) random keys: fresh from `rngs.noise()` when given, else fixed by position."""
    if rngs is None:
        return fixed_keys(jnp.arange(batch))
    return jax.random.split(rngs.noise(), batch)


class MLPEncoder(nnx.Module):
    """x (B, *input_shape) -> flattened -> dense `hidden` layers -> (B, out)."""

    def __init__(self, cfg, info: DatasetInfo, out: int, *, rngs: nnx.Rngs):
        sizes = [math.prod(info.input_shape), *cfg.hidden]
        self.layers = DenseStack(sizes, rngs=rngs)
        self.out = dense(sizes[-1], out, rngs=rngs)
        self.activation = ACTIVATIONS[cfg.activation]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(self.layers(x.reshape(x.shape[0], -1), self.activation))


class MLPDecoder(nnx.Module):
    """code (B, code) -> dense layers `hidden` reversed -> logits (B, *input_shape)."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        sizes = [cfg.code, *reversed(cfg.hidden)]
        self.layers = DenseStack(sizes, rngs=rngs)
        self.out = dense(sizes[-1], math.prod(info.input_shape), rngs=rngs)
        self.activation = ACTIVATIONS[cfg.activation]
        self.shape = tuple(info.input_shape)

    def __call__(self, code: jax.Array) -> jax.Array:
        return self.out(self.layers(code, self.activation)).reshape(code.shape[0], *self.shape)


class ConvEncoder(nnx.Module):
    """x (B, H, W, C) -> 3x3 stride-2 convs `channels` -> (B, H/2^k, W/2^k, channels[-1])
    -> flattened -> dense -> (B, out)."""

    def __init__(self, cfg, info: DatasetInfo, out: int, *, rngs: nnx.Rngs):
        self.convs = conv_chain([info.input_shape[2], *cfg.channels], 2, rngs=rngs)
        self.out = dense(math.prod(cfg.feature_shape(info)), out, rngs=rngs)
        self.activation = ACTIVATIONS[cfg.activation]

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for layer in self.convs:
            h = self.activation(layer(h))
        return self.out(h.reshape(h.shape[0], -1))


class ConvDecoder(nnx.Module):
    """code (B, code) -> dense -> (B, H/2^k, W/2^k, channels[-1]) -> k sub-pixel
    upsampling layers (a 3x3 conv to 4x the output channels at the low resolution, then
    each pixel's 4 groups of channels spread over a 2x2 block, Shi et al. 2016), channels
    reversed, the last to the image's channels -> logits (B, H, W, C). Convolving before
    upsampling keeps every conv at the lower resolution."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        self.feature_shape = cfg.feature_shape(info)
        self.project = dense(cfg.code, math.prod(self.feature_shape), rngs=rngs)
        self.convs = sub_pixel_chain([*reversed(cfg.channels), info.input_shape[2]], rngs=rngs)
        self.activation = ACTIVATIONS[cfg.activation]

    def __call__(self, code: jax.Array) -> jax.Array:
        h = self.activation(self.project(code)).reshape(code.shape[0], *self.feature_shape)
        for i, layer in enumerate(self.convs):
            h = upsample(layer, h)
            if i < len(self.convs) - 1:
                h = self.activation(h)
        return h


def make_encoder(cfg, info: DatasetInfo, out: int, rngs: nnx.Rngs) -> nnx.Module:
    return (ConvEncoder if cfg.architecture == "conv" else MLPEncoder)(cfg, info, out, rngs=rngs)


def make_decoder(cfg, info: DatasetInfo, rngs: nnx.Rngs) -> nnx.Module:
    return (ConvDecoder if cfg.architecture == "conv" else MLPDecoder)(cfg, info, rngs=rngs)


def corrupt(x: jax.Array, key: jax.Array, kind: str, level: float) -> jax.Array:
    """One example x in [0, 1] -> its corrupted copy: x + N(0, level^2) clipped to [0, 1]
    (gaussian), or x with each value zeroed with probability `level` (masking)."""
    if kind == "gaussian":
        return jnp.clip(x + level * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)
    return jnp.where(jax.random.bernoulli(key, level, x.shape), 0.0, x)


class Autoencoder(nnx.Module):
    """Deterministic autoencoder. `noise` = (kind, level) makes it a denoising
    autoencoder (the input is corrupted in `forward`, the target stays clean);
    `code_activation` (linear, sigmoid, relu) is applied to the code, for sparsity."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs, noise: tuple[str, float] | None = None,
                 code_activation: str = "linear"):
        self.encoder = make_encoder(cfg, info, cfg.code, rngs)
        self.decoder = make_decoder(cfg, info, rngs)
        self.noise = noise
        self.code_activation = CODE_ACTIVATIONS[code_activation]

    def encode(self, x: jax.Array) -> jax.Array:
        """x (B, *input_shape) -> code (B, code)."""
        return self.code_activation(self.encoder(x))

    def decode(self, code: jax.Array) -> jax.Array:
        """code (B, code) -> logits (B, *input_shape)."""
        return self.decoder(code)

    def forward(self, x: jax.Array, keys: jax.Array) -> dict[str, jax.Array]:
        """x (B, ...), keys (B,) -> {"logits", "code"} (and "inputs", the corrupted x, when denoising)."""
        outputs = {}
        if self.noise is not None:
            x = jax.vmap(lambda xi, k: corrupt(xi, k, *self.noise))(x, keys)
            outputs["inputs"] = x
        code = self.encode(x)
        return {**outputs, "logits": self.decode(code), "code": code}

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> dict[str, jax.Array]:
        return self.forward(x, example_keys(x.shape[0], rngs))


class VAE(nnx.Module):
    """Variational autoencoder: the encoder gives the mean and log-variance of
    q(z|x) = N(mean, diag(exp(log_var))); z = mean + exp(log_var / 2) * eps (the
    reparameterisation), and the KL divergence to the N(0, I) prior in closed form."""

    def __init__(self, cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        self.encoder = make_encoder(cfg, info, 2 * cfg.code, rngs)
        self.decoder = make_decoder(cfg, info, rngs)
        self.code = cfg.code

    def posterior(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, ...) -> mean (B, code), log_var (B, code)."""
        mean, log_var = jnp.split(self.encoder(x), 2, axis=-1)
        return mean, log_var

    def encode(self, x: jax.Array) -> jax.Array:
        return self.posterior(x)[0]

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

    def forward(self, x: jax.Array, keys: jax.Array) -> dict[str, jax.Array]:
        """x (B, ...), keys (B,) -> {"logits" of p(x|z) at one z ~ q(z|x), "code": the mean, "kl" (B,)}."""
        mean, log_var = self.posterior(x)
        eps = jax.vmap(lambda k: jax.random.normal(k, (self.code,), mean.dtype))(keys)
        z = mean + jnp.exp(0.5 * log_var) * eps
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
        return {"logits": self.decode(z), "code": mean, "kl": kl}

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> dict[str, jax.Array]:
        return self.forward(x, example_keys(x.shape[0], rngs))

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n draws z ~ N(0, I) decoded -> mean images (n, *input_shape) in [0, 1]."""
        return jax.nn.sigmoid(self.decode(jax.random.normal(key, (n, self.code))))


class EncoderClassifier(nnx.Module):
    """An autoencoder's encoder and a dense head: x -> code -> [dense, activation,
    dropout]* -> logits (B, n_classes). `freeze` stops gradients at the code, so only
    the head learns. With `initialize: pretrained` the encoder's weights are a trained
    run's, copied in by `load_pretrained` (its initial weights here are placeholders
    drawn from their own seed, so the head's initialisation is the same either way);
    with `initialize: random` the whole source architecture is drawn from `rngs`."""

    def __init__(self, cfg, source_cfg, info: DatasetInfo, *, rngs: nnx.Rngs):
        source_rngs = nnx.Rngs(params=0) if cfg.initialize == "pretrained" else rngs
        source = source_cfg.model.build(source_cfg.info, source_rngs)
        self.encoder = source.encoder
        self.code_activation = getattr(source, "code_activation", CODE_ACTIVATIONS["linear"])
        self.code = source_cfg.model.code
        sizes = [self.code, *cfg.dense]
        self.dense = DenseStack(sizes, rngs=rngs)
        self.out = dense(sizes[-1], info.n_outputs, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.activation = ACTIVATIONS[source_cfg.model.activation]
        self.freeze = cfg.freeze

    def load_pretrained(self, source: nnx.Module) -> None:
        """Take the encoder weights of a trained autoencoder `source`."""
        nnx.update(self.encoder, nnx.state(source.encoder))

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        h = self.code_activation(self.encoder(x)[:, : self.code])  # a VAE's encoder: the mean half
        if self.freeze:
            h = jax.lax.stop_gradient(h)
        return self.out(self.dense(h, self.activation, dropout=self.dropout, rngs=rngs))
