"""The autoencoder family: parameter counts of every model in both architectures, the
reconstruction objective (negative ELBO, sparsity penalties, PSNR), corruption, and
through real runs: analyses (PCA, linear probe, anomaly AUROC, pictures), `dlcli
embed`, image `dlcli sample`, fine-tuning a pre-trained encoder, and checkpoints,
resume, eval and reproducibility."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import SHARED_DATA, assert_resumes_evaluates_and_reproduces, invoke, sets, train_json

from dlcli.config import load_config
from dlcli.errors import BadInput
from dlcli.generate import embed_run, sample_image_grid
from dlcli.models import count_params
from dlcli.models.autoencoder import corrupt
from dlcli.models.layers import depth_to_space
from dlcli.runs import RunDir, param_count
from dlcli.tasks.reconstruction import Reconstruction, bernoulli_kl
from dlcli.training.evaluate import evaluate_run
from dlcli.training.experiment import build_experiment
from dlcli.training.loop import fit

AUTOENCODERS = ["autoencoder", "denoising_autoencoder", "sparse_autoencoder", "vae"]
DIGITS = ["data.name=digits", "data.normalize=unit"]
SMALL = [*DIGITS, "model.hidden=[32]", "model.channels=[8, 16]", "model.code=6"]


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("name", AUTOENCODERS)
def test_parameter_counts_and_output_shapes(name, architecture):
    cfg = load_config(None, [f"model.name={name}", f"model.architecture={architecture}", *SMALL])
    model = cfg.model.build(cfg.info, nnx.Rngs(0))
    assert count_params(model) == cfg.model.param_count(cfg.info)
    x = jnp.asarray(cfg.data.load(SHARED_DATA).test[0][:5])
    outputs = nnx.jit(lambda m, x: m(x, rngs=nnx.Rngs(noise=1)))(model, x)
    assert outputs["logits"].shape == x.shape and outputs["code"].shape == (5, 6)
    assert ("kl" in outputs) == (name == "vae") and ("inputs" in outputs) == (name == "denoising_autoencoder")


def test_sub_pixel_upsampling_spreads_channel_groups_over_2x2_blocks():
    x = jnp.arange(2 * 3 * 3 * 8).reshape(2, 3, 3, 8)  # 4 groups of 2 channels
    up = depth_to_space(x)
    assert up.shape == (2, 6, 6, 2)
    for a in (0, 1):
        for b in (0, 1):
            group = 2 * a + b
            np.testing.assert_array_equal(up[:, a::2, b::2, :], x[..., 2 * group: 2 * group + 2])


def test_negative_elbo_is_reconstruction_plus_kl_and_psnr_reads_the_mse():
    task = Reconstruction(likelihood="bernoulli", variational=True, beta=0.5, kl_warmup_steps=10)
    x = jnp.asarray([[0.0, 1.0], [1.0, 1.0]])
    logits = jnp.asarray([[-2.0, 3.0], [0.5, 0.0]])
    kl = jnp.asarray([1.5, 0.25])
    nll = -(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits)).sum(-1)
    sums = task.eval_sums({"logits": logits, "code": jnp.zeros((2, 1)), "kl": kl}, x, jnp.asarray([1.0, 1.0]))
    metrics = task.finalize(jax.device_get(sums))
    assert metrics["neg_elbo"] == pytest.approx(float((nll + kl).mean()), rel=1e-6)
    assert metrics["recon_nll"] + metrics["kl"] == pytest.approx(metrics["neg_elbo"], rel=1e-6)
    mse = ((jax.nn.sigmoid(logits) - x) ** 2).mean(-1)
    assert metrics["psnr"] == pytest.approx(float((-10 * jnp.log10(mse)).mean()), rel=1e-6)
    # training weighs the KL by beta, warmed up linearly: step 4 of 10 -> 0.5 * 0.5
    loss, _ = task.loss({"logits": logits, "code": jnp.zeros((2, 1)), "kl": kl}, x, 4)
    assert float(loss) == pytest.approx(float(nll.mean() + 0.25 * kl.mean()), rel=1e-6)


def test_sparsity_penalties():
    kl_task = Reconstruction(sparsity="kl", sparsity_weight=2.0, sparsity_target=0.1)
    at_target = jnp.full((4, 3), 0.1)
    assert float(kl_task.sparsity_penalty(at_target)) == pytest.approx(0.0, abs=1e-6)
    busy = jnp.full((4, 3), 0.5)
    assert float(kl_task.sparsity_penalty(busy)) == pytest.approx(2.0 * 3 * float(bernoulli_kl(0.1, jnp.asarray(0.5))))
    l1_task = Reconstruction(sparsity="l1", sparsity_weight=0.5)
    assert float(l1_task.sparsity_penalty(jnp.asarray([[1.0, -2.0], [0.0, 1.0]]))) == pytest.approx(0.5 * 2.0)


def test_corruption_stays_in_range_and_masks_the_asked_share():
    x = jnp.full((20000,), 0.8)
    noisy = corrupt(x, jax.random.key(0), "gaussian", 0.5)
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0 and float(jnp.std(noisy)) > 0.2
    masked = corrupt(x, jax.random.key(0), "masking", 0.3)
    assert float((masked == 0).mean()) == pytest.approx(0.3, abs=0.02)
    assert bool(jnp.all((masked == 0) | (masked == x)))


def test_evaluation_noise_does_not_depend_on_the_batch_size(tmp_path):
    """A denoising run's evaluation corrupts each example by its index: the figures are
    the same whatever the evaluation batches."""
    overrides = ["model.name=denoising_autoencoder", *SMALL, "training.steps=16", "training.eval_every=16"]
    summary = fit(load_config(None, overrides), tmp_path / "run", data_dir=SHARED_DATA, show_progress=False)
    saved = tmp_path / "run" / "config.yaml"
    saved.write_text(saved.read_text().replace("eval_batch_size: 1000", "eval_batch_size: 7"))
    assert RunDir(tmp_path / "run").config().training.eval_batch_size == 7
    evaluated = evaluate_run(tmp_path / "run", split="test", data_dir=SHARED_DATA)
    for name in ("test/psnr", "test/noisy_psnr", "test/loss"):
        assert evaluated["metrics"][name] == pytest.approx(summary["metrics"][name], rel=1e-5)
    assert summary["metrics"]["test/noisy_psnr"] < 20


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> tuple[Path, dict]:
    """A small MLP VAE on digits with every analysis, trained through the CLI."""
    run = tmp_path_factory.mktemp("vae") / "run"
    summary = train_json("--run-dir", str(run), *sets(
        "model.name=vae", *DIGITS, "model.hidden=[64]", "model.code=8", "training.steps=320",
        "training.eval_every=160", "training.batch_size=64", "optimizer.learning_rate=0.003",
        "analysis.pca=true", "analysis.linear_probe=true"))
    return run, summary


def test_vae_run_reports_its_bound_pca_and_probes(vae_run):
    run, summary = vae_run
    metrics = summary["metrics"]
    assert metrics["test/recon_nll"] + metrics["test/kl"] == pytest.approx(metrics["test/neg_elbo"])
    assert metrics["test/kl"] > 0 and 0 < metrics["test/mse"] < 0.1
    assert metrics["probe/test/accuracy"] > 0.6 and metrics["pca_probe/test/accuracy"] > 0.6
    assert 0 < metrics["pca/test/mse"] < 0.1
    for picture in ("codes.png", "reconstructions.png", "samples.png", "interpolation.png"):
        assert (run / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluated = evaluate_run(run, split="test", data_dir=SHARED_DATA)
    assert evaluated["metrics"] == {k: v for k, v in metrics.items() if k.startswith("test/") and k.count("/") == 1}


def test_embed_exports_codes_labels_and_a_scatter(vae_run, tmp_path):
    run, summary = vae_run
    out = tmp_path / "codes.npz"
    result = json.loads(invoke("embed", str(run), "--out", str(out), "--json", check=True).stdout)
    saved = np.load(out)
    cfg = load_config(None, [*DIGITS])
    np.testing.assert_array_equal(saved["labels"], cfg.data.load(SHARED_DATA).test[1])
    assert saved["codes"].shape == (len(saved["labels"]), 8) and result["code_dims"] == 8
    assert (tmp_path / "codes.png").is_file()
    assert result["mean_reconstruction_mse"] == pytest.approx(float(saved["reconstruction_errors"].mean()))
    with pytest.raises(BadInput, match="already exists; pass --overwrite"):
        embed_run(run, split="test", out=out, data_dir=SHARED_DATA)


def test_vae_samples_a_grid_from_its_prior(vae_run, tmp_path):
    run, _ = vae_run
    out = tmp_path / "grid.png"
    printed = invoke("sample", str(run), "--n", "9", "--out", str(out), check=True).stdout
    assert "9 samples" in printed and out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(BadInput, match="--n must be between 1 and 10000"):
        sample_image_grid(run, n=0, out=tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_fine_tuning_starts_from_the_pretrained_encoder_and_then_needs_it_no_more(vae_run, tmp_path):
    """The classifier starts from the autoencoder's encoder weights; once it has run, the
    autoencoder's folder can go: eval, restoring and --resume use the run's own files."""
    source = shutil.copytree(vae_run[0], tmp_path / "source")
    overrides = [*DIGITS, "model.name=encoder_classifier", f"model.autoencoder_run={source}", "model.freeze=true",
                 "training.steps=96", "training.eval_every=48", "optimizer.learning_rate=0.03",
                 "checkpoint.min_interval_s=0"]
    cfg = load_config(None, overrides)
    exp = build_experiment(cfg, SHARED_DATA)
    classifier, _ = nnx.merge(exp.steps.train_graphdef, exp.steps.state)
    assert count_params(classifier) == param_count(cfg, cfg.info, exp.references)
    pretrained, _ = RunDir(source).restore_model("best")

    def weights(module):
        return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(module, nnx.Param)))

    np.testing.assert_equal(weights(classifier.encoder), weights(pretrained.encoder))
    summary = fit(cfg, tmp_path / "frozen", data_dir=SHARED_DATA, show_progress=False)
    assert summary["metrics"]["test/accuracy"] > 0.5
    shutil.rmtree(source)
    trained, _ = RunDir(tmp_path / "frozen").restore_model("latest")
    np.testing.assert_equal(weights(trained.encoder), weights(pretrained.encoder))  # frozen: untouched
    evaluated = evaluate_run(tmp_path / "frozen", split="test", data_dir=SHARED_DATA)
    assert evaluated["metrics"]["test/accuracy"] == summary["metrics"]["test/accuracy"]
    shutil.rmtree(tmp_path / "frozen" / "checkpoints" / "96")
    resumed = fit(cfg, tmp_path / "frozen", data_dir=SHARED_DATA, resume=True, show_progress=False)
    assert resumed["metrics"] == summary["metrics"]


def test_anomaly_auroc_is_the_auroc_of_the_exported_errors(tmp_path):
    """Trained on digit 0 only; the summary's AUROC equals one computed from `dlcli
    embed`'s per-image reconstruction errors, and zeros score lower than the rest."""
    from sklearn.metrics import roc_auc_score

    run = tmp_path / "run"
    cfg = load_config(None, ["model.name=autoencoder", *SMALL, "analysis.normal_classes=[0]", "training.steps=96",
                             "training.eval_every=48", "training.batch_size=32", "optimizer.learning_rate=0.003"])
    summary = fit(cfg, run, data_dir=SHARED_DATA, show_progress=False)
    assert (run / "anomaly_scores.png").is_file()
    out = tmp_path / "codes.npz"
    embed_run(run, split="test", out=out, data_dir=SHARED_DATA)
    saved = np.load(out)
    expected = roc_auc_score(saved["labels"] != 0, saved["reconstruction_errors"])
    assert summary["metrics"]["test/auroc"] == pytest.approx(expected, abs=1e-9)
    assert summary["metrics"]["test/auroc"] > 0.6


def test_denoising_run_resumes_evaluates_and_reproduces(tmp_path):
    """A run cut back to its step-16 checkpoint and resumed ends exactly like the
    uninterrupted run and like a second run; eval reproduces the test metrics, noise
    included. (A real SIGKILL and resume: test_cli.)"""
    assert_resumes_evaluates_and_reproduces(["model.name=denoising_autoencoder", *SMALL, "training.steps=32",
                                             "training.eval_every=16", "training.restore_best=false",
                                             "checkpoint.keep=10"], tmp_path)


def test_vae_resumes_in_its_kl_warmup_evaluates_and_reproduces(tmp_path):
    """A VAE cut back to its step-20 checkpoint, in the middle of its KL warm-up (with a
    warm-up-cosine learning rate), and resumed ends exactly like the uninterrupted run."""
    assert_resumes_evaluates_and_reproduces(["model.name=vae", "data.normalize=unit", *SMALL, "training.steps=40",
                                             "training.eval_every=20", "training.steps_per_dispatch=10",
                                             "model.kl_warmup_steps=30", "schedule.name=warmup_cosine",
                                             "schedule.warmup_steps=10", "training.restore_best=false",
                                             "checkpoint.keep=10"], tmp_path)
