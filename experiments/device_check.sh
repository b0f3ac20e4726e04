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
PY="${PYTHON:-$(command -v python || command -v python3)}"
# An accelerator is here but JAX would run on the CPU (a CPU-only jax install): say so
# instead of measuring the CPU and passing.
if { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; } || [ -e /dev/accel0 ]; then
  backend="$(env -u JAX_PLATFORMS "$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo none)"
  if [ "$backend" != gpu ] && [ "$backend" != tpu ]; then
    echo "device_check: an accelerator is present (nvidia-smi or /dev/accel0) but JAX's backend is '$backend': install JAX's GPU build (pip install -e '.[cuda12]' or '.[cuda13]') or TPU build (pip install 'jax[tpu]'); see docs/DEVICES.md" >&2
    exit 3
  fi
fi
exec "$PY" "$REPO/experiments/device_check.py" "$@"
