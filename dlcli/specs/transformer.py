"""Specs of the Transformer family (Vaswani et al. 2017), all built from the same
pre-LayerNorm block (self-attention, optionally cross-attention, and a GELU MLP):

- `transformer_encoder` (BERT-like): bidirectional self-attention over tokens or feature
  vectors; a class token or mean pooling for one label per sequence, or a label per step;
- `transformer_decoder` (GPT-like): causal self-attention, a label per step, KV-cached sampling;
- `transformer_seq2seq`: encoder and decoder joined by cross-attention, teacher forcing in
  training, greedy decoding in evaluation and sampling;
- `vit`: a Vision Transformer, an encoder over non-overlapping image patches.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from dlcli.data import DatasetInfo
from dlcli.errors import BadInput
from dlcli.schema import bounded
from dlcli.specs import MODELS
from dlcli.specs.base import ModelSpec
from dlcli.specs.layers import dense_params, norm_params


@dataclasses.dataclass
class TransformerConfig(ModelSpec):
    """Fields every Transformer shares. `dropout` applies to the embeddings and every
    residual branch, `attention_dropout` to the attention weights."""

    reference_dataset: ClassVar[str]
    name: str
    width: int = bounded(128, low=1, high=65536)
    layers: int = bounded(4, low=1, high=256)
    heads: int = bounded(4, low=1, high=1024)
    mlp_ratio: int = bounded(4, low=1, high=64)
    dropout: float = bounded(0.1, low=0.0, high=1.0, high_open=True)
    attention_dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)
    positions: Literal["learned", "sinusoidal", "rotary"] = "learned"

    def validate(self, path: str) -> None:
        if self.width % self.heads:
            raise BadInput(f"{path}.width {self.width} is not divisible by {path}.heads {self.heads}; "
                           f"choose a width that is a multiple of the number of heads")
        if self.positions == "rotary" and (self.width // self.heads) % 2:
            raise BadInput(f"rotary positions need an even head size, but {path}.width / {path}.heads = "
                           f"{self.width // self.heads}; change width or heads")

    def block_params(self, cross: bool = False) -> int:
        """One block: two LayerNorms, fused q/k/v and output projections, the MLP; with
        `cross`, a third LayerNorm and the query, key/value and output projections."""
        width, hidden = self.width, self.width * self.mlp_ratio
        total = norm_params([width, width]) + dense_params([width, 3 * width]) + dense_params([width, width]) \
            + dense_params([width, hidden, width])
        if cross:
            total += norm_params([width]) + dense_params([width, width]) + dense_params([width, 2 * width]) \
                + dense_params([width, width])
        return total

    def position_params(self, rows: int) -> int:
        return rows * self.width if self.positions == "learned" else 0

    def head_params(self, n_outputs: int) -> int:
        """The final LayerNorm and the linear head."""
        return norm_params([self.width]) + dense_params([self.width, n_outputs])

    def check_context(self, steps: int, what: str) -> None:
        if steps > self.context:
            raise BadInput(f"{what} of {steps} steps are longer than model.context {self.context}; "
                           f"raise model.context to at least {steps} or shorten the sequences")


@MODELS.register("transformer_encoder")
@dataclasses.dataclass
class TransformerEncoderConfig(TransformerConfig):
    """`context` is the longest sequence the model reads (the size of a learned position
    table). With one label per sequence the encoder pools by a class token (`cls`) or
    the mean over valid steps; with a label per step it tags every step."""

    summary: ClassVar[str] = "encoder-only Transformer (BERT-like): bidirectional self-attention, class-token or mean pooling, or tagging"
    reference_dataset: ClassVar[str] = "associative_recall"
    name: str = "transformer_encoder"
    pooling: Literal["cls", "mean"] = "cls"
    context: int = bounded(256, low=1, high=1_000_000)

    def class_token(self, info: DatasetInfo) -> bool:
        return self.pooling == "cls" and info.kind != "token_classification"

    def check_input(self, info: DatasetInfo) -> None:
        if not info.sequence or info.kind == "sequence_to_sequence":
            raise BadInput(f"model {self.name!r} reads one sequence, but {describe(info)}; use a sequence dataset "
                           "(associative_recall, adding, varlen_parity, copy_memory) or model.name: transformer_seq2seq / vit")
        if info.autoregressive:
            raise BadInput("an encoder sees every position, so it would read the characters it must predict; "
                           "use model.name: transformer_decoder for language modelling")
        if self.positions == "learned":
            self.check_context(info.input_shape[0], "sequences")

    def param_count(self, info: DatasetInfo) -> int:
        cls = self.class_token(info)
        inputs = info.vocab_size * self.width if info.vocab_size else dense_params([info.input_shape[-1], self.width])
        return inputs + (self.width if cls else 0) + self.position_params(self.context + cls) \
            + self.layers * self.block_params() + self.head_params(info.n_outputs)

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.transformer import TransformerEncoder

        return TransformerEncoder(self, info, rngs=rngs)


@MODELS.register("transformer_decoder")
@dataclasses.dataclass
class TransformerDecoderConfig(TransformerConfig):
    """`context` is the longest sequence the model reads (the size of a learned position
    table and of the key/value cache used in generation)."""

    summary: ClassVar[str] = "decoder-only Transformer (GPT-like): causal self-attention, pre-LayerNorm, KV-cached sampling"
    reference_dataset: ClassVar[str] = "copy_memory"
    name: str = "transformer_decoder"
    context: int = bounded(256, low=1, high=1_000_000)

    def check_input(self, info: DatasetInfo) -> None:
        if not (info.sequence and len(info.input_shape) == 1 and info.kind == "token_classification"):
            raise BadInput(f"model {self.name!r} predicts a token at every step from token inputs; use a dataset with a "
                           "label per step such as text or copy_memory")
        self.check_context(info.input_shape[0], "sequences")

    def param_count(self, info: DatasetInfo) -> int:
        return info.vocab_size * self.width + self.position_params(self.context) \
            + self.layers * self.block_params() + self.head_params(info.n_outputs)

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.transformer import TransformerDecoder

        return TransformerDecoder(self, info, rngs=rngs)


@MODELS.register("transformer_seq2seq")
@dataclasses.dataclass
class TransformerSeq2SeqConfig(TransformerConfig):
    """`layers` encoder blocks and `layers` decoder blocks; source and target share the
    token embedding, and each side has positions for up to `context` steps."""

    summary: ClassVar[str] = "encoder-decoder Transformer: cross-attention, teacher forcing, greedy decoding"
    reference_dataset: ClassVar[str] = "reverse"
    name: str = "transformer_seq2seq"
    context: int = bounded(64, low=1, high=1_000_000)

    def check_input(self, info: DatasetInfo) -> None:
        if info.kind != "sequence_to_sequence":
            raise BadInput(f"model {self.name!r} maps a source sequence to a target sequence, but {describe(info)}; "
                           "use a sequence-to-sequence dataset (reverse, sort, addition)")
        self.check_context(info.input_shape[0], "source sequences")
        self.check_context(info.target_length, "target sequences")

    def param_count(self, info: DatasetInfo) -> int:
        return info.vocab_size * self.width + 2 * self.position_params(self.context) \
            + self.layers * (self.block_params() + self.block_params(cross=True)) + norm_params([self.width]) \
            + self.head_params(info.n_outputs)

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.transformer import TransformerSeq2Seq

        return TransformerSeq2Seq(self, info, rngs=rngs)


@MODELS.register("vit")
@dataclasses.dataclass
class ViTConfig(TransformerConfig):
    """Vision Transformer (Dosovitskiy et al. 2021): the image is cut into `patch` x
    `patch` squares, each projected to `width`, read by an encoder and pooled."""

    summary: ClassVar[str] = "Vision Transformer: patch embedding, encoder blocks, class-token or mean pooling"
    reference_dataset: ClassVar[str] = "digits"
    name: str = "vit"
    patch: int = bounded(4, low=1, high=4096)
    pooling: Literal["cls", "mean"] = "cls"
    layers: int = bounded(4, low=1, high=256)
    width: int = bounded(64, low=1, high=65536)
    dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)

    def patches(self, info: DatasetInfo) -> int:
        height, width, _ = info.input_shape
        return (height // self.patch) * (width // self.patch)

    def check_input(self, info: DatasetInfo) -> None:
        if not info.is_image or info.kind != "classification":
            raise BadInput(f"model 'vit' classifies images, but {describe(info)}; use mnist, fashion_mnist or digits")
        height, width, _ = info.input_shape
        if height % self.patch or width % self.patch:
            raise BadInput(f"model.patch {self.patch} does not divide the {height}x{width} images; choose a patch size "
                           f"that divides both sides (e.g. {', '.join(str(p) for p in divisors(height, width))})")

    def param_count(self, info: DatasetInfo) -> int:
        patch_inputs = self.patch * self.patch * info.input_shape[-1]
        cls = self.pooling == "cls"
        return dense_params([patch_inputs, self.width]) + (self.width if cls else 0) \
            + self.position_params(self.patches(info) + cls) + self.layers * self.block_params() \
            + self.head_params(info.n_outputs)

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.transformer import VisionTransformer

        return VisionTransformer(self, info, rngs=rngs)


def describe(info: DatasetInfo) -> str:
    """The dataset's shape of problem, for error messages."""
    if info.kind == "sequence_to_sequence":
        return "the dataset maps sequences to sequences"
    if info.sequence:
        return f"the dataset has sequences of {info.input_shape[0]} steps ({info.kind})"
    return f"the dataset has inputs of shape {info.input_shape} ({info.kind})"


def divisors(height: int, width: int) -> list[int]:
    """Patch sizes above 1 that divide both sides of an image."""
    return [p for p in range(2, min(height, width) + 1) if height % p == 0 and width % p == 0]
