"""Train steps per second: dlcli against the same models in PyTorch eager, on CPU.

The dlcli side trains each model exactly as `dlcli train` does: `build_experiment`,
`EpochSampler`, and `CompiledSteps.train_chunk`, which runs `training.steps_per_dispatch`
steps per dispatch in a `lax.scan` with donated state. The PyTorch side trains the same
architecture with plain eager steps (forward, backward, Adam step), gathering each batch
from the same training tensor through a per-epoch permutation. The two sides alternate
over several rounds, each timing the same number of steps after a warm-up chunk (which
holds dlcli's compilation); the report gives the median steps/s per side and the ratio.

    .venv-bench/bin/python benchmarks/train_steps.py --models mlp,cnn,lstm,gru --rounds 5 --steps 128

The MLP and CNN train on MNIST. Without --data-dir (or DLCLI_DATA_DIR) that is random
MNIST-shaped IDX files written to a temporary folder, so dlcli loads them through its
own MNIST reader. The LSTM and GRU train on the adding problem (T = 100, 2 inputs),
which dlcli generates, with a regression head on the last step and a mean squared error.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import flax
import jax
import numpy as np
import optax
import torch
import torch.nn.functional as F
from torch import nn

from dlcli.config import load_config
from dlcli.data import num_examples
from dlcli.train.experiment import EpochSampler, build_experiment

COMMON = ["optimizer.name=adam", "optimizer.learning_rate=0.001"]
MNIST = ["data.name=mnist", "training.batch_size=128"]
ADDING = ["data.name=adding", "data.length=100", "data.n_train=6400", "training.batch_size=64", "model.hidden=128"]
OVERRIDES = {
    "mlp": MNIST + ["model.name=mlp", "model.widths=[512,512]", "model.activation=relu"],
    "cnn": MNIST + ["model.name=cnn",
                    "model.blocks=[{channels: 32, kernel: 3, pool: max}, {channels: 64, kernel: 3, pool: max}]",
                    "model.padding=same", "model.dense=[128]", "model.activation=relu"],
    "lstm": ADDING + ["model.name=lstm"],
    "gru": ADDING + ["model.name=gru"],
}
DESCRIPTIONS = {
    "mlp": "MLP 784-512-512-10, relu",
    "cnn": "CNN conv32-pool-conv64-pool-128-10, 3x3 SAME, relu",
    "lstm": "LSTM 2-128, one layer, T=100, last-step regression head",
    "gru": "GRU 2-128, one layer, T=100, last-step regression head",
}


def torch_model(name: str) -> nn.Module:
    """The PyTorch twin of the dlcli model `name` (NCHW for the CNN; same parameter count)."""
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))
    if name in ("lstm", "gru"):
        return LastStepRegressor(name)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


class LastStepRegressor(nn.Module):
    """torch.nn.LSTM or GRU (batch first) and a linear head on the last step's output."""

    def __init__(self, cell: str):
        super().__init__()
        self.recurrent = (nn.LSTM if cell == "lstm" else nn.GRU)(2, 128, batch_first=True)
        self.head = nn.Linear(128, 1)

    def forward(self, x):
        outputs, _ = self.recurrent(x)  # (B, T, 128)
        return self.head(outputs[:, -1])


class DlcliSide:
    """A model trained through dlcli's own experiment, sampler and compiled chunk."""

    label = "dlcli"

    def __init__(self, overrides: list[str], data_dir: Path):
        self.cfg = load_config(None, overrides)
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


class TorchSide:
    """The same model in PyTorch eager, trained on the same arrays with Adam."""

    label = "torch"

    def __init__(self, name: str, x, y: np.ndarray, batch_size: int, learning_rate: float, seed: int):
        torch.manual_seed(seed)
        self.model = torch_model(name)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        if isinstance(x, dict):  # a sequence task: (N, T, F) inputs, float targets
            self.x, self.y, self.loss = torch.from_numpy(x["inputs"]), torch.from_numpy(y), F.mse_loss
        else:
            images = torch.from_numpy(x)  # (N, H, W, C)
            self.x = images.permute(0, 3, 1, 2).contiguous() if name == "cnn" else images
            self.y, self.loss = torch.from_numpy(y).long(), F.cross_entropy
        self.batch = batch_size
        self.per_epoch = num_examples(x) // batch_size
        self.step = 0
        self.order = torch.randperm(num_examples(x))

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def run(self, n_steps: int) -> None:
        for _ in range(n_steps):
            position = self.step % self.per_epoch
            if position == 0:
                self.order = torch.randperm(len(self.x))
            indices = self.order[position * self.batch: (position + 1) * self.batch]
            loss = self.loss(self.model(self.x[indices]), self.y[indices])
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1


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


def print_header(data_desc: str) -> None:
    print(f"machine   : {cpu_model()}, {os.cpu_count()} logical cores "
          f"({len(os.sched_getaffinity(0))} usable), {platform.system()} {platform.release()}")
    print(f"versions  : python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
          f"optax {optax.__version__}, numpy {np.__version__}, torch {torch.__version__}")
    print(f"jax       : backend {jax.default_backend()}, devices {jax.devices()}")
    print(f"torch     : {torch.get_num_threads()} intra-op threads, {torch.get_num_interop_threads()} inter-op threads, "
          f"mkldnn {torch.backends.mkldnn.is_available()}")
    print(f"allocator : {allocator()}")
    print(f"data      : {data_desc}")
    print(f"load avg  : {load()} (1, 5, 15 min) at start")


def bench_model(name: str, data_dir: Path, rounds: int, steps: int) -> dict:
    """Alternate dlcli and PyTorch over `rounds` rounds of `steps` steps; return steps/s per side."""
    dlcli = DlcliSide(COMMON + OVERRIDES[name], data_dir)
    cfg = dlcli.cfg
    x, y = dlcli.exp.splits.train
    twin = TorchSide(name, x, y, cfg.training.batch_size, cfg.optimizer.learning_rate, cfg.seed)
    k = dlcli.per_dispatch
    steps = -(-steps // k) * k  # whole dispatches only, so no second shape is ever compiled
    print(f"\n== {name}: {DESCRIPTIONS[name]}; batch {cfg.training.batch_size}, Adam lr {cfg.optimizer.learning_rate}")
    print(f"   dlcli model section: {json.dumps(cfg.to_dict()['model'])}")
    print(f"   parameters: dlcli {dlcli.params:,}, torch {twin.params:,}; "
          f"{steps} timed steps per round ({steps // k} dispatches of {k})")

    start = time.perf_counter()
    dlcli.run(k)
    print(f"   warm-up: dlcli first chunk {time.perf_counter() - start:.2f} s "
          f"(compile {dlcli.exp.steps.compile_s:.2f} s)", end="")
    start = time.perf_counter()
    twin.run(k)
    print(f", torch {k} steps {time.perf_counter() - start:.2f} s")

    rates: dict[str, list[float]] = {"dlcli": [], "torch": []}
    for r in range(rounds):
        busy_before, own_before = cpu_seconds()
        round_start = time.perf_counter()
        for side in (dlcli, twin) if r % 2 == 0 else (twin, dlcli):
            start = time.perf_counter()
            side.run(steps)
            rates[side.label].append(steps / (time.perf_counter() - start))
        busy, own = cpu_seconds()
        others = (busy - busy_before - (own - own_before)) / ((time.perf_counter() - round_start) * os.cpu_count())
        print(f"   round {r + 1}/{rounds}: dlcli {rates['dlcli'][-1]:8.1f}  torch {rates['torch'][-1]:8.1f} steps/s"
              f"   (other processes {max(others, 0):.0%} of the CPUs; load {load()})")
    compiled = dlcli.exp.steps.compiled_shapes
    if len(compiled) != 1:
        print(f"   WARNING: dlcli compiled {len(compiled)} executables: {compiled}")
    return rates


def print_table(results: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n{'model':<6} {'dlcli steps/s':>22} {'torch steps/s':>22} {'dlcli/torch':>12}")
    print(f"{'':<6} {'median (min-max)':>22} {'median (min-max)':>22} {'(medians)':>12}")
    for name, rates in results.items():
        cells = [f"{statistics.median(r):.1f} ({min(r):.1f}-{max(r):.1f})" for r in (rates["dlcli"], rates["torch"])]
        ratio = statistics.median(rates["dlcli"]) / statistics.median(rates["torch"])
        print(f"{name:<6} {cells[0]:>22} {cells[1]:>22} {ratio:>11.2f}x")
    print(f"allocator: {allocator()}; load avg at end {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn,lstm,gru", help="comma-separated, from: " + ", ".join(OVERRIDES))
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per model")
    parser.add_argument("--steps", type=int, default=128,
                        help="timed steps per round and side (rounded up to whole dispatches)")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("DLCLI_DATA_DIR") or None,
                        help="folder holding mnist/ (default: $DLCLI_DATA_DIR; none: random MNIST-shaped data)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in OVERRIDES]
    if unknown or not models:
        parser.error(f"--models takes a comma-separated list from {', '.join(OVERRIDES)}, got {args.models!r}")
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")

    with tempfile.TemporaryDirectory(prefix="dlcli-bench-") as scratch:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = Path(scratch)
            write_random_mnist(data_dir / "mnist")
            print_header("random MNIST-shaped data (60,000 + 10,000 images, 28x28x1), standardized by dlcli")
        else:
            print_header(f"MNIST from {data_dir / 'mnist'}")
        results = {name: bench_model(name, data_dir, args.rounds, args.steps) for name in models}
    print_table(results)


if __name__ == "__main__":
    main()
