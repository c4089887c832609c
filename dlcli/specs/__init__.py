"""Model specifications by name: each is the config section of one architecture family.

A spec knows, without importing JAX, whether it can take a dataset (`check_input`) and
how many trainable parameters it will have (`param_count`, so `dlcli models` answers
at once and parameter budgets can be solved in closed form, from the per-layer counts in
`dlcli.specs.layers`); `build` imports the Flax module from `dlcli.models` and constructs it.

The user's own specs, written exactly like these (a dataclass subclass of `ModelSpec`),
are named by reference in `model.name` (`path/to/file.py:Class`, `pkg.module:Class`) or
declared by installed packages under the entry-point group `dlcli.models`
(`Registry.accept_plugins`).
"""

from __future__ import annotations

from dlcli.registry import Registry
from dlcli.specs.base import ModelSpec

MODELS: Registry[type] = Registry("model")
MODELS.accept_plugins(ModelSpec, "dlcli.models", needs=("summary", "reference_dataset", "build"))

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid")


def register_builtin_models() -> None:
    """Import the modules whose decorators fill `MODELS`."""
    from dlcli.specs import autoencoder, cnn, gan, mlp, recurrent, transformer  # noqa: F401
