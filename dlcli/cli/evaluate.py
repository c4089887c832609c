"""`dlcli eval`: re-measure a checkpoint of a run, from the run folder alone."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, reports_errors
from dlcli.cli.options import (CoordinatorOption, DataDirOption, DistributedOption, InitTimeoutOption, JsonOption,
                               NumProcessesOption, ProcessIdOption, complete_run_dir, data_dir_or_default, join_cluster,
                               print_json)


class Split(str, Enum):
    val = "val"
    test = "test"


@app.command("eval")
@reports_errors
def eval_command(
    run_dir: Path = typer.Argument(..., help="A run folder written by `dlcli train`.",
                                   autocompletion=complete_run_dir),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, latest, or a saved step number."),
    split: Split = typer.Option(Split.test, "--split", help="Which split to measure."),
    shift: int = typer.Option(0, "--shift", help="Translate each image by up to this many pixels first (robustness)."),
    data_dir: Optional[Path] = DataDirOption,
    as_json: bool = JsonOption,
    coordinator: Optional[str] = CoordinatorOption,
    num_processes: Optional[int] = NumProcessesOption,
    process_id: Optional[int] = ProcessIdOption,
    distributed: bool = DistributedOption,
    init_timeout: int = InitTimeoutOption,
) -> None:
    """Evaluate a run's checkpoint on the validation or test split (on every device of
    every process, when started in each process of a multi-process job like `dlcli train`)."""
    join_cluster(coordinator, num_processes, process_id, distributed, init_timeout)
    from dlcli.training.distributed import peer_lost
    from dlcli.training.evaluate import evaluate_run

    with peer_lost():
        result = evaluate_run(run_dir, checkpoint=checkpoint, split=split.value,
                              data_dir=data_dir_or_default(data_dir), shift=shift)
    if as_json:
        print_json(result)
        return
    from dlcli.console import confusion_table, fmt, key_value_table, stdout

    rows = [("run folder", result["run_dir"]), ("checkpoint", f"step {result['checkpoint']}"),
            ("parameters", fmt(result["params"]))]
    rows += [(name, fmt(value)) for name, value in result["metrics"].items()]
    shifted = f", images shifted by up to {shift} px" if shift else ""
    stdout.print(key_value_table(f"evaluation on {result['split']}{shifted}", rows))
    if "confusion" in result:
        stdout.print(confusion_table(result["confusion"]))
