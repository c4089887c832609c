"""Every shipped experiment file loads, validates, and trains a tiny smoke version."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlcli.config import load_config, read_yaml
from dlcli.runs import RunDir, param_count
from dlcli.training.loop import fit

from conftest import REPO, SHARED_DATA, TINY

# cgan_mnist.yaml is trained (at a tiny size), evaluated and sampled by
# tests/test_gan.py's conditional-GAN test; its smoke run here would repeat that at
# full size (about 27 s of the suite on 2 cores)
TRAINED_ELSEWHERE = {"cgan_mnist"}
EXPERIMENTS = sorted(p for p in (REPO / "experiments").glob("*.yaml") if p.stem not in TRAINED_ELSEWHERE)
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


def test_experiments_exist():
    assert {p.stem for p in EXPERIMENTS} >= {"mlp_digits", "mlp_mnist", "cnn_mnist"}


SMOKE_RUNS: dict[str, Path] = {}  # experiment -> its smoke run folder, for runs that start from another


@pytest.fixture(scope="module")
def short_text(tmp_path_factory) -> Path:
    """The first 20,000 characters of tiny shakespeare."""
    path = tmp_path_factory.mktemp("text") / "short.txt"
    path.write_text((SHARED_DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:20000], encoding="utf-8")
    return path


def smoke_overrides(path: Path, short_text: Path, tmp_path: Path) -> list[str]:
    """TINY, plus 64 examples per split of a generated dataset, 1,024 of an image dataset,
    or a short text; a linear probe on 200 codes; a model that reads another run (a
    fine-tuned encoder, a GAN's judge) reads a smoke run of that experiment."""
    model = read_yaml(path).get("model", {})
    pretrained = []
    for field in ("autoencoder_run", "classifier_run"):  # the config is valid once that run exists
        if field not in model:
            continue
        source = REPO / "experiments" / f"{Path(model[field]).name}.yaml"
        if source.stem not in SMOKE_RUNS:
            source_cfg = load_config(source, smoke_overrides(source, short_text, tmp_path))
            fit(source_cfg, tmp_path / "source", data_dir=SHARED_DATA, show_progress=False)
            SMOKE_RUNS[source.stem] = tmp_path / "source"
        pretrained.append(f"model.{field}={SMOKE_RUNS[source.stem]}")
    cfg = load_config(path, pretrained)
    small = [f"data.{field}=64" for field in ("n_train", "n_val", "n_test") if hasattr(cfg.data, field)]
    text = [f"data.path={short_text}"] if cfg.data.name == "text" else []
    images = ["data.subset=1024"] if hasattr(cfg.data, "subset") else []
    probe = ["analysis.probe_examples=200"] if cfg.analysis.linear_probe else []
    return [*TINY, "training.batch_size=8", "training.eval_batch_size=64", *small, *text, *images, *probe, *pretrained]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_smoke(path: Path, tmp_path, short_text):
    cfg = load_config(path, smoke_overrides(path, short_text, tmp_path))
    assert cfg.name == path.stem
    summary = fit(cfg, tmp_path / "run", data_dir=SHARED_DATA, show_progress=False)
    SMOKE_RUNS[path.stem] = tmp_path / "run"
    assert summary["steps"] == 4
    run = RunDir(tmp_path / "run")  # a language model's classes come from its text
    assert summary["params"] == param_count(cfg, run.info(cfg), run.references(cfg))
    assert all(f"{split}/{name}" in summary["metrics"] for split in ("val", "test") for name in cfg.metric_names)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_loads_and_every_trial_config_is_valid(path: Path):
    from dlcli.sweep import load_sweep, trial_params

    sweep = load_sweep(path)
    params = trial_params(sweep)
    assert params and all(sweep.trial_config(p) for p in params)
