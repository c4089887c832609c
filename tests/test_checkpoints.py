"""Orbax checkpoints: which steps are kept, and a crash in the middle of a save."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dlcli.config import load_config
from dlcli.training.evaluate import evaluate_run
from dlcli.training.loop import fit

from conftest import SHARED_DATA, invoke, sets


def _steps(run_dir) -> set[int]:
    return {int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()}


def test_keeps_last_k_and_the_best(tmp_path):
    overrides = ["training.steps=120", "training.eval_every=10", "checkpoint.keep=2", "model.width=16",
                 "optimizer.learning_rate=0.003", "training.restore_best=false", "checkpoint.min_interval_s=0"]
    summary = fit(load_config(None, overrides), tmp_path / "run", data_dir=SHARED_DATA, show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: (r["val/accuracy"], -r["step"]))  # first step reaching the maximum
    assert summary["best_step"] == best["step"]
    assert _steps(tmp_path / "run") == {110, 120, best["step"]}
    assert evaluate_run(tmp_path / "run", checkpoint="best", split="val", data_dir=SHARED_DATA)["checkpoint"] == best["step"]


def test_a_run_shorter_than_the_checkpoint_interval_writes_its_best_and_its_last_state(tmp_path):
    """No evaluation comes `checkpoint.min_interval_s` after the start: only the best
    state (held on the device) and the final one reach the disk, with the metrics of a
    run that saved at every evaluation."""
    overrides = ["training.steps=60", "training.eval_every=10", "model.width=16", "optimizer.learning_rate=0.003"]
    each = fit(load_config(None, [*overrides, "checkpoint.min_interval_s=0"]), tmp_path / "each",
               data_dir=SHARED_DATA, show_progress=False)
    few = fit(load_config(None, [*overrides, "checkpoint.min_interval_s=3600"]), tmp_path / "few",
              data_dir=SHARED_DATA, show_progress=False)
    assert few["metrics"] == each["metrics"] and few["best_step"] == each["best_step"]
    assert _steps(tmp_path / "each") == {50, 60, each["best_step"]}
    assert _steps(tmp_path / "few") == {60, few["best_step"]}


def test_checkpoint_every_n_evaluations_writes_the_best_in_between_just_before_the_next(tmp_path):
    every_third = ["training.steps=60", "training.eval_every=10", "checkpoint.every=3", "checkpoint.keep=6",
                   "checkpoint.min_interval_s=0", "model.width=16"]
    # min_delta 1.0 on accuracy: only the first evaluation (step 10) improves
    overrides = [*every_third, "training.min_delta=1.0"]
    whole = fit(load_config(None, overrides), tmp_path / "run", data_dir=SHARED_DATA, show_progress=False)
    assert _steps(tmp_path / "run") == {10, 30, 60}  # the best of the first stretch, then every third evaluation
    assert whole["best_step"] == whole["evaluated_checkpoint"] == 10
    best = evaluate_run(tmp_path / "run", checkpoint="best", split="test", data_dir=SHARED_DATA)
    assert best["checkpoint"] == 10 and best["metrics"]["test/loss"] == whole["metrics"]["test/loss"]

    # any run: a stretch's last improvement is written before its due checkpoint, unless that one improves too
    fit(load_config(None, every_third), tmp_path / "any", data_dir=SHARED_DATA, show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "any" / "metrics.jsonl").read_text().splitlines()]
    expected, best_value, unsaved = set(), None, None
    for count, record in enumerate(records, start=1):
        improved = best_value is None or record["val/accuracy"] > best_value
        best_value = record["val/accuracy"] if improved else best_value
        if count % 3 == 0:
            expected |= {record["step"]} | ({unsaved} if unsaved and not improved else set())
            unsaved = None
        elif improved:
            unsaved = record["step"]
    assert _steps(tmp_path / "any") == expected

    # cut back to step 30, as a kill before the final save leaves it: the resumed run
    # writes the same checkpoints and ends with the same metrics
    cut = Path(shutil.copytree(tmp_path / "run", tmp_path / "cut"))
    shutil.rmtree(cut / "checkpoints" / "60")
    resumed = fit(load_config(None, overrides), cut, data_dir=SHARED_DATA, resume=True, show_progress=False)
    assert resumed["metrics"] == whole["metrics"] and _steps(cut) == {10, 30, 60}


def test_crash_during_save_leaves_a_readable_checkpoint_and_resume_works(tmp_path):
    run_dir = tmp_path / "run"
    args = ("train", "--run-dir", str(run_dir), *sets("training.steps=8", "training.eval_every=4"), "--json")
    invoke(*args, check=True)
    # What a process killed in the middle of saving step 12 leaves: Orbax's unfinished temporary folder.
    partial = run_dir / "checkpoints" / "12.orbax-checkpoint-tmp-1732000000"
    (partial / "model").mkdir(parents=True)
    (partial / "model" / "d").write_bytes(b"\x00garbage")
    latest = evaluate_run(run_dir, checkpoint="latest", split="val", data_dir=SHARED_DATA)
    assert latest["checkpoint"] == 8
    resumed = invoke(*args, "--resume", check=True)
    assert json.loads(resumed.stdout)["steps"] == 8
    assert not partial.exists()  # cleaned up by the resumed run
