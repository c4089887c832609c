"""Ctrl-C (SIGINT) and SIGTERM: never swallowed, always one line and exit code 128 + N.

Python raises KeyboardInterrupt wherever the main thread happens to be, and an
exception raised inside a finalizer or a garbage-collection callback (JAX has one) is
dropped, the interrupt with it. So every signal is also recorded (`received`): a
command that ran on after a dropped interrupt still ends with it. Where work must stop
at a safe point (training between chunks of steps, a batch of runs between polls)
`deferred()` only records the signal, and the work polls `received()`.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: int | None = None  # the first signal since `reset`


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


def reset() -> None:
    global _received
    _received = None


def _record(signum: int) -> None:
    global _received
    if _received is None:
        _received = signum


def _record_and_raise(signum: int, frame) -> None:
    _record(signum)
    raise Interrupted(signum)


def install() -> None:
    """Both signals raise `Interrupted` (and are recorded): SIGTERM too ends with cleanup
    and one line, where by default it ends the process on the spot, saying nothing."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _record_and_raise)


def _record_only(signum: int, frame) -> None:
    if _received is not None:  # a second signal: the user means it, stop at once
        raise Interrupted(signum)
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
