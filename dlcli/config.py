"""The experiment config: sections, YAML loading and `--set` overrides.

Precedence, lowest first: the defaults below (which are themselves the built-in default
experiment, the digits MLP) < the YAML file < `--set key.path=value` overrides. The
resolved config is validated whole before any work starts and saved in every run folder.

`model.name` and `data.name` pick their section's class: a registered name, or the
user's own class (`dlcli.registry`); a file reference is stored with its absolute path.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml

from dlcli.data import DATASETS, DatasetInfo, anchor_data_paths, register_builtin_datasets
from dlcli.errors import BadInput
from dlcli.registry import is_file_reference
from dlcli.schema import bounded, check_range, choose, folder_name, parse, section, seed_field, to_dict
from dlcli.specs import MODELS, register_builtin_models
from dlcli.specs.tasks import TASK_KINDS, higher_is_better

register_builtin_models()
register_builtin_datasets()


class _Loader(yaml.SafeLoader):
    """YAML's safe subset (no Python tags) with 1.2-style floats, so 1e-4 is a number
    (YAML 1.1 reads it as a string), and a key given twice in one mapping is an error
    (YAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice; keep one",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str):
    """yaml.safe_load, with 1e-4 read as a float."""
    return yaml.load(text, Loader=_Loader)


@dataclasses.dataclass
class TaskConfig:
    """What a batch means. `null` takes the dataset's own kind."""

    name: Literal["classification", "regression", "token_classification", "sequence_to_sequence"] | None = None
    label_smoothing: float = bounded(0.0, low=0.0, high=1.0, high_open=True)


@dataclasses.dataclass
class AnalysisConfig:
    """What an autoencoder run measures after training, beside its test metrics.

    `normal_classes`: train and validate on these classes only, then score every test
    image by its reconstruction error and report the AUROC of telling the other classes
    apart (anomaly detection); `ood_dataset`: also score that dataset's test split as
    out-of-distribution; `pca`: the test reconstruction error of PCA with as many
    components as the code; `linear_probe`: the test accuracy of a logistic regression
    on the frozen codes (and on the PCA codes when `pca`), fit on up to `probe_examples`
    training codes.
    """

    normal_classes: list[int] | None = bounded(None, low=0)
    ood_dataset: str | None = None
    pca: bool = False
    linear_probe: bool = False
    probe_examples: int = bounded(60000, low=10)


@dataclasses.dataclass
class OptimizerConfig:
    """An optax optimizer. `weight_decay` is decoupled for adamw and L2 for the others."""

    name: Literal["sgd", "momentum", "adam", "adamw"] = "adam"
    learning_rate: float = bounded(1e-3, low=0.0, low_open=True)
    momentum: float = bounded(0.9, low=0.0, high=1.0, high_open=True)
    nesterov: bool = False
    b1: float = bounded(0.9, low=0.0, high=1.0, high_open=True)
    b2: float = bounded(0.999, low=0.0, high=1.0, high_open=True)
    eps: float = bounded(1e-8, low=0.0, low_open=True)
    weight_decay: float = bounded(0.0, low=0.0)
    clip_norm: float | None = bounded(None, low=0.0, low_open=True)


@dataclasses.dataclass
class ScheduleConfig:
    """Learning-rate schedule over the run's total steps.

    constant; warmup_cosine (linear warm-up for `warmup_steps`, then cosine decay to
    `min_lr_ratio` x the peak); step_decay (multiply by `decay_rate` every `decay_every` steps).
    """

    name: Literal["constant", "warmup_cosine", "step_decay"] = "constant"
    warmup_steps: int = bounded(0, low=0)
    min_lr_ratio: float = bounded(0.0, low=0.0, high=1.0)
    decay_every: int = bounded(1000, low=1)
    decay_rate: float = bounded(0.1, low=0.0, high=1.0, low_open=True)


MAX_STEPS = 2**31 - 1  # steps are counted in int32 on the device


@dataclasses.dataclass
class TrainingConfig:
    """How long and how to train. `steps` wins over `epochs` when both are set.

    `monitor` is the metric that picks the best checkpoint and drives early stopping
    (default: val/accuracy for classification, val/exact_match for sequence to sequence,
    a GAN's first metric (val/kl_uniform, val/frechet), val/loss otherwise); `patience` counts
    evaluations without improvement before stopping (null: never stop early);
    `restore_best` reports test metrics of, and ends with, the best checkpoint.
    `gradient_flow` (recurrent models) logs the norm of d(loss)/d(h_t) for every step t
    at each evaluation into metrics.jsonl and plots it to gradient_flow.png.
    `precision: bfloat16` computes the forward and backward passes (training and
    evaluation) in bfloat16 while the parameters, the optimizer state and the loss stay
    float32 (`dlcli.models.precision`).
    `log_every`: TensorBoard gets the training metrics every this many steps
    (`train_step/loss`, the mean since the last; null: only at evaluations).
    """

    epochs: int | None = bounded(30, low=1, high=MAX_STEPS)
    steps: int | None = bounded(None, low=1, high=MAX_STEPS)
    batch_size: int = bounded(128, low=1)
    eval_every: int | None = bounded(None, low=1)
    steps_per_dispatch: int = bounded(16, low=1)
    monitor: str | None = None
    monitor_mode: Literal["min", "max"] | None = None
    patience: int | None = bounded(None, low=1)
    min_delta: float = bounded(0.0, low=0.0)
    restore_best: bool = True
    eval_batch_size: int = bounded(1000, low=1)
    gradient_flow: bool = False
    precision: Literal["float32", "bfloat16"] = "float32"
    log_every: int | None = bounded(50, low=1)

    def validate(self, path: str) -> None:
        if self.epochs is None and self.steps is None:
            raise BadInput(f"{path}.epochs and {path}.steps are both empty; set one of them")


@dataclasses.dataclass
class ParallelConfig:
    """Where a run trains: `data` devices along the data axis (`auto`: every device of
    every process), each computing its share of every batch (`training.batch_size` must
    divide by it); `fsdp` also splits each parameter and optimizer array over them
    (for a model too big to hold whole on each device). Not part of what a run is: a
    run resumes or is evaluated on any number of devices."""

    data: int | Literal["auto"] = "auto"
    fsdp: bool = False

    def validate(self, path: str) -> None:
        if self.data != "auto":
            check_range(self.data, f"{path}.data", 1, None)


@dataclasses.dataclass
class CheckpointConfig:
    """Orbax checkpoints at every `every`-th evaluation that comes at least
    `min_interval_s` seconds after the last save (0: at each), on early stopping and at
    the end, each preceded by the best state by `training.monitor` since the last
    checkpoint when that came in between (held on the device until then); the last
    `keep` and the best are kept. Which evaluations save hangs on the clock; what is
    computed never does."""

    every: int = bounded(1, low=1)
    min_interval_s: float = bounded(10.0, low=0)
    keep: int = bounded(2, low=1)


@dataclasses.dataclass
class ExperimentConfig:
    """One experiment. Its defaults are the built-in default experiment (digits MLP)."""

    name: str = folder_name("mlp_digits")
    seed: int = seed_field()
    model: Any = choose(MODELS, "mlp")
    data: Any = choose(DATASETS, "digits")
    task: TaskConfig = section(TaskConfig)
    optimizer: OptimizerConfig = section(OptimizerConfig)
    schedule: ScheduleConfig = section(ScheduleConfig)
    training: TrainingConfig = section(TrainingConfig)
    checkpoint: CheckpointConfig = section(CheckpointConfig)
    analysis: AnalysisConfig = section(AnalysisConfig)
    parallel: ParallelConfig = section(ParallelConfig)

    def validate(self, path: str) -> None:
        info = self.data.info()
        model_kind = self.model.task_kind
        self.model.check_experiment(self)
        if not self.model.analyses and self.analysis != AnalysisConfig():
            raise BadInput(f"the analysis section applies to autoencoder runs, not {self.model.name!r}; remove it")
        if self.task.name is not None and model_kind is not None:
            raise BadInput(f"model {self.model.name!r} sets its own task ({model_kind}); remove task.name")
        if self.task.name is not None and self.task.name != info.kind:
            raise BadInput(f"task.name is {self.task.name!r} but dataset {self.data.name!r} is a {info.kind} dataset; "
                           f"set task.name: {info.kind} (or leave it out)")
        self.model.check_input(info)
        self.model.check_data(self.data)
        valid = [f"val/{name}" for name in self.metric_names]
        if self.monitor not in valid:
            raise BadInput(f"training.monitor {self.monitor!r} is not a validation metric of a {self.task_kind} task; "
                           f"choose one of: {', '.join(valid)}")
        if self.parallel.data != "auto" and self.training.batch_size % self.parallel.data:
            raise BadInput(f"training.batch_size {self.training.batch_size} does not divide by parallel.data "
                           f"{self.parallel.data}; use a multiple of {self.parallel.data}")
        if self.training.gradient_flow and not self.model.recurrent:
            raise BadInput(f"training.gradient_flow needs a recurrent model (rnn, lstm, gru), not {self.model.name!r}; "
                           "set training.gradient_flow: false")

    @property
    def info(self) -> DatasetInfo:
        return self.data.info()

    @property
    def task_kind(self) -> str:
        return self.model.task_kind or self.task.name or self.info.kind

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics every evaluation of this run reports (without the split): its
        task's, and its model's own (a VAE's negative ELBO, ...)."""
        return self.model.metrics_for(self.info, TASK_KINDS.get(self.task_kind).metrics)

    @property
    def monitor(self) -> str:
        return self.training.monitor or TASK_KINDS.get(self.task_kind).monitor or f"val/{self.metric_names[0]}"

    @property
    def monitor_mode(self) -> str:
        if self.training.monitor_mode:
            return self.training.monitor_mode
        return "max" if higher_is_better(self.monitor) else "min"

    def to_dict(self) -> dict:
        return to_dict(self)


def load_config(path: str | Path | None, overrides: list[str] = (), seed: int | None = None) -> ExperimentConfig:
    """Resolve defaults < YAML file at `path` (None: the built-in default) < overrides."""
    raw: dict = {}
    if path is not None:
        raw = read_yaml(Path(path))
        raw.setdefault("name", Path(path).stem)
        resolve_plugin_files(raw, Path(path).parent)
        anchor_data_paths(raw, Path(path).parent)  # data files named by the config: beside it
    for item in overrides:
        apply_override(raw, item)
    resolve_plugin_files(raw, Path.cwd())  # what --set gave: relative to the working folder
    if seed is not None:
        raw["seed"] = seed
    return parse(ExperimentConfig, raw, "")


def resolve_plugin_files(raw: dict, folder: Path) -> None:
    """Make a relative file reference in `model.name` or `data.name`
    ('my_models.py:MyNet', see `dlcli.registry`) absolute, read from `folder`, so the
    run folder's config.yaml names the same file from wherever it is evaluated or resumed."""
    for key in ("model", "data"):
        section = raw.get(key)
        name = section.get("name") if isinstance(section, dict) else None
        if isinstance(name, str) and is_file_reference(name):
            file, _, attribute = name.rpartition(":")
            section["name"] = f"{os.path.abspath(folder / Path(file).expanduser())}:{attribute}"


def read_yaml(path: Path) -> dict:
    """A YAML file's top-level mapping; `BadInput` for a missing or malformed file."""
    if not path.exists():
        raise BadInput(f"config file {path} does not exist; give the path of a YAML experiment file (see experiments/)")
    if path.is_dir():
        raise BadInput(f"config file {path} is a folder; give the path of a YAML experiment file (see experiments/)")
    if not path.is_file():
        raise BadInput(f"config file {path} is not a regular file (a device or a pipe); give the path of a YAML "
                       "experiment file (see experiments/)")
    try:
        raw = parse_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested too deeply
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None)
        what = f" ({problem})" if problem else ""
        raise BadInput(f"config file {path} is not valid YAML{where}{what}; fix it there") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadInput(f"config file {path} must hold a mapping of sections (model:, data:, ...), got a {type(raw).__name__}")
    return raw


def apply_override(raw: dict, item: str) -> None:
    """Set a dotted key in `raw` from 'key.path=value' (value parsed as YAML)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"--set {item!r} is not of the form key.path=value (e.g. --set training.epochs=5)")
    try:
        value = parse_yaml(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise BadInput(f"--set {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def resolved_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def config_from_dict(raw: dict) -> ExperimentConfig:
    """Rebuild a config saved in a run folder or a checkpoint."""
    return parse(ExperimentConfig, copy.deepcopy(raw), "")


def check_metric(metric: str, cfg: ExperimentConfig, option: str, extra_evals: tuple[str, ...] = ()) -> None:
    """`BadInput` unless `metric` is a val/ or test/ metric (or one of an extra
    evaluation, 'name:test/...') that a run of `cfg` reports."""
    kind, names = cfg.task_kind, cfg.metric_names
    valid = [f"{split}/{n}" for split in ("test", "val") for n in names]
    valid += [f"{extra}:test/{n}" for extra in extra_evals for n in names]
    if metric not in valid:
        raise BadInput(f"{option} {metric!r} does not exist for {kind} runs; choose one of: {', '.join(valid)}")
