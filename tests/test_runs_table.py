"""`dlcli runs`: every run under a folder with its status as it really is (finished,
failed with its reason, interrupted by a signal, running while its process holds the
folder's lock, killed once it no longer does), and `dlcli runs diff`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import FAMILY_TINY, REPO, cli_env, invoke, sets

from dlcli import interrupts
from dlcli.checkpoint import finished_steps

TINY_MLP = [*FAMILY_TINY, "model.width=16"]  # programs other tests compile too


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict]:
    """A folder holding two finished runs, one at the top and one a level down (as a
    comparison's folder holds them), differing in their seed: (folder, {name: summary})."""
    root = tmp_path_factory.mktemp("table") / "runs"
    summaries = {}
    for name, seed in (("a", "0"), ("sweep/b", "1")):
        result = invoke("train", "--run-dir", str(root / name), *sets(*TINY_MLP), "--seed", seed, "--json", check=True)
        summaries[name] = json.loads(result.stdout)
    return root, summaries


def table(*args: str) -> list[dict]:
    return json.loads(invoke("runs", *args, "--json", check=True).stdout)


def _git_state() -> dict | None:
    """What status.json should record of the repository the tests run in (None without git)."""
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return None


def test_every_run_under_a_folder_is_a_row_with_its_status_times_versions_and_metrics(runs):
    root, summaries = runs
    rows = {row["name"]: row for row in table(str(root))}
    assert set(rows) == {"a", "sweep/b"}
    for name, row in rows.items():
        summary = summaries[name]
        assert row["status"] == "finished" and row["reason"] is None
        assert row["started"] <= row["ended"] and row["wall_s"] >= 0
        assert (row["model"], row["dataset"], row["params"], row["step"]) == ("mlp", "digits", summary["params"], 4)
        assert (row["monitor"], row["best"]) == (summary["monitor"], summary["best_value"])
        assert row["test"] == {k: summary["metrics"][k] for k in ("test/loss", "test/accuracy")}
        assert row["command"][:4] == ["dlcli", "train", "--run-dir", str(root / name)]
        assert row["environment"]["versions"]["jax"] and row["environment"]["versions"]["flax"]
        assert row["devices"]["platform"] == "cpu"
        assert row["git"] == _git_state()  # the repository of the working folder (tests run in the repo)
        assert row["checkpoints"] == sorted(int(p.name) for p in (root / name / "checkpoints").iterdir())
    shown = invoke("runs", str(root), env=cli_env(COLUMNS="200"), check=True).stdout
    assert "sweep/b" in shown and "finished" in shown and "mlp" in shown


def test_runs_sort_filter_and_pick_a_status(runs):
    root, summaries = runs
    ordered = [row["name"] for row in table(str(root), "--sort", "test/loss")]  # lower is better: lowest first
    assert ordered == sorted(summaries, key=lambda name: summaries[name]["metrics"]["test/loss"])
    assert [row["name"] for row in table(str(root), "--filter", "seed=1")] == ["sweep/b"]
    assert [row["name"] for row in table(str(root), "--filter", "model.name=mlp", "--filter", "seed=0")] == ["a"]
    assert table(str(root), "--status", "failed") == []
    assert len(table(str(root / "sweep"))) == 1
    for args, named in ((["--filter", "no.such.key=1"], "no.such.key"), (["--sort", "test/nothing"], "test/nothing"),
                        (["--filter", "seed"], "KEY=VALUE"), (["--status", "lost"], "lost")):
        bad = invoke("runs", str(root), *args)
        assert bad.returncode == 2 and named in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_runs_diff_names_the_config_keys_that_differ(runs):
    root, _ = runs
    result = invoke("runs", "diff", str(root / "a"), str(root / "sweep" / "b"), "--json", check=True)
    assert json.loads(result.stdout)["differences"] == [{"key": "seed", "a": 0, "b": 1}]
    shown = invoke("runs", "diff", str(root / "a"), str(root / "sweep" / "b"), env=cli_env(COLUMNS="200"),
                   check=True).stdout
    assert "seed" in shown and "1 config key(s) differ" in shown
    missing = invoke("runs", "diff", str(root / "a"), str(root / "nothing"))
    assert missing.returncode == 2 and "nothing holds no config.yaml" in missing.stderr


def test_a_diverged_run_is_failed_and_its_message_says_no_good_checkpoint_is_kept(tmp_path):
    """Adam at a learning rate of 1e25: the first update blows the weights up, so the
    checkpoint saved at step 1 (its validation loss NaN) is not a good one to name."""
    run_dir = tmp_path / "diverged"
    result = invoke("train", "--run-dir", str(run_dir), *sets(
        *TINY_MLP, "optimizer.learning_rate=1e25", "training.eval_every=1", "training.steps_per_dispatch=1",
        "checkpoint.min_interval_s=0"))
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "loss became nan at step 2" in message
    assert f"no good checkpoint is kept: checkpoint(s) 1 in {run_dir / 'checkpoints'} hold non-finite values" in message
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and first["val/loss"] != first["val/loss"]  # NaN: what checkpoint 1 measures
    [row] = table(str(tmp_path), "--status", "failed")
    assert row["reason"] == message.removeprefix("error: ")


def test_a_sigterm_leaves_the_run_interrupted_with_its_reason(tmp_path):
    """A real SIGTERM to this process while the run trains (in-process, in its own thread's
    wait for status.json): the run stops at a safe point and says so in status.json."""
    run_dir = tmp_path / "stopped"
    previous = {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS}
    interrupts.install()  # as the console script does: the signal never kills the test process

    def stop_when_running() -> None:
        while (json.loads((run_dir / "status.json").read_text()).get("status") if (run_dir / "status.json").exists()
               else None) != "running":
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=stop_when_running, daemon=True)
    sender.start()
    try:
        result = invoke("train", "--run-dir", str(run_dir), *sets(*TINY_MLP, "training.steps=100000"))
    finally:
        sender.join(timeout=60)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    [row] = table(str(tmp_path))
    assert row["status"] == "interrupted" and row["reason"].startswith("stopped by SIGTERM at step ")
    assert row["ended"] and row["step"] < 100000


@pytest.mark.e2e
def test_a_running_run_shows_as_running_and_as_killed_once_sigkilled(tmp_path):
    """A real `dlcli train` process: running while it holds the folder's lock; SIGKILLed,
    it cannot write its end, and the table calls it killed, with its last heartbeat. The
    temporary folder of a save cut short is no checkpoint."""
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "dlcli", "train", "--run-dir", str(run_dir),
                                *sets(*TINY_MLP, "training.steps=100000", "checkpoint.min_interval_s=0")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not finished_steps(run_dir):  # past its first evaluation and checkpoint
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
            time.sleep(0.02)
        [row] = table(str(tmp_path))
        assert row["status"] == "running" and row["reason"] is None and row["ended"] is None, row
    finally:
        process.kill()
        process.wait(timeout=60)
    checkpoints = run_dir / "checkpoints"
    stray = checkpoints / "999.orbax-checkpoint-tmp-1765000000000"  # what a save cut short leaves
    shutil.copytree(checkpoints / str(finished_steps(run_dir)[0]), stray)
    [row] = table(str(tmp_path))
    status = json.loads((run_dir / "status.json").read_text())
    assert row["status"] == "killed" and status["status"] == "running"
    assert f"process {process.pid}" in row["reason"] and f"last heartbeat {status['heartbeat']}" in row["reason"]
    assert 999 not in row["checkpoints"] and row["checkpoints"]
