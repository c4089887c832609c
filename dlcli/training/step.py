"""The compiled steps: a chunk of train steps in one dispatch, and a whole-split eval.

Following Flax's performance guide, the model and optimizer are split once into a
static graph definition and a state pytree; each compiled function merges them inside
the trace, so no Python object graph is walked per step. The train chunk is a
`lax.scan` over K steps whose batches are gathered on the device from index arrays,
with the state donated so its buffers are updated in place. Executables are compiled
ahead of time, once per shape, and the time spent compiling is counted apart.

Every array lives on the run's device mesh (`dlcli.training.parallel`): the batch of each
step is split along the data axis and the state replicated (or split, with FSDP), so
one program serves one device and many; XLA adds the gradient all-reduce.

A run may declare a `program_key`: everything its traced functions depend on besides
their arguments (its config less name and seed, the dataset's description, the step
count, the referenced runs' configs, the task). Runs of one process with equal keys
share their executables, so a comparison's seeds, a worker's repeated configs or a
resumed run are traced and compiled once; the last `SHARED_PROGRAMS` stay.
"""

from __future__ import annotations

import collections
import time
from typing import Hashable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dlcli.checkpoint import on_host
from dlcli.data import num_examples
from dlcli.tasks import Task
from dlcli.training.parallel import Placement


SHARED_PROGRAMS = 16
_shared: collections.OrderedDict[tuple, jax.stages.Compiled] = collections.OrderedDict()


class CompiledSteps:
    """Holds the training state and the compiled functions that advance and measure it."""

    def __init__(self, model: nnx.Module, optimizer: nnx.Optimizer, task: Task, schedule: optax.Schedule, seed: int,
                 placement: Placement, program_key: Hashable | None = None):
        self.task = task
        self.placement = placement
        self.program_key = program_key  # None: this run's executables are its own
        self.schedule = schedule
        self.key = placement.put_state(jax.random.key(seed))
        self.train_graphdef, state = nnx.split((model, optimizer))
        # committed to the mesh as a restored checkpoint's arrays are, so a fresh and a
        # resumed run lower to the same program (and share its compilation cache entry)
        self.state = placement.put_state(state)
        self._state_shardings = placement.state_shardings(self.state)
        model.eval()
        self.eval_graphdef, _ = nnx.split((model, optimizer))
        model.train()
        self.compile_s = 0.0
        self._executables: dict[tuple, jax.stages.Compiled] = {}
        self._train_chunk = jax.jit(self._train_chunk_fn, donate_argnums=0)
        self._eval_batches = jax.jit(self._eval_batches_fn)
        self._gradient_flow = jax.jit(self._gradient_flow_fn)

    # ----- traced functions -------------------------------------------------------
    def _train_chunk_fn(self, state, x, y, batch_indices, steps, key):
        """state; x (N, ...), y (N, ...) on device; batch_indices (K, B); steps (K,)
        -> new state and metrics, each of shape (K,)."""

        def one_step(state, inputs):
            indices, step = inputs
            model, optimizer = nnx.merge(self.train_graphdef, state)
            dropout_key = jax.random.fold_in(key, step)
            x_batch, y_batch = self._split_rows(jax.tree.map(lambda a: a[indices], (x, y)))

            metrics = self.task.update(model, optimizer, x_batch, y_batch, step, dropout_key)
            metrics = {**metrics, "lr": jnp.asarray(self.schedule(step))}
            return self._laid_out(nnx.state((model, optimizer))), metrics

        if batch_indices.shape[0] == 1:  # a lone step runs outside a scan, where XLA compiles it better
            state, metrics = one_step(state, (batch_indices[0], steps[0]))
            return state, jax.tree.map(lambda a: a[None], metrics)
        return jax.lax.scan(one_step, state, (batch_indices, steps))

    def _split_rows(self, batch):
        """A batch gathered on the device, its rows split over the data axis (one device: as it is)."""
        if self.placement.data_size == 1:
            return batch
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, self.placement.split(0)), batch)

    def _laid_out(self, state):
        """The updated state kept in its configured layout (one device: as it is)."""
        if self.placement.data_size == 1:
            return state
        return jax.lax.with_sharding_constraint(state, self._state_shardings)

    def _eval_batches_fn(self, state, x, y, mask, index):
        """x (NB, B, ...), y (NB, B, ...), mask and example index (NB, B) -> the task's sums over all rows."""
        model, _ = nnx.merge(self.eval_graphdef, state)
        per_batch = jax.lax.map(lambda b: self.task.eval_sums(self.task.evaluation_outputs(model, b[0], b[3]), b[1], b[2]),
                                (x, y, mask, index))
        return jax.tree.map(lambda a: a.sum(axis=0), per_batch)

    def _gradient_flow_fn(self, state, x, y):
        """One batch -> (T,): the norm, over the batch and the units, of d(loss)/d(h_t) at
        every step t of the top recurrent layer (a zero probe added to h_t is differentiated)."""
        model, _ = nnx.merge(self.eval_graphdef, state)
        inputs = x["inputs"]
        probe = jnp.zeros((inputs.shape[0], inputs.shape[1], model.hidden))
        grads = jax.grad(lambda p: self.task.loss(model(x, probe=p), y, 0)[0])(probe)  # (B, T, H)
        return jnp.sqrt(jnp.sum(grads**2, axis=(0, 2)))

    # ----- host-side entry points ---------------------------------------------------
    def _compiled(self, name: str, jitted, *args) -> jax.stages.Compiled:
        shapes = (name,) + tuple(tuple(getattr(leaf, "shape", None) for leaf in jax.tree.leaves(a)) for a in args[1:])
        if shapes not in self._executables:
            self._executables[shapes] = self._shared_or_compiled(shapes, jitted, args)
        return self._executables[shapes]

    def _shared_or_compiled(self, shapes: tuple, jitted, args: tuple) -> jax.stages.Compiled:
        """The executable another run of this process compiled under the same program key
        and argument types, else a fresh compilation (shared from then on)."""
        key = None
        if self.program_key is not None:
            types = tuple((np.shape(leaf), str(leaf.dtype), getattr(leaf, "weak_type", False),
                           str(getattr(leaf, "sharding", None))) for leaf in jax.tree.leaves(args))
            key = (self.program_key, shapes, jax.tree.structure(args), types)
            if key in _shared:
                _shared.move_to_end(key)
                return _shared[key]
        start = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        self.compile_s += time.perf_counter() - start
        if key is not None:
            _shared[key] = compiled
            while len(_shared) > SHARED_PROGRAMS:
                _shared.popitem(last=False)
        return compiled

    @property
    def compiled_shapes(self) -> list[tuple]:
        return list(self._executables)

    def flops(self, name: str = "train") -> float | None:
        """XLA's count of floating-point operations in the first compiled `name` program
        (for train: one chunk of steps), None before it is compiled or where the backend
        does not count (for a benchmark's model FLOPs utilisation)."""
        compiled = next((exe for shapes, exe in self._executables.items() if shapes[0] == name), None)
        analysis = compiled.cost_analysis() if compiled is not None else None
        analysis = analysis[0] if isinstance(analysis, (list, tuple)) and analysis else analysis
        return float(analysis["flops"]) if analysis and "flops" in analysis else None

    def train_chunk(self, x: jax.Array, y: jax.Array, batch_indices: np.ndarray, first_step: int) -> dict[str, np.ndarray]:
        """Run len(batch_indices) steps starting at global step `first_step`."""
        place = self.placement
        steps = place.put(np.arange(first_step, first_step + len(batch_indices), dtype=np.int32), place.replicated())
        args = (self.state, x, y, place.put(batch_indices, place.split(1)), steps, self.key)
        self.state, metrics = self._compiled("train", self._train_chunk, *args)(*args)
        return on_host(metrics)

    def evaluate(self, batches: "EvalBatches") -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """The task's metrics over one staged split, and the raw sums (for a confusion matrix)."""
        args = (self.state, batches.x, batches.y, batches.mask, batches.index)
        sums = on_host(self._compiled("eval", self._eval_batches, *args)(*args))
        return self.task.finalize(sums), sums

    def gradient_flow(self, batches: "EvalBatches") -> np.ndarray:
        """(T,) norms of d(loss)/d(h_t) on the first batch of a staged split."""
        x, y = jax.tree.map(lambda a: a[0], batches.x), batches.y[0]
        args = (self.state, x, y)
        return np.asarray(on_host(self._compiled("gradient_flow", self._gradient_flow, *args)(*args)))


class EvalBatches:
    """One split staged on the mesh as (NB, B, ...) (every array of a dict of inputs)
    with a mask for the padding rows and each row's example index (from `first_index`);
    each batch's rows are split over the data axis, B rounded up to a multiple of its size."""

    def __init__(self, x, y: np.ndarray, batch_size: int, placement: Placement, first_index: int = 0):
        n = num_examples(x)
        batch_size = -(-min(batch_size, n) // placement.data_size) * placement.data_size
        n_batches = -(-n // batch_size)
        pad = n_batches * batch_size - n
        self.size = n

        def stage(a):
            padded = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a
            return placement.put(padded.reshape(n_batches, batch_size, *a.shape[1:]), placement.split(1))

        self.x, self.y = jax.tree.map(stage, x), stage(y)
        self.mask = stage(np.ones(n, np.float32))  # the zero padding rows are masked out
        self.index = stage(np.arange(first_index, first_index + n, dtype=np.int32))
