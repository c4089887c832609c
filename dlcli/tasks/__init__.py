"""Training regimes: what a batch means, its loss, and the metrics summed for evaluation.

A task's `loss` is what one training step minimises (a scalar and per-batch metrics);
`eval_outputs` is what evaluation asks of the model (its forward pass, and for a
sequence-to-sequence task also its own greedy decoding); `eval_sums` returns sums over
a padded evaluation batch (masked rows count for nothing) that `finalize` turns into
the split's metrics on the host, so evaluating in batches of any size gives the same
figures as one pass over the split.
"""

from __future__ import annotations

from typing import Protocol

import jax
import numpy as np


class Task(Protocol):
    kind: str

    def loss(self, outputs: jax.Array, targets: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]: ...

    def eval_outputs(self, model, x): ...

    def eval_sums(self, outputs: jax.Array, targets: jax.Array, mask: jax.Array) -> dict[str, jax.Array]: ...

    def finalize(self, sums: dict[str, np.ndarray]) -> dict[str, float]: ...


def make_task(kind: str, n_outputs: int, label_smoothing: float = 0.0) -> Task:
    from dlcli.tasks.supervised import Classification, Regression, SequenceToSequence, TokenClassification

    if kind == "classification":
        return Classification(n_outputs, label_smoothing)
    if kind == "token_classification":
        return TokenClassification(n_outputs)
    if kind == "sequence_to_sequence":
        return SequenceToSequence(n_outputs)
    return Regression()
