"""Mixed precision: compute in bfloat16, keep parameters, optimizer state and the loss in float32.

A task differentiates its loss with respect to the float32 parameters as always; inside
the differentiated function, `computing_in` gives a copy of the module whose parameters
are cast to the compute dtype and whose Flax layers compute in it (their `dtype`), and
`lowered` casts the floating inputs. The forward pass then runs in that dtype, the
cast's gradient brings each parameter's gradient back to float32, and the optimizer
updates float32 parameters. Batch-norm statistics stay float32, and the copy's are
written back to the module; `raised` casts the outputs to float32 before the loss.
bfloat16 has float32's exponent range, so no loss scaling is needed.

With float32 every function here hands back what it was given: a float32 run is
bit-identical to one without this module.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _cast_floats(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def lowered(tree, precision: str):
    """Every floating array of `tree` (inputs: images, a dict of features) in the compute dtype."""
    return tree if precision == "float32" else _cast_floats(tree, COMPUTE_DTYPES[precision])


def raised(tree, precision: str):
    """Every floating array of `tree` (outputs) in float32, for the loss and the metrics."""
    return tree if precision == "float32" else _cast_floats(tree, jnp.float32)


@contextlib.contextmanager
def computing_in(precision: str, module: nnx.Module, *, training: bool = True) -> Iterator[nnx.Module]:
    """`module` itself (float32), or a copy whose parameters and Flax layers are in the
    compute dtype (its batch statistics stay float32). When `training`, on leaving, the
    copy's batch statistics (the state a forward pass changes) go back into `module`;
    evaluation changes none."""
    if precision == "float32":
        yield module
        return
    dtype = COMPUTE_DTYPES[precision]
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    copy = nnx.merge(graphdef, _cast_floats(params, dtype), rest)
    for _, layer in nnx.iter_graph(copy):
        if isinstance(layer, nnx.Module) and hasattr(layer, "dtype"):  # Flax's layers compute in their `dtype`
            layer.dtype = dtype
    yield copy
    if training:
        nnx.update(module, nnx.state(copy, nnx.BatchStat))


def param_dtype(module: nnx.Module):
    """The dtype the module computes in: that of its parameters (for buffers it makes
    itself, such as a recurrent carry or a key/value cache)."""
    return jax.tree.leaves(nnx.state(module, nnx.Param))[0].dtype
