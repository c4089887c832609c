"""Specs of the autoencoder family: `autoencoder`, `denoising_autoencoder`,
`sparse_autoencoder`, `vae`, and `encoder_classifier` (a pre-trained encoder from an
autoencoder's run folder with a classifier head, for fine-tuning).

Every autoencoder is MLP (`architecture: mlp`: dense layers `hidden`, mirrored by the
decoder) or convolutional (`architecture: conv`: 3x3 stride-2 convolutions with
`channels`, a dense layer to the code; the decoder mirrors them with sub-pixel
upsampling: 3x3 convolutions at the lower resolution to 4x the channels, spread over
2x2 blocks). The decoder outputs one logit per input value; the
reconstruction is its sigmoid, so inputs must lie in [0, 1] (`data.normalize: unit`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

from dlcli.data import DATASETS, DatasetInfo
from dlcli.errors import BadInput
from dlcli.schema import bounded
from dlcli.specs import MODELS
from dlcli.specs.base import ModelSpec, check_unit_pixels
from dlcli.specs.layers import conv_params, dense_params


@dataclasses.dataclass
class AutoencoderSpec(ModelSpec):
    """Shared by every autoencoder: the encoder/decoder shape and the likelihood."""

    task_kind: ClassVar[str] = "reconstruction"
    reference_dataset: ClassVar[str] = "mnist"
    code_outputs: ClassVar[int] = 1  # encoder outputs per code unit (2 for a VAE: mean and log-variance)
    undercomplete: ClassVar[bool] = True  # whether a code as wide as the input defeats the model's purpose
    metrics: ClassVar[tuple[str, ...]] = ()
    analyses: ClassVar[bool] = True
    name: str = "autoencoder"
    architecture: Literal["mlp", "conv"] = "mlp"
    hidden: list[int] = bounded([256], low=1)
    channels: list[int] = bounded([32, 64], low=1)
    code: int = bounded(32, low=1)
    activation: Literal["relu", "gelu", "tanh", "sigmoid"] = "relu"
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"

    def validate(self, path: str) -> None:
        if self.architecture == "conv" and not self.channels:
            raise BadInput(f"{path}.channels is empty; give at least one conv layer, or architecture: mlp")

    def check_experiment(self, cfg) -> None:
        """Inputs in [0, 1], and an analysis section that fits the data."""
        check_unit_pixels(self, cfg.data)
        info, analysis = cfg.info, cfg.analysis
        classes = analysis.normal_classes
        if classes is not None:
            if info.kind != "classification":
                raise BadInput(f"analysis.normal_classes needs a labelled image dataset; {cfg.data.name!r} is a "
                               f"{info.kind} dataset")
            outside = sorted(c for c in classes if c >= info.n_outputs)
            if outside:
                raise BadInput(f"analysis.normal_classes has {outside}, but {cfg.data.name!r} has classes "
                               f"0..{info.n_outputs - 1}; pick classes in that range")
            if not classes or len(set(classes)) == info.n_outputs:
                which = "no class" if not classes else "every class"
                raise BadInput(f"analysis.normal_classes names {which}, so no test image could be an anomaly; "
                               f"name some but not all of the classes 0..{info.n_outputs - 1} (e.g. [0])")
        if analysis.ood_dataset is not None:
            other = DATASETS.get(analysis.ood_dataset)().info()
            if tuple(other.input_shape) != tuple(info.input_shape):
                raise BadInput(f"analysis.ood_dataset {analysis.ood_dataset!r} has inputs of shape "
                               f"{other.input_shape}, the training data {info.input_shape}; pick a dataset of the "
                               "same shape (mnist, fashion_mnist)")

    def check_input(self, info: DatasetInfo) -> None:
        if info.sequence:
            raise BadInput(f"model {self.name!r} reconstructs fixed-size inputs, not sequences; "
                           "use an image dataset (digits, mnist, fashion_mnist)")
        if self.architecture == "conv":
            if not info.is_image:
                raise BadInput(f"model {self.name!r} with architecture: conv needs images but the dataset gives shape "
                               f"{info.input_shape}; use architecture: mlp")
            factor = 2 ** len(self.channels)
            height, width, _ = info.input_shape
            if height % factor or width % factor:
                raise BadInput(f"{len(self.channels)} stride-2 conv layers need image sides divisible by {factor}, "
                               f"but the images are {height}x{width}; give model.channels fewer entries")
        size = math.prod(info.input_shape)
        if self.undercomplete and self.code >= size:
            raise BadInput(f"model.code {self.code} is not narrower than the {size} input values, so {self.name!r} "
                           f"can learn the identity; use a code below {size} (or sparse_autoencoder / "
                           "denoising_autoencoder for an overcomplete code)")

    def feature_shape(self, info: DatasetInfo) -> tuple[int, int, int]:
        """(H, W, C) after the conv encoder's stride-2 layers."""
        height, width, _ = info.input_shape
        factor = 2 ** len(self.channels)
        return height // factor, width // factor, self.channels[-1]

    def encoder_params(self, info: DatasetInfo) -> int:
        out = self.code * self.code_outputs
        if self.architecture == "mlp":
            return dense_params([math.prod(info.input_shape), *self.hidden, out])
        chain = [info.input_shape[2], *self.channels]
        return conv_params(chain) + dense_params([math.prod(self.feature_shape(info)), out])

    def decoder_params(self, info: DatasetInfo) -> int:
        if self.architecture == "mlp":
            return dense_params([self.code, *reversed(self.hidden), math.prod(info.input_shape)])
        chain = [*reversed(self.channels), info.input_shape[2]]  # sub-pixel layers: 4x the output channels
        return dense_params([self.code, math.prod(self.feature_shape(info))]) + conv_params(chain, out_factor=4)

    def param_count(self, info: DatasetInfo) -> int:
        return self.encoder_params(info) + self.decoder_params(info)

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.autoencoder import Autoencoder

        return Autoencoder(self, info, rngs=rngs)


@MODELS.register("autoencoder")
@dataclasses.dataclass
class AutoencoderConfig(AutoencoderSpec):
    """Encoder -> code -> decoder, trained to reconstruct its input."""

    summary: ClassVar[str] = "autoencoder (MLP or conv): encoder, bottleneck code, decoder; reconstruction loss"


@MODELS.register("denoising_autoencoder")
@dataclasses.dataclass
class DenoisingAutoencoderConfig(AutoencoderSpec):
    """Reconstructs the clean input from a corrupted copy: Gaussian noise of standard
    deviation `noise_level` (clipped to [0, 1]) or masking noise that zeroes each value
    with probability `noise_level`."""

    summary: ClassVar[str] = "denoising autoencoder: Gaussian or masking noise in, clean input out"
    undercomplete: ClassVar[bool] = False
    metrics: ClassVar[tuple[str, ...]] = ("noisy_psnr",)
    name: str = "denoising_autoencoder"
    noise: Literal["gaussian", "masking"] = "gaussian"
    noise_level: float = bounded(0.5, low=0.0, low_open=True)

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.noise == "masking" and self.noise_level >= 1.0:
            raise BadInput(f"{path}.noise_level {self.noise_level} is a masking probability and must be below 1")

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.autoencoder import Autoencoder

        return Autoencoder(self, info, rngs=rngs, noise=(self.noise, self.noise_level))


@MODELS.register("sparse_autoencoder")
@dataclasses.dataclass
class SparseAutoencoderConfig(AutoencoderSpec):
    """An autoencoder whose code activations are penalised: `l1` adds `sparsity_weight`
    x the mean L1 norm of the (ReLU) code; `kl` adds `sparsity_weight` x the sum over code
    units of KL(target || mean activation), with sigmoid code units."""

    summary: ClassVar[str] = "sparse autoencoder: L1 activity penalty or KL sparsity target on the code"
    undercomplete: ClassVar[bool] = False
    metrics: ClassVar[tuple[str, ...]] = ("mean_activation",)
    name: str = "sparse_autoencoder"
    code: int = bounded(256, low=1)
    sparsity: Literal["l1", "kl"] = "kl"
    sparsity_weight: float = bounded(0.1, low=0.0)
    sparsity_target: float = bounded(0.05, low=0.0, high=1.0, low_open=True, high_open=True)

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.autoencoder import Autoencoder

        return Autoencoder(self, info, rngs=rngs, code_activation="sigmoid" if self.sparsity == "kl" else "relu")


@MODELS.register("vae")
@dataclasses.dataclass
class VAEConfig(AutoencoderSpec):
    """Variational autoencoder: a Gaussian encoder q(z|x) = N(mean, exp(log_var)), a
    standard normal prior, a Bernoulli or Gaussian (fixed `decoder_sigma`) decoder;
    trained on reconstruction + beta x KL, beta rising linearly from 0 over
    `kl_warmup_steps` (0: no warm-up)."""

    summary: ClassVar[str] = "variational autoencoder: Gaussian encoder, Bernoulli/Gaussian decoder, beta, KL warm-up"
    code_outputs: ClassVar[int] = 2
    generative: ClassVar[bool] = True
    metrics: ClassVar[tuple[str, ...]] = ("neg_elbo", "recon_nll", "kl")
    name: str = "vae"
    code: int = bounded(20, low=1)
    beta: float = bounded(1.0, low=0.0)
    kl_warmup_steps: int = bounded(0, low=0)
    decoder_sigma: float = bounded(0.1, low=0.0, low_open=True)

    def build(self, info: DatasetInfo, rngs):
        from dlcli.models.autoencoder import VAE

        return VAE(self, info, rngs=rngs)


@MODELS.register("encoder_classifier")
@dataclasses.dataclass
class EncoderClassifierConfig(ModelSpec):
    """The encoder of a trained autoencoder run (`autoencoder_run`, its `checkpoint`)
    with a dense classifier head on its code; `freeze` keeps the encoder's weights as
    they are (a linear probe when `dense` is empty), otherwise they are fine-tuned.
    `initialize: random` builds the same encoder with fresh weights instead: the
    from-scratch baseline that pre-training is measured against."""

    summary: ClassVar[str] = "pre-trained encoder of an autoencoder run + classifier head (fine-tuning)"
    pretrained_from: ClassVar[str] = "autoencoder_run"  # its size depends on that run: no default parameter count
    reference_dataset: ClassVar[str] = "mnist"
    name: str = "encoder_classifier"
    autoencoder_run: str = ""
    checkpoint: str = "best"
    initialize: Literal["pretrained", "random"] = "pretrained"
    freeze: bool = False
    dense: list[int] = bounded([], low=1)
    dropout: float = bounded(0.0, low=0.0, high=1.0, high_open=True)

    def check_input(self, info: DatasetInfo) -> None:
        if not self.autoencoder_run:
            raise BadInput("model.autoencoder_run is empty; give the run folder of a trained autoencoder "
                           "(e.g. runs/ae_vs_pca_mnist)")
        if info.kind != "classification":
            raise BadInput(f"encoder_classifier classifies, but the dataset is a {info.kind} dataset; "
                           "use a classification dataset")

    def referenced_runs(self) -> dict[str, str]:
        return {"autoencoder_run": self.autoencoder_run}

    def check_referenced(self, runs: dict, data) -> None:
        """The referenced run must be an autoencoder on inputs of this shape, scaled as here."""
        source = runs["autoencoder_run"]
        if source.model.task_kind != "reconstruction":
            raise BadInput(f"model.autoencoder_run {self.autoencoder_run} trained {source.model.name!r}, not an "
                           "autoencoder; give the run folder of an autoencoder, vae, ... run")
        info = data.info()
        if tuple(source.info.input_shape) != tuple(info.input_shape):
            raise BadInput(f"the encoder of {self.autoencoder_run} takes inputs of shape {source.info.input_shape}, "
                           f"the dataset gives {info.input_shape}; use the dataset it was trained on")
        scaling = {key: getattr(source.data, key, None) for key in ("normalize", "binarize")}
        mine = {key: getattr(data, key, None) for key in scaling}
        if mine != scaling:
            settings = ", ".join(f"data.{k}: {v}" for k, v in scaling.items() if v is not None)
            raise BadInput(f"the encoder of {self.autoencoder_run} was trained on images scaled with {settings}; "
                           "set the same here")

    def pretrained_start(self) -> tuple[str, str] | None:
        return (self.autoencoder_run, self.checkpoint) if self.initialize == "pretrained" else None

    def param_count(self, info: DatasetInfo, runs: dict) -> int:
        source = runs["autoencoder_run"].model
        return source.encoder_params(info) + dense_params([source.code, *self.dense, info.n_outputs])

    def build(self, info: DatasetInfo, rngs, runs: dict):
        from dlcli.models.autoencoder import EncoderClassifier

        return EncoderClassifier(self, runs["autoencoder_run"], info, rngs=rngs)
