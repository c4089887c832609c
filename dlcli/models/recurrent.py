"""Recurrent networks: Elman RNN, LSTM and GRU layers, stacked and optionally bidirectional.

Each direction of each layer computes its input projection W x_t + b for all time steps
in one matrix product (an embedding lookup for token inputs), then runs the cell as a
`lax.scan` over time that only multiplies the recurrent weights. Steps at or past an
example's length leave the state unchanged, so padding never changes a result; the
backward direction reads each example reversed within its own length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx

from dlcli.data import DatasetInfo

if TYPE_CHECKING:  # the specs build these modules; the modules name them in annotations only
    from dlcli.specs.recurrent import RecurrentConfig

Carry = tuple[jax.Array, ...]  # (h,) for rnn and gru, (h, c) for lstm; each (B, H)


def reverse_within_length(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """x (B, T, ...) with each example's first lengths[b] steps reversed, padding in place.
    Applying it twice gives x back."""
    steps = jnp.arange(x.shape[1])[None, :]
    index = jnp.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)  # (B, T)
    return jnp.take_along_axis(x, index.reshape(*index.shape, *([1] * (x.ndim - 2))), axis=1)


class TokenProjection(nnx.Module):
    """The input projection of token ids: a lookup of W's row plus the bias, initialised
    like a dense layer on one-hot inputs (LeCun normal over the vocabulary)."""

    def __init__(self, vocab_size: int, features: int, *, rngs: nnx.Rngs):
        self.embedding = nnx.Embed(vocab_size, features, embedding_init=nnx.initializers.lecun_normal(), rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((features,)))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens (...) int -> (..., features)."""
        return self.embedding(tokens) + self.bias[...]


class RecurrentDirection(nnx.Module):
    """One direction of one layer: input projection for every step, then the cell's scan."""

    def __init__(self, cfg: RecurrentConfig, in_features: int, tokens: bool, *, rngs: nnx.Rngs):
        self.cell, self.hidden, self.unroll = cfg.name, cfg.hidden, cfg.unroll
        self.activation = getattr(cfg, "activation", "tanh")
        gate_width = cfg.gates * cfg.hidden
        if tokens:
            self.input_projection = TokenProjection(in_features, gate_width, rngs=rngs)
        else:
            self.input_projection = nnx.Linear(in_features, gate_width, rngs=rngs)
        self.recurrent = nnx.Linear(cfg.hidden, gate_width, use_bias=cfg.recurrent_bias,
                                    kernel_init=nnx.initializers.orthogonal(), rngs=rngs)
        if cfg.name == "lstm":  # gate order i, f, g, o: a forget bias of 1 keeps memory at the start
            bias = self.input_projection.bias
            bias[...] = bias[...].at[cfg.hidden: 2 * cfg.hidden].set(1.0)

    def initial_carry(self, batch: int) -> Carry:
        zeros = jnp.zeros((batch, self.hidden), self.recurrent.kernel.dtype)  # the compute dtype
        return (zeros, zeros) if self.cell == "lstm" else (zeros,)

    def cell_step(self, carry: Carry, projected: jax.Array) -> Carry:
        """One step: carry (each (B, H)) and the projected input (B, gates x H) -> new carry."""
        h = carry[0]
        if self.cell == "rnn":
            pre = projected + self.recurrent(h)
            return (jnp.tanh(pre) if self.activation == "tanh" else jax.nn.relu(pre),)
        if self.cell == "lstm":
            i, f, g, o = jnp.split(projected + self.recurrent(h), 4, axis=-1)
            c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
            return jax.nn.sigmoid(o) * jnp.tanh(c), c
        x_r, x_z, x_n = jnp.split(projected, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(self.recurrent(h), 3, axis=-1)
        r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        return ((1.0 - z) * n + z * h,)

    def __call__(self, x: jax.Array, lengths: jax.Array, *, reverse: bool = False,
                 probe: jax.Array | None = None) -> tuple[jax.Array, Carry]:
        """x (B, T, F) or tokens (B, T); lengths (B,) -> outputs (B, T, H) and the final
        carry (the state at each example's last valid step). `probe` (B, T, H), zeros, is
        added to h_t so that its gradient is d(loss)/d(h_t)."""
        if reverse:
            x = reverse_within_length(x, lengths)
        projected = self.input_projection(x)  # (B, T, gates x H): all steps in one product
        valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]  # (B, T)

        def step(carry, inputs):
            projected_t, valid_t, probe_t = inputs
            new = self.cell_step(carry, projected_t)
            if probe_t is not None:
                new = (new[0] + probe_t, *new[1:])
            carry = tuple(jnp.where(valid_t[:, None], n, o) for n, o in zip(new, carry))
            return carry, carry[0]

        time_major = (projected.swapaxes(0, 1), valid.T, None if probe is None else probe.swapaxes(0, 1))
        final, outputs = jax.lax.scan(step, self.initial_carry(x.shape[0]), time_major, unroll=self.unroll)
        outputs = outputs.swapaxes(0, 1)  # (B, T, H)
        if reverse:
            outputs = reverse_within_length(outputs, lengths)
        return outputs, final


class RecurrentNetwork(nnx.Module):
    """Stacked recurrent layers and a dense head on the last valid step (B, K) or on
    every step (B, T, K) when the dataset labels every step."""

    def __init__(self, cfg: RecurrentConfig, info: DatasetInfo, *, rngs: nnx.Rngs):
        tokens = len(info.input_shape) == 1
        self.layers = nnx.List()
        for layer in range(cfg.layers):
            if layer == 0:
                in_features = info.vocab_size if tokens else info.input_shape[-1]
            else:
                in_features = cfg.hidden * cfg.directions
            self.layers.append(nnx.List([RecurrentDirection(cfg, in_features, tokens and layer == 0, rngs=rngs)
                                         for _ in range(cfg.directions)]))
        self.dropout = nnx.Dropout(cfg.dropout)
        self.head = nnx.Linear(cfg.hidden * cfg.directions, info.n_outputs, rngs=rngs)
        self.every_step = info.kind == "token_classification"
        self.hidden = cfg.hidden

    def __call__(self, x: dict, *, rngs: nnx.Rngs | None = None, probe: jax.Array | None = None) -> jax.Array:
        """x {"inputs": (B, T, F) or tokens (B, T), "lengths": (B,)} -> (B, K) or (B, T, K).
        `probe` (B, T, H) is added to the top layer's forward states (see `RecurrentDirection`)."""
        h, lengths = x["inputs"], x["lengths"]
        for index, layer in enumerate(self.layers):
            if index:
                h = self.dropout(h, rngs=rngs)
            top = index == len(self.layers) - 1
            results = [direction(h, lengths, reverse=d == 1, probe=probe if top and d == 0 else None)
                       for d, direction in enumerate(layer)]
            h = jnp.concatenate([outputs for outputs, _ in results], axis=-1)  # (B, T, H x directions)
            final = jnp.concatenate([carry[0] for _, carry in results], axis=-1)  # (B, H x directions)
        return self.head(self.dropout(h if self.every_step else final, rngs=rngs))

    # ----- one step at a time, for generation (unidirectional models) -----------------
    def initial_carry(self, batch: int) -> list[Carry]:
        return [layer[0].initial_carry(batch) for layer in self.layers]

    def step(self, carry: list[Carry], tokens: jax.Array) -> tuple[list[Carry], jax.Array]:
        """carry (one per layer) and tokens (B,) -> new carry and next-token logits (B, K);
        the same function as `__call__` (eval mode), one step at a time."""
        inputs, new_carry = tokens, []
        for layer, layer_carry in zip(self.layers, carry):
            direction = layer[0]
            layer_carry = direction.cell_step(layer_carry, direction.input_projection(inputs))
            new_carry.append(layer_carry)
            inputs = layer_carry[0]
        return new_carry, self.head(inputs)
