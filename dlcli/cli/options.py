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
