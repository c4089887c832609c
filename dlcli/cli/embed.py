"""`dlcli embed`: an autoencoder's codes of one split, with labels, as .npz and a scatter plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, reports_errors
from dlcli.cli.evaluate import Split
from dlcli.cli.options import DataDirOption, JsonOption, complete_run_dir, data_dir_or_default, print_json


@app.command("embed")
@reports_errors
def embed_command(
    run_dir: Path = typer.Argument(..., help="The run folder of an autoencoder (autoencoder, denoising, sparse, vae).",
                                   autocompletion=complete_run_dir),
    out: Path = typer.Option(..., "--out", help="The .npz file to write (arrays codes, labels, reconstruction_errors); "
                                                "the scatter plot goes beside it as .png."),
    split: Split = typer.Option(Split.test, "--split", help="Which split to encode."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, latest, or a saved step number."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out (and its .png) if they exist."),
    data_dir: Optional[Path] = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Export the latent codes of a split with their labels; plot them coloured by label
    (the codes themselves when 2-D, their first two principal components otherwise)."""
    from dlcli.generate import embed_run

    result = embed_run(run_dir, split=split.value, out=out, data_dir=data_dir_or_default(data_dir),
                       checkpoint=checkpoint, overwrite=overwrite)
    if as_json:
        print_json(result)
        return
    from dlcli.console import fmt, key_value_table, stdout

    rows = [("run folder", result["run_dir"]), ("checkpoint", f"step {result['checkpoint']}"),
            ("examples", fmt(result["examples"])), ("code dimensions", str(result["code_dims"])),
            (f"{result['split']} reconstruction mse", fmt(result["mean_reconstruction_mse"])),
            ("codes", result["out"]), ("scatter plot", result["plot"])]
    stdout.print(key_value_table(f"codes of the {result['split']} split", rows))
