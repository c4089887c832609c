"""`sample_run`: text from a character language model's checkpoint, behind `dlcli sample`.

The model is rebuilt from the run folder alone (config.yaml, vocab.json, a checkpoint;
the training text is not needed). The prompt is fed one step at a time through the
model's `step` (for a recurrent model, its carried state), then each next character is
drawn from softmax(logits / temperature), optionally among the `top_k` most likely;
temperature 0 always takes the most likely one. Prompt and generation are one compiled
`lax.scan` each.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from dlcli.data.text import decode, encode
from dlcli.errors import BadInput
from dlcli.train.experiment import build_model
from dlcli.train.loop import open_checkpoints, read_trained_run, read_vocab


def sample_run(run_dir: Path, *, prompt: str, length: int, temperature: float = 1.0, top_k: int | None = None,
               seed: int = 0, checkpoint: str = "best") -> dict:
    """Generate `length` characters after `prompt` from the run's `checkpoint`."""
    run_dir = Path(run_dir)
    cfg = read_trained_run(run_dir)
    if not cfg.info.autoregressive:
        raise BadInput(f"{run_dir} trained {cfg.model.name} on {cfg.data.name!r}, not a language model; "
                       "dlcli sample needs a run on data.name: text")
    vocab = read_vocab(run_dir)
    if not prompt:
        raise BadInput("--prompt is empty; give at least one character to start from")
    if length < 1:
        raise BadInput(f"--length must be at least 1, got {length}")
    if temperature < 0:
        raise BadInput(f"--temperature must be 0 (greedy) or more, got {temperature}")
    if top_k is not None and not 1 <= top_k <= len(vocab):
        raise BadInput(f"--top-k must be between 1 and the vocabulary size {len(vocab)}, got {top_k}")
    prompt_ids = encode(prompt, vocab)
    context = getattr(cfg.model, "context", None)
    if context is not None and len(prompt_ids) + length > context:
        raise BadInput(f"the prompt ({len(prompt_ids)} characters) and --length {length} exceed the model's context of "
                       f"{context} positions; ask for at most {context - len(prompt_ids)} characters or a shorter prompt")

    model, optimizer, _ = build_model(cfg, cfg.data.info(vocab), total_steps=1)
    checkpoints = open_checkpoints(cfg, run_dir, read_only=True)
    try:
        step = checkpoints.resolve(checkpoint)
        state = nnx.state((model, optimizer))
        pure, _ = checkpoints.restore(step, nnx.to_pure_dict(state))
    finally:
        checkpoints.close()
    nnx.replace_by_pure_dict(state, pure)
    nnx.update((model, optimizer), state)
    model.eval()
    tokens = generate(model, prompt_ids, length, jax.random.key(seed), temperature, top_k)
    text = decode(tokens, vocab)
    return {"run_dir": str(run_dir), "checkpoint": step, "prompt": prompt, "text": text,
            "temperature": temperature, "top_k": top_k, "seed": seed}


def pick_token(logits: jax.Array, key: jax.Array, temperature: float, top_k: int | None) -> jax.Array:
    """logits (K,) -> one token id: argmax when temperature is 0, else a draw from the
    tempered softmax restricted to the top_k largest logits."""
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][-1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if temperature == 0:
        return jnp.argmax(logits)
    return jax.random.categorical(key, logits / temperature)


def generate(model: nnx.Module, prompt_ids, length: int, key: jax.Array, temperature: float,
             top_k: int | None) -> jax.Array:
    """prompt_ids (P,) -> (length,) generated ids; `model` offers initial_carry(batch) and
    step(carry, tokens (1,)) -> (carry, logits (1, K))."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, prompt, key):
        model = nnx.merge(graphdef, state)

        def feed(carry, token):
            carry, logits = model.step(carry, token[None])
            return carry, logits[0]

        carry, logits = jax.lax.scan(feed, model.initial_carry(1), prompt)

        def draw(carry_and_logits, key):
            carry, logits = carry_and_logits
            token = pick_token(logits, key, temperature, top_k)
            return feed(carry, token), token

        _, tokens = jax.lax.scan(draw, (carry, logits[-1]), jax.random.split(key, length))
        return tokens

    return jax.device_get(run(state, jnp.asarray(prompt_ids), key))
