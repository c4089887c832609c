"""Training and evaluation: optimizers, the compiled steps, the loop, checkpoints."""
