"""Writing files so that no kill loses what is there: one writer per folder, and files
replaced whole.

`FolderLock`: an advisory lock (`flock`) on FOLDER/.dlcli.lock, which names the process
holding it (id, host, command, since when). The kernel drops a lock when the process holding it ends, however it ends (a kill, a
crash), so a lock file left behind by a dead process is simply taken over. The file
itself stays: removing it would let a process that opened it a moment earlier lock a
file that no longer names the folder's lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from dlcli.errors import BadInput

LOCK_NAME = ".dlcli.lock"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` at once with `text`: a reader (or a kill) sees the old file or the
    new one, never a part. The partial file is named after the host and the process, so
    processes sharing a folder never write the same one."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


class FolderLock:
    """The writer's lock on `folder`; `what` names the folder in messages ("run folder")."""

    def __init__(self, folder: Path, what: str):
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def check_free(self) -> None:
        """`BadInput` naming the holder if a live process holds the lock; changes nothing on disk."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # no lock file (or no folder): nobody writes there
            return
        try:
            self._lock_or_refuse(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def acquire(self) -> None:
        """Take the lock (creating the folder and the file), or `BadInput` naming its holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock_or_refuse(fd)
        except BaseException:
            os.close(fd)
            raise
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(["dlcli", *sys.argv[1:]])[:2000]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _lock_or_refuse(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInput(f"{self.what} {self.folder} is being written by {_describe_holder(fd)}; wait for it to "
                           "finish or stop it, or choose another folder") from None


def _describe_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
        return f"process {holder['pid']} on {holder['host']} ({holder['command']}, since {holder['since']})"
    except (ValueError, KeyError, TypeError, OSError):
        return "another process"
