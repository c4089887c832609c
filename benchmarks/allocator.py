"""Train steps per second of one model per family under each memory allocator dlcli can pick.

An allocator is chosen when a process starts, so every (round, allocator) is a fresh
process that trains each model through dlcli's own chunk (`DlcliSide`, batch 64, 16
steps per dispatch): a warm-up chunk (the compilation), then `--steps` timed steps. The
allocators, their order rotating each round:

- `system`: the process as it starts (`DLCLI_ALLOCATOR=system`): glibc's malloc as is;
- `glibc`: glibc's malloc keeping freed memory (`dlcli.allocator.keep_freed_memory`,
  what dlcli does where tcmalloc is not installed);
- `tcmalloc`: tcmalloc preloaded (what dlcli does where it is installed; skipped when it
  is not: `apt-get install libtcmalloc-minimal4`).

The table gives the median steps/s over rounds, the ratio to `system`, the minor page
faults per timed step (memory the kernel had to map in again: what the allocators
differ in, and unlike time not disturbed by other processes), and whether the trained
parameters were bit-identical under every allocator.

    python benchmarks/allocator.py [--rounds 3] [--steps 64] [--families mlp,cnn,...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from dlcli import allocator  # noqa: E402  (no JAX)

DATA_DIR = Path(os.environ.get("DLCLI_DATA_DIR", REPO.parent / "shared" / "data"))


def child(mode: str, families: list[str], steps: int) -> None:
    """In a fresh process: set up `mode`, train each family; one JSON line per family."""
    if mode == "glibc":
        allocator.keep_freed_memory()
    import jax
    import numpy as np

    from _machine import FAMILY_MODELS, DlcliSide, timed

    for family in families:
        side = DlcliSide([*FAMILY_MODELS[family], "training.batch_size=64", "training.steps_per_dispatch=16"], DATA_DIR)
        side.run(side.per_dispatch)
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rate = timed(side, steps)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / steps
        digest = hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in jax.tree.leaves(side.exp.steps.state)))
        print(json.dumps({"family": family, "steps_per_s": rate, "page_faults_per_step": faults, "state": digest.hexdigest()[:16],
                          "allocator": allocator.in_use()}), flush=True)
        jax.clear_caches()


def run_child(mode: str, families: list[str], steps: int) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "DLCLI_ALLOCATOR")}
    if mode == "system":
        env["DLCLI_ALLOCATOR"] = "system"
    if mode == "tcmalloc":
        env["LD_PRELOAD"] = allocator.find_tcmalloc()
    done = subprocess.run([sys.executable, __file__, "--child", mode, "--families", ",".join(families),
                           "--steps", str(steps)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the {mode} process failed: {done.stderr.strip()[-600:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=64, help="timed steps per model and process (a multiple of 16)")
    parser.add_argument("--families", default="mlp,cnn,lstm,transformer_decoder,vae,gan")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    families = args.families.split(",")
    if args.child:
        child(args.child, families, args.steps)
        return
    from _machine import print_header

    modes = ["system", "glibc"] + (["tcmalloc"] if allocator.find_tcmalloc() else [])
    print_header(f"MNIST, adding, copy_memory, ring8 from {DATA_DIR}; batch 64, 16 steps per dispatch",
                 {"tcmalloc": allocator.find_tcmalloc() or "not installed"})
    results: dict[str, list[list[dict]]] = {mode: [] for mode in modes}
    for r in range(args.rounds):
        for mode in modes[r % len(modes):] + modes[: r % len(modes)]:
            results[mode].append(run_child(mode, families, args.steps))
            rates = ", ".join(f"{row['family']} {row['steps_per_s']:.1f}" for row in results[mode][-1])
            print(f"  round {r + 1} {mode:<8} ({results[mode][-1][0]['allocator']}): {rates}", flush=True)
    print(f"\n{'family':<20}" + "".join(f"{mode + ' steps/s':>18}" for mode in modes)
          + "".join(f"{mode + ' / system':>18}" for mode in modes[1:])
          + "".join(f"{mode + ' faults':>16}" for mode in modes) + "  same parameters")
    for i, family in enumerate(families):
        median = {mode: statistics.median(run[i]["steps_per_s"] for run in results[mode]) for mode in modes}
        states = {run[i]["state"] for mode in modes for run in results[mode]}
        print(f"{family:<20}" + "".join(f"{median[m]:>18.1f}" for m in modes)
              + "".join(f"{median[m] / median['system']:>17.2f}x" for m in modes[1:])
              + "".join(f"{statistics.median(run[i]['page_faults_per_step'] for run in results[m]):>16.0f}" for m in modes)
              + f"  {'yes' if len(states) == 1 else 'NO'}")


if __name__ == "__main__":
    main()
