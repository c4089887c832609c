"""An experiment made concrete: data staged on the device, model, optimizer, compiled steps.

`dlcli train` and `dlcli eval` both start here, so a checkpoint is always evaluated by
exactly the function that measured it during training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from dlcli.config import ExperimentConfig
from dlcli.data import DatasetInfo, Splits, num_examples
from dlcli.errors import BadInput
from dlcli.models import count_params
from dlcli.tasks import make_task
from dlcli.train.optim import make_optimizer, make_schedule
from dlcli.train.step import CompiledSteps, EvalBatches


@dataclasses.dataclass
class Experiment:
    cfg: ExperimentConfig
    splits: Splits
    steps: CompiledSteps
    params: int
    steps_per_epoch: int
    total_steps: int
    x_train: jax.Array | dict
    y_train: jax.Array
    _staged: dict[str, EvalBatches] = dataclasses.field(default_factory=dict)

    def eval_batches(self, split: str) -> EvalBatches:
        """The split staged on the device (once) in evaluation batches."""
        if split not in self._staged:
            x, y = self.splits.split(split)
            task = self.steps.task
            first = task.first_index(split) if hasattr(task, "first_index") else 0
            self._staged[split] = EvalBatches(x, task.targets(x, y), self.cfg.training.eval_batch_size, first)
        return self._staged[split]

    def pure_state(self) -> dict:
        """The model and optimizer state as nested dicts of arrays (what a checkpoint holds)."""
        return nnx.to_pure_dict(self.steps.state)

    def load_pure_state(self, pure: dict) -> None:
        nnx.replace_by_pure_dict(self.steps.state, pure)


def build_experiment(cfg: ExperimentConfig, data_dir: Path) -> Experiment:
    """Load the data, build model and optimizer from `cfg.seed`; raises `BadInput` for
    data that is missing or does not fit the training settings."""
    splits = cfg.data.load(data_dir)
    if cfg.analysis.normal_classes is not None:  # anomaly detection: learn the normal classes only
        from dlcli.analysis import restrict_to_classes

        splits = restrict_to_classes(splits, cfg.analysis.normal_classes)
    n_train = num_examples(splits.train[0])
    batch = cfg.training.batch_size
    if batch > n_train:
        raise BadInput(f"training.batch_size {batch} is larger than the {n_train} training examples of "
                       f"{cfg.data.name!r}; use at most {n_train}")
    steps_per_epoch = n_train // batch
    total = cfg.training.steps if cfg.training.steps is not None else cfg.training.epochs * steps_per_epoch

    info = splits.info
    model, optimizer, schedule = build_model(cfg, info, total)
    task = make_task(cfg)
    if getattr(cfg.model, "classifier_run", None) is not None:  # a GAN on images, measured by a trained classifier
        from dlcli.tasks.adversarial import Judge

        judge = Judge.load(cfg.model.classifier_run, splits, num_examples(splits.val[0]))
        task = dataclasses.replace(task, judge=judge)
    steps = CompiledSteps(model, optimizer, task, schedule, seed=cfg.seed)
    x_train, y_train = (jax.device_put(a) for a in splits.train)
    y_train = task.targets(x_train, y_train)
    return Experiment(cfg, splits, steps, count_params(model), steps_per_epoch, total, x_train, y_train)


def build_model(cfg: ExperimentConfig, info: DatasetInfo, total_steps: int):
    """The model (initialised from `cfg.seed`), its optimizer and the learning-rate schedule."""
    model = cfg.model.build(info, nnx.Rngs(params=cfg.seed))
    if getattr(cfg.model, "task_kind", None) == "generation":  # a GAN: one optimizer per network; lr logs G's
        from dlcli.models.gan import GANOptimizers

        schedule = make_schedule(cfg.schedule, cfg.model.g_learning_rate, total_steps)
        optimizer = GANOptimizers(model, cfg.model, lambda peak: make_schedule(cfg.schedule, peak, total_steps))
    else:
        schedule = make_schedule(cfg.schedule, cfg.optimizer.learning_rate, total_steps)
        optimizer = nnx.Optimizer(model, make_optimizer(cfg.optimizer, schedule), wrt=nnx.Param)
    return model, optimizer, schedule


class EpochSampler:
    """Batch indices for any global step: epoch = step // steps_per_epoch, and each epoch
    is one permutation drawn from (seed, epoch); the last partial batch is dropped. A
    resumed run therefore sees exactly the batches it would have seen."""

    def __init__(self, n_examples: int, batch_size: int, seed: int):
        self.n, self.batch, self.seed = n_examples, batch_size, seed
        self.per_epoch = n_examples // batch_size
        self._cache: dict[int, np.ndarray] = {}

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k >= epoch - 1}
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._cache[epoch] = order[: self.per_epoch * self.batch].reshape(self.per_epoch, self.batch).astype(np.int32)
        return self._cache[epoch]

    def indices(self, first_step: int, count: int) -> np.ndarray:
        """(count, batch_size) int32 example indices for steps first_step .. first_step+count-1."""
        return np.stack([self._epoch_order(s // self.per_epoch)[s % self.per_epoch]
                         for s in range(first_step, first_step + count)])
