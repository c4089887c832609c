"""`dlcli sweep`: trials, failure isolation, results and best config, resume after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dlcli import interrupts
from dlcli.config import load_config
from dlcli.errors import BadInput
from dlcli.sweep import load_sweep, trial_params

from conftest import REPO, cli_env, invoke, run_cli, timeless_metrics, train_json

TINY = ["training.steps=20", "training.eval_every=10", "model.width=16"]


def _write(tmp_path, **fields) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "strategy": "grid", "metric": "val/accuracy", "direction": "max",
                                    "set": TINY, **fields}))
    return str(path)


@pytest.mark.e2e
def test_grid_with_planted_failures(tmp_path):
    sweep = _write(tmp_path, space={"training.batch_size": [32, 5000], "model.dropout": [0.0, 1.5]})
    result = run_cli("sweep", sweep, "--workers", "2", "--out", str(tmp_path / "out"), "--json", check=True)
    data = json.loads(result.stdout)
    by_params = {(t["params"]["training.batch_size"], t["params"]["model.dropout"]): t for t in data["trials"]}
    assert by_params[(32, 0.0)]["status"] == "done"
    assert "batch_size 5000 is larger" in by_params[(5000, 0.0)]["error"]  # failed inside its worker
    assert "model.dropout must be < 1.0" in by_params[(32, 1.5)]["error"]  # impossible config, never started
    assert data["finished"] == 1 and data["failed"] == 3
    assert data["trials"][0]["status"] == "done"  # sorted: finished trials first
    best = load_config(tmp_path / "out" / "best.yaml")
    assert best.training.batch_size == 32 and best.model.dropout == 0.0
    csv = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(csv) == 5 and csv[0].startswith("trial,status,val/accuracy")


@pytest.mark.e2e
def test_results_sorted_by_metric_and_a_worker_trains_as_dlcli_train_does(tmp_path):
    sweep = _write(tmp_path, space={"optimizer.learning_rate": [0.0001, 0.003, 0.001]})
    data = json.loads(run_cli("sweep", sweep, "--workers", "1", "--out", str(tmp_path / "out"), "--json",
                              check=True).stdout)
    values = [t["value"] for t in data["trials"]]
    assert values == sorted(values, reverse=True)
    assert data["best"]["value"] == values[0]
    # the last trial ran in a worker that had trained two before it: its run folder is
    # the one a fresh `dlcli train` of its config writes
    trial = sorted((tmp_path / "out" / "trials").glob("*.yaml"))[-1]
    fresh = train_json(str(trial), "--run-dir", str(tmp_path / "fresh"), process=True)
    by_worker = trial.with_suffix("")
    assert json.loads((by_worker / "summary.json").read_text())["metrics"] == fresh["metrics"]
    assert timeless_metrics(by_worker) == timeless_metrics(tmp_path / "fresh")
    assert _files(by_worker) - {"extra_evals.json"} == _files(tmp_path / "fresh")


@pytest.mark.e2e
def test_a_killed_worker_loses_its_trial_alone_and_the_rerun_resumes_it(tmp_path):
    sweep = _write(tmp_path, space={"optimizer.learning_rate": [0.001, 0.002, 0.003]},
                   set=["training.steps=200", "training.eval_every=100", "model.width=16"])
    process = subprocess.Popen([sys.executable, "-m", "dlcli", "sweep", sweep, "--workers", "1", "--out",
                                str(tmp_path / "out"), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=cli_env(), cwd=REPO)
    deadline = time.monotonic() + 180
    while (not any(p.name.isdigit() for p in (tmp_path / "out").glob("trials/*/checkpoints/[0-9]*"))
           and time.monotonic() < deadline):
        time.sleep(0.05)
    (worker,) = [pid for pid in _children(process.pid) if b"dlcli.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    data = json.loads(stdout)
    assert data["finished"] == 2 and data["failed"] == 1
    (failed,) = [t for t in data["trials"] if t["status"] == "failed"]
    assert failed["error"] == "the worker process was killed by SIGKILL"
    checkpoints = Path(failed["run_dir"]) / "checkpoints"
    kept = {p: p.stat().st_mtime_ns for p in checkpoints.glob("[0-9]*") if p.name.isdigit()}
    assert kept
    rerun = run_cli("sweep", sweep, "--workers", "1", "--out", str(tmp_path / "out"), "--json")
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads(rerun.stdout)
    assert again["finished"] == 3 and again["failed"] == 0
    newest = max(kept, key=lambda p: int(p.name))  # resumed from it, not trained again from step 0
    assert newest.stat().st_mtime_ns == kept[newest]


@pytest.mark.e2e
def test_a_trial_past_its_time_limit_is_stopped_and_its_worker_replaced_if_stopped_mid_import(tmp_path):
    """A time limit's SIGINT that lands outside training's safe points (here in a plugin's
    import, as it once landed in JAX's under load and left the worker with a half-imported
    `jax`) ends that worker: the next trial runs in a fresh process and trains."""
    plugin = tmp_path / "slow_plugin.py"  # slow to import in a worker (the sweep's own process checks the config)
    plugin.write_text("import os, pathlib, sys, time\n"
                      "if sys.argv[0].endswith('worker.py'):\n"
                      "    pathlib.Path(__file__).with_suffix('.pid').write_text(str(os.getpid()))\n"
                      "    time.sleep(300)\n"
                      "from dlcli.specs.mlp import MLPConfig as SlowMLP\n")
    sweep = _write(tmp_path, space={"model.name": [f"{plugin}:SlowMLP", "mlp"]}, trial_timeout_s=20)
    data = json.loads(run_cli("sweep", sweep, "--workers", "1", "--out", str(tmp_path / "out"), "--json",
                              check=True).stdout)
    slow, plain = sorted(data["trials"], key=lambda t: t["params"]["model.name"] == "mlp")
    assert slow["status"] == "failed" and slow["error"] == "stopped after 20 s, its time limit"
    assert plain["status"] == "done"
    stopped_in = int(plugin.with_suffix(".pid").read_text())
    assert json.loads((Path(plain["run_dir"]) / "status.json").read_text())["pid"] != stopped_in


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # that process has ended
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _files(run_dir: Path) -> set[str]:
    """The files of a run folder, by path within it; names made of a time, a host or a
    random hash (TensorBoard's event files, Orbax's OCDBT data files) as '*'."""
    return {str(p.parent.relative_to(run_dir) / ("*" if "events.out" in p.name or p.parent.name == "d" else p.name))
            for p in run_dir.rglob("*") if p.is_file()}


def test_random_strategy_is_reproducible(tmp_path):
    space = {"optimizer.learning_rate": {"distribution": "log_uniform", "low": 1e-4, "high": 1e-2},
             "model.width": {"distribution": "int_uniform", "low": 8, "high": 64},
             "model.activation": {"distribution": "choice", "values": ["relu", "tanh"]},
             "model.dropout": {"distribution": "uniform", "low": 0.0, "high": 0.5}}
    sweep = load_sweep(_write(tmp_path, strategy="random", trials=20, seed=3, space=space))
    params = trial_params(sweep)
    assert params == trial_params(sweep) and len(params) == 20
    assert all(1e-4 <= p["optimizer.learning_rate"] <= 1e-2 and 8 <= p["model.width"] <= 64 for p in params)
    assert {p["model.activation"] for p in params} == {"relu", "tanh"}


@pytest.mark.parametrize("fields,message", [
    ({"space": {}}, "search space is empty"),
    ({"space": {"optimizer.learning_rat": [0.1]}}, "did you mean 'optimizer.learning_rate'"),
    ({"space": {"model.width": {"distribution": "uniform", "low": 1, "high": 2}}}, "a grid needs a list"),
    ({"strategy": "random", "space": {"model.width": [8]}}, "trials is missing"),
    ({"metric": "val/mae", "space": {"model.width": [8]}}, "does not exist for classification"),
])
def test_bad_sweep_files(tmp_path, fields, message):
    with pytest.raises(BadInput, match=message):
        load_sweep(_write(tmp_path, **fields))
    result = invoke("sweep", _write(tmp_path, **fields), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message.split("'")[0] in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.e2e
def test_ctrl_c_then_rerun_trains_only_missing_trials(tmp_path):
    sweep = _write(tmp_path, space={"optimizer.learning_rate": [0.001, 0.002, 0.003, 0.004, 0.005]},
                   set=["training.steps=200", "training.eval_every=100", "model.width=16"])
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "dlcli", "sweep", sweep, "--workers", "1", "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)
    deadline = time.monotonic() + 180
    while not list(out.glob("trials/*/summary.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "error: stopped by Ctrl-C" in stderr, (process.returncode, stderr)
    finished = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/summary.json")}
    assert 1 <= len(finished) < 5

    data = json.loads(run_cli("sweep", sweep, "--workers", "1", "--out", str(out), "--json", check=True).stdout)
    assert data["finished"] == 5 and data["failed"] == 0
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in finished.items())


@pytest.mark.e2e
def test_shell_grid_script_collects_json(tmp_path):
    env = cli_env(EPOCHS="1", LRS="0.0003 0.003", WIDTHS="16 32")  # a 2x2 grid of the script's 3x2
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    result = subprocess.run(["bash", "experiments/grid.sh", str(tmp_path / "grid")], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.strip().splitlines()
    assert rows[0].split()[:2] == ["run", "params"] and len(rows) == 5
    assert {row.split()[0] for row in rows[1:]} == {f"lr{lr}-w{w}" for lr in ("0.0003", "0.003") for w in (16, 32)}
    accuracies = [float(row.split()[2]) for row in rows[1:]]
    assert accuracies == sorted(accuracies, reverse=True)
    assert len((tmp_path / "grid" / "results.jsonl").read_text().splitlines()) == 4


@pytest.mark.e2e
def test_optuna_strategy_prunes_and_resumes(tmp_path):
    pytest.importorskip("optuna")
    sweep = _write(tmp_path, strategy="optuna", trials=6, seed=0,
                   set=["training.steps=400", "training.eval_every=100", "model.width=16",
                        "checkpoint.every=10"],  # the pruner reads metrics.jsonl; one checkpoint a trial
                   space={"optimizer.learning_rate": [0.01, 0.000001]})
    out = tmp_path / "out"
    first = json.loads(run_cli("sweep", sweep, "--workers", "1", "--out", str(out), "--json", check=True).stdout)
    assert len(first["trials"]) == 6 and {t["status"] for t in first["trials"]} <= {"done", "pruned"}
    assert first["best"]["params"]["optimizer.learning_rate"] == 0.01
    assert all(t["params"]["optimizer.learning_rate"] == 0.000001 for t in first["trials"] if t["status"] == "pruned")
    # one set of workers for the whole study: a learning rate's later finished trials
    # run the programs its first finished trial compiled
    finished_before = set()
    for trial in sorted(first["trials"], key=lambda t: t["index"]):
        if trial["status"] != "done":
            continue
        rate = trial["params"]["optimizer.learning_rate"]
        summary = json.loads((Path(trial["run_dir"]) / "summary.json").read_text())
        assert (summary["compile_s"] == 0) == (rate in finished_before), trial
        finished_before.add(rate)
    again = json.loads(run_cli("sweep", sweep, "--workers", "1", "--out", str(out), "--json", check=True).stdout)
    assert again["trials"] == first["trials"]  # the study in optuna.db is complete: nothing new runs


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_a_finalizer_is_still_seen(signum):
    """CPython drops a KeyboardInterrupt raised inside a finalizer; deferred or not, the
    signal is recorded for the batch (or the command) to see."""
    class DeliversSignal:
        def __del__(self):
            signal.raise_signal(signum)

    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    interrupts.reset()
    with interrupts.deferred():
        DeliversSignal()  # dropped at once: its finalizer runs here
        assert interrupts.received() == signum
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before
    interrupts.reset()
    interrupts.install()
    try:
        DeliversSignal()  # raised inside the finalizer and dropped there, but recorded
        assert interrupts.received() == signum
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        interrupts.reset()
