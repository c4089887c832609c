"""The two kinds of failure the CLI reports without a traceback.

`BadInput` (exit code 2) is raised before any work starts, for anything the user can fix
in a config, a flag or a file. `TrainingFailure` (exit code 1) is raised when a run that
started cannot go on (a NaN loss, say). Messages are one line naming the problem and
the fix.
"""

import contextlib
import errno
import os
import sys

_stderr_fd = 2  # where `report_line` writes; a private copy after `stderr_silenced_on_failure` failed
_silenced_now: int | None = None  # the real standard error's copy while a `stderr_silenced_on_failure` body runs


class DlcliError(Exception):
    exit_code = 1


class BadInput(DlcliError):
    exit_code = 2


class TrainingFailure(DlcliError):
    exit_code = 1


_OS_ERROR_FIXES = {
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "that file system is read-only; choose a path on a writable disk",
    errno.ENOSPC: "free some space, then rerun the command (with --resume for dlcli train)",
    errno.EDQUOT: "free some space, then rerun the command (with --resume for dlcli train)",
    errno.EISDIR: "that is a folder where a file is expected; give a file's path",
    errno.ENOTDIR: "part of that path is a file where a folder is expected; choose another path",
    errno.ENOENT: "check that the path exists",
    errno.EEXIST: "something is already there; choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
}
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(err: BaseException) -> str | None:
    """What the system said if `err`, or an error it was raised from (Orbax wraps the
    errors of its writing threads), is a full disk or quota; None otherwise."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            return (err.strerror or "no space left").lower()
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return "no space left on device"
        err = err.__cause__ or err.__context__
    return None


def describe_os_error(err: OSError) -> str:
    """One line for a file-system error the code did not foresee: the path, what the
    system said, and what to do about it."""
    where = err.filename if err.filename is not None else "a file"
    reason = err.strerror or str(err)
    return f"{where}: {reason.lower()}; {_OS_ERROR_FIXES.get(err.errno, 'check the path and try again')}"


def report_line(line: str) -> None:
    """Write one line to standard error (`sys.stderr`, so an in-process caller can
    capture it), or to the private copy of the real one after a silenced failure."""
    if _stderr_fd == 2:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    else:
        os.write(_stderr_fd, (line + "\n").encode())


@contextlib.contextmanager
def stderr_silenced_on_failure():
    """Run the body with file descriptor 2 pointed at /dev/null. If it succeeds, fd 2 is
    put back; if it raises, fd 2 stays silenced and `report_line` writes to a private
    copy of the real standard error.

    For checkpoint restores: when a read fails, TensorStore can still finish other reads
    on its own threads and call back into Orbax's event loop after it has closed, and
    those callbacks print tracebacks straight to fd 2, during the failing call and
    after it. The command then ends with one line from `report_line`."""
    global _stderr_fd
    if _stderr_fd != 2:  # silenced by an earlier failure: stays so
        yield
        return
    global _silenced_now
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _silenced_now = saved
    try:
        yield
    except BaseException:
        _stderr_fd = saved
        raise
    finally:
        _silenced_now = None
    os.dup2(saved, 2)
    os.close(saved)


def restore_stderr() -> None:
    """Point fd 2 back at the real standard error after a silenced failure that the
    command recovered from (a damaged checkpoint passed over for an older one), or at
    once, inside the silenced body, for a signal's one line before the process exits."""
    global _stderr_fd
    if _silenced_now is not None:
        os.dup2(_silenced_now, 2)
    elif _stderr_fd != 2:
        os.dup2(_stderr_fd, 2)
        os.close(_stderr_fd)
        _stderr_fd = 2
