"""The Transformer family. Decoder: shapes and parameter counts for every kind of
position, the cached one-position step against the full forward pass, generation with
and without the key/value cache, padding, a character language model through the CLI.
Encoder, encoder-decoder and ViT: shapes, parameter counts, padding, class token and
mean pooling, patches, cached greedy decoding against recomputation; the synthetic
tasks; and checkpoints, resume, eval and reproducibility for all four models."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import SHARED_DATA, assert_resumes_evaluates_and_reproduces, invoke, sets, train_json

from dlcli.config import load_config
from dlcli.data.seq2seq import END
from dlcli.errors import BadInput
from dlcli.generate import generate, pick_token, sample_run
from dlcli.models import count_params

POSITIONS = ["learned", "sinusoidal", "rotary"]


SMALL = ["model.width=16", "model.heads=2", "model.layers=2"]
FEW = ["data.n_train=64", "data.n_val=16", "data.n_test=16"]  # for the generated datasets


def build_model(*overrides: str):
    cfg = load_config(None, [*SMALL, *overrides])
    splits = cfg.data.load(SHARED_DATA)
    model = cfg.model.build(splits.info, nnx.Rngs(0))
    assert count_params(model) == cfg.model.param_count(splits.info)
    return cfg, splits, model


def build(positions: str, **extra):
    return build_model("model.name=transformer_decoder", f"model.positions={positions}", "model.context=40",
                       "data.name=copy_memory", "data.delay=5", *FEW, *[f"{k}={v}" for k, v in extra.items()])


@nnx.jit
def forward(model, x):
    """The model's forward pass, compiled (eager op-by-op dispatch is far slower)."""
    return model(x)


@nnx.jit
def train_forward(model, x):
    """The forward pass in training mode, with dropout."""
    return model(x, rngs=nnx.Rngs(dropout=0))


@pytest.mark.parametrize("positions", POSITIONS)
def test_shapes_param_count_and_cached_step(positions):
    cfg, splits, model = build(positions, **{"model.dropout": 0.2})
    x = jax.tree.map(lambda a: a[:3], splits.train[0])
    assert train_forward(model, x).shape == (3, 25, 10)
    model.eval()
    full = forward(model, x)
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
    alone = forward(model, {"inputs": inputs[:1, :7], "lengths": jnp.array([7])})
    changed = inputs.copy()
    changed[0, 7:] = (changed[0, 7:] + 3) % 10  # other tokens after position 7, masked as padding
    padded = forward(model, {"inputs": changed, "lengths": jnp.array([7, 25])})
    np.testing.assert_allclose(padded[0, :7], alone[0], rtol=1e-5, atol=1e-6)
    causal = forward(model, {"inputs": changed, "lengths": jnp.array([25, 25])})  # not padding: the future must not leak
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
    sampled = json.loads(invoke("sample", str(run), "--prompt", "First", "--length", "27", "--json", check=True).stdout)
    assert len(sampled["text"]) == 27
    too_long = invoke("sample", str(run), "--prompt", "First", "--length", "28")
    assert too_long.returncode == 2 and "exceed the model's context of 32 positions" in too_long.stderr


def first(x, n: int):
    return jax.tree.map(lambda a: jnp.asarray(a[:n]), x)


@pytest.mark.parametrize("pooling, positions", [("cls", "learned"), ("mean", "rotary"), ("cls", "sinusoidal")])
def test_encoder_pools_one_label_per_sequence_and_ignores_padding(pooling, positions):
    _, splits, model = build_model("model.name=transformer_encoder", f"model.pooling={pooling}",
                                   f"model.positions={positions}", "model.attention_dropout=0.3",
                                   "data.name=varlen_parity", "data.min_length=12", *FEW)
    x = first(splits.train[0], 3)
    assert train_forward(model, x).shape == (3, 2)
    model.eval()
    short = {"inputs": x["inputs"][:, :6], "lengths": jnp.array([6, 6, 6])}
    changed = {"inputs": x["inputs"].at[:, 6:].set(5.0), "lengths": jnp.array([6, 6, 6])}
    np.testing.assert_allclose(forward(model, changed), forward(model, short), rtol=1e-5, atol=1e-6)
    # bidirectional: a later step changes the output of the whole sequence
    assert not np.allclose(forward(model, changed), forward(model, {**changed, "inputs": changed["inputs"].at[:, 5].set(2.0)}))


def test_encoder_tags_every_step_and_reads_feature_vectors():
    _, splits, tagger = build_model("model.name=transformer_encoder", "data.name=associative_recall", "data.pairs=4",
                                    "data.queries=3", *FEW)
    assert train_forward(tagger, first(splits.train[0], 2)).shape == (2, 12, 16)
    _, splits, regressor = build_model("model.name=transformer_encoder", "model.pooling=mean", "data.name=adding",
                                       "data.length=12", *FEW)
    assert train_forward(regressor, first(splits.train[0], 2)).shape == (2, 1)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_vit_cuts_row_major_patches(pooling):
    _, splits, model = build_model("model.name=vit", "model.patch=4", f"model.pooling={pooling}", "data.name=digits")
    images = jnp.asarray(splits.train[0][:2])
    patches = model.patches(images)
    assert patches.shape == (2, 4, 16)
    np.testing.assert_array_equal(patches[1, 1].reshape(4, 4), images[1, 0:4, 4:8, 0])  # top right
    np.testing.assert_array_equal(patches[1, 2].reshape(4, 4), images[1, 4:8, 0:4, 0])  # bottom left
    assert train_forward(model, images).shape == (2, 10)


@pytest.mark.parametrize("positions", ["learned", "rotary"])  # rotary: the cached step's offsets matter
def test_seq2seq_greedy_decoding_with_the_cache_matches_recomputation(positions):
    _, splits, model = build_model("model.name=transformer_seq2seq", f"model.positions={positions}",
                                   "data.name=reverse", "data.max_length=8", *FEW)
    x = first(splits.train[0], 4)
    assert train_forward(model, x).shape == (4, 9, 13)
    model.eval()
    decoded = np.asarray(nnx.jit(lambda m, x: m.greedy_decode(x))(model, x))
    # without a cache: the whole target written so far through the teacher-forced forward pass
    targets_in = np.zeros((4, 9), np.int32)
    targets_in[:, 0] = 1
    for t in range(9):
        logits = forward(model, {**x, "targets_in": jnp.asarray(targets_in)})
        token = np.asarray(logits[:, t].argmax(-1))
        np.testing.assert_array_equal(decoded[:, t], token)
        if t + 1 < 9:
            targets_in[:, t + 1] = token
    # source padding is invisible
    padded = {**x, "inputs": jnp.where(jnp.arange(8)[None] < x["lengths"][:, None], x["inputs"], 5)}
    np.testing.assert_allclose(forward(model, padded), forward(model, x), rtol=1e-5, atol=1e-6)


def test_seq2seq_tasks_hold_out_their_problems():
    for name, solve in [("reverse", lambda s: s[::-1]), ("sort", lambda s: "".join(sorted(s))),
                        ("addition", lambda s: str(sum(int(a) for a in s.split("+"))))]:
        cfg = load_config(None, ["model.name=transformer_seq2seq", f"data.name={name}", "data.n_train=500",
                                 "data.n_val=50", "data.n_test=50"])
        splits = cfg.data.load(SHARED_DATA)
        train_sources = set()
        for split, (x, y) in [("train", splits.train), ("test", splits.test)]:
            for inputs, length, targets_in, labels in zip(x["inputs"], x["lengths"], x["targets_in"], y):
                source = cfg.data.decode(inputs[:length].tolist())
                assert cfg.data.decode(labels.tolist()) == solve(source)
                assert labels[len(solve(source))] == END and (labels[len(solve(source)) + 1:] == -1).all()
                n = len(solve(source))
                assert targets_in[0] == 1 and (targets_in[1: n + 1] == labels[:n]).all() and (targets_in[n + 1:] == 0).all()
                if split == "train":
                    train_sources.add(source)
                else:
                    assert source not in train_sources
    with pytest.raises(BadInput, match="'x' is not in the addition alphabet"):
        cfg.data.encode("12x")


def test_associative_recall_labels_each_query_with_the_value_after_its_key():
    cfg = load_config(None, ["model.name=transformer_encoder", "data.name=associative_recall", "data.n_train=200"])
    (x, y), keys, pairs = cfg.data.load(SHARED_DATA).train, cfg.data.keys, cfg.data.pairs
    for tokens, labels in zip(x["inputs"], y):
        value_of = dict(zip(tokens[0: 2 * pairs: 2], tokens[1: 2 * pairs: 2]))
        assert len(value_of) == pairs and tokens[2 * pairs] == 0 and (labels[: 2 * pairs + 1] == -1).all()
        for key, label in zip(tokens[2 * pairs + 1:], labels[2 * pairs + 1:]):
            assert value_of[key] == label + keys + 1


TRANSFORMERS = {
    "transformer_encoder": ["data.name=associative_recall", "data.pairs=4", *FEW],
    "transformer_decoder": ["data.name=copy_memory", "data.delay=5", "model.context=25", *FEW],
    "vit": ["data.name=digits", "model.patch=4"],
    "transformer_seq2seq": ["data.name=reverse", "data.max_length=3", "model.context=4", *FEW],
}


@pytest.mark.parametrize("model_name", TRANSFORMERS)
def test_every_transformer_resumes_evaluates_and_reproduces(model_name, tmp_path):
    """A run resumed from its step-10 checkpoint ends exactly like the uninterrupted run
    and like a second run; `dlcli eval` reproduces the test metrics. (A real SIGKILL and
    resume: test_cli.)"""
    model = [f"model.name={model_name}", *SMALL, *TRANSFORMERS[model_name], "model.dropout=0.1",
             "model.attention_dropout=0.1", "training.steps_per_dispatch=10", "training.batch_size=16",
             "training.restore_best=false"]
    overrides = [*model, "training.steps=20", "training.eval_every=10", "checkpoint.keep=10"]
    assert_resumes_evaluates_and_reproduces(overrides, tmp_path)


def test_seq2seq_learns_to_reverse_and_answers_through_the_cli(tmp_path):
    run = tmp_path / "reverse"
    summary = train_json("--run-dir", str(run), *sets(
        "model.name=transformer_seq2seq", "model.width=32", "model.heads=4", "model.layers=2", "model.dropout=0",
        "model.context=7", "data.name=reverse", "data.max_length=6", "data.symbols=4", "data.n_train=4000",
        "training.steps=320", "training.eval_every=160", "training.batch_size=64", "optimizer.learning_rate=0.003"))
    assert summary["metrics"]["test/exact_match"] > 0.9
    assert summary["metrics"]["test/exact_match"] <= summary["metrics"]["test/accuracy"]
    evaluated = json.loads(invoke("eval", str(run), "--json", check=True).stdout)
    assert evaluated["metrics"]["test/exact_match"] == summary["metrics"]["test/exact_match"]
    answers = {prompt: sample_run(run, prompt=prompt)["text"] for prompt in ("abcd", "dcab", "aabbcc")}
    assert sum(answer == prompt[::-1] for prompt, answer in answers.items()) >= 2
    printed = invoke("sample", str(run), "--prompt", "abcd", check=True).stdout
    assert printed == answers["abcd"] + "\n"
    refused = invoke("sample", str(run), "--prompt", "abcz")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "'z' is not in the reverse alphabet" in refused.stderr
    with pytest.raises(BadInput, match="--temperature do not apply to transformer_seq2seq"):
        sample_run(run, prompt="abcd", temperature=0.5)
    with pytest.raises(BadInput, match="the prompt has 7 characters but 'reverse' sources have at most 6"):
        sample_run(run, prompt="abcdabc")
