"""Where a run's arrays live: a one-axis device mesh for data parallelism.

Every run, on one device or many, uses the same `Placement`: a `jax.sharding.Mesh`
with one axis, `data`, over the devices `parallel.data` asks for (every device every
process sees, by default). The training data and (by default) the model and optimizer
state are replicated over the mesh; each global batch is split along the data axis, so
every device computes the loss of its rows and XLA inserts the all-reduce of the
gradients. With `parallel.fsdp` each parameter and optimizer array is split along the
data axis too (its largest dimension that divides by the data size; small ones stay
replicated), and XLA gathers them where the step needs them.

The mesh's axis is `AxisType.Auto` (JAX 0.10's `jax.make_mesh` would make it
Explicit, under which gathering a batch by index needs an explicit out-sharding):
the shardings of the inputs and a few `with_sharding_constraint`s fix the layout, and
XLA's propagation does the rest.

Arrays are made with `jax.make_array_from_callback`, which asks each process only for
the pieces its own devices hold: the same code places data in one process and across
hosts, and never transfers a global array from one host.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from dlcli.errors import BadInput

DATA_AXIS = "data"


@dataclasses.dataclass(frozen=True)
class Placement:
    """The mesh of a run and the shardings of its arrays."""

    mesh: Mesh
    fsdp: bool = False

    @classmethod
    def for_config(cls, parallel) -> "Placement":
        """The placement `parallel` (a `ParallelConfig`) asks for; `BadInput` for more
        devices than exist, or a subset of them when several processes run."""
        devices = jax.devices()
        wanted = len(devices) if parallel.data == "auto" else parallel.data
        if wanted > len(devices):
            raise BadInput(f"parallel.data is {wanted} but only {len(devices)} {devices[0].platform} device(s) are "
                           f"visible; set parallel.data to at most {len(devices)} (or auto)")
        if jax.process_count() > 1 and wanted != len(devices):
            raise BadInput(f"parallel.data is {wanted} but the {jax.process_count()} processes hold {len(devices)} "
                           "devices; a multi-process run uses all of them: set parallel.data: auto")
        mesh = Mesh(np.asarray(devices[:wanted]), (DATA_AXIS,), axis_types=(AxisType.Auto,))
        return cls(mesh, fsdp=parallel.fsdp)

    @property
    def data_size(self) -> int:
        return self.mesh.devices.size

    def describe(self) -> dict:
        """What ran, for the summary: processes, devices along the data axis, their kind."""
        device = self.mesh.devices.flat[0]
        return {"processes": jax.process_count(), "devices": self.data_size, "platform": device.platform,
                "device_kind": device.device_kind, "fsdp": self.fsdp}

    # ----- shardings ------------------------------------------------------------------------
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def split(self, axis: int) -> NamedSharding:
        """Rows split along dimension `axis` over the data axis, the rest replicated."""
        return NamedSharding(self.mesh, PartitionSpec(*([None] * axis), DATA_AXIS))

    def state_sharding(self, leaf) -> NamedSharding:
        """Replicated, or with `fsdp` split along the leaf's largest dimension that divides
        by the data size (ties: the first); scalars and indivisible arrays stay replicated."""
        shape = np.shape(leaf)
        if not self.fsdp or self.data_size == 1:
            return self.replicated()
        divisible = [axis for axis, size in enumerate(shape) if size % self.data_size == 0 and size >= self.data_size]
        if not divisible:
            return self.replicated()
        return self.split(max(divisible, key=lambda axis: (shape[axis], -axis)))

    def state_shardings(self, state):
        return jax.tree.map(self.state_sharding, state)

    # ----- placing arrays -------------------------------------------------------------------
    def put(self, array, sharding: NamedSharding) -> jax.Array:
        """A global array from the same host array present in every process."""
        array = np.asarray(array)
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    def put_replicated(self, tree):
        return jax.tree.map(lambda a: self.put(a, self.replicated()), tree)

    def put_state(self, state):
        """The training state (built in this process) laid out as configured; typed PRNG
        keys, which have no host form, travel as their key data and stay replicated."""
        def place(leaf, sharding):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                data = self.put(jax.random.key_data(leaf), self.replicated())
                return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
            return self.put(leaf, sharding)

        return jax.tree.map(place, state, self.state_shardings(state))

    def check_batch(self, batch_size: int, option: str) -> None:
        if batch_size % self.data_size:
            raise BadInput(f"{option} {batch_size} does not divide by the {self.data_size} devices of the data axis; "
                           f"use a multiple of {self.data_size} or set parallel.data")
