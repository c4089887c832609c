"""Several processes, one run: joining a `jax.distributed` job, who writes, and a lost peer.

Every process of a multi-process run executes the same program: it loads the data,
builds the same model and joins every compiled step, whose collectives (gloo between
CPU processes, NCCL between GPUs) span all processes' devices. Checkpoints are shared:
each process takes part in every Orbax save and restore, so the run folder must be on a
filesystem all processes see. Everything else the run leaves (config, metrics.jsonl,
TensorBoard, plots, the summary) is written by process 0 alone; the other processes
write theirs into a scratch folder of their own that is removed at the end.

A process that dies is noticed at once by the others: the connection each process keeps
to process 0 from the rendezvous (`_watch`) closes without the goodbye a finishing
process sends, and a collective it was part of fails (gloo reports the closed
connection, `peer_lost`); either way each other process stops with one line and exit
code 1, and `--resume` on every process continues the run from its last checkpoint.
When process 0 itself dies, JAX's client in the others, which polls process 0's
coordination service, may log its own lines ("the JAX distributed service detected
fatal errors") before that line.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from dlcli.errors import BadInput, DlcliError, report_line

HEARTBEAT_TIMEOUT_S = 20


class PeerLost(DlcliError):
    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How this process joins a job: the coordinator's host:port, the number of processes
    and this one's id (0 .. n-1), all three or none; `detect` lets JAX read them from the
    cluster's environment (Slurm, Open MPI, a TPU pod) instead. None of them: one process."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    detect: bool = False
    timeout_s: int = 300

    @property
    def explicit(self) -> bool:
        return (self.coordinator, self.num_processes, self.process_id) != (None, None, None)

    def check(self) -> None:
        if self.explicit and None in (self.coordinator, self.num_processes, self.process_id):
            raise BadInput("a multi-process run needs all of --coordinator HOST:PORT, --num-processes N and "
                           "--process-id I (or --distributed to read them from Slurm, Open MPI or a TPU pod)")
        if self.coordinator is not None and not re.fullmatch(r".+:\d{1,5}", self.coordinator):
            raise BadInput(f"--coordinator must be HOST:PORT (process 0's address), got {self.coordinator!r}")
        if self.num_processes is not None and self.num_processes < 1:
            raise BadInput(f"--num-processes must be at least 1, got {self.num_processes}")
        if self.process_id is not None and not 0 <= self.process_id < self.num_processes:
            raise BadInput(f"--process-id must be in 0..{self.num_processes - 1}, got {self.process_id}")
        if self.timeout_s < 1:
            raise BadInput(f"--init-timeout must be at least 1 second, got {self.timeout_s}")

    def join(self) -> None:
        """`jax.distributed.initialize` (before anything else touches a device); `BadInput`
        if the job cannot be formed within the timeout."""
        self.check()
        if not (self.explicit or self.detect):
            return
        import jax

        where = f"coordinator {self.coordinator}" if self.coordinator else "the cluster's environment"
        try:
            links = self._rendezvous() if self.explicit else []
            jax.distributed.initialize(self.coordinator, self.num_processes, self.process_id,
                                       initialization_timeout=self.timeout_s,
                                       heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
        except Exception as err:  # a timeout, a refused or malformed address, no cluster detected
            reason = " ".join(str(err).split())[:200]
            raise BadInput(f"could not join the multi-process run through {where} within {self.timeout_s} s "
                           f"({type(err).__name__}: {reason}); start every process with the same --coordinator "
                           "and --num-processes and a distinct --process-id, or raise --init-timeout") from None
        _watch(links)
        with _stdout_to_stderr():  # gloo announces its first connections on stdout, which --json owns
            barrier("joined")

    def _rendezvous(self) -> list[socket.socket]:
        """Wait, on the coordinator's port, until every process is there, before JAX's
        own start-up (which aborts the process, stack trace and all, when a peer never
        comes): process 0 listens and, once all others have connected, closes the port
        for JAX's coordination service and lets them go on. The connections stay open
        for `_watch`: process 0's to every other process, each other one's to process 0.
        `TimeoutError` after `timeout_s`; an `OSError` for an address that cannot be used."""
        host, _, port = self.coordinator.rpartition(":")
        deadline = time.monotonic() + self.timeout_s
        if self.process_id == 0:
            peers = []
            with socket.create_server(("", int(port))) as server:
                while len(peers) < self.num_processes - 1:
                    server.settimeout(max(deadline - time.monotonic(), 0.001))
                    try:
                        peers.append(server.accept()[0])
                    except socket.timeout:
                        for peer in peers:
                            peer.close()
                        raise TimeoutError(f"{len(peers) + 1} of {self.num_processes} processes came") from None
            for peer in peers:
                peer.settimeout(None)
                peer.sendall(b"go")
            return peers
        while True:
            link = None
            try:
                link = socket.create_connection((host, int(port)), timeout=max(deadline - time.monotonic(), 0.001))
                if link.recv(2) == b"go":
                    link.settimeout(None)
                    return [link]
            except OSError:
                pass
            if link is not None:
                link.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"process 0 did not answer on {self.coordinator}")
            time.sleep(0.2)


_leaving = threading.Event()


def _watch(links: list[socket.socket]) -> None:
    """Stop this process with one line, exit code 1, the moment a process it is linked to
    (process 0, or for process 0 every other) dies: its end of the rendezvous connection
    closes without the goodbye a process sends as it leaves normally. So a death outside
    a collective is seen at once, not after JAX's heartbeat timeout (whose abort prints a
    C++ stack trace)."""
    import jax

    where = f"process {jax.process_index()} of {jax.process_count()}"

    def watch(link: socket.socket) -> None:
        try:
            said = link.recv(3)
        except OSError:
            said = b""
        if said != b"bye" and not _leaving.is_set():
            # on a line of its own: a progress bar may be half drawn (this thread ends the process at once)
            report_line(f"\nerror: {where} lost another process of the run (it stopped without finishing); "
                        "restart every process with --resume to continue from the last checkpoint")
            os._exit(PeerLost.exit_code)

    def goodbye() -> None:
        _leaving.set()
        for link in links:
            with contextlib.suppress(OSError):
                link.sendall(b"bye")

    for link in links:
        threading.Thread(target=watch, args=(link,), daemon=True, name="dlcli-peer-watch").start()
    atexit.register(goodbye)  # before JAX's own shutdown barrier (atexit runs last-registered first)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 pointed at standard error (for what C++ libraries print)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def writes_outputs() -> bool:
    """Whether this process writes the run's files (process 0, or the only one)."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def decided_by_process_0(decision: bool) -> bool:
    """Process 0's `decision`, in every process (a collective; itself in a single process).
    For choices that hang on a clock, such as whether a checkpoint is due, which every
    process must make alike."""
    import jax
    import numpy as np

    if jax.process_count() == 1:
        return decision
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(decision)))


@contextlib.contextmanager
def outputs_folder(run_dir: Path) -> Iterator[Path]:
    """Where this process writes the run's files: `run_dir` for process 0, else a scratch
    folder of its own, removed afterwards."""
    if writes_outputs():
        yield Path(run_dir)
        return
    import jax

    scratch = Path(tempfile.mkdtemp(prefix=f"dlcli-process-{jax.process_index()}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def peer_lost() -> Iterator[None]:
    """A runtime error of a multi-process job (a collective or barrier that failed because
    another process died) as one line, exit code 1."""
    try:
        yield
    except Exception as err:
        import jax

        if jax.process_count() == 1 or isinstance(err, DlcliError) or "JaxRuntimeError" not in type(err).__name__:
            raise
        reason = " ".join(str(err).split())[:160]
        raise PeerLost(f"process {jax.process_index()} of {jax.process_count()} lost another process of the run "
                       f"({reason}); restart every process with --resume to continue from the last checkpoint") from None
