"""Train steps per second of the MNIST VAE: dlcli against the same model in PyTorch eager, on CPU.

The model is dlcli's `vae` with `architecture: mlp`: an encoder 784-400-40 (the mean and
the log-variance of q(z|x), 20 each), z = mean + exp(log_var / 2) * eps with eps ~ N(0, I)
drawn afresh every step, and a decoder 20-400-784 giving Bernoulli logits, relu between
layers. The loss is the per-example binary cross-entropy with the logits summed over the
784 pixels plus the closed-form KL(q(z|x) || N(0, I)), averaged over the batch of 128,
on MNIST binarised at 0.5; Adam with learning rate 1e-3.

The dlcli side trains it exactly as `dlcli train` does (`DlcliSide`: `build_experiment`,
`EpochSampler`, `CompiledSteps.train_chunk` with `training.steps_per_dispatch` steps per
dispatch). The PyTorch side trains the identical model with plain eager steps on the same
binarised training images, gathering each batch through a per-epoch permutation. The two
sides alternate over several rounds after a warm-up chunk (which holds dlcli's
compilation); the table gives the median steps/s per side and their ratio, and the mean
training loss of one more chunk on each side checks that both optimise the same objective.

    .venv-bench/bin/python benchmarks/vae_steps.py --rounds 5 --steps 256 --data-dir ../shared/data

Without --data-dir (or DLCLI_DATA_DIR) the images are random MNIST-shaped IDX files
written to a temporary folder and read through dlcli's own MNIST reader. PyTorch runs
one intra-op thread per core unless --torch-threads says otherwise. Its threads meet at
a barrier in every parallel operator, so when other processes keep the cores busy a
descheduled thread stalls the step: on 2 cores with one core's worth of other work, the
PyTorch side ran up to some 30 times slower with 2 threads than with 1. Read the
per-round "other processes" share before reading the ratio.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _machine import DlcliSide, alternate
from dlcli.data import Splits
from train_steps import one_model_main

OVERRIDES = ["model.name=vae", "model.architecture=mlp", "model.hidden=[400]", "model.code=20",
             "model.activation=relu", "model.likelihood=bernoulli", "model.beta=1.0", "model.kl_warmup_steps=0",
             "data.name=mnist", "data.binarize=0.5", "training.batch_size=128",
             "optimizer.name=adam", "optimizer.learning_rate=0.001"]
DESCRIPTION = "VAE 784-400-(20+20)-20-400-784, relu, Bernoulli likelihood + KL"


class TorchVAE(nn.Module):
    """dlcli's MLP VAE: encoder 784-400-2*code, the reparameterised sample, decoder code-400-784."""

    def __init__(self, pixels: int, hidden: int, code: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * code))
        self.decoder = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, pixels))

    def forward(self, x):
        """x (B, pixels) -> logits of p(x|z) at one z ~ q(z|x) (B, pixels), KL to N(0, I) (B,)."""
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        kl = 0.5 * torch.sum(torch.exp(log_var) + mean**2 - 1.0 - log_var, dim=-1)
        return self.decoder(z), kl


def negative_elbo(logits, kl, x):
    """Per-example BCE summed over the pixels plus the KL, averaged over the batch."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1).mean() + kl.mean()


class TorchSide:
    """The same VAE in PyTorch eager, trained on the same binarised images with Adam."""

    label = "torch"

    def __init__(self, cfg, splits: Splits):
        torch.manual_seed(cfg.seed)
        self.x = torch.from_numpy(splits.train[0]).flatten(1)  # (N, 784), values 0 or 1
        self.model = TorchVAE(self.x.shape[1], cfg.model.hidden[0], cfg.model.code)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optimizer.learning_rate)
        self.batch = cfg.training.batch_size
        self.per_epoch = len(self.x) // self.batch
        self.step = 0
        self.order = torch.randperm(len(self.x))

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def train_step(self) -> torch.Tensor:
        """One Adam step on the next batch of the epoch's permutation; returns the (detached) loss."""
        position = self.step % self.per_epoch
        if position == 0:
            self.order = torch.randperm(len(self.x))
        x = self.x[self.order[position * self.batch: (position + 1) * self.batch]]
        loss = negative_elbo(*self.model(x), x)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.detach()

    def run(self, n_steps: int) -> None:
        for _ in range(n_steps):
            self.train_step()


def final_losses(dlcli: DlcliSide, twin: TorchSide) -> tuple[float, float]:
    """The mean training loss of one more dispatch of steps on each side."""
    exp, k = dlcli.exp, dlcli.per_dispatch
    metrics = exp.steps.train_chunk(exp.x_train, exp.y_train, dlcli.sampler.indices(dlcli.step, k), dlcli.step)
    dlcli.step += k
    return float(metrics["loss"].mean()), float(torch.stack([twin.train_step() for _ in range(k)]).mean())


def bench_vae(data_dir: Path, scratch: Path, rounds: int, steps: int) -> dict[str, list[float]]:
    """Alternate dlcli and PyTorch over `rounds` rounds of `steps` steps; return steps/s per side."""
    dlcli = DlcliSide(OVERRIDES, data_dir)
    cfg = dlcli.cfg
    twin = TorchSide(cfg, dlcli.exp.splits)
    k = dlcli.per_dispatch
    steps = -(-steps // k) * k  # whole dispatches only, so no second shape is ever compiled
    print(f"\n== vae: {DESCRIPTION}; batch {cfg.training.batch_size}, Adam lr {cfg.optimizer.learning_rate}")
    print(f"   dlcli model section: {json.dumps(cfg.to_dict()['model'])}")
    print(f"   parameters: dlcli {dlcli.params:,}, torch {twin.params:,}; "
          f"{steps} timed steps per round ({steps // k} dispatches of {k})")
    assert dlcli.params == twin.params, f"parameter counts differ: dlcli {dlcli.params}, torch {twin.params}"

    rates = alternate(dlcli, twin, rounds, steps)
    dlcli_loss, torch_loss = final_losses(dlcli, twin)
    print(f"   training loss (nats per image, mean of steps {dlcli.step - k + 1}-{dlcli.step}): "
          f"dlcli {dlcli_loss:.2f}, torch {torch_loss:.2f}")
    return rates


def main() -> None:
    one_model_main(__doc__, "vae", "binarised at 0.5", bench_vae)


if __name__ == "__main__":
    main()
