"""dlcli: a command-line deep-learning experiment runner (JAX, Flax NNX, Optax, Orbax)."""

__version__ = "0.1.0"
