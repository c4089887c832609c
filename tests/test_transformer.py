"""The decoder-only Transformer: shapes and parameter counts for every kind of position,
the cached one-position step against the full forward pass, generation with and without
the key/value cache, padding, and a character language model through the CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import SHARED_DATA, run_cli, sets, train_json

from dlcli.config import load_config
from dlcli.generate import generate, pick_token
from dlcli.models import count_params

POSITIONS = ["learned", "sinusoidal", "rotary"]


def build(positions: str, **extra):
    overrides = ["model.name=transformer_decoder", "model.width=16", "model.heads=2", "model.layers=2",
                 f"model.positions={positions}", "model.context=40", "data.name=copy_memory", "data.delay=5",
                 "data.n_train=64", "data.n_val=16", "data.n_test=16", *[f"{k}={v}" for k, v in extra.items()]]
    cfg = load_config(None, overrides)
    splits = cfg.data.load(SHARED_DATA)
    return cfg, splits, cfg.model.build(splits.info, nnx.Rngs(0))


@pytest.mark.parametrize("positions", POSITIONS)
def test_shapes_param_count_and_cached_step(positions):
    cfg, splits, model = build(positions, **{"model.dropout": 0.2})
    x = jax.tree.map(lambda a: a[:3], splits.train[0])
    assert model(x, rngs=nnx.Rngs(dropout=0)).shape == (3, 25, 10)
    assert count_params(model) == cfg.model.param_count(splits.info)
    model.eval()
    full = model(x)
    carry = model.initial_carry(3)
    step = nnx.jit(lambda m, c, tokens: m.step(c, tokens))
    for t in range(25):
        carry, logits = step(model, carry, x["inputs"][:, t])
        np.testing.assert_allclose(logits, full[:, t], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("positions", POSITIONS)
def test_padding_and_later_tokens_never_change_earlier_outputs(positions):
    _, splits, model = build(positions)
    model.eval()
    inputs = np.asarray(splits.train[0]["inputs"][:2])
    alone = model({"inputs": inputs[:1, :7], "lengths": jnp.array([7])})
    changed = inputs.copy()
    changed[0, 7:] = (changed[0, 7:] + 3) % 10  # other tokens after position 7, masked as padding
    padded = model({"inputs": changed, "lengths": jnp.array([7, 25])})
    np.testing.assert_allclose(padded[0, :7], alone[0], rtol=1e-5, atol=1e-6)
    causal = model({"inputs": changed, "lengths": jnp.array([25, 25])})  # not padding: the future must not leak
    np.testing.assert_allclose(causal[0, :7], alone[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.7, 3), (0.0, None)])
def test_generation_with_and_without_the_cache_gives_the_same_tokens(temperature, top_k):
    _, splits, model = build("learned")
    model.eval()
    prompt = np.asarray(splits.train[0]["inputs"][0, :5])
    key = jax.random.key(7)
    cached = generate(model, prompt, 20, key, temperature, top_k)

    # without a cache: the whole sequence so far (padded to 25) through the model for every new token
    last_logits = nnx.jit(lambda m, tokens, length: m({"inputs": tokens[None], "lengths": length[None]})[0, length - 1])
    sequence = np.zeros(25, np.int32)
    sequence[:5] = prompt
    for i, draw_key in enumerate(jax.random.split(key, 20)):
        logits = last_logits(model, jnp.asarray(sequence), jnp.asarray(5 + i))
        sequence[5 + i] = int(pick_token(logits, draw_key, temperature, top_k))
    np.testing.assert_array_equal(cached, sequence[5:])


def test_transformer_language_model_through_the_cli(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text((SHARED_DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:20000], encoding="utf-8")
    run = tmp_path / "run"
    summary = train_json("--run-dir", str(run), *sets(
        "model.name=transformer_decoder", "model.width=32", "model.heads=4", "model.layers=2", "model.context=32",
        "model.positions=rotary", "data.name=text", f"data.path={text}", "data.seq_length=32", "training.steps=60",
        "training.eval_every=30", "training.batch_size=16", "optimizer.learning_rate=0.003"))
    assert summary["model"] == "transformer_decoder"
    assert summary["metrics"]["val/loss"] < np.log(len(json.loads((run / "vocab.json").read_text())["vocab"]))
    sampled = json.loads(run_cli("sample", str(run), "--prompt", "First", "--length", "27", "--json", check=True).stdout)
    assert len(sampled["text"]) == 27
    too_long = run_cli("sample", str(run), "--prompt", "First", "--length", "28")
    assert too_long.returncode == 2 and "exceed the model's context of 32 positions" in too_long.stderr
