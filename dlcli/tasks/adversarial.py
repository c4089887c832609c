"""Generation: a GAN's two-player objective and the metrics of its samples.

One training step is one discriminator (critic) update on a fresh real batch; the
generator is updated on every `n_critic`-th step, inside the same compiled function.
Losses, with D the discriminator's logit (or critic value) on a pack of samples:
- non_saturating: D minimises softplus(-D(real)) + softplus(D(fake)); G minimises softplus(-D(fake));
- hinge: D minimises relu(1 - D(real)) + relu(1 + D(fake)); G minimises -D(fake);
- wgan_gp: D minimises D(fake) - D(real) + gp (||grad D(x_hat)|| - 1)^2 at random points
  x_hat between real and fake samples; G minimises -D(fake).

Evaluation generates one sample per real example of the split, its latent fixed by the
example's index; for 2-D mixtures the samples are scored as in VEEGAN and PacGAN (see
`dlcli.data.mixtures.mode_statistics`): `modes` covered, `high_quality` share,
`kl_uniform` of the mode histogram.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dlcli.models.gan import critic

EVAL_LATENT_KEY = 20261125


@dataclasses.dataclass(frozen=True)
class Adversarial:
    loss_kind: str
    penalty: float
    n_critic: int
    latent: int
    centres: tuple[tuple[float, ...], ...] | None = None  # the modes of a 2-D mixture
    std: float = 0.0
    kind: str = "generation"

    @classmethod
    def from_config(cls, cfg) -> "Adversarial":
        data = cfg.data
        centres = tuple(map(tuple, data.centres().tolist())) if hasattr(data, "centres") else None
        return cls(cfg.model.loss, cfg.model.penalty, cfg.model.n_critic, cfg.model.latent, centres,
                   getattr(data, "std", 0.0))

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

    def update(self, model, optimizers, x, step, key) -> dict[str, jax.Array]:
        """One discriminator step on the real batch x (B, ...), and a generator step when
        (step + 1) % n_critic == 0. Returns the step's metrics."""
        batch = x.shape[0]
        d_key, gp_key, g_key = jax.random.split(key, 3)
        fake = jax.lax.stop_gradient(model.generate(jax.random.normal(d_key, (batch, self.latent))))

        pack = model.pack

        def d_objective(discriminator):
            real_scores, fake_scores = critic(discriminator, x, pack), critic(discriminator, fake, pack)
            loss = self._d_loss(real_scores, fake_scores)
            gp = jnp.asarray(0.0)
            if self.penalty:
                mix = jax.random.uniform(gp_key, (batch,) + (1,) * (x.ndim - 1))
                between = mix * x + (1 - mix) * fake
                grads = jax.grad(lambda b: critic(discriminator, b, pack).sum())(between)
                norms = jnp.sqrt(jnp.sum(grads.reshape(batch // pack, -1) ** 2, axis=1) + 1e-12)
                gp = self.penalty * jnp.mean((norms - 1.0) ** 2)
            return loss + gp, {"d_loss": loss, "gp": gp, "d_real": real_scores.mean(), "d_fake": fake_scores.mean()}

        (_, d_metrics), d_grads = nnx.value_and_grad(d_objective, has_aux=True)(model.discriminator)
        optimizers.discriminator.update(model.discriminator, d_grads)

        def g_step(model, optimizers):
            def g_objective(generator):
                fake = generator(jax.random.normal(g_key, (batch, self.latent)))
                return self._g_loss(critic(model.discriminator, fake, pack))

            g_loss, g_grads = nnx.value_and_grad(g_objective)(model.generator)
            optimizers.generator.update(model.generator, g_grads)
            return g_loss, optax.tree.norm(g_grads)

        def skip(model, optimizers):
            return jnp.asarray(jnp.nan), jnp.asarray(jnp.nan)

        if self.n_critic == 1:
            g_loss, g_norm = g_step(model, optimizers)
        else:
            g_loss, g_norm = nnx.cond((step + 1) % self.n_critic == 0, g_step, skip, model, optimizers)
        return {"loss": d_metrics["d_loss"] + d_metrics["gp"], **d_metrics, "g_loss": g_loss,
                "d_grad_norm": optax.tree.norm(d_grads), "g_grad_norm": g_norm}

    def eval_outputs(self, model, x, index):
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(EVAL_LATENT_KEY), i))(index)
        z = jax.vmap(lambda k: jax.random.normal(k, (self.latent,)))(keys)
        return model.generate(z)

    def eval_sums(self, samples, y, mask):
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
        if "histogram" not in sums:
            return {}
        counts = np.asarray(sums["histogram"], np.float64)
        shares = counts / max(counts.sum(), 1.0)
        present = shares > 0
        kl = float(np.sum(shares[present] * np.log(shares[present] * len(counts)))) if counts.sum() else float("inf")
        return {"modes": int(present.sum()), "high_quality": float(sums["good"]) / float(sums["count"]),
                "kl_uniform": kl}
