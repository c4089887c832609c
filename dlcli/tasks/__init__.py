"""Training regimes: what a batch means, its loss, and the metrics summed for evaluation.

A task's `targets` picks what the outputs are compared with (the labels, or for a
reconstruction the inputs); `loss` is what one training step minimises (a scalar and
per-batch metrics; the global step lets an objective change during training, e.g. a
KL warm-up); `eval_outputs` is what evaluation asks of the model (its forward pass, for
a sequence-to-sequence task also its own greedy decoding; `index` (B,) holds the
examples' positions in the split, which fix any evaluation noise per example);
`eval_sums` returns sums over a padded evaluation batch (masked rows count for nothing)
that `finalize` turns into the split's metrics on the host, so evaluating in batches of
any size gives the same figures as one pass over the split.
"""

from __future__ import annotations

from typing import Protocol

import jax
import numpy as np


class Task(Protocol):
    kind: str

    def targets(self, x, y): ...

    def loss(self, outputs, targets: jax.Array, step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]: ...

    def eval_outputs(self, model, x, index: jax.Array): ...

    def eval_sums(self, outputs: jax.Array, targets: jax.Array, mask: jax.Array) -> dict[str, jax.Array]: ...

    def finalize(self, sums: dict[str, np.ndarray]) -> dict[str, float]: ...


def make_task(cfg) -> Task:
    """The task of an experiment config: the model's own (an autoencoder reconstructs),
    else `task.name`, else the dataset's kind."""
    from dlcli.tasks.reconstruction import Reconstruction
    from dlcli.tasks.supervised import Classification, Regression, SequenceToSequence, TokenClassification

    kind, n_outputs = cfg.task_kind, cfg.info.n_outputs
    if kind == "reconstruction":
        return Reconstruction.from_model(cfg.model)
    if kind == "generation":
        from dlcli.tasks.adversarial import Adversarial

        return Adversarial.from_config(cfg)

    if kind == "classification":
        return Classification(n_outputs, cfg.task.label_smoothing)
    if kind == "token_classification":
        return TokenClassification(n_outputs)
    if kind == "sequence_to_sequence":
        return SequenceToSequence(n_outputs)
    return Regression()
