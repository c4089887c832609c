"""The Transformer family: attention, blocks, encoder and decoder stacks, and the four
models (encoder-only, decoder-only, encoder-decoder, Vision Transformer).

Blocks are pre-LayerNorm: h + SelfAttention(LN(h)), then (in an encoder-decoder's
decoder) h + CrossAttention(LN(h), encoder output), then h + MLP(LN(h)) with a GELU
MLP. Dropout applies to the embeddings and each residual branch, and optionally to the
attention weights. Attention is Flax's `nnx.dot_product_attention`; masks are boolean
(B or 1, 1, Tq, Tk), True where a query may attend to a key. For generation a decoder
carries a key/value cache of `context` positions per block, so N new tokens cost N
one-position steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx

from dlcli.data import DatasetInfo
from dlcli.data.seq2seq import START
from dlcli.models.precision import param_dtype

if TYPE_CHECKING:  # the specs build these modules; the modules name them in annotations only
    from dlcli.specs.transformer import (TransformerConfig, TransformerDecoderConfig, TransformerEncoderConfig,
                                         TransformerSeq2SeqConfig, ViTConfig)

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
    cos, sin = (table(angles)[None, :, None, :].astype(x.dtype) for table in (jnp.cos, jnp.sin))
    first, second = x[..., :half], x[..., half:]
    return jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


def key_mask(lengths: jax.Array, steps: int) -> jax.Array:
    """lengths (B,) -> (B, 1, 1, steps): keys inside each example's length."""
    return (jnp.arange(steps)[None, :] < lengths[:, None])[:, None, None, :]


def causal_mask(steps: int) -> jax.Array:
    """(1, 1, steps, steps): position t attends to positions <= t."""
    positions = jnp.arange(steps)
    return (positions[:, None] >= positions[None, :])[None, None]


class Attention(nnx.Module):
    """Multi-head attention with `heads` heads of width / heads features. Self-attention
    projects q, k and v with one fused matrix; cross-attention (`cross`) projects the
    queries from the decoder and the keys and values from the encoder's output."""

    def __init__(self, width: int, heads: int, *, rotary: bool = False, cross: bool = False, dropout: float = 0.0,
                 rngs: nnx.Rngs):
        if cross:
            self.query = nnx.Linear(width, width, rngs=rngs)
            self.key_value = nnx.Linear(width, 2 * width, rngs=rngs)
        else:
            self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)
        self.heads, self.rotary, self.dropout_rate = heads, rotary, dropout
        self.deterministic = False  # set by model.train() and model.eval(), like nnx.Dropout's

    def split_heads(self, a: jax.Array) -> jax.Array:
        """(B, T, W) -> (B, T, heads, W / heads)."""
        return a.reshape(*a.shape[:2], self.heads, -1)

    def project(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Self-attention: x (B, T, W), positions (T,) -> q, k, v, each (B, T, heads, W / heads)."""
        q, k, v = (self.split_heads(a) for a in jnp.split(self.qkv(x), 3, axis=-1))
        if self.rotary:
            q, k = rotate(q, positions), rotate(k, positions)
        return q, k, v

    def project_memory(self, memory: jax.Array) -> Cache:
        """Cross-attention: the encoder's output (B, S, W) -> keys and values, each (B, S, heads, W / heads)."""
        keys, values = jnp.split(self.key_value(memory), 2, axis=-1)
        return self.split_heads(keys), self.split_heads(values)

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        """q (B, Tq, H, D), k and v (B, Tk, H, D), mask (B or 1, 1, Tq, Tk) -> (B, Tq, W)."""
        drop = self.dropout_rate > 0 and not self.deterministic
        y = nnx.dot_product_attention(q, k, v, mask=mask, dropout_rate=self.dropout_rate if drop else 0.0,
                                      dropout_rng=rngs.dropout() if drop else None, deterministic=not drop)
        return self.out(y.reshape(*y.shape[:2], -1))


class Block(nnx.Module):
    """Pre-LayerNorm block: self-attention, cross-attention to an encoder's output (when
    `cross`) and a GELU MLP, each a residual branch. The mask decides whether the
    self-attention is bidirectional (encoder) or causal (decoder)."""

    def __init__(self, cfg: TransformerConfig, *, cross: bool = False, rngs: nnx.Rngs):
        self.attention_norm = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.attention = Attention(cfg.width, cfg.heads, rotary=cfg.positions == "rotary",
                                   dropout=cfg.attention_dropout, rngs=rngs)
        if cross:
            self.cross_norm = nnx.LayerNorm(cfg.width, rngs=rngs)
            self.cross_attention = Attention(cfg.width, cfg.heads, cross=True, dropout=cfg.attention_dropout, rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.mlp_in = nnx.Linear(cfg.width, cfg.width * cfg.mlp_ratio, rngs=rngs)
        self.mlp_out = nnx.Linear(cfg.width * cfg.mlp_ratio, cfg.width, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.cross = cross

    def mlp(self, h: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        return h + self.dropout(self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(h)))), rngs=rngs)

    def cross_attend(self, h: jax.Array, memory: Cache, memory_mask: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        """h (B, T, W), the encoder's keys and values, memory_mask (B, 1, 1, S) -> (B, T, W)."""
        q = self.cross_attention.split_heads(self.cross_attention.query(self.cross_norm(h)))
        return h + self.dropout(self.cross_attention.attend(q, *memory, memory_mask, rngs), rngs=rngs)

    def __call__(self, h: jax.Array, mask: jax.Array, positions: jax.Array, memory: Cache | None = None,
                 memory_mask: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """h (B, T, W), mask (B or 1, 1, T, T), positions (T,); with cross-attention the
        encoder's keys and values (`project_memory`) and their mask (B, 1, 1, S) -> (B, T, W)."""
        q, k, v = self.attention.project(self.attention_norm(h), positions)
        h = h + self.dropout(self.attention.attend(q, k, v, mask, rngs), rngs=rngs)
        if self.cross:
            h = self.cross_attend(h, memory, memory_mask, rngs)
        return self.mlp(h, rngs)

    def step(self, h: jax.Array, cache: Cache, position: jax.Array, memory: Cache | None = None,
             memory_mask: jax.Array | None = None) -> tuple[jax.Array, Cache]:
        """One new position (evaluation mode): h (B, 1, W) and the cache of earlier keys
        and values -> (B, 1, W) and the cache with this position written in."""
        q, k, v = self.attention.project(self.attention_norm(h), position[None])
        keys = jax.lax.dynamic_update_slice(cache[0], k, (0, position, 0, 0))
        values = jax.lax.dynamic_update_slice(cache[1], v, (0, position, 0, 0))
        mask = (jnp.arange(keys.shape[1]) <= position)[None, None, None, :]
        h = h + self.attention.attend(q, keys, values, mask, None)
        if self.cross:
            h = self.cross_attend(h, memory, memory_mask, None)
        return self.mlp(h, None), (keys, values)


class Positions(nnx.Module):
    """Adds position information to embedded steps: a learned table of `rows` positions,
    or sinusoids. Rotary positions act inside attention instead, so nothing is added."""

    def __init__(self, kind: str, width: int, rows: int, *, rngs: nnx.Rngs):
        if kind == "learned":
            self.table = nnx.Embed(rows, width, rngs=rngs)
        self.kind, self.width = kind, width

    def __call__(self, h: jax.Array, positions: jax.Array) -> jax.Array:
        """h (B, T, W), positions (T,) -> (B, T, W)."""
        if self.kind == "learned":
            return h + self.table(positions)[None]
        if self.kind == "sinusoidal":
            return h + sinusoidal_positions(positions, self.width)[None].astype(h.dtype)
        return h


class Encoder(nnx.Module):
    """Bidirectional blocks over embedded steps, padding masked out; with `class_token` a
    learned vector is prepended as step 0 and read out for the whole sequence."""

    def __init__(self, cfg: TransformerConfig, position_rows: int, class_token: bool, *, rngs: nnx.Rngs):
        if class_token:
            self.class_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, cfg.width)))
        self.positions = Positions(cfg.positions, cfg.width, position_rows, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.layers)])
        self.final_norm = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.has_class_token = class_token

    def __call__(self, h: jax.Array, lengths: jax.Array, *, rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array]:
        """h (B, T, W), lengths (B,) -> normalised outputs (B, T', W) and lengths (B,),
        where T' = T + 1 with the class token first."""
        if self.has_class_token:
            h = jnp.concatenate([jnp.broadcast_to(self.class_token[...], (h.shape[0], 1, h.shape[2])), h], axis=1)
            lengths = lengths + 1
        positions = jnp.arange(h.shape[1])
        h = self.dropout(self.positions(h, positions), rngs=rngs)
        mask = key_mask(lengths, h.shape[1])
        for block in self.blocks:
            h = block(h, mask, positions, rngs=rngs)
        return self.final_norm(h), lengths


class Decoder(nnx.Module):
    """Causal blocks over embedded steps, with cross-attention to an encoder's output
    when `cross`; `initial_carry` and `step` run it one position at a time."""

    def __init__(self, cfg: TransformerConfig, *, cross: bool, rngs: nnx.Rngs):
        self.positions = Positions(cfg.positions, cfg.width, cfg.context, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, cross=cross, rngs=rngs) for _ in range(cfg.layers)])
        self.final_norm = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.cache_shape = (cfg.context, cfg.heads, cfg.width // cfg.heads)

    def __call__(self, h: jax.Array, lengths: jax.Array, memory: jax.Array | None = None,
                 memory_lengths: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """h (B, T, W), lengths (B,); with cross-attention the encoder's output (B, S, W)
        and its lengths (B,) -> normalised outputs (B, T, W). Step t sees steps <= t
        inside the example's length."""
        positions = jnp.arange(h.shape[1])
        mask = causal_mask(h.shape[1]) & key_mask(lengths, h.shape[1])
        if memory is None:
            kv, memory_mask = [None] * len(self.blocks), None
        else:
            kv, memory_mask = self.memory(memory), key_mask(memory_lengths, memory.shape[1])
        h = self.dropout(self.positions(h, positions), rngs=rngs)
        for block, block_kv in zip(self.blocks, kv):
            h = block(h, mask, positions, block_kv, memory_mask, rngs=rngs)
        return self.final_norm(h)

    def initial_carry(self, batch: int) -> tuple[list[Cache], jax.Array]:
        """Empty key/value caches, one per block, and the next position 0."""
        shape, dtype = (batch, *self.cache_shape), param_dtype(self)
        return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in self.blocks], jnp.zeros((), jnp.int32)

    def memory(self, memory: jax.Array) -> list[Cache]:
        """The encoder's output (B, S, W) -> each block's cross-attention keys and values,
        computed once for a whole sequence or generation."""
        return [block.cross_attention.project_memory(memory) for block in self.blocks]

    def step(self, carry, h: jax.Array, memory: list[Cache] | None = None, memory_mask: jax.Array | None = None):
        """carry (caches, next position), h (B, 1, W) the embedded new step -> new carry
        and the normalised output (B, 1, W), equal to `__call__` at that position."""
        caches, position = carry
        h = self.positions(h, position[None])
        new_caches = []
        for i, (block, cache) in enumerate(zip(self.blocks, caches)):
            h, cache = block.step(h, cache, position, None if memory is None else memory[i], memory_mask)
            new_caches.append(cache)
        return (new_caches, position + 1), self.final_norm(h)


class TransformerEncoder(nnx.Module):
    """Encoder-only model: tokens (B, T) or features (B, T, F) -> logits (B, K) for one
    label per sequence (class token or mean pooling), or (B, T, K) for one per step."""

    def __init__(self, cfg: TransformerEncoderConfig, info: DatasetInfo, *, rngs: nnx.Rngs):
        if info.vocab_size:
            self.embedding = nnx.Embed(info.vocab_size, cfg.width, rngs=rngs)
        else:
            self.embedding = nnx.Linear(info.input_shape[-1], cfg.width, rngs=rngs)
        class_token = cfg.class_token(info)
        self.encoder = Encoder(cfg, cfg.context + class_token, class_token, rngs=rngs)
        self.head = nnx.Linear(cfg.width, info.n_outputs, rngs=rngs)
        self.every_step = info.kind == "token_classification"
        self.pooling = cfg.pooling

    def __call__(self, x: dict, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x {"inputs": (B, T) int or (B, T, F), "lengths": (B,)} -> (B, K) or (B, T, K)."""
        h, lengths = self.encoder(self.embedding(x["inputs"]), x["lengths"], rngs=rngs)
        if self.every_step:
            return self.head(h)
        return self.head(pool(h, lengths, self.pooling))


class TransformerDecoder(nnx.Module):
    """Decoder-only language model: token ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, cfg: TransformerDecoderConfig, info: DatasetInfo, *, rngs: nnx.Rngs):
        self.embedding = nnx.Embed(info.vocab_size, cfg.width, rngs=rngs)
        self.decoder = Decoder(cfg, cross=False, rngs=rngs)
        self.head = nnx.Linear(cfg.width, info.n_outputs, rngs=rngs)

    def __call__(self, x: dict, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x {"inputs": (B, T) int, "lengths": (B,)} -> logits (B, T, V). Position t
        attends to positions <= t that lie inside the example's length."""
        return self.head(self.decoder(self.embedding(x["inputs"]), x["lengths"], rngs=rngs))

    def initial_carry(self, batch: int) -> tuple[list[Cache], jax.Array]:
        return self.decoder.initial_carry(batch)

    def step(self, carry, tokens: jax.Array):
        """carry (caches, next position) and tokens (B,) -> new carry and logits (B, V);
        the same function as `__call__` (evaluation mode) at that position."""
        carry, h = self.decoder.step(carry, self.embedding(tokens[:, None]))
        return carry, self.head(h)[:, 0]


class TransformerSeq2Seq(nnx.Module):
    """Encoder-decoder: a source (B, S) and the target shifted right (B, T) -> logits
    (B, T, V) for the target (teacher forcing); `greedy_decode` writes the target
    itself, one most-likely token at a time. Source and target share the token embedding."""

    def __init__(self, cfg: TransformerSeq2SeqConfig, info: DatasetInfo, *, rngs: nnx.Rngs):
        self.embedding = nnx.Embed(info.vocab_size, cfg.width, rngs=rngs)
        self.encoder = Encoder(cfg, cfg.context, class_token=False, rngs=rngs)
        self.decoder = Decoder(cfg, cross=True, rngs=rngs)
        self.head = nnx.Linear(cfg.width, info.n_outputs, rngs=rngs)

    def encode(self, x: dict, rngs: nnx.Rngs | None = None) -> jax.Array:
        """The source x["inputs"] (B, S) -> the encoder's output (B, S, W)."""
        return self.encoder(self.embedding(x["inputs"]), x["lengths"], rngs=rngs)[0]

    def __call__(self, x: dict, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x {"inputs": (B, S), "lengths": (B,), "targets_in": (B, T)} -> logits (B, T, V)."""
        return self.teacher_forced(x, self.encode(x, rngs), rngs)

    def teacher_forced(self, x: dict, encoded: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        """`__call__` given the encoder's output (B, S, W) of x's source."""
        targets_in = x["targets_in"]
        full = jnp.full(targets_in.shape[0], targets_in.shape[1])
        return self.head(self.decoder(self.embedding(targets_in), full, encoded, x["lengths"], rngs=rngs))

    def greedy_decode(self, x: dict, encoded: jax.Array | None = None) -> jax.Array:
        """x {"inputs": (B, S), "lengths": (B,), "targets_in": (B, T)} (only the shape of
        targets_in is read) -> (B, T) token ids, each the most likely given the source and
        the tokens before it; one cached decoder step per token. `encoded`, the encoder's
        output for x's source, is computed here unless given."""
        memory = self.decoder.memory(self.encode(x) if encoded is None else encoded)
        memory_mask = key_mask(x["lengths"], x["inputs"].shape[1])
        batch, steps = x["targets_in"].shape

        def next_token(state, _):
            carry, token = state
            carry, h = self.decoder.step(carry, self.embedding(token[:, None]), memory, memory_mask)
            token = self.head(h)[:, 0].argmax(-1).astype(jnp.int32)
            return (carry, token), token

        start = (self.decoder.initial_carry(batch), jnp.full(batch, START, jnp.int32))
        return jax.lax.scan(next_token, start, length=steps)[1].T


class VisionTransformer(nnx.Module):
    """ViT: images (B, H, W, C) -> logits (B, K), via (H/p)(W/p) patches of p x p pixels
    each projected to `width`, an encoder and class-token or mean pooling."""

    def __init__(self, cfg: ViTConfig, info: DatasetInfo, *, rngs: nnx.Rngs):
        channels = info.input_shape[-1]
        self.patch_embedding = nnx.Linear(cfg.patch * cfg.patch * channels, cfg.width, rngs=rngs)
        class_token = cfg.pooling == "cls"
        self.encoder = Encoder(cfg, cfg.patches(info) + class_token, class_token, rngs=rngs)
        self.head = nnx.Linear(cfg.width, info.n_outputs, rngs=rngs)
        self.patch, self.pooling = cfg.patch, cfg.pooling

    def patches(self, images: jax.Array) -> jax.Array:
        """(B, H, W, C) -> (B, H/p x W/p, p x p x C), patches in row-major order."""
        batch, height, width, channels = images.shape
        p = self.patch
        grid = images.reshape(batch, height // p, p, width // p, p, channels).transpose(0, 1, 3, 2, 4, 5)
        return grid.reshape(batch, (height // p) * (width // p), p * p * channels)

    def __call__(self, images: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """images (B, H, W, C) -> logits (B, K)."""
        h = self.patch_embedding(self.patches(images))
        h, lengths = self.encoder(h, jnp.full(h.shape[0], h.shape[1]), rngs=rngs)
        return self.head(pool(h, lengths, self.pooling))


def pool(h: jax.Array, lengths: jax.Array, pooling: str) -> jax.Array:
    """h (B, T, W) -> (B, W): the class token (step 0), or the mean over valid steps."""
    if pooling == "cls":
        return h[:, 0]
    valid = (jnp.arange(h.shape[1])[None, :] < lengths[:, None])[..., None]
    return (h * valid).sum(axis=1) / lengths[:, None]
