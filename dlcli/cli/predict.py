"""`dlcli predict`: a trained classifier, regressor or language model on new inputs."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, reports_errors
from dlcli.cli.options import JsonOption, print_json


@app.command("predict")
@reports_errors
def predict_command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run folder written by `dlcli train` (a classifier, regressor or "
                                             "character language model)."),
    source: Path = typer.Argument(..., metavar="INPUT",
                                  help="An image, a folder of images, a .npy, .npz or .csv file; for a language "
                                       "model a .txt file with one prompt per line."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the predictions to this file instead of stdout."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, latest, or a saved step number."),
    as_json: bool = JsonOption,
) -> None:
    """Predict with a trained run: for each input, the predicted class and every class's
    probability (a regressor: its values; a language model: the next character after each
    prompt), as CSV (input, predicted, p_CLASS...) or with --json one JSON object. Inputs
    are prepared as the run's training data was (its preprocessing.json)."""
    from dlcli.errors import BadInput
    from dlcli.predict import predict_run

    if out is not None and out.is_dir():
        raise BadInput(f"--out {out} is a folder; give a file name")
    result = predict_run(run_dir, source, checkpoint)
    predictions = result.pop("predictions")
    if as_json:
        result["predictions"] = predictions.records()
        if out is None:
            print_json(result)
            return
        import json

        text = json.dumps(result) + "\n"
    else:
        header, rows = predictions.table()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        text = buffer.getvalue()
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
