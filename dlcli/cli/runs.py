"""`dlcli runs [FOLDER]`: the table of every run under a folder; `dlcli runs diff A B`:
the config keys two runs differ in. Nothing here imports JAX: the table is read from
the run folders' status.json, summary.json and config.yaml (`dlcli.runs.run_table`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import App, Group, app, reports_errors
from dlcli.cli.options import JsonOption, print_json


class _ListByDefault(Group):
    """`dlcli runs`, `dlcli runs sweeps/x` and `dlcli runs --json` mean `dlcli runs list ...`:
    the first argument is a subcommand only when it names one (`diff`, `list`)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["list", *args]
        return super().parse_args(ctx, args)


runs_app = App(cls=_ListByDefault, subcommand_metavar="[FOLDER] | diff RUN_A RUN_B", help="The run folders under a folder, with their status and metrics "
                                                "(`dlcli runs [FOLDER]`); `dlcli runs diff A B` compares two configs.")
app.add_typer(runs_app, name="runs")


class State(str, Enum):
    running = "running"
    finished = "finished"
    failed = "failed"
    interrupted = "interrupted"
    killed = "killed"
    unknown = "unknown"


@runs_app.command("list")
@reports_errors
def list_command(
    folder: Path = typer.Argument(Path("runs"), help="Where to look for run folders, at any depth (compare and sweep "
                                                     "folders hold them too); default: runs."),
    sort: Optional[str] = typer.Option(None, "--sort", metavar="METRIC",
                                       help="Order by a metric (test/accuracy: best first) or a field (started, "
                                            "wall_s, params, name)."),
    filters: Optional[list[str]] = typer.Option(None, "--filter", metavar="KEY=VALUE",
                                                help="Only runs whose config has this value (model.name=cnn, "
                                                     "optimizer.learning_rate=0.01) or whose status, model or dataset "
                                                     "is it; repeatable, all must hold."),
    status: Optional[State] = typer.Option(None, "--status", help="Only runs in this state."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of the runs instead of the table."),
) -> None:
    """The runs under FOLDER: status (with the reason it ended), start, end, wall time,
    model, dataset, parameters, the best value of the monitored metric and the test metrics.
    A run whose process died without a word (SIGKILL) shows as killed, with its last heartbeat."""
    from dlcli.runs import run_table

    rows = run_table(folder, filters=filters or [], status=status.value if status else None, sort=sort)
    if as_json:
        print_json([{k: v for k, v in row.items() if k != "config"} for row in rows])
        return
    from dlcli.console import fmt, list_table, print_whole

    monitors = {row["monitor"] for row in rows if row["best"] is not None}
    shared = monitors.pop() if len(monitors) == 1 else None  # one monitored metric: named once, in the header
    tests = list(dict.fromkeys(k for row in rows for k in row["test"]))
    columns = ["run", "status", "started", "ended", "wall", "model", "dataset", "params",
               f"best {shared}" if shared else "best monitored", *tests]
    table = [[row["name"], _state(row), _time(row["started"]), _time(row["ended"], row["started"]),
              _duration(row["wall_s"]), row["model"] or "", row["dataset"] or "",
              fmt(row["params"]) if row["params"] is not None else "", _best(row, shared),
              *(fmt(row["test"][k]) if k in row["test"] else "" for k in tests)] for row in rows]
    print_whole(list_table(f"{len(rows)} run(s) under {folder}", columns, table))


@runs_app.command("diff")
@reports_errors
def diff_command(
    run_a: Path = typer.Argument(..., help="A run folder."),
    run_b: Path = typer.Argument(..., help="Another run folder."),
    as_json: bool = JsonOption,
) -> None:
    """The config keys (dotted) whose values differ between two runs, with both values."""
    from dlcli.runs import config_diff

    differences = config_diff(run_a, run_b)
    if as_json:
        print_json({"a": str(run_a), "b": str(run_b), "differences": differences})
        return
    from dlcli.console import list_table, stdout

    stdout.print(list_table(f"{len(differences)} config key(s) differ", ["key", str(run_a), str(run_b)],
                            [[d["key"], _value(d, "a"), _value(d, "b")] for d in differences]))


def _state(row: dict) -> str:
    return f"{row['status']}: {row['reason']}" if row["reason"] else row["status"]


def _time(stamp: Optional[str], since: Optional[str] = None) -> str:
    """'2026-12-07T14:03:11+00:00' -> '12-07 14:03:11' (the local time the run recorded),
    the time alone when it is on the day of `since`."""
    if not stamp:
        return ""
    return stamp[11:19] if since and since[:10] == stamp[:10] else f"{stamp[5:10]} {stamp[11:19]}"


def _best(row: dict, shared: Optional[str]) -> str:
    from dlcli.console import fmt

    if row["best"] is None:
        return ""
    return fmt(row["best"]) if shared else f"{row['monitor']} {fmt(row['best'])}"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _value(difference: dict, side: str) -> str:
    """A config value as JSON writes it (null, true, "mlp", [16, 16]); (absent) where the run has no such key."""
    import json

    return json.dumps(difference[side]) if side in difference else "(absent)"
