#!/usr/bin/env bash
# Launches lmjax experiments: one run or a sweep, here or on a Cloud TPU VM.
#
#   ./launch.sh local CONFIG[:ARG] [--workdir DIR] [--sweep NAME] [--] [--config.x.y=VALUE ...]
#   ./launch.sh tpu --name NAME --zone ZONE [--project P] [--accelerator v4-8]
#                   [--version tpu-ubuntu2204-base] [--create] [--dry-run]
#                   CONFIG[:ARG] [--workdir DIR] [--sweep NAME] [--] [--config.x.y=VALUE ...]
#
# local: runs experiments/train.py in this checkout; rerunning the same command resumes
#   from the latest checkpoint (default workdir: workdirs/<config name>). With --sweep, runs
#   every trial of the config file's get_sweep(NAME) in turn, in DIR/<trial>, then writes
#   DIR/results.md and DIR/results.csv (overrides, final metrics, wall time).
# tpu: [creates the TPU VM,] copies the tracked files to ~/lmjax on every worker, installs
#   them in a venv there (pip install -e '.[gcs]' 'jax[tpu]') and runs the same `local` command on
#   all workers with --config.distributed.enabled=True. --dry-run prints the gcloud commands.
#   Multi-host runs need a --workdir every worker can write (e.g. a gs:// bucket).
# Overrides reach Python as separate argv entries, never through a shell.
set -euo pipefail

usage() {  # to stderr: a usage error
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() { echo "launch.sh: $*" >&2; exit 2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

# Parses `CONFIG [--workdir DIR] [--sweep NAME] [--] [--config.* ...]` into
# config, workdir, sweep and the overrides array.
config='' workdir='' sweep=''
overrides=()
parse_run_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --workdir) [[ $# -ge 2 ]] || die "--workdir needs a value"; workdir="$2"; shift 2 ;;
      --workdir=*) workdir="${1#--workdir=}"; shift ;;
      --sweep) [[ $# -ge 2 ]] || die "--sweep needs a value"; sweep="$2"; shift 2 ;;
      --sweep=*) sweep="${1#--sweep=}"; shift ;;
      --) shift ;;
      --config.*) overrides+=("$1"); shift ;;
      -*) die "unexpected argument '$1' (overrides look like --config.train.batch_size=32)" ;;
      *) [[ -z "$config" ]] || die "unexpected argument '$1' (config already given: '$config')"
         config="$1"; shift ;;
    esac
  done
  [[ -n "$config" ]] || usage
  [[ -n "$workdir" ]] || workdir="workdirs/$(basename "${config%%:*}" .py)"
}

# Prints one command, each word quoted so that pasting it into a shell runs exactly it.
quote() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$a"); else out+=("${a@Q}"); fi
  done
  echo "${out[*]}"
}

run_local() {
  parse_run_args "$@"
  local config_file="${config%%:*}"
  [[ -f "$config_file" ]] || die "config file '$config_file' not found"
  export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
  if [[ -n "$sweep" ]]; then
    exec "$python" -m lmjax.config.sweep --config="$config" --workdir="$workdir" --sweep="$sweep" \
      -- ${overrides[@]+"${overrides[@]}"}
  fi
  exec "$python" "$here/experiments/train.py" --config="$config" --workdir="$workdir" \
    ${overrides[@]+"${overrides[@]}"}
}

run_tpu() {
  local name='' zone='' project='' accelerator='v4-8' version='tpu-ubuntu2204-base'
  local create=0 dry_run=0 rest=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name|--zone|--project|--accelerator|--version)
        [[ $# -ge 2 ]] || die "$1 needs a value"
        local key="${1#--}"; printf -v "$key" '%s' "$2"; shift 2 ;;
      --name=*|--zone=*|--project=*|--accelerator=*|--version=*)
        local key="${1%%=*}"; key="${key#--}"; printf -v "$key" '%s' "${1#*=}"; shift ;;
      --create) create=1; shift ;;
      --dry-run) dry_run=1; shift ;;
      *) rest+=("$1"); shift ;;
    esac
  done
  [[ -n "$name" ]] || die "tpu needs --name NAME"
  [[ -n "$zone" ]] || die "tpu needs --zone ZONE"
  parse_run_args ${rest[@]+"${rest[@]}"}
  [[ -f "$here/${config%%:*}" || -f "${config%%:*}" ]] || die "config file '${config%%:*}' not found"

  local where=(--zone="$zone")
  [[ -z "$project" ]] || where+=(--project="$project")
  run() {
    if (( dry_run )); then quote "$@"; else "$@"; fi
  }

  # Stage the tracked (and untracked, not ignored) files: no .git, venvs or workdirs.
  local staging
  staging="$(mktemp -d "${TMPDIR:-/tmp}/lmjax-sync.XXXXXX")"
  trap "rm -rf $(printf '%q' "$staging")" EXIT
  mkdir -p "$staging/lmjax"
  if (( ! dry_run )); then
    if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      (cd "$here" && git ls-files -z --cached --others --exclude-standard \
        | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$staging/lmjax" -xf -
    else
      tar -C "$here" --exclude=.git --exclude=.venv --exclude=workdirs -cf - . \
        | tar -C "$staging/lmjax" -xf -
    fi
  fi

  local install run_cmd
  local libtpu=https://storage.googleapis.com/jax-releases/libtpu_releases.html
  install="cd lmjax && python3 -m venv .venv && .venv/bin/pip install -q -U pip && \
$(quote .venv/bin/pip install -q -e '.[gcs]' 'jax[tpu]' -f "$libtpu")"
  local remote=(./launch.sh local "$config" --workdir "$workdir")
  [[ -z "$sweep" ]] || remote+=(--sweep "$sweep")
  remote+=(-- ${overrides[@]+"${overrides[@]}"} --config.distributed.enabled=True)
  run_cmd="cd lmjax && PYTHON=.venv/bin/python $(quote "${remote[@]}")"

  if (( create )); then
    run gcloud compute tpus tpu-vm create "$name" "${where[@]}" \
      --accelerator-type="$accelerator" --version="$version"
  fi
  run gcloud compute tpus tpu-vm scp --recurse "$staging/lmjax" "$name:~/" "${where[@]}" \
    --worker=all
  run gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command="$install"
  run gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command="$run_cmd"
}

[[ $# -ge 1 ]] || usage
mode="$1"; shift
case "$mode" in
  local) run_local "$@" ;;
  tpu) run_tpu "$@" ;;
  -h|--help|help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown mode '$mode' (expected: local or tpu)" ;;
esac
