"""`dlcli models`, `dlcli datasets` and `dlcli config show`: answered without JAX."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, config_app, reports_errors
from dlcli.cli.options import ExperimentArgument, JsonOption, SeedOption, SetOption, print_json


@app.command("models")
@reports_errors
def models_command(as_json: bool = JsonOption) -> None:
    """List every registered architecture with its default parameter count."""
    from dlcli.config import DATASETS, MODELS

    entries = [{"name": name, "params": None if spec.pretrained_from
                else spec().param_count(DATASETS.get(spec.reference_dataset)().info()),
                "reference_dataset": spec.reference_dataset, "description": spec.summary}
               for name, spec in MODELS.items()]
    if as_json:
        print_json(entries)
        return
    from dlcli.console import fmt, list_table, stdout

    rows = [(e["name"], f"{fmt(e['params'])} on {e['reference_dataset']}" if e["params"] is not None
             else "its pre-trained encoder's + head", e["description"]) for e in entries]
    stdout.print(list_table("models (parameters of the default config)", ["name", "parameters", "description"], rows))


@app.command("datasets")
@reports_errors
def datasets_command(as_json: bool = JsonOption) -> None:
    """List the built-in datasets with their shapes and task kind."""
    from dlcli.config import DATASETS

    entries = []
    for name, spec in DATASETS.items():
        info = spec().info()
        outputs = info.n_outputs or None  # a text corpus: its vocabulary, known once the file is read
        entries.append({"name": name, "input_shape": list(info.input_shape), "outputs": outputs,
                        "task": info.kind, "description": spec.summary})
    if as_json:
        print_json(entries)
        return
    from dlcli.console import list_table, stdout

    rows = [(e["name"], "x".join(map(str, e["input_shape"])), str(e["outputs"] or "its vocabulary"), e["task"],
             e["description"])
            for e in entries]
    stdout.print(list_table("datasets", ["name", "input", "outputs", "task", "description"], rows))


@config_app.command("show")
@reports_errors
def config_show(
    config: Optional[Path] = ExperimentArgument,
    set_: Optional[list[str]] = SetOption,
    seed: Optional[int] = SeedOption,
    as_json: bool = JsonOption,
) -> None:
    """Print the resolved config (defaults < file < --set) as YAML, or JSON with --json."""
    from dlcli.config import load_config, resolved_yaml

    cfg = load_config(config, set_ or [], seed)
    if as_json:
        print_json(cfg.to_dict())
    else:
        typer.echo(resolved_yaml(cfg), nl=False)
