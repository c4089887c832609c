"""Many runs at once: each job is an ordinary `dlcli train`, run by a worker process.

Worker processes (`dlcli.worker`) start JAX once and run job after job, so a batch
pays the start-up once per worker, not once per run. They isolate failures (a crash,
a NaN, an impossible config fails that job alone; a dead worker is replaced) and let
each worker set JAX's thread and memory variables before JAX is imported: CPU threads
and GPU memory are divided among the workers, and on a machine with several GPUs each
worker gets its own (`CUDA_VISIBLE_DEVICES`), in turn. Jobs are resumable: a run folder
with `summary.json` is finished and is read, not retrained; one with checkpoints but no
summary (killed, interrupted) is continued with `--resume`; a recorded failure is
reported again, not retried. Ctrl-C stops the workers and leaves exactly that state, so
a rerun completes the batch.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import yaml

from dlcli import interrupts
from dlcli.config import parse_yaml
from dlcli.errors import BadInput
from dlcli.files import FolderLock, write_atomically
from dlcli.runs import RunDir


PRUNED = -1000  # the exit code recorded for a run stopped by its `prune` callback
TIMED_OUT = -1001  # the exit code recorded for a run stopped at its `timeout_s`
MAX_WORKERS = 1024  # worker processes one batch may start


@dataclasses.dataclass
class Job:
    """One training run: its resolved config and its run folder."""

    key: str
    config: dict
    run_dir: Path
    extra_evals: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # name -> `dlcli eval` flags
    prune: Callable[[Path], bool] | None = None  # polled while training; True stops the run as pruned
    timeout_s: float | None = None  # a run still training after this long is stopped and recorded as failed

    @property
    def config_path(self) -> Path:
        return self.run_dir.parent / f"{self.run_dir.name}.yaml"

    @property
    def failure_path(self) -> Path:
        return self.run_dir.parent / f"{self.run_dir.name}.failed.json"


@dataclasses.dataclass
class JobResult:
    key: str
    status: str  # "done", "failed" or "pruned"
    summary: dict | None = None
    error: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)  # name -> metrics of each extra evaluation
    cached: bool = False  # read back from an earlier invocation, not run now


def visible_gpus() -> list[str]:
    """The GPUs the workers may use, found without starting JAX: the entries of
    CUDA_VISIBLE_DEVICES where it is set, else one per /dev/nvidiaN; none when
    `--platform` (JAX_PLATFORMS) names another platform."""
    if os.environ.get("JAX_PLATFORMS", "gpu") not in ("gpu", "cuda"):
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    return sorted((p.name[len("nvidia"):] for p in Path("/dev").glob("nvidia[0-9]*")), key=int)


def worker_env(workers: int, data_dir: Path, gpus: list[str]) -> dict:
    """The environment every worker shares: JAX's CPU threads divided among `workers`, no
    GPU memory taken up front and at most its share of a GPU (the workers that share
    one of `gpus`, or all of them on a machine without GPUs that says so)."""
    env = dict(os.environ)
    env["DLCLI_DATA_DIR"] = str(data_dir)
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    sharing = -(-workers // len(gpus)) if gpus else workers
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / sharing:.3f}"
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        flags = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
        env["OMP_NUM_THREADS"] = str(threads)
    return env


class JobPool:
    """`workers` long-lived worker processes for one or more batches of jobs (a
    comparison tunes, then trains; an Optuna study asks for trials batch by batch), so
    JAX starts once per worker for the whole command and a later job reuses what the
    worker compiled for an earlier one. Use it as a context manager."""

    def __init__(self, *, workers: int, data_dir: Path):
        self.workers = max(1, workers)
        gpus = visible_gpus()
        self._runner = _Runner(worker_env(self.workers, data_dir, gpus), gpus)

    def __enter__(self) -> "JobPool":
        return self

    def __exit__(self, *exc) -> None:
        self._runner.close()

    def run(self, jobs: list[Job], on_done: Callable[[JobResult], None] = lambda result: None) -> list[JobResult]:
        """Run every unfinished job; results in the order of `jobs`. Ctrl-C stops the
        workers (their jobs stay unfinished) and raises KeyboardInterrupt; so does SIGTERM
        (`dlcli.interrupts.Interrupted`)."""
        results: dict[str, JobResult] = {}
        pending = []
        for job in jobs:
            finished = _finished(job)
            if finished is not None:
                results[job.key] = finished
                on_done(finished)
            else:
                pending.append(job)
        threads = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers)
        with interrupts.deferred():
            try:
                running = {threads.submit(self._runner.run, job) for job in pending}
                while running:
                    done, running = concurrent.futures.wait(running, timeout=0.2,
                                                            return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in done:
                        result = future.result()
                        results[result.key] = result
                        on_done(result)
                    if interrupts.received():
                        raise interrupts.Interrupted(interrupts.received())
            except KeyboardInterrupt:
                self._runner.stop()
                raise
            finally:
                threads.shutdown(wait=True, cancel_futures=True)
        return [results[job.key] for job in jobs]


def run_jobs(jobs: list[Job], *, workers: int, data_dir: Path,
             on_done: Callable[[JobResult], None] = lambda result: None) -> list[JobResult]:
    """Run every unfinished job on `workers` worker processes of their own; results in the order of `jobs`."""
    with JobPool(workers=workers, data_dir=data_dir) as pool:
        return pool.run(jobs, on_done)


def _finished(job: Job) -> JobResult | None:
    summary = RunDir(job.run_dir).summary()
    if summary is not None and _same_config(job):
        extra_path = job.run_dir / "extra_evals.json"
        extra = json.loads(extra_path.read_text()) if extra_path.exists() else {}
        if set(extra) >= set(job.extra_evals):
            return JobResult(job.key, "done", summary, extra=extra, cached=True)
    if job.failure_path.exists() and _same_config(job):
        record = json.loads(job.failure_path.read_text())
        if record.get("retry"):  # its worker was killed: the rerun resumes it from its checkpoints
            return None
        return JobResult(job.key, "pruned" if record["exit_code"] == PRUNED else "failed", error=record["error"],
                         cached=True)
    return None


def _wait_for_its_writer(run_dir: Path, patience_s: float = 5.0) -> None:
    """Give a process still writing `run_dir` (a worker of a batch killed a moment ago,
    which ends itself within half a second) time to end; if it does not, the job's own
    `dlcli train` reports who holds the folder."""
    lock = FolderLock(run_dir, "run folder")
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        try:
            lock.check_free()
            return
        except BadInput:
            time.sleep(0.1)


def _same_config(job: Job) -> bool:
    return job.config_path.exists() and parse_yaml(job.config_path.read_text()) == job.config


class _Runner:
    """Runs jobs on long-lived `python -m dlcli.worker` processes (JAX starts once per
    worker, not once per job); `stop` ends all that are running. A pruned job is
    interrupted as Ctrl-C interrupts `dlcli train`, and its worker goes on; a worker that
    dies loses its job alone, and the next job gets a new worker."""

    def __init__(self, env: dict, gpus: list[str]):
        self.env, self.gpus = env, gpus
        self.stopping = threading.Event()
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()

    def run(self, job: Job) -> JobResult:
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        if not _same_config(job):
            job.failure_path.unlink(missing_ok=True)
            write_atomically(job.config_path, yaml.safe_dump(job.config, sort_keys=False))
            mode = ["--overwrite"]
        else:
            mode = ["--resume"] if RunDir(job.run_dir).has_checkpoint() else ["--overwrite"]
        _wait_for_its_writer(job.run_dir)
        code, out, err = self._call(["train", str(job.config_path), "--run-dir", str(job.run_dir), *mode, "--json"],
                                    job.run_dir if job.prune else None, job.prune, job.timeout_s)
        if code == PRUNED:
            write_atomically(job.failure_path, json.dumps({"exit_code": PRUNED, "error": "pruned"}))
            return JobResult(job.key, "pruned", error="pruned")
        if code != 0:
            return self._failed(job, code, err)
        extra = {}
        for name, flags in job.extra_evals.items():
            code, eval_out, err = self._call(["eval", str(job.run_dir), *flags, "--json"])
            if code != 0:
                return self._failed(job, code, err)
            extra[name] = json.loads(eval_out)["metrics"]
        write_atomically(job.run_dir / "extra_evals.json", json.dumps(extra))
        return JobResult(job.key, "done", json.loads(out), extra=extra)

    def _failed(self, job: Job, code: int, stderr: str) -> JobResult:
        lines = [line for line in stderr.splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit code {code}"
        if code == TIMED_OUT:
            error = f"stopped after {job.timeout_s:g} s, its time limit"
        if not self.stopping.is_set():  # an interrupted job is unfinished, not failed
            # killed by a signal (SIGKILL, the OOM killer): nothing it did was wrong, so a
            # rerun tries it again, resuming from its checkpoints
            record = {"exit_code": code, "error": error, "retry": -100 < code < 0}
            write_atomically(job.failure_path, json.dumps(record))
        return JobResult(job.key, "failed", error=error)

    def _call(self, args: list[str], run_dir: Path | None = None, prune: Callable[[Path], bool] | None = None,
              timeout_s: float | None = None) -> tuple[int, str, str]:
        """`dlcli ARGS` on an idle worker; (exit code, stdout, stderr). Output goes
        through temporary files, so a long run cannot fill a pipe while `prune` is polled;
        a call still running after `timeout_s` is interrupted (exit code `TIMED_OUT`)."""
        if self.stopping.is_set():
            return 130, "", "interrupted"
        worker = self._take()
        with tempfile.TemporaryDirectory(prefix="dlcli-job-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            code = None if worker.start(args, out, err) else worker.exit_code
            deadline = time.monotonic() + timeout_s if timeout_s is not None else None
            while code is None and worker.alive:
                if prune is not None and prune(run_dir):
                    worker.interrupt()
                    code = PRUNED
                elif deadline is not None and time.monotonic() > deadline:
                    worker.interrupt()
                    code = TIMED_OUT
                else:
                    code = worker.reply(timeout=0.5)
            if code is None:  # it died under the job, perhaps just after its answer
                code = worker.reply(timeout=0)
            stdout = out.read_text() if out.exists() else ""
            stderr = err.read_text() if err.exists() else ""
        if code is None:
            code = worker.exit_code or 1
            how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                   else f"ended with exit code {code}{worker.last_words()}")
            stderr += f"\nthe worker process {how}\n"
        self._give(worker)
        return code, stdout, stderr

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                self._workers.discard(worker)
                worker.kill()  # reaps it and closes its log
            slot = min(set(range(len(self._workers) + 1)) - {w.slot for w in self._workers})
            env = {**self.env, "CUDA_VISIBLE_DEVICES": self.gpus[slot % len(self.gpus)]} if self.gpus else self.env
            worker = _Worker(env, slot)
            self._workers.add(worker)
        if self.stopping.is_set():  # `stop` may have run while this one started
            worker.kill()
        return worker

    def _give(self, worker: _Worker) -> None:
        with self._lock:
            if worker.alive and not self.stopping.is_set():
                self._idle.append(worker)
            else:
                self._workers.discard(worker)
                worker.kill()

    def stop(self) -> None:
        """End every worker now (SIGTERM): their jobs stay unfinished, as a Ctrl-C leaves them."""
        self.stopping.set()
        with self._lock:
            for worker in self._workers:
                worker.terminate()

    def close(self) -> None:
        """Let the idle workers finish (end of their input) and wait for them."""
        with self._lock:
            workers, self._workers, self._idle = set(self._workers), set(), []
        for worker in workers:
            worker.close()


class _Worker:
    """One `python -m dlcli.worker` process in a session of its own (a Ctrl-C at the
    terminal reaches the batch, which stops the workers itself); what it prints below
    Python goes to a temporary log, whose last line explains a crash."""

    def __init__(self, env: dict, slot: int):
        self.slot = slot  # which of the runner's places it holds (and so which GPU)
        self._log = tempfile.TemporaryFile("w+")
        self._process = subprocess.Popen([sys.executable, "-m", "dlcli.worker", str(os.getpid())],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                         env=env, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self._process.poll()

    def start(self, args: list[str], stdout: Path, stderr: Path) -> bool:
        """Send the job; False if the worker is gone."""
        request = {"args": args, "stdout": str(stdout), "stderr": str(stderr)}
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            self._process.wait()
            return False
        return True

    def reply(self, timeout: float) -> int | None:
        """The job's exit code once the worker answers within `timeout` seconds; None
        until then, and None at the end of the pipe (the worker died)."""
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            return None
        return json.loads(line)["code"]

    def last_words(self) -> str:
        self._log.seek(0)
        lines = [line for line in self._log.read().splitlines() if line.strip()]
        return f": {lines[-1]}" if lines else ""

    def interrupt(self, grace_s: float = 30.0) -> None:
        """Stop the running job as Ctrl-C stops `dlcli train` (its checkpoints closed, the
        worker kept for the next job); a worker that has not answered in `grace_s` is killed."""
        if not self.alive:
            return
        self._process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace_s
        while self.alive and time.monotonic() < deadline:
            if self.reply(timeout=0.5) is not None:
                return
        self.kill()

    def terminate(self) -> None:
        if self.alive:
            self._process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.terminate()
        self._process.wait()
        self._log.close()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._process.stdin.close()
        self._process.wait()
        self._log.close()
