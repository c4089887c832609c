"""`dlcli train`: run one experiment into a run folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from dlcli.cli import app, reports_errors
from dlcli.cli.options import (CoordinatorOption, DataDirOption, DistributedOption, ExperimentArgument,
                               InitTimeoutOption, JsonOption, NumProcessesOption, ProcessIdOption, SeedOption,
                               SetOption, data_dir_or_default, folder_or_none, join_cluster, print_json)

if TYPE_CHECKING:
    from dlcli.config import ExperimentConfig

RUNS = Path("runs")  # where runs go without --run-dir, in the current folder


@app.command("train")
@reports_errors
def train_command(
    config: Optional[Path] = ExperimentArgument,
    set_: Optional[list[str]] = SetOption,
    run_dir: Optional[str] = typer.Option(
        None, "--run-dir", help="Run folder; default: runs/NAME (NAME the experiment's name), or runs/NAME-2, "
                                "runs/NAME-3, ... when it is taken: a new run never writes into an earlier one."),
    seed: Optional[int] = SeedOption,
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --run-dir from its latest checkpoint; without --run-dir, the "
                                "newest run of the experiment with this config."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the run in --run-dir; without --run-dir, the newest run of the "
                                   "experiment with this config (none: a new folder)."),
    data_dir: Optional[Path] = DataDirOption,
    as_json: bool = JsonOption,
    coordinator: Optional[str] = CoordinatorOption,
    num_processes: Optional[int] = NumProcessesOption,
    process_id: Optional[int] = ProcessIdOption,
    distributed: bool = DistributedOption,
    init_timeout: int = InitTimeoutOption,
) -> None:
    """Train an experiment: progress on stderr, a summary table (or --json) on stdout.

    A multi-process run starts this same command in every process, each with the same
    --coordinator and --num-processes and its own --process-id (or --distributed under
    Slurm, Open MPI or on a TPU pod); the run folder must be on a filesystem they all see.
    """
    from dlcli.config import load_config

    cfg = load_config(config, set_ or [], seed)
    # chosen before joining: no process writes anything until every process has joined
    run_dir = folder_or_none(run_dir, "--run-dir") or automatic_run_dir(cfg, resume=resume, overwrite=overwrite)
    join_cluster(coordinator, num_processes, process_id, distributed, init_timeout)

    from dlcli.training.distributed import peer_lost
    from dlcli.training.loop import fit

    with peer_lost():
        summary = fit(cfg, run_dir, data_dir=data_dir_or_default(data_dir), resume=resume, overwrite=overwrite)
    if as_json:
        print_json({k: v for k, v in summary.items() if k != "confusion"})
    else:
        print_summary(summary)


def automatic_run_dir(cfg: ExperimentConfig, *, resume: bool, overwrite: bool) -> Path:
    """The run folder of `dlcli train` without --run-dir, among runs/NAME, runs/NAME-2,
    runs/NAME-3, ... (NAME the experiment's name; numbered in the order they were made).
    A new run goes to runs/NAME if it does not exist, else to the number after the
    highest, so that a run never writes into an earlier one. --resume and --overwrite
    take the newest of them whose saved config is `cfg` (the run this same command
    started before); when none is, --resume takes the newest (`fit` then says why it
    cannot continue it) and --overwrite a new folder. A folder other than runs/NAME is
    named on stderr."""
    from dlcli.console import note

    base = RUNS / cfg.name
    numbered = {int(match.group(1)): path for path in (RUNS.iterdir() if RUNS.is_dir() else ())
                if (match := re.fullmatch(re.escape(cfg.name) + r"-(\d+)", path.name)) and int(match.group(1)) >= 2}
    earlier = [base] * base.exists() + [numbered[n] for n in sorted(numbered)]  # oldest first
    if resume or overwrite:
        same = next((path for path in reversed(earlier) if _continues(path, cfg)), None)
        if same is not None:
            if same != base:
                note(f"{'resuming' if resume else 'replacing'} {same}, the newest run of {cfg.name} with this config")
            return same
        if resume and earlier:
            note(f"no run of {cfg.name} in {RUNS} has this config; trying the newest, {earlier[-1]}")
            return earlier[-1]
    if not earlier:
        return base
    chosen = RUNS / f"{cfg.name}-{max(numbered, default=1) + 1}"
    note(f"this run goes to {chosen}: {earlier[-1]} exists and a new run never writes into an earlier one "
         "(--run-dir chooses the folder; --resume continues the newest run with this config)")
    return chosen


def _continues(path: Path, cfg: ExperimentConfig) -> bool:
    """Whether the run at `path` was started with `cfg` (what it computes) and could resume."""
    from dlcli.errors import BadInput
    from dlcli.runs import RunDir

    try:
        RunDir(path).check_for_training(cfg, resume=True, overwrite=False)
    except BadInput:
        return False
    return True


def print_summary(summary: dict) -> None:
    from dlcli.console import fmt, key_value_table, stdout

    rows = [
        ("run folder", summary["run_dir"]),
        ("model", f"{summary['model']} on {summary['dataset']}"),
        ("parameters", fmt(summary["params"])),
        ("steps (epochs)", f"{fmt(summary['steps'])} ({summary['epochs']:g})" + (", stopped early" if summary["stopped_early"] else "")),
        (f"best {summary['monitor']}", f"{fmt(summary['best_value'])} at step {fmt(summary['best_step'])}"),
        ("evaluated checkpoint", f"step {fmt(summary['evaluated_checkpoint'])}"),
    ]
    rows += [(name, fmt(value)) for name, value in summary["metrics"].items()]
    if "baseline" in summary:
        rows += [(f"baseline ({summary['baseline']['name']}) {name}", fmt(value))
                 for name, value in summary["baseline"]["metrics"].items()]
    if "gradient_flow" in summary:
        flow = summary["gradient_flow"]
        rows.append(("|dloss/dh_t| at t=1, t=T", f"{flow['first']:.3g}, {flow['last']:.3g}"))
    rows += [("wall time", f"{summary['wall_s']:.1f} s"), ("compile time", f"{summary['compile_s']:.2f} s"),
             ("device", summary["device"])]
    stdout.print(key_value_table(f"run summary: {summary['name']}", rows))
