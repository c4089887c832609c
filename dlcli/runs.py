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

from dlcli.checkpoint import RunCheckpoints, finished_steps, has_checkpoint
from dlcli.config import ExperimentConfig, config_from_dict, parse_yaml, resolved_yaml
from dlcli.data import DatasetInfo
from dlcli.errors import BadInput
from dlcli.files import LOCK_NAME, write_atomically
from dlcli.runlog import flat_config, read_metrics


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
        """The dataset's shapes as the run saw them (a text corpus's vocabulary from
        vocab.json, the user's files' shapes from preprocessing.json)."""
        if self.vocab_file.exists():
            return cfg.data.info(self.vocab())
        return cfg.data.info_from_run(self.preprocessing()) if self.preprocessing_file.is_file() else cfg.info

    def metrics(self) -> list[dict]:
        """The records of metrics.jsonl, one per evaluation, in order ([] before the first)."""
        return read_metrics(self.path)

    def summary(self) -> dict | None:
        """summary.json of a finished run; None while it has none (or one cut short: the
        run is then not finished)."""
        return _json_object(self.summary_file)

    def write_summary(self, summary: dict) -> None:
        write_atomically(self.summary_file, json.dumps(summary, indent=2))

    # ----- preprocessing of inputs (dlcli predict, dlcli.load_run) ---------------------------
    @property
    def preprocessing_file(self) -> Path:
        return self.path / "preprocessing.json"

    def preprocessing(self) -> dict:
        """How the run's inputs were prepared (`dlcli.data.preprocessing_record`): shapes,
        scaling statistics, class names, the sha256 of each data file read."""
        if not self.preprocessing_file.is_file():
            raise BadInput(f"{self.path} has no preprocessing.json (a run trained before dlcli saved how it scaled its "
                           "inputs), so new inputs cannot be prepared as in training; retrain it with --overwrite")
        try:
            record = json.loads(self.preprocessing_file.read_text(encoding="utf-8"))
        except ValueError:
            record = None
        if not isinstance(record, dict) or "input_shape" not in record:
            raise BadInput(f"{self.preprocessing_file} is damaged; retrain the run with --overwrite to write it again")
        return record

    def write_preprocessing(self, record: dict) -> None:
        write_atomically(self.preprocessing_file, json.dumps(record, indent=1))

    def check_same_data(self, record: dict) -> None:
        """`BadInput` if a data file the run recorded (with its sha256) reads differently
        now (`record`: the preprocessing record of the data just loaded)."""
        if not self.preprocessing_file.is_file():
            return  # a run of a built-in dataset from before the record: nothing to compare
        trained = self.preprocessing().get("files", {})
        now = record.get("files", {})
        for path, digest in trained.items():
            if now.get(path) != digest:
                state = ("is gone" if path not in now else
                         f"has changed (sha256 {now[path][:12]}..., trained on {digest[:12]}...)")
                raise BadInput(f"data file {path} {state} since the run trained; restore it to measure the run on its "
                               "own data, or retrain")
        added = sorted(set(now) - set(trained))
        if added:
            raise BadInput(f"data file {added[0]} was not part of the run's data when it trained; remove it to measure "
                           "the run on its own data, or retrain")

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
            state = nnx.state(model)
            step, restored = checkpoints.restore_chosen(checkpoint, {"model": nnx.to_pure_dict(state)})
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
    devices (`parallel`), the steps per dispatch, how often TensorBoard gets the
    training loss and how a convolution is computed (`model.conv_impl`). A run resumes on any number of devices, on another backend."""
    what = {key: value for key, value in cfg.to_dict().items() if key != "parallel"}
    what["training"] = {k: v for k, v in what["training"].items() if k not in ("steps_per_dispatch", "log_every")}
    what["model"] = {k: v for k, v in what["model"].items() if k != "conv_impl"}
    return what


def _differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            found += _differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        return found
    return [] if a == b else [f"{path} ({a!r} -> {b!r})"]


# ----- status and the table of runs (`dlcli runs`) ---------------------------------------------
# RUN_DIR/status.json says what the run is doing, rewritten whole at each change: its state
# (running, finished, failed, interrupted) and why, the start and end of the last attempt,
# a heartbeat at each evaluation, the command line, the environment (versions, device) and
# the git commit of the working folder. A process that was SIGKILLed (or lost its machine)
# cannot write its end: its status.json still says running while the folder's lock is
# free, and `run_row` calls it killed, with its last heartbeat.

STATUS_NAME = "status.json"
STATES = ("running", "finished", "failed", "interrupted", "killed", "unknown")


def _now() -> str:
    import datetime

    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def git_state(folder: Path | None = None) -> dict | None:
    """{"commit": sha, "dirty": bool} of the git work tree holding `folder` (default: the
    working folder); None outside one, or without git."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder or Path.cwd(), capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, no commit yet, too slow
        return None
    return {"commit": commit, "dirty": dirty}


class RunStatus:
    """Keeps RUN_DIR/status.json current for the run's one writer. A write that fails
    (a full disk) is skipped: the status must never stop the training it describes."""

    def __init__(self, run_dir: Path, *, step: int, details: dict):
        """Start the attempt at `step` (> 0: a resumed run); `details`: what the table
        shows of it (model, dataset, params, monitor, environment, devices)."""
        import os
        import socket

        from dlcli.runlog import command_line

        self.path = Path(run_dir) / STATUS_NAME
        earlier = read_status(run_dir) if step else None
        now = _now()
        self.status = {
            "status": "running", "reason": None, "started": now, "ended": None, "heartbeat": now, "step": step,
            "first_started": (earlier or {}).get("first_started", now) if step else now,
            "resumed_from": step or None, "command": command_line(), "pid": os.getpid(),
            "host": socket.gethostname(), "git": git_state(), "best": None, **details,
        }
        self._write()

    def beat(self, step: int, best: dict | None = None) -> None:
        """An evaluation at `step`; `best`: {"step", "value"} of the monitored metric so far."""
        self.status.update(heartbeat=_now(), step=step, best=best)
        self._write()

    def end(self, state: str, reason: str | None = None) -> None:
        """The attempt ended as `state` (finished, failed, interrupted), for `reason` (one line)."""
        now = _now()
        self.status.update(status=state, reason=reason, ended=now, heartbeat=now)
        self._write()

    def _write(self) -> None:
        try:
            write_atomically(self.path, json.dumps(self.status, indent=1))
        except OSError:
            pass


def read_status(run_dir: Path) -> dict | None:
    """status.json of a run folder; None if it has none (a run of an older dlcli) or it is unreadable."""
    return _json_object(Path(run_dir) / STATUS_NAME)


def _json_object(path: Path) -> dict | None:
    """The JSON object in `path`; None if it is missing, unreadable, cut short or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def find_runs(folder: Path) -> list[Path]:
    """Every run folder under `folder` (itself included), in path order: a folder holding
    config.yaml or status.json; a run folder's own subfolders are not searched (a
    comparison's or a sweep's folder holds run folders, a run folder none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"{folder} is not a folder; give a folder holding run folders (default: runs)")
    found = []

    def walk(path: Path) -> None:
        if (path / "config.yaml").is_file() or (path / STATUS_NAME).is_file():
            found.append(path)
            return
        try:
            children = sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return
        for child in children:
            walk(child)

    walk(folder)
    return found


def _lock_held(run_dir: Path) -> bool:
    """Whether a live process holds the run folder's lock (it is training there now)."""
    from dlcli.files import FolderLock

    try:
        FolderLock(run_dir, "run folder").check_free()
    except BadInput:
        return True
    return False


def run_row(run_dir: Path, root: Path) -> dict:
    """One row of the table of runs: where, state and reason, times, what was trained and
    how it measured. Read from status.json, summary.json and config.yaml, whichever exist
    (a run of an older dlcli has no status.json); nothing is imported or restored."""
    run = RunDir(run_dir)
    status, summary = read_status(run_dir) or {}, run.summary()
    try:
        raw = parse_yaml(run.config_file.read_text()) if run.config_file.is_file() else {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError):
        raw = {}
    raw = raw if isinstance(raw, dict) else {}
    state, reason = status.get("status"), status.get("reason")
    ended = status.get("ended")
    if _lock_held(run_dir):  # status.json and summary.json may still tell of the attempt before this one
        state, reason, ended, summary = "running", None, None, None
    elif state == "running" or state is None:
        if summary is not None:
            state, reason = "finished", None
        elif state == "running":
            state, ended = "killed", None
            reason = (f"process {status.get('pid')} on {status.get('host')} ended without a word (SIGKILL, out of memory, "
                      f"a lost machine); last heartbeat {status.get('heartbeat')} at step {status.get('step')}")
        else:
            state, reason = "unknown", "no status.json (a run of an older dlcli) and no summary.json: it did not finish"
    started = status.get("started")
    wall_s = summary.get("wall_s") if summary and not status else _seconds_between(
        started, ended or (status.get("heartbeat") if state == "killed" else None) or _now())
    metrics = (summary or {}).get("metrics", {})
    best = status.get("best") or {}
    monitor = (summary or {}).get("monitor") or status.get("monitor")
    best_value = (summary or {}).get("best_value", best.get("value"))
    return {
        "name": str(Path(run_dir).relative_to(root)) if Path(run_dir) != Path(root) else Path(run_dir).name,
        "path": str(run_dir), "status": state, "reason": reason, "started": started, "ended": ended, "wall_s": wall_s,
        "step": (summary or {}).get("steps", status.get("step")),
        "model": (summary or {}).get("model") or status.get("model") or (raw.get("model") or {}).get("name"),
        "dataset": (summary or {}).get("dataset") or status.get("dataset") or (raw.get("data") or {}).get("name"),
        "params": (summary or {}).get("params", status.get("params")),
        "monitor": monitor, "best": best_value,
        "test": {k: v for k, v in metrics.items() if k.startswith("test/") and k.count("/") == 1},
        "metrics": metrics, "checkpoints": finished_steps(run_dir),
        "command": status.get("command"), "git": status.get("git"), "environment": status.get("environment"),
        "devices": status.get("devices"), "config": raw,
    }


def _seconds_between(start: str | None, end: str | None) -> float | None:
    import datetime

    try:
        return round((datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)).total_seconds(), 1)
    except (TypeError, ValueError):
        return None


def run_table(folder: Path, *, filters: list[str] = (), status: str | None = None,
              sort: str | None = None) -> list[dict]:
    """The rows (`run_row`) of every run under `folder` that has every `filters` item
    (KEY=VALUE: a dotted config key such as model.name, or a row field: status, model,
    dataset) and the `status`, sorted by `sort` (a metric such as test/accuracy, best
    first; or a row field: started, wall_s, params, name), else in path order."""
    rows = [run_row(path, Path(folder)) for path in find_runs(folder)]
    for item in filters:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--filter {item!r} is not of the form KEY=VALUE (e.g. --filter model.name=cnn)")
        if rows and not any(_field(row, key) is not _MISSING for row in rows):
            raise BadInput(f"--filter {key!r} is neither a config key nor a field of any run under {folder}; use a "
                           "dotted config key (model.name, optimizer.learning_rate, ...) or status, model, dataset")
        rows = [row for row in rows if _matches(_field(row, key), text)]
    if status is not None:
        rows = [row for row in rows if row["status"] == status]
    return _sorted_rows(rows, sort) if sort else rows


_MISSING = object()
_SORTABLE = ("name", "status", "started", "ended", "wall_s", "params", "best", "step", "model", "dataset")


def _field(row: dict, key: str):
    if key in ("status", "model", "dataset", "name"):
        return row[key]
    return flat_config(row["config"]).get(key, _MISSING)


def _matches(value, text: str) -> bool:
    if value is _MISSING:
        return False
    try:
        wanted = parse_yaml(text)
    except yaml.YAMLError:
        wanted = text
    return value == wanted or str(value) == text


def _sorted_rows(rows: list[dict], key: str) -> list[dict]:
    """Rows by `key`, those without it last: a metric best first (highest first where
    higher is better), a field in increasing order."""
    from dlcli.specs.tasks import higher_is_better

    if key in _SORTABLE:
        value, descending = (lambda row: row[key]), False
    elif any(key in row["metrics"] for row in rows):
        value, descending = (lambda row: row["metrics"].get(key)), higher_is_better(key)
    else:
        known = sorted({k for row in rows for k in row["metrics"]})
        raise BadInput(f"--sort {key!r} is neither a metric of these runs nor a field; choose one of: "
                       f"{', '.join([*known, *_SORTABLE])}")
    present = [row for row in rows if isinstance(value(row), (int, float, str)) and value(row) == value(row)]
    absent = [row for row in rows if row not in present]
    return sorted(present, key=value, reverse=descending) + absent


def config_diff(run_a: Path, run_b: Path) -> list[dict]:
    """{"key": dotted key, "a": value in run A, "b": value in run B} for every config key
    whose values differ between the config.yaml of two run folders ("a" or "b" left out
    where that run's config has no such key: a model of another family)."""
    configs = []
    for run in (run_a, run_b):
        path = RunDir(run).config_file
        if not path.is_file():
            raise BadInput(f"{run} holds no config.yaml, so it is not a dlcli run folder; give two folders "
                           "`dlcli train` wrote")
        try:
            raw = parse_yaml(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
            raise BadInput(f"{path} is not valid YAML; restore it, or retrain with --overwrite") from None
        configs.append(flat_config(raw) if isinstance(raw, dict) else {})
    a, b = configs
    keys = [*a, *(k for k in b if k not in a)]
    return [{"key": key, **({"a": a[key]} if key in a else {}), **({"b": b[key]} if key in b else {})}
            for key in keys if key not in a or key not in b or a[key] != b[key]]
