"""Every shipped experiment file loads, validates, and trains a tiny smoke version."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlcli.config import load_config
from dlcli.train.loop import fit, read_vocab

from conftest import REPO, SHARED_DATA, TINY

EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


def test_experiments_exist():
    assert {p.stem for p in EXPERIMENTS} >= {"mlp_digits", "mlp_mnist", "cnn_mnist"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_smoke(path: Path, tmp_path):
    cfg = load_config(path, TINY)
    assert cfg.name == path.stem
    summary = fit(cfg, tmp_path / "run", data_dir=SHARED_DATA, show_progress=False)
    assert summary["steps"] == 4
    vocab = tmp_path / "run" / "vocab.json"  # a language model's classes come from its text
    info = cfg.data.info(read_vocab(tmp_path / "run")) if vocab.exists() else cfg.info
    assert summary["params"] == cfg.model.param_count(info)
    assert all(name in summary["metrics"] for name in ("val/loss", "test/loss"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_loads_and_every_trial_config_is_valid(path: Path):
    from dlcli.sweep import load_sweep, trial_params

    sweep = load_sweep(path)
    params = trial_params(sweep)
    assert params and all(sweep.trial_config(p) for p in params)
