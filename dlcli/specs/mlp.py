"""Spec of the multilayer perceptron family (`model.name: mlp`)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

from dlcli.data import DatasetInfo
from dlcli.errors import BadInput
from dlcli.schema import bounded
from dlcli.specs import MODELS
from dlcli.specs.base import ModelSpec
from dlcli.specs.layers import dense_params, norm_params


@MODELS.register("mlp")
@dataclasses.dataclass
class MLPConfig(ModelSpec):
    """Dense layers on the flattened input. `widths` (a list) wins over depth x width."""

    summary: ClassVar[str] = "multilayer perceptron: depth x width (or a list of widths), optional norm and dropout"
    reference_dataset: ClassVar[str] = "mnist"
    name: str = "mlp"
    depth: int = bounded(2, low=0, high=256)
    width: int = bounded(256, low=1)
    widths: list[int] | None = bounded(None, low=1)
    activation: Literal["relu", "gelu", "tanh", "sigmoid"] = "relu"
    dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)
    norm: Literal["none", "batch", "layer"] = "none"

    def hidden_widths(self) -> list[int]:
        return list(self.widths) if self.widths is not None else [self.width] * self.depth

    def check_input(self, info: DatasetInfo) -> None:
        """An MLP takes any fixed-size input (it flattens), but not sequences."""
        if info.sequence:
            raise BadInput("model 'mlp' takes fixed-size inputs, not sequences; use model.name: rnn, lstm or gru")

    def param_count(self, info: DatasetInfo) -> int:
        hidden = self.hidden_widths()
        return dense_params([math.prod(info.input_shape), *hidden, info.n_outputs]) + norm_params(hidden, self.norm)

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.mlp import MLP

        return MLP(self, info, rngs=rngs)
