"""Iterations per second of the MLP GAN on MNIST: dlcli against the same GAN in PyTorch eager, on CPU.

The model is dlcli's `gan` with `architecture: mlp`: a generator 64-256-256-784 (ReLU,
sigmoid output) and a discriminator 784-256-256-1 (leaky ReLU 0.2), both initialised
like PyTorch's layers (`init: fan_in_uniform`); the original non-saturating loss; Adam
2e-4 with beta1 0.5 for each network; batch 128. One iteration is one discriminator step
on a real batch and fresh latents, then one generator step on fresh latents.

The dlcli side trains it exactly as `dlcli train` does (`DlcliSide`: `build_experiment`,
`EpochSampler`, `CompiledSteps.train_chunk` with both updates of every iteration in one
compiled function and `training.steps_per_dispatch` iterations per dispatch). The
PyTorch side runs the identical iteration with plain eager steps on the same images.
The sides alternate over several rounds after a warm-up chunk (which holds dlcli's
compilation); the table gives the median iterations/s per side and their ratio, and the
mean discriminator loss of one more chunk on each side checks both train the same game.

    .venv-bench/bin/python benchmarks/gan_steps.py --rounds 5 --steps 256 --data-dir ../shared/data

dlcli measures generated images with a classifier of its own (`model.classifier_run`);
the script trains a small one first (a few seconds, not timed) because a GAN on images
will not start without it. Without --data-dir (or DLCLI_DATA_DIR) the images are random
MNIST-shaped files. As in vae_steps.py, read the per-round "other processes" share
before the ratio: PyTorch's threads stall when other work holds the cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _machine import DlcliSide, alternate
from dlcli.config import load_config
from dlcli.data import Splits
from dlcli.training.loop import fit
from train_steps import one_model_main

OVERRIDES = ["model.name=gan", "model.architecture=mlp", "model.latent=64", "model.generator=[256,256]",
             "model.discriminator=[256,256]", "model.loss=non_saturating", "model.init=fan_in_uniform",
             "model.g_learning_rate=0.0002", "model.d_learning_rate=0.0002", "model.b1=0.5", "model.b2=0.999",
             "data.name=mnist", "data.normalize=unit", "training.batch_size=128"]
DESCRIPTION = "GAN, generator 64-256-256-784, discriminator 784-256-256-1, non-saturating loss, 1 D + 1 G step"


def mlp(sizes: list[int], activation: nn.Module) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation]
    return nn.Sequential(*layers[:-1])


class TorchSide:
    """The same GAN in PyTorch eager: nn.Linear's default initialisation is dlcli's `fan_in_uniform`."""

    label = "torch"

    def __init__(self, cfg, splits: Splits):
        torch.manual_seed(cfg.seed)
        model = cfg.model
        self.x = torch.from_numpy(splits.train[0]).flatten(1)  # (N, 784) in [0, 1]
        self.generator = nn.Sequential(mlp([model.latent, *model.generator, self.x.shape[1]], nn.ReLU()), nn.Sigmoid())
        self.discriminator = mlp([self.x.shape[1], *model.discriminator, 1], nn.LeakyReLU(0.2))
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=model.g_learning_rate, betas=(model.b1, model.b2))
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=model.d_learning_rate,
                                            betas=(model.b1, model.b2))
        self.latent, self.batch = model.latent, cfg.training.batch_size
        self.per_epoch = len(self.x) // self.batch
        self.step = 0
        self.order = torch.randperm(len(self.x))

    @property
    def params(self) -> int:
        return sum(p.numel() for m in (self.generator, self.discriminator) for p in m.parameters())

    def train_step(self) -> torch.Tensor:
        """One discriminator step and one generator step; returns the discriminator's (detached) loss."""
        position = self.step % self.per_epoch
        if position == 0:
            self.order = torch.randperm(len(self.x))
        real = self.x[self.order[position * self.batch: (position + 1) * self.batch]]
        with torch.no_grad():
            fake = self.generator(torch.randn(self.batch, self.latent))
        d_loss = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake)).mean()
        d_loss.backward()
        self.d_optimizer.step()
        self.d_optimizer.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)  # the generator step needs no gradient of D's weights
        g_loss = F.softplus(-self.discriminator(self.generator(torch.randn(self.batch, self.latent)))).mean()
        g_loss.backward()
        self.g_optimizer.step()
        self.g_optimizer.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(True)
        self.step += 1
        return d_loss.detach()

    def run(self, n_steps: int) -> None:
        for _ in range(n_steps):
            self.train_step()


def train_classifier(data_dir: Path, run_dir: Path) -> Path:
    """A small MLP classifier on MNIST in [0, 1] (200 steps), the judge dlcli's GAN needs to start."""
    overrides = ["data.name=mnist", "data.normalize=unit", "training.steps=200", "training.eval_every=200"]
    fit(load_config(None, overrides), run_dir, data_dir=data_dir, show_progress=False)
    return run_dir


def bench_gan(data_dir: Path, scratch: Path, rounds: int, steps: int) -> dict[str, list[float]]:
    """Train the judge into `scratch`, then alternate dlcli and PyTorch; return iterations/s per side."""
    classifier = train_classifier(data_dir, scratch / "classifier")
    dlcli = DlcliSide([*OVERRIDES, f"model.classifier_run={classifier}"], data_dir)
    cfg = dlcli.cfg
    twin = TorchSide(cfg, dlcli.exp.splits)
    k = dlcli.per_dispatch
    steps = -(-steps // k) * k  # whole dispatches only, so no second shape is ever compiled
    print(f"\n== gan: {DESCRIPTION}; batch {cfg.training.batch_size}, Adam lr {cfg.model.g_learning_rate} "
          f"(b1 {cfg.model.b1}) per network")
    print(f"   dlcli model section: {json.dumps(cfg.to_dict()['model'])}")
    print(f"   parameters: dlcli {dlcli.params:,}, torch {twin.params:,}; "
          f"{steps} timed iterations per round ({steps // k} dispatches of {k})")
    assert dlcli.params == twin.params, f"parameter counts differ: dlcli {dlcli.params}, torch {twin.params}"

    rates = alternate(dlcli, twin, rounds, steps)
    exp = dlcli.exp
    metrics = exp.steps.train_chunk(exp.x_train, exp.y_train, dlcli.sampler.indices(dlcli.step, k), dlcli.step)
    torch_loss = float(torch.stack([twin.train_step() for _ in range(k)]).mean())
    print(f"   discriminator loss (mean of one more chunk of {k}): dlcli {float(metrics['d_loss'].mean()):.3f}, "
          f"torch {torch_loss:.3f}")
    return rates


def main() -> None:
    one_model_main(__doc__, "gan", "scaled to [0, 1]", bench_gan)


if __name__ == "__main__":
    main()
