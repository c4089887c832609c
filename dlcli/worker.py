"""A long-lived worker process of `compare` and `sweep`: JAX starts once, jobs run one after another.

`python -m dlcli.worker PARENT_PID` reads one JSON request a line on stdin,
`{"args": [...], "stdout": PATH, "stderr": PATH}`, runs `dlcli ARGS` in this process
(`dlcli.cli.run`, what the console script runs), with the command's stdout and stderr
written to those two files, and answers `{"code": N}` on a line of its own stdout. A
job's run folder and figures are those of the same `dlcli train` in a fresh process.

An exception that escapes a command (a bug, not a bad input: those are exit codes)
is written to the job's stderr and ends the worker with code 1, so the next job gets a
fresh process; so does any crash, which the parent sees as the end of the pipe, and a
job that SIGINT (the batch stopping a pruned job or one past its time limit) stopped
anywhere but at a safe point of training: the signal may have cut an import in half
(a later job then found `jax` without `jax.core`), so the worker ends unanswered. A
worker whose parent is gone (killed, its machine's sweep process lost) ends at once,
even in the middle of a job, so no orphan goes on writing a run folder that a shared
sweep may have handed to another process.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
import traceback

from dlcli import allocator, interrupts


def serve(requests, replies) -> None:
    """Answer every request line of `requests` on `replies` until end of input."""
    from dlcli.cli import run

    own_stdout, own_stderr = sys.stdout, sys.stderr
    for line in requests:
        request = json.loads(line)
        with open(request["stdout"], "w") as out, open(request["stderr"], "w") as err:
            sys.stdout, sys.stderr = out, err
            try:
                code = run(request["args"])
            except BaseException:  # noqa: BLE001  (reported to the parent, then this process ends)
                traceback.print_exc()
                code = None
            finally:
                sys.stdout, sys.stderr = own_stdout, own_stderr
        if interrupts.raised_mid_work():
            os._exit(1)
        if code is None:
            replies.write(json.dumps({"code": 1}) + "\n")
            replies.flush()
            os._exit(1)
        _forget_compiled_programs()
        replies.write(json.dumps({"code": code}) + "\n")
        replies.flush()


def _forget_compiled_programs() -> None:
    """Free what the finished job traced and JAX cached, so a worker's memory does not
    grow job by job. The last few executables stay (`dlcli.training.step.SHARED_PROGRAMS`),
    for a next job with the same program key (another seed of the same config); the
    persistent compilation cache, where on, still holds the rest."""
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()


def _exit_with_parent(parent: int) -> None:
    """A daemon thread that ends this process (exit code 1) once `parent`, the process
    that started it, is no longer its parent: given by the parent itself, because a
    parent killed while this one still imports has handed it to another already."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def main() -> None:
    # SIGINT raises `Interrupted` and is recorded (`interrupts.raised_mid_work`); SIGTERM,
    # with which the batch ends its workers, keeps ending this process on the spot
    interrupts.install(signals=(signal.SIGINT,))
    _exit_with_parent(int(sys.argv[1]))
    allocator.keep_freed_memory()  # tcmalloc, where chosen, came preloaded with the parent's environment
    # Replies go to a private copy of stdout; file descriptor 1 itself is pointed at
    # stderr, so nothing printed below Python (XLA, absl) can corrupt the protocol.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
