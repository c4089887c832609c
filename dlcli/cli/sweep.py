"""`dlcli sweep`: a hyperparameter search, each trial an ordinary run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlcli.cli import app, reports_errors
from dlcli.cli.options import DataDirOption, JsonOption, data_dir_or_default, folder_or_none, print_json


@app.command("sweep")
@reports_errors
def sweep_command(
    sweep_file: Path = typer.Argument(..., metavar="SWEEP.yaml", help="Sweep file: base, space, strategy, metric."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Trials trained at once (default: the file's workers)."),
    out: Optional[str] = typer.Option(None, "--out", help="Sweep folder; default sweeps/<name>."),
    storage: Optional[str] = typer.Option(
        None, "--storage", metavar="URL",
        help="Work through one study with other sweep processes, here or on other hosts: a database URL "
             "(postgresql://USER:PASSWORD@HOST/DB, any SQLAlchemy URL) or journal:PATH, a journal file on a "
             "filesystem they all see. Give them all the same --out, on such a filesystem too."),
    dead_after: int = typer.Option(
        60, "--dead-after", metavar="SECONDS",
        help="With --storage: a trial whose sweep process has sent no heartbeat for this long is taken as dead "
             "and queued again."),
    data_dir: Optional[Path] = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a sweep; rerunning it trains only the trials that have not finished.

    Results sorted by the metric go to results.csv and results.json, the best trial's
    config to best.yaml (ready for `dlcli train`). With --storage, every process started
    with the same URL takes trials from one shared study, and each reports the whole
    study once all its trials have finished. Exit code 0 when at least one trial
    finished, 1 when every trial failed, 2 for a bad sweep file or storage.
    """
    from dlcli.batch import MAX_WORKERS
    from dlcli.errors import BadInput, TrainingFailure
    from dlcli.schema import check_range
    from dlcli.sweep import load_sweep, run_sweep, write_results

    if workers is not None:
        check_range(workers, "--workers", 1, MAX_WORKERS)
    if dead_after < 3:
        raise BadInput(f"--dead-after must be at least 3 seconds (a heartbeat goes every SECONDS/6, at least "
                       f"every second), got {dead_after}")
    sweep = load_sweep(sweep_file, folder_or_none(out, "--out"))
    from dlcli.console import stderr

    def report(result) -> None:
        if result.status == "done":
            stderr.print(f"done{' (earlier)' if result.cached else ''} {result.key}: {sweep.cfg.metric} {result.summary['metrics'][sweep.cfg.metric]:.4f}", soft_wrap=True)
        else:
            stderr.print(f"[red]{result.status}[/]{' (earlier)' if result.cached else ''} {result.key}: {result.error}",
                         soft_wrap=True)

    trials = run_sweep(sweep, workers=workers, data_dir=data_dir_or_default(data_dir), storage=storage,
                       dead_after=dead_after, on_done=report)
    data = write_results(sweep, trials)
    if as_json:
        print_json(data)
    else:
        _print(sweep, trials)
    if not data["finished"]:
        raise TrainingFailure(f"every trial of sweep {sweep.cfg.name} failed; see results.csv in {sweep.folder}")


def _print(sweep, trials) -> None:
    from dlcli.console import list_table, stdout

    keys = list(sweep.space)
    rows = [(f"{t.index:03d}", t.status, "" if t.value is None else f"{t.value:.4f}",
             *(f"{t.params[k]:.4g}" if isinstance(t.params[k], float) else str(t.params[k]) for k in keys),
             (t.error or "")[:60]) for t in trials]
    stdout.print(list_table(f"sweep {sweep.cfg.name}: {sweep.cfg.metric} ({sweep.cfg.direction}), best first",
                            ["trial", "status", sweep.cfg.metric, *keys, "error"], rows))
    stdout.print(f"report: {sweep.folder / 'report.html'} (and report.md)", soft_wrap=True)
    if (sweep.folder / "best.yaml").exists():
        stdout.print(f"best config: {sweep.folder / 'best.yaml'}  (dlcli train {sweep.folder / 'best.yaml'})", soft_wrap=True)
