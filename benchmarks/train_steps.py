"""Train steps per second: dlcli against the same models in PyTorch eager and torch.compile, on CPU.

The dlcli side trains each model exactly as `dlcli train` does: `build_experiment`,
`EpochSampler`, and `CompiledSteps.train_chunk`, which runs `training.steps_per_dispatch`
steps per dispatch in a `lax.scan` with donated state. The PyTorch side trains the same
architecture with plain eager steps (forward, backward, Adam step), gathering each batch
from the same training tensor through a per-epoch permutation. The torch.compile side
(left out with --no-torch-compile) is the PyTorch side with the forward and the loss
compiled by inductor (mode "default"; the backward is compiled with them, Adam stays
eager); its first steps, which compile, are timed and reported on their own. Dynamo does
not trace torch.nn.LSTM or GRU (`torch._dynamo.config.allow_rnn` is off by default), so
for those two it compiles the head and the loss around the eager recurrent layer. The
sides take turns over several rounds (the order rotating each round), each timing the
same number of steps after a warm-up chunk (which holds dlcli's compilation); the report
gives the median steps/s per side, dlcli's ratio to PyTorch eager and to the faster of
eager and torch.compile.

    .venv-bench/bin/python benchmarks/train_steps.py --models mlp,cnn,lstm,gru,transformer --rounds 5 --steps 128

The MLP and CNN train on MNIST. Without --data-dir (or DLCLI_DATA_DIR) that is random
MNIST-shaped IDX files written to a temporary folder, so dlcli loads them through its
own MNIST reader. The LSTM and GRU train on the adding problem (T = 100, 2 inputs),
which dlcli generates, with a regression head on the last step and a mean squared error.
The Transformer (dlcli's `transformer_decoder`, learned positions, dropout 0) trains as a
character language model on 128-character windows of tiny shakespeare
(<data-dir>/tinyshakespeare/input.txt), or without a data folder on random text over the
same 65 characters, with the mean cross-entropy of the next character; its PyTorch twin
uses `scaled_dot_product_attention(is_causal=True)`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _machine import DlcliSide, allocator, alternate, load, print_header, write_random_mnist, write_random_text
from dlcli.data import Splits, num_examples

COMMON = ["optimizer.name=adam", "optimizer.learning_rate=0.001"]
MNIST = ["data.name=mnist", "training.batch_size=128"]
ADDING = ["data.name=adding", "data.length=100", "data.n_train=6400", "training.batch_size=64", "model.hidden=128"]
TEXT_FILE = "tinyshakespeare/input.txt"  # under the data folder
TEXT_CHARS = 1_115_394  # the random stand-in is as long as tiny shakespeare
OVERRIDES = {
    "mlp": MNIST + ["model.name=mlp", "model.widths=[512,512]", "model.activation=relu"],
    "cnn": MNIST + ["model.name=cnn",
                    "model.blocks=[{channels: 32, kernel: 3, pool: max}, {channels: 64, kernel: 3, pool: max}]",
                    "model.padding=same", "model.dense=[128]", "model.activation=relu"],
    "lstm": ADDING + ["model.name=lstm"],
    "gru": ADDING + ["model.name=gru"],
    "transformer": ["data.name=text", f"data.path={TEXT_FILE}", "data.seq_length=128", "training.batch_size=32",
                    "model.name=transformer_decoder", "model.width=128", "model.layers=4", "model.heads=4",
                    "model.mlp_ratio=4", "model.positions=learned", "model.context=128", "model.dropout=0.0"],
}
DESCRIPTIONS = {
    "mlp": "MLP 784-512-512-10, relu",
    "cnn": "CNN conv32-pool-conv64-pool-128-10, 3x3 SAME, relu",
    "lstm": "LSTM 2-128, one layer, T=100, last-step regression head",
    "gru": "GRU 2-128, one layer, T=100, last-step regression head",
    "transformer": "decoder-only Transformer, 65 characters, T=128, width 128, 4 layers, 4 heads, MLP 512",
}


def torch_model(name: str, model_cfg, n_outputs: int) -> nn.Module:
    """The PyTorch twin of the dlcli model `name` (NCHW for the CNN; same parameter count);
    the Transformer's shape comes from dlcli's model section and its number of outputs."""
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))
    if name in ("lstm", "gru"):
        return LastStepRegressor(name)
    if name == "transformer":
        return Decoder(model_cfg, n_outputs)
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


class Decoder(nn.Module):
    """dlcli's transformer_decoder with learned positions: token plus position embeddings,
    pre-LayerNorm blocks, a final LayerNorm and a linear head on every position."""

    def __init__(self, cfg, vocab: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, cfg.width)
        self.positions = nn.Embedding(cfg.context, cfg.width)
        self.blocks = nn.ModuleList(DecoderBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.final_norm = nn.LayerNorm(cfg.width, eps=1e-6)  # Flax's LayerNorm epsilon
        self.head = nn.Linear(cfg.width, vocab)

    def forward(self, tokens):
        h = self.embedding(tokens) + self.positions.weight[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.final_norm(h))


class DecoderBlock(nn.Module):
    """h + out(causal attention(qkv(LN(h)))), then h + MLP(LN(h)); the MLP's GELU is the
    tanh approximation, as jax.nn.gelu (dlcli's) is by default."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(width, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.LayerNorm(width, eps=1e-6), nn.Linear(width, mlp_ratio * width),
                                 nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * width, width))

    def forward(self, h):
        batch, length, width = h.shape
        q, k, v = (a.view(batch, length, self.heads, -1).transpose(1, 2)
                   for a in self.qkv(self.attention_norm(h)).chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, T, W / heads)
        h = h + self.out(y.transpose(1, 2).reshape(batch, length, width))
        return h + self.mlp(h)


def token_cross_entropy(logits, targets):
    """Mean cross-entropy over the labelled steps (label -1 ignored), as dlcli's token_classification."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)


class TorchSide:
    """The same model in PyTorch eager, trained on the same arrays with Adam."""

    label = "torch"

    def __init__(self, name: str, cfg, splits: Splits):
        x, y = splits.train
        torch.manual_seed(cfg.seed)
        self.model = torch_model(name, cfg.model, splits.info.n_outputs)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optimizer.learning_rate)
        if name == "transformer":  # token ids (N, T) and the next tokens' ids (N, T)
            self.x, self.y, self.loss = (torch.from_numpy(x["inputs"]).long(), torch.from_numpy(y).long(),
                                         token_cross_entropy)
        elif isinstance(x, dict):  # a sequence task: (N, T, F) inputs, float targets
            self.x, self.y, self.loss = torch.from_numpy(x["inputs"]), torch.from_numpy(y), F.mse_loss
        else:
            images = torch.from_numpy(x)  # (N, H, W, C)
            self.x = images.permute(0, 3, 1, 2).contiguous() if name == "cnn" else images
            self.y, self.loss = torch.from_numpy(y).long(), F.cross_entropy
        self.batch = cfg.training.batch_size
        self.per_epoch = num_examples(x) // self.batch
        self.step = 0
        self.order = torch.randperm(num_examples(x))

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def batch_loss(self, x, y):
        """The mean loss of one batch (x, y as gathered from self.x, self.y): forward and loss."""
        return self.loss(self.model(x), y)

    def run(self, n_steps: int) -> None:
        for _ in range(n_steps):
            position = self.step % self.per_epoch
            if position == 0:
                self.order = torch.randperm(len(self.x))
            indices = self.order[position * self.batch: (position + 1) * self.batch]
            loss = self.batch_loss(self.x[indices], self.y[indices])
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1


class CompiledTorchSide(TorchSide):
    """TorchSide with `batch_loss` (the forward and the loss) under torch.compile; AOTAutograd
    compiles its backward too. The model, not the whole step, is compiled: Dynamo breaks the
    graph at `loss.backward()` by default, and an eager Adam leaves the compiler as the only
    difference from TorchSide. mode="default": "reduce-overhead" adds CUDA graphs, of no use
    on CPU; "max-autotune" (autotuned matrix products, a longer compilation) is not tried."""

    label = "torch.compile"

    def __init__(self, name: str, cfg, splits: Splits):
        super().__init__(name, cfg, splits)
        self.batch_loss = torch.compile(self.batch_loss, mode="default")


def compiled_twin(name: str, cfg, splits: Splits, k: int) -> CompiledTorchSide | None:
    """The torch.compile side after its first `k` steps, which compile it (their time is
    printed); None, after one line saying why, if compiling fails on this machine."""
    try:
        side = CompiledTorchSide(name, cfg, splits)
        start = time.perf_counter()
        side.run(k)
    except Exception as error:  # inductor fails in many ways (no C++ compiler, unsupported operator)
        first_line = str(error).strip().split("\n", 1)[0]
        print(f"   torch.compile failed for {name}, left out: {type(error).__name__}: {first_line}")
        return None
    print(f"   torch.compile: first {k} steps {time.perf_counter() - start:.2f} s (compilation included)")
    return side


def bench_model(name: str, data_dir: Path, rounds: int, steps: int, compile_torch: bool) -> dict:
    """Rotate dlcli, PyTorch eager and (with `compile_torch`) torch.compile over `rounds`
    rounds of `steps` steps; return steps/s per side label."""
    dlcli = DlcliSide(COMMON + OVERRIDES[name], data_dir)
    cfg = dlcli.cfg
    twin = TorchSide(name, cfg, dlcli.exp.splits)
    k = dlcli.per_dispatch
    steps = -(-steps // k) * k  # whole dispatches only, so no second shape is ever compiled
    print(f"\n== {name}: {DESCRIPTIONS[name]}; batch {cfg.training.batch_size}, Adam lr {cfg.optimizer.learning_rate}")
    print(f"   dlcli model section: {json.dumps(cfg.to_dict()['model'])}")
    print(f"   parameters: dlcli {dlcli.params:,}, torch {twin.params:,}; "
          f"{steps} timed steps per round ({steps // k} dispatches of {k})")

    compiled = compiled_twin(name, cfg, dlcli.exp.splits, k) if compile_torch else None
    return alternate(dlcli, twin, rounds, steps, (compiled,) if compiled else ())


def print_table(results: dict[str, dict[str, list[float]]], compile_columns: bool = False) -> None:
    """Median (min-max) steps/s per side and dlcli's ratios; with `compile_columns`, also
    torch.compile's ("failed" where it did not compile) and dlcli against the faster torch."""
    w = max(6, *(len(name) for name in results))
    sides = ["dlcli", "torch", "torch.compile"] if compile_columns else ["dlcli", "torch"]
    ratios = ["dlcli/torch", "dlcli/faster"] if compile_columns else ["dlcli/torch"]
    print(f"\n{'model':<{w}} " + " ".join(f"{side + ' steps/s':>22}" for side in sides)
          + " " + " ".join(f"{ratio:>12}" for ratio in ratios))
    print(f"{'':<{w}} " + " ".join(f"{'median (min-max)':>22}" for _ in sides)
          + " " + " ".join(f"{'(medians)':>12}" for _ in ratios))
    for name, rates in results.items():
        cells = [f"{statistics.median(rates[side]):.1f} ({min(rates[side]):.1f}-{max(rates[side]):.1f})"
                 if side in rates else "failed" for side in sides]
        dlcli = statistics.median(rates["dlcli"])
        torch_rates = [statistics.median(rates[side]) for side in sides[1:] if side in rates]
        ratio_cells = [f"{dlcli / torch_rates[0]:.2f}x", f"{dlcli / max(torch_rates):.2f}x"][: len(ratios)]
        print(f"{name:<{w}} " + " ".join(f"{cell:>22}" for cell in cells)
              + " " + " ".join(f"{cell:>12}" for cell in ratio_cells))
    if compile_columns:
        print("dlcli/faster: against the faster (by median) of torch eager and torch.compile")
    print(f"allocator: {allocator()}; load avg at end {load()}")


def one_model_main(doc: str, name: str, scaling: str, bench) -> None:
    """The command line of a one-model MNIST benchmark (vae_steps.py, gan_steps.py):
    --rounds, --steps, --data-dir (none: random MNIST-shaped files in a scratch folder),
    --torch-threads; prints the header, runs `bench(data_dir, scratch, rounds, steps)`
    -> {"dlcli": [...], "torch": [...]} steps/s, and the table."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=256,
                        help="timed steps per round and side (rounded up to whole dispatches)")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("DLCLI_DATA_DIR") or None,
                        help="folder holding mnist/ (default: $DLCLI_DATA_DIR; none: random MNIST-shaped data)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="PyTorch intra-op threads (default: PyTorch's own, one per core)")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    if args.torch_threads is not None:
        if args.torch_threads < 1:
            parser.error("--torch-threads must be at least 1")
        torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory(prefix="dlcli-bench-") as scratch:
        if args.data_dir is None:
            data_dir = Path(scratch) / "data"
            write_random_mnist(data_dir / "mnist")
            data = f"random MNIST-shaped data (60,000 + 10,000 images, 28x28x1), {scaling} by dlcli"
        else:
            data_dir = args.data_dir
            data = f"MNIST from {data_dir / 'mnist'}, {scaling} by dlcli"
        print_header(data, {"torch": f"{torch.__version__}, {torch.get_num_threads()} intra-op threads, "
                                     f"{torch.get_num_interop_threads()} inter-op threads, "
                                     f"mkldnn {torch.backends.mkldnn.is_available()}"})
        results = {name: bench(data_dir, Path(scratch), args.rounds, args.steps)}
    print_table(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(OVERRIDES), help="comma-separated, from: " + ", ".join(OVERRIDES))
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per model")
    parser.add_argument("--steps", type=int, default=128,
                        help="timed steps per round and side (rounded up to whole dispatches)")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("DLCLI_DATA_DIR") or None,
                        help="folder holding mnist/ and tinyshakespeare/input.txt (default: $DLCLI_DATA_DIR; "
                             "none: random MNIST-shaped data and random text)")
    parser.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                        help="leave out the torch.compile side (no compilation wait; quick runs)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in OVERRIDES]
    if unknown or not models:
        parser.error(f"--models takes a comma-separated list from {', '.join(OVERRIDES)}, got {args.models!r}")
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")

    images, text = {"mlp", "cnn"} & set(models), "transformer" in models
    with tempfile.TemporaryDirectory(prefix="dlcli-bench-") as scratch:
        data_dir, data = args.data_dir, []
        if data_dir is None:
            data_dir = Path(scratch)
            if images:
                write_random_mnist(data_dir / "mnist")
                data.append("random MNIST-shaped data (60,000 + 10,000 images, 28x28x1), standardized by dlcli")
            if text:
                write_random_text(data_dir / TEXT_FILE, TEXT_CHARS)
                data.append(f"random text ({TEXT_CHARS:,} characters, uniform over tiny shakespeare's 65)")
        else:
            if images:
                data.append(f"MNIST from {data_dir / 'mnist'}")
            if text:
                data.append(f"text from {data_dir / TEXT_FILE}")
        if {"lstm", "gru"} & set(models):
            data.append("the adding problem, generated by dlcli")
        print_header("; ".join(data), {"torch": f"{torch.__version__}, {torch.get_num_threads()} intra-op threads, "
                                                f"{torch.get_num_interop_threads()} inter-op threads, "
                                                f"mkldnn {torch.backends.mkldnn.is_available()}"})
        results = {name: bench_model(name, data_dir, args.rounds, args.steps, args.torch_compile) for name in models}
    print_table(results, compile_columns=args.torch_compile)


if __name__ == "__main__":
    main()
