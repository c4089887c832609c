"""`evaluate_run`: re-measure a checkpoint of a finished (or stopped) run, behind `dlcli eval`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlcli.config import ParallelConfig
from dlcli.data.vision import shift_images
from dlcli.errors import BadInput
from dlcli.runs import RunDir
from dlcli.training.experiment import build_experiment
from dlcli.training.step import EvalBatches


def evaluate_run(run_dir: Path, *, checkpoint: str = "best", split: str = "test", data_dir: Path,
                 shift: int = 0) -> dict:
    """Rebuild the run's model from its saved config, restore `checkpoint` (best, latest
    or a step) and measure it on `split`, on every device this process sees; `shift` > 0
    first translates every image by a random offset of up to that many pixels (a
    translation-robustness test)."""
    run = RunDir(run_dir)
    cfg = run.trained_config()
    if shift and not cfg.info.is_image:
        raise BadInput(f"--shift needs an image dataset; {cfg.data.name!r} has inputs of shape {cfg.info.input_shape}")
    if shift < 0:
        raise BadInput(f"--shift must be 0 or more pixels, got {shift}")
    checkpoints = run.checkpoints(cfg, read_only=True)
    try:
        checkpoints.resolve(checkpoint)  # a checkpoint that does not exist is refused before the data is read
        exp = build_experiment(cfg, data_dir, run.references(cfg), parallel=ParallelConfig())
        run.check_same_data(exp.preprocessing)  # the user's data files as they were in training
        step, items = checkpoints.restore_chosen(checkpoint, {"model": exp.checkpoint_items()["model"]})
    finally:
        checkpoints.close()
    exp.load_checkpoint_items(items)
    if shift:
        x, y = exp.splits.split(split)
        shifted = shift_images(x, shift)
        batches = EvalBatches(shifted, exp.steps.task.targets(shifted, y), cfg.training.eval_batch_size,
                              exp.placement)
    else:
        batches = exp.eval_batches(split)
    values, sums = exp.steps.evaluate(batches)
    result = {"run_dir": str(run.path), "checkpoint": step, "split": split, "shift": shift,
              "metrics": {f"{split}/{k}": v for k, v in values.items()}, "params": exp.params}
    if "confusion" in sums:
        result["confusion"] = np.asarray(sums["confusion"]).tolist()
    return result
