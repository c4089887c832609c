"""Spec of the decoder-only Transformer (`model.name: transformer_decoder`), GPT-like:
token embeddings, positions (learned, sinusoidal or rotary), pre-LayerNorm blocks of
causal multi-head self-attention and a GELU MLP, a final LayerNorm and a linear head
on every position."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from dlcli.data import DatasetInfo
from dlcli.errors import BadInput
from dlcli.schema import bounded
from dlcli.specs import MODELS


@MODELS.register("transformer_decoder")
@dataclasses.dataclass
class TransformerDecoderConfig:
    """`context` is the longest sequence the model reads (the size of a learned position
    table and of the key/value cache used in generation)."""

    summary: ClassVar[str] = "decoder-only Transformer (GPT-like): causal self-attention, pre-LayerNorm, KV-cached sampling"
    reference_dataset: ClassVar[str] = "copy_memory"
    name: str = "transformer_decoder"
    width: int = bounded(128, low=1, high=65536)
    layers: int = bounded(4, low=1, high=256)
    heads: int = bounded(4, low=1, high=1024)
    mlp_ratio: int = bounded(4, low=1, high=64)
    dropout: float = bounded(0.1, low=0.0, high=1.0, high_open=True)
    positions: Literal["learned", "sinusoidal", "rotary"] = "learned"
    context: int = bounded(256, low=1, high=1_000_000)

    def validate(self, path: str) -> None:
        if self.width % self.heads:
            raise BadInput(f"{path}.width {self.width} is not divisible by {path}.heads {self.heads}; "
                           f"choose a width that is a multiple of the number of heads")
        if self.positions == "rotary" and (self.width // self.heads) % 2:
            raise BadInput(f"rotary positions need an even head size, but {path}.width / {path}.heads = "
                           f"{self.width // self.heads}; change width or heads")

    def check_input(self, info: DatasetInfo) -> None:
        if not (info.sequence and len(info.input_shape) == 1 and info.kind == "token_classification"):
            raise BadInput(f"model {self.name!r} predicts a token at every step from token inputs; use a dataset with a "
                           "label per step such as text or copy_memory")
        if info.input_shape[0] > self.context:
            raise BadInput(f"sequences of {info.input_shape[0]} steps are longer than model.context {self.context}; "
                           f"raise model.context or shorten the sequences")

    def param_count(self, info: DatasetInfo) -> int:
        width, vocab, hidden = self.width, info.vocab_size, self.width * self.mlp_ratio
        block = 4 * width + (3 * width * width + 3 * width) + (width * width + width) \
            + (width * hidden + hidden) + (hidden * width + width)
        positions = self.context * width if self.positions == "learned" else 0
        return vocab * width + positions + self.layers * block + 2 * width + width * info.n_outputs + info.n_outputs

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.transformer import TransformerDecoder

        return TransformerDecoder(self, info, rngs=rngs)
