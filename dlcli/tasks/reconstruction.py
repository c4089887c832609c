"""Reconstruction: an autoencoder's objective and metrics. The targets are the inputs
themselves (values in [0, 1]); the decoder's logits parameterise p(x | code).

Per example, the reconstruction term is the negative log-likelihood of the target in
nats summed over its values: Bernoulli (binary cross-entropy with the logits) or
Gaussian. For deterministic autoencoders the Gaussian term is the sum of squared errors
of the sigmoid reconstruction; for a VAE it is the true Gaussian NLL with the decoder's
fixed standard deviation, and the KL term is added with weight beta (training, after
its linear warm-up) or 1 (evaluation: the negative ELBO, a bound on -log p(x)). A
sparse autoencoder's penalty is added to the training loss only: an evaluation's `loss`
is the reconstruction term (a VAE's: the negative ELBO).

Evaluation reports per example: `mse` (mean squared error of the reconstruction per
value) and `psnr` (10 log10(1 / mse), the data range being 1) averaged over examples;
`noisy_psnr`, the PSNR of the corrupted input a denoising autoencoder saw; a VAE's
`neg_elbo`, `recon_nll`, `kl` in nats per example; a sparse code's `mean_activation`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlcli.tasks.analysis import psnr, restrict_to_classes
from dlcli.models.autoencoder import fixed_keys
from dlcli.tasks import TASKS, Task


@TASKS.register("reconstruction")
@dataclasses.dataclass(frozen=True)
class Reconstruction(Task):
    likelihood: str = "bernoulli"  # or "gaussian"
    variational: bool = False
    decoder_sigma: float = 0.1
    beta: float = 1.0
    kl_warmup_steps: int = 0
    sparsity: str | None = None  # None, "l1" or "kl"
    sparsity_weight: float = 0.0
    sparsity_target: float = 0.05
    kind: str = "reconstruction"
    progress_metric: ClassVar[str] = "mse"

    @classmethod
    def from_config(cls, cfg) -> "Reconstruction":
        spec = cfg.model
        return cls(likelihood=spec.likelihood, variational=spec.code_outputs == 2,
                   decoder_sigma=getattr(spec, "decoder_sigma", 0.1), beta=getattr(spec, "beta", 1.0),
                   kl_warmup_steps=getattr(spec, "kl_warmup_steps", 0), sparsity=getattr(spec, "sparsity", None),
                   sparsity_weight=getattr(spec, "sparsity_weight", 0.0),
                   sparsity_target=getattr(spec, "sparsity_target", 0.05))

    def training_splits(self, cfg, splits):
        """With `analysis.normal_classes` (anomaly detection), training and validation
        keep the normal classes only; the test split keeps every class."""
        if cfg.analysis.normal_classes is None:
            return splits
        return restrict_to_classes(splits, cfg.analysis.normal_classes)

    def finished(self, model, cfg, splits, run_dir: Path, data_dir: Path) -> dict:
        """The analyses the config asks for (codes, reconstructions, anomalies, PCA, probes, samples)."""
        from dlcli.tasks.analysis import analyse

        return analyse(cfg, splits, model, self, run_dir, data_dir)

    def targets(self, x, y):
        """What the loss compares the outputs with: the inputs themselves."""
        return x

    def reconstruction_nll(self, logits: jax.Array, x: jax.Array) -> jax.Array:
        """(B, ...) logits and targets -> (B,) reconstruction term in nats."""
        logits, x = logits.reshape(len(x), -1), x.reshape(len(x), -1)
        if self.likelihood == "bernoulli":
            return optax.sigmoid_binary_cross_entropy(logits, x).sum(-1)
        error = (jax.nn.sigmoid(logits) - x) ** 2
        if not self.variational:
            return error.sum(-1)
        sigma = self.decoder_sigma
        return (0.5 * error / sigma**2 + np.log(sigma * np.sqrt(2 * np.pi))).sum(-1)

    def kl_weight(self, step) -> jax.Array:
        if self.kl_warmup_steps == 0:
            return jnp.asarray(self.beta)
        return self.beta * jnp.minimum(1.0, (step + 1) / self.kl_warmup_steps)

    def sparsity_penalty(self, code: jax.Array) -> jax.Array:
        """code (B, d) -> the batch's sparsity penalty (0 without sparsity)."""
        if self.sparsity == "l1":
            return self.sparsity_weight * jnp.abs(code).sum(-1).mean()
        if self.sparsity == "kl":
            return self.sparsity_weight * bernoulli_kl(self.sparsity_target, code.mean(0)).sum()
        return jnp.asarray(0.0)

    def loss(self, outputs, x, step):
        nll = self.reconstruction_nll(outputs["logits"], x)
        loss = nll.mean() + self.sparsity_penalty(outputs["code"])
        metrics = {"mse": per_example_mse(outputs["logits"], x).mean()}
        if self.variational:
            loss = loss + self.kl_weight(step) * outputs["kl"].mean()
            metrics.update(recon_nll=nll.mean(), kl=outputs["kl"].mean())
        return loss, {"loss": loss, **metrics}

    def eval_outputs(self, model, x, index):
        return model.forward(x, fixed_keys(index))

    def eval_sums(self, outputs, x, mask):
        nll = self.reconstruction_nll(outputs["logits"], x)
        mse = per_example_mse(outputs["logits"], x)
        sums = {"count": mask.sum(), "mse": (mse * mask).sum(), "psnr": (psnr(mse) * mask).sum()}
        if self.variational:
            kl = outputs["kl"]
            sums.update(loss=((nll + kl) * mask).sum(), recon_nll=(nll * mask).sum(), kl=(kl * mask).sum())
        else:
            sums["loss"] = (nll * mask).sum()
        if "inputs" in outputs:
            noisy = ((outputs["inputs"] - x) ** 2).reshape(len(x), -1).mean(-1)
            sums["noisy_psnr"] = (psnr(noisy) * mask).sum()
        if self.sparsity is not None:
            sums["activation"] = (outputs["code"] * mask[:, None]).sum(0)  # (d,) per code unit
        return sums

    def finalize(self, sums):
        count = float(sums["count"])
        metrics = {name: float(sums[name]) / count for name in ("loss", "mse", "psnr", "noisy_psnr", "recon_nll", "kl")
                   if name in sums}
        if self.variational:
            metrics["neg_elbo"] = metrics["loss"]
        if "activation" in sums:
            metrics["mean_activation"] = float(np.mean(sums["activation"])) / count
        return metrics


def per_example_mse(logits: jax.Array, x: jax.Array) -> jax.Array:
    """(B,) mean squared error of the sigmoid reconstruction per value."""
    return ((jax.nn.sigmoid(logits) - x) ** 2).reshape(len(x), -1).mean(-1)


def bernoulli_kl(target: float, mean: jax.Array) -> jax.Array:
    """KL(Bernoulli(target) || Bernoulli(mean)), elementwise; mean clipped into (0, 1)."""
    mean = jnp.clip(mean, 1e-6, 1 - 1e-6)
    return target * jnp.log(target / mean) + (1 - target) * jnp.log((1 - target) / (1 - mean))
