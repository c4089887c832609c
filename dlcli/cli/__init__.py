"""The Typer app. Commands are thin: gather options, call the library, print results.

JAX and Flax are imported inside the commands that train or evaluate, so `dlcli --help`
and `dlcli models` answer at once. Exit codes: 0 success, 2 bad input (one line on
stderr), 1 a failure during training.
"""

from __future__ import annotations

import functools
import sys

import typer

from dlcli.errors import DlcliError

app = typer.Typer(
    name="dlcli", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Deep-learning experiments from the command line: train, eval, compare, sweep.",
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect experiment configs.")
app.add_typer(config_app, name="config")


def reports_errors(command):
    """Turn a `DlcliError` into one line on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from dlcli.console import error

        try:
            return command(*args, **kwargs)
        except DlcliError as err:
            error(str(err))
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            error("interrupted; a run can be continued with `dlcli train CONFIG --run-dir DIR --resume`")
            raise typer.Exit(130) from None

    return wrapper


def main() -> None:
    from dlcli.cli import catalog, compare, evaluate, sweep, train  # noqa: F401  (registers the commands)

    app(prog_name="dlcli")


if __name__ == "__main__":
    sys.exit(main())
