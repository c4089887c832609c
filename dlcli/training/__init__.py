"""Training and evaluation: the experiment builder, the compiled steps, the loop, checkpoints."""
