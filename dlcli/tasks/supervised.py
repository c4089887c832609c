"""Supervised objectives: classification (cross-entropy), a label per step (token
classification: language models, the copy task), sequence to sequence (a label per
target step under teacher forcing, plus exact match of greedy decoding) and regression
(mean squared error)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlcli.tasks import TASKS, Task


@TASKS.register("classification")
@dataclasses.dataclass(frozen=True)
class Classification(Task):
    """Logits (B, K) against integer labels (B,)."""

    n_classes: int
    label_smoothing: float = 0.0
    kind: str = "classification"

    @classmethod
    def from_config(cls, cfg) -> "Classification":
        return cls(cfg.info.n_outputs, cfg.task.label_smoothing)

    def _cross_entropy(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        if self.label_smoothing == 0.0:
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, self.n_classes), self.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)

    def loss(self, logits, labels, step):
        loss = self._cross_entropy(logits, labels).mean()
        accuracy = (logits.argmax(-1) == labels).mean()
        return loss, {"loss": loss, "accuracy": accuracy}

    def eval_sums(self, logits, labels, mask):
        predicted = logits.argmax(-1)
        confusion = jnp.zeros((self.n_classes, self.n_classes), jnp.int32).at[labels, predicted].add(mask.astype(jnp.int32))
        return {
            "loss": (optax.softmax_cross_entropy_with_integer_labels(logits, labels) * mask).sum(),
            "correct": ((predicted == labels) * mask).sum(),
            "count": mask.sum(),
            "confusion": confusion,
        }

    def finalize(self, sums):
        count = float(sums["count"])
        return {"loss": float(sums["loss"]) / count, "accuracy": float(sums["correct"]) / count}


@TASKS.register("token_classification")
@dataclasses.dataclass(frozen=True)
class TokenClassification(Task):
    """Logits (B, T, K) against labels (B, T); a label of -1 (padding) counts for nothing.
    The loss is the mean cross-entropy per labelled step, in nats; `bits_per_token`
    is the same in bits (bits per character for a character language model)."""

    n_classes: int
    kind: str = "token_classification"

    @classmethod
    def from_config(cls, cfg) -> "TokenClassification":
        return cls(cfg.info.n_outputs)

    @staticmethod
    def _per_token(logits, labels):
        valid = labels >= 0
        safe = jnp.where(valid, labels, 0)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
        return loss * valid, (logits.argmax(-1) == safe) * valid, valid

    def loss(self, logits, labels, step):
        losses, correct, valid = self._per_token(logits, labels)
        count = jnp.maximum(valid.sum(), 1)
        loss = losses.sum() / count
        return loss, {"loss": loss, "accuracy": correct.sum() / count}

    def eval_sums(self, logits, labels, mask):
        losses, correct, valid = self._per_token(logits, labels)
        rows = mask[:, None]
        return {"loss": (losses * rows).sum(), "correct": (correct * rows).sum(), "count": (valid * rows).sum()}

    def finalize(self, sums):
        count = max(float(sums["count"]), 1.0)
        loss = float(sums["loss"]) / count
        return {"loss": loss, "accuracy": float(sums["correct"]) / count, "bits_per_token": loss / float(np.log(2))}


@TASKS.register("sequence_to_sequence")
@dataclasses.dataclass(frozen=True)
class SequenceToSequence(TokenClassification):
    """Trained as token classification of the target under teacher forcing; evaluated
    also by `exact_match`, the share of examples whose greedy decoding (the model's
    `greedy_decode`, which never sees the target) equals the whole target."""

    kind: str = "sequence_to_sequence"

    def eval_outputs(self, model, x, index):
        encoded = model.encode(x)  # once, for both decodings
        return model.teacher_forced(x, encoded), model.greedy_decode(x, encoded)

    def eval_sums(self, outputs, labels, mask):
        logits, decoded = outputs
        sums = super().eval_sums(logits, labels, mask)
        exact = jnp.all((decoded == labels) | (labels < 0), axis=1)
        return {**sums, "exact": (exact * mask).sum(), "examples": mask.sum()}

    def finalize(self, sums):
        return {**super().finalize(sums), "exact_match": float(sums["exact"]) / max(float(sums["examples"]), 1.0)}


@TASKS.register("regression")
@dataclasses.dataclass(frozen=True)
class Regression(Task):
    """Predictions (B, k) against targets (B, k)."""

    kind: str = "regression"
    progress_metric: ClassVar[str] = "mae"

    @classmethod
    def from_config(cls, cfg) -> "Regression":
        return cls()

    def loss(self, predictions, targets, step):
        error = predictions - targets
        loss = jnp.mean(error**2)
        return loss, {"loss": loss, "mae": jnp.mean(jnp.abs(error))}

    def eval_sums(self, predictions, targets, mask):
        error = (predictions - targets).reshape(predictions.shape[0], -1)
        return {
            "loss": (jnp.mean(error**2, axis=1) * mask).sum(),
            "abs": (jnp.mean(jnp.abs(error), axis=1) * mask).sum(),
            "count": mask.sum(),
        }

    def finalize(self, sums):
        count = float(sums["count"])
        return {"loss": float(sums["loss"]) / count, "mae": float(sums["abs"]) / count,
                "rmse": float(np.sqrt(float(sums["loss"]) / count))}
