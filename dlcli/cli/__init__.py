"""The Typer app. Commands are thin: gather options, call the library, print results.

JAX and Flax are imported inside the commands that train or evaluate, so `dlcli --help`
and `dlcli models` answer at once. Exit codes: 0 success, 2 bad input (one line on
stderr), 1 a failure during training.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import warnings
from enum import Enum
from typing import Optional

import typer

from dlcli import interrupts
from dlcli.errors import DISK_FULL, DlcliError, describe_os_error
from dlcli.interrupts import Interrupted

app = typer.Typer(
    name="dlcli", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Deep-learning experiments from the command line: train, eval, compare, sweep.",
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect experiment configs.")
app.add_typer(config_app, name="config")


class Platform(str, Enum):
    cpu = "cpu"
    gpu = "gpu"
    tpu = "tpu"


@app.callback()
def global_options(
    platform: Optional[Platform] = typer.Option(
        None, "--platform", envvar="DLCLI_PLATFORM",
        help="Where JAX computes (before the command: dlcli --platform gpu train ...); default: the best there is. "
             "Worker processes of compare and sweep inherit it."),
    compile_cache: bool = typer.Option(
        True, "--compile-cache/--no-compile-cache", envvar="DLCLI_COMPILE_CACHE",
        help="Keep compiled programs in the user's cache folder, so a later run of the same shapes does not "
             "compile them again (DLCLI_COMPILE_CACHE=0 turns it off)."),
) -> None:
    """Deep-learning experiments from the command line: train, eval, compare, sweep."""
    if platform is not None:
        os.environ["JAX_PLATFORMS"] = platform.value  # read when JAX first starts a backend
    use_compilation_cache(compile_cache)


COMPILATION_CACHE_BYTES = 4 << 30


def use_compilation_cache(enabled: bool) -> None:
    """JAX's persistent compilation cache, set up through the environment before JAX is
    imported (worker processes inherit it): every program, however quick to compile,
    in `<user cache>/dlcli/xla`, at most `COMPILATION_CACHE_BYTES` (least recently used
    programs go first). With a size limit JAX takes a file lock around each read and
    write, so processes sharing the folder never read a half-written program. Where
    JAX_COMPILATION_CACHE_DIR already names a folder it is used as its owner set it up
    (JAX's eviction expects every writer of a folder to keep the same books). A cache
    that cannot be read or written only costs time, so JAX's warnings about it are
    silenced. Disabled: JAX is told so even where the environment names a folder."""
    if not enabled:
        os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
        return
    warnings.filterwarnings("ignore", message=".*persistent compilation cache.*")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        from dlcli.data import user_cache_dir

        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(user_cache_dir() / "xla")
        os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(COMPILATION_CACHE_BYTES))


def reports_errors(command):
    """Turn a `DlcliError`, an `OSError` or Ctrl-C into one line on stderr and its exit
    code (a full disk is a failure, 1; any other file-system error bad input, 2)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from dlcli.console import error

        try:
            result = command(*args, **kwargs)
            if interrupts.received():  # an interrupt a finalizer swallowed: the command still ends with it
                raise Interrupted(interrupts.received())
            return result
        except DlcliError as err:
            error(str(err))
            raise typer.Exit(err.exit_code) from None
        except OSError as err:  # a path the checks did not foresee: unreadable, unwritable, a full disk
            error(describe_os_error(err))
            raise typer.Exit(1 if err.errno in DISK_FULL else 2) from None
        except KeyboardInterrupt as err:
            interrupt = err if isinstance(err, Interrupted) else Interrupted()
            error(interrupt.message or f"stopped by {interrupt.signal_name}; rerun the same command with --resume "
                                       "(train) or as it was (compare, sweep) to continue")
            raise typer.Exit(interrupt.exit_code) from None
        except RuntimeError as err:
            if "Unable to initialize backend" not in str(err):
                raise
            reason = " ".join(str(err).split("(set JAX_PLATFORMS")[0].split()).rstrip(".")
            error(f"JAX cannot start the {os.environ.get('JAX_PLATFORMS', 'default')!r} platform here ({reason}); "
                  "choose one this machine has with --platform (cpu, gpu, tpu; or DLCLI_PLATFORM), "
                  "or install JAX's build for it")
            raise typer.Exit(2) from None

    return wrapper


def run(args: list[str]) -> int:
    """`dlcli ARGS` in this process, printing what the command line prints; returns the
    exit code. Usage errors (an unknown option, a value of the wrong type) are one line
    on stderr with exit code 2, like every other bad input."""
    from dlcli.cli import catalog, compare, embed, evaluate, sample, sweep, train  # noqa: F401  (registers the commands)
    from dlcli.console import error

    interrupts.reset()
    try:
        code = app(args=list(args), prog_name="dlcli", standalone_mode=False)
    except typer.TyperException as err:
        message = " ".join(err.format_message().split())
        if message:  # empty when the help was shown instead (no command given)
            context = getattr(err, "ctx", None)
            error(message + (f"; see {context.command_path} --help" if context is not None else ""))
        return err.exit_code
    except typer.Abort as err:  # Ctrl-C or SIGTERM before a command started
        interrupt = err.__cause__ if isinstance(err.__cause__, Interrupted) else Interrupted()
        error(f"stopped by {interrupt.signal_name}")
        return interrupt.exit_code
    return code if isinstance(code, int) else 0


def main() -> None:
    """Entry point of the `dlcli` command."""
    interrupts.install()
    code = run(sys.argv[1:])
    if code == 0:
        with interrupts.deferred():  # a signal must not raise inside an exit handler
            atexit._run_exitfuncs()  # what a normal exit runs: JAX's shutdown, a multi-process run's goodbye
        if interrupts.received():
            from dlcli.console import error

            stopped = Interrupted(interrupts.received())
            error(f"stopped by {stopped.signal_name} after the command had finished; what it wrote is complete")
            code = stopped.exit_code
    _exit_now(code)


def _exit_now(code: int) -> None:
    """Exit without interpreter teardown. Everything worth keeping is already written
    (checkpoints are closed in `finally` blocks, no thread is left); tearing down JAX's
    and Flax's modules object by object costs 0.5-1 s of every command, and after a
    failed read Orbax can leave restore coroutines whose teardown would print tracebacks
    after our one line."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
