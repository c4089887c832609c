"""What the benchmark scripts share: the header describing the machine and the software,
CPU-time accounting, a random stand-in for tiny shakespeare, and dlcli's training loop."""

from __future__ import annotations

import gzip
import os
import platform
import time
from pathlib import Path

import flax
import jax
import numpy as np
import optax

from dlcli.config import load_config
from dlcli.data import num_examples
from dlcli.training.experiment import EpochSampler, build_experiment

# one model per family, at batch 64 (divisible by 1, 2 and 4 devices)
FAMILY_MODELS = {
    "mlp": ["data.name=mnist", "model.width=512", "model.depth=2"],
    "cnn": ["data.name=mnist", "model.name=cnn", "model.blocks=[{channels: 32}, {channels: 64}]",
            "model.dense=[128]"],
    "lstm": ["data.name=adding", "model.name=lstm", "model.hidden=128"],
    "transformer_decoder": ["data.name=copy_memory", "model.name=transformer_decoder", "model.width=128",
                            "model.layers=2", "model.heads=4"],
    "vae": ["data.name=mnist", "data.normalize=unit", "model.name=vae"],
    "gan": ["data.name=ring8", "model.name=gan"],
}

# tiny shakespeare's 65 characters, so random text has the same vocabulary size
SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def allocator() -> str:
    """tcmalloc if this process has it mapped (e.g. through LD_PRELOAD), else glibc malloc."""
    maps = Path("/proc/self/maps").read_text()
    for line in maps.splitlines():
        if "tcmalloc" in line:
            return f"tcmalloc ({line.split()[-1]})"
    return "glibc malloc (no tcmalloc mapped)"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process) so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def print_header(data_desc: str, extra: dict[str, str] | None = None) -> None:
    """Machine, versions, JAX backend, any `extra` lines (label: text), allocator, data, load."""
    print(f"machine   : {cpu_model()}, {os.cpu_count()} logical cores "
          f"({len(os.sched_getaffinity(0))} usable), {platform.system()} {platform.release()}")
    print(f"versions  : python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
          f"optax {optax.__version__}, numpy {np.__version__}")
    print(f"jax       : backend {jax.default_backend()}, devices {jax.devices()}")
    for label, text in (extra or {}).items():
        print(f"{label:<10}: {text}")
    print(f"allocator : {allocator()}")
    print(f"data      : {data_desc}")
    print(f"load avg  : {load()} (1, 5, 15 min) at start")


def write_random_text(path: Path, n_chars: int, seed: int = 0) -> None:
    """`n_chars` characters drawn uniformly from SHAKESPEARE_CHARS (each of them at least once)."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list(SHAKESPEARE_CHARS))
    text = np.concatenate([alphabet, rng.choice(alphabet, max(n_chars - len(alphabet), 0))])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(text), encoding="utf-8")


def write_random_mnist(folder: Path, seed: int = 0) -> None:
    """Random uint8 images and labels as MNIST's four gzip'd IDX files in `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for prefix, count in (("train", 60_000), ("t10k", 10_000)):
        for kind, magic, shape in (("images-idx3", 2051, (count, 28, 28)), ("labels-idx1", 2049, (count,))):
            data = rng.integers(0, 256 if kind.startswith("images") else 10, shape, dtype=np.uint8)
            header = np.array([magic, *shape], dtype=">i4").tobytes()
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb", compresslevel=1) as f:
                f.write(header + data.tobytes())


class DlcliSide:
    """A model trained through dlcli's own experiment, sampler and compiled chunk."""

    label = "dlcli"

    def __init__(self, overrides: list[str], data_dir: Path, config: Path | None = None):
        self.cfg = load_config(config, overrides)
        self.exp = build_experiment(self.cfg, data_dir)
        self.sampler = EpochSampler(num_examples(self.exp.splits.train[0]), self.cfg.training.batch_size, self.cfg.seed)
        self.per_dispatch = self.cfg.training.steps_per_dispatch
        self.step = 0

    @property
    def params(self) -> int:
        return self.exp.params

    def run(self, n_steps: int) -> None:
        """`n_steps` train steps (a multiple of steps_per_dispatch), one chunk per dispatch."""
        exp = self.exp
        for _ in range(n_steps // self.per_dispatch):
            exp.steps.train_chunk(exp.x_train, exp.y_train, self.sampler.indices(self.step, self.per_dispatch), self.step)
            self.step += self.per_dispatch
        jax.block_until_ready(exp.steps.state)


def timed(side, steps: int) -> float:
    """Steps per second of `steps` steps of a side (anything with `run(n)`)."""
    start = time.perf_counter()
    side.run(steps)
    return steps / (time.perf_counter() - start)


def rotated_rounds(sides: dict, rounds: int, steps: int) -> dict[object, list[float]]:
    """Compile every `DlcliSide` of `sides` (a first chunk each), then `rounds` rounds of
    `steps` steps per side, the order rotating each round; steps/s per side and round."""
    for side in sides.values():
        side.run(side.per_dispatch)
    keys = list(sides)
    rates: dict[object, list[float]] = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            rates[key].append(timed(sides[key], steps))
    return rates


def alternate(dlcli: DlcliSide, twin, rounds: int, steps: int, more_twins: tuple = ()) -> dict[str, list[float]]:
    """A warm-up chunk on each side (dlcli's compiles), then `rounds` rounds in which the
    sides (`twin` and each of `more_twins` have `label`, `run(n)`) each run `steps` steps,
    the order rotating each round (two sides alternate); returns the steps/s of every round
    per side label, printing each round with the share of the CPUs other processes used meanwhile."""
    k = dlcli.per_dispatch
    twins = (twin, *more_twins)
    start = time.perf_counter()
    dlcli.run(k)
    print(f"   warm-up: dlcli first chunk {time.perf_counter() - start:.2f} s "
          f"(compile {dlcli.exp.steps.compile_s:.2f} s)", end="")
    for side in twins:
        start = time.perf_counter()
        side.run(k)
        print(f", {side.label} {k} steps {time.perf_counter() - start:.2f} s", end="")
    print()

    sides = (dlcli, *twins)
    rates: dict[str, list[float]] = {side.label: [] for side in sides}
    for r in range(rounds):
        busy_before, own_before = cpu_seconds()
        round_start = time.perf_counter()
        for side in sides[r % len(sides):] + sides[: r % len(sides)]:
            start = time.perf_counter()
            side.run(steps)
            rates[side.label].append(steps / (time.perf_counter() - start))
        busy, own = cpu_seconds()
        others = (busy - busy_before - (own - own_before)) / ((time.perf_counter() - round_start) * os.cpu_count())
        print(f"   round {r + 1}/{rounds}: " + "  ".join(f"{side.label} {rates[side.label][-1]:8.1f}" for side in sides)
              + f" steps/s   (other processes {max(others, 0):.0%} of the CPUs; load {load()})")
    compiled = dlcli.exp.steps.compiled_shapes
    if len(compiled) != 1:
        print(f"   WARNING: dlcli compiled {len(compiled)} executables: {compiled}")
    return rates
