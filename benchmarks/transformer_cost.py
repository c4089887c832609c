"""Train step time and memory against sequence length: dlcli's Transformer and an LSTM.

Both train as `dlcli train` runs them (`build_experiment`, `EpochSampler`,
`CompiledSteps.train_chunk`) as character language models on windows of T characters
of random text over 65 characters: `transformer_decoder` (learned positions, context T,
dropout 0) and `lstm` with hidden = width, both with Adam. Every (model, T) runs in a
fresh subprocess, which reports

  ms/step  the median over --repeats timings of --steps train steps, after a warm-up
           chunk that holds the compilation;
  XLA MiB  the compiled train executable's memory analysis: temp + arguments + outputs
           - aliased (the donated state counted once): parameters, Adam state,
           activations kept for the backward pass and workspace (the training text
           is kept small, 4 batches of windows, so it hardly counts);
  RSS MiB  the subprocess's peak resident set size (getrusage), which also holds the
           Python and JAX runtime and the compiler; the baseline after imports is shown.

The table gives each figure's ratio to the previous length (x2 per doubling is linear
growth, x4 quadratic); the fitted exponent is the slope of log time (and log XLA
memory) against log T over the largest --fit-points lengths. A log-log PNG goes to --out.

    .venv/bin/python benchmarks/transformer_cost.py --lengths 64,128,256,512,1024
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import DlcliSide, cpu_model, cpu_seconds, load, print_header, write_random_text

MODELS = ("transformer", "lstm")
MiB = 2**20
TRAIN_BATCHES = 4  # batches of windows in the training text


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def overrides(model: str, length: int, path: Path, args) -> list[str]:
    """The dlcli config of `model` on windows of `length` characters of the text at `path`."""
    common = ["data.name=text", f"data.path={path}", f"data.seq_length={length}", f"training.batch_size={args.batch}",
              f"training.steps_per_dispatch={args.per_dispatch}", "optimizer.name=adam", "optimizer.learning_rate=0.001"]
    if model == "lstm":
        return common + ["model.name=lstm", f"model.hidden={args.width}", f"model.layers={args.lstm_layers}"]
    return common + ["model.name=transformer_decoder", f"model.width={args.width}", f"model.layers={args.layers}",
                     f"model.heads={args.heads}", "model.mlp_ratio=4", "model.positions=learned",
                     f"model.context={length}", "model.dropout=0.0"]


def measure(model: str, length: int, args) -> dict:
    """Train `model` on windows of `length` characters in this process: time and memory."""
    base_rss = peak_rss_mib()
    with tempfile.TemporaryDirectory(prefix="dlcli-cost-") as scratch:
        path = Path(scratch) / "text.txt"
        # first 90% trains: TRAIN_BATCHES x batch windows, and the rest validates
        write_random_text(path, int((TRAIN_BATCHES * args.batch * length + 1) / 0.9) + 2)
        side = DlcliSide(overrides(model, length, path, args), Path(scratch))
    k = side.per_dispatch
    steps = -(-args.steps // k) * k  # whole dispatches only, so no second shape is ever compiled
    start = time.perf_counter()
    side.run(k)
    warm_up = time.perf_counter() - start
    times = []
    busy_before, own_before = cpu_seconds()
    timed_start = time.perf_counter()
    for _ in range(args.repeats):
        start = time.perf_counter()
        side.run(steps)
        times.append((time.perf_counter() - start) / steps * 1000)
    busy, own = cpu_seconds()
    others = (busy - busy_before - (own - own_before)) / ((time.perf_counter() - timed_start) * os.cpu_count())
    executables = side.exp.steps._executables
    if len(executables) != 1:
        raise RuntimeError(f"expected one compiled train executable, got {list(executables)}")
    stats = next(iter(executables.values())).memory_analysis()
    return {
        "params": side.params, "ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times),
        "warm_up_s": warm_up, "compile_s": side.exp.steps.compile_s, "others": others,
        "xla_mib": (stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
                    - stats.alias_size_in_bytes) / MiB,
        "temp_mib": stats.temp_size_in_bytes / MiB,
        "rss_mib": peak_rss_mib(), "base_rss_mib": base_rss,
    }


def run_worker(model: str, length: int) -> dict:
    """`measure` in a fresh Python process (this script with --worker), so its peak RSS is its own."""
    command = [sys.executable, __file__, *sys.argv[1:], "--worker", f"{model}:{length}"]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def growth(values: list[float]) -> list[str]:
    """Each value's ratio to the previous one ('' for the first)."""
    return [""] + [f"x{b / a:.2f}" for a, b in zip(values, values[1:])]


def exponent(lengths: list[int], values: list[float], points: int) -> float:
    """Slope of log value against log T over the last `points` lengths."""
    return float(np.polyfit(np.log(lengths[-points:]), np.log(values[-points:]), 1)[0])


def print_table(lengths: list[int], results: dict[str, list[dict]], fit_points: int) -> None:
    columns = [(f"{model} {label}", [r[key] for r in results[model]])
               for label, key in (("ms/step", "ms"), ("XLA MiB", "xla_mib"), ("RSS MiB", "rss_mib")) for model in MODELS]
    print(f"\n{'T':>6} " + " ".join(f"{head:>22}" for head, _ in columns))
    for i, length in enumerate(lengths):
        print(f"{length:>6} " + " ".join(f"{values[i]:>12.1f} {growth(values)[i]:>9}" for _, values in columns))
    print("ratios: each figure against the previous length's (x2 per doubling = linear in T, x4 = quadratic)")
    print("XLA MiB: the train executable's temp + arguments + outputs - aliased (compiled memory analysis); "
          "RSS MiB: peak resident set of the process that ran it, runtime and compiler included "
          f"(after imports: {min(r['base_rss_mib'] for rs in results.values() for r in rs):.0f} MiB)")
    if len(lengths) >= 2:
        points = max(2, min(fit_points, len(lengths)))
        fitted = lengths[-points:]
        for model in MODELS:
            time_k = exponent(lengths, [r["ms"] for r in results[model]], points)
            memory_k = exponent(lengths, [r["xla_mib"] for r in results[model]], points)
            print(f"fitted exponent, {model}: time ~ T^{time_k:.2f}, XLA memory ~ T^{memory_k:.2f} "
                  f"(T = {', '.join(map(str, fitted))})")


def plot(lengths: list[int], results: dict[str, list[dict]], out: Path, title: str) -> None:
    """Two log-log panels: ms per step, and memory (XLA solid, process RSS dashed), against T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for model, color in zip(MODELS, ("C0", "C1")):
        rows = results[model]
        time_ax.plot(lengths, [r["ms"] for r in rows], "o-", color=color, label=model)
        memory_ax.plot(lengths, [r["xla_mib"] for r in rows], "o-", color=color, label=f"{model}: XLA train step")
        memory_ax.plot(lengths, [r["rss_mib"] for r in rows], "s--", color=color, alpha=0.6,
                       label=f"{model}: process peak RSS")
    for ax, label in ((time_ax, "ms per train step"), (memory_ax, "MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())  # plain numbers, not 4x10^1
        ax.yaxis.set_minor_formatter(LogFormatter())
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    time_ax.set_title("train step time")
    memory_ax.set_title("memory")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="64,128,256,512,1024", help="comma-separated sequence lengths T")
    parser.add_argument("--batch", type=int, default=8, help="sequences per batch")
    parser.add_argument("--width", type=int, default=128, help="Transformer width and LSTM hidden units")
    parser.add_argument("--layers", type=int, default=4, help="Transformer blocks")
    parser.add_argument("--heads", type=int, default=4, help="Transformer attention heads")
    parser.add_argument("--lstm-layers", type=int, default=4, help="stacked LSTM layers")
    parser.add_argument("--steps", type=int, default=32, help="timed steps per repeat (rounded up to whole dispatches)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per (model, T); the median is reported")
    parser.add_argument("--per-dispatch", type=int, default=16, help="training.steps_per_dispatch")
    parser.add_argument("--fit-points", type=int, default=3, help="largest lengths the exponent is fitted over")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "transformer_cost.png", help="PNG path")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # MODEL:T, run by this script in a subprocess
    args = parser.parse_args()
    try:
        lengths = [int(t) for t in args.lengths.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--lengths takes comma-separated integers, got {args.lengths!r}")
    if not lengths or min(lengths) < 1 or lengths != sorted(set(lengths)):
        parser.error(f"--lengths must be increasing positive integers, got {args.lengths!r}")
    if min(args.batch, args.width, args.layers, args.heads, args.lstm_layers, args.steps, args.repeats,
           args.per_dispatch) < 1:
        parser.error("--batch, --width, --layers, --heads, --lstm-layers, --steps, --repeats and --per-dispatch "
                     "must be at least 1")
    if args.width % args.heads:
        parser.error(f"--width {args.width} must be a multiple of --heads {args.heads}")
    if args.worker:
        model, length = args.worker.split(":")
        print(json.dumps(measure(model, int(length), args)))
        return

    print_header(f"random text over tiny shakespeare's 65 characters, {TRAIN_BATCHES} batches of {args.batch} "
                 f"windows of T characters")
    print(f"models    : transformer_decoder width {args.width}, {args.layers} layers, {args.heads} heads, MLP "
          f"{4 * args.width}, context T; lstm hidden {args.width}, {args.lstm_layers} layers; Adam, batch "
          f"{args.batch}, {args.per_dispatch} steps per dispatch")
    print(f"timing    : median of {args.repeats} x {args.steps} steps after a warm-up dispatch; "
          "each (model, T) in a fresh subprocess\n")
    results: dict[str, list[dict]] = {model: [] for model in MODELS}
    for length in lengths:
        for model in MODELS:
            r = run_worker(model, length)
            results[model].append(r)
            print(f"{model:<11} T={length:<5} {r['ms']:9.1f} ms/step ({r['ms_min']:.1f}-{r['ms_max']:.1f}), "
                  f"XLA {r['xla_mib']:7.1f} MiB (temp {r['temp_mib']:.1f}), RSS {r['rss_mib']:6.0f} MiB, "
                  f"{r['params']:,} params, warm-up {r['warm_up_s']:.1f} s (compile {r['compile_s']:.1f} s), "
                  f"other processes {max(r['others'], 0):.0%}; "
                  f"load {load()}", flush=True)
    print_table(lengths, results, args.fit_points)
    plot(lengths, results, args.out, f"dlcli train step on {cpu_model()}, {os.cpu_count()} cores: batch {args.batch}, width {args.width}, "
         f"transformer {args.layers} layers / {args.heads} heads, LSTM {args.lstm_layers} layers")
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
