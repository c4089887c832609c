"""Shape tests for every registered model, and the closed-form parameter counts that
`dlcli models` prints against the real Flax modules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlcli.config import DATASETS, MODELS, load_config
from dlcli.models import count_params
from dlcli.models.cnn import window_pool
from dlcli.models.layers import im2col_conv

CASES = [
    ("mlp", "digits", []),
    ("mlp", "regression1d", ["model.norm=layer", "model.widths=[8, 4]"]),
    ("mlp", "moons", ["model.norm=batch", "model.dropout=0.5"]),
    ("cnn", "digits", []),
    ("cnn", "mnist", ["model.head=gap", "model.batch_norm=true", "model.padding=valid"]),
    ("cnn", "fashion_mnist", ["model.blocks=[{channels: 4, kernel: 5, stride: 2, pool: avg}]", "model.conv_impl=xla"]),
]


@pytest.mark.parametrize("model_name,dataset,overrides", CASES)
def test_output_shape_and_param_count(model_name, dataset, overrides):
    cfg = load_config(None, [f"model.name={model_name}", f"data.name={dataset}", *overrides])
    info = cfg.data.info()
    model = cfg.model.build(info, nnx.Rngs(0))
    x = jnp.zeros((3, *info.input_shape))
    assert model(x, rngs=nnx.Rngs(dropout=1)).shape == (3, info.n_outputs)
    model.eval()
    assert model(x).shape == (3, info.n_outputs)
    assert count_params(model) == cfg.model.param_count(info)


def test_every_registered_model_has_a_reference_count():
    for name, spec in MODELS.items():
        if getattr(spec, "pretrained_from", None):  # sized by the run it starts from: test_autoencoder
            continue
        info = DATASETS.get(spec.reference_dataset)().info()
        model = spec().build(info, nnx.Rngs(0))
        assert count_params(model) == spec().param_count(info), name


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3, 4])
def test_im2col_conv_matches_xla(padding, stride, kernel):
    key_x, key_k = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (2, 11, 9, 3))
    k = jax.random.normal(key_k, (kernel, kernel, 3, 5))
    expected = jax.lax.conv_general_dilated(x, k, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(im2col_conv(x, k, (stride, stride), padding), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_window_pool_matches_reduce_window(kind):
    x = jax.random.normal(jax.random.key(1), (2, 7, 9, 3))
    expected = (nnx.max_pool if kind == "max" else nnx.avg_pool)(x, (2, 2), strides=(2, 2))
    np.testing.assert_allclose(window_pool(x, 2, kind), expected, rtol=1e-6)
