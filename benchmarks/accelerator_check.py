"""Steps per second and model FLOPs utilisation of `cnn_mnist` and the Transformer
character language model, in float32 and bfloat16, on one accelerator (the check behind
`benchmarks/accelerator_check.sh`).

Each experiment file trains through dlcli's own chunk (`DlcliSide`) as `dlcli train`
would, at its own batch size, the two precisions alternating over rounds; the table
gives the best round. The FLOPs of a step are XLA's count for the compiled chunk
(forward, backward and update) divided by its steps; the utilisation is that rate over
the device's dense bfloat16 peak (`PEAK_TFLOPS`, or --peak-tflops).

    python benchmarks/accelerator_check.py [--platform gpu] [--steps 256] [--rounds 3]

Without --data-dir (or DLCLI_DATA_DIR, or ../shared/data beside the repository), MNIST
and tiny shakespeare are random stand-ins of the same shapes: speed does not depend on
the values.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}  # dense bf16 tensor cores
EXPERIMENTS = {"cnn_mnist": "experiments/cnn_mnist.yaml",
               "charlm_transformer": "experiments/charlm_transformer_shakespeare.yaml"}
PRECISIONS = ("float32", "bfloat16")


def data_folder(given: str | None) -> tuple[Path, str]:
    """(the data folder, what it holds): the given or shared one, else random stand-ins."""
    for candidate in (given, os.environ.get("DLCLI_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist").is_dir() and (Path(candidate) / "tinyshakespeare").is_dir():
            return Path(candidate), f"MNIST and tiny shakespeare from {candidate}"
    from _machine import write_random_mnist, write_random_text

    folder = Path(tempfile.mkdtemp(prefix="dlcli-accelerator-"))
    write_random_mnist(folder / "mnist")
    write_random_text(folder / "tinyshakespeare" / "input.txt", 1_115_394)
    return folder, "random MNIST-shaped images and random text over tiny shakespeare's characters"


def peak_tflops(device_kind: str, given: float | None) -> float | None:
    if given:
        return given
    return next((peak for name, peak in PEAK_TFLOPS.items() if name in device_kind), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default="gpu", help="JAX platform (default gpu; cpu to try the script)")
    parser.add_argument("--steps", type=int, default=256, help="timed steps per round (a multiple of 16)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, if not listed")
    args = parser.parse_args()
    os.environ["JAX_PLATFORMS"] = args.platform
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    import jax

    from _machine import DlcliSide, print_header, rotated_rounds

    data_dir, described = data_folder(args.data_dir)
    device = jax.devices()[0]
    peak = peak_tflops(device.device_kind, args.peak_tflops)
    print_header(described, {"device": f"{device.device_kind} ({device.platform}), "
                                       f"dense bf16 peak {peak or 'unknown'} TFLOP/s"})
    print(f"{'experiment':<20} {'precision':>9} {'batch':>5} {'steps/s':>9} {'samples/s':>10} "
          f"{'GFLOP/step':>10} {'TFLOP/s':>8} {'MFU':>6}  compile s")
    for name, config in EXPERIMENTS.items():
        sides = {p: DlcliSide([f"training.precision={p}", "training.steps_per_dispatch=16"], data_dir, REPO / config)
                 for p in PRECISIONS}
        rates = rotated_rounds(sides, args.rounds, args.steps)
        for p, side in sides.items():
            best, batch = max(rates[p]), side.cfg.training.batch_size
            flops = side.exp.steps.flops("train")
            per_step = flops / side.per_dispatch if flops else float("nan")
            achieved = per_step * best / 1e12
            mfu = f"{achieved / peak:6.1%}" if peak and flops else "   n/a"
            print(f"{name:<20} {p:>9} {batch:>5} {best:>9.1f} {best * batch:>10.0f} {per_step / 1e9:>10.2f} "
                  f"{achieved:>8.2f} {mfu}  {side.exp.steps.compile_s:.2f}")
        jax.clear_caches()


if __name__ == "__main__":
    main()
