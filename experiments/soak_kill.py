r"""Soak test: SIGKILL a training run N times at random moments, relaunch, compare.

    python experiments/soak_kill.py --workdir=/tmp/soak_default --kills=20

runs configs/default.py once uninterrupted (WORKDIR/straight), then launches the same
command in WORKDIR/killed, kills it with SIGKILL after a random delay (uniform between 0
and the uninterrupted run's wall time, so kills land in start-up, steps, checkpoint
saves and metrics writes alike), relaunches, and after N kills lets it finish. It prints
a table of the kills and whether the parameters and train metrics are identical
(exit status 1 if not). A quick check on the small config, with kills timed to land in
training and flags for train.py after `--`:

    python experiments/soak_kill.py --config=configs/default.py:runlocal --workdir=/tmp/soak \
        --kills=3 --wait_for_progress --max_delay=1.5 -- --config.train.num_train_steps=60
"""

import os
import shutil
import sys
import time

from absl import app
from absl import flags
from absl import logging

from lmjax.train import soak

_CONFIG = flags.DEFINE_string('config', 'configs/default.py', 'Config spec, as for train.py.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Soak directory (gets straight/ and killed/).')
_KILLS = flags.DEFINE_integer('kills', 20, 'Launches to SIGKILL before the one that finishes.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random kill delays.')
_MAX_DELAY = flags.DEFINE_float('max_delay', 0.0,
                                'Longest delay before a kill, s (0 = the uninterrupted run time).')
_MIN_DELAY = flags.DEFINE_float('min_delay', 0.0, 'Shortest delay before a kill, s.')
_WAIT = flags.DEFINE_bool('wait_for_progress', False,
                          'Count the delay from the first train row of each launch (kills land '
                          'in training) instead of from the launch.')
_KILL_BY_STEP = flags.DEFINE_integer(
    'kill_by_step', 0, 'Kill a launch no later than when its metrics.jsonl reaches this step '
    '(0 = no limit): kills still land in a live run however fast it trains.')
_CACHE = flags.DEFINE_bool('compilation_cache', True,
                           'Share a JAX compilation cache between launches (faster relaunches).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Delete an earlier soak in --workdir first.')
_DAMAGE = flags.DEFINE_string(
    'damage', '', 'After these kills, damage the newest checkpoint, e.g. "3:truncate,7:manifest" '
    '(truncate: an array file cut to half; manifest: the OCDBT manifests emptied); the run must '
    'fall back (train.checkpoint_fallback) and still end bit-identical. Such a launch counts '
    'its delay from when, after its first train row, two checkpoints are complete.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  logging.set_verbosity(logging.WARNING)  # Orbax logs every array it reads at INFO
  overrides = argv[1:]  # flags for train.py, given after `--`
  root = os.path.abspath(_WORKDIR.value)
  straight, killed = os.path.join(root, 'straight'), os.path.join(root, 'killed')
  for d in (straight, killed):
    if os.path.exists(d):
      if not _OVERWRITE.value:
        sys.exit(f'{d} exists: use a new --workdir or pass --overwrite')
      shutil.rmtree(d)
  path, sep, arg = _CONFIG.value.partition(':')
  config = os.path.abspath(path) + sep + arg  # the launches run in the repository root
  env = soak.subprocess_env(os.path.join(root, 'jax_cache') if _CACHE.value else None)
  t0 = time.time()
  soak.run_to_completion(soak.train_command(config, straight, overrides), env, timeout=1e6)
  wall = time.time() - t0
  print(f'uninterrupted run: {wall:.1f} s')
  kills = soak.kill_and_resume(
      soak.train_command(config, killed, overrides), killed, _KILLS.value, _SEED.value,
      _MAX_DELAY.value or wall, env, wait_for_progress=_WAIT.value, min_delay=_MIN_DELAY.value,
      timeout=max(600.0, 3 * wall), damage=_parse_damage(_DAMAGE.value),
      kill_by_step=_KILL_BY_STEP.value or None)
  comparison = soak.compare(straight, killed)
  print(soak.format_report(kills, comparison))
  print(f'total {time.time() - t0:.1f} s')
  if not (comparison['params_identical'] and comparison['metrics_identical']):
    sys.exit(1)


def _parse_damage(spec: str):
  out = {}
  for item in filter(None, spec.split(',')):
    index, _, kind = item.partition(':')
    if not index.isdigit() or kind not in soak.DAMAGE_KINDS:
      sys.exit(f'--damage={spec!r}: expected KILL:KIND items with KIND in {soak.DAMAGE_KINDS}, '
               'e.g. --damage=3:truncate,7:manifest')
    out[int(index)] = kind
  return out


if __name__ == '__main__':
  app.run(main)
