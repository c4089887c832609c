"""`dlcli sample`: text from a language model's run folder, a sequence-to-sequence
model's answer, or a grid of images from a generative model (VAE)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, reports_errors
from dlcli.cli.options import JsonOption, complete_run_dir, print_json


@app.command("sample")
@reports_errors
def sample_command(
    run_dir: Path = typer.Argument(..., help="The run folder of a language model (data.name: text), of a "
                                             "sequence-to-sequence model (reverse, sort, addition) or of a vae.",
                                   autocompletion=complete_run_dir),
    prompt: Optional[str] = typer.Option(None, "--prompt",
                                         help="Text to start from (only characters of the training text), "
                                              "or the source string to translate."),
    n: Optional[int] = typer.Option(None, "--n", help="Samples to draw from a generative model (with --out): images, or 2-D points."),
    out: Optional[Path] = typer.Option(None, "--out", help="The PNG of the drawn samples (an image grid, or points over the modes)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    label: Optional[int] = typer.Option(None, "--label", help="The class a conditional GAN draws (with --n and "
                                                                 "--out); without it, a row per class."),
    length: Optional[int] = typer.Option(None, "--length", help="How many characters to generate; default 200."),
    temperature: Optional[float] = typer.Option(None, "--temperature",
                                                help="Softmax temperature; 0 takes the most likely character; "
                                                     "default 1.0."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Draw only among the K most likely characters."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draws; the same seed gives the same text."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, latest, or a saved step number."),
    as_json: bool = JsonOption,
) -> None:
    """Generate text: the prompt followed by LENGTH sampled characters, on stdout; for a
    sequence-to-sequence run, the greedy decoding of the prompt; for a generative image
    model (vae, gan), N samples from its prior in a PNG (--n 64 --out grid.png); from a
    conditional GAN, N of one class (--label 7) or a row per class."""
    if n is not None or out is not None or label is not None:
        _sample_images(run_dir, n, out, prompt, seed, checkpoint, overwrite, label, as_json)
        return
    if prompt is None:
        from dlcli.errors import BadInput

        raise BadInput("give --prompt TEXT (language or sequence-to-sequence model) or --n N --out FILE.png "
                       "(generative model)")
    from dlcli.generate import sample_run

    result = sample_run(run_dir, prompt=prompt, length=length, temperature=temperature, top_k=top_k, seed=seed,
                        checkpoint=checkpoint)
    if as_json:
        print_json(result)
    else:
        typer.echo(result["text"] if "decoding" in result else result["prompt"] + result["text"])


def _sample_images(run_dir: Path, n: Optional[int], out: Optional[Path], prompt: Optional[str], seed: int,
                   checkpoint: str, overwrite: bool, label: Optional[int], as_json: bool) -> None:
    from dlcli.generate import sample_image_grid
    from dlcli.errors import BadInput

    if n is None or out is None or prompt is not None:
        raise BadInput("samples are drawn with both --n N and --out FILE.png and no --prompt")
    result = sample_image_grid(run_dir, n=n, out=out, seed=seed, checkpoint=checkpoint, overwrite=overwrite, label=label)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"{result['n']} samples from step {result['checkpoint']} (seed {seed}) -> {result['out']}")
