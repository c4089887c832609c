"""The training machinery in-process: overfitting one batch, no recompilation,
reproducibility, the epoch sampler, and eval agreeing with training."""

from __future__ import annotations

import collections
import dataclasses
import json

import numpy as np
import pytest

from dlcli.config import load_config
from dlcli.errors import TrainingFailure
from dlcli.training.evaluate import evaluate_run
from dlcli.training.experiment import EpochSampler, build_experiment
from dlcli.training.loop import fit

from conftest import SHARED_DATA, TINY, timeless_metrics


def _overfit(overrides: list[str], steps: int = 150) -> tuple[float, float]:
    """Train repeatedly on one fixed batch; return (first loss, last loss)."""
    cfg = load_config(None, ["training.batch_size=16", "optimizer.learning_rate=0.01", *overrides])
    exp = build_experiment(cfg, SHARED_DATA)
    one_batch = np.tile(np.arange(16, dtype=np.int32), (steps, 1))  # (steps, 16): the same batch every step
    metrics = exp.steps.train_chunk(exp.x_train, exp.y_train, one_batch, 0)
    return float(metrics["loss"][0]), float(metrics["loss"][-1])


@pytest.mark.parametrize("overrides,steps", [
    (["model.name=mlp"], 150),
    (["model.name=cnn", "model.blocks=[{channels: 8}]", "model.dense=[32]"], 150),
    (["model.name=mlp", "data.name=regression1d", "data.noise=0", "model.widths=[64, 64]"], 600),
    (["model.name=mlp", "model.norm=batch", "model.dropout=0.1", "optimizer.name=adamw", "optimizer.clip_norm=1.0"], 150),
])
def test_overfits_one_batch(overrides, steps):
    first, last = _overfit(overrides, steps)
    assert last < 0.05 * first and last < 0.05


def test_no_recompilation_across_chunks():
    cfg = load_config(None, ["training.batch_size=32"])
    exp = build_experiment(cfg, SHARED_DATA)
    sampler = EpochSampler(len(exp.splits.train[0]), 32, cfg.seed)
    for first_step in (0, 4, 8, 12):  # new data and a new step every time, same shapes
        exp.steps.train_chunk(exp.x_train, exp.y_train, sampler.indices(first_step, 4), first_step)
    compile_after_first = exp.steps.compile_s
    exp.steps.train_chunk(exp.x_train, exp.y_train, sampler.indices(16, 4), 16)
    assert len(exp.steps.compiled_shapes) == 1
    assert exp.steps.compile_s == compile_after_first


def test_sampler_is_a_permutation_per_epoch_and_depends_on_seed():
    sampler = EpochSampler(103, 10, seed=3)
    epoch0 = sampler.indices(0, 10)
    assert epoch0.shape == (10, 10) and len(set(epoch0.ravel())) == 100
    assert not np.array_equal(epoch0, sampler.indices(10, 10))
    assert np.array_equal(sampler.indices(5, 3), epoch0[5:8])
    assert not np.array_equal(epoch0, EpochSampler(103, 10, seed=4).indices(0, 10))


def test_same_config_and_seed_give_identical_runs(tmp_path):
    cfg = load_config(None, [*TINY, "model.dropout=0.2", "training.steps=6"], seed=7)
    first = fit(cfg, tmp_path / "a", data_dir=SHARED_DATA, show_progress=False)
    second = fit(cfg, tmp_path / "b", data_dir=SHARED_DATA, show_progress=False)
    assert first["metrics"] == second["metrics"]
    third = fit(load_config(None, [*TINY, "model.dropout=0.2", "training.steps=6"], seed=8), tmp_path / "c",
                data_dir=SHARED_DATA, show_progress=False)
    assert third["metrics"]["test/loss"] != first["metrics"]["test/loss"]


def test_runs_that_differ_only_in_seed_share_their_compiled_programs(tmp_path, monkeypatch):
    from dlcli.training import step

    monkeypatch.setattr(step, "_shared", collections.OrderedDict())  # this process's programs, emptied

    def run(name: str, *overrides: str, seed: int) -> dict:
        cfg = load_config(None, [*TINY, "model.dropout=0.2", *overrides], seed=seed)
        return fit(cfg, tmp_path / name, data_dir=SHARED_DATA, show_progress=False)

    assert run("seed0", seed=0)["compile_s"] > 0
    shared = run("seed1", "name=another_label", seed=1)
    assert shared["compile_s"] == 0  # traced and compiled by the seed-0 run
    assert run("other-lr", "optimizer.learning_rate=0.003", seed=1)["compile_s"] > 0  # another program

    monkeypatch.setattr(step, "_shared", collections.OrderedDict())
    own = run("seed1-alone", seed=1)
    assert own["compile_s"] > 0
    assert own["metrics"] == shared["metrics"]  # a shared program computes what its own would
    assert timeless_metrics(tmp_path / "seed1-alone") == timeless_metrics(tmp_path / "seed1")


def test_a_task_holding_arrays_never_shares_its_programs():
    from dlcli.tasks.adversarial import Adversarial, Judge
    from dlcli.training.experiment import program_key

    cfg = load_config(None, ["model.name=gan", "data.name=ring8"])
    info, task = cfg.info, Adversarial.from_config(cfg)
    assert program_key(cfg, info, 10, {}, task) == program_key(cfg, info, 10, {}, Adversarial.from_config(cfg))

    def judged():
        return dataclasses.replace(task, judge=Judge(None, None, np.zeros(0), np.zeros((0, 0)), 0.0))

    assert program_key(cfg, info, 10, {}, judged()) != program_key(cfg, info, 10, {}, judged())


def test_eval_reproduces_what_training_reported(tmp_path):
    cfg = load_config(None, ["training.steps=30", "training.eval_every=10", "model.width=32", "training.restore_best=true",
                                     "checkpoint.min_interval_s=0"])
    summary = fit(cfg, tmp_path / "run", data_dir=SHARED_DATA, show_progress=False)
    best = evaluate_run(tmp_path / "run", checkpoint="best", split="test", data_dir=SHARED_DATA)
    assert best["checkpoint"] == summary["best_step"]
    assert best["metrics"]["test/accuracy"] == summary["metrics"]["test/accuracy"]
    assert best["metrics"]["test/loss"] == summary["metrics"]["test/loss"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for record in records[-2:]:  # the last `keep` checkpoints are kept
        again = evaluate_run(tmp_path / "run", checkpoint=str(record["step"]), split="val", data_dir=SHARED_DATA)
        assert again["metrics"]["val/loss"] == record["val/loss"]
        assert again["metrics"]["val/accuracy"] == record["val/accuracy"]
    confusion = np.array(best["confusion"])
    assert confusion.sum() == len(cfg.data.load(SHARED_DATA).test[0])


def test_diverging_loss_stops_with_failure_and_keeps_last_good_checkpoint(tmp_path):
    # SGD whose learning rate warms up far past stability: fine at first, then the loss explodes.
    cfg = load_config(None, ["data.name=regression1d", "training.steps=1000", "training.eval_every=10",
                             "optimizer.name=sgd", "optimizer.learning_rate=50", "schedule.name=warmup_cosine",
                             "schedule.warmup_steps=1000", "training.steps_per_dispatch=5"])
    with pytest.raises(TrainingFailure, match="loss became") as failure:
        fit(cfg, tmp_path / "run", data_dir=SHARED_DATA, show_progress=False)
    kept = evaluate_run(tmp_path / "run", checkpoint="latest", split="val", data_dir=SHARED_DATA)
    assert f"checkpoint (step {kept['checkpoint']})" in str(failure.value)
    assert np.isfinite(kept["metrics"]["val/loss"])


def test_early_stopping_restores_best_and_stays_stopped_on_resume(tmp_path):
    # min_delta 1.0 on accuracy: nothing after the first evaluation counts as an improvement
    cfg = load_config(None, ["training.steps=100", "training.eval_every=10", "training.patience=2",
                             "training.min_delta=1.0", "model.width=16"])
    summary = fit(cfg, tmp_path / "run", data_dir=SHARED_DATA, show_progress=False)
    assert summary["stopped_early"] and summary["steps"] == 30
    assert summary["best_step"] == summary["evaluated_checkpoint"] == 10
    again = fit(cfg, tmp_path / "run", data_dir=SHARED_DATA, resume=True, show_progress=False)
    assert again["steps"] == 30 and again["metrics"] == summary["metrics"]
