"""Spec of the GAN family (`model.name: gan`): a generator and a discriminator trained
together, MLP (`architecture: mlp`, widths `generator` and `discriminator`) or
DCGAN-style convolutional (`architecture: dcgan`, channels `g_channels` and `d_channels`,
optional dense layers `g_dense` before the generator's first feature map and `d_dense`
after the discriminator's last convolution; kernel sizes `g_kernel` and `d_kernel`, 3, 4
or 5; `upsampling` sub_pixel or transposed (stride-2 transposed convolutions);
`spectral_norm` divides every discriminator kernel by its largest singular value;
`conditional` makes both networks take a class: the generator one-hot beside its
latent, the discriminator a projection of a class embedding on its last features).

The two networks have their own Adam optimizers (`g_learning_rate`, `d_learning_rate`,
`b1` 0.5 and `b2` as in DCGAN); `loss` is `non_saturating` (the original GAN with the
generator maximising log D(G(z))), `hinge` or `wgan_gp` (Wasserstein critic with the
gradient penalty `gp_weight`, 10 unless given); `r1_weight` adds the R1 penalty
(Mescheder et al. 2018: r1_weight / 2 * E ||grad_x D(x)||^2 on real samples) to a
non_saturating or hinge discriminator; the discriminator takes `n_critic`
steps per generator step and sees `pack` samples at once (PacGAN); `ema` keeps an
exponential moving average of the generator's weights for evaluation and sampling;
`classifier_run` names a dlcli classification run on the same images whose predictions
and penultimate features measure the samples (class coverage, Fréchet distance).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

from dlcli.data import DatasetInfo
from dlcli.errors import BadInput
from dlcli.schema import bounded
from dlcli.specs import MODELS
from dlcli.specs.base import ModelSpec, check_unit_pixels
from dlcli.specs.layers import conv_params, dense_params, norm_params


@MODELS.register("gan")
@dataclasses.dataclass
class GANConfig(ModelSpec):
    summary: ClassVar[str] = "GAN: MLP or DCGAN generator and discriminator; non-saturating, hinge or WGAN-GP loss"
    reference_dataset: ClassVar[str] = "ring8"
    task_kind: ClassVar[str] = "generation"
    generative: ClassVar[bool] = True
    name: str = "gan"
    architecture: Literal["mlp", "dcgan"] = "mlp"
    latent: int = bounded(64, low=1)
    init: Literal["fan_in_uniform", "flax"] = "fan_in_uniform"
    generator: list[int] = bounded([256, 256], low=1)
    discriminator: list[int] = bounded([256, 256], low=1)
    g_channels: list[int] = bounded([64, 32, 16], low=1)
    d_channels: list[int] = bounded([32, 64], low=1)
    g_dense: list[int] = bounded([], low=1)
    d_dense: list[int] = bounded([], low=1)
    g_kernel: Literal[3, 4, 5] = 3
    d_kernel: Literal[3, 4, 5] = 3
    upsampling: Literal["sub_pixel", "transposed"] = "sub_pixel"
    spectral_norm: bool = False
    conditional: bool = False
    norm: Literal["none", "batch", "layer"] = "none"
    loss: Literal["non_saturating", "hinge", "wgan_gp"] = "non_saturating"
    gp_weight: float | None = bounded(None, low=0.0, low_open=True)
    r1_weight: float | None = bounded(None, low=0.0, low_open=True)
    n_critic: int = bounded(1, low=1)
    pack: int = bounded(1, low=1)
    ema: float | None = bounded(None, low=0.0, high=1.0, low_open=True, high_open=True)
    g_learning_rate: float = bounded(2e-4, low=0.0, low_open=True)
    d_learning_rate: float = bounded(2e-4, low=0.0, low_open=True)
    b1: float = bounded(0.5, low=0.0, high=1.0, high_open=True)
    b2: float = bounded(0.999, low=0.0, high=1.0, high_open=True)
    classifier_run: str | None = None

    def validate(self, path: str) -> None:
        dcgan_only = {"g_kernel": 3, "d_kernel": 3, "upsampling": "sub_pixel", "spectral_norm": False,
                      "conditional": False}
        for name, default in dcgan_only.items():
            if self.architecture != "dcgan" and getattr(self, name) != default:
                raise BadInput(f"{path}.{name} shapes the convolutional networks, but {path}.architecture is "
                               f"{self.architecture!r}; remove {name} or set {path}.architecture: dcgan")
        if self.conditional and self.pack != 1:
            raise BadInput(f"{path}.conditional scores each sample with its own class, but {path}.pack is {self.pack}; "
                           f"remove pack (or set {path}.pack: 1)")
        if self.gp_weight is not None and self.loss != "wgan_gp":
            raise BadInput(f"{path}.gp_weight is set but the {self.loss} loss has no gradient penalty; "
                           f"remove gp_weight or set {path}.loss: wgan_gp")
        if self.r1_weight is not None and self.loss == "wgan_gp":
            raise BadInput(f"{path}.r1_weight is set but the wgan_gp loss has its own penalty (gp_weight); "
                           f"remove r1_weight or use {path}.loss: non_saturating or hinge")

    @property
    def penalty(self) -> float:
        """The gradient penalty's weight (0 without one)."""
        return (10.0 if self.gp_weight is None else self.gp_weight) if self.loss == "wgan_gp" else 0.0

    def check_experiment(self, cfg) -> None:
        """Images in [0, 1]; no optimizer section (each network has its own Adam)."""
        if cfg.info.is_image:
            check_unit_pixels(self, cfg.data)
        if cfg.optimizer != type(cfg.optimizer)():
            raise BadInput(f"model {self.name!r} has an Adam optimizer per network (model.g_learning_rate, "
                           "model.d_learning_rate, model.b1, model.b2); remove the optimizer section")

    def check_input(self, info: DatasetInfo) -> None:
        if info.sequence:
            raise BadInput("model 'gan' generates fixed-size data, not sequences; use ring8, grid25 or an image dataset")
        if self.architecture == "dcgan" and not info.is_image:
            raise BadInput(f"an image generator (architecture: dcgan) cannot model data of shape {info.input_shape}; "
                           "use architecture: mlp for 2-D points")
        if self.conditional and info.kind != "classification":
            raise BadInput("model.conditional generates a requested class, but this dataset has no classes; "
                           "use a labelled image dataset (mnist, fashion_mnist) or remove conditional")
        if self.classifier_run is not None and not info.is_image:
            raise BadInput("model.classifier_run measures generated images, but this dataset is not images; "
                           "remove classifier_run")
        if self.architecture == "dcgan":
            height, width, _ = info.input_shape
            factor = 2 ** (len(self.g_channels) - 1)
            if height % factor or width % factor:
                raise BadInput(f"model.g_channels has {len(self.g_channels) - 1} upsampling steps (x{factor}) but the "
                               f"images are {height}x{width}; use as many steps as halve {height} exactly")

    def check_data(self, data) -> None:
        info = data.info()
        if not info.is_image and not hasattr(data, "centres"):
            raise BadInput(f"model 'gan' is measured on ring8, grid25 or image datasets, not {data.name!r}")
        if info.is_image and self.classifier_run is None:
            raise BadInput("a GAN on images is measured by a classifier dlcli trained on the same dataset: train one "
                           "(e.g. dlcli train experiments/classifier_mnist.yaml --run-dir runs/classifier_mnist) and "
                           "set model.classifier_run to its run folder")

    def referenced_runs(self) -> dict[str, str]:
        return {"classifier_run": self.classifier_run} if self.classifier_run is not None else {}

    def check_referenced(self, runs: dict, data) -> None:
        """The judge must be an mlp or cnn classification run on the same images in [0, 1]."""
        if "classifier_run" not in runs:
            return
        run, cfg = self.classifier_run, runs["classifier_run"]
        if cfg.task_kind != "classification" or cfg.model.name not in ("mlp", "cnn"):
            raise BadInput(f"model.classifier_run {run} trained {cfg.model.name!r} for {cfg.task_kind}; "
                           "it must be an mlp or cnn classification run")
        if cfg.data.name != data.name:
            raise BadInput(f"model.classifier_run {run} was trained on {cfg.data.name!r}, not {data.name!r}; "
                           f"train a classifier on {data.name!r} and point classifier_run at it")
        if getattr(cfg.data, "normalize", None) != "unit":
            raise BadInput(f"model.classifier_run {run} was trained on standardised pixels, but generators "
                           "produce values in [0, 1]; retrain it with data.normalize: unit")

    def label_classes(self, info: DatasetInfo) -> int:
        """The classes a conditional GAN is asked for (0: unconditional)."""
        return info.n_outputs if self.conditional else 0

    def metrics_for(self, info: DatasetInfo, task_metrics: tuple[str, ...]) -> tuple[str, ...]:
        """What each evaluation reports: mode statistics for 2-D mixtures, the classifier's
        view for images (a conditional GAN's: also how often it is the class asked for)."""
        if info.is_image:
            requested = ("requested_accuracy", "requested_confident") if self.conditional else ()
            return ("frechet", "class_kl", "classes", "confident", "top_class_share", "frechet_reference", *requested)
        return ("kl_uniform", "modes", "high_quality")

    def generator_start(self, info: DatasetInfo) -> tuple[int, int, int]:
        """(H, W, C) of the DCGAN generator's first feature map."""
        height, width, _ = info.input_shape
        factor = 2 ** (len(self.g_channels) - 1)
        return height // factor, width // factor, self.g_channels[0]

    def discriminator_features(self, info: DatasetInfo) -> int:
        """Features after the DCGAN discriminator's stride-2 convs ('same' padding: sizes round up)."""
        height, width, _ = info.input_shape
        for _ in self.d_channels:
            height, width = -(-height // 2), -(-width // 2)
        return height * width * self.d_channels[-1]

    def generator_params(self, info: DatasetInfo) -> int:
        if self.architecture == "mlp":
            return (dense_params([self.latent, *self.generator, math.prod(info.input_shape)])
                    + norm_params(self.generator, self.norm))
        start = self.generator_start(info)
        latent = self.latent + self.label_classes(info)  # a conditional generator's one-hot class beside z
        upsampling = conv_params(self.g_channels, self.g_kernel, out_factor=4 if self.upsampling == "sub_pixel" else 1)
        return (dense_params([latent, *self.g_dense, math.prod(start)]) + upsampling
                + conv_params([self.g_channels[-1], info.input_shape[2]], self.g_kernel)
                + norm_params([*self.g_dense, *self.g_channels], self.norm))

    def discriminator_params(self, info: DatasetInfo) -> int:
        if self.architecture == "mlp":
            return dense_params([self.pack * math.prod(info.input_shape), *self.discriminator, 1])
        features = [self.discriminator_features(info), *self.d_dense]
        projection = self.label_classes(info) * features[-1]  # a conditional discriminator's class embedding
        return (conv_params([self.pack * info.input_shape[2], *self.d_channels], self.d_kernel)
                + dense_params([*features, 1]) + projection)  # spectral norm adds no parameter

    def param_count(self, info: DatasetInfo) -> int:
        return self.generator_params(info) + self.discriminator_params(info)

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.gan import GAN

        return GAN(self, info, rngs=rngs)
