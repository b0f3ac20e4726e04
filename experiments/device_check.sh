#!/usr/bin/env bash
# Device check (issue 34): what this accelerator (or CPU) does with lmjax, in one run.
#
#   experiments/device_check.sh [--mode=auto|full|quick|tiny] [--sections=...] [--json=PATH]
#
# Prints platform and device, the measured peak bf16 matmul FLOP/s, the small and base
# train rows in bf16 with MFU, PyTorch on the same shapes, beam decode tok/s, and a
# 300-step train run of configs/default.py whose loss is checked against the CPU value.
# Goal: <= 8 minutes on one GPU, <= 3 minutes on 2 CPU cores. Logic: lmjax/bench/device_check.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# JAX and PyTorch share the GPU in one process: no JAX preallocation of 75 % of its memory.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
exec "${PYTHON:-python}" "$REPO/experiments/device_check.py" "$@"
