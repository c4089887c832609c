"""The recurrent family: shapes and parameter counts, padding invariance, step-by-step
generation against the full forward pass, the gradient-flow probe, the sequence tasks'
data and baselines, and character language modelling end to end through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import SHARED_DATA, assert_resumes_evaluates_and_reproduces, invoke, sets, train_json

from dlcli.config import DATASETS, load_config
from dlcli.generate import sample_run
from dlcli.models import count_params
from dlcli.models.recurrent import reverse_within_length
from dlcli.tasks.supervised import TokenClassification
from dlcli.training.experiment import build_experiment
from dlcli.training.loop import fit

SMALL_DATA = ["data.n_train=256", "data.n_val=64", "data.n_test=64"]
CASES = [
    ("rnn", "adding", ["data.length=12"]),
    ("rnn", "varlen_parity", ["model.activation=relu", "model.bidirectional=true"]),
    ("lstm", "copy_memory", ["data.delay=5", "model.layers=2", "model.dropout=0.3"]),
    ("lstm", "forecast", ["model.bidirectional=true", "model.layers=2", "data.window=10", "data.horizon=3"]),
    ("gru", "varlen_parity", ["model.layers=3", "model.unroll=4"]),
    ("gru", "copy_memory", ["data.delay=3", "model.bidirectional=true"]),
]


def dataset(name: str, *overrides: str):
    """The config section of a sequence dataset."""
    return load_config(None, ["model.name=lstm", f"data.name={name}", *overrides]).data


def build(model: str, dataset: str, overrides: list[str], hidden: int = 8):
    cfg = load_config(None, [f"model.name={model}", f"data.name={dataset}", f"model.hidden={hidden}", *SMALL_DATA,
                             *overrides])
    splits = cfg.data.load(SHARED_DATA)
    return cfg, splits, cfg.model.build(splits.info, nnx.Rngs(0))


@pytest.mark.parametrize("model_name,dataset,overrides", CASES)
def test_output_shape_and_param_count(model_name, dataset, overrides):
    cfg, splits, model = build(model_name, dataset, overrides)
    x = jax.tree.map(lambda a: a[:5], splits.train[0])
    length = splits.info.input_shape[0]
    expected = (5, length, splits.info.n_outputs) if splits.info.kind == "token_classification" else (5, splits.info.n_outputs)
    assert model(x, rngs=nnx.Rngs(dropout=1)).shape == expected
    model.eval()
    assert model(x).shape == expected
    assert count_params(model) == cfg.model.param_count(splits.info)


def test_gru_has_about_three_quarters_of_the_lstm_parameters():
    info = DATASETS.get("adding")().info()
    lstm = load_config(None, ["model.name=lstm", "model.hidden=256", "data.name=adding"]).model.param_count(info)
    gru = load_config(None, ["model.name=gru", "model.hidden=256", "data.name=adding"]).model.param_count(info)
    assert 0.74 < gru / lstm < 0.76


def test_reverse_within_length_is_an_involution_that_keeps_padding():
    x = jnp.arange(2 * 5).reshape(2, 5)
    lengths = jnp.array([3, 5])
    reversed_ = reverse_within_length(x, lengths)
    np.testing.assert_array_equal(reversed_, [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]])
    np.testing.assert_array_equal(reverse_within_length(reversed_, lengths), x)


@pytest.mark.parametrize("model_name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_a_result(model_name, bidirectional):
    """The same sequence alone (length 5, no padding) and inside a padded batch of
    longer sequences gives the same output, for one-label and per-step heads."""
    for dataset, extra in (("varlen_parity", ["data.max_length=9"]), ("copy_memory", ["data.delay=2", "data.symbols=2"])):
        cfg, splits, model = build(model_name, dataset, [f"model.bidirectional={bidirectional}", "model.layers=2", *extra])
        model.eval()
        inputs = np.asarray(splits.train[0]["inputs"][:4])
        alone = {"inputs": inputs[:1, :5], "lengths": jnp.array([5])}
        rng = np.random.default_rng(0)
        padded_inputs = inputs.copy()
        padded_inputs[0, 5:] = rng.integers(0, 3, padded_inputs[0, 5:].shape) if inputs.dtype == np.int32 else rng.normal(
            size=padded_inputs[0, 5:].shape)  # garbage in the padding must not matter
        batch = {"inputs": padded_inputs, "lengths": jnp.array([5, inputs.shape[1], 3, 6])}
        out_alone, out_batch = np.asarray(model(alone)), np.asarray(model(batch))
        if out_batch.ndim == 3:  # per step: compare the valid steps
            np.testing.assert_allclose(out_batch[0, :5], out_alone[0], rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_allclose(out_batch[0], out_alone[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_name", ["rnn", "lstm", "gru"])
def test_step_by_step_matches_the_full_forward_pass(model_name):
    cfg, splits, model = build(model_name, "copy_memory", ["data.delay=4", "model.layers=2"])
    model.eval()
    x = jax.tree.map(lambda a: a[:3], splits.train[0])
    full = model(x)  # (3, T, K)
    carry = model.initial_carry(3)
    for t in range(x["inputs"].shape[1]):
        carry, logits = model.step(carry, x["inputs"][:, t])
        np.testing.assert_allclose(logits, full[:, t], rtol=1e-5, atol=1e-5)


def test_gradient_flow_probe_is_the_gradient_with_respect_to_each_hidden_state():
    """For a one-label head, d(loss)/d(h_T) is the head's kernel applied to d(loss)/d(output),
    and every norm is the batch's d(loss)/d(h_t) (checked by finite differences at t=1)."""
    cfg = load_config(None, ["model.name=rnn", "model.hidden=6", "data.name=adding", "data.length=7",
                             *SMALL_DATA, "training.batch_size=16", "training.epochs=1",
                             "training.eval_batch_size=16"])
    exp = build_experiment(cfg, SHARED_DATA)
    batches = exp.eval_batches("val")
    norms = exp.steps.gradient_flow(batches)
    assert norms.shape == (7,) and np.all(norms > 0)

    model, _ = nnx.merge(exp.steps.eval_graphdef, exp.steps.state)
    x, y = jax.tree.map(lambda a: a[0], batches.x), batches.y[0]
    out = model(x)
    d_out = 2 * (out - y) / out.size  # d mean((out - y)^2) / d out, (B, 1)
    expected_last = np.linalg.norm(d_out @ model.head.kernel[...].T)
    assert norms[-1] == pytest.approx(expected_last, rel=1e-4)

    def loss_with_probe(probe):
        return exp.steps.task.loss(model(x, probe=probe), y, 0)[0]

    probe = jnp.zeros((x["inputs"].shape[0], 7, 6))
    direction = jax.grad(loss_with_probe)(probe)[:, 0] / norms[0]  # unit step along d(loss)/d(h_1)
    epsilon = 1e-2
    bumped = probe.at[:, 0].add(epsilon * direction)
    slope = (loss_with_probe(bumped) - loss_with_probe(probe)) / epsilon
    assert float(slope) == pytest.approx(float(norms[0]), rel=2e-2)


def test_sequence_tasks_and_their_baselines():
    adding = dataset("adding", "data.length=50", "data.n_test=20000")
    splits = adding.load(SHARED_DATA)
    inputs, targets = splits.train[0]["inputs"], splits.train[1]
    assert inputs.shape == (20000, 50, 2) and np.all(inputs[..., 1].sum(axis=1) == 2)
    np.testing.assert_allclose(targets[:, 0], (inputs[..., 0] * inputs[..., 1]).sum(axis=1), rtol=1e-6)
    name, baseline = adding.baseline(splits)
    assert name == "always predict 1" and baseline["test/loss"] == pytest.approx(1 / 6, abs=0.01)

    copy = dataset("copy_memory", "data.delay=30")
    splits = copy.load(SHARED_DATA)
    x, y = splits.test
    assert x["inputs"].shape == (2000, 50) and np.all(x["inputs"][:, 39] == 9)
    np.testing.assert_array_equal(y[:, -10:], x["inputs"][:, :10])
    assert np.all(y[:, :-10] == 0)
    memoryless = -np.log(np.concatenate([np.ones(40), np.full(10, 1 / 8)])).mean()  # blanks sure, symbols uniform
    assert copy.baseline(splits)[1]["test/loss"] == pytest.approx(memoryless)
    assert copy.baseline(splits)[1]["test/loss"] == pytest.approx(10 * math.log(8) / 50)

    forecast = dataset("forecast", "data.window=20", "data.horizon=4")
    splits = forecast.load(SHARED_DATA)
    x, y = splits.test
    expected = np.mean((y - x["inputs"][:, -1, :]) ** 2)
    assert forecast.baseline(splits)[1]["test/loss"] == pytest.approx(expected) and y.shape == (2000, 4)

    parity = dataset("varlen_parity", "data.min_length=3", "data.max_length=9")
    x, y = parity.load(SHARED_DATA).train
    assert x["lengths"].min() == 3 and x["lengths"].max() == 9
    valid = np.arange(9)[None, :] < x["lengths"][:, None]
    assert np.all(x["inputs"][..., 0][~valid] == 0) and np.all(np.abs(x["inputs"][..., 0][valid]) == 1)
    np.testing.assert_array_equal(y, ((x["inputs"][..., 0] > 0).sum(axis=1) % 2))
    splits = parity.load(SHARED_DATA)
    assert not np.array_equal(splits.train[1][:50], splits.test[1][:50])  # the splits are drawn apart


def test_token_classification_ignores_padding_labels():
    task = TokenClassification(3)
    logits = jax.random.normal(jax.random.key(0), (2, 4, 3))
    labels = jnp.array([[0, 1, 2, -1], [2, 2, -1, -1]])
    loss, metrics = task.loss(logits, labels, 0)
    kept = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    expected = np.mean([-jax.nn.log_softmax(logits[b, t])[labels[b, t]] for b, t in kept])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    sums = task.eval_sums(logits, labels, jnp.array([1.0, 0.0]))  # the second row is an eval padding row
    assert float(sums["count"]) == 3
    assert task.finalize(sums)["bits_per_token"] == pytest.approx(task.finalize(sums)["loss"] / math.log(2))


@pytest.mark.parametrize("model_name", ["rnn", "lstm", "gru"])
def test_overfits_one_batch_and_reproduces_exactly(model_name, tmp_path):
    overrides = [f"model.name={model_name}", "model.hidden=32", "data.name=adding", "data.length=10", "data.n_train=32",
                 "data.n_val=32", "data.n_test=32", "training.batch_size=32", "training.steps=300",
                 "training.eval_every=100", "optimizer.learning_rate=0.01", "training.gradient_flow=true"]
    first = fit(load_config(None, overrides), tmp_path / "a", data_dir=SHARED_DATA, show_progress=False)
    assert first["metrics"]["final/train/loss"] < 0.01 * first["baseline"]["metrics"]["test/loss"]
    again = fit(load_config(None, overrides), tmp_path / "b", data_dir=SHARED_DATA, show_progress=False)
    assert again["metrics"] == first["metrics"]
    assert (tmp_path / "a" / "gradient_flow.png").stat().st_size > 0
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [len(r["gradient_flow"]) for r in records] == [10, 10, 10]
    assert first["gradient_flow"]["last"] == records[-1]["gradient_flow"][-1]


@pytest.fixture(scope="module")
def small_text(tmp_path_factory):
    """The first 30,000 characters of tiny shakespeare."""
    source = SHARED_DATA / "tinyshakespeare" / "input.txt"
    if not source.exists():
        pytest.skip(f"{source} is missing")
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(source.read_text(encoding="utf-8")[:30000], encoding="utf-8")
    return path


def test_text_windows_cover_the_validation_text_once(small_text):
    cfg = load_config(None, ["model.name=lstm", "data.name=text", f"data.path={small_text}", "data.seq_length=64"])
    splits = cfg.data.load(SHARED_DATA)
    text = small_text.read_text(encoding="utf-8")
    vocab = splits.info.vocab
    assert vocab == "".join(sorted(set(text))) and splits.info.n_outputs == len(vocab)
    x, y = splits.val
    n_train = int(len(text) * 0.9)
    assert (y >= 0).sum() == len(text) - n_train - 1  # every validation character but the first is a target once
    decoded = "".join(vocab[i] for i in x["inputs"][0]) + vocab[y[0, -1]]
    assert decoded == text[n_train: n_train + 65]
    assert splits.train[0]["inputs"].shape == ((n_train - 1) // 64, 64)


def test_charlm_trains_evals_and_samples_through_the_cli(small_text, tmp_path):
    run = tmp_path / "lm"
    overrides = sets("model.name=gru", "model.hidden=64", "data.name=text", f"data.path={small_text}",
                     "data.seq_length=32", "training.steps=120", "training.eval_every=60", "training.batch_size=32",
                     "optimizer.learning_rate=0.005", "optimizer.clip_norm=1.0")
    summary = train_json("--run-dir", str(run), *overrides)
    metrics = summary["metrics"]
    assert metrics["val/loss"] < math.log(len(json.loads((run / "vocab.json").read_text())["vocab"]))  # beats uniform
    assert metrics["val/bits_per_token"] == pytest.approx(metrics["val/loss"] / math.log(2))

    evaluated = json.loads(invoke("eval", str(run), "--split", "val", "--json", check=True).stdout)
    assert evaluated["metrics"]["val/loss"] == metrics["val/loss"]

    def sample(**options):
        return sample_run(run, prompt="First", length=80, **options)["text"]

    first, again, other = sample(seed=3), sample(seed=3), sample(seed=4)
    assert len(first) == 80 and first == again and first != other
    assert set(first) <= set(small_text.read_text(encoding="utf-8"))
    greedy = sample(temperature=0.0)
    assert greedy == sample(temperature=0.0, seed=9)  # greedy ignores the seed
    assert sample(top_k=1, seed=5) == greedy  # top-1 is greedy
    as_json = json.loads(invoke("sample", str(run), "--prompt", "First", "--length", "80", "--seed", "3", "--json",
                                 check=True).stdout)
    assert as_json["text"] == first and as_json["checkpoint"] == summary["best_step"]
    plain = invoke("sample", str(run), "--prompt", "First", "--length", "10", check=True).stdout
    assert plain.startswith("First") and len(plain.rstrip("\n")) == 15


@pytest.mark.parametrize("model_name", ["rnn", "lstm", "gru"])
def test_checkpoints_resume_and_eval_for_every_cell(model_name, tmp_path):
    """A run cut back to its step-20 checkpoint (as a kill after that save leaves it) and
    resumed ends exactly like the uninterrupted run; `dlcli eval`'s library call
    reproduces the test metrics from the checkpoint. (The SIGKILL itself: test_cli.)"""
    import shutil

    from dlcli.training.evaluate import evaluate_run

    overrides = [f"model.name={model_name}", "model.hidden=8", "model.layers=2", "model.dropout=0.2",
                 "data.name=adding", "data.length=10", *SMALL_DATA, "training.steps=40", "training.eval_every=10",
                 "training.batch_size=32", "training.restore_best=false", "checkpoint.keep=10",
                 "checkpoint.min_interval_s=0"]
    whole = fit(load_config(None, overrides), tmp_path / "whole", data_dir=SHARED_DATA, show_progress=False)
    cut = Path(shutil.copytree(tmp_path / "whole", tmp_path / "cut"))
    for step in (30, 40):
        shutil.rmtree(cut / "checkpoints" / str(step))
    resumed = fit(load_config(None, overrides), cut, data_dir=SHARED_DATA, resume=True, show_progress=False)
    assert resumed["metrics"] == whole["metrics"]
    evaluated = evaluate_run(tmp_path / "whole", checkpoint="latest", split="test", data_dir=SHARED_DATA)
    assert evaluated["checkpoint"] == 40
    assert evaluated["metrics"] == {k: v for k, v in whole["metrics"].items() if k.startswith("test/")}


def test_lstm_with_gradient_flow_and_a_schedule_resumes_evaluates_and_reproduces(tmp_path):
    """Cut back to its first checkpoint and resumed, a two-layer LSTM with dropout, a
    warm-up-cosine schedule and the gradient-flow records ends exactly like the
    uninterrupted run and like a second run. (A real SIGKILL and resume: test_cli.)"""
    assert_resumes_evaluates_and_reproduces(["model.name=lstm", "model.hidden=16", "model.layers=2", "model.dropout=0.2",
                                             "data.name=adding", "data.length=20", *SMALL_DATA, "training.steps=40",
                                             "training.eval_every=20", "training.steps_per_dispatch=10",
                                             "training.batch_size=32", "training.gradient_flow=true",
                                             "schedule.name=warmup_cosine", "schedule.warmup_steps=10",
                                             "training.restore_best=false", "checkpoint.keep=10"], tmp_path)
