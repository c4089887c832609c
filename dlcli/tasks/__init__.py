"""Training regimes: what a batch means, its loss, and the metrics summed for evaluation.

Every task subclasses `Task` and registers itself under its kind in `TASKS`, where it
is defined; `make_task` picks the one of an experiment (the model's own task, an
autoencoder's reconstruction, say, else `task.name`, else the dataset's kind). The
generic step, loop and evaluation call only what `Task` declares.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np
import optax
from flax import nnx

from dlcli.models.precision import computing_in, lowered, raised
from dlcli.optim import make_optimizer, make_schedule
from dlcli.registry import Registry

TASKS: Registry[type] = Registry("task")


@dataclasses.dataclass(frozen=True)
class Task:
    """One training regime.

    `targets` picks what the outputs are compared with (the labels, or for a
    reconstruction the inputs); `update` is one training step in the compiled region
    (by default: the gradient of `loss`, a scalar and per-batch metrics, one optimizer
    update; the global step lets an objective change during training, e.g. a KL
    warm-up); `eval_outputs` is what evaluation asks of the model (its forward pass,
    for a sequence-to-sequence task also its greedy decoding; `index` (B,) holds the
    examples' positions in the split, from `first_index`, which fix any evaluation
    noise per example); `eval_sums` returns sums over a padded evaluation batch (masked
    rows count for nothing) that `finalize` turns into the split's metrics on the host,
    so evaluating in batches of any size gives the same figures as one pass.
    `training_splits` is the data as the task uses it (an anomaly detector trains on
    the normal classes alone), `optimizer` makes the optimizer and schedule, `prepared`
    the task ready for the data and referenced runs (a GAN's judge). `progress_metric`
    is the training metric the progress bar shows. Two hooks run on the host:
    `evaluated` after each evaluation (it may add "warnings" to the record), `finished`
    after the final test measurement (extra metrics and files).
    `precision` is the compute dtype of `update` and of evaluation (`training.precision`,
    see `dlcli.models.precision`); `loss` and `eval_sums` see float32 outputs.
    """

    progress_metric: ClassVar[str] = "accuracy"
    precision: str = dataclasses.field(default="float32", kw_only=True)

    @classmethod
    def from_config(cls, cfg) -> "Task":
        raise NotImplementedError

    def optimizer(self, cfg, model, total_steps: int):
        """(the model's optimizer, the learning-rate schedule the step logs as `lr`)."""
        schedule = make_schedule(cfg.schedule, cfg.optimizer.learning_rate, total_steps)
        return nnx.Optimizer(model, make_optimizer(cfg.optimizer, schedule), wrt=nnx.Param), schedule

    def prepared(self, splits, references: dict) -> "Task":
        """The task made ready with what it measures against: the loaded splits and the
        configs of the runs the experiment references ({field: ExperimentConfig})."""
        return self

    def training_splits(self, cfg, splits):
        """The loaded splits as this task trains, validates and tests on them."""
        return splits

    def targets(self, x, y):
        return y

    def first_index(self, split: str) -> int:
        return 0

    def loss(self, outputs, targets: jax.Array, step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        raise NotImplementedError

    def update(self, model, optimizer, x, y, step: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
        """One gradient step on the batch (x, y); `key` feeds dropout and the `noise`
        stream (corruption, latent samples). Returns the step's metrics."""

        def loss_fn(model):
            # made inside the differentiated trace, as NNX requires
            rngs = nnx.Rngs(dropout=key, noise=jax.random.fold_in(key, 1))
            with computing_in(self.precision, model) as computing:
                outputs = raised(computing(lowered(x, self.precision), rngs=rngs), self.precision)
            return self.loss(outputs, y, step)

        (_, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return {**metrics, "grad_norm": optax.tree.norm(grads)}

    def eval_outputs(self, model, x, index: jax.Array):
        return model(x)

    def evaluation_outputs(self, model, x, index: jax.Array):
        """`eval_outputs` computed in the task's precision, returned in float32."""
        with computing_in(self.precision, model, training=False) as computing:
            return raised(self.eval_outputs(computing, lowered(x, self.precision), index), self.precision)

    def eval_sums(self, outputs, targets: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
        raise NotImplementedError

    def finalize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        raise NotImplementedError

    def evaluated(self, model, cfg, run_dir: Path, record: dict) -> None:
        """After each evaluation, with the model in evaluation mode and that evaluation's record."""

    def finished(self, model, cfg, splits, run_dir: Path, data_dir: Path) -> dict:
        """After the final measurement: {"metrics": {...}, ...} to add to the summary, or {}."""
        return {}


def make_task(cfg) -> Task:
    """The task of an experiment config (`cfg.task_kind`)."""
    from dlcli.tasks import adversarial, reconstruction, supervised  # noqa: F401  (register the tasks)

    return dataclasses.replace(TASKS.get(cfg.task_kind).from_config(cfg), precision=cfg.training.precision)
