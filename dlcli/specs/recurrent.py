"""Specs of the recurrent family: `rnn` (Elman), `lstm` and `gru`.

All three share one shape: `layers` stacked recurrent layers of `hidden` units (two
directions each when `bidirectional`), dropout between layers and before the head, and
a dense head on the last valid step (many-to-one) or on every step (many-to-many, when
the dataset has a label per step).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from dlcli.data import DatasetInfo
from dlcli.errors import BadInput
from dlcli.schema import bounded
from dlcli.specs import MODELS
from dlcli.specs.base import ModelSpec
from dlcli.specs.layers import dense_params


@dataclasses.dataclass
class RecurrentConfig(ModelSpec):
    """Fields the three cells share; `unroll` is how many time steps one scan iteration runs."""

    recurrent: ClassVar[bool] = True
    gates: ClassVar[int]
    recurrent_bias: ClassVar[bool]
    reference_dataset: ClassVar[str] = "adding"
    name: str
    hidden: int = bounded(128, low=1, high=65536)
    layers: int = bounded(1, low=1, high=64)
    bidirectional: bool = False
    dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)
    unroll: int = bounded(1, low=1, high=1024)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def check_input(self, info: DatasetInfo) -> None:
        if not info.sequence:
            raise BadInput(f"model {self.name!r} reads sequences, but the dataset has inputs of shape {info.input_shape}; "
                           "use a sequence dataset (adding, copy_memory, forecast, varlen_parity, text) or model.name: mlp")
        if self.bidirectional and info.autoregressive:
            raise BadInput(f"a bidirectional {self.name} would see the characters it must predict; "
                           "set model.bidirectional: false for language modelling")

    def param_count(self, info: DatasetInfo) -> int:
        gate_width = self.gates * self.hidden
        recurrent_bias = gate_width if self.recurrent_bias else 0
        total = 0
        for layer in range(self.layers):
            if layer == 0:
                inputs = info.vocab_size if len(info.input_shape) == 1 else info.input_shape[-1]
            else:
                inputs = self.hidden * self.directions
            # the input projection (a dense layer, or for tokens an embedding row plus a bias), the recurrent weights
            per_direction = dense_params([inputs, gate_width]) + self.hidden * gate_width + recurrent_bias
            total += per_direction * self.directions
        return total + dense_params([self.hidden * self.directions, info.n_outputs])

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.recurrent import RecurrentNetwork

        return RecurrentNetwork(self, info, rngs=rngs)


@MODELS.register("rnn")
@dataclasses.dataclass
class RNNConfig(RecurrentConfig):
    """Elman RNN: h_t = act(W x_t + U h_{t-1} + b)."""

    summary: ClassVar[str] = "Elman recurrent network (tanh or relu), stacked, optionally bidirectional"
    gates: ClassVar[int] = 1
    recurrent_bias: ClassVar[bool] = False
    name: str = "rnn"
    activation: Literal["tanh", "relu"] = "tanh"


@MODELS.register("lstm")
@dataclasses.dataclass
class LSTMConfig(RecurrentConfig):
    """LSTM (Hochreiter & Schmidhuber 1997) with input, forget and output gates; the
    forget gate's bias starts at 1 so memory is kept early in training."""

    summary: ClassVar[str] = "long short-term memory: input/forget/output gates and a cell state"
    gates: ClassVar[int] = 4
    recurrent_bias: ClassVar[bool] = False
    name: str = "lstm"


@MODELS.register("gru")
@dataclasses.dataclass
class GRUConfig(RecurrentConfig):
    """GRU (Cho et al. 2014) with reset and update gates; like cuDNN and PyTorch it keeps
    a recurrent bias, because the reset gate multiplies (U_n h + b_n)."""

    summary: ClassVar[str] = "gated recurrent unit: reset and update gates, about 3/4 of an LSTM's parameters"
    gates: ClassVar[int] = 3
    recurrent_bias: ClassVar[bool] = True
    name: str = "gru"
