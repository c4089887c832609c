"""Transformer building blocks and the decoder-only (GPT-like) language model.

Blocks are pre-LayerNorm: h + Attention(LN(h)), then h + MLP(LN(h)) with a GELU MLP;
dropout is applied to the embeddings and to each residual branch. Attention is Flax's
`nnx.dot_product_attention` over heads split from one fused q/k/v projection. For
generation the decoder carries a key/value cache of `context` positions per layer, so N
new tokens cost N one-position steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dlcli.data import DatasetInfo
from dlcli.specs.transformer import TransformerDecoderConfig

Cache = tuple[jax.Array, jax.Array]  # keys and values, each (B, context, heads, head size)


def sinusoidal_positions(positions: jax.Array, width: int) -> jax.Array:
    """positions (T,) -> (T, width): sin on the first half of the features, cos on the second."""
    frequencies = 1.0 / (10000.0 ** (jnp.arange(width // 2) / max(width // 2, 1)))
    angles = positions[:, None] * frequencies[None, :]
    table = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.pad(table, ((0, 0), (0, width - table.shape[-1])))


def rotate(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary positions: x (B, T, H, D) with its feature halves rotated by angles
    position x 10000^(-2i/D), so q.k depends on the offset between positions."""
    half = x.shape[-1] // 2
    frequencies = 1.0 / (10000.0 ** (jnp.arange(half) / half))
    angles = positions[:, None] * frequencies[None, :]  # (T, D/2)
    cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
    first, second = x[..., :half], x[..., half:]
    return jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with one fused q/k/v projection."""

    def __init__(self, width: int, heads: int, rotary: bool, *, rngs: nnx.Rngs):
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)
        self.heads, self.rotary = heads, rotary

    def project(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x (B, T, W), positions (T,) -> q, k, v, each (B, T, heads, W / heads)."""
        batch, length, _ = x.shape
        q, k, v = (a.reshape(batch, length, self.heads, -1) for a in jnp.split(self.qkv(x), 3, axis=-1))
        if self.rotary:
            q, k = rotate(q, positions), rotate(k, positions)
        return q, k, v

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
        """q (B, Tq, H, D), k and v (B, Tk, H, D), mask (B or 1, 1, Tq, Tk) -> (B, Tq, W)."""
        y = nnx.dot_product_attention(q, k, v, mask=mask)
        return self.out(y.reshape(*y.shape[:2], -1))


class DecoderBlock(nnx.Module):
    """Pre-LayerNorm causal self-attention and GELU MLP, each a residual branch."""

    def __init__(self, cfg: TransformerDecoderConfig, *, rngs: nnx.Rngs):
        self.attention_norm = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.attention = SelfAttention(cfg.width, cfg.heads, cfg.positions == "rotary", rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.mlp_in = nnx.Linear(cfg.width, cfg.width * cfg.mlp_ratio, rngs=rngs)
        self.mlp_out = nnx.Linear(cfg.width * cfg.mlp_ratio, cfg.width, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)

    def mlp(self, h: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        return self.dropout(self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(h)))), rngs=rngs)

    def __call__(self, h: jax.Array, mask: jax.Array, positions: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """h (B, T, W), mask (B, 1, T, T), positions (T,) -> (B, T, W)."""
        q, k, v = self.attention.project(self.attention_norm(h), positions)
        h = h + self.dropout(self.attention.attend(q, k, v, mask), rngs=rngs)
        return h + self.mlp(h, rngs)

    def step(self, h: jax.Array, cache: Cache, position: jax.Array) -> tuple[jax.Array, Cache]:
        """One new position: h (B, 1, W), the cache of earlier keys and values -> (B, 1, W), cache."""
        q, k, v = self.attention.project(self.attention_norm(h), position[None])
        keys = jax.lax.dynamic_update_slice(cache[0], k, (0, position, 0, 0))
        values = jax.lax.dynamic_update_slice(cache[1], v, (0, position, 0, 0))
        mask = (jnp.arange(keys.shape[1]) <= position)[None, None, None, :]
        h = h + self.attention.attend(q, keys, values, mask)
        return h + self.mlp(h, None), (keys, values)


class TransformerDecoder(nnx.Module):
    """Decoder-only language model: token ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, cfg: TransformerDecoderConfig, info: DatasetInfo, *, rngs: nnx.Rngs):
        self.embedding = nnx.Embed(info.vocab_size, cfg.width, rngs=rngs)
        if cfg.positions == "learned":
            self.position_table = nnx.Embed(cfg.context, cfg.width, rngs=rngs)
        self.blocks = nnx.List([DecoderBlock(cfg, rngs=rngs) for _ in range(cfg.layers)])
        self.final_norm = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.head = nnx.Linear(cfg.width, info.n_outputs, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.positions, self.width, self.context = cfg.positions, cfg.width, cfg.context
        self.heads = cfg.heads

    def embed(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        """tokens (B, T), positions (T,) -> (B, T, W)."""
        h = self.embedding(tokens)
        if self.positions == "learned":
            h = h + self.position_table(positions)[None]
        elif self.positions == "sinusoidal":
            h = h + sinusoidal_positions(positions, self.width)[None]
        return h

    def __call__(self, x: dict, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x {"inputs": (B, T) int, "lengths": (B,)} -> logits (B, T, V). Position t attends
        to positions <= t that lie inside the example's length."""
        tokens, lengths = x["inputs"], x["lengths"]
        positions = jnp.arange(tokens.shape[1])
        causal = positions[:, None] >= positions[None, :]  # (T, T)
        inside = positions[None, :] < lengths[:, None]  # (B, T) valid keys
        mask = causal[None, None] & inside[:, None, None, :]  # (B, 1, T, T)
        h = self.dropout(self.embed(tokens, positions), rngs=rngs)
        for block in self.blocks:
            h = block(h, mask, positions, rngs=rngs)
        return self.head(self.final_norm(h))

    # ----- one position at a time, with a key/value cache, for generation -----------
    def initial_carry(self, batch: int) -> tuple[list[Cache], jax.Array]:
        shape = (batch, self.context, self.heads, self.width // self.heads)
        return [(jnp.zeros(shape), jnp.zeros(shape)) for _ in self.blocks], jnp.zeros((), jnp.int32)

    def step(self, carry, tokens: jax.Array):
        """carry (caches, next position) and tokens (B,) -> new carry and logits (B, V);
        the same function as `__call__` (eval mode) at that position."""
        caches, position = carry
        h = self.embed(tokens[:, None], position[None])
        new_caches = []
        for block, cache in zip(self.blocks, caches):
            h, cache = block.step(h, cache, position)
            new_caches.append(cache)
        return (new_caches, position + 1), self.head(self.final_norm(h))[:, 0]
