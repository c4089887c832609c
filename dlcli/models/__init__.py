"""Flax NNX modules, one architecture family per file; built from `dlcli.specs`."""

import jax
from flax import nnx

ACTIVATIONS = {
    "relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jax.numpy.tanh, "sigmoid": jax.nn.sigmoid,
}


def count_params(module: nnx.Module) -> int:
    """Trainable parameters (nnx.Param leaves) of a module."""
    state = nnx.state(module, nnx.Param)
    return sum(int(leaf.size) for leaf in jax.tree.leaves(state))
