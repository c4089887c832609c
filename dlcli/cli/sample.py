"""`dlcli sample`: generate text from a character language model's run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, reports_errors
from dlcli.cli.options import JsonOption, print_json


@app.command("sample")
@reports_errors
def sample_command(
    run_dir: Path = typer.Argument(..., help="The run folder of a language model (data.name: text)."),
    prompt: str = typer.Option(..., "--prompt", help="Text to start from; only characters of the training text."),
    length: int = typer.Option(200, "--length", help="How many characters to generate."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature; 0 takes the most likely character."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Draw only among the K most likely characters."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draws; the same seed gives the same text."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, latest, or a saved step number."),
    as_json: bool = JsonOption,
) -> None:
    """Generate text: the prompt followed by LENGTH sampled characters, on stdout."""
    from dlcli.generate import sample_run

    result = sample_run(run_dir, prompt=prompt, length=length, temperature=temperature, top_k=top_k, seed=seed,
                        checkpoint=checkpoint)
    if as_json:
        print_json(result)
    else:
        typer.echo(result["prompt"] + result["text"])
