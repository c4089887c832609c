"""`dlcli sample`: text from a language model's run folder, or a sequence-to-sequence model's answer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, reports_errors
from dlcli.cli.options import JsonOption, print_json


@app.command("sample")
@reports_errors
def sample_command(
    run_dir: Path = typer.Argument(..., help="The run folder of a language model (data.name: text) or of a "
                                             "sequence-to-sequence model (reverse, sort, addition)."),
    prompt: str = typer.Option(..., "--prompt", help="Text to start from (only characters of the training text), "
                                                     "or the source string to translate."),
    length: Optional[int] = typer.Option(None, "--length", help="How many characters to generate [default: 200]."),
    temperature: Optional[float] = typer.Option(None, "--temperature",
                                                help="Softmax temperature; 0 takes the most likely character "
                                                     "[default: 1.0]."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Draw only among the K most likely characters."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draws; the same seed gives the same text."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, latest, or a saved step number."),
    as_json: bool = JsonOption,
) -> None:
    """Generate text: the prompt followed by LENGTH sampled characters, on stdout; for a
    sequence-to-sequence run, the greedy decoding of the prompt."""
    from dlcli.generate import sample_run

    result = sample_run(run_dir, prompt=prompt, length=length, temperature=temperature, top_k=top_k, seed=seed,
                        checkpoint=checkpoint)
    if as_json:
        print_json(result)
    else:
        typer.echo(result["text"] if "decoding" in result else result["prompt"] + result["text"])
