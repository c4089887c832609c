"""The one place that imports Rich: progress on stderr, result tables on stdout.

Errors are written to stderr as a single plain line (no wrapping, no markup) so
scripts can read them.
"""

from __future__ import annotations

import sys
from typing import Iterable

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dlcli.errors import report_line

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def error(message: str) -> None:
    """One plain line on standard error (see `errors.report_line`)."""
    sys.stderr.flush()
    report_line(f"error: {message}")


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def note(message: str) -> None:
    """One unwrapped line on standard error: a choice made for the user (a run folder)."""
    stderr.print(message, soft_wrap=True, markup=False)


class TrainProgress:
    """A progress bar on stderr: epoch, step, live loss and metric, samples/s and ETA."""

    def __init__(self, total_steps: int, start_step: int, metric: str):
        self.metric = metric
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), TaskProgressColumn(),
            TextColumn("step {task.completed}/{task.total}"), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=stderr, transient=False,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, epoch=0, stats="compiling")

    def __enter__(self) -> "TrainProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def update(self, step: int, epoch: int, loss: float, metric: float | None, samples_per_s: float) -> None:
        stats = f"loss {loss:.4f}"
        if metric is not None:
            stats += f" {self.metric} {metric:.4f}"
        stats += f" {samples_per_s:,.0f} samples/s"
        self._progress.update(self._task, completed=step, epoch=epoch, stats=stats)

    def log(self, message: str) -> None:
        self._progress.console.print(message, soft_wrap=True)


def print_whole(renderable) -> None:
    """`renderable` on stdout: at a terminal wrapped to its width; into a file or a pipe
    (where Rich would assume 80 columns) as wide as its widest row, so no row is cramped."""
    if stdout.is_terminal:
        stdout.print(renderable)
        return
    wide = Console(file=sys.stdout, width=100_000, highlight=False)
    wide.print(renderable, width=wide.measure(renderable).maximum)


def key_value_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    return table


def list_table(title: str, columns: list[str], rows: Iterable[Iterable[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def confusion_table(matrix: list[list[int]]) -> Table:
    """Rows are true classes, columns predicted classes."""
    table = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    table.add_column("")
    for j in range(len(matrix)):
        table.add_column(str(j), justify="right")
    for i, row in enumerate(matrix):
        table.add_row(str(i), *(str(v) for v in row))
    return table


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
