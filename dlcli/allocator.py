"""The memory allocator, chosen before JAX starts.

XLA's CPU runtime allocates its large temporaries with malloc and frees them on every
step. glibc's malloc hands such blocks back to the kernel (above its mmap and trim
thresholds), so the next step page-faults them in again. dlcli therefore prefers, at
the start of every command and worker process:

- tcmalloc, where the machine has it (Debian's `libtcmalloc-minimal4` or
  `libgoogle-perftools4`): the command re-executes itself once with it preloaded
  (`LD_PRELOAD`), before anything is imported;
- else glibc's malloc told to keep freed memory (`mallopt`: mmap threshold at its
  32 MiB maximum, trim threshold 1 GiB, top pad 256 MiB), so a step reuses the previous
  step's pages.

`DLCLI_ALLOCATOR` chooses: `auto` (the default: the above), `glibc` (no tcmalloc even
where installed), `system` (the process as it started). An `LD_PRELOAD` already set is
left alone. Which allocator ran changes the speed, not a value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
TCMALLOC_FOLDERS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                    "/usr/local/lib")
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters
MALLOPT_SETTINGS = (
    (M_MMAP_THRESHOLD, 32 << 20),  # glibc's ceiling on 64-bit machines: blocks below it come from the heap
    (M_TRIM_THRESHOLD, 1 << 30),  # freed memory at the heap's top stays mapped up to 1 GiB
    (M_TOP_PAD, 256 << 20),  # the heap grows in 256 MiB steps of address space (pages count once touched)
)
_REEXECUTED = "DLCLI_ALLOCATOR_CHOSEN"  # set before re-executing, so it happens once at most
CHOICES = ("auto", "glibc", "system")
_tuned = False


def choice() -> str:
    """DLCLI_ALLOCATOR, checked: one of CHOICES."""
    value = os.environ.get("DLCLI_ALLOCATOR", "auto")
    if value not in CHOICES:
        from dlcli.errors import BadInput

        raise BadInput(f"DLCLI_ALLOCATOR={value!r} is not one of {', '.join(CHOICES)}; unset it for the default (auto)")
    return value


def find_tcmalloc() -> str | None:
    """The path of an installed tcmalloc library, or None."""
    for folder in TCMALLOC_FOLDERS:
        for name in TCMALLOC_NAMES:
            if (Path(folder) / name).is_file():
                return str(Path(folder) / name)
    return None


def in_use() -> str:
    """What allocates this process's memory, in words (for summaries and benchmark headers)."""
    for line in Path("/proc/self/maps").read_text().splitlines() if Path("/proc/self/maps").exists() else []:
        if "tcmalloc" in line or "jemalloc" in line:
            return f"preloaded {Path(line.split()[-1]).name}"
    return "glibc malloc, freed memory kept (mallopt)" if _tuned else "the system's malloc"


def preload_tcmalloc(argv: list[str]) -> None:
    """Re-execute this command with tcmalloc preloaded, where it is installed and wanted;
    returns (doing nothing) otherwise. Call before importing anything large."""
    if choice() != "auto" or os.environ.get(_REEXECUTED) or os.environ.get("LD_PRELOAD"):
        return
    library = find_tcmalloc()
    if library is None or not sys.platform.startswith("linux"):
        return
    env = {**os.environ, "LD_PRELOAD": library, _REEXECUTED: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    from dlcli import interrupts

    interrupts.block_until_installed()  # a signal during the exec waits for the new image's handlers
    os.execve(sys.executable, [sys.executable, "-m", "dlcli", *argv], env)


def keep_freed_memory() -> None:
    """Where glibc's malloc serves this process (no tcmalloc), raise its mmap and trim
    thresholds so freed temporaries stay for the next step. Safe to call more than once."""
    if choice() == "system" or "preloaded" in in_use() or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has no mallopt of these)
    except (OSError, AttributeError):
        return
    global _tuned
    _tuned = all(libc.mallopt(parameter, value) for parameter, value in MALLOPT_SETTINGS)
