"""Generation: a GAN's two-player objective and the metrics of its samples.

One training step is one discriminator (critic) update on a fresh real batch; the
generator is updated on every `n_critic`-th step, inside the same compiled function.
Losses, with D the discriminator's logit (or critic value) on a pack of samples:
- non_saturating: D minimises softplus(-D(real)) + softplus(D(fake)); G minimises softplus(-D(fake));
- hinge: D minimises relu(1 - D(real)) + relu(1 + D(fake)); G minimises -D(fake);
- wgan_gp: D minimises D(fake) - D(real) + gp (||grad D(x_hat)|| - 1)^2 at random points
  x_hat between real and fake samples; G minimises -D(fake).
With `r1` (non_saturating or hinge), D also minimises r1 / 2 * ||grad D(real)||^2 (logged
as `r1`), the R1 penalty of Mescheder et al. (2018), which keeps D smooth on the data.

Evaluation generates one sample per real example of the split, its latent fixed by the
example's index and the split, so every evaluation (and `dlcli eval`) of a split sees
the same latents and validation and test see different ones. 2-D mixtures are scored as
in VEEGAN and PacGAN (`modes` covered, `high_quality` share, `kl_uniform` of the mode
histogram); images by a dlcli-trained classifier (`Judge`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dlcli.models.gan import GANOptimizers
from dlcli.models.precision import computing_in, lowered, raised
from dlcli.optim import make_schedule
from dlcli.runs import RunDir
from dlcli.tasks import TASKS, Task

EVAL_LATENT_KEY = 20261125
SPLIT_LATENT_OFFSET = {"train": 0, "val": 1 << 24, "test": 2 << 24}  # distinct latents per split
CONFIDENT = 0.9  # a sample counts as a clear member of its class at this classifier confidence
JUDGE_REFERENCE_EXAMPLES = 10_000  # training images whose features are the Fréchet reference


def frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
    """||mean_a - mean_b||^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2)), in float64; the
    trace of the matrix square root is the sum of the square roots of the eigenvalues of
    cov_a^(1/2) cov_b cov_a^(1/2) (symmetric, so `eigh` is exact where `sqrtm` is not)."""
    mean_a, mean_b, cov_a, cov_b = (np.asarray(a, np.float64) for a in (mean_a, mean_b, cov_a, cov_b))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def moments(sums: dict) -> tuple[np.ndarray, np.ndarray]:
    """Feature sums {"n", "features", "outer"} -> mean (F,) and unbiased covariance (F, F)."""
    n = float(sums["n"])
    mean = np.asarray(sums["features"], np.float64) / n
    cov = (np.asarray(sums["outer"], np.float64) - n * np.outer(mean, mean)) / max(n - 1, 1)
    return mean, cov


@dataclasses.dataclass(frozen=True, eq=False)
class Judge:
    """A classification run's model that measures generated images: its predictions give
    the class histogram, its head's inputs (penultimate features) the Fréchet distance
    to the training images' features (`reference_mean`, `reference_cov`)."""

    graphdef: nnx.GraphDef
    state: nnx.State
    reference_mean: np.ndarray
    reference_cov: np.ndarray
    reference_distance: float  # the real test images' distance, the value a perfect generator is near

    @classmethod
    def from_model(cls, model, splits, n_generated: int) -> "Judge":
        """A trained classifier `model` (a classification run's best checkpoint), with
        reference statistics from `splits`: the first JUDGE_REFERENCE_EXAMPLES training
        images, and the distance of the first `n_generated` test images to them."""
        graphdef, state = nnx.split(model)
        judge = cls(graphdef, state, np.zeros(0), np.zeros((0, 0)), 0.0)
        train = judge.feature_sums(splits.train[0][:JUDGE_REFERENCE_EXAMPLES])
        test = judge.feature_sums(splits.test[0][:n_generated])
        mean, cov = moments(train)
        return dataclasses.replace(judge, reference_mean=mean, reference_cov=cov,
                                   reference_distance=frechet_distance(*moments(test), mean, cov))

    def feature_sums(self, images: np.ndarray, batch: int = 1000) -> dict[str, np.ndarray]:
        """Sums of the penultimate features and their outer products over (N, H, W, C) images."""
        measure = jax.jit(lambda x: self.measure(x, jnp.ones(x.shape[0])))
        parts = [jax.device_get(measure(images[i: i + batch])) for i in range(0, len(images), batch)]
        return {k: sum(p[k] for p in parts) for k in ("n", "features", "outer")}

    def measure(self, images: jax.Array, mask: jax.Array, requested: jax.Array | None = None) -> dict[str, jax.Array]:
        """(B, H, W, C) images, mask (B,) -> sums of class counts, confident predictions
        and features; with the classes `requested` (B,) of a conditional generator, also
        how many were judged that class, and how many confidently."""
        classifier = nnx.merge(self.graphdef, self.state)
        features = classifier.features(images)  # (B, F)
        probs = jax.nn.softmax(classifier.out(features))  # (B, K)
        weighted = features * mask[:, None]
        predicted = jax.nn.one_hot(probs.argmax(1), probs.shape[1]) * mask[:, None]  # (B, K)
        confident = (probs.max(1) >= CONFIDENT)[:, None]
        sums = {"n": mask.sum(), "class_counts": predicted.sum(0), "confident_counts": (predicted * confident).sum(0),
                "features": weighted.sum(0), "outer": weighted.T @ features}
        if requested is not None:
            as_asked = predicted * jax.nn.one_hot(requested, probs.shape[1])  # (B, K): judged the class asked for
            sums["requested_counts"] = as_asked.sum()
            sums["requested_confident_counts"] = (as_asked * confident).sum()
        return sums

    def scores(self, sums: dict) -> dict[str, float]:
        counts = np.asarray(sums["class_counts"], np.float64)
        confident = np.asarray(sums["confident_counts"], np.float64)
        n = max(float(sums["n"]), 1.0)
        requested = ({"requested_accuracy": float(sums["requested_counts"]) / n,
                      "requested_confident": float(sums["requested_confident_counts"]) / n}
                     if "requested_counts" in sums else {})
        return {**requested, "classes": int((confident > 0).sum()), "class_kl": kl_to_uniform(counts),
                "top_class_share": float(counts.max() / max(counts.sum(), 1.0)),
                "confident": float(confident.sum() / max(float(sums["n"]), 1.0)),
                "frechet": frechet_distance(*moments(sums), self.reference_mean, self.reference_cov),
                "frechet_reference": self.reference_distance}


def stability_warnings(history: list[dict], record: dict) -> list[str]:
    """Signs of a failing GAN in an evaluation `record`, given the earlier records:
    coverage (val/modes, val/classes) 2 or more below its best, one class holding over
    half the samples, or a loss that is not finite or has grown past 10x (and 10) its
    size at the first evaluation."""
    warnings = []
    for name in ("val/modes", "val/classes"):
        if name in record:
            best = max([r[name] for r in history if name in r], default=record[name])
            if record[name] <= best - 2:
                warnings.append(f"collapse: {name} fell from {best:g} to {record[name]:g}")
    share = record.get("val/top_class_share")
    if share is not None and share > 0.5:
        warnings.append(f"collapse: {share:.0%} of the samples are one class")
    for name in ("train/d_loss", "train/g_loss"):
        first = next((r[name] for r in history if name in r), None)
        value = record.get(name)
        if value is None or (name == "train/g_loss" and np.isnan(value)):  # NaN: no generator step in the period
            continue
        if not np.isfinite(value) or (first is not None and abs(value) > 10 * max(abs(first), 1.0)):
            warnings.append(f"divergence: {name} is {value:.4g}" + (f" (first evaluation: {first:.4g})" if first is not None else ""))
    return warnings


def kl_to_uniform(counts: np.ndarray) -> float:
    """KL(counts / total || uniform over len(counts)) in nats; infinite for no counts."""
    total = counts.sum()
    if not total:
        return float("inf")
    shares = counts[counts > 0] / total
    return float(np.sum(shares * np.log(shares * len(counts))))


@TASKS.register("generation")
@dataclasses.dataclass(frozen=True)
class Adversarial(Task):
    loss_kind: str
    penalty: float
    n_critic: int
    latent: int
    r1: float = 0.0
    centres: tuple[tuple[float, ...], ...] | None = None  # the modes of a 2-D mixture
    std: float = 0.0
    classifier_run: str | None = None  # the judge's run folder (images)
    classes: int = 0  # a conditional GAN's classes (0: unconditional)
    judge: Judge | None = None
    kind: str = "generation"
    progress_metric: ClassVar[str] = "g_loss"

    @classmethod
    def from_config(cls, cfg) -> "Adversarial":
        data = cfg.data
        centres = tuple(map(tuple, data.centres().tolist())) if hasattr(data, "centres") else None
        return cls(cfg.model.loss, cfg.model.penalty, cfg.model.n_critic, cfg.model.latent, cfg.model.r1_weight or 0.0,
                   centres, getattr(data, "std", 0.0), cfg.model.classifier_run, cfg.model.label_classes(cfg.info))

    def optimizer(self, cfg, model, total_steps: int):
        """Adam per network (`GANOptimizers`); the logged `lr` is the generator's schedule."""
        schedule = make_schedule(cfg.schedule, cfg.model.g_learning_rate, total_steps)
        optimizers = GANOptimizers(model, cfg.model, lambda peak: make_schedule(cfg.schedule, peak, total_steps))
        return optimizers, schedule

    def prepared(self, splits, references: dict) -> "Adversarial":
        """With `classifier_run`, the judge: that run's best model and reference statistics of `splits`."""
        if "classifier_run" not in references:
            return self
        model, _ = RunDir(self.classifier_run).restore_model("best", references["classifier_run"])
        return dataclasses.replace(self, judge=Judge.from_model(model, splits, len(splits.val[0])))

    def first_index(self, split: str) -> int:
        """Evaluation latents of `split` are keyed by example index + this offset."""
        return SPLIT_LATENT_OFFSET[split]

    def targets(self, x, y):
        return y

    def _d_loss(self, real_scores, fake_scores):
        if self.loss_kind == "non_saturating":
            return jax.nn.softplus(-real_scores).mean() + jax.nn.softplus(fake_scores).mean()
        if self.loss_kind == "hinge":
            return jax.nn.relu(1 - real_scores).mean() + jax.nn.relu(1 + fake_scores).mean()
        return fake_scores.mean() - real_scores.mean()

    def _g_loss(self, fake_scores):
        if self.loss_kind == "non_saturating":
            return jax.nn.softplus(-fake_scores).mean()
        return -fake_scores.mean()

    def gradient_penalty(self, score, pack: int, real, fake, key) -> jax.Array:
        """Mean of (||d D / d x_hat|| - 1)^2 over packs of points x_hat on the lines
        between real and fake samples; `score` is the discriminator D, `pack` the number
        of samples it scores as one."""
        batch = real.shape[0]
        mix = jax.random.uniform(key, (batch,) + (1,) * (real.ndim - 1))
        between = mix * real + (1 - mix) * fake
        grads = jax.grad(lambda b: score(b).sum())(between)
        packs = grads.reshape(batch // pack, -1)  # one gradient per input the critic scores
        return jnp.mean((jnp.sqrt(jnp.sum(packs**2, axis=1) + 1e-12) - 1.0) ** 2)

    @staticmethod
    def r1_penalty(score, pack: int, real) -> jax.Array:
        """Mean over packs of ||d D / d x||^2 at the real samples x (B, ...)."""
        grads = jax.grad(lambda r: score(r).sum())(real)
        return jnp.mean(jnp.sum(grads.reshape(real.shape[0] // pack, -1) ** 2, axis=1))

    def _in_precision(self, module, labels=None):
        """`module` (computing in the task's precision) as a function of float32 inputs to
        float32 outputs; a conditional GAN's networks also get the samples' `labels`."""
        extra = (labels,) if self.classes else ()
        return lambda inputs: raised(module(lowered(inputs, self.precision), *extra), self.precision)

    def update(self, model, optimizers, x, y, step, key) -> dict[str, jax.Array]:
        """One discriminator step on the real batch x (B, ...), and a generator step when
        (step + 1) % n_critic == 0, after one power iteration of the discriminator's
        spectral norms (if any). The labels y are used by a conditional GAN alone: its
        fakes are asked for the real batch's classes. Returns the step's metrics."""
        batch = x.shape[0]
        d_key, gp_key, g_key = jax.random.split(key, 3)
        model.refine_spectral_norms()
        with computing_in(self.precision, model.generator) as generator:
            fake = jax.lax.stop_gradient(self._in_precision(generator, y)(jax.random.normal(d_key, (batch, self.latent))))

        def d_objective(discriminator):
            with computing_in(self.precision, discriminator) as computing:
                score, pack = self._in_precision(computing, y), discriminator.pack
                real_scores, fake_scores = score(x), score(fake)
                loss = self._d_loss(real_scores, fake_scores)
                gp = self.penalty * self.gradient_penalty(score, pack, x, fake, gp_key) if self.penalty else jnp.asarray(0.0)
                terms = {"d_loss": loss, "gp": gp}
                if self.r1:
                    terms["r1"] = 0.5 * self.r1 * self.r1_penalty(score, pack, x)
            return sum(terms.values()), {**terms, "d_real": real_scores.mean(), "d_fake": fake_scores.mean()}

        (d_total, d_metrics), d_grads = nnx.value_and_grad(d_objective, has_aux=True)(model.discriminator)
        optimizers.discriminator.update(model.discriminator, d_grads)

        def g_step(model, optimizers):
            def g_objective(generator):
                with computing_in(self.precision, generator) as g, computing_in(self.precision, model.discriminator) as d:
                    fake = self._in_precision(g, y)(jax.random.normal(g_key, (batch, self.latent)))
                    return self._g_loss(self._in_precision(d, y)(fake))

            g_loss, g_grads = nnx.value_and_grad(g_objective)(model.generator)
            optimizers.generator.update(model.generator, g_grads)
            model.update_average((step + 1) // self.n_critic)
            return g_loss, optax.tree.norm(g_grads)

        def skip(model, optimizers):
            return jnp.asarray(jnp.nan), jnp.asarray(jnp.nan)

        if self.n_critic == 1:
            g_loss, g_norm = g_step(model, optimizers)
        else:
            g_loss, g_norm = nnx.cond((step + 1) % self.n_critic == 0, g_step, skip, model, optimizers)
        return {"loss": d_total, **d_metrics, "g_loss": g_loss,
                "d_grad_norm": optax.tree.norm(d_grads), "g_grad_norm": g_norm}

    def evaluated(self, model, cfg, run_dir: Path, record: dict) -> None:
        """The samples of this evaluation drawn to samples/step_N.png (2,500 points over a
        2-D mixture, 64 images), and its stability warnings added to the record."""
        from dlcli.tasks.analysis import draw_samples

        out = run_dir / "samples" / f"step_{record['step']:07d}.png"
        out.parent.mkdir(exist_ok=True)
        n = 2500 if self.centres is not None else 64
        draw_samples(model, cfg, out, f"{cfg.name} ({run_dir.name}): {n} samples, step {record['step']}", n)
        warnings = stability_warnings(RunDir(run_dir).metrics(), record)
        if warnings:
            record["warnings"] = warnings

    def eval_outputs(self, model, x, index):
        """One generated sample per example (B, ...), its latent a function of the example's
        index alone; a conditional GAN's are (samples, the classes asked for: index mod classes)."""
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(EVAL_LATENT_KEY), i))(index)
        latents = jax.vmap(lambda k: jax.random.normal(k, (self.latent,)))(keys)
        if self.classes:
            requested = index % self.classes
            return model.generate(lowered(latents, self.precision), requested), requested
        return model.generate(lowered(latents, self.precision))

    def eval_sums(self, samples, y, mask):
        if self.classes:
            samples, requested = samples
            return self.judge.measure(samples, mask, requested)
        if self.judge is not None:
            return self.judge.measure(samples, mask)
        sums = {"count": mask.sum()}
        if self.centres is not None:
            centres = jnp.asarray(self.centres, samples.dtype)
            distances = jnp.linalg.norm(samples[:, None, :] - centres[None], axis=-1) / self.std
            nearest = distances.argmin(axis=1)
            good = (distances.min(axis=1) < 3.0) * mask
            sums["good"] = good.sum()
            sums["histogram"] = jnp.zeros(len(self.centres)).at[nearest].add(good)
        return sums

    def finalize(self, sums):
        if self.judge is not None:
            return self.judge.scores(sums)
        if "histogram" not in sums:
            return {}
        counts = np.asarray(sums["histogram"], np.float64)
        return {"modes": int((counts > 0).sum()), "high_quality": float(sums["good"]) / float(sums["count"]),
                "kl_uniform": kl_to_uniform(counts)}
