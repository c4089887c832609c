"""Spec of the GAN family (`model.name: gan`): a generator and a discriminator trained
together, MLP (`architecture: mlp`) or DCGAN-style convolutional (`architecture: dcgan`).

The two networks have their own Adam optimizers (`g_learning_rate`, `d_learning_rate`,
`b1` 0.5 and `b2` as in DCGAN); `loss` is `non_saturating` (the original GAN with the
generator maximising log D(G(z))), `hinge` or `wgan_gp` (Wasserstein critic with the
gradient penalty `gp_weight`, 10 unless given); the discriminator takes `n_critic`
steps per generator step and sees `pack` samples at once (PacGAN); `ema` keeps an
exponential moving average of the generator's weights for evaluation and sampling.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

from dlcli.data import DatasetInfo
from dlcli.errors import BadInput
from dlcli.schema import bounded
from dlcli.specs import MODELS, dense_params


@MODELS.register("gan")
@dataclasses.dataclass
class GANConfig:
    summary: ClassVar[str] = "GAN: MLP or DCGAN generator and discriminator; non-saturating, hinge or WGAN-GP loss"
    reference_dataset: ClassVar[str] = "ring8"
    task_kind: ClassVar[str] = "generation"
    generative: ClassVar[bool] = True
    metrics: ClassVar[tuple[str, ...]] = ()
    name: str = "gan"
    architecture: Literal["mlp", "dcgan"] = "mlp"
    latent: int = bounded(64, low=1)
    generator: list[int] = bounded([256, 256], low=1)
    discriminator: list[int] = bounded([256, 256], low=1)
    norm: Literal["none", "batch", "layer"] = "none"
    loss: Literal["non_saturating", "hinge", "wgan_gp"] = "non_saturating"
    gp_weight: float | None = bounded(None, low=0.0, low_open=True)
    n_critic: int = bounded(1, low=1)
    pack: int = bounded(1, low=1)
    ema: float | None = bounded(None, low=0.0, high=1.0, low_open=True, high_open=True)
    g_learning_rate: float = bounded(2e-4, low=0.0, low_open=True)
    d_learning_rate: float = bounded(2e-4, low=0.0, low_open=True)
    b1: float = bounded(0.5, low=0.0, high=1.0, high_open=True)
    b2: float = bounded(0.999, low=0.0, high=1.0, high_open=True)

    def validate(self, path: str) -> None:
        if self.gp_weight is not None and self.loss != "wgan_gp":
            raise BadInput(f"{path}.gp_weight is set but the {self.loss} loss has no gradient penalty; "
                           f"remove gp_weight or set {path}.loss: wgan_gp")

    @property
    def penalty(self) -> float:
        """The gradient penalty's weight (0 without one)."""
        return (10.0 if self.gp_weight is None else self.gp_weight) if self.loss == "wgan_gp" else 0.0

    def check_input(self, info: DatasetInfo) -> None:
        if info.sequence:
            raise BadInput("model 'gan' generates fixed-size data, not sequences; use ring8, grid25 or an image dataset")
        if self.architecture == "dcgan" and not info.is_image:
            raise BadInput(f"an image generator (architecture: dcgan) cannot model data of shape {info.input_shape}; "
                           "use architecture: mlp for 2-D points")

    def generator_params(self, info: DatasetInfo) -> int:
        norm = 2 * sum(self.generator) if self.norm != "none" else 0
        return dense_params([self.latent, *self.generator, math.prod(info.input_shape)]) + norm

    def discriminator_params(self, info: DatasetInfo) -> int:
        return dense_params([self.pack * math.prod(info.input_shape), *self.discriminator, 1])

    def param_count(self, info: DatasetInfo) -> int:
        return self.generator_params(info) + self.discriminator_params(info)

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.gan import GAN

        return GAN(self, info, rngs=rngs)
