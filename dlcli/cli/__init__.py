"""The Typer app. Commands are thin: gather options, call the library, print results.

JAX and Flax are imported inside the commands that train or evaluate, so `dlcli --help`,
`dlcli --version`, shell completion and `dlcli models` answer at once. Exit codes: 0
success (bare `dlcli` shows the help), 2 bad input or a usage error (one line on
stderr), 1 a failure during training; with a command's --json, a failure also prints
`{"error": ..., "exit_code": ...}` on stdout.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import os
import sys
import warnings
from enum import Enum
from typing import Optional

import typer
from typer.core import TyperCommand, TyperGroup

import dlcli
from dlcli import interrupts
from dlcli.errors import DISK_FULL, DlcliError, describe_os_error
from dlcli.interrupts import Interrupted


def reflowed(text: Optional[str]) -> Optional[str]:
    """A docstring with each paragraph on one line, so that Rich wraps the help at the
    terminal's width instead of at the source's line breaks (Typer joins the lines of a
    command's first paragraph only). A paragraph starting with \\b keeps its lines."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


class _Polished:
    """Help as users expect it: paragraphs that wrap at the terminal's width, and flags
    shown as switches (`--resume`, not Typer's `--resume <bool>`)."""

    def __init__(self, *args, help: Optional[str] = None, **kwargs):
        super().__init__(*args, help=reflowed(help), **kwargs)

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and not getattr(param, "count", False):
                param.metavar = ""  # what Rich's help shows in the type column: nothing
        return params


class Command(_Polished, TyperCommand):
    pass


class Group(_Polished, TyperGroup):
    pass


class App(typer.Typer):
    """A Typer app whose commands are `Command`s."""

    def command(self, name: Optional[str] = None, *, cls: type = Command, **kwargs):
        return super().command(name, cls=cls, **kwargs)


app = App(
    name="dlcli", cls=Group, no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
    rich_markup_mode="rich", help="Deep-learning experiments from the command line: train, eval, compare, sweep.",
)
config_app = App(cls=Group, no_args_is_help=True, help="Inspect experiment configs.")
app.add_typer(config_app, name="config")


class Platform(str, Enum):
    cpu = "cpu"
    gpu = "gpu"
    tpu = "tpu"


def versions() -> str:
    """`dlcli X.Y.Z (JAX ..., Flax ..., Python ...)`, read from the installed packages'
    metadata: nothing is imported."""
    from importlib import metadata

    def installed(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    found = ", ".join(f"{label} {installed(package)}" for label, package in
                      [("JAX", "jax"), ("jaxlib", "jaxlib"), ("Flax", "flax"), ("Optax", "optax"),
                       ("Orbax", "orbax-checkpoint")])
    return f"dlcli {dlcli.__version__} ({found}, Python {sys.version.split()[0]})"


def show_version(value: bool) -> None:
    if value:
        typer.echo(versions())
        raise typer.Exit()


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
    version: bool = typer.Option(False, "--version", is_eager=True, callback=show_version,
                                 help="Print the versions of dlcli, JAX, Flax, Optax, Orbax and Python, and exit."),
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


def _stopped_line(command, signum: int) -> str:
    """An interrupted command's one line: the signal, and what to do next."""
    name = command.__name__.removesuffix("_command")
    if name == "train":
        advice = "rerun the same command with --resume to continue"
    elif name in ("compare", "sweep"):
        advice = "rerun the same command to continue (what finished is kept)"
    else:
        advice = "rerun the same command"
    return f"stopped by {interrupts.signal_name(signum)}; {advice}"


def reports_errors(command):
    """Turn a `DlcliError`, an `OSError` or Ctrl-C into one line on stderr and its exit
    code (a full disk is a failure, 1; any other file-system error bad input, 2); with
    the command's --json (`as_json`), also a JSON error object on stdout (`fail`)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from dlcli.cli import options

        options.start_command()
        as_json = bool(kwargs.get("as_json"))
        interrupts.on_stop(lambda signum: report_failure(_stopped_line(command, signum), 128 + signum, as_json))
        try:
            result = command(*args, **kwargs)
            if interrupts.received():  # an interrupt a finalizer swallowed: the command still ends with it
                raise Interrupted(interrupts.received())
            return result
        except DlcliError as err:
            fail(str(err), err.exit_code, as_json)
        except OSError as err:  # a path the checks did not foresee: unreadable, unwritable, a full disk
            fail(describe_os_error(err), 1 if err.errno in DISK_FULL else 2, as_json)
        except KeyboardInterrupt as err:
            interrupt = err if isinstance(err, Interrupted) else Interrupted()
            fail(interrupt.message or _stopped_line(command, interrupt.signum), interrupt.exit_code, as_json)
        except RuntimeError as err:
            if "Unable to initialize backend" not in str(err):
                raise
            reason = " ".join(str(err).split("(set JAX_PLATFORMS")[0].split()).rstrip(".")
            fail(f"JAX cannot start the {os.environ.get('JAX_PLATFORMS', 'default')!r} platform here ({reason}); "
                 "choose one this machine has with --platform (cpu, gpu, tpu; or DLCLI_PLATFORM), "
                 "or install JAX's build for it", 2, as_json)

    return wrapper


def fail(message: str, exit_code: int, as_json: bool) -> None:
    """End the command with `exit_code` and `report_failure`'s line (and JSON object)."""
    report_failure(message, exit_code, as_json)
    raise typer.Exit(exit_code) from None


def report_failure(message: str, exit_code: int, as_json: bool) -> None:
    """`message` as one line on stderr and, when `as_json`, `{"error": message,
    "exit_code": exit_code}` on stdout, unless the command already printed its JSON object
    (a sweep whose every trial failed prints its results, then fails)."""
    from dlcli.cli.options import print_json_error
    from dlcli.console import error

    error(message)
    if as_json:
        print_json_error(message, exit_code)


def run(args: list[str]) -> int:
    """`dlcli ARGS` in this process, printing what the command line prints; returns the
    exit code. Usage errors (an unknown option, a value of the wrong type) are one line
    on stderr with exit code 2, like every other bad input (and a JSON error object on
    stdout when the arguments hold --json). A group called without a command (bare
    `dlcli`, `dlcli config`) shows its help and returns 0."""
    from dlcli.cli import catalog, compare, embed, evaluate, predict, runs, sample, sweep, train  # noqa: F401  (registers the commands)
    from dlcli.runlog import record_command
    from dlcli.cli.options import start_command

    interrupts.reset()
    record_command(list(args))  # the command line a run started now records in its status.json
    start_command()
    wants_json = "--json" in (args[:args.index("--")] if "--" in args else args)
    interrupts.on_stop(lambda signum: report_failure(f"stopped by {interrupts.signal_name(signum)}", 128 + signum,
                                                     wants_json))
    try:
        code = app(args=list(args), prog_name="dlcli", standalone_mode=False)
    except typer.TyperException as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # the help is on stdout already (the class is not public)
            return 0
        message = " ".join(err.format_message().split())
        context = getattr(err, "ctx", None)
        message += f"; see {context.command_path} --help" if context is not None else ""
        report_failure(message, err.exit_code, wants_json)
        return err.exit_code
    except typer.Abort as err:  # Ctrl-C or SIGTERM before a command started
        interrupt = err.__cause__ if isinstance(err.__cause__, Interrupted) else Interrupted()
        report_failure(f"stopped by {interrupt.signal_name}", interrupt.exit_code, wants_json)
        return interrupt.exit_code
    except SystemExit as err:  # --show-completion, --install-completion and the shell's completion requests end so
        return err.code if isinstance(err.code, int) else 0 if err.code is None else 1
    return code if isinstance(code, int) else 0


def main() -> None:
    """Entry point of the `dlcli` command."""
    interrupts.install(exit_at_once=True)
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
