"""A run folder: the one place that reads and writes what `dlcli train` leaves behind.

    RUN_DIR/
      config.yaml      the resolved config (`config`)
      references/      a copy of the config.yaml of each run folder this run read when it
                       started (a pre-trained encoder, a judging classifier), by field name
      vocab.json       a text corpus's characters in id order (`vocab`)
      metrics.jsonl    one record per evaluation (`dlcli.runlog`)
      summary.json     the final summary (`summary`)
      checkpoints/     Orbax step folders (`checkpoints`, `dlcli.checkpoint`)

A run that starts from another run's weights keeps them in its own checkpoints and
that run's config in references/, so `eval`, `sample`, `embed` and `--resume` never
reopen the source run: it may be moved or deleted once the run has started.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from dlcli.checkpoint import RunCheckpoints, has_checkpoint
from dlcli.config import ExperimentConfig, config_from_dict, parse_yaml, resolved_yaml
from dlcli.data import DatasetInfo
from dlcli.errors import BadInput
from dlcli.files import LOCK_NAME, write_atomically
from dlcli.runlog import read_metrics


class RunDir:
    """The run folder at `path` (which need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def vocab_file(self) -> Path:
        return self.path / "vocab.json"

    @property
    def references_dir(self) -> Path:
        return self.path / "references"

    def has_checkpoint(self) -> bool:
        return has_checkpoint(self.path)

    def holds_run(self) -> bool:
        return self.config_file.exists() or self.has_checkpoint()

    def stopped_before_first_checkpoint(self) -> bool:
        """A run that started (its config.yaml is written) but stopped before its first
        checkpoint and never finished: `dlcli train` starts it again from step 0, with
        --resume or without."""
        return self.config_file.is_file() and not self.has_checkpoint() and not self.summary_file.exists()

    # ----- config, vocabulary, summary --------------------------------------------------
    def config(self) -> ExperimentConfig:
        """The resolved config the run was trained with; `BadInput` if absent or broken."""
        return _read_config(self.config_file, f"{self.path} has no config.yaml, so it is not a usable dlcli run "
                                              "folder; give the folder `dlcli train` wrote, or retrain with --overwrite")

    def trained_config(self) -> ExperimentConfig:
        """The saved config of a run folder that holds checkpoints; `BadInput` for any other folder."""
        if not self.has_checkpoint():
            raise BadInput(f"{self.path} is not a dlcli run folder with checkpoints; give the folder `dlcli train` "
                           "wrote (it holds config.yaml and checkpoints/)")
        return self.config()

    def write_config(self, cfg: ExperimentConfig) -> None:
        write_atomically(self.config_file, resolved_yaml(cfg))

    def vocab(self) -> str:
        if not self.vocab_file.is_file():
            raise BadInput(f"{self.path} holds no vocab.json, so it is not a language-model run; "
                           "give the folder of a run trained on data.name: text")
        try:
            return json.loads(self.vocab_file.read_text(encoding="utf-8"))["vocab"]
        except (ValueError, KeyError, TypeError):
            raise BadInput(f"{self.vocab_file} is damaged; retrain the run with --overwrite to write it again") from None

    def write_vocab(self, vocab: str) -> None:
        """The characters of a language model's vocabulary, in id order (read by `dlcli sample`)."""
        write_atomically(self.vocab_file, json.dumps({"vocab": vocab}, ensure_ascii=False))

    def info(self, cfg: ExperimentConfig) -> DatasetInfo:
        """The dataset's shapes as the run saw them (a text corpus's vocabulary from vocab.json)."""
        return cfg.data.info(self.vocab()) if self.vocab_file.exists() else cfg.info

    def metrics(self) -> list[dict]:
        """The records of metrics.jsonl, one per evaluation, in order ([] before the first)."""
        return read_metrics(self.path)

    def summary(self) -> dict | None:
        """summary.json of a finished run; None while it has none (or one cut short: the
        run is then not finished)."""
        try:
            summary = json.loads(self.summary_file.read_text())
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) else None

    def write_summary(self, summary: dict) -> None:
        write_atomically(self.summary_file, json.dumps(summary, indent=2))

    # ----- referenced runs ----------------------------------------------------------------
    def references(self, cfg: ExperimentConfig) -> dict[str, ExperimentConfig]:
        """{field: config} of the runs `cfg` references, as this run saved them when it
        started; a folder written before references/ existed reads the referenced runs."""
        found = {}
        for field, folder in cfg.model.referenced_runs().items():
            saved = self.references_dir / f"{field}.yaml"
            found[field] = (_read_config(saved, f"{saved} is missing") if saved.is_file()
                            else RunDir(folder).trained_config())
        return found

    def write_references(self, references: dict[str, ExperimentConfig]) -> None:
        if references:
            self.references_dir.mkdir(exist_ok=True)
        for field, cfg in references.items():
            write_atomically(self.references_dir / f"{field}.yaml", resolved_yaml(cfg))

    # ----- checkpoints and restored models -------------------------------------------------
    def checkpoints(self, cfg: ExperimentConfig, read_only: bool = False) -> RunCheckpoints:
        return RunCheckpoints(self.path, keep=cfg.checkpoint.keep, read_only=read_only)

    def restore_model(self, checkpoint: str = "best", cfg: ExperimentConfig | None = None):
        """(the run's model at `checkpoint` (best, latest or a step) in evaluation mode,
        the step); only the model item is read, no optimizer is built."""
        from flax import nnx

        cfg = cfg or self.trained_config()
        model = build_model(cfg, self.info(cfg), self.references(cfg))
        checkpoints = self.checkpoints(cfg, read_only=True)
        try:
            step = checkpoints.resolve(checkpoint)
            state = nnx.state(model)
            targets = {"model": nnx.to_pure_dict(state)}
            if checkpoint == "latest":  # the newest that reads back, with a warning for any passed over
                step, restored, _ = checkpoints.restore_newest_readable(targets)
            else:
                restored, _ = checkpoints.restore(step, targets)
        finally:
            checkpoints.close()
        nnx.replace_by_pure_dict(state, restored["model"])
        nnx.update(model, state)
        model.eval()
        return model, step

    # ----- starting a run -------------------------------------------------------------------
    def check_for_training(self, cfg: ExperimentConfig, *, resume: bool, overwrite: bool) -> None:
        """Refuse, before touching anything, a run folder that does not fit the flags."""
        if resume and overwrite:
            raise BadInput("--resume and --overwrite contradict each other; pass one of them")
        path = self.path
        for part in (self.config_file, self.vocab_file, self.summary_file, path / "metrics.jsonl"):
            if part.exists() and not part.is_file():
                raise BadInput(f"{part} is a folder, not a file, so {path} is damaged; remove {part.name} "
                               "(or start again with --overwrite)")
        if resume:
            if not self.has_checkpoint() and not self.stopped_before_first_checkpoint():
                raise BadInput(f"--resume: {path} holds no checkpoint to resume from; drop --resume to start a new run")
            differences = _differences(_what_runs(self.config()), _what_runs(cfg))
            if differences:
                raise BadInput(f"--resume: the config differs from the run's saved config at {', '.join(differences[:3])}; "
                               f"resume with the same config, or start a new run with --overwrite or another --run-dir")
        elif self.holds_run() and not overwrite and not self.stopped_before_first_checkpoint():
            raise BadInput(f"{path} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                           "or choose another --run-dir")
        elif path.exists() and not self.holds_run() and (
                not path.is_dir() or any(entry.name != LOCK_NAME for entry in path.iterdir())):
            raise BadInput(f"{path} exists and is not a dlcli run folder; choose another --run-dir")

    def clear(self) -> None:
        """Remove everything in the folder but its writer's lock (`--overwrite`)."""
        for entry in self.path.iterdir() if self.path.is_dir() else ():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def build_model(cfg: ExperimentConfig, info: DatasetInfo, references: dict[str, ExperimentConfig]):
    """The model of `cfg`, initialised from `cfg.seed` (a `pretrained_from` spec is sized
    by the referenced run's config)."""
    from flax import nnx

    rngs = nnx.Rngs(params=cfg.seed)
    if cfg.model.pretrained_from:
        return cfg.model.build(info, rngs, references)
    return cfg.model.build(info, rngs)


def param_count(cfg: ExperimentConfig, info: DatasetInfo, references: dict[str, ExperimentConfig]) -> int:
    """The closed-form parameter count of `cfg`'s model on `info` (see `build_model`)."""
    if cfg.model.pretrained_from:
        return cfg.model.param_count(info, references)
    return cfg.model.param_count(info)


def _read_config(path: Path, missing: str) -> ExperimentConfig:
    if not path.is_file():
        raise BadInput(missing)
    try:
        raw = parse_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        raise BadInput(f"{path} is not valid YAML; restore it, or retrain with --overwrite") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{path} does not hold a config mapping; restore it, or retrain with --overwrite")
    return config_from_dict(raw)


def _what_runs(cfg: ExperimentConfig) -> dict:
    """The config less where and how it runs, which do not change what it computes: the
    devices (`parallel`), the steps per dispatch and how a convolution is computed
    (`model.conv_impl`). A run resumes on any number of devices, on another backend."""
    what = {key: value for key, value in cfg.to_dict().items() if key != "parallel"}
    what["training"] = {k: v for k, v in what["training"].items() if k != "steps_per_dispatch"}
    what["model"] = {k: v for k, v in what["model"].items() if k != "conv_impl"}
    return what


def _differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            found += _differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        return found
    return [] if a == b else [f"{path} ({a!r} -> {b!r})"]
