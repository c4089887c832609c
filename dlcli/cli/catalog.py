"""`dlcli models`, `dlcli datasets` and `dlcli config show`: answered without JAX."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, config_app, reports_errors
from dlcli.cli.options import SeedOption, SetOption


@app.command("models")
@reports_errors
def models_command() -> None:
    """List every registered architecture with its default parameter count."""
    from dlcli.config import DATASETS, MODELS
    from dlcli.console import fmt, list_table, stdout

    rows = []
    for name, spec in MODELS.items():
        reference = spec.reference_dataset
        params = spec().param_count(DATASETS.get(reference)().info())
        rows.append((name, f"{fmt(params)} on {reference}", spec.summary))
    stdout.print(list_table("models (parameters of the default config)", ["name", "parameters", "description"], rows))


@app.command("datasets")
@reports_errors
def datasets_command() -> None:
    """List the built-in datasets with their shapes and task kind."""
    from dlcli.config import DATASETS
    from dlcli.console import list_table, stdout

    rows = []
    for name, spec in DATASETS.items():
        info = spec().info()
        rows.append((name, "x".join(map(str, info.input_shape)), str(info.n_outputs), info.kind, spec.summary))
    stdout.print(list_table("datasets", ["name", "input", "outputs", "task", "description"], rows))


@config_app.command("show")
@reports_errors
def config_show(
    config: Optional[Path] = typer.Argument(None, help="YAML experiment file; default: the built-in digits MLP."),
    set_: Optional[list[str]] = SetOption,
    seed: Optional[int] = SeedOption,
) -> None:
    """Print the resolved config (defaults < file < --set) as YAML."""
    from dlcli.config import load_config, resolved_yaml

    typer.echo(resolved_yaml(load_config(config, set_ or [], seed)), nl=False)
