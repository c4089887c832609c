"""Parameter counts of the shared layer kinds (`dlcli.models.layers`), one helper per
kind, in closed form and without JAX; every spec sums these."""

from __future__ import annotations

from collections.abc import Sequence


def dense_params(sizes: Sequence[int]) -> int:
    """Weights and biases of a chain of dense layers sizes[0] -> sizes[1] -> ..."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def conv_params(channels: Sequence[int], kernel: int = 3, out_factor: int = 1) -> int:
    """Weights and biases of a chain of kernel x kernel convolutions channels[0] ->
    out_factor x channels[1] -> ... (out_factor 4: the sub-pixel upsampling convs, whose
    4 x c output channels become c at twice the resolution, so the next layer takes c)."""
    return sum(kernel * kernel * a * out_factor * b + out_factor * b for a, b in zip(channels[:-1], channels[1:]))


def norm_params(widths: Sequence[int], kind: str = "layer") -> int:
    """Scale and bias per feature of a BatchNorm or LayerNorm over each width (running
    statistics are not parameters); none for `kind` none."""
    return 2 * sum(widths) if kind != "none" else 0
