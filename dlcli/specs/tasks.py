"""Task kinds as config parsing sees them: each kind's metric names and default
monitor, declared here without JAX. The training regimes themselves (losses, metric
sums) are `dlcli.tasks`, one implementation registered under each kind."""

from __future__ import annotations

import dataclasses

from dlcli.registry import Registry

TASK_KINDS: Registry["TaskKind"] = Registry("task kind")


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """`metrics`: what every evaluation of the kind reports (without the split; a model
    may add its own, or, for `generation`, decide them all: `ModelSpec.metrics_for`);
    `monitor`: the default of training.monitor (None: val/ of the first metric);
    `compare_metric`: the test metric a comparison reports by default (None: the first)."""

    name: str
    metrics: tuple[str, ...]
    monitor: str | None = None
    compare_metric: str | None = "loss"


for _kind in (
    TaskKind("classification", ("accuracy", "loss"), monitor="val/accuracy", compare_metric="accuracy"),
    TaskKind("regression", ("loss", "mae", "rmse")),
    TaskKind("token_classification", ("loss", "accuracy", "bits_per_token")),
    TaskKind("sequence_to_sequence", ("exact_match", "loss", "accuracy", "bits_per_token"), monitor="val/exact_match"),
    TaskKind("reconstruction", ("loss", "mse", "psnr")),
    TaskKind("generation", (), compare_metric=None),  # a GAN's metrics depend on its data: GANConfig.metrics_for
):
    TASK_KINDS.register(_kind.name)(_kind)


def higher_is_better(metric: str) -> bool:
    """Whether a metric improves upwards (accuracies, exact match, PSNR, AUROC) rather than downwards (losses, errors)."""
    return metric.endswith(("accuracy", "exact_match", "psnr", "auroc", "modes", "high_quality", "classes", "confident"))
