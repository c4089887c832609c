"""Flax NNX modules, one architecture family per file; built from `dlcli.specs`. The
layers the families share (dense stacks, convolutions, sub-pixel upsampling, the
normalisation choice, activations) live in `dlcli.models.layers`."""

import jax
from flax import nnx

from dlcli.models.layers import ACTIVATIONS  # noqa: F401  (kept importable from here)


def count_params(module: nnx.Module) -> int:
    """Trainable parameters (nnx.Param leaves) of a module."""
    state = nnx.state(module, nnx.Param)
    return sum(int(leaf.size) for leaf in jax.tree.leaves(state))
