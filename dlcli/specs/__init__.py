"""Model specifications by name: each is the config section of one architecture family.

A spec knows, without importing JAX, whether it can take a dataset (`check_input`) and
how many trainable parameters it will have (`param_count`, so `dlcli models` answers
at once and parameter budgets can be solved in closed form, from the per-layer counts in
`dlcli.specs.layers`); `build` imports the Flax module from `dlcli.models` and constructs it.
"""

from __future__ import annotations

from dlcli.registry import Registry

MODELS: Registry[type] = Registry("model")

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid")


def register_builtin_models() -> None:
    """Import the modules whose decorators fill `MODELS`."""
    from dlcli.specs import autoencoder, cnn, gan, mlp, recurrent, transformer  # noqa: F401
