"""Train steps per second of one model per family in float32 and in bfloat16.

Each model trains through dlcli's own chunk (`DlcliSide`) with `training.precision`
float32 and bfloat16 at batch 64, the two alternating over several rounds; the table
gives each side's best round and the ratio. On a CPU without native bfloat16
arithmetic (AVX-512 BF16 or AMX), XLA converts to float32 around every product, so
the point here is what mixed precision costs on such a machine; on GPUs and TPUs
bfloat16 is the fast path (`benchmarks/accelerator_check.sh`).

    python benchmarks/precision.py [--rounds 3] [--steps 64]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

from _machine import FAMILY_MODELS, DlcliSide, print_header, rotated_rounds  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DLCLI_DATA_DIR", REPO.parent / "shared" / "data"))
PRECISIONS = ("float32", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=64, help="steps per round and precision (a multiple of 16)")
    args = parser.parse_args()
    print_header(f"MNIST, adding, copy_memory, ring8 from {DATA_DIR}; batch 64, 16 steps per dispatch")
    print(f"{'family':<20} {'precision':>9} {'steps/s':>9} {'samples/s':>10} {'vs float32':>10}  compile s")
    for family, overrides in FAMILY_MODELS.items():
        sides = {p: DlcliSide([*overrides, "training.batch_size=64", "training.steps_per_dispatch=16",
                               f"training.precision={p}"], DATA_DIR) for p in PRECISIONS}
        rates = rotated_rounds(sides, args.rounds, args.steps)
        best = {p: max(v) for p, v in rates.items()}
        for p in PRECISIONS:
            print(f"{family:<20} {p:>9} {best[p]:>9.1f} {best[p] * 64:>10.0f} {best[p] / best['float32']:>9.2f}x  "
                  f"{sides[p].exp.steps.compile_s:.2f}")
        jax.clear_caches()


if __name__ == "__main__":
    main()
