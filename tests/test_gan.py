"""GAN family: parameter counts (every DCGAN option), the transposed convolution and
spectral normalisation, the mixtures' mode statistics, the Fréchet distance, the
players' update schedule and moving average, the gradient penalty, stability warnings,
the classifier judge on real images, and a run that resumes, evaluates and reproduces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import FAMILY_TINY, IMAGES, SHARED_DATA, assert_resumes_evaluates_and_reproduces, invoke, sets, train_json

from dlcli.config import DATASETS, load_config
from dlcli.models import count_params
from dlcli.models.layers import SpectralNormed, TransposedConv
from dlcli.specs.gan import GANConfig
from dlcli.tasks import make_task
from dlcli.tasks.adversarial import Adversarial, Judge, frechet_distance, moments, stability_warnings

RING = ["model.name=gan", "data.name=ring8", "data.n_train=512", "data.n_val=256", "data.n_test=256",
        "model.latent=2", "model.generator=[16,16]", "model.discriminator=[16,16]", "training.batch_size=64"]


def _params(module) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(module))]


@pytest.mark.parametrize("settings, dataset", [
    ({}, "ring8"),
    ({"norm": "batch", "pack": 2, "ema": 0.99}, "ring8"),
    ({"architecture": "dcgan", "g_channels": [8, 4], "d_channels": [4, 8], "norm": "layer", "pack": 2, "ema": 0.9},
     "digits"),
    ({"architecture": "dcgan", "g_channels": [8, 4], "d_channels": [4, 8], "g_dense": [12, 10], "d_dense": [6],
      "norm": "batch"}, "digits"),
    ({"architecture": "dcgan", "g_channels": [8, 4], "d_channels": [4, 8, 8], "g_dense": [16], "d_dense": [12],
      "g_kernel": 4, "d_kernel": 4, "upsampling": "transposed", "spectral_norm": True, "norm": "batch"}, "digits"),
    ({"architecture": "dcgan", "g_channels": [8, 6, 4], "d_channels": [4, 8], "g_kernel": 5, "d_kernel": 5,
      "spectral_norm": True, "pack": 2}, "mnist"),
    ({"architecture": "dcgan", "g_channels": [8, 4], "d_channels": [4, 8], "d_dense": [6], "conditional": True,
      "spectral_norm": True, "ema": 0.9}, "digits"),
], ids=["mlp", "mlp-batchnorm-pack-ema", "dcgan-layernorm-pack-ema", "dcgan-dense-batchnorm",
        "dcgan-4x4-transposed-spectral-batchnorm-deeper-d", "dcgan-5x5-subpixel-spectral-pack",
        "dcgan-conditional-projection-spectral-ema"])
def test_parameter_count_matches_the_spec_and_the_average_is_not_counted(settings, dataset):
    spec = GANConfig(**settings)
    info = DATASETS.get(dataset)().info()
    model = spec.build(info, nnx.Rngs(params=0))
    assert count_params(model) == spec.param_count(info)
    labels = jnp.asarray([0, 1, 2, 3] * 2) if spec.conditional else None
    samples, scores = nnx.jit(lambda m: (s := m.sample(jax.random.key(0), 4),
                                         m.critic(jnp.concatenate([s, s]), labels)))(model)
    assert samples.shape == (4, *info.input_shape) and scores.shape == (8 // spec.pack,)
    if spec.conditional:  # the class asked for changes the sample, and the projection changes the score
        z = jax.random.normal(jax.random.key(1), (2, spec.latent))
        a, b = model.generate(z, jnp.asarray([3, 3])), model.generate(z, jnp.asarray([3, 5]))
        np.testing.assert_array_equal(a[0], b[0])
        assert not np.allclose(a[1], b[1])
        other = model.critic(jnp.concatenate([samples, samples]), (labels + 1) % 10)
        assert not np.allclose(scores, other)
    if spec.ema is not None:  # the average starts as the generator, in buffers of its own
        z, classes = jnp.ones((2, spec.latent)), ((jnp.asarray([4, 7]),) if spec.conditional else ())
        np.testing.assert_array_equal(model.generate(z, *classes), model.generator(z, *classes))


@pytest.mark.parametrize("dataset", ["ring8", "grid25"])
def test_real_samples_score_as_the_papers_define(dataset):
    """A perfect sampler: every mode covered, P(chi2_2 < 9) = 1 - e^-4.5 high quality, near-uniform histogram;
    the same points moved 10 std away from their modes are none of these."""
    cfg = load_config(None, ["model.name=gan", f"data.name={dataset}"])
    task = make_task(cfg)
    points, _ = cfg.data.load(SHARED_DATA).test
    mask = jnp.ones(len(points))
    real = task.finalize(task.eval_sums(jnp.asarray(points), None, mask))
    assert real["modes"] == len(cfg.data.centres())
    assert abs(real["high_quality"] - (1 - np.exp(-4.5))) < 0.01
    assert real["kl_uniform"] < 0.02
    moved = task.finalize(task.eval_sums(jnp.asarray(points) + jnp.array([10 * cfg.data.std, 0.0]), None, mask))
    assert moved["modes"] == 0 and moved["high_quality"] == 0 and moved["kl_uniform"] == np.inf


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 2.0, 5), rng.uniform(0.5, 2.0, 5)
    mean = rng.normal(size=5)
    # diagonal covariances: ||mean difference||^2 + sum (a - b)^2
    assert frechet_distance(mean, np.diag(a**2), 0 * mean, np.diag(b**2)) == pytest.approx(
        np.sum(mean**2) + np.sum((a - b) ** 2))
    from scipy.linalg import sqrtm

    x, y = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    cov_a, cov_b = x @ x.T, y @ y.T
    expected = np.trace(cov_a + cov_b - 2 * np.real(sqrtm(cov_a @ cov_b)))
    assert frechet_distance(mean, cov_a, mean, cov_b) == pytest.approx(expected, rel=1e-6)
    features = rng.normal(size=(50, 3)).astype(np.float32)
    sums = {"n": 50, "features": features.sum(0), "outer": features.T @ features}
    np.testing.assert_allclose(moments(sums)[1], np.cov(features, rowvar=False), rtol=1e-5)


def test_discriminator_steps_every_step_generator_every_n_critic_and_the_average_follows():
    cfg = load_config(None, [*RING, "model.loss=wgan_gp", "model.n_critic=2", "model.ema=0.9"])
    task = make_task(cfg)
    from dlcli.models.gan import GANOptimizers

    model = cfg.model.build(cfg.info, nnx.Rngs(params=0))
    optimizers = GANOptimizers(model, cfg.model, lambda peak: peak)
    x = jnp.asarray(cfg.data.load(SHARED_DATA).train[0][:64])
    d0, g0, avg0 = _params(model.discriminator), _params(model.generator), _params(model.average)
    update = nnx.jit(task.update)
    metrics = update(model, optimizers, x, None, jnp.asarray(0), jax.random.key(1))
    assert np.isnan(metrics["g_loss"]) and metrics["gp"] > 0
    # every discriminator parameter moves but the output bias, which a Wasserstein loss cancels
    assert sum(not np.array_equal(a, b) for a, b in zip(d0, _params(model.discriminator))) == len(d0) - 1
    assert all(np.array_equal(a, b) for a, b in zip(g0, _params(model.generator)))
    assert all(np.array_equal(a, b) for a, b in zip(avg0, _params(model.average)))
    metrics = update(model, optimizers, x, None, jnp.asarray(1), jax.random.key(2))
    assert np.isfinite(metrics["g_loss"]) and metrics["g_grad_norm"] > 0
    g1 = _params(model.generator)
    assert all(not np.array_equal(a, b) for a, b in zip(g0, g1))
    decay = min(0.9, 2 / 11)  # the first generator update: the warm-up's (1 + 1) / (10 + 1)
    for old, new, average in zip(avg0, g1, _params(model.average)):
        np.testing.assert_allclose(average, decay * old + (1 - decay) * new, rtol=1e-5)


@pytest.mark.parametrize("kernel, impl", [(3, "im2col"), (4, "im2col"), (5, "im2col"), (4, "xla")])
def test_transposed_convolution_is_laxs_with_twice_the_size(kernel, impl):
    layer = TransposedConv(3, 5, kernel, impl=impl, rngs=nnx.Rngs(params=0))
    x = jax.random.normal(jax.random.key(1), (2, 7, 6, 3))

    def reference(x, k):
        return jax.lax.conv_transpose(x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + layer.bias[...]

    k = layer.kernel[...]
    assert layer(x).shape == (2, 14, 12, 5)
    np.testing.assert_allclose(layer(x), reference(x, k), rtol=1e-5, atol=1e-5)
    loss = lambda y: (y ** 2).sum()  # noqa: E731
    np.testing.assert_allclose(jax.grad(lambda x: loss(layer(x)))(x), jax.grad(lambda x: loss(reference(x, k)))(x),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nnx.grad(lambda m: loss(m(x)))(layer)["kernel"][...],
                               jax.grad(lambda k: loss(reference(x, k)))(k), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_spectral_norm_divides_the_kernel_by_its_largest_singular_value(kind):
    rngs = nnx.Rngs(params=0)
    layer = nnx.Linear(12, 7, rngs=rngs) if kind == "dense" else nnx.Conv(3, 7, (4, 4), strides=2, rngs=rngs)
    normed = SpectralNormed(layer, rngs=rngs)
    matrix = np.asarray(layer.kernel[...]).reshape(-1, 7)
    largest = np.linalg.svd(matrix, compute_uv=False)[0]
    assert count_params(normed) == count_params(layer)  # the power iteration's vector is state, not a parameter
    first = float(normed.sigma())
    for _ in range(30):
        normed.refine()
    assert first <= largest * (1 + 1e-5) and float(normed.sigma()) == pytest.approx(largest, rel=1e-4)
    x = jax.random.normal(jax.random.key(2), (4, 12) if kind == "dense" else (4, 8, 8, 3))
    layer.kernel[...] = layer.kernel[...] / float(normed.sigma())
    expected = layer(x)  # the layer itself, its kernel divided by sigma
    layer.kernel[...] = layer.kernel[...] * float(normed.sigma())
    np.testing.assert_allclose(normed(x), expected, rtol=1e-5, atol=1e-6)


def test_a_spectrally_normalised_dcgan_refines_its_estimates_every_step():
    cfg = load_config(None, ["model.name=gan", "model.architecture=dcgan", "data.name=digits", "data.normalize=unit",
                             "model.g_channels=[8,4]", "model.d_channels=[4,8]", "model.g_kernel=4", "model.d_kernel=4",
                             "model.upsampling=transposed", "model.spectral_norm=true", "model.norm=batch",
                             "model.classifier_run=unused"])
    from dlcli.models.gan import GANOptimizers

    model = cfg.model.build(cfg.info, nnx.Rngs(params=0))
    optimizers = GANOptimizers(model, cfg.model, lambda peak: peak)
    x = jnp.asarray(cfg.data.load(SHARED_DATA).train[0][:16])
    estimates = [m for _, m in nnx.iter_graph(model.discriminator) if isinstance(m, SpectralNormed)]
    assert len(estimates) == 3  # two convolutions and the read-out
    before = [np.asarray(m.u[...]) for m in estimates]
    metrics = nnx.jit(make_task(cfg).update)(model, optimizers, x, None, jnp.asarray(0), jax.random.key(1))
    assert np.isfinite(float(metrics["d_loss"])) and np.isfinite(float(metrics["g_loss"]))
    # the convolutions' vectors moved; the read-out's (1 output) is +-1, and its sigma exact, from the start
    assert [not np.allclose(u, m.u[...]) for u, m in zip(before, estimates)] == [True, True, False]


class LinearCritic(nnx.Module):
    def __init__(self, slope: float):
        self.weights = nnx.Param(jnp.array([0.6, 0.8]) * slope)  # norm `slope`

    def __call__(self, x):
        return x @ self.weights.get_value()


@pytest.mark.parametrize("slope, penalty", [(1.0, 0.0), (2.0, 1.0), (0.5, 0.25)])
def test_gradient_penalty_is_the_squared_distance_of_the_slope_from_one(slope, penalty):
    task = Adversarial("wgan_gp", 10.0, 1, 2)
    real, fake = jnp.ones((8, 2)), jnp.zeros((8, 2))
    assert float(task.gradient_penalty(LinearCritic(slope), 1, real, fake, jax.random.key(0))) == pytest.approx(penalty)


@pytest.mark.parametrize("slope", [0.5, 1.0, 3.0])
def test_r1_penalty_is_the_squared_slope_on_real_samples(slope):
    assert float(Adversarial.r1_penalty(LinearCritic(slope), 1, jnp.ones((8, 2)))) == pytest.approx(slope**2)


def test_r1_term_enters_the_discriminator_loss_with_half_its_weight():
    cfg = load_config(None, [*RING, "model.loss=hinge", "model.r1_weight=4"])
    task = make_task(cfg)
    from dlcli.models.gan import GANOptimizers

    model = cfg.model.build(cfg.info, nnx.Rngs(params=0))
    x = jnp.asarray(cfg.data.load(SHARED_DATA).train[0][:64])
    expected = 0.5 * 4 * float(Adversarial.r1_penalty(model.discriminator, model.discriminator.pack, x))  # before the update moves D
    optimizers = GANOptimizers(model, cfg.model, lambda peak: peak)
    metrics = nnx.jit(task.update)(model, optimizers, x, None, jnp.asarray(0), jax.random.key(1))
    assert float(metrics["r1"]) == pytest.approx(expected, rel=1e-5) and expected > 0
    assert float(metrics["loss"]) == pytest.approx(float(metrics["d_loss"] + metrics["r1"]), rel=1e-6)
    assert float(metrics["gp"]) == 0.0


def test_stability_warnings_name_collapse_and_divergence():
    history = [{"val/modes": 8, "train/d_loss": 1.3, "train/g_loss": 0.7}]
    assert stability_warnings(history, {"val/modes": 7, "train/d_loss": 1.2, "train/g_loss": 0.9}) == []
    warnings = stability_warnings(history, {"val/modes": 5, "train/d_loss": 1.2, "train/g_loss": 40.0})
    assert warnings == ["collapse: val/modes fell from 8 to 5", "divergence: train/g_loss is 40 (first evaluation: 0.7)"]
    assert stability_warnings([], {"val/classes": 3, "val/top_class_share": 0.7}) == \
        ["collapse: 70% of the samples are one class"]


def test_judge_measures_real_images_and_its_reference_is_the_test_sets_distance(tmp_path):
    from dlcli.runs import RunDir
    from dlcli.training.loop import fit

    classifier = ["data.normalize=unit", "training.epochs=10"]
    fit(load_config(None, classifier), tmp_path / "classifier", data_dir=SHARED_DATA, show_progress=False)
    cfg = load_config(None, ["model.name=gan", "data.name=digits", "data.normalize=unit",
                             f"model.classifier_run={tmp_path / 'classifier'}"])
    splits = cfg.data.load(SHARED_DATA)
    n = len(splits.val[0])
    model, _ = RunDir(tmp_path / "classifier").restore_model("best")
    judge = Judge.from_model(model, splits, n)
    train, test = (np.asarray(model.features(jnp.asarray(x)), np.float64) for x in (splits.train[0], splits.test[0][:n]))
    expected = frechet_distance(test.mean(0), np.cov(test, rowvar=False), train.mean(0), np.cov(train, rowvar=False))
    assert judge.reference_distance == pytest.approx(expected, rel=1e-3)
    images = jnp.asarray(splits.test[0])
    real = judge.scores(judge.measure(images, jnp.ones(len(images))))
    assert real["classes"] == 10 and real["class_kl"] < 0.05 and real["confident"] > 0.5
    one = judge.scores(judge.measure(images[:1].repeat(50, 0), jnp.ones(50)))
    assert one["top_class_share"] == 1.0 and one["classes"] <= 1 and one["frechet"] > 10 * real["frechet"]
    # a conditional generator's view: real images "asked for" as their true class score the
    # judge's accuracy; asked for the next class, what the judge gets wrong that way
    labels = jnp.asarray(splits.test[1])
    logits = model.out(model.features(images))
    predicted, confident = np.asarray(logits.argmax(1)), np.asarray(jax.nn.softmax(logits).max(1) >= 0.9)
    for asked in (labels, (labels + 1) % 10):
        scores = judge.scores(judge.measure(images, jnp.ones(len(images)), asked))
        hits = predicted == np.asarray(asked)
        assert scores["requested_accuracy"] == pytest.approx(hits.mean())
        assert scores["requested_confident"] == pytest.approx((hits & confident).mean())
    assert "requested_accuracy" not in real


def test_gan_run_resumes_evaluates_reproduces_and_draws_its_samples(tmp_path):
    from dlcli.generate import sample_image_grid

    overrides = [*RING, "model.loss=hinge", "model.norm=batch", "model.pack=2", "model.ema=0.9", "training.steps=64",
                 "training.eval_every=32", "training.restore_best=false", "checkpoint.keep=3"]
    assert_resumes_evaluates_and_reproduces(overrides, tmp_path)
    assert sorted(p.name for p in (tmp_path / "whole" / "samples").iterdir()) == ["step_0000032.png", "step_0000064.png"]
    result = sample_image_grid(tmp_path / "whole", n=100, out=tmp_path / "points.png")
    assert result["n"] == 100 and (tmp_path / "points.png").stat().st_size > 0


def test_a_conditional_gan_reports_the_class_asked_for_and_samples_one_class_or_a_row_per_class(tmp_path, judge):
    """experiments/cgan_mnist.yaml at a tiny size: its evaluations measure how often the
    judge sees the class asked for; `dlcli sample --label K` draws that class alone."""
    run = tmp_path / "cgan"
    summary = train_json("experiments/cgan_mnist.yaml", "--run-dir", str(run),
                         *sets(*FAMILY_TINY, *IMAGES, f"model.classifier_run={judge}", "model.g_channels=[8,8,8]",
                               "model.d_channels=[8,8]", "model.spectral_norm=true"))
    metrics = summary["metrics"]
    assert 0 <= metrics["test/requested_confident"] <= metrics["test/requested_accuracy"] <= 1
    drawn = {}
    for label in ("7", "3", None):
        out = tmp_path / f"label-{label}.png"
        result = invoke("sample", str(run), "--n", "20", *(["--label", label] if label else []), "--out", str(out),
                        "--json", check=True)
        assert json.loads(result.stdout).get("label") == (int(label) if label else None)
        drawn[label] = out.read_bytes()
    assert len(set(drawn.values())) == 3  # the class asked for reaches the generator

    refused = invoke("sample", str(run), "--n", "20", "--label", "10", "--out", str(tmp_path / "x.png"))
    assert refused.returncode == 2 and refused.stderr.strip() == "error: --label must be a class of mnist, 0 to 9; got 10"
    unconditional = Path(shutil.copytree(run, tmp_path / "unconditional"))  # its config says so; the label is refused first
    config = unconditional / "config.yaml"
    config.write_text(config.read_text().replace("conditional: true", "conditional: false"))
    refused = invoke("sample", str(unconditional), "--n", "20", "--label", "1", "--out", str(tmp_path / "x.png"))
    assert refused.returncode == 2 and "trained an unconditional gan; drop --label" in refused.stderr, refused.stderr
    assert not (tmp_path / "x.png").exists()
