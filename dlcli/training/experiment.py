"""An experiment made concrete: data staged on the device, model, optimizer, compiled steps.

`dlcli train` and `dlcli eval` both start here, so a checkpoint is always evaluated by
exactly the function that measured it during training.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Hashable

import jax
import numpy as np
from flax import nnx

from dlcli.checkpoint import whole_array
from dlcli.config import MAX_STEPS, ExperimentConfig, ParallelConfig
from dlcli.data import Splits, num_examples, preprocessing_record
from dlcli.errors import BadInput
from dlcli.models import count_params
from dlcli.runs import RunDir, build_model, param_count
from dlcli.tasks import make_task
from dlcli.training.parallel import Placement
from dlcli.training.step import CompiledSteps, EvalBatches


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
    references: dict[str, ExperimentConfig]
    preprocessing: dict  # how inputs were prepared, for the run folder's preprocessing.json
    _staged: dict[str, EvalBatches] = dataclasses.field(default_factory=dict)

    @property
    def placement(self) -> Placement:
        return self.steps.placement

    def eval_batches(self, split: str) -> EvalBatches:
        """The split staged on the device (once) in evaluation batches."""
        if split not in self._staged:
            x, y = self.splits.split(split)
            task = self.steps.task
            self._staged[split] = EvalBatches(x, task.targets(x, y), self.cfg.training.eval_batch_size, self.placement,
                                              task.first_index(split))
        return self._staged[split]

    def eval_model(self) -> nnx.Module:
        """The model at the current state, in evaluation mode (for host-side measurements);
        in a multi-process run a whole copy on this process's first device, so what it
        computes involves no other process."""
        state = self.steps.state
        if jax.process_count() > 1:
            state = jax.tree.map(lambda a: jax.device_put(whole_array(a), jax.local_devices()[0]), state)
        model, _ = nnx.merge(self.steps.eval_graphdef, state)
        return model

    def checkpoint_items(self) -> dict[str, dict]:
        """The model and the optimizer state as nested dicts of arrays: the array items of a checkpoint."""
        pure = nnx.to_pure_dict(self.steps.state)  # the state of (model, optimizer)
        return {"model": pure[0], "optimizer": pure[1]}

    def load_checkpoint_items(self, items: dict[str, dict]) -> None:
        """Take restored items (the model, and the optimizer when given)."""
        nnx.replace_by_pure_dict(self.steps.state[0], items["model"])
        if "optimizer" in items:
            nnx.replace_by_pure_dict(self.steps.state[1], items["optimizer"])


def build_experiment(cfg: ExperimentConfig, data_dir: Path,
                     references: dict[str, ExperimentConfig] | None = None, parallel: ParallelConfig | None = None) -> Experiment:
    """Load the data, build model and optimizer from `cfg.seed`; raises `BadInput` for
    data that is missing or does not fit the training settings, or referenced runs
    that do not fit. `references` are the configs of the runs `cfg` references as a
    run folder saved them (`RunDir.references`: a run being resumed or evaluated, whose
    weights come from its own checkpoint); None reads the referenced run folders and
    starts the model from a pre-trained run's weights where the spec asks for them.
    `parallel` places the run on devices other than its config says (evaluation: on
    every device this process sees)."""
    fresh = references is None
    if fresh:
        references = {field: RunDir(folder).trained_config() for field, folder in cfg.model.referenced_runs().items()}
    cfg.model.check_referenced(references, cfg.data)
    loaded = cfg.data.load(data_dir)  # first: the shapes of the user's files are known once read
    cfg.model.check_input(loaded.info)
    task = make_task(cfg)
    splits = task.training_splits(cfg, loaded)
    n_train = num_examples(splits.train[0])
    batch = cfg.training.batch_size
    if batch > n_train:
        raise BadInput(f"training.batch_size {batch} is larger than the {n_train} training examples of "
                       f"{cfg.data.name!r}; use at most {n_train}")
    placement = Placement.for_config(parallel or cfg.parallel)
    steps_per_epoch = n_train // batch
    total = cfg.training.steps if cfg.training.steps is not None else cfg.training.epochs * steps_per_epoch
    if total > MAX_STEPS:
        raise BadInput(f"training.epochs {cfg.training.epochs} x {steps_per_epoch} steps per epoch is {total:,} steps, "
                       f"more than {MAX_STEPS:,}; train for fewer epochs")

    info = splits.info
    check_fits_in_memory(param_count(cfg, info, references))
    model = build_model(cfg, info, references)
    start = cfg.model.pretrained_start()
    if fresh and start is not None:
        folder, checkpoint = start
        model.load_pretrained(RunDir(folder).restore_model(checkpoint, references[cfg.model.pretrained_from])[0])
    optimizer, schedule = task.optimizer(cfg, model, total)
    task = task.prepared(splits, references)
    steps = CompiledSteps(model, optimizer, task, schedule, seed=cfg.seed, placement=placement,
                          program_key=program_key(cfg, info, total, references, task))
    x_train, y_train = placement.put_replicated(splits.train)
    y_train = task.targets(x_train, y_train)
    return Experiment(cfg, splits, steps, count_params(model), steps_per_epoch, total, x_train, y_train, references,
                      preprocessing_record(loaded))


TRAINING_BYTES_PER_PARAM = 16  # float32 parameters, gradients and two optimizer moments


def check_fits_in_memory(params: int) -> None:
    """`BadInput` for a model whose training state alone (`TRAINING_BYTES_PER_PARAM` per
    parameter, before any activation) exceeds the memory of the device it trains on,
    instead of an allocation failure that aborts the process."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    available = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    needed = TRAINING_BYTES_PER_PARAM * params
    if needed > available:
        raise BadInput(f"the model has {params:,} parameters, {needed / 2**30:,.1f} GiB of training state, more than the "
                       f"{available / 2**30:,.1f} GiB of memory of {device.platform} device {device.id}; "
                       "make it smaller (model.width, layers, hidden, channels)")


def program_key(cfg: ExperimentConfig, info, total_steps: int, references: dict[str, ExperimentConfig],
                task) -> Hashable | None:
    """What the compiled steps of an experiment depend on besides their arguments: the
    model, optimizer and schedule follow from the config (less its name, a label, and
    its seed, which only sets initial values and the keys passed in), the dataset's
    description, the step count and the referenced runs' configs; the task is compared
    by value. A task that holds arrays (a GAN's judge) hashes by identity, so its
    programs are never shared; an unhashable one gives None (nothing shared)."""
    try:
        hash(task)
    except TypeError:
        return None
    config = {key: value for key, value in cfg.to_dict().items() if key not in ("name", "seed")}
    referenced = {field: ref.to_dict() for field, ref in references.items()}
    return json.dumps([config, referenced], sort_keys=True, default=repr), repr(info), total_steps, task


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
