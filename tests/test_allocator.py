"""The memory allocator dlcli picks for its processes (dlcli.allocator)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from dlcli import allocator

from conftest import REPO, TINY, cli_env, run_cli, sets


def test_a_dlcli_process_runs_with_tcmalloc_where_installed_and_the_same_results_under_every_choice(tmp_path):
    """While `dlcli train` runs (the same process id after re-executing), its memory map
    holds tcmalloc exactly when the machine has it and DLCLI_ALLOCATOR is auto; `glibc`
    and `system` never map it; every choice trains to the same metrics."""
    overrides = sets(*TINY, "model.width=16", "training.steps=400", "training.eval_every=20")
    summaries, mapped = {}, {}
    for choice in allocator.CHOICES:
        run_dir = tmp_path / choice
        process = subprocess.Popen([sys.executable, "-m", "dlcli", "train", "--run-dir", str(run_dir), *overrides, "--json"],
                                   env=cli_env(DLCLI_ALLOCATOR=choice), cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            maps = Path(f"/proc/{process.pid}/maps").read_text()
        except FileNotFoundError:  # it ended already
            maps = None
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert maps is not None, "the run ended before its memory map could be read"
        summaries[choice], mapped[choice] = json.loads(stdout), "tcmalloc" in maps
    assert mapped == {"auto": allocator.find_tcmalloc() is not None, "glibc": False, "system": False}
    assert summaries["auto"]["metrics"] == summaries["glibc"]["metrics"] == summaries["system"]["metrics"]


def test_glibc_malloc_keeps_freed_memory_once_told():
    """In a fresh process: `keep_freed_memory` sets glibc's thresholds (reported by
    `in_use`), and DLCLI_ALLOCATOR=system leaves malloc as it started."""
    script = "from dlcli import allocator; allocator.keep_freed_memory(); print(allocator.in_use())"
    for choice, expected in (("auto", "glibc malloc, freed memory kept (mallopt)"), ("system", "the system's malloc")):
        done = subprocess.run([sys.executable, "-c", script], env=cli_env(DLCLI_ALLOCATOR=choice), capture_output=True,
                              text=True, check=True)
        assert done.stdout.strip() == expected


def test_an_unknown_allocator_is_one_line_and_exit_2():
    result = run_cli("models", env=cli_env(DLCLI_ALLOCATOR="jemalloc"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: DLCLI_ALLOCATOR='jemalloc' is not one of auto, glibc, system; unset it for the default (auto)"]
