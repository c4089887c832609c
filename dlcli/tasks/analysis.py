"""What an autoencoder run measures and draws after training, beside its test metrics,
and the model-level helpers behind `dlcli embed` and image `dlcli sample` (which read
run folders: `dlcli.generate`).

- dimensionality reduction: the test codes scattered by label (codes.png; a PCA
  projection of the codes when they have more than two dimensions); with
  `analysis.pca`, PCA with as many components as the code, fit on the training
  images, measured on the test images (its reconstructions clipped to [0, 1] as the
  autoencoder's are);
- reconstructions.png: test images, the corrupted inputs of a denoising autoencoder
  (the evaluation's own noise), and the reconstructions;
- anomaly detection (`analysis.normal_classes`, `analysis.ood_dataset`): every test
  image scored by its reconstruction error (the code's decoding, no noise), the AUROC
  of telling anomalies apart, and a histogram of the scores (anomaly_scores.png);
- features (`analysis.linear_probe`): logistic regression on frozen codes;
- generation (VAE): samples.png from the prior and interpolation.png, decodings along
  straight lines between the codes of pairs of test images.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlcli.data import DATASETS, Splits

BATCH = 500


def psnr(mse: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB for data in [0, 1] (mse floored at 1e-10)."""
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def restrict_to_classes(splits: Splits, classes: list[int]) -> Splits:
    """Training and validation keep only the `classes` (the normal data); test keeps everything."""

    def keep(part):
        chosen = np.isin(part[1], classes)
        return part[0][chosen], part[1][chosen]

    return Splits(splits.info, keep(splits.train), keep(splits.val), splits.test)


def _batched(fn, x: np.ndarray) -> np.ndarray:
    """fn over x in fixed batches of BATCH rows (the last one zero-padded, so one program serves all)."""
    outputs = []
    for start in range(0, len(x), BATCH):
        part = x[start: start + BATCH]
        padded = np.concatenate([part, np.zeros((BATCH - len(part), *part.shape[1:]), part.dtype)])
        outputs.append(np.asarray(fn(padded))[: len(part)])
    return np.concatenate(outputs)


@nnx.jit
def _encode(model, x):
    return model.encode(x)


@nnx.jit
def _reconstruct(model, x):
    return jax.nn.sigmoid(model.decode(model.encode(x)))


@nnx.jit
def _decode(model, codes):
    return jax.nn.sigmoid(model.decode(codes))


def encode(model, x: np.ndarray) -> np.ndarray:
    """(N, ...) inputs -> (N, code) codes (a VAE's posterior means)."""
    return _batched(lambda b: _encode(model, b), x)


def reconstruction_errors(model, x: np.ndarray) -> np.ndarray:
    """(N,) mean squared error per value of each input's reconstruction (no noise)."""
    recon = _batched(lambda b: _reconstruct(model, b), x)
    return ((recon - x) ** 2).reshape(len(x), -1).mean(-1)


def auroc(normal_scores: np.ndarray, anomalous_scores: np.ndarray) -> float:
    """Area under the ROC curve of flagging anomalies by a high score."""
    from sklearn.metrics import roc_auc_score

    labels = np.concatenate([np.zeros(len(normal_scores)), np.ones(len(anomalous_scores))])
    return float(roc_auc_score(labels, np.concatenate([normal_scores, anomalous_scores])))


def analyse(cfg, splits: Splits, model, task, run_dir: Path, data_dir: Path) -> dict:
    """Every measurement and picture the config asks for; returns {"metrics": {...},
    "artifacts": [file names]} (and the sparsity target when there is one)."""
    from dlcli import plots

    x_test, y_test = splits.test
    metrics, artifacts = {}, []
    codes_test = encode(model, x_test)
    scatter_codes(codes_test, y_test, run_dir / "codes.png", f"{cfg.name}: test codes")
    artifacts.append("codes.png")

    shown = x_test[:10]
    outputs = nnx.jit(lambda m, x, i: task.eval_outputs(m, x, i))(model, shown, jnp.arange(len(shown)))
    rows, names = [shown], ["input"]
    if "inputs" in outputs:
        rows.append(np.asarray(outputs["inputs"]))
        names.append("corrupted")
    rows.append(np.asarray(jax.nn.sigmoid(outputs["logits"])))
    names.append("reconstructed")
    plots.image_grid(rows, run_dir / "reconstructions.png", names, f"{cfg.name}: test images")
    artifacts.append("reconstructions.png")

    analysis = cfg.analysis
    if analysis.normal_classes is not None or analysis.ood_dataset is not None:
        metrics.update(_anomalies(cfg, model, splits, run_dir, data_dir))
        artifacts.append("anomaly_scores.png")
    if analysis.pca or analysis.linear_probe:
        metrics.update(_features(cfg, model, splits, codes_test))
    if hasattr(model, "sample"):
        plots.square_grid(np.asarray(compiled_sample(model, jax.random.key(cfg.seed), 64)), run_dir / "samples.png",
                          f"{cfg.name}: 64 samples from the prior")
        interpolation_strip(model, x_test, y_test, run_dir / "interpolation.png", f"{cfg.name}: latent interpolation")
        artifacts += ["samples.png", "interpolation.png"]
    result = {"metrics": metrics, "artifacts": artifacts}
    if getattr(cfg.model, "sparsity", None) == "kl":
        result["sparsity_target"] = cfg.model.sparsity_target
    return result


def _anomalies(cfg, model, splits: Splits, run_dir: Path, data_dir: Path) -> dict:
    from dlcli import plots

    x_test, y_test = splits.test
    scores = reconstruction_errors(model, x_test)
    classes = cfg.analysis.normal_classes
    normal = np.isin(y_test, classes) if classes is not None else np.ones(len(y_test), bool)
    groups, metrics = {"normal test": scores[normal]}, {}
    if classes is not None:
        groups["anomalous test"] = scores[~normal]
        metrics["test/auroc"] = auroc(scores[normal], scores[~normal])
    if cfg.analysis.ood_dataset is not None:
        name = cfg.analysis.ood_dataset
        other = DATASETS.get(name)(normalize=cfg.data.normalize, binarize=cfg.data.binarize, subset=cfg.data.subset)
        ood_scores = reconstruction_errors(model, other.load(data_dir).test[0])
        groups[f"{name} test (out of distribution)"] = ood_scores
        metrics["ood/auroc"] = auroc(scores[normal], ood_scores)
    plots.score_histogram(groups, run_dir / "anomaly_scores.png", f"{cfg.name}: anomaly scores",
                          "reconstruction error (mean squared error per value)")
    return metrics


def _features(cfg, model, splits: Splits, codes_test: np.ndarray) -> dict:
    """PCA with as many components as the code, and linear probes on both kinds of codes."""
    from sklearn.decomposition import PCA

    (x_train, y_train), (x_test, y_test) = splits.train, splits.test
    metrics = {}
    flat_train, flat_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    if cfg.analysis.pca:
        pca = PCA(n_components=codes_test.shape[1], random_state=0).fit(flat_train)
        recon = np.clip(pca.inverse_transform(pca.transform(flat_test)), 0.0, 1.0)
        mse = ((recon - flat_test) ** 2).mean(-1)
        metrics["pca/test/mse"] = float(mse.mean())
        metrics["pca/test/psnr"] = float(np.mean(psnr(mse)))
    if cfg.analysis.linear_probe:
        chosen = np.random.default_rng(0).permutation(len(x_train))[: cfg.analysis.probe_examples]
        metrics["probe/test/accuracy"] = linear_probe(encode(model, x_train[chosen]), y_train[chosen], codes_test, y_test)
        if cfg.analysis.pca:
            metrics["pca_probe/test/accuracy"] = linear_probe(pca.transform(flat_train[chosen]), y_train[chosen],
                                                              pca.transform(flat_test), y_test)
    return metrics


def linear_probe(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                 test_labels: np.ndarray) -> float:
    """Test accuracy of a logistic regression (L2, C=1) on standardised frozen codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_codes, train_labels)
    return float(probe.score(test_codes, test_labels))


def scatter_codes(codes: np.ndarray, labels: np.ndarray, out: Path, title: str) -> None:
    """The codes themselves when 2-D, else their projection on two principal components."""
    from dlcli import plots

    if codes.shape[1] == 2:
        plots.code_scatter(codes, labels, out, title, ("code 1", "code 2"))
        return
    from sklearn.decomposition import PCA

    if codes.shape[1] == 1:
        points = np.concatenate([codes, np.zeros_like(codes)], axis=1)
        plots.code_scatter(points, labels, out, title, ("code 1", ""))
        return
    pca = PCA(n_components=2, random_state=0).fit(codes)
    explained = pca.explained_variance_ratio_
    plots.code_scatter(pca.transform(codes), labels, out, f"{title} ({codes.shape[1]}-d, PCA projection)",
                       (f"PC 1 ({explained[0]:.0%} of variance)", f"PC 2 ({explained[1]:.0%})"))


def interpolation_strip(model, x: np.ndarray, y: np.ndarray, out: Path, title: str, pairs: int = 4,
                        steps: int = 10) -> None:
    """Rows of decodings along the line between the codes of two test images of
    different classes (the first image of each of `pairs` classes and of the next class)."""
    from dlcli import plots

    firsts = [int(np.flatnonzero(y == label)[0]) for label in np.unique(y)]
    if len(firsts) < 2:
        firsts = [0, min(1, len(x) - 1)]
    rows = []
    for i in range(min(pairs, len(firsts) - 1)):
        ends = encode(model, x[[firsts[i], firsts[i + 1]]])
        weights = np.linspace(0.0, 1.0, steps)[:, None]
        codes = (1 - weights) * ends[0] + weights * ends[1]
        rows.append(np.asarray(_decode(model, jnp.asarray(codes, jnp.float32))))
    plots.image_grid(rows, out, title=title)


def draw_samples(model, cfg, out: Path, title: str, n: int, seed: int = 0, label: int | None = None) -> None:
    """`n` samples of a generative model into the PNG `out`: an image grid, or for a 2-D
    mixture a scatter over its modes; a conditional GAN's all of class `label`, or
    without one a row per class."""
    from dlcli import plots

    labels = None if label is None else jnp.full((n,), label, jnp.int32)
    samples = np.asarray(compiled_sample(model, jax.random.key(seed), n, labels))
    if hasattr(cfg.data, "centres"):
        plots.mode_scatter(samples, cfg.data.centres(), cfg.data.std, out, title)
    else:
        plots.square_grid(samples, out, title)


@functools.partial(nnx.jit, static_argnums=2)
def compiled_sample(model, key: jax.Array, n: int, labels: jax.Array | None = None) -> jax.Array:
    """`model.sample(key, n)` (a conditional GAN's of `labels`, (n,), when given) as one
    compiled program; run eagerly, every operation of every layer would be dispatched
    (and the first time compiled) on its own."""
    return model.sample(key, n) if labels is None else model.sample(key, n, labels)
