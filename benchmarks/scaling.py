"""Train steps per second of one model per family on 1, 2 and 4 devices and on 2 processes.

The process gets 4 CPU devices (`--xla_force_host_platform_device_count=4`, set here
before JAX starts) and trains each model through dlcli's own chunk (`DlcliSide`) with
`parallel.data` = 1, 2 and 4 at the same global batch, in rotating order over several
rounds. Then two processes of this script, one CPU device each, joined through
`jax.distributed` on 127.0.0.1 (gloo collectives), train the same model at the same
global batch (`--member`), and the 1-device rounds are repeated after them. On a CPU
the devices and processes share the same cores, so the point is the overhead of
splitting the batch and adding the gradients (the collectives, in process or over TCP
between processes), not a speed-up: the ratio to one device is that overhead.

    python benchmarks/scaling.py [--rounds 3] [--steps 64]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

if "--member" not in sys.argv:  # a member of the 2-process run has one device
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

from _machine import FAMILY_MODELS, DlcliSide, print_header, rotated_rounds, timed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DLCLI_DATA_DIR", REPO.parent / "shared" / "data"))
PLACEMENTS = (1, 2, 4)


def side(family: str, data: int | str) -> DlcliSide:
    return DlcliSide([*FAMILY_MODELS[family], "training.batch_size=64", "training.steps_per_dispatch=16",
                      f"parallel.data={data}"], DATA_DIR)


def member(args) -> None:
    """One process of the 2-process run: join, compile, time `rounds` rounds; process 0
    prints {"rates": [...], "compile_s": ...} as JSON."""
    from dlcli.training.distributed import Cluster

    Cluster(args.coordinator, 2, args.member, timeout_s=120).join()
    trained = side(args.family, "auto")
    trained.run(trained.per_dispatch)  # compiles
    rates = [timed(trained, args.steps) for _ in range(args.rounds)]
    if args.member == 0:
        print(json.dumps({"rates": rates, "compile_s": trained.exp.steps.compile_s}))


def two_processes(family: str, rounds: int, steps: int) -> dict:
    """The 2-process run of `family`: process 0's result."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        coordinator = f"127.0.0.1:{s.getsockname()[1]}"
    command = [sys.executable, __file__, "--family", family, "--rounds", str(rounds), "--steps", str(steps),
               "--coordinator", coordinator, "--member"]
    processes = [subprocess.Popen([*command, str(i)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for i in range(2)]
    outputs = [p.communicate()[0] for p in processes]
    return json.loads(outputs[0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=64, help="steps per round and placement (a multiple of 16)")
    parser.add_argument("--member", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--family", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.member is not None:
        return member(args)
    print_header(f"MNIST, adding, copy_memory, ring8 from {DATA_DIR}; batch 64, 16 steps per dispatch")
    print(f"{'family':<20} {'devices':>7} {'steps/s':>9} {'samples/s':>10} {'vs 1 device':>11}  compile s")
    for family in FAMILY_MODELS:
        sides = {n: side(family, n) for n in PLACEMENTS}
        rates = rotated_rounds(sides, args.rounds, args.steps)
        processes = two_processes(family, args.rounds, args.steps)
        rates[1] += [timed(sides[1], args.steps) for _ in range(args.rounds)]
        best = {n: max(v) for n, v in rates.items()}
        for n in PLACEMENTS:
            print(f"{family:<20} {n:>7} {best[n]:>9.1f} {best[n] * 64:>10.0f} {best[n] / best[1]:>10.2f}x  "
                  f"{sides[n].exp.steps.compile_s:.2f}")
        two = max(processes["rates"])
        print(f"{family:<20} {'2 proc':>7} {two:>9.1f} {two * 64:>10.0f} {two / best[1]:>10.2f}x  "
              f"{processes['compile_s']:.2f}")
        jax.clear_caches()

if __name__ == "__main__":
    main()
