"""Faults while a run is written: signals at random moments, a second writer, a dead
writer's lock, a log cut mid-line, a run stopped before its first checkpoint, pruning
after a resume.

The random-moment tests send each signal (SIGINT, SIGTERM, SIGKILL) at
DLCLI_FAULT_MOMENTS moments (2 here; `make faults` runs 20 of each): during start-up,
compiling, a chunk of steps, an evaluation or a save. Every moment's run must end, after
`--resume`, exactly as the uninterrupted run does, and keep no more checkpoints than
`keep` and the best.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, cli_env, invoke, run_cli, sets, snapshot, timeless_metrics

from dlcli.files import LOCK_NAME

MOMENTS = int(os.environ.get("DLCLI_FAULT_MOMENTS", "2"))
PICKLE_HEADERS = {b"\x80" + bytes([protocol]) for protocol in range(2, 6)}  # what pickle.dumps starts with
# ~100 dispatches of one step, 10 evaluations, a checkpoint at each: every moment of a
# run (compiling, a chunk, an evaluation, a save) is a few percent of its time or more
RUN = sets("training.steps=100", "training.eval_every=10", "training.steps_per_dispatch=1", "training.batch_size=32",
           "checkpoint.min_interval_s=0", "checkpoint.keep=2", "model.width=32")


def start_train(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlcli", "train", "--run-dir", str(run_dir), *RUN, *extra, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> bool:
    """Wait until `path` exists; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def signal_after(process: subprocess.Popen, signum: int, delay: float, what: str) -> tuple[str, str, str]:
    """Send `signum` `delay` seconds from now and wait for the end: (stdout, stderr, a
    context line for assertions); whatever the moment, no traceback."""
    time.sleep(delay)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    context = f"signal {signal.Signals(signum).name} {delay:.2f} s into {what}: exit {process.returncode}\n{stderr}"
    assert "Traceback" not in stderr, context
    return stdout, stderr, context


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict, float]:
    """(run folder, summary, seconds from its config.yaml appearing to the process's end)."""
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    process = start_train(run_dir)
    assert wait_for(run_dir / "config.yaml", process)
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    import jax

    assert summary["environment"]["versions"]["jax"] == jax.__version__ and summary["environment"]["cpu"]
    pickles = [p for p in run_dir.rglob("*") if p.is_file() and p.read_bytes()[:2] in PICKLE_HEADERS]
    assert not pickles  # a run folder holds no pickle: nothing in it runs code when read
    return run_dir, summary, time.monotonic() - started


def final_state(run_dir: Path) -> tuple:
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary["metrics"], summary["steps"], summary["best_step"], timeless_metrics(run_dir)


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_signal_at_a_random_moment_stops_with_one_line_and_resume_ends_as_the_whole_run(uninterrupted, tmp_path,
                                                                                          signum):
    whole_dir, _, duration = uninterrupted
    rng = random.Random(f"{signum}-{os.getpid()}-{time.time_ns()}")
    outcomes = collections.Counter()
    for moment in range(MOMENTS):
        run_dir = tmp_path / f"moment{moment}"
        process = start_train(run_dir)
        assert wait_for(run_dir / "config.yaml", process)
        stdout, stderr, context = signal_after(process, signum, rng.uniform(0, duration), "training")
        outcomes[_outcome(process.returncode, stderr)] += 1
        if process.returncode == -signal.SIGKILL:  # no word from it: the resume finds what it left
            resumed = run_cli("train", "--run-dir", str(run_dir), *RUN, "--resume", "--json")
            assert resumed.returncode == 0, resumed.stderr
            assert "Traceback" not in resumed.stderr
            assert not list((run_dir / "checkpoints").glob("*.orbax-checkpoint-tmp*"))  # a killed save, cleaned up
        elif process.returncode != 0:  # the run had not finished when the signal came
            assert process.returncode == 128 + signum, context
            last = stderr.strip().splitlines()[-1]
            assert last.startswith("error: stopped by "), context
            assert sum(line.startswith("error: ") for line in stderr.splitlines()) == 1, context
            resumed = run_cli("train", "--run-dir", str(run_dir), *RUN, "--resume", "--json")
            assert resumed.returncode == 0, resumed.stderr
        assert final_state(run_dir) == final_state(whole_dir), context
        steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
        assert len(steps) <= 3, steps  # the last 2 and the best: pruned after the resume too
    print(f"{signum.name}: {MOMENTS} moments, all resumed identical: {dict(sorted(outcomes.items()))}")


def _outcome(code: int, stderr: str) -> str:
    """Where a signal found the run, from how it ended."""
    if code == 0:
        return "after it finished"
    if code == -signal.SIGKILL:
        return "killed"
    if "before training started" in stderr:
        return "before training"
    if "after the command had finished" in stderr:
        return "after it finished, in its exit handlers"
    if "during the final evaluation" in stderr:
        return "in the final evaluation"
    return "mid-training, checkpoint written" if " at step " in stderr else "before its first step"


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_a_random_moment_of_eval_stops_it_with_one_line_and_changes_nothing(uninterrupted, signum):
    """`dlcli eval` of a finished run, signalled at DLCLI_FAULT_MOMENTS random moments of
    its whole process (start-up, restoring, evaluating): it exits 128 + N with one
    `error: stopped by` line, or 0 if it had finished, never a traceback, and the run
    folder is byte for byte as it was."""
    run_dir = uninterrupted[0]
    before = snapshot(run_dir)
    started = time.monotonic()
    run_cli("eval", str(run_dir), "--json", check=True)
    duration = time.monotonic() - started
    rng = random.Random(f"eval-{signum}-{os.getpid()}-{time.time_ns()}")
    outcomes = collections.Counter()
    for _ in range(MOMENTS):
        process = subprocess.Popen([sys.executable, "-m", "dlcli", "eval", str(run_dir), "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)
        stdout, stderr, context = signal_after(process, signum, rng.uniform(0.2, duration), "eval")
        if process.returncode == 0:
            outcomes["after it exited"] += 1
            assert json.loads(stdout)["metrics"], context
        else:
            assert process.returncode == 128 + signum, context
            errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
            name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            assert errors in ([f"error: stopped by {name}"],  # still starting: before the command was known
                              [f"error: stopped by {name}; rerun the same command"],
                              [f"error: stopped by {name} after the command had finished; what it wrote is complete"]
                              ), context
            outcomes["after it finished" if "finished" in errors[0] else "while evaluating" if ";" in errors[0]
                     else "while starting"] += 1
        assert snapshot(run_dir) == before, context
    print(f"eval, {signum.name}: {MOMENTS} moments: {dict(sorted(outcomes.items()))}")


@pytest.mark.e2e
def test_a_second_writer_is_refused_naming_the_first_and_a_dead_writers_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    first = start_train(run_dir, *sets("training.steps=100000", "training.eval_every=1000"))
    try:
        assert wait_for(run_dir / "config.yaml", first)
        for flags in ([], ["--resume"], ["--overwrite"]):
            second = invoke("train", "--run-dir", str(run_dir), *RUN, *flags)
            assert second.returncode == 2
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and f"is being written by process {first.pid} on " in lines[0], second.stderr
            assert "dlcli train --run-dir" in lines[0]
    finally:
        first.kill()
        first.wait()
    assert (run_dir / LOCK_NAME).exists()  # left behind by the killed writer, and taken over:
    taken_over = run_cli("train", "--run-dir", str(run_dir), *RUN, "--overwrite", "--json")
    assert taken_over.returncode == 0, taken_over.stderr
    assert json.loads(taken_over.stdout)["steps"] == 100
    assert "--overwrite" in json.loads((run_dir / LOCK_NAME).read_text())["command"]


@pytest.mark.e2e
def test_a_run_stopped_before_its_first_checkpoint_can_be_resumed_or_rerun(uninterrupted, tmp_path):
    whole_dir = uninterrupted[0]
    for flags in (["--resume"], []):
        run_dir = tmp_path / ("resumed" if flags else "rerun")
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text((whole_dir / "config.yaml").read_text())  # started, then killed
        (run_dir / "metrics.jsonl").write_text('{"step": 10, "epoch": 0, "val/loss": 1.0}\n{"step": 2')
        result = run_cli("train", "--run-dir", str(run_dir), *RUN, *flags, "--json")
        assert result.returncode == 0, result.stderr
        assert "stopped before its first checkpoint; starting it again from step 0" in result.stderr
        assert final_state(run_dir) == final_state(whole_dir)


@pytest.mark.e2e
def test_a_metrics_log_cut_mid_line_is_repaired_on_resume(uninterrupted, tmp_path):
    import shutil

    whole_dir = uninterrupted[0]
    run_dir = Path(shutil.copytree(whole_dir, tmp_path / "run"))
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    for step in steps[1:]:  # back to the first kept checkpoint, as a kill after it leaves the folder
        shutil.rmtree(run_dir / "checkpoints" / str(step))
    (run_dir / "summary.json").unlink()
    log = run_dir / "metrics.jsonl"
    log.write_text(log.read_text()[:-25] + "\n\x00\x00garbage line\n{\"step\": \"x\"}\n")  # cut, then junk
    result = run_cli("train", "--run-dir", str(run_dir), *RUN, "--resume", "--json")
    assert result.returncode == 0, result.stderr
    assert "dropped 3 line(s) that were not metric records" in result.stderr
    assert final_state(run_dir) == final_state(whole_dir)


@pytest.mark.e2e
@pytest.mark.parametrize("command", [["sweep", "experiments/sweeps/mlp_digits.yaml", "--workers", "1"],
                                     ["compare", "shallow-vs-deep", "--seeds", "2", "--workers", "1"]],
                         ids=["sweep", "compare"])
def test_a_second_batch_into_one_folder_is_refused_naming_the_first(tmp_path, command):
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "dlcli", *command, "--out", str(out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)
    try:
        assert wait_for(out / LOCK_NAME, first)
        second = invoke(*command, "--out", str(out))
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"folder {out} is being written by process {first.pid} on " in lines[0], lines
    finally:
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and stderr.strip().splitlines()[-1].startswith("error: stopped by Ctrl-C"), stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MiB tmpfs of its own (mounting needs root; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.e2e
def test_a_full_disk_stops_the_run_in_one_line_keeps_the_last_good_checkpoint_and_resume_ends_as_the_whole_run(
        uninterrupted, small_disk):
    from dlcli.checkpoint import finished_steps

    run_dir = small_disk / "run"
    process = start_train(run_dir)
    assert wait_for(run_dir / "checkpoints" / "10", process)
    filler = small_disk / "filler"
    with filler.open("wb", buffering=0) as f:  # fill what is left, so the next write fails
        try:
            while f.write(b"\0" * 65536):
                pass
        except OSError:
            pass
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    # no traceback, not even from TensorStore's writes that finish after the failed save
    assert "Traceback" not in stderr and "Event loop is closed" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: "), stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: the disk holding {run_dir} is full"), stderr
    kept = finished_steps(run_dir)
    assert kept and f"the last good checkpoint (step {kept[-1]}) is kept" in errors[0]

    filler.unlink()
    resumed = run_cli("train", "--run-dir", str(run_dir), *RUN, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert final_state(run_dir) == final_state(uninterrupted[0])
    assert not list((run_dir / "checkpoints").glob("*.orbax-checkpoint-tmp*"))


@pytest.mark.e2e
def test_a_sweep_killed_at_a_random_moment_is_completed_by_its_rerun(tmp_path):
    """SIGKILL of the sweep's own process (its workers follow it) at DLCLI_FAULT_MOMENTS
    random moments: every file it leaves is readable, and rerunning the same command
    finishes every trial with the results of an uninterrupted sweep."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text("set: [training.steps=40, training.eval_every=10, model.width=16, checkpoint.min_interval_s=0]\n"
                     "space:\n  optimizer.learning_rate: [0.001, 0.003]\n")
    command = [sys.executable, "-m", "dlcli", "sweep", str(sweep), "--workers", "1", "--json"]
    started = time.monotonic()
    whole = subprocess.run([*command, "--out", str(tmp_path / "whole")], capture_output=True, text=True, env=cli_env(),
                           cwd=REPO, timeout=300)
    assert whole.returncode == 0, whole.stderr
    duration = time.monotonic() - started
    expected = {t["index"]: (t["status"], t["value"]) for t in json.loads(whole.stdout)["trials"]}
    rng = random.Random(time.time_ns())
    for moment in range(MOMENTS):
        out = tmp_path / f"moment{moment}"
        process = subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=cli_env(), cwd=REPO)
        time.sleep(rng.uniform(0, duration))
        process.kill()  # its workers end themselves within half a second; the rerun need not wait
        process.wait()
        rerun = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, env=cli_env(), cwd=REPO,
                               timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert "Traceback" not in rerun.stderr
        trials = json.loads(rerun.stdout)["trials"]
        assert {t["index"]: (t["status"], t["value"]) for t in trials} == expected, trials

