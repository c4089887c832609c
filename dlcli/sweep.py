"""`dlcli sweep`: hyperparameter search over dotted config keys.

A sweep file names a base experiment, fixed overrides, a search space, a strategy and
the metric to optimise. Each trial is an ordinary run folder trained by `dlcli.batch`
in worker processes, so a sweep resumes where it stopped and one failing trial is
recorded with its error while the others go on. Results are written sorted by the
metric (CSV and JSON), and the best trial's config as a YAML file `dlcli train` accepts.
A grid or random sweep runs its trials here; the optuna strategy, and any strategy
given a shared storage (several sweep processes, here or on other hosts, working through
one study), keep them in an Optuna study (`dlcli.sweep_optuna`).

```yaml
base: mlp_digits.yaml          # relative to the sweep file; omit for the built-in default
strategy: grid                 # grid | random | optuna (pip install "dlcli[optuna]")
trials: 12                     # random and optuna: how many; grid: at most this many
metric: val/accuracy
direction: max
workers: 2
set: [training.epochs=10]      # fixed for every trial
space:
  optimizer.learning_rate: [0.0003, 0.001, 0.003]                   # values (grid or choice)
  model.width: {distribution: int_uniform, low: 16, high: 512}      # random / optuna only
  model.dropout: {distribution: uniform, low: 0.0, high: 0.5}
  optimizer.weight_decay: {distribution: log_uniform, low: 1e-6, high: 1e-2}
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import yaml

from dlcli.batch import MAX_WORKERS, Job, JobResult, run_jobs
from dlcli.config import check_metric, load_config, read_yaml
from dlcli.errors import BadInput
from dlcli.files import FolderLock, write_atomically
from dlcli.registry import suggest
from dlcli.report import Report
from dlcli.schema import bounded, folder_name, parse, seed_field


@dataclasses.dataclass
class Distribution:
    """One dimension of the search space."""

    distribution: Literal["choice", "uniform", "log_uniform", "int_uniform"] = "choice"
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None

    def validate(self, path: str) -> None:
        if self.distribution == "choice":
            if not self.values:
                raise BadInput(f"{path}.values must be a non-empty list for a choice")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise BadInput(f"{path} needs low < high for a {self.distribution} distribution")
        elif self.distribution == "log_uniform" and self.low <= 0:
            raise BadInput(f"{path}.low must be > 0 for log_uniform, got {self.low}")

    def sample(self, rng: np.random.Generator) -> Any:
        if self.distribution == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        if self.distribution == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.distribution == "log_uniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return int(rng.integers(int(self.low), int(self.high) + 1))


MAX_TRIALS = 100_000  # trials one sweep may hold


@dataclasses.dataclass
class SweepConfig:
    name: str = folder_name("sweep")
    base: str | None = None
    strategy: Literal["grid", "random", "optuna"] = "grid"
    trials: int | None = bounded(None, low=1, high=MAX_TRIALS)
    seed: int = seed_field()
    metric: str = "val/accuracy"
    direction: Literal["max", "min"] = "max"
    workers: int = bounded(1, low=1, high=MAX_WORKERS)
    trial_timeout_s: float | None = bounded(None, low=1)
    set: list[str] = dataclasses.field(default_factory=list)
    space: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Sweep:
    cfg: SweepConfig
    base_path: Path | None
    space: dict[str, Distribution]
    folder: Path

    def trial_config(self, params: dict) -> dict:
        """The resolved experiment config of one trial; `BadInput` if impossible."""
        overrides = [*self.cfg.set, *(f"{key}={json.dumps(value)}" for key, value in params.items())]
        return load_config(self.base_path, overrides).to_dict()

    def run_dir(self, index: int) -> Path:
        return self.folder / "trials" / f"trial-{index:03d}"

    def job(self, index: int, params: dict) -> Job:
        config = self.trial_config(params) | {"name": f"{self.cfg.name}-trial-{index:03d}"}
        return Job(f"trial-{index:03d}", config, self.run_dir(index), timeout_s=self.cfg.trial_timeout_s)


def load_sweep(path: Path, out: Path | None = None) -> Sweep:
    raw = read_yaml(Path(path))
    raw.setdefault("name", Path(path).stem)
    cfg = parse(SweepConfig, raw, "")
    base_path = (Path(path).parent / cfg.base) if cfg.base else None
    if base_path is not None and not base_path.is_file():
        raise BadInput(f"base {cfg.base!r} does not exist next to {path}; give a path relative to the sweep file")
    if not cfg.space:
        raise BadInput(f"{path}: the search space is empty; add keys under space:, e.g. optimizer.learning_rate: [0.001, 0.003]")
    base = load_config(base_path, cfg.set)
    check_metric(cfg.metric, base, "metric")
    space = {}
    for key, spec in cfg.space.items():
        _check_key(base.to_dict(), str(key))
        spec = {"values": spec} if isinstance(spec, list) else spec
        space[str(key)] = parse(Distribution, spec, f"space.{key}")
        if cfg.strategy == "grid" and space[str(key)].distribution != "choice":
            raise BadInput(f"space.{key}: a grid needs a list of values; use strategy: random or optuna for distributions")
    combinations = math.prod(len(d.values) for d in space.values()) if cfg.strategy == "grid" else 0
    if cfg.trials is None and combinations > MAX_TRIALS:
        raise BadInput(f"the grid has {combinations:,} combinations, more than {MAX_TRIALS:,}; give fewer values, "
                       "or set trials to run the first ones")
    if cfg.strategy != "grid" and cfg.trials is None:
        raise BadInput(f"trials is missing; a {cfg.strategy} sweep needs a trial budget")
    return Sweep(cfg, base_path, space, out or Path("sweeps") / cfg.name)


def _check_key(config: dict, key: str) -> None:
    node, walked = config, []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            options = [".".join([*walked, k]) for k in node] if isinstance(node, dict) else []
            raise BadInput(f"space key {key!r} is not a config key{suggest(key, options)}; "
                           f"see `dlcli config show` for the valid keys")
        node, walked = node[part], [*walked, part]


def trial_params(sweep: Sweep) -> list[dict]:
    """The grid's combinations in order, or `trials` random draws from `seed`."""
    keys = list(sweep.space)
    if sweep.cfg.strategy == "grid":
        combinations = itertools.product(*(sweep.space[k].values for k in keys))
        return [dict(zip(keys, values)) for values in itertools.islice(combinations, sweep.cfg.trials)]
    rng = np.random.default_rng(sweep.cfg.seed)
    return [{k: sweep.space[k].sample(rng) for k in keys} for _ in range(sweep.cfg.trials)]


@dataclasses.dataclass
class Trial:
    index: int
    params: dict
    status: str  # done | failed | pruned
    value: float | None = None
    error: str | None = None
    run_dir: str | None = None


def run_sweep(sweep: Sweep, *, workers: int | None, data_dir: Path, storage: str | None = None,
              dead_after: int = 60, on_done: Callable[[JobResult], None] = lambda r: None) -> list[Trial]:
    """Train every trial not yet finished; all trials, sorted best first (failures last).
    `storage` (a SQLAlchemy URL or journal:PATH) shares the study with other sweep
    processes; one of theirs silent for `dead_after` seconds is taken as dead."""
    workers = workers or sweep.cfg.workers
    # a shared study's processes write one folder together; any other sweep writes alone
    with FolderLock(sweep.folder, "sweep folder") if storage is None else contextlib.nullcontext():
        return _run_sweep(sweep, workers, data_dir, storage, dead_after, on_done)


def _run_sweep(sweep: Sweep, workers: int, data_dir: Path, storage: str | None, dead_after: int,
               on_done: Callable[[JobResult], None]) -> list[Trial]:
    if sweep.cfg.strategy == "optuna" or storage is not None:
        from dlcli.sweep_optuna import run_study

        trials = run_study(sweep, storage, workers=workers, data_dir=data_dir, dead_after=dead_after,
                           on_done=on_done)
    else:
        trials, jobs = [], []
        for index, params in enumerate(trial_params(sweep)):
            try:
                jobs.append((index, params, sweep.job(index, params)))
            except BadInput as err:  # an impossible combination fails alone
                trials.append(Trial(index, params, "failed", error=str(err)))
        results = run_jobs([j for _, _, j in jobs], workers=workers, data_dir=data_dir, on_done=on_done)
        for (index, params, job), result in zip(jobs, results):
            trials.append(trial_from_result(sweep, index, params, job, result))
    return sort_trials(trials, sweep.cfg.direction)


def trial_from_result(sweep: Sweep, index: int, params: dict, job: Job, result: JobResult) -> Trial:
    if result.status != "done":
        return Trial(index, params, result.status, error=result.error, run_dir=str(job.run_dir))
    return Trial(index, params, "done", result.summary["metrics"][sweep.cfg.metric], run_dir=str(job.run_dir))


def sort_trials(trials: list[Trial], direction: str) -> list[Trial]:
    sign = -1.0 if direction == "max" else 1.0
    return sorted(trials, key=lambda t: (t.status != "done", sign * (t.value or 0.0), t.index))


def write_results(sweep: Sweep, trials: list[Trial]) -> dict:
    """results.json, results.csv, best.yaml, the plots (history.png, vs-KEY.png per
    searched key), report.md and report.html in the sweep folder; returns the JSON."""
    sweep.folder.mkdir(parents=True, exist_ok=True)
    keys = list(sweep.space)
    done = [t for t in trials if t.status == "done"]
    best = done[0] if done else None
    data = {"sweep": sweep.cfg.name, "folder": str(sweep.folder), "metric": sweep.cfg.metric,
            "direction": sweep.cfg.direction, "trials": [dataclasses.asdict(t) for t in trials],
            "finished": len(done), "failed": sum(t.status == "failed" for t in trials),
            "best": dataclasses.asdict(best) if best else None}
    write_atomically(sweep.folder / "results.json", json.dumps(data, indent=2))
    header = ["trial", "status", sweep.cfg.metric, *keys, "error"]
    rows = [[f"{t.index:03d}", t.status, "" if t.value is None else repr(t.value), *(str(t.params[k]) for k in keys),
             (t.error or "").replace(",", ";")] for t in trials]
    write_atomically(sweep.folder / "results.csv", "\n".join(",".join(r) for r in [header, *rows]) + "\n")
    if best is not None:
        config = sweep.trial_config(best.params) | {"name": f"{sweep.cfg.name}-best"}
        write_atomically(sweep.folder / "best.yaml",
                         f"# best trial {best.index:03d} of sweep {sweep.cfg.name}: {sweep.cfg.metric} = {best.value}\n"
                         + yaml.safe_dump(config, sort_keys=False))
        data["best_config"] = str(sweep.folder / "best.yaml")
    _report(sweep, trials).write(sweep.folder)
    return data


def _report(sweep: Sweep, trials: list[Trial]) -> Report:
    """The sweep's outcome in sentences, its trials best first, its search space, and
    the plots (drawn here into the sweep folder): the metric of each finished trial in
    trial order with the best so far, and against each searched key."""
    from dlcli.plots import metric_against, trial_history

    cfg, keys = sweep.cfg, list(sweep.space)
    metric, higher = cfg.metric, cfg.direction == "max"
    done = sorted((t for t in trials if t.status == "done"), key=lambda t: t.index)
    report = Report(f"sweep {cfg.name}: {metric}, {'higher' if higher else 'lower'} is better")
    counts = {status: sum(t.status == status for t in trials) for status in ("done", "failed", "pruned")}
    report.paragraph(f"{len(trials)} trials ({cfg.strategy}): {counts['done']} finished, {counts['failed']} failed"
                     + (f", {counts['pruned']} pruned by Optuna" if counts["pruned"] else "") + ".")
    if done:
        best, values = trials[0], [t.value for t in done]
        report.paragraph(f"Best: trial {best.index:03d}, {metric} = {best.value:.4f}, with "
                         + ", ".join(f"{k} = {_cell(best.params.get(k))}" for k in keys)
                         + "; its config: best.yaml, ready for dlcli train. "
                         + f"The finished trials range from {min(values):.4f} to {max(values):.4f} "
                         + f"(median {float(np.median(values)):.4f}).")
    axes = {key: _axis(spec) for key, spec in sweep.space.items()}
    numeric = {key for key, (categories, _) in axes.items() if categories is None}
    report.table(["trial", "status", metric, *keys, "error"],
                 [[f"{t.index:03d}", t.status, "" if t.value is None else f"{t.value:.4f}",
                   *(_cell(t.params.get(k)) for k in keys), t.error or ""] for t in trials],
                 numeric={"trial", metric, *numeric}, caption="Trials, best first")
    report.heading("Search space")
    report.table(["key", "distribution", "values", "axis"],
                 [[key, spec.distribution, _space_values(spec),
                   "categories" if axes[key][0] is not None else "log" if axes[key][1] else "linear"]
                  for key, spec in sweep.space.items()])
    if done:
        report.heading("Plots")
        title = f"sweep {cfg.name}"
        trial_history([t.index for t in done], [t.value for t in done], sweep.folder / "history.png", title, metric,
                      higher_is_better=higher)
        report.figure("history.png", f"{metric} of each finished trial in trial order, and the best so far")
        for key, (categories, log_x) in axes.items():
            xs = [_cell(t.params.get(key)) if categories is not None else t.params.get(key) for t in done]
            metric_against(xs, [t.value for t in done], sweep.folder / f"vs-{key}.png", title, key, metric,
                           categories=categories, log_x=log_x)
            report.figure(f"vs-{key}.png", f"{metric} of each finished trial against {key}"
                          + (" (log axis)" if log_x else ""))
    report.paragraph("Every trial: results.csv and results.json; each trial's run folder: trials/trial-NNN.")
    return report


def _axis(spec: Distribution) -> tuple[list[str] | None, bool]:
    """How a plot shows a searched key: (the category labels, None for a number axis;
    whether that axis is logarithmic). Logarithmic for a log_uniform distribution and
    for a choice of positive numbers spanning a factor of 100 or more (a grid of
    learning rates, say); a choice with any value that is not a number is categorical."""
    if spec.distribution != "choice":
        return None, spec.distribution == "log_uniform"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec.values):
        low, high = min(spec.values), max(spec.values)
        return None, low > 0 and high >= 100 * low
    return list(dict.fromkeys(_cell(v) for v in spec.values)), False


def _cell(value: Any) -> str:
    """A parameter's value as report text: floats to 4 significant digits, strings as
    they are, anything else (lists, booleans, null) as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def _space_values(spec: Distribution) -> str:
    if spec.distribution == "choice":
        return ", ".join(_cell(v) for v in spec.values)
    return f"{_cell(spec.low)} to {_cell(spec.high)}"
