"""Train steps per second of one model per family on 1, 2 and 4 devices (data parallel).

The process gets 4 CPU devices (`--xla_force_host_platform_device_count=4`, set here
before JAX starts) and trains each model through dlcli's own chunk (`DlcliSide`) with
`parallel.data` = 1, 2 and 4 at the same global batch, in rotating order over several
rounds. On a CPU the fake devices share the same cores, so the point is the overhead
of splitting the batch and adding the gradients (the collectives), not a speed-up:
the ratio to one device is that overhead.

    python benchmarks/scaling.py [--rounds 3] [--steps 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

from _machine import FAMILY_MODELS, DlcliSide, print_header  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DLCLI_DATA_DIR", REPO.parent / "shared" / "data"))
PLACEMENTS = (1, 2, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=64, help="steps per round and placement (a multiple of 16)")
    args = parser.parse_args()
    print_header(f"MNIST, adding, copy_memory, ring8 from {DATA_DIR}; batch 64, 16 steps per dispatch")
    print(f"{'family':<20} {'devices':>7} {'steps/s':>9} {'samples/s':>10} {'vs 1 device':>11}  compile s")
    for family, overrides in FAMILY_MODELS.items():
        sides = {n: DlcliSide([*overrides, "training.batch_size=64", "training.steps_per_dispatch=16",
                               f"parallel.data={n}"], DATA_DIR) for n in PLACEMENTS}
        for side in sides.values():
            side.run(side.per_dispatch)  # compiles
        rates: dict[int, list[float]] = {n: [] for n in PLACEMENTS}
        for r in range(args.rounds):
            order = PLACEMENTS[r % len(PLACEMENTS):] + PLACEMENTS[: r % len(PLACEMENTS)]
            for n in order:
                start = time.perf_counter()
                sides[n].run(args.steps)
                rates[n].append(args.steps / (time.perf_counter() - start))
        best = {n: max(v) for n, v in rates.items()}
        for n in PLACEMENTS:
            print(f"{family:<20} {n:>7} {best[n]:>9.1f} {best[n] * 64:>10.0f} {best[n] / best[1]:>10.2f}x  "
                  f"{sides[n].exp.steps.compile_s:.2f}")
        jax.clear_caches()


if __name__ == "__main__":
    main()
