"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

SetOption = typer.Option(
    None, "--set", metavar="KEY.PATH=VALUE",
    help="Override one config value (repeatable); beats the file, which beats the defaults.")
SeedOption = typer.Option(None, "--seed", help="Override the config's seed.")
DataDirOption = typer.Option(
    None, "--data-dir", envvar="DLCLI_DATA_DIR",
    help="Folder holding datasets (mnist/, fashion_mnist/); default: the user cache directory.")
JsonOption = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")

# joining a multi-process run (`dlcli.train.distributed`); each also read from the environment
CoordinatorOption = typer.Option(
    None, "--coordinator", envvar="DLCLI_COORDINATOR", metavar="HOST:PORT", rich_help_panel="Multi-process",
    help="Process 0's address: join a run of --num-processes processes (each with its --process-id).")
NumProcessesOption = typer.Option(None, "--num-processes", envvar="DLCLI_NUM_PROCESSES", rich_help_panel="Multi-process",
                                  help="How many processes the run has.")
ProcessIdOption = typer.Option(None, "--process-id", envvar="DLCLI_PROCESS_ID", rich_help_panel="Multi-process",
                               help="This process's id, 0 .. num-processes - 1; process 0 writes the run's files.")
DistributedOption = typer.Option(
    False, "--distributed", rich_help_panel="Multi-process",
    help="Join a multi-process run described by the cluster's environment (Slurm, Open MPI, a TPU pod).")
InitTimeoutOption = typer.Option(300, "--init-timeout", metavar="SECONDS", rich_help_panel="Multi-process",
                                 help="How long to wait for every process to join.")


def join_cluster(coordinator: Optional[str], num_processes: Optional[int], process_id: Optional[int],
                 distributed: bool, init_timeout: int) -> None:
    """Join the multi-process run the options describe (nothing for a single process)."""
    from dlcli.train.distributed import Cluster

    Cluster(coordinator, num_processes, process_id, distributed, init_timeout).join()


def folder_or_none(value: Optional[str], option: str) -> Optional[Path]:
    """The folder an option names; `BadInput` for an empty one (which would mean the
    current folder) or one that is a file."""
    from dlcli.errors import BadInput

    if value is None:
        return None
    if not value.strip():
        raise BadInput(f"{option} is empty; give a folder path (leave the option out for the default)")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise BadInput(f"{option} {path} is a file, not a folder; choose another path")
    return path


def data_dir_or_default(data_dir: Optional[Path]) -> Path:
    from dlcli.data import default_data_dir

    return data_dir if data_dir is not None else default_data_dir()


def print_json(obj) -> None:
    """One JSON object on stdout; NaN and infinities (a diverged metric) become null, so
    the output is strict JSON that any parser reads."""
    import json
    import math

    def strict(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: strict(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [strict(v) for v in value]
        return value

    typer.echo(json.dumps(strict(obj), allow_nan=False))
