"""Generation speed of dlcli's decoder-only Transformer, with and without the key/value cache.

The model is `transformer_decoder` of the shape train_steps.py trains (65 characters,
width 128, 4 layers, 4 heads, MLP 512, learned positions) with a --context of 512,
randomly initialised: the speed does not depend on the weights. After a prompt of
--prompt random tokens it generates N tokens, for each N of --lengths, two ways:

  cached    dlcli.generate.generate: the prompt, then one position per new token through
            the model's key/value cache (`initial_carry`, `step`), each a `lax.scan`.
            generate builds a fresh `jax.jit` on every call, so every direct call traces
            and compiles again; here it is traced inside one outer `jax.jit`, compiled
            once by the warm-up call. The time of one direct call (what `dlcli sample`
            pays, compilation included) is shown apart.
  uncached  every new token reruns the full forward pass, `model({"inputs", "lengths"})`,
            over a fixed buffer of prompt + N positions masked to the current length, and
            takes the logits at the last valid position: one jitted `lax.scan` over N.

Each is compiled by a warm-up call; the report gives tokens/s from the median of
--repeats calls (the two alternate), and checks that both (and a direct generate call)
give identical tokens at temperature 0, and with the same random keys at temperature 1.

    .venv/bin/python benchmarks/generation_speed.py --context 512 --prompt 16 --lengths 128,256,496 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from _machine import SHAKESPEARE_CHARS, load, print_header
from dlcli.config import load_config
from dlcli.generate import generate, pick_token

MODEL = ["model.name=transformer_decoder", "model.width=128", "model.layers=4", "model.heads=4", "model.mlp_ratio=4",
         "model.positions=learned", "model.dropout=0.0"]


def build_decoder(context: int, seed: int) -> nnx.Module:
    """A randomly initialised transformer_decoder over 65 characters, in evaluation mode."""
    # a text dataset fixes the model's input shapes; its file is never read
    cfg = load_config(None, MODEL + [f"model.context={context}", "data.name=text", "data.path=unused.txt",
                                     f"data.seq_length={context}"])
    model = cfg.model.build(cfg.data.info(SHAKESPEARE_CHARS), nnx.Rngs(params=seed))
    model.eval()
    return model


def cached(model: nnx.Module, length: int, temperature: float):
    """dlcli.generate.generate in one jitted function: (prompt (P,), key) -> (length,) tokens."""
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda state, prompt, key: generate(nnx.merge(graphdef, state), prompt, length, key, temperature, None))
    return lambda prompt, key: run(state, prompt, key)


def uncached(model: nnx.Module, prompt_length: int, length: int, temperature: float):
    """The same generation, recomputing the whole forward pass for every new token:
    (prompt (P,), key) -> (length,) tokens, drawn with generate's keys and pick_token."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, prompt, key):
        model = nnx.merge(graphdef, state)
        buffer = jnp.zeros((1, prompt_length + length), jnp.int32).at[0, :prompt_length].set(prompt)

        def draw(buffer, step_and_key):
            step, key = step_and_key
            valid = prompt_length + step  # positions written so far
            logits = model({"inputs": buffer, "lengths": valid[None]})[0, valid - 1]
            token = pick_token(logits, key, temperature, None)
            return buffer.at[0, valid].set(token), token

        return jax.lax.scan(draw, buffer, (jnp.arange(length), jax.random.split(key, length)))[1]

    return lambda prompt, key: run(state, prompt, key)


def timed(fn, prompt, key) -> tuple[float, np.ndarray]:
    """Seconds for one call of fn(prompt, key), and its tokens."""
    start = time.perf_counter()
    tokens = jax.block_until_ready(fn(prompt, key))
    return time.perf_counter() - start, np.asarray(tokens)


def compare(a: np.ndarray, b: np.ndarray) -> str:
    """'identical' or where and how often two token sequences differ."""
    differ = np.flatnonzero(a != b)
    return "identical" if differ.size == 0 else f"DIFFERENT at {differ.size} positions, first {differ[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=int, default=512, help="model.context: positions table and cache size")
    parser.add_argument("--prompt", type=int, default=16, help="prompt length in tokens (random tokens)")
    parser.add_argument("--lengths", default="128,256,496", help="comma-separated numbers of tokens to generate")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per way and length; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="weights, prompt and sampling keys")
    args = parser.parse_args()
    try:
        lengths = [int(n) for n in args.lengths.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--lengths takes comma-separated integers, got {args.lengths!r}")
    if not lengths or min(lengths) < 1 or min(args.prompt, args.repeats, args.context) < 1:
        parser.error("--lengths, --prompt, --repeats and --context must be at least 1")
    if args.prompt + max(lengths) > args.context:
        parser.error(f"--prompt {args.prompt} + the longest of --lengths {max(lengths)} exceed --context "
                     f"{args.context}; generation fills at most the model's context")

    model = build_decoder(args.context, args.seed)
    rng = np.random.default_rng(args.seed)
    prompt = jnp.asarray(rng.integers(0, len(SHAKESPEARE_CHARS), args.prompt), jnp.int32)
    key = jax.random.key(args.seed)
    print_header(f"a prompt of {args.prompt} random tokens; randomly initialised weights (seed {args.seed})")
    params = sum(a.size for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(f"model     : transformer_decoder, 65 characters, width 128, 4 layers, 4 heads, MLP 512, learned positions, "
          f"context {args.context}; {params:,} parameters")
    print(f"timing    : median of {args.repeats} calls per way after a warm-up call; temperature 0\n")

    print(f"{'tokens':>6} {'cached tok/s':>13} {'uncached tok/s':>15} {'cached/uncached':>16} "
          f"{'warm-up s (cached, uncached)':>29} {'direct generate() s':>20}")
    mismatches = []
    for length in lengths:
        ways = {"cached": cached(model, length, 0.0), "uncached": uncached(model, args.prompt, length, 0.0)}
        warm_up, tokens = {}, {}
        for name, fn in ways.items():
            warm_up[name], tokens[name] = timed(fn, prompt, key)
        times: dict[str, list[float]] = {name: [] for name in ways}
        for r in range(args.repeats):
            for name in (ways if r % 2 == 0 else reversed(ways)):
                times[name].append(timed(ways[name], prompt, key)[0])
        direct_s, tokens["direct generate()"] = timed(lambda p, k: generate(model, p, length, k, 0.0, None), prompt, key)
        rate = {name: length / statistics.median(t) for name, t in times.items()}
        print(f"{length:>6} {rate['cached']:>13.1f} {rate['uncached']:>15.1f} {rate['cached'] / rate['uncached']:>15.1f}x "
              f"{warm_up['cached']:>14.2f} {warm_up['uncached']:>14.2f} {direct_s:>20.2f}   (load {load()})", flush=True)
        for name in ("uncached", "direct generate()"):
            outcome = compare(tokens["cached"], tokens[name])
            print(f"{'':>6} check, temperature 0: cached vs {name}: {outcome} "
                  f"({length} tokens, {len(np.unique(tokens['cached']))} distinct)")
            if outcome != "identical":
                mismatches.append((length, name))

    length = lengths[-1]  # greedy text from random weights repeats itself; sampled text does not
    sampled = [timed(fn, prompt, key)[1] for fn in (cached(model, length, 1.0), uncached(model, args.prompt, length, 1.0))]
    outcome = compare(*sampled)
    print(f"\ncheck, temperature 1 with the same keys, {length} tokens: cached vs uncached: {outcome} "
          f"({len(np.unique(sampled[0]))} distinct)")
    if outcome != "identical":
        mismatches.append((length, "temperature 1"))
    print(f"load avg at end {load()}")
    if mismatches:
        sys.exit(f"error: the cached and uncached generations differ: {mismatches}")


if __name__ == "__main__":
    main()
