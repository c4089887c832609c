"""Does a trained image GAN's discriminator know which samples the judge doubts?

Discriminator rejection sampling keeps the samples the discriminator scores as most
real. This script measures whether that could help a `gan` run: it draws N samples from
the run's generator (its moving average when the run keeps one), scores them with the
run's discriminator and with the judge (the classifier run of `model.classifier_run`),
prints the correlation of the two, and for the best-scored fractions the share of
samples the judge classifies with confidence >= 0.9 and the class histogram.

    python experiments/gan_discriminator_ranking.py runs/probe/long_const --n 20000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from dlcli.runs import RunDir
from dlcli.tasks.adversarial import CONFIDENT

KEPT_FRACTIONS = (1.0, 0.8, 0.6, 0.4, 0.2)


def score_samples(run_dir: Path, n: int, seed: int, batch: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(N,) discriminator scores, (N,) judge confidences and (N,) judge classes of N
    samples, and the judge's number of classes."""
    run = RunDir(run_dir)
    cfg = run.trained_config()
    gan, _ = run.restore_model("latest", cfg)
    judge, _ = RunDir(cfg.model.classifier_run).restore_model("best")

    @nnx.jit
    def score(gan, judge, z):
        images = gan.generate(z)  # (B, H, W, C)
        probs = jax.nn.softmax(judge(images))  # (B, K)
        return gan.critic(images).reshape(-1), probs.max(1), probs.argmax(1)

    latents = jax.random.normal(jax.random.key(seed), (n, cfg.model.latent))
    parts = [jax.device_get(score(gan, judge, latents[i: i + batch])) for i in range(0, n, batch)]
    critic, confidence, classes = (np.concatenate(column) for column in zip(*parts))
    return critic, confidence, classes, judge_cfg.info.n_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a trained gan run on images, with model.classifier_run")
    parser.add_argument("--n", type=int, default=20000, help="samples drawn")
    parser.add_argument("--seed", type=int, default=7, help="seed of the latents")
    args = parser.parse_args()

    critic, confidence, classes, n_classes = score_samples(args.run_dir, args.n, args.seed)
    print(f"{args.n} samples of {args.run_dir}: correlation of the discriminator's score with the judge's "
          f"confidence {np.corrcoef(critic, confidence)[0, 1]:.3f}")
    order = np.argsort(-critic)
    for fraction in KEPT_FRACTIONS:
        kept = order[: int(fraction * args.n)]
        shares = np.bincount(classes[kept], minlength=n_classes) / len(kept)
        print(f"best-scored {fraction:4.0%}: confident {np.mean(confidence[kept] >= CONFIDENT):.3f}  "
              f"class shares {' '.join(f'{s:.3f}' for s in shares)}")


if __name__ == "__main__":
    main()
