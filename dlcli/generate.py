"""What a trained run produces, behind `dlcli sample` and `dlcli embed`: text from a
character language model's checkpoint, or a sequence-to-sequence model's greedy answer
to one source string (`sample_run`); images or points from a generative run
(`sample_image_grid`); an autoencoder's codes of a split (`embed_run`).

The model is rebuilt from the run folder alone (config.yaml, vocab.json for a text
corpus, a checkpoint; the training text is not needed). The prompt is fed one step at a
time through the model's `step` (for a recurrent model, its carried state), then each
next character is drawn from softmax(logits / temperature), optionally among the
`top_k` most likely; temperature 0 always takes the most likely one. Prompt and
generation are one compiled `lax.scan` each.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlcli.data.text import decode, encode
from dlcli.errors import BadInput
from dlcli.runs import RunDir
from dlcli.tasks.analysis import draw_samples, reconstruction_errors, scatter_codes
from dlcli.tasks.analysis import encode as encode_codes


def sample_run(run_dir: Path, *, prompt: str, length: int | None = None, temperature: float | None = None,
               top_k: int | None = None, seed: int = 0, checkpoint: str = "best") -> dict:
    """Generate `length` characters (200 unless given) after `prompt` from the run's
    `checkpoint`; for a sequence-to-sequence run, greedily decode the target of `prompt`."""
    run = RunDir(run_dir)
    cfg = run.trained_config()
    if not prompt:
        raise BadInput("--prompt is empty; give at least one character to start from")
    if cfg.info.kind == "sequence_to_sequence":
        return _translate(cfg, run, prompt, checkpoint, length=length, temperature=temperature, top_k=top_k)
    if not cfg.info.autoregressive:
        raise BadInput(f"{run_dir} trained {cfg.model.name} on {cfg.data.name!r}, neither a language model nor a "
                       "sequence-to-sequence model; dlcli sample needs a run on data.name: text, reverse, sort or addition")
    vocab = run.vocab()
    length = 200 if length is None else length
    temperature = 1.0 if temperature is None else temperature
    if length < 1:
        raise BadInput(f"--length must be at least 1, got {length}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise BadInput(f"--temperature must be 0 (greedy) or a finite number above it, got {temperature}")
    if top_k is not None and not 1 <= top_k <= len(vocab):
        raise BadInput(f"--top-k must be between 1 and the vocabulary size {len(vocab)}, got {top_k}")
    prompt_ids = encode(prompt, vocab)
    context = getattr(cfg.model, "context", None)
    if context is not None and len(prompt_ids) + length > context:
        raise BadInput(f"the prompt ({len(prompt_ids)} characters) and --length {length} exceed the model's context of "
                       f"{context} positions; ask for at most {context - len(prompt_ids)} characters or a shorter prompt")

    model, step = run.restore_model(checkpoint, cfg)
    tokens = generate(model, prompt_ids, length, jax.random.key(seed), temperature, top_k)
    text = decode(tokens, vocab)
    return {"run_dir": str(run), "checkpoint": step, "prompt": prompt, "text": text,
            "temperature": temperature, "top_k": top_k, "seed": seed}


def _translate(cfg, run: RunDir, prompt: str, checkpoint: str, **sampling) -> dict:
    """The greedy decoding of one source string by a sequence-to-sequence run."""
    given = [f"--{name.replace('_', '-')}" for name, value in sampling.items() if value is not None]
    if given:
        raise BadInput(f"{' and '.join(given)} do not apply to {cfg.model.name}: it decodes greedily until its end "
                       "token; leave them out")
    source = cfg.data.encode(prompt)
    info = cfg.info
    if len(source) > info.input_shape[0]:
        raise BadInput(f"the prompt has {len(source)} characters but {cfg.data.name!r} sources have at most "
                       f"{info.input_shape[0]}; shorten it")
    model, step = run.restore_model(checkpoint, cfg)
    x, _ = cfg.data.arrays([prompt], [""])  # the source as the dataset encodes it; no target
    tokens = jax.device_get(nnx.jit(lambda m, x: m.greedy_decode(x))(model, x))[0]
    return {"run_dir": str(run), "checkpoint": step, "prompt": prompt, "text": cfg.data.decode(tokens.tolist()),
            "decoding": "greedy"}


def pick_token(logits: jax.Array, key: jax.Array, temperature: float, top_k: int | None) -> jax.Array:
    """logits (K,) -> one token id: argmax when temperature is 0, else a draw from the
    tempered softmax restricted to the top_k largest logits."""
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][-1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if temperature == 0:
        return jnp.argmax(logits)
    return jax.random.categorical(key, logits / temperature)


def _feeder(model: nnx.Module):
    """One step of a language model as a scan body: (carry, token ()) -> (carry, logits (K,));
    `model` offers initial_carry(batch) and step(carry, tokens (1,)) -> (carry, logits (1, K))."""

    def feed(carry, token):
        carry, logits = model.step(carry, token[None])
        return carry, logits[0]

    return feed


def next_token_logits(model: nnx.Module, prompt_ids) -> np.ndarray:
    """prompt_ids (P,) -> (K,) the logits of the token after the prompt, which is fed one
    step at a time as `generate` feeds it."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, prompt):
        model = nnx.merge(graphdef, state)
        _, logits = jax.lax.scan(_feeder(model), model.initial_carry(1), prompt)
        return logits[-1]

    return np.asarray(jax.device_get(run(state, jnp.asarray(prompt_ids))))


def generate(model: nnx.Module, prompt_ids, length: int, key: jax.Array, temperature: float,
             top_k: int | None) -> jax.Array:
    """prompt_ids (P,) -> (length,) generated ids (see `_feeder` for what `model` offers)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, prompt, key):
        model = nnx.merge(graphdef, state)
        feed = _feeder(model)
        carry, logits = jax.lax.scan(feed, model.initial_carry(1), prompt)

        def draw(carry_and_logits, key):
            carry, logits = carry_and_logits
            token = pick_token(logits, key, temperature, top_k)
            return feed(carry, token), token

        _, tokens = jax.lax.scan(draw, (carry, logits[-1]), jax.random.split(key, length))
        return tokens

    return jax.device_get(run(state, jnp.asarray(prompt_ids), key))


def embed_run(run_dir: Path, *, split: str, out: Path, data_dir: Path, checkpoint: str = "best",
              overwrite: bool = False) -> dict:
    """Write the codes of every image of `split` with their labels and reconstruction
    errors to the .npz `out`, and their scatter plot beside it (same name, .png)."""
    run, out = RunDir(run_dir), Path(out)
    cfg = run.trained_config()
    if cfg.task_kind != "reconstruction":
        raise BadInput(f"{run.path} trained {cfg.model.name!r}, which has no code to export; dlcli embed needs an "
                       "autoencoder run (autoencoder, denoising_autoencoder, sparse_autoencoder, vae)")
    plot = out.with_suffix(".png")
    check_output(out, ".npz", overwrite)
    check_output(plot, ".png", overwrite)
    model, step = run.restore_model(checkpoint, cfg)
    x, y = cfg.data.load(data_dir).split(split)
    codes = encode_codes(model, x)
    errors = reconstruction_errors(model, x)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, codes=codes, labels=y, reconstruction_errors=errors)
    scatter_codes(codes, y, plot, f"{run.path.name}: {split} codes")
    return {"run_dir": str(run.path), "checkpoint": step, "split": split, "examples": len(codes),
            "code_dims": int(codes.shape[1]), "mean_reconstruction_mse": float(errors.mean()), "out": str(out),
            "plot": str(plot)}


def sample_image_grid(run_dir: Path, *, n: int, out: Path, seed: int = 0, checkpoint: str = "best",
                      overwrite: bool = False, label: int | None = None) -> dict:
    """Draw `n` samples (images, or points over a 2-D mixture's modes) from a generative
    run's model at `checkpoint` into the PNG `out`; from a conditional GAN, all of class
    `label`, or without one a row per class."""
    run, out = RunDir(run_dir), Path(out)
    cfg = run.trained_config()
    if not getattr(cfg.model, "generative", False):
        raise BadInput(f"{run.path} trained {cfg.model.name!r}, which does not draw samples; --n/--out need a vae or gan run "
                       "(--prompt samples a language model)")
    if not 1 <= n <= 10_000:
        raise BadInput(f"--n must be between 1 and 10000 samples, got {n}")
    classes = cfg.model.label_classes(cfg.info)
    if label is not None and not classes:
        raise BadInput(f"--label asks a conditional GAN for one class, but {run.path} trained an unconditional "
                       f"{cfg.model.name}; drop --label")
    if label is not None and not 0 <= label < classes:
        raise BadInput(f"--label must be a class of {cfg.data.name}, 0 to {classes - 1}; got {label}")
    check_output(out, ".png", overwrite)
    model, step = run.restore_model(checkpoint, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    which = f" of class {label}" if label is not None else ", a row per class" if classes else ""
    draw_samples(model, cfg, out, f"{cfg.name} ({run.path.name}): {n} samples{which}, step {step}, seed {seed}", n, seed,
                 label)
    return {"run_dir": str(run.path), "checkpoint": step, "n": n, "seed": seed, "out": str(out),
            **({"label": label} if label is not None else {})}


def check_output(out: Path, suffix: str, overwrite: bool) -> None:
    """`BadInput` for an output path of the wrong kind, or one that would replace a file without --overwrite."""
    if out.suffix.lower() != suffix:
        raise BadInput(f"--out {out} must end in {suffix}")
    if out.is_dir():
        raise BadInput(f"--out {out} is a folder; give a file name ending in {suffix}")
    if out.exists() and not overwrite:
        raise BadInput(f"--out {out} already exists; pass --overwrite to replace it, or choose another name")
