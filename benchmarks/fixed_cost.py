"""What a run costs besides training: whole commands, timed from the shell's side.

1. `dlcli train` of the built-in default experiment (digits MLP), whole process: with a
   cold persistent compilation cache (an empty folder), a warm one (the same folder
   again), the cache off, and as before this issue's work (cache off and a checkpoint
   at every evaluation, `checkpoint.min_interval_s=0`); and warm with
   `DLCLI_ALLOCATOR=glibc`, which tells what re-executing with tcmalloc costs where
   tcmalloc is installed (`dlcli.allocator`).
2. `dlcli sweep experiments/sweeps/mlp_digits.yaml` (12 trials, 2 long-lived workers)
   against the way before the workers: each trial's config a fresh `dlcli train`
   process, two at a time, cache off, a checkpoint at every evaluation.
3. `dlcli compare shallow-vs-deep` (sawtooth, 4 depths x 5 seeds, 2 workers) against its
   20 runs as fresh processes, two at a time (the old way does not include the
   statistics and plots the command draws afterwards: a slight advantage to it).

The sweep and the comparison run with a cold cache (a new empty folder, as on a first
use) and a warm one (the folder of the cold run). Every variant runs once per round,
the order rotating each round; each figure is wall-clock seconds of the whole command.
The results of both ways are compared (the best trial; each run's test metric).

    python benchmarks/fixed_cost.py [--rounds 2] [--only train,sweep,compare]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dlcli.batch import worker_env  # noqa: E402  (no JAX: the workers import it)

DLCLI = [sys.executable, "-m", "dlcli"]
BEFORE = ["--set", "checkpoint.min_interval_s=0"]  # a checkpoint at every evaluation, as before


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    return f"{cpu}, {os.cpu_count()} cores, load {' '.join(f'{v:.2f}' for v in os.getloadavg())}"


def timed(args: list[str], env: dict | None = None) -> tuple[float, str]:
    """Seconds of one whole command, and its stdout; the command must succeed."""
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return seconds, done.stdout


def cache_env(folder: Path | None) -> dict:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if folder is None:
        env["DLCLI_COMPILE_CACHE"] = "0"
    else:
        env["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    return env


def fresh_processes(configs: list[Path], out: Path, workers: int = 2) -> tuple[float, dict[str, dict]]:
    """The way before long-lived workers: each config a fresh `dlcli train`, `workers` at
    a time, with the workers' thread settings, cache off; (seconds, summary per run)."""
    env = worker_env(workers, Path(tempfile.gettempdir()), [])
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["DLCLI_COMPILE_CACHE"] = "0"
    pending, running, summaries = list(configs), [], {}
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    while pending or running:
        while pending and len(running) < workers:
            config = pending.pop(0)
            args = [*DLCLI, "train", str(config), "--run-dir", str(out / config.stem), "--json", *BEFORE]
            log = (out / f"{config.stem}.stderr").open("w")
            running.append((config, subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                                     stderr=log, text=True)))
        for config, process in list(running):
            if process.poll() is not None:
                stdout = process.stdout.read()
                if process.returncode:
                    stderr = (out / f"{config.stem}.stderr").read_text().strip()
                    raise SystemExit(f"dlcli train {config} failed ({process.returncode}): {stderr[-400:]}")
                summaries[config.stem] = json.loads(stdout)
                running.remove((config, process))
        time.sleep(0.02)
    return time.perf_counter() - start, summaries


def rotate(variants: dict, rounds: int) -> dict[str, list[float]]:
    """Run each variant (a function of the round -> seconds) once per round, rotating."""
    names, seconds = list(variants), {name: [] for name in variants}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds[name].append(variants[name](r))
            print(f"  round {r + 1}: {name:<40} {seconds[name][-1]:6.1f} s", flush=True)
    return seconds


def report(title: str, seconds: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    for name, values in seconds.items():
        print(f"  {name:<40} median {statistics.median(values):6.1f} s   ({', '.join(f'{v:.1f}' for v in values)})")


def bench_train(work: Path, rounds: int) -> None:
    args = [*DLCLI, "train", "--json", "--overwrite"]
    warm = work / "train-warm"
    timed([*args, "--run-dir", str(work / "warmup")], cache_env(warm))  # fills the warm folder
    results: dict[str, dict] = {}

    def variant(name: str, cache, extra=(), allocator_choice=None):
        def run(r: int) -> float:
            env = cache_env(cache(r)) | ({"DLCLI_ALLOCATOR": allocator_choice} if allocator_choice else {})
            seconds, stdout = timed([*args, "--run-dir", str(work / name), *extra], env)
            results[name] = json.loads(stdout)
            return seconds
        return run

    seconds = rotate({
        "cold cache": variant("cold", lambda r: work / f"train-cold-{r}"),
        "warm cache": variant("warm", lambda r: warm),
        "warm cache, DLCLI_ALLOCATOR=glibc": variant("warm-glibc", lambda r: warm, allocator_choice="glibc"),
        "cache off": variant("off", lambda r: None),
        "before (cache off, every eval saved)": variant("before", lambda r: None, BEFORE),
    }, rounds)
    report("dlcli train (default digits MLP), whole process", seconds)
    tests = {name: summary["metrics"]["test/accuracy"] for name, summary in results.items()}
    print(f"  test accuracy of each variant: {tests} ({'the same' if len(set(tests.values())) == 1 else 'DIFFERENT'})")


def bench_batch(work: Path, rounds: int, label: str, command: list[str], configs_under: str) -> None:
    """`command` (a sweep or compare, given --out) cold and warm, against fresh processes."""
    warm_cache = work / f"{label}-cache"
    outcome: dict[str, object] = {}

    def workers(cold: bool):
        def run(r: int) -> float:
            out = work / f"{label}-{'cold' if cold else 'warm'}-{r}"
            seconds, stdout = timed([*command, "--out", str(out), "--json"],
                                    cache_env(work / f"{label}-cold-cache-{r}" if cold else warm_cache))
            outcome["workers"], outcome["folder"] = json.loads(stdout), out
            return seconds
        return run

    def fresh(r: int) -> float:
        configs = sorted((outcome["folder"] / configs_under).glob("*.yaml"))
        seconds, outcome["fresh"] = fresh_processes(configs, work / f"{label}-fresh-{r}")
        return seconds

    timed([*command, "--out", str(work / f"{label}-warmup"), "--json"], cache_env(warm_cache))
    outcome["folder"] = work / f"{label}-warmup"
    seconds = rotate({"long-lived workers, cold cache": workers(True),
                      "long-lived workers, warm cache": workers(False),
                      "before: a fresh process per run": fresh}, rounds)
    report(f"{' '.join(command[3:])} (whole command)", seconds)
    before = statistics.median(seconds["before: a fresh process per run"])
    for name in ("long-lived workers, cold cache", "long-lived workers, warm cache"):
        print(f"  {name}: {before / statistics.median(seconds[name]):.2f}x faster than before")
    same = all(
        json.loads((outcome["folder"] / configs_under / key / "summary.json").read_text())["metrics"] == summary["metrics"]
        for key, summary in outcome["fresh"].items())
    print(f"  every run's metrics the same both ways: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="train,sweep,compare")
    options = parser.parse_args()
    print(f"machine   : {machine()}")
    from dlcli import allocator

    print(f"python    : {sys.version.split()[0]}; tcmalloc: {allocator.find_tcmalloc() or 'not installed'} "
          f"(dlcli's commands {'preload it' if allocator.find_tcmalloc() else 'keep glibc malloc, tuned'}; "
          f"DLCLI_ALLOCATOR={allocator.choice()})")
    parts = options.only.split(",")
    with tempfile.TemporaryDirectory(prefix="dlcli-fixed-cost-") as tmp:
        work = Path(tmp)
        if "train" in parts:
            bench_train(work, options.rounds)
        if "sweep" in parts:
            bench_batch(work, options.rounds, "sweep", [*DLCLI, "sweep", "experiments/sweeps/mlp_digits.yaml"], "trials")
        if "compare" in parts:
            bench_batch(work, options.rounds, "compare", [*DLCLI, "compare", "shallow-vs-deep", "--task", "sawtooth"],
                        "runs")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
