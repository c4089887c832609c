"""The `optuna` sweep strategy (optional extra: pip install "dlcli[optuna]").

Optuna's TPE sampler proposes trials in batches of `workers`; each runs as an ordinary
run folder, and while it trains its validation metric is read from metrics.jsonl and
reported to Optuna, whose median pruner may stop it early. The study lives in
`optuna.db` in the sweep folder, so rerunning the sweep continues it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dlcli.batch import JobPool, JobResult
from dlcli.errors import BadInput
from dlcli.runs import RunDir
from dlcli.sweep import Sweep, Trial


def run_optuna(sweep: Sweep, *, workers: int, data_dir: Path, on_done: Callable[[JobResult], None]) -> list[Trial]:
    try:
        import optuna
    except ImportError:
        raise BadInput('strategy: optuna needs the optional extra; install it with pip install "dlcli[optuna]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=sweep.cfg.name, storage=f"sqlite:///{sweep.folder / 'optuna.db'}", load_if_exists=True,
        direction="maximize" if sweep.cfg.direction == "max" else "minimize",
        sampler=optuna.samplers.TPESampler(seed=sweep.cfg.seed), pruner=optuna.pruners.MedianPruner(n_warmup_steps=1))
    distributions = {key: _distribution(optuna, spec) for key, spec in sweep.space.items()}
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    with JobPool(workers=workers, data_dir=data_dir) as pool:  # the same workers for every batch
        while (done := sum(t.state in finished for t in study.trials)) < sweep.cfg.trials:
            batch = [study.ask(distributions) for _ in range(min(workers, sweep.cfg.trials - done))]
            jobs = []
            for trial in batch:
                try:
                    job = sweep.job(trial.number, trial.params)
                except BadInput as err:
                    trial.set_user_attr("error", str(err))
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    continue
                job.prune = _pruner(trial, sweep.cfg.metric.replace("test/", "val/"))
                jobs.append((trial, job))
            for (trial, job), result in zip(jobs, pool.run([j for _, j in jobs], on_done)):
                if result.status == "done":
                    study.tell(trial, result.summary["metrics"][sweep.cfg.metric])
                else:
                    trial.set_user_attr("error", result.error)
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED if result.status == "pruned"
                               else optuna.trial.TrialState.FAIL)
    trials = []
    for frozen in study.trials:
        if frozen.state not in finished:
            continue
        run_dir = sweep.folder / "trials" / f"trial-{frozen.number:03d}"
        status = {optuna.trial.TrialState.COMPLETE: "done", optuna.trial.TrialState.PRUNED: "pruned"}.get(frozen.state, "failed")
        trials.append(Trial(frozen.number, frozen.params, status, frozen.value,
                            frozen.user_attrs.get("error"), str(run_dir) if run_dir.exists() else None))
    return trials


def _distribution(optuna, spec):
    if spec.distribution == "choice":
        return optuna.distributions.CategoricalDistribution(spec.values)
    if spec.distribution == "int_uniform":
        return optuna.distributions.IntDistribution(int(spec.low), int(spec.high))
    return optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.distribution == "log_uniform")


def _pruner(trial, metric: str) -> Callable[[Path], bool]:
    """Reports each new evaluation of `metric` to the trial; True once Optuna prunes it."""
    reported: set[int] = set()

    def should_prune(run_dir: Path) -> bool:
        for record in RunDir(run_dir).metrics():
            if record["step"] not in reported and metric in record:
                trial.report(record[metric], record["step"])
                reported.add(record["step"])
        return bool(reported) and trial.should_prune()

    return should_prune
