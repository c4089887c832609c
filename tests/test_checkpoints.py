"""Orbax checkpoints: which steps are kept, and a crash in the middle of a save."""

from __future__ import annotations

import json

from dlcli.config import load_config
from dlcli.train.evaluate import evaluate_run
from dlcli.train.loop import fit

from conftest import SHARED_DATA, invoke, sets


def _steps(run_dir) -> set[int]:
    return {int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()}


def test_keeps_last_k_and_the_best(tmp_path):
    overrides = ["training.steps=120", "training.eval_every=10", "checkpoint.keep=2", "model.width=16",
                 "optimizer.learning_rate=0.003", "training.restore_best=false"]
    summary = fit(load_config(None, overrides), tmp_path / "run", data_dir=SHARED_DATA, show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: (r["val/accuracy"], -r["step"]))  # first step reaching the maximum
    assert summary["best_step"] == best["step"]
    assert _steps(tmp_path / "run") == {110, 120, best["step"]}
    assert evaluate_run(tmp_path / "run", checkpoint="best", split="val", data_dir=SHARED_DATA)["checkpoint"] == best["step"]


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
