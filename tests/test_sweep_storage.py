"""`dlcli sweep --storage`: sweep processes sharing one study, in a real PostgreSQL server
the tests start themselves (initdb + pg_ctl in a temporary folder, on 127.0.0.1) and in a
journal file: two processes at once train every trial exactly once; a process killed
mid-trial leaves a trial that a rerun retries, in the same run folder, from its checkpoint;
a bad storage is one line and exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, cli_env, free_port, run_cli
from test_sweep import _children, _write

pytestmark = pytest.mark.e2e  # real sweep processes (and a real database server)

optuna = pytest.importorskip("optuna")
RUNNING, WAITING, COMPLETE = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING,
                              optuna.trial.TrialState.COMPLETE)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: Debian's /usr/lib/postgresql/<version>/bin (the newest), else PATH's."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 (its data and socket in a temporary folder,
    owned by the `postgres` user when the tests run as root, since initdb refuses root);
    yields a function that creates a database and returns its URL. Skipped only when no
    PostgreSQL is installed (.ci/run installs Debian's)."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH); "
                    "apt-get install postgresql")
    folder = Path(tempfile.mkdtemp(prefix="dlcli-postgres-"))  # not under pytest's root-only tmp folder
    as_owner = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def postgres_command(name: str, *args) -> None:
        done = subprocess.run([*as_owner, str(bin_dir / name), *map(str, args)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f"{name} failed:\n{done.stdout}{done.stderr}"

    postgres_command("initdb", "-D", folder / "data", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    postgres_command("pg_ctl", "-D", folder / "data", "-l", folder / "server.log", "-w", "-o",
                     f"-h 127.0.0.1 -p {port} -k {folder} -F", "start")

    def database(name: str) -> str:
        postgres_command("createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{port}/{name}"

    try:
        yield database
    finally:
        postgres_command("pg_ctl", "-D", folder / "data", "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _storage(kind: str, request, tmp_path: Path) -> str:
    """A fresh study's --storage URL: a database of the test server, or a journal file in the sweep folder."""
    if kind == "journal":
        return f"journal:{tmp_path / 'out' / 'study.journal'}"
    return request.getfixturevalue("postgres")(tmp_path.name.lower())


def _start(sweep: str, out: Path, storage: str, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlcli", "sweep", sweep, "--workers", "1", "--out", str(out),
                             "--storage", storage, "--json", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)


def _trials(storage: str) -> list:
    """The study's trials, read with Optuna itself."""
    if storage.startswith("journal:"):
        journal = optuna.storages.journal.JournalFileBackend(storage.removeprefix("journal:"))
        storage = optuna.storages.JournalStorage(journal)
    return optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)


@pytest.mark.parametrize("kind,strategy", [("postgresql", "grid"), ("journal", "optuna")])  # each storage, each way of filling slots
def test_two_processes_train_every_trial_once(tmp_path, request, kind, strategy):
    space = ({"optimizer.learning_rate": [0.001, 0.003], "model.width": [8, 16]} if strategy == "grid" else
             {"optimizer.learning_rate": [0.001, 0.003], "model.width": {"distribution": "int_uniform", "low": 8,
                                                                          "high": 16}})
    sweep = _write(tmp_path, strategy=strategy, trials=4, space=space)
    storage, out = _storage(kind, request, tmp_path), tmp_path / "out"
    processes = [_start(sweep, out, storage) for _ in range(2)]
    outputs = [process.communicate(timeout=240) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [stderr for _, stderr in outputs]
    trained = [{line.split()[1].rstrip(":") for line in stderr.splitlines() if line.startswith("done trial-")}
               for _, stderr in outputs]  # what each process trained itself ("done (earlier)" is read back)
    assert trained[0].isdisjoint(trained[1]) and trained[0] | trained[1] == {f"trial-{i:03d}" for i in range(4)}
    for stdout, _ in outputs:  # each reports the whole study
        data = json.loads(stdout)
        assert data["finished"] == 4 and sorted(t["index"] for t in data["trials"]) == [0, 1, 2, 3]
    assert sorted(p.name for p in (out / "trials").iterdir() if p.is_dir()) == sorted(trained[0] | trained[1])
    assert all((out / "trials" / name / "summary.json").exists() for name in trained[0] | trained[1])
    trials = _trials(storage)
    assert [t.state for t in trials] == [COMPLETE] * 4 and sorted(t.user_attrs["slot"] for t in trials) == [0, 1, 2, 3]
    if strategy == "grid":
        assert sorted((t.params["optimizer.learning_rate"], t.params["model.width"]) for t in trials) == [
            (0.001, 8), (0.001, 16), (0.003, 8), (0.003, 16)]
    assert json.loads(outputs[0][0])["trials"] == json.loads(outputs[1][0])["trials"]


@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_a_killed_process_trial_is_retried_by_a_rerun(tmp_path, request, kind):
    sweep = _write(tmp_path, space={"optimizer.learning_rate": [0.001, 0.002, 0.003]},
                   set=["training.steps=300", "training.eval_every=100", "model.width=16"])
    storage, out = _storage(kind, request, tmp_path), tmp_path / "out"
    process = _start(sweep, out, storage, "--dead-after", "3")
    deadline = time.monotonic() + 180
    while not (started := [p.parents[1] for p in out.glob("trials/*/checkpoints/[0-9]*")  # a saved checkpoint,
                           if p.name.isdigit() and not (p.parents[1] / "summary.json").exists()]  # not Orbax's tmp
               ) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(process.pid)
    process.send_signal(signal.SIGKILL)  # the sweep process alone: its worker ends with it, as on a lost machine
    process.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(map(_alive, workers))
    (running,) = [t for t in _trials(storage) if t.state == RUNNING]
    run_dir = out / "trials" / f"trial-{running.user_attrs['slot']:03d}"
    assert run_dir in started
    first_record = (run_dir / "metrics.jsonl").read_text().splitlines()[0]

    data = json.loads(run_cli("sweep", sweep, "--workers", "1", "--out", str(out), "--storage", storage,
                              "--dead-after", "3", "--json", check=True).stdout)
    assert data["finished"] == 3 and data["failed"] == 0 and sorted(t["index"] for t in data["trials"]) == [0, 1, 2]
    trials = _trials(storage)
    assert not [t for t in trials if t.state in (RUNNING, WAITING)]
    done = [t for t in trials if t.state == COMPLETE]
    assert sorted(t.user_attrs["slot"] for t in done) == [0, 1, 2]  # each slot finished once
    (retry,) = [t for t in done if t.system_attrs.get("failed_trial") == running.number]
    assert retry.user_attrs["slot"] == running.user_attrs["slot"] and retry.params == running.params
    assert [t.number for t in trials if t.state not in (COMPLETE,)] == [running.number]  # the killed one: FAIL
    # the retry continued the killed run (--resume): its first evaluation is the one written before the kill
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[0] == first_record
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 300


@pytest.mark.parametrize("storage,message", [
    ("nonsense://somewhere/db", "not a database URL"),
    ("postgresql://postgres@127.0.0.1:{port}/sweeps", "cannot use the database: connection failed"),
    ("mysql://user@127.0.0.1/sweeps", "its database driver is not installed"),
    ("journal:", "name the journal file"),
])
def test_bad_storage_is_one_line_and_exit_code_2(tmp_path, storage, message):
    sweep = _write(tmp_path, space={"optimizer.learning_rate": [0.001]})
    result = run_cli("sweep", sweep, "--out", str(tmp_path / "out"), "--storage", storage.format(port=free_port()))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out" / "trials").exists()
