"""Spec of the convolutional family (`model.name: cnn`)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from dlcli.data import DatasetInfo
from dlcli.errors import BadInput
from dlcli.schema import bounded
from dlcli.specs import MODELS
from dlcli.specs.base import ModelSpec
from dlcli.specs.layers import conv_params, dense_params, norm_params


@dataclasses.dataclass
class ConvBlock:
    """conv(kernel, stride) -> [batch norm] -> activation -> [pool(pool_size)]."""

    channels: int = bounded(32, low=1)
    kernel: int = bounded(3, low=1)
    stride: int = bounded(1, low=1)
    pool: Literal["max", "avg", "none"] = "max"
    pool_size: int = bounded(2, low=1)


def _default_blocks() -> list[ConvBlock]:
    return [ConvBlock(32), ConvBlock(64)]


@MODELS.register("cnn")
@dataclasses.dataclass
class CNNConfig(ModelSpec):
    """Conv blocks, then a flatten or global-average-pool head, then dense layers."""

    summary: ClassVar[str] = "convolutional network: conv blocks (channels, kernel, stride, pooling), dense head"
    reference_dataset: ClassVar[str] = "mnist"
    name: str = "cnn"
    blocks: list[ConvBlock] = dataclasses.field(default_factory=_default_blocks)
    padding: Literal["same", "valid"] = "same"
    batch_norm: bool = False
    dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)
    head: Literal["flatten", "gap"] = "flatten"
    dense: list[int] = bounded([128], low=1)
    activation: Literal["relu", "gelu", "tanh", "sigmoid"] = "relu"
    conv_impl: Literal["auto", "im2col", "xla"] = "auto"

    def validate(self, path: str) -> None:
        if not self.blocks:
            raise BadInput(f"{path}.blocks is empty; give at least one conv block, or use model.name: mlp")

    def feature_shape(self, info: DatasetInfo) -> tuple[int, int, int]:
        """(H, W, C) after the conv blocks."""
        height, width, channels = info.input_shape
        for block in self.blocks:
            height, width = (self._conv_out(n, block) for n in (height, width))
            if block.pool != "none":
                height, width = height // block.pool_size, width // block.pool_size
            channels = block.channels
        return height, width, channels

    def _conv_out(self, n: int, block: ConvBlock) -> int:
        if self.padding == "same":
            return -(-n // block.stride)
        return (n - block.kernel) // block.stride + 1

    def check_input(self, info: DatasetInfo) -> None:
        if not info.is_image:
            raise BadInput(f"model 'cnn' needs image input (height, width, channels) but the dataset gives shape "
                           f"{info.input_shape}; use model.name: mlp, or an image dataset (digits, mnist, fashion_mnist)")
        height, width, _ = self.feature_shape(info)
        if height < 1 or width < 1:
            raise BadInput(f"model.blocks shrink the {info.input_shape[0]}x{info.input_shape[1]} input to nothing; "
                           "use fewer blocks, smaller strides or pool_size, or padding: same")

    def param_count(self, info: DatasetInfo) -> int:
        chain = [info.input_shape[2], *(block.channels for block in self.blocks)]
        convs = sum(conv_params(chain[i: i + 2], block.kernel) for i, block in enumerate(self.blocks))
        norms = norm_params(chain[1:], "batch" if self.batch_norm else "none")
        height, width, channels = self.feature_shape(info)
        features = channels if self.head == "gap" else height * width * channels
        return convs + norms + dense_params([features, *self.dense, info.n_outputs])

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.cnn import CNN

        return CNN(self, info, rngs=rngs)
