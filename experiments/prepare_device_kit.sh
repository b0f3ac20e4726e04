#!/usr/bin/env bash
# What an air-gapped accelerator host lacks for experiments/device_check.sh, prepared on a
# machine with PyPI access (issue 47; docs/DEVICES.md):
#
#   experiments/prepare_device_kit.sh DIR [--python-version=3.12]
#
# The checked GPU image has Python 3.12, jax/jaxlib with the CUDA plugin, flax, optax,
# orbax-checkpoint, absl-py, numpy, sentencepiece, sacrebleu, tensorboard, tqdm, matplotlib
# and torch, but no network. lmjax runs there from the checkout (PYTHONPATH); of what it
# imports, the device check needs only the packages below that the image lacks. They are
# downloaded as binary wheels for that Python (manylinux x86_64, no dependencies pulled:
# jax & co. are the image's) and installed into DIR/site, which the check finds on
# PYTHONPATH:
#
#   PYTHONPATH=DIR/site experiments/device_check.sh --out=REPORT_DIR
#
# (DIR = device_kit/ at the repository root is found without PYTHONPATH.) DIR/KIT.txt
# records the Python version and the packages; the kit must stay under 64 MiB (what
# travels with a checkout to the lent machine).
set -euo pipefail
usage() { echo "usage: $0 DIR [--python-version=X.Y]" >&2; exit 2; }
[ $# -ge 1 ] || usage
DIR="$1"; shift
PYVER=3.12
for arg in "$@"; do
  case "$arg" in
    --python-version=*) PYVER="${arg#*=}" ;;
    *) echo "prepare_device_kit: unknown argument '$arg'" >&2; usage ;;
  esac
done
if ! [[ "$PYVER" =~ ^3\.[0-9]+$ ]]; then
  echo "prepare_device_kit: --python-version must look like 3.12, got '$PYVER'" >&2
  exit 2
fi
PY="${PYTHON:-$(command -v python || command -v python3)}"
# The packages the device check imports that the image lacks, in setup.py's ranges:
# ml_collections (configs) + PyYAML, qwix (lmjax.models.quantization) + opt_einsum,
# tensorboardX (the train_run section's metrics), grain + array-record, cloudpickle and
# portpicker (the trainer's input pipeline).
PACKAGES=('ml_collections>=0.1.1' 'PyYAML>=6' 'qwix>=0.1.8,<0.2' 'opt_einsum>=3.3'
          'tensorboardX>=2.6' 'grain>=0.2.12' 'array-record>=0.7' 'cloudpickle>=2'
          'portpicker>=1.5')
MAX_BYTES=$((64 * 1024 * 1024))

if [ -e "$DIR/site" ]; then
  echo "prepare_device_kit: $DIR/site exists: remove it or choose another DIR" >&2
  exit 2
fi
mkdir -p "$DIR"
tmp="$(mktemp -d "$DIR/.site.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any \
  --target "$tmp" "${PACKAGES[@]}"
rm -rf "$tmp/bin"  # console scripts of the build machine's interpreter
bytes="$(du -sb "$tmp" | cut -f1)"
if [ "$bytes" -gt "$MAX_BYTES" ]; then
  echo "prepare_device_kit: the kit is $bytes bytes, over the 64 MiB a checkout carries" >&2
  exit 1
fi
mv "$tmp" "$DIR/site"
trap - EXIT
{
  echo "python $PYVER"
  for dist in "$DIR"/site/*.dist-info; do
    basename "$dist" .dist-info
  done
} > "$DIR/KIT.txt"
echo "prepare_device_kit: $DIR/site ($((bytes / 1024)) KiB) for Python $PYVER:"
sed 's/^/  /' "$DIR/KIT.txt"
