"""Ctrl-C (SIGINT) and SIGTERM: never swallowed, always one line and exit code 128 + N.

Python raises KeyboardInterrupt wherever the main thread happens to be, and an
exception raised inside a finalizer or a garbage-collection callback (JAX has one) is
dropped, the interrupt with it. So every signal is also recorded (`received`): a
command that ran on after a dropped interrupt still ends with it. Where work must stop
at a safe point (training between chunks of steps, a batch of runs between polls)
`deferred()` only records the signal, and the work polls `received()`. Elsewhere the
console script reports the command's one line and exits at once (`install`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from dlcli.errors import restore_stderr

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: int | None = None  # the first signal since `reset`
_raised_mid_work = False  # see `raised_mid_work`
_stop_report = None  # see `on_stop`


class Interrupted(KeyboardInterrupt):
    """The command was stopped by signal `signum`; `message` says what was kept."""

    def __init__(self, signum: int = signal.SIGINT, message: str | None = None):
        super().__init__(message)
        self.signum, self.message = signum, message

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal_name(self.signum)


def signal_name(signum: int) -> str:
    """How a message names the signal: Ctrl-C for SIGINT, else its name (SIGTERM)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def received() -> int | None:
    """The first SIGINT or SIGTERM this command received (None: none)."""
    return _received


def raised_mid_work() -> bool:
    """Whether a signal since `reset` raised wherever the main thread was, not at a safe
    point: an import, a finalizer or any other work may have been cut in half, so a
    process that runs command after command (a batch's worker) should end instead."""
    return _raised_mid_work


def reset() -> None:
    global _received, _raised_mid_work
    _received, _raised_mid_work = None, False


def _record(signum: int) -> None:
    global _received
    if _received is None:
        _received = signum


def _record_and_raise(signum: int, frame) -> None:
    global _raised_mid_work
    _record(signum)
    _raised_mid_work = True
    raise Interrupted(signum)


def install(*, exit_at_once: bool = False, signals: tuple[signal.Signals, ...] = SIGNALS) -> None:
    """Both signals are recorded and stop the command with cleanup and one line, where by
    default SIGTERM ends the process on the spot, saying nothing. In process (the Python
    API, tests) they raise `Interrupted`. In the console script (`exit_at_once`) they
    report the command's one line (`on_stop`) and end the process at once instead:
    raising at an arbitrary point can land in a garbage-collection callback (Python then
    prints a traceback and drops the exception) or in a native module's import (a
    segfault was seen), while outside `deferred()`, where work stops at safe points,
    nothing is being written that an exit could cut short (what a command writes, it
    writes whole). `signals` narrows which of the two are handled."""
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            signal.signal(signum, _report_and_exit if exit_at_once else _record_and_raise)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # see `block_until_installed`


def block_until_installed() -> None:
    """Block both signals (before re-executing the process: the mask survives `exec`) so
    that one sent while the new image starts waits for `install`, which unblocks them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


def on_stop(report) -> None:
    """`report(signum)` prints the command's one line when a signal ends it at once."""
    global _stop_report
    _stop_report = report


def _report_and_exit(signum: int, frame) -> None:
    _record(signum)
    try:
        line = f"error: stopped by {signal_name(signum)}\n"
        restore_stderr()  # the signal may come while a checkpoint restore has it silenced
        try:
            if _stop_report is None:
                sys.stderr.write(line)
            else:
                _stop_report(signum)
        except BaseException:  # the signal came while the console was writing: the plain line
            sys.stderr.write(line)
        if sys.stderr.isatty():
            sys.stderr.write("\x1b[?25h")  # a progress bar may have hidden the cursor
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


def _record_only(signum: int, frame) -> None:
    if _received is not None:  # a second signal: the user means it, stop at once
        _record_and_raise(signum, frame)
    _record(signum)


@contextlib.contextmanager
def deferred():
    """While the body runs, SIGINT and SIGTERM are only recorded, for the body to poll
    `received()` at its safe points; a second one raises at once. Off the main thread,
    where no handler can be set, signals act as outside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _record_only) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
