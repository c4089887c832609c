"""Mixed precision (`training.precision: bfloat16`): the forward and backward passes
compute in bfloat16 while parameters, optimizer state and the loss stay float32, and
every family trains with it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import FAMILIES, FAMILY_TINY, REPO, SHARED_DATA, family_config
from dlcli.config import load_config
from dlcli.models.precision import computing_in, lowered, raised
from dlcli.runs import RunDir
from dlcli.tasks import make_task
from dlcli.training.loop import fit


class Normalised(nnx.Module):
    def __init__(self):
        self.dense = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
        self.norm = nnx.BatchNorm(4, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.norm(self.dense(x))


def test_float32_hands_back_what_it_was_given():
    module, x = Normalised(), jnp.ones((2, 3))
    with computing_in("float32", module) as computing:
        assert computing is module
    assert lowered(x, "float32") is x and raised(x, "float32") is x


def test_a_bfloat16_copy_computes_in_bfloat16_and_keeps_its_batch_statistics_in_float32():
    module = Normalised()
    before, layer_dtype = np.asarray(module.norm.mean[...]), module.dense.dtype
    x = jax.random.normal(jax.random.key(0), (8, 3))
    with computing_in("bfloat16", module) as computing:
        assert computing is not module and computing.dense.kernel[...].dtype == jnp.bfloat16
        out = computing(lowered(x, "bfloat16"))
    assert out.dtype == jnp.bfloat16 and raised(out, "bfloat16").dtype == jnp.float32
    assert module.dense.kernel[...].dtype == jnp.float32 and module.dense.dtype == layer_dtype  # the original as it was
    assert module.norm.mean[...].dtype == jnp.float32 and not np.allclose(module.norm.mean[...], before)
    with computing_in("bfloat16", module, training=False):
        pass
    assert module.norm.mean[...].dtype == jnp.float32


@pytest.mark.parametrize("overrides", [
    ["model.width=16"],
    ["model.name=cnn", "model.blocks=[{channels: 4}]", "model.dense=[16]", "model.batch_norm=true"],
], ids=["mlp", "cnn-batchnorm"])
def test_a_bfloat16_step_multiplies_in_bfloat16_and_updates_float32_state(overrides):
    cfg = load_config(None, [*overrides, "training.precision=bfloat16"])
    task = make_task(cfg)
    model = cfg.model.build(cfg.info, nnx.Rngs(params=0))
    optimizer, _ = task.optimizer(cfg, model, 10)
    x = jnp.asarray(cfg.data.load(SHARED_DATA).train[0][:8])
    y = jnp.arange(8) % 10

    def step(model, optimizer, x, y):
        return task.update(model, optimizer, x, y, jnp.asarray(0), jax.random.key(1))

    graphdef, state = nnx.split((model, optimizer))
    jaxpr = str(jax.make_jaxpr(lambda state, x, y: step(*nnx.merge(graphdef, state), x, y))(state, x, y))
    products = [line for line in jaxpr.splitlines() if "dot_general" in line]
    assert products and all("bf16" in line for line in products)
    metrics = nnx.jit(step)(model, optimizer, x, y)
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(metrics["loss"])
    state = nnx.state((model, optimizer))
    assert {leaf.dtype for leaf in jax.tree.leaves(state) if jnp.issubdtype(leaf.dtype, jnp.floating)} == {np.dtype(np.float32)}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_lowers_its_loss_in_bfloat16(family, request, tmp_path):
    experiment, overrides = family_config(family, request)
    config = str(REPO / "experiments" / f"{experiment}.yaml") if experiment else None
    steps = ["training.steps=16", "training.eval_every=8"]
    cfg = load_config(config, [*FAMILY_TINY, *steps, *overrides, "training.precision=bfloat16"])
    summary = fit(cfg, tmp_path / "run", data_dir=SHARED_DATA, show_progress=False)
    first, last = (record["train/loss"] for record in RunDir(tmp_path / "run").metrics())
    assert np.isfinite(summary["metrics"]["final/train/loss"]) and last < first
