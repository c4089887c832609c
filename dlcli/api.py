"""dlcli from Python (notebooks, scripts): `dlcli.load_run` and `dlcli.train`.

    import dlcli

    summary = dlcli.train("experiments/my_data.yaml", "runs/mine", overrides=["training.epochs=5"])
    run = dlcli.load_run("runs/mine")             # best checkpoint; checkpoint="latest" or a step
    predictions = run.predict(images)             # raw inputs, prepared as in training
    predictions.labels, predictions.probabilities
    run.model, run.config                         # the Flax NNX model, the ExperimentConfig

`import dlcli` stays cheap: this module (and JAX) is imported on the first use of
either name (`dlcli.__getattr__`).
"""

from __future__ import annotations

import copy
from pathlib import Path

from dlcli.config import ExperimentConfig, apply_override, config_from_dict, load_config
from dlcli.data import default_data_dir
from dlcli.predict import TrainedRun


def load_run(path: str | Path, checkpoint: str | int = "best") -> TrainedRun:
    """The run folder `path` at `checkpoint` (best, latest or a step number): `.model`,
    `.config`, `.step`, `.classes` and `.predict(x)`, whose predictions on a split equal
    what `dlcli eval` measures on it. `dlcli.errors.BadInput` for a folder that is not a
    usable run."""
    return TrainedRun(path, str(checkpoint))


def train(config: str | Path | dict | ExperimentConfig | None, run_dir: str | Path, *, overrides: list[str] = (),
          seed: int | None = None, data_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
          show_progress: bool = False) -> dict:
    """Train an experiment into `run_dir`, as `dlcli train CONFIG --run-dir RUN_DIR --set
    OVERRIDE ...` does, and return its summary (summary.json). `config`: a YAML file, a
    dict of sections ({"model": {"name": "cnn"}, ...}), an `ExperimentConfig`, or None
    for the built-in default; `overrides` are `--set` strings ("training.epochs=5")."""
    from dlcli.training.loop import fit

    if config is None or isinstance(config, (str, Path)):
        cfg = load_config(config, list(overrides), seed)
    else:
        raw = copy.deepcopy(config.to_dict() if isinstance(config, ExperimentConfig) else config)
        for item in overrides:
            apply_override(raw, item)
        if seed is not None:
            raw["seed"] = seed
        cfg = config_from_dict(raw)
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    return fit(cfg, Path(run_dir), data_dir=data, resume=resume, overwrite=overwrite, show_progress=show_progress)
