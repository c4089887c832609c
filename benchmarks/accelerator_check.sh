#!/usr/bin/env bash
# The GPU check of issue 18: trains cnn_mnist and the Transformer character language model
# on one GPU in float32 and bfloat16 and prints steps/s, samples/s, the FLOPs of a step and
# the model FLOPs utilisation (benchmarks/accelerator_check.py). Run it from anywhere on a
# machine with JAX's CUDA build:
#   bash benchmarks/accelerator_check.sh [--steps 256] [--rounds 3] [--peak-tflops T]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" benchmarks/accelerator_check.py --platform gpu "$@"
