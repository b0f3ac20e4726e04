#!/usr/bin/env bash
# Device check (issue 34): what this accelerator (or CPU) does with lmjax, in one run.
#
#   experiments/device_check.sh [--mode=auto|full|quick|tiny] [--sections=...] [--json=PATH]
#                               [--out=DIR]
#
# Prints platform, device and versions, the attention kernel matrix (every fused impl vs
# 'reference' in bf16), the measured peak bf16 matmul FLOP/s, the small, base (and on an
# accelerator large) train rows in bf16 with MFU, PyTorch on the same shapes, beam decode
# tok/s, and a 300-step train run of configs/default.py whose loss is checked against the
# CPU value; --out=DIR writes the report (Markdown + JSON). Exits 1 on a failed check.
# Goal: <= 4 minutes on one GPU, <= 3 minutes on 2 CPU cores. Logic: lmjax/bench/device_check.py.
# Offline hosts: experiments/prepare_device_kit.sh.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# JAX and PyTorch share the GPU in one process: no JAX preallocation of 75 % of its memory.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
# An offline kit (experiments/prepare_device_kit.sh device_kit) in the checkout.
KIT="$REPO/device_kit"
if [ -d "$KIT/site" ]; then
  kit_py="$(sed -n 's/^python //p' "$KIT/KIT.txt" 2>/dev/null || true)"
  this_py="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ -n "$kit_py" ] && [ "$kit_py" != "$this_py" ]; then
    echo "device_check: $KIT was prepared for Python $kit_py, this is Python $this_py: rerun experiments/prepare_device_kit.sh with --python-version=$this_py" >&2
    exit 2
  fi
  export PYTHONPATH="$PYTHONPATH:$KIT/site"
fi
# What lmjax imports beyond the preinstalled stack: one line naming what is missing.
missing="$("$PY" -c '
import importlib.util
def found(name):
  try:
    return importlib.util.find_spec(name) is not None
  except ImportError:  # a missing parent package
    return False
need = ("jax", "flax", "optax", "orbax.checkpoint", "absl", "numpy", "ml_collections", "yaml",
        "qwix", "tensorboardX", "grain", "array_record", "tqdm", "sacrebleu", "matplotlib")
print(" ".join(m for m in need if not found(m)))' 2>/dev/null || echo '(the probe failed)')"
if [ -n "$missing" ]; then
  echo "device_check: Python packages missing: $missing. Install lmjax (pip install -e .) or, on a host without network, run experiments/prepare_device_kit.sh DIR --python-version=X.Y on a machine with PyPI and rerun with PYTHONPATH=DIR/site (docs/DEVICES.md)" >&2
  exit 2
fi
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
