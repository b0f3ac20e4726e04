r"""Sequential sweeps: one workdir per trial, then a results table (markdown + CSV).

    python -m lmjax.config.sweep --config=configs/default.py:runlocal --workdir=workdirs/lr \
        --sweep=lr [-- --config.train.num_train_steps=100 ...]

(normally through `./launch.sh local CONFIG --sweep NAME`). A config file defines
its sweeps as `get_sweep(name)` returning one dict of overrides (dotted field →
value) per trial. Each trial runs `experiments/train.py` in its own process, so a
rerun resumes every unfinished trial from its checkpoints.
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from lmjax import fileio
from lmjax.config import configlib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # local disk: this checkout
TRAIN = os.path.join(REPO, 'experiments', 'train.py')


def load_sweep(config_spec: str, name: str) -> List[Dict[str, Any]]:
  """Trials of sweep `name` from the config file's `get_sweep(name)`.

  Args:
    config_spec: 'path/to/config.py[:arg]' (the arg is for get_config, not the sweep).
    name: sweep name.

  Returns:
    One dict of overrides per trial.

  Raises:
    ValueError: the file has no get_sweep, or it returns no trials.
  """
  path = config_spec.partition(':')[0]
  module = configlib.config_module(path)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'{path} defines no get_sweep(name): add one returning a list of '
                     'override dicts to use --sweep')
  trials = [dict(t) for t in module.get_sweep(name)]
  if not trials:
    raise ValueError(f'{path}: get_sweep({name!r}) returned no trials')
  return trials


def override_args(overrides: Dict[str, Any]) -> List[str]:
  """{'optimizer.learning_rate': 0.001} → ['--config.optimizer.learning_rate=0.001']."""
  return [f'--config.{k}={v}' for k, v in overrides.items()]


def trial_name(index: int, overrides: Dict[str, Any]) -> str:
  """Directory name of a trial: its index and overrides, file-system safe."""
  desc = ','.join(f'{k.split(".")[-1]}={v}' for k, v in overrides.items())
  return re.sub(r'[^A-Za-z0-9._=,+-]', '_', f'{index:02d}_{desc}')[:100]


def read_summary(workdir: str) -> Dict[str, Any]:
  path = fileio.join(workdir, 'summary.json')
  if not fileio.exists(path):
    return {}
  return json.loads(fileio.read_text(path))


def write_results(workdir: str, rows: List[Dict[str, Any]]) -> List[str]:
  """Writes WORKDIR/results.md and WORKDIR/results.csv. Returns their paths.

  Args:
    workdir: sweep directory.
    rows: per trial: 'trial', 'workdir', 'status', 'wall_time_sec', 'overrides'
      (dict) and 'metrics' (the trial's summary.json).
  """
  override_keys = list(dict.fromkeys(k for r in rows for k in r['overrides']))
  metric_keys = list(dict.fromkeys(k for r in rows for k in r['metrics']
                                   if k != 'wall_time_sec'))
  header = ['trial', *override_keys, *metric_keys, 'wall_time_sec', 'status', 'workdir']

  def fmt(v):
    if isinstance(v, float):
      return f'{v:.4g}'
    return '' if v is None else str(v)

  table = [[r['trial'], *[r['overrides'].get(k) for k in override_keys],
            *[r['metrics'].get(k) for k in metric_keys], r['wall_time_sec'], r['status'],
            r['workdir']] for r in rows]
  csv_path, md_path = fileio.join(workdir, 'results.csv'), fileio.join(workdir, 'results.md')
  with fileio.atomic_output(csv_path, 'w', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows([['' if v is None else v for v in row] for row in table])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(fmt(v).replace('|', '\\|') for v in row) + ' |' for row in table]
  fileio.write_text(md_path, '\n'.join(lines) + '\n')
  return [md_path, csv_path]


def run_sweep(config_spec: str, workdir: str, trials: Sequence[Dict[str, Any]],
              extra: Sequence[str] = (), python: str = sys.executable,
              train: str = TRAIN) -> List[Dict[str, Any]]:
  """Runs the trials one after another and writes the results table.

  Args:
    config_spec: '--config' value for every trial.
    workdir: sweep directory; trial i runs in WORKDIR/<trial_name>.
    trials: override dicts.
    extra: overrides common to every trial (trial overrides come after, so they win).
    python: interpreter for experiments/train.py.
    train: the training script.

  Returns:
    The table rows (see `write_results`).
  """
  fileio.makedirs(workdir)
  rows = []
  for i, overrides in enumerate(trials):
    trial_dir = fileio.join(workdir, trial_name(i, overrides))
    argv = [python, train, f'--config={config_spec}', f'--workdir={trial_dir}', *extra,
            *override_args(overrides)]
    print(f'[sweep] trial {i + 1}/{len(trials)}: {" ".join(override_args(overrides))}',
          flush=True)
    t0 = time.time()
    rc = subprocess.call(argv)
    rows.append({'trial': i, 'workdir': trial_dir, 'overrides': dict(overrides),
                 'metrics': read_summary(trial_dir), 'wall_time_sec': round(time.time() - t0, 1),
                 'status': 'ok' if rc == 0 else f'failed (exit {rc})'})
    write_results(workdir, rows)  # a partial table survives an interrupted sweep
  return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='config file[:arg]')
  parser.add_argument('--workdir', required=True, help='sweep directory')
  parser.add_argument('--sweep', required=True, help='name passed to get_sweep')
  parser.add_argument('overrides', nargs='*', help='--config.x=… for every trial (after --)')
  args = parser.parse_args(argv)
  bad = [o for o in args.overrides if not o.startswith('--config.')]
  if bad:
    parser.error(f'overrides must look like --config.train.batch_size=32, got {bad}')
  try:
    trials = load_sweep(args.config, args.sweep)
  except ValueError as e:
    print(f'sweep: {e}', file=sys.stderr)
    return 2
  rows = run_sweep(args.config, args.workdir, trials, args.overrides)
  paths = write_results(args.workdir, rows)
  print('[sweep] results: ' + ', '.join(paths))
  print(fileio.read_text(paths[0]))
  return 0 if all(r['status'] == 'ok' for r in rows) else 1


if __name__ == '__main__':
  sys.exit(main())
