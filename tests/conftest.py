"""Shared test helpers: the verified datasets beside the repo, and dlcli as a subprocess."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# One persistent XLA compilation cache for the session, shared with the dlcli
# subprocesses (they inherit the environment): the many tiny runs compile the same
# programs again and again. Set before JAX is imported; a fresh folder per session.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # set once, by the first process; xdist workers inherit it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="dlcli-test-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tiny test programs spend far longer compiling than running: XLA's CPU backend at
# optimisation level 0 compiles them in about half the time, and without the new fusion
# emitters and with the module compiled as one piece (xdist already keeps both cores busy)
# the smoke runs of five experiments took 50 s instead of 62 s (AMD EPYC, fresh cache).
# Code for AVX2 at most: what the AMD EPYC CI machine has; an AVX-512 Xeon then compiles
# the same vector code instead of the wider, slower-to-compile one (unmeasured there).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
                                   "--xla_cpu_parallel_codegen_split_count=1 --xla_cpu_max_isa=AVX2")

REPO = Path(__file__).resolve().parents[1]


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker more than the cores. Much of a test's time is a subprocess
    starting, a wait on a signal or a lock, or a worker process of compare and sweep, when
    a worker's own core would sit idle: on the 2-core AMD EPYC, 3 workers took the whole
    suite to 8 min 04 s and 9 min 00 s against 10 min 31 s and 11 min 54 s with 2 (two
    back-to-back pairs of runs of 514 tests; CPU time also fell, 13.7 and 15.3 min against
    18.8 and 20.5 min)."""
    return (os.cpu_count() or 1) + 1
SHARED_DATA = REPO.parent / "shared" / "data"

# Tiny settings that make any experiment a smoke test.
TINY = ["training.steps=4", "training.eval_every=2", "training.batch_size=32", "training.eval_batch_size=256"]


# One tiny experiment of every architecture family, at FAMILY_TINY's few steps.
FAMILY_TINY = ["training.steps=4", "training.eval_every=2", "training.batch_size=8", "training.eval_batch_size=64",
               "training.restore_best=false"]
SMALL = ["data.n_train=64", "data.n_val=64", "data.n_test=64"]
IMAGES = ["data.subset=256"]

FAMILIES = {  # name: (experiment file or "" for the default, overrides)
    "mlp": ("", ["model.width=16"]),
    "cnn": ("", ["model.name=cnn", "model.blocks=[{channels: 4}]", "model.dense=[16]"]),
    "rnn": ("adding_rnn", [*SMALL, "model.hidden=16"]),
    "lstm": ("adding_lstm", [*SMALL, "model.hidden=16"]),
    "gru": ("adding_gru", [*SMALL, "model.hidden=16"]),
    "transformer_encoder": ("copy_transformer", [*SMALL, "model.width=16", "model.layers=1"]),
    "transformer_decoder": ("", ["model.name=transformer_decoder", "data.name=copy_memory", *SMALL, "model.width=16",
                                 "model.layers=1"]),
    "transformer_seq2seq": ("seq2seq_reverse", [*SMALL, "model.width=16", "model.layers=1", "data.min_length=4",
                                                "data.max_length=4", "model.context=6"]),
    "vit": ("vit_mnist", [*IMAGES, "model.width=16", "model.layers=1"]),
    "autoencoder": ("", ["model.name=autoencoder", "data.normalize=unit"]),
    "denoising_autoencoder": ("", ["model.name=denoising_autoencoder", "data.normalize=unit"]),
    "sparse_autoencoder": ("", ["model.name=sparse_autoencoder", "data.normalize=unit"]),
    "vae": ("", ["model.name=vae", "data.normalize=unit"]),
    "gan": ("gan_ring8", SMALL),
    "dcgan": ("dcgan_mnist", [*IMAGES, "model.classifier_run={judge}", "model.g_channels=[8,8,8]",
                              "model.d_channels=[8,8]"]),
}


def family_config(family: str, request) -> tuple[str, list[str]]:
    """(experiment name, overrides) of a family; the DCGAN's judge is the `judge` fixture's run."""
    experiment, overrides = FAMILIES[family]
    if any("{judge}" in item for item in overrides):
        overrides = [item.replace("{judge}", request.getfixturevalue("judge")) for item in overrides]
    return experiment, overrides


@pytest.fixture(scope="session")
def judge(tmp_path_factory) -> str:
    """A tiny MNIST classifier run, the judge a DCGAN on MNIST needs."""
    run = tmp_path_factory.mktemp("judge") / "run"
    train_json("--run-dir", str(run), *sets(*FAMILY_TINY, *IMAGES, "data.name=mnist", "data.normalize=unit",
                                            "model.width=16"))
    return str(run)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding mnist/ and fashion_mnist/ (../shared/data)."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"{SHARED_DATA} is missing")
    return SHARED_DATA


def cli_env(data_dir: Path | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLCLI_")}
    env["DLCLI_DATA_DIR"] = str(data_dir or SHARED_DATA)
    env.update(extra)
    return env


def run_cli(*args: str, data_dir: Path | None = None, check: bool = False, **popen) -> subprocess.CompletedProcess:
    """`python -m dlcli ARGS` in a real subprocess; stdout and stderr captured as text."""
    env = popen.pop("env", None) or cli_env(data_dir)
    result = subprocess.run([sys.executable, "-m", "dlcli", *args], capture_output=True, text=True, env=env,
                            cwd=popen.pop("cwd", REPO), timeout=popen.pop("timeout", 300))
    if check and result.returncode != 0:
        raise AssertionError(f"dlcli {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def invoke(*args: str, data_dir: Path | None = None, env: dict | None = None,
           check: bool = False, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`dlcli ARGS` in this process (`dlcli.cli.run`, what the console script runs before
    it exits), with the environment of `run_cli` and `cwd` (the repository) as working
    folder; stdout and stderr captured as text. For what needs no real process of its own."""
    from dlcli.cli import run

    stdout, stderr = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env or cli_env(data_dir))
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = run(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if check and code != 0:
        raise AssertionError(f"dlcli {' '.join(args)} exited {code}:\n{stderr.getvalue()}")
    return subprocess.CompletedProcess(["dlcli", *args], code, stdout.getvalue(), stderr.getvalue())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server or coordinator a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sets(*overrides: str) -> list[str]:
    """['--set', a, '--set', b, ...]"""
    return [part for item in overrides for part in ("--set", item)]


def train_json(*args: str, data_dir: Path | None = None, process: bool = False) -> dict:
    """Run `dlcli train ... --json` (in this process, or in a real one) and parse its one JSON object."""
    return json.loads((run_cli if process else invoke)("train", *args, "--json", data_dir=data_dir, check=True).stdout)


def snapshot(folder: Path) -> dict:
    """Relative path -> (bytes, mtime) of every file under `folder` (None for folders)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
            for p in folder.rglob("*")}


def timeless_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the fields that measure time or say where it ran."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("samples_per_s", "wall_s", "parallel")} for r in records]


def assert_resumes_evaluates_and_reproduces(overrides: list[str], tmp_path: Path) -> None:
    """Train `overrides` (two evaluations, checkpoint.keep >= 2, restore_best off) twice
    and once cut back to its first checkpoint (as a kill after that save leaves it) and
    resumed: all three end with the same metrics, and the resumed run's metrics.jsonl is
    the uninterrupted one's; `dlcli eval`'s library call reproduces the test metrics of
    the last checkpoint."""
    import shutil

    from dlcli.config import load_config
    from dlcli.training.evaluate import evaluate_run
    from dlcli.training.loop import fit

    overrides = [*overrides, "checkpoint.min_interval_s=0"]  # a checkpoint at each evaluation
    cfg = load_config(None, overrides)
    whole = fit(cfg, tmp_path / "whole", data_dir=SHARED_DATA, show_progress=False)
    again = fit(load_config(None, overrides), tmp_path / "again", data_dir=SHARED_DATA, show_progress=False)
    assert again["metrics"] == whole["metrics"]
    cut = Path(shutil.copytree(tmp_path / "whole", tmp_path / "cut"))
    shutil.rmtree(cut / "checkpoints" / str(whole["steps"]))
    resumed = fit(load_config(None, overrides), cut, data_dir=SHARED_DATA, resume=True, show_progress=False)
    assert resumed["metrics"] == whole["metrics"]
    assert timeless_metrics(cut) == timeless_metrics(tmp_path / "whole")
    evaluated = evaluate_run(tmp_path / "whole", checkpoint="latest", split="test", data_dir=SHARED_DATA)
    assert evaluated["checkpoint"] == whole["steps"]
    assert evaluated["metrics"] == {k: v for k, v in whole["metrics"].items()
                                    if k.startswith("test/") and k.count("/") == 1}
