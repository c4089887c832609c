"""Several real processes on 127.0.0.1 training one run through `jax.distributed`
(gloo collectives between CPU processes): the same figures as one process with as many
devices, files from process 0 alone, a shared checkpoint that resumes in one process,
a killed process that stops the others with one line, and bad settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAMILY_TINY, REPO, cli_env, free_port, run_cli, sets, timeless_metrics

pytestmark = pytest.mark.e2e  # each test starts several JAX processes

MLP = [*FAMILY_TINY, "training.steps=8", "training.eval_every=4", "model.width=16", "checkpoint.keep=5",
       "checkpoint.min_interval_s=0"]


def start(count: int, args: list[str], tmp_path: Path) -> list[subprocess.Popen]:
    """`dlcli ARGS` in `count` processes joined through a coordinator on 127.0.0.1; each
    has a temporary folder of its own (tmp_path/tmp-ID) to show what it leaves there."""
    coordinator = f"127.0.0.1:{free_port()}"
    processes = []
    for pid in range(count):
        scratch = tmp_path / f"tmp-{pid}"
        scratch.mkdir(exist_ok=True)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "dlcli", *args, "--coordinator", coordinator, "--num-processes", str(count),
             "--process-id", str(pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env=cli_env(TMPDIR=str(scratch))))
    return processes


def finish(processes: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each process, once it has ended."""
    outputs = [p.communicate(timeout=timeout) for p in processes]
    return [(p.returncode, *output) for p, output in zip(processes, outputs)]


def test_two_processes_train_evaluate_and_resume_like_one_process_with_two_devices(tmp_path):
    """2 processes (state split over them, FSDP) against 1 process with 2 devices: the
    same metrics.jsonl and summary, written by process 0 alone; `dlcli eval` on 2
    processes measures the summary's test figures; the 2-process run cut back to its
    first checkpoint resumes in 1 process to the same figures."""
    settings = sets(*MLP, "parallel.fsdp=true")
    results = finish(start(2, ["train", "--run-dir", str(tmp_path / "two"), *settings, "--json"], tmp_path))
    for code, _, stderr in results:
        assert code == 0, stderr[-2000:]
    single = run_cli("train", "--run-dir", str(tmp_path / "one"), *settings, "--json", check=True,
                     env=cli_env(XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"))
    two, one = (json.loads(out) for out in (results[0][1], single.stdout))
    assert two["parallel"] == {**one["parallel"], "processes": 2} and one["parallel"]["devices"] == 2
    assert two["metrics"] == one["metrics"]
    assert timeless_metrics(tmp_path / "two") == timeless_metrics(tmp_path / "one")
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert {json.dumps(r["parallel"]) for r in records} == {json.dumps(two["parallel"])}  # each evaluation says so
    assert json.loads(results[1][1])["metrics"] == two["metrics"]  # process 1 measured the same
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert not any((tmp_path / "tmp-1").iterdir())  # process 1's scratch folder is gone

    evaluated = finish(start(2, ["eval", str(tmp_path / "two"), "--checkpoint", "latest", "--json"], tmp_path))
    for code, stdout, stderr in evaluated:
        assert code == 0, stderr[-2000:]
        test = {k: v for k, v in two["metrics"].items() if k.startswith("test/")}
        assert json.loads(stdout)["metrics"] == pytest.approx(test, rel=1e-6)

    shutil.rmtree(tmp_path / "two" / "checkpoints" / "8")
    resumed = run_cli("train", "--run-dir", str(tmp_path / "two"), *settings, "--resume", "--json", check=True)
    assert json.loads(resumed.stdout)["metrics"] == pytest.approx(two["metrics"], rel=1e-6)
    for resumed_record, record in zip(timeless_metrics(tmp_path / "two"), timeless_metrics(tmp_path / "one"), strict=True):
        assert resumed_record == pytest.approx(record, rel=1e-6)


@pytest.mark.parametrize("victim", [1, 0], ids=["process-1", "coordinator"])
def test_a_killed_process_stops_the_other_and_the_run_resumes_in_one_process(tmp_path, victim):
    """The survivor exits with code 1 within 60 s and one `error:` line; when process 0,
    the coordinator, died, JAX's client may log lines of its own before it (see
    dlcli/training/distributed.py)."""
    run_dir = tmp_path / "run"
    settings = sets(*FAMILY_TINY, "training.steps=400", "training.eval_every=50", "model.width=16",
                    "checkpoint.min_interval_s=0")
    processes = start(2, ["train", "--run-dir", str(run_dir), *settings], tmp_path)
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoints" / "50").is_dir():
        assert time.monotonic() < deadline and processes[0].poll() is None, "no checkpoint written"
        time.sleep(0.1)
    processes[victim].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    survivor = 1 - victim
    code, _, stderr = finish(processes[survivor:survivor + 1], timeout=60)[0]
    assert code == 1 and time.monotonic() - killed_at < 60, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"process {survivor} of 2 lost another process of the run" in lines[0], stderr[-2000:]
    assert "--resume" in lines[0] and "Traceback" not in stderr
    if victim == 1:
        assert stderr.rstrip().endswith(lines[0])  # nothing but that line after the progress
    processes[victim].wait()

    resumed = json.loads(run_cli("train", "--run-dir", str(run_dir), *settings, "--resume", "--json", check=True).stdout)
    assert resumed["steps"] == 400 and resumed["parallel"]["processes"] == 1
    assert [r["step"] for r in timeless_metrics(run_dir)] == list(range(50, 401, 50))


@pytest.mark.parametrize("options,message", [
    (["--coordinator", "127.0.0.1:1"], "needs all of --coordinator HOST:PORT, --num-processes N and --process-id I"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "--process-id must be in 0..1"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "0", "--process-id", "0"], "--num-processes must be at least 1"),
    (["--coordinator", "127.0.0.1", "--num-processes", "2", "--process-id", "0"], "--coordinator must be HOST:PORT"),
])
def test_incomplete_multi_process_settings_are_one_line(tmp_path, options, message):
    result = run_cli("train", "--run-dir", str(tmp_path / "run"), *options)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert message in result.stderr and not (tmp_path / "run").exists()


def test_a_process_whose_peers_never_come_gives_up_with_one_line(tmp_path):
    start_time = time.monotonic()
    result = run_cli("train", "--run-dir", str(tmp_path / "run"), "--coordinator", f"127.0.0.1:{free_port()}",
                     "--num-processes", "2", "--process-id", "0", "--init-timeout", "3")
    assert result.returncode == 2 and time.monotonic() - start_time < 60
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not join the multi-process run through coordinator")
    assert not (tmp_path / "run").exists()
