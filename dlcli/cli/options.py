"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


# Shell completion (`dlcli --install-completion`), cheap and without JAX: each completer
# returns the candidates starting with what was typed; when it returns none, the shell
# completes ordinary file names instead.
def complete_experiment(incomplete: str) -> list[str]:
    """YAML files starting with `incomplete`, those in experiments/ included."""
    import glob

    found = {path for pattern in ("*.yaml", "*.yml") for path in glob.glob(glob.escape(incomplete) + pattern)}
    if "experiments/".startswith(incomplete):
        found.update(glob.glob("experiments/*.yaml"))
    return sorted(found)


def complete_run_dir(incomplete: str) -> list[str]:
    """Run folders (holding config.yaml) starting with `incomplete`, those in runs/ included."""
    import glob

    found = {str(Path(path).parent) for path in glob.glob(glob.escape(incomplete) + "*/config.yaml")}
    if "runs/".startswith(incomplete):
        found.update(str(Path(path).parent) for path in glob.glob("runs/*/config.yaml"))
    return sorted(found)


def complete_override(incomplete: str) -> list[str]:
    """`--set` items: `model.name=` and `data.name=` with every registered name, or the
    dotted keys of the default config followed by `=`."""
    from dlcli.config import DATASETS, MODELS, load_config

    key, equals, value = incomplete.partition("=")
    if equals:
        names = {"model.name": MODELS.names(), "data.name": DATASETS.names()}.get(key, [])
        return [f"{key}={name}" for name in names if name.startswith(value)]

    def dotted(tree: dict, prefix: str = ""):
        for name, child in tree.items():
            if isinstance(child, dict) and child:
                yield from dotted(child, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}="

    return [item for item in dotted(load_config(None).to_dict()) if item.startswith(incomplete)]


SetOption = typer.Option(
    None, "--set", metavar="KEY.PATH=VALUE", autocompletion=complete_override,
    help="Override one config value (repeatable); beats the file, which beats the defaults.")
ExperimentArgument = typer.Argument(None, help="YAML experiment file; default: the built-in digits MLP.",
                                    autocompletion=complete_experiment)
SeedOption = typer.Option(None, "--seed", help="Override the config's seed.")
DataDirOption = typer.Option(
    None, "--data-dir", envvar="DLCLI_DATA_DIR",
    help="Folder holding datasets (mnist/, fashion_mnist/); default: the user cache directory.")
JsonOption = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables; when the command "
                                                "fails, {\"error\": MESSAGE, \"exit_code\": N}.")

# joining a multi-process run (`dlcli.training.distributed`); each also read from the environment
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
    from dlcli.training.distributed import Cluster

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


_json_printed = False  # whether the running command printed its JSON object


def start_command() -> None:
    """Forget the previous command's output (`dlcli.cli.run` runs many in one worker)."""
    global _json_printed
    _json_printed = False


def print_json(obj) -> None:
    """One JSON object on stdout; NaN and infinities (a diverged metric) become null, so
    the output is strict JSON that any parser reads."""
    import json
    import math

    global _json_printed

    def strict(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: strict(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [strict(v) for v in value]
        return value

    typer.echo(json.dumps(strict(obj), allow_nan=False))
    _json_printed = True


def print_json_error(message: str, exit_code: int) -> None:
    """`{"error": message, "exit_code": exit_code}` on stdout: what --json prints when the
    command fails, unless it printed its own JSON object before failing."""
    if not _json_printed:
        print_json({"error": message, "exit_code": exit_code})
