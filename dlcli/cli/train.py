"""`dlcli train`: run one experiment into a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, reports_errors
from dlcli.cli.options import (CoordinatorOption, DataDirOption, DistributedOption, InitTimeoutOption, JsonOption,
                               NumProcessesOption, ProcessIdOption, SeedOption, SetOption, data_dir_or_default,
                               folder_or_none, join_cluster, print_json)


@app.command("train")
@reports_errors
def train_command(
    config: Optional[Path] = typer.Argument(None, help="YAML experiment file; default: the built-in digits MLP."),
    set_: Optional[list[str]] = SetOption,
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="Run folder; default: runs/<experiment name>."),
    seed: Optional[int] = SeedOption,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its latest checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --run-dir."),
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
    run_dir = folder_or_none(run_dir, "--run-dir") or Path("runs") / cfg.name
    join_cluster(coordinator, num_processes, process_id, distributed, init_timeout)

    from dlcli.train.distributed import peer_lost
    from dlcli.train.loop import fit

    with peer_lost():
        summary = fit(cfg, run_dir, data_dir=data_dir_or_default(data_dir), resume=resume, overwrite=overwrite)
    if as_json:
        print_json({k: v for k, v in summary.items() if k != "confusion"})
    else:
        print_summary(summary)


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
