"""Layers shared by the model families: activations, initialisers, dense layers and
dense stacks, convolutions (im2col) and convolution chains, sub-pixel upsampling,
transposed convolutions, spectral normalisation and the normalisation choice. `dlcli.specs.layers` counts their parameters, one helper per
kind.

Each family file takes its building blocks from here and from no other family file.

Parameter paths: the families keep the attribute names their checkpoints store (e.g.
`hidden.0.kernel`, `norms.1.scale`), and nothing here adds a level to those paths. A
`DenseStack` *is* the `nnx.List` of its `nnx.Linear` layers (a subclass with no state
of its own), so its layers sit at `<attribute>.<i>` exactly as in a plain `nnx.List`;
its normalisation layers, where a family has them, stay in a sibling list that the
family passes to the stack's call. Every constructor draws from `rngs` in the order the
layers are listed, so initial values are those of building the layers one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Activation = Callable[[jax.Array], jax.Array]

ACTIVATIONS: dict[str, Activation] = {
    "relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jax.numpy.tanh, "sigmoid": jax.nn.sigmoid,
}

NORMS = {"batch": nnx.BatchNorm, "layer": nnx.LayerNorm}  # model.norm: none, batch or layer


# ----- initialisation ----------------------------------------------------------------
def _uniform(bound: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def initializers(init: str, fan_in: int) -> dict:
    """Keyword arguments of `nnx.Linear` / `nnx.Conv` for an initialisation scheme:
    `fan_in_uniform` draws weights and biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (PyTorch's default for dense and conv layers); `flax` keeps Flax's defaults
    (LeCun-normal weights, zero biases)."""
    if init == "fan_in_uniform":
        return {"kernel_init": _uniform(fan_in**-0.5), "bias_init": _uniform(fan_in**-0.5)}
    return {}


# ----- dense -------------------------------------------------------------------------
def dense(a: int, b: int, *, init: str = "flax", rngs: nnx.Rngs) -> nnx.Linear:
    """One dense layer a -> b."""
    return nnx.Linear(a, b, rngs=rngs, **initializers(init, a))


class DenseStack(nnx.List):
    """Dense layers sizes[0] -> sizes[1] -> ... (one per consecutive pair; none for a
    single size), applied as layer -> [norm] -> activation -> [dropout] each.

    It is the `nnx.List` of the `nnx.Linear` layers itself and holds nothing else, so
    the layers' parameters keep the paths of a plain list (`<attribute>.<i>.kernel`),
    and checkpoints written before the stack existed restore into it. Normalisation and
    dropout layers live beside it in the owning module (their paths unchanged too) and
    are passed to `__call__`."""

    def __init__(self, sizes: Sequence[int], *, init: str = "flax", rngs: nnx.Rngs):
        super().__init__(dense(a, b, init=init, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:]))

    def __call__(self, x: jax.Array, activation: Activation, *, norms: Sequence[nnx.Module] = (),
                 dropout: nnx.Dropout | None = None, rngs: nnx.Rngs | None = None) -> jax.Array:
        """x (B, sizes[0]) -> (B, sizes[-1]); `norms` (one per layer, or empty for none)."""
        for i, layer in enumerate(self):
            x = layer(x)
            if norms:
                x = norms[i](x)
            x = activation(x)
            if dropout is not None:
                x = dropout(x, rngs=rngs)
        return x


# ----- normalisation -----------------------------------------------------------------
def norm_layer(kind: str, features: int, rngs: nnx.Rngs) -> nnx.Module | None:
    """A BatchNorm or LayerNorm over `features`, or None for `kind` none."""
    return NORMS[kind](features, rngs=rngs) if kind != "none" else None


def norm_layers(kind: str, widths: Sequence[int], rngs: nnx.Rngs) -> nnx.List:
    """One normalisation layer per width, or an empty list for `kind` none."""
    return nnx.List([norm_layer(kind, width, rngs) for width in widths] if kind != "none" else [])


def maybe_norm(norm: nnx.Module | None, x: jax.Array) -> jax.Array:
    """x through `norm`, or unchanged when there is none."""
    return norm(x) if norm is not None else x


# ----- convolution -------------------------------------------------------------------
def conv_impl(impl: str) -> str:
    """`auto` made concrete for the backend JAX runs on: im2col on a CPU (whose XLA
    convolution weight gradient is slow), XLA's own convolution on a GPU or TPU."""
    if impl != "auto":
        return impl
    return "im2col" if jax.default_backend() == "cpu" else "xla"


def conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, *, padding: str = "SAME",
         impl: str = "auto", init: str = "flax", rngs: nnx.Rngs) -> nnx.Conv:
    """A kernel x kernel convolution c_in -> c_out on NHWC inputs; `impl` im2col
    (`im2col_conv`), xla (`lax.conv_general_dilated`) or auto (`conv_impl`)."""
    function = im2col_conv if conv_impl(impl) == "im2col" else jax.lax.conv_general_dilated
    return nnx.Conv(c_in, c_out, (kernel, kernel), strides=stride, padding=padding, rngs=rngs,
                    conv_general_dilated=function, **initializers(init, kernel * kernel * c_in))


def conv3x3(c_in: int, c_out: int, stride: int = 1, *, init: str = "flax", rngs: nnx.Rngs) -> nnx.Conv:
    """A 3x3 convolution c_in -> c_out, SAME padding, computed as `conv_impl("auto")` picks."""
    return conv(c_in, c_out, 3, stride, init=init, rngs=rngs)


def conv_chain(channels: Sequence[int], stride: int = 1, *, kernel: int = 3, out_factor: int = 1,
               init: str = "flax", rngs: nnx.Rngs) -> nnx.List:
    """kernel x kernel convolutions channels[0] -> out_factor x channels[1] -> ..., as an
    `nnx.List` (out_factor 4: the convolutions of sub-pixel upsampling, see `sub_pixel_chain`)."""
    return nnx.List([conv(a, out_factor * b, kernel, stride, init=init, rngs=rngs)
                     for a, b in zip(channels[:-1], channels[1:])])


def _same_padding(n: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-n // stride)
    total = max((out - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


def im2col_conv(x, kernel, window_strides, padding, *, lhs_dilation=None, rhs_dilation=None,
                feature_group_count=1, **kwargs):
    """A drop-in for `lax.conv_general_dilated` on NHWC inputs and HWIO kernels:
    x (B, H, W, C), kernel (kh, kw, C, O) -> (B, H', W', O) as one matmul of patches.
    Dilated or grouped convolutions fall back to XLA's.

    On CPU, XLA's convolution weight gradient is slow, and far slower again inside the
    `lax.scan` that runs many steps per dispatch (measured 1.3 train steps/s against 15
    for the MNIST CNN). This computes each convolution as one matrix product over
    shifted slices of the padded input, with the same kernel layout as `nnx.Conv`."""
    dilated = any(d != 1 for d in (*(lhs_dilation or (1, 1)), *(rhs_dilation or (1, 1))))
    if dilated or feature_group_count != 1 or not isinstance(padding, str):
        return jax.lax.conv_general_dilated(x, kernel, window_strides, padding, lhs_dilation=lhs_dilation,
                                            rhs_dilation=rhs_dilation, feature_group_count=feature_group_count, **kwargs)
    kh, kw, c_in, c_out = kernel.shape
    sh, sw = window_strides
    if padding == "SAME":
        x = jnp.pad(x, ((0, 0), _same_padding(x.shape[1], kh, sh), _same_padding(x.shape[2], kw, sw), (0, 0)))
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    patches = jnp.concatenate([x[:, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw, :]
                               for i in range(kh) for j in range(kw)], axis=-1)  # (B, H', W', kh*kw*C)
    return patches @ kernel.reshape(kh * kw * c_in, c_out)


# ----- sub-pixel upsampling (Shi et al. 2016) ------------------------------------------
def sub_pixel_chain(channels: Sequence[int], *, kernel: int = 3, init: str = "flax", rngs: nnx.Rngs) -> nnx.List:
    """The convolutions of sub-pixel upsampling steps channels[0] -> channels[1] -> ...:
    each kernel x kernel (3x3 unless given) to 4x its output channels at the low
    resolution; `upsample` then spreads each pixel's 4 channel groups over a 2x2 block."""
    return conv_chain(channels, 1, kernel=kernel, out_factor=4, init=init, rngs=rngs)


def upsample(conv_layer: nnx.Conv, x: jax.Array) -> jax.Array:
    """One sub-pixel step: x (B, H, W, c_in) -> (B, 2H, 2W, c_out) through one of a
    `sub_pixel_chain`'s convolutions. Convolving before upsampling keeps every
    convolution at the lower resolution."""
    return depth_to_space(conv_layer(x))


def depth_to_space(x: jax.Array) -> jax.Array:
    """(B, H, W, 4C) -> (B, 2H, 2W, C): channel group 2a+b of each pixel goes to offset (a, b) of its 2x2 block."""
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height, width, 2, 2, channels // 4)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, channels // 4)


# ----- transposed convolution (the other way to upsample) -----------------------------
class TransposedConv(nnx.Module):
    """x (B, H, W, c_in) -> (B, 2H, 2W, c_out): a kernel x kernel transposed convolution
    with stride 2 and 'SAME' padding, equal to `lax.conv_transpose(x, kernel, (2, 2),
    "SAME")` (tested). Parameters `kernel` (k, k, c_in, c_out) and `bias` (c_out,), as
    `nnx.Conv` names them. On a CPU (`conv_impl`) it is computed as the input spread over
    a grid twice its size, zeros between, then an im2col convolution over it."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 4, *, impl: str = "auto", init: str = "flax",
                 rngs: nnx.Rngs):
        fan_in = kernel * kernel * c_in
        inits = initializers(init, fan_in) or {"kernel_init": nnx.initializers.lecun_normal(),
                                               "bias_init": nnx.initializers.zeros_init()}
        self.kernel = nnx.Param(inits["kernel_init"](rngs.params(), (kernel, kernel, c_in, c_out)))
        self.bias = nnx.Param(inits["bias_init"](rngs.params(), (c_out,)))
        self.impl = impl

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(x.dtype)
        if conv_impl(self.impl) == "xla":
            y = jax.lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        else:
            batch, height, width, channels = x.shape
            spread = jnp.zeros((batch, height, 2, width, 2, channels), x.dtype).at[:, :, 0, :, 0, :].set(x)
            spread = spread.reshape(batch, 2 * height, 2 * width, channels)  # x at even rows and columns
            size = kernel.shape[0]
            before = size - 1 if size <= 2 else -(-size // 2)  # how lax.conv_transpose splits its 'SAME' padding
            pads = (before, size - 1 - before)  # the grid's trailing zero stands for one row of it
            spread = jnp.pad(spread, ((0, 0), pads, pads, (0, 0)))
            y = im2col_conv(spread, kernel, (1, 1), "VALID")
        return y + self.bias[...].astype(y.dtype)


# ----- spectral normalisation (Miyato et al. 2018) ------------------------------------
class SpectralEstimate(nnx.Variable):
    """The power iteration's vector of a `SpectralNormed` layer: state, not a parameter."""


def _unit(v: jax.Array) -> jax.Array:
    return v / (jnp.linalg.norm(v) + 1e-12)


class SpectralNormed(nnx.Module):
    """A dense or convolution `layer` whose kernel enters divided by its largest singular
    value sigma, the kernel read as a (fan_in, out) matrix W. sigma = v W u with u the
    power iteration's vector (out,), kept between steps, and v = unit(W u); `refine()`
    takes one power-iteration step (u <- unit(W^T v)), once per training step as in the
    paper. The layer's parameters keep their names under `layer`; u is not a parameter."""

    def __init__(self, layer: nnx.Linear | nnx.Conv, *, rngs: nnx.Rngs):
        self.layer = layer
        self.u = SpectralEstimate(_unit(jax.random.normal(rngs.params(), (layer.kernel.shape[-1],))))

    def _matrix(self) -> jax.Array:
        kernel = self.layer.kernel[...]
        return kernel.reshape(-1, kernel.shape[-1]).astype(jnp.float32)

    def sigma(self) -> jax.Array:
        """The estimate of the kernel's largest singular value (differentiable in the kernel)."""
        w, u = self._matrix(), self.u[...]
        v = jax.lax.stop_gradient(_unit(w @ u))
        return v @ w @ u

    def refine(self) -> None:
        w = jax.lax.stop_gradient(self._matrix())
        self.u[...] = _unit(w.T @ _unit(w @ self.u[...]))

    def __call__(self, x: jax.Array) -> jax.Array:
        layer = self.layer
        kernel = layer.kernel[...]
        kernel = kernel / self.sigma().astype(kernel.dtype)
        if isinstance(layer, nnx.Linear):
            y = x @ kernel
        else:
            strides = layer.strides if isinstance(layer.strides, tuple) else (layer.strides,) * 2
            y = layer.conv_general_dilated(x, kernel, strides, layer.padding,
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + layer.bias[...]
