"""What dlcli's training chunk costs over a bare JAX step of the identical model.

For one model per family (batch 64, 16 steps per dispatch), two sides train the same
Flax model from the same initial state:

- `dlcli`: `CompiledSteps.train_chunk` as `dlcli train` runs it: batches gathered on the
  device from the epoch sampler's indices, the learning rate, every metric dlcli logs
  (loss, accuracy or the family's own, the gradient norm), fetched once per dispatch;
- `bare`: split once, one jitted `lax.scan` of the task's own update over batches staged
  on the device beforehand, the state donated, nothing returned but the state (so XLA
  drops every metric the update does not need).

The two alternate over rounds, the order rotating. Each side's GFLOP/s uses XLA's own
count of the floating-point operations of one bare step (`cost_analysis`), set against
this machine's float32 matrix-product rate measured here (1024 x 1024 products, both
cores). XLA counts a loop's body once, so for a model that loops inside its step (the
LSTM's scan over time) the count and the rates are lower bounds, marked `>=`. The ratio
is dlcli's steps/s over the bare side's (goal: >= 0.95).

    python benchmarks/overhead.py [--rounds 5] [--steps 64] [--families mlp,cnn,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from _machine import FAMILY_MODELS, DlcliSide, print_header, rotated_rounds  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DLCLI_DATA_DIR", REPO.parent / "shared" / "data"))
BATCH, PER_DISPATCH = 64, 16


class BareSide:
    """The task's update of `dlcli`'s model in a bare jitted scan over pre-staged batches."""

    label = "bare"

    def __init__(self, dlcli: DlcliSide):
        exp = dlcli.exp
        model, optimizer = nnx.merge(exp.steps.train_graphdef, exp.steps.state)
        self.graphdef, state = nnx.split((model, optimizer))
        self.state = jax.tree.map(jnp.copy, state)
        task, key = exp.steps.task, exp.steps.key
        indices = np.stack([dlcli.sampler.indices(s, PER_DISPATCH) for s in range(0, 4 * PER_DISPATCH, PER_DISPATCH)])
        gather = jax.jit(lambda a, i: a[i])
        # (4 dispatches, K, B, ...): the first batches of the run, staged once and reused
        self.batches = [(jax.tree.map(lambda a: gather(a, jnp.asarray(i)), exp.x_train), gather(exp.y_train, jnp.asarray(i)))
                        for i in indices]
        self.per_dispatch, self.dispatch = PER_DISPATCH, 0

        def one_step(state, inputs):
            x_batch, y_batch, step = inputs
            model, optimizer = nnx.merge(self.graphdef, state)
            task.update(model, optimizer, x_batch, y_batch, step, jax.random.fold_in(key, step))
            return nnx.state((model, optimizer)), None

        self._chunk = jax.jit(lambda state, x, y, steps: jax.lax.scan(one_step, state, (x, y, steps))[0],
                              donate_argnums=0)
        # XLA counts a loop's body once: one step on its own, and a model that loops
        # inside its step (a recurrent scan over time) gives a lower bound
        x, y = self.batches[0]
        step = jax.jit(lambda state, x, y: one_step(state, (x, y, jnp.int32(0)))[0]).lower(
            self.state, jax.tree.map(lambda a: a[0], x), y[0]).compile()
        self.flops_per_step = step.cost_analysis()["flops"]
        self.loops_inside = " while(" in step.as_text() or "while " in step.as_text()

    def run(self, n_steps: int) -> None:
        for _ in range(n_steps // self.per_dispatch):
            x, y = self.batches[self.dispatch % len(self.batches)]
            steps = jnp.arange(self.dispatch * PER_DISPATCH, (self.dispatch + 1) * PER_DISPATCH, dtype=jnp.int32)
            self.state = self._chunk(self.state, x, y, steps)
            self.dispatch += 1
        jax.block_until_ready(self.state)


def matmul_peak_gflops(size: int = 1024, repeats: int = 20) -> float:
    """The best float32 GFLOP/s of `size`-square matrix products on this machine."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    product = jax.jit(lambda a, b: a @ b)
    product(a, a).block_until_ready()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, a).block_until_ready()
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=64, help="timed steps per round and side (a multiple of 16)")
    parser.add_argument("--families", default=",".join(FAMILY_MODELS))
    args = parser.parse_args()
    from dlcli import allocator

    print_header(f"MNIST, adding, copy_memory, ring8 from {DATA_DIR}; batch {BATCH}, {PER_DISPATCH} steps per dispatch",
                 {"dlcli": f"allocator as the benchmark process started ({allocator.in_use()})"})
    peak = matmul_peak_gflops()
    print(f"float32 matrix-product peak: {peak:.1f} GFLOP/s (1024 x 1024, best of 20)\n")
    print(f"{'family':<20} {'dlcli steps/s':>13} {'bare steps/s':>12} {'ratio':>7} {'MFLOP/step':>11} "
          f"{'dlcli GFLOP/s':>13} {'bare GFLOP/s':>12} {'of peak':>8}  dlcli's metrics")
    for family in args.families.split(","):
        dlcli = DlcliSide([*FAMILY_MODELS[family], f"training.batch_size={BATCH}",
                           f"training.steps_per_dispatch={PER_DISPATCH}"], DATA_DIR)
        bare = BareSide(dlcli)
        rates = rotated_rounds({"dlcli": dlcli, "bare": bare}, args.rounds, args.steps)
        median = {side: statistics.median(values) for side, values in rates.items()}
        metrics = dlcli.exp.steps.train_chunk(dlcli.exp.x_train, dlcli.exp.y_train,
                                              dlcli.sampler.indices(0, PER_DISPATCH), 0)
        bound = ">=" if bare.loops_inside else ""
        flops = bare.flops_per_step
        figures = [f"{flops / 1e6:.1f}", f"{median['dlcli'] * flops / 1e9:.2f}", f"{median['bare'] * flops / 1e9:.2f}",
                   f"{median['bare'] * flops / 1e9 / peak:.1%}"]
        flop_cells = [f"{bound + text:>{width}}" for text, width in zip(figures, (11, 13, 12, 8))]
        print(f"{family:<20} {median['dlcli']:>13.1f} {median['bare']:>12.1f} {median['dlcli'] / median['bare']:>6.2f}x "
              + " ".join(flop_cells) + f"  {', '.join(sorted(metrics))}", flush=True)
        jax.clear_caches()


if __name__ == "__main__":
    main()
