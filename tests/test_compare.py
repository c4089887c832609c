"""`dlcli compare`: parameter-matched widths, the statistics and outputs, and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from scipy import stats

from dlcli.compare import solve_widths
from dlcli.config import config_from_dict, load_config
from dlcli.errors import BadInput

from conftest import REPO, cli_env, invoke, run_cli


@pytest.mark.parametrize("model,dataset,budget", [
    ("mlp", "sawtooth", 1000), ("mlp", "digits", 20000), ("mlp", "mnist", 100000), ("cnn", "digits", 20000),
])
@pytest.mark.parametrize("depth", [1, 2, 4, 8])
def test_widths_meet_the_budget(model, dataset, budget, depth):
    cfg = load_config(None, [f"model.name={model}", f"data.name={dataset}"])
    section, params = solve_widths(cfg, depth, budget)
    resolved = config_from_dict({**cfg.to_dict(), "model": section})
    assert resolved.model.param_count(resolved.info) == params
    assert abs(params - budget) <= 0.02 * budget
    layers = resolved.model.hidden_widths() if model == "mlp" else [b.channels for b in resolved.model.blocks]
    assert len(layers) == depth


def test_budget_too_small_for_depth():
    with pytest.raises(BadInput, match="cannot fit a depth-8"):
        solve_widths(load_config(None, ["data.name=mnist"]), 8, 500)


@pytest.mark.e2e
def test_shallow_vs_deep_end_to_end_and_resume(tmp_path):
    """SIGTERM once the first run has finished: one line, exit 143; the rerun trains only
    what is missing, and a second rerun trains nothing."""
    out = tmp_path / "cmp"
    args = ("compare", "shallow-vs-deep", "--task", "sawtooth", "--depths", "1,3", "--seeds", "3", "--steps", "60",
            "--budget", "300", "--workers", "1", "--out", str(out), "--json")
    process = subprocess.Popen([sys.executable, "-m", "dlcli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=cli_env(), cwd=REPO)
    deadline = time.monotonic() + 180
    while not list(out.glob("runs/*/summary.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    assert errors == ["error: stopped by SIGTERM; rerun the same command to continue (what finished is kept)"], stderr
    kept = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    assert 1 <= len(kept) < 6

    first = json.loads(run_cli(*args, check=True).stdout)
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in kept.items())
    assert [a["label"] for a in first["arms"]] == ["depth 1", "depth 3"]
    for arm in first["arms"]:
        assert abs(arm["params"] - 300) <= 6 and len(arm["values"]) == 3
    shallow, deep = (a["values"] for a in first["arms"])
    reference = stats.ttest_ind(deep, shallow, equal_var=False)
    assert first["test"]["p"] == pytest.approx(reference.pvalue)
    assert first["test"]["challenger"] == "depth 3" and first["test"]["baseline"] == "depth 1"
    assert "depth 3" in first["conclusion"] and f"p = {first['test']['p']:.2g}" in first["conclusion"]
    for name in ("results.json", "results.csv", "report.md", "curves.png"):
        assert (out / name).stat().st_size > 0
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 6

    summaries = sorted(out.glob("runs/*/summary.json"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    rerun = run_cli(*args, check=True)
    assert json.loads(rerun.stdout)["arms"] == first["arms"]
    assert [p.stat().st_mtime_ns for p in summaries] == stamps  # nothing was trained again


@pytest.mark.e2e
def test_compare_configs_with_extra_eval(tmp_path):
    a, b = tmp_path / "wide.yaml", tmp_path / "narrow.yaml"
    a.write_text("model: {name: cnn, blocks: [{channels: 4}], dense: [16]}\ntraining: {steps: 20, eval_every: 10}\n")
    b.write_text("model: {name: mlp, width: 16}\ntraining: {steps: 20, eval_every: 10}\n")
    result = run_cli("compare", str(a), str(b), "--seeds", "2", "--shift-test", "2", "--metric", "shift2:test/accuracy",
                     "--workers", "2", "--out", str(tmp_path / "out"), "--json", check=True)
    data = json.loads(result.stdout)
    assert data["metric"] == "shift2:test/accuracy"
    assert [arm["label"] for arm in data["arms"]] == ["wide", "narrow"]
    assert all(0.0 <= v <= 1.0 for arm in data["arms"] for v in arm["values"])


@pytest.mark.parametrize("args,message", [
    (["shallow-vs-deep", "--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["shallow-vs-deep", "--metric", "test/accuracy"], "does not exist for regression"),
    (["shallow-vs-deep", "--task", "mnist", "--budget", "500", "--depths", "1,8"], "cannot fit a depth-1 mlp"),
    (["shallow-vs-deep", "--depths", "1,x"], "--depths must be"),
    (["experiments/mlp_digits.yaml"], "at least two CONFIG"),
])
def test_bad_compare_input(args, message, tmp_path):
    result = invoke("compare", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_tune_lr_picks_each_arm_by_validation(tmp_path):
    out = tmp_path / "cmp"
    data = json.loads(run_cli("compare", "shallow-vs-deep", "--task", "sawtooth", "--depths", "1,2", "--seeds", "1",
                              "--steps", "60", "--budget", "300", "--tune-lr", "--lr-grid", "0.00001,0.01",
                              "--workers", "1", "--out", str(out), "--json", check=True).stdout)
    for arm in data["arms"]:
        slug = arm["label"].replace(" ", "-")
        tuned = {lr: json.loads((out / "tune" / f"{slug}-lr{lr:g}" / "summary.json").read_text())["best_value"]
                 for lr in (0.00001, 0.01)}
        assert arm["learning_rate"] == min(tuned, key=tuned.get)  # val/loss: lower is better
