#!/usr/bin/env bash
# Launches lmjax experiments.
#
#   ./launch.sh local CONFIG[:ARG] [--workdir DIR] [--config.x.y=VALUE ...]
#
# `local` runs experiments/train.py in this checkout; rerunning the same command
# resumes from the latest checkpoint in the workdir (default: workdirs/<config name>).
# Overrides are passed to Python as separate argv entries, never through a shell.
set -euo pipefail

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

[[ $# -ge 1 ]] || usage
mode="$1"; shift
case "$mode" in
  local)
    [[ $# -ge 1 ]] || usage
    config="$1"; shift
    config_file="${config%%:*}"
    [[ -f "$config_file" ]] || { echo "launch.sh: config file '$config_file' not found" >&2; exit 2; }
    name="$(basename "$config_file" .py)"
    workdir="workdirs/$name"
    overrides=()
    while [[ $# -gt 0 ]]; do
      case "$1" in
        --workdir) [[ $# -ge 2 ]] || { echo "launch.sh: --workdir needs a value" >&2; exit 2; }
                   workdir="$2"; shift 2 ;;
        --workdir=*) workdir="${1#--workdir=}"; shift ;;
        --) shift ;;
        --config.*) overrides+=("$1"); shift ;;
        *) echo "launch.sh: unexpected argument '$1' (overrides look like --config.train.batch_size=32)" >&2; exit 2 ;;
      esac
    done
    exec "$python" "$here/experiments/train.py" --config="$config" --workdir="$workdir" "${overrides[@]}"
    ;;
  -h|--help|help) usage ;;
  *) echo "launch.sh: unknown mode '$mode' (expected: local)" >&2; exit 2 ;;
esac
