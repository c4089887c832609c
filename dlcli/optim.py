"""Optax optimizers and learning-rate schedules from their config sections."""

from __future__ import annotations

import optax

from dlcli.config import OptimizerConfig, ScheduleConfig


def make_schedule(cfg: ScheduleConfig, peak_lr: float, total_steps: int) -> optax.Schedule:
    if cfg.name == "constant":
        return optax.constant_schedule(peak_lr)
    if cfg.name == "warmup_cosine":
        warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0 if warmup else peak_lr, peak_value=peak_lr, warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1), end_value=peak_lr * cfg.min_lr_ratio)
    return optax.exponential_decay(peak_lr, transition_steps=cfg.decay_every, decay_rate=cfg.decay_rate, staircase=True)


def make_optimizer(cfg: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """clip (global norm) -> [L2 weight decay] -> the optimizer, driven by `schedule`."""
    parts = []
    if cfg.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.weight_decay and cfg.name != "adamw":
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    if cfg.name == "sgd":
        parts.append(optax.sgd(schedule))
    elif cfg.name == "momentum":
        parts.append(optax.sgd(schedule, momentum=cfg.momentum, nesterov=cfg.nesterov))
    elif cfg.name == "adam":
        parts.append(optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    else:
        parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay))
    return optax.chain(*parts)
