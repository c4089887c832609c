"""`dlcli compare`: several configurations over the same seeds, with statistics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, reports_errors
from dlcli.cli.options import DataDirOption, JsonOption, SetOption, data_dir_or_default, folder_or_none, print_json

DEPTH_PANEL = "shallow-vs-deep"
MAX_SEEDS = 1000


@app.command("compare")
@reports_errors
def compare_command(
    targets: list[str] = typer.Argument(..., metavar="shallow-vs-deep | CONFIG CONFIG ... | CONFIG --arm ...",
                                        help="`shallow-vs-deep`, two or more experiment files, or one with --arm."),
    seeds: int = typer.Option(5, "--seeds", help="Seeds per configuration (0, 1, ... N-1)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Metric to compare; default test/accuracy "
                                                                "(classifiers), a GAN's first metric, else test/loss."),
    workers: int = typer.Option(os.cpu_count() or 1, "--workers", help="Runs trained at once, one process each."),
    out: Optional[str] = typer.Option(None, "--out", help="Output folder; default comparisons/<name>."),
    set_: Optional[list[str]] = SetOption,
    arm: Optional[list[str]] = typer.Option(
        None, "--arm", metavar="NAME:KEY=VALUE,...",
        help="One arm of a single CONFIG: its name and its own overrides, comma-separated (repeat for each arm; "
             "--set applies to all), e.g. --arm shallow:model.depth=1 --arm deep:model.depth=4,model.width=64."),
    shift_test: int = typer.Option(0, "--shift-test", help="Also evaluate every run on test images shifted by up to N px."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Arm the others are tested against (default: the first)."),
    task: str = typer.Option("sawtooth", "--task", rich_help_panel=DEPTH_PANEL,
                             help="sawtooth, parity, spirals, digits, mnist, or any dataset name."),
    model: str = typer.Option("mlp", "--model", rich_help_panel=DEPTH_PANEL, help="mlp or cnn."),
    budget: Optional[int] = typer.Option(None, "--budget", rich_help_panel=DEPTH_PANEL, help="Parameter budget of every network."),
    depths: str = typer.Option("1,2,4,8", "--depths", rich_help_panel=DEPTH_PANEL, help="Hidden layers (1 is shallow)."),
    steps: Optional[int] = typer.Option(None, "--steps", rich_help_panel=DEPTH_PANEL, help="Training steps of every network."),
    activation: str = typer.Option("relu", "--activation", rich_help_panel=DEPTH_PANEL),
    lr: Optional[float] = typer.Option(None, "--lr", rich_help_panel=DEPTH_PANEL, help="Learning rate of every network."),
    tune_lr: bool = typer.Option(False, "--tune-lr", rich_help_panel=DEPTH_PANEL,
                                 help="Pick each network's learning rate on the validation split first."),
    lr_grid: str = typer.Option("0.0003,0.001,0.003,0.01", "--lr-grid", rich_help_panel=DEPTH_PANEL),
    data_dir: Optional[Path] = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Compare configurations over seeds: mean and 95% CI per arm, Welch's t-test, curves, report.

    `dlcli compare shallow-vs-deep --task sawtooth` builds networks of each depth with
    the same parameter budget; `dlcli compare A.yaml B.yaml` compares any experiments.
    `dlcli compare X.yaml --arm a:KEY=VALUE --arm b:KEY=VALUE,KEY=VALUE` compares
    variants of one experiment. Rerunning the same command resumes: finished runs are
    not trained again. Writes report.html (self-contained) and report.md beside the results.
    """
    from dlcli import compare
    from dlcli.batch import MAX_WORKERS
    from dlcli.config import MAX_STEPS
    from dlcli.errors import BadInput
    from dlcli.schema import check_range

    check_range(workers, "--workers", 1, MAX_WORKERS)
    check_range(seeds, "--seeds", 1, MAX_SEEDS)
    check_range(shift_test, "--shift-test", 0, None)
    out_dir = folder_or_none(out, "--out")
    if targets[0] == "shallow-vs-deep":
        if len(targets) > 1 or arm:
            raise BadInput("dlcli compare shallow-vs-deep takes no config files and no --arm; use --task, --budget, "
                           "--depths")
        for value, option in ((steps, "--steps"), (budget, "--budget")):
            if value is not None:
                check_range(value, option, 1, MAX_STEPS)
        if lr is not None and not 0 < lr < float("inf"):
            raise BadInput(f"--lr must be a positive finite number, got {lr}")
        depth_list = _numbers(depths, "--depths", int, "1,2,4,8")
        for depth in depth_list:
            check_range(depth, "--depths", 1, 1000)
        arms = compare.shallow_vs_deep_arms(task, model=model, budget=budget, depths=depth_list,
                                            steps=steps, activation=activation, learning_rate=lr, overrides=set_ or [])
        name, title = f"shallow-vs-deep-{task}-{model}", f"shallow vs deep: {model} on {task}, {arms[0].config['training']['steps']} steps"
        grid = _numbers(lr_grid, "--lr-grid", float, "0.001,0.003") if tune_lr else None
        if grid is not None and not all(0 < rate < float("inf") for rate in grid):
            raise BadInput(f"--lr-grid must hold positive finite learning rates, got {lr_grid!r}")
    elif arm:
        if len(targets) != 1:
            raise BadInput(f"--arm varies one CONFIG file, got {len(targets)}; give one file and an --arm per variant")
        arms = compare.variant_arms(Path(targets[0]), arm, set_ or [])
        name = f"{Path(targets[0]).stem}-" + "-vs-".join(compare.slug(a.label) for a in arms)
        title, grid = f"compare {Path(targets[0]).stem}: {', '.join(a.label for a in arms)}", None
    else:
        arms = compare.config_arms([Path(t) for t in targets], set_ or [])
        name = "-vs-".join(a.label for a in arms)
        title, grid = f"compare: {', '.join(a.label for a in arms)}", None
    labels = [a.label for a in arms]
    if baseline is not None and baseline not in labels:
        raise BadInput(f"--baseline {baseline!r} is not an arm of this comparison; choose one of: {', '.join(labels)}")
    baseline = baseline or labels[0]
    out_dir = out_dir or Path("comparisons") / name
    extra = {f"shift{shift_test}": ["--shift", str(shift_test)]} if shift_test else None

    from dlcli.console import stderr

    def report(result) -> None:
        if result.status == "failed":
            stderr.print(f"[red]failed[/]{' (earlier)' if result.cached else ''} {result.key}: {result.error}",
                         soft_wrap=True)
        else:
            figures = ", ".join(f"{k} {v:.4f}" for k, v in result.summary["metrics"].items() if k.startswith("test/"))
            stderr.print(f"done{' (earlier)' if result.cached else ''} {result.key}: {figures} ({result.summary['wall_s']:.1f} s)", soft_wrap=True)

    outcome = compare.run_comparison(arms, out_dir=out_dir, seeds=seeds, metric=metric, workers=workers,
                                     data_dir=data_dir_or_default(data_dir), tune_lr=grid, extra_evals=extra,
                                     baseline=baseline, on_done=report)
    if outcome.failures:
        from dlcli.errors import TrainingFailure

        raise TrainingFailure(outcome.conclusion)
    data = compare.write_outputs(outcome, out_dir, title)
    if as_json:
        print_json(data)
        return
    _print(outcome, out_dir)


def _numbers(text: str, option: str, kind: type, example: str) -> list:
    """The non-empty comma-separated list of numbers of `kind` an option holds."""
    from dlcli.errors import BadInput

    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise BadInput(f"{option} must be comma-separated {kind.__name__}s such as {example}, got {text!r}")
    return values


def _print(outcome, out_dir: Path) -> None:
    from dlcli.compare import format_ci
    from dlcli.console import list_table, stdout

    extra = list(outcome.arms[0].extra)
    rows = [(a.arm.label, a.arm.width or "-", f"{a.params:,}", f"{a.learning_rate:g}",
             f"{a.summary.mean:.4f} ± {format_ci(a.summary)}", *(f"{x.mean:.4f} ± {format_ci(x)}" for x in a.extra.values()),
             f"{a.train_s:.1f}") for a in outcome.arms]
    stdout.print(list_table(f"{outcome.metric}, mean ± 95% CI over {len(outcome.arms[0].values)} seeds",
                            ["arm", "widths", "parameters", "lr", outcome.metric, *extra, "train s"], rows))
    stdout.print(outcome.conclusion, soft_wrap=True)
    stdout.print(f"report: {out_dir / 'report.html'} (and report.md), per seed: {out_dir / 'results.csv'}",
                 soft_wrap=True)
