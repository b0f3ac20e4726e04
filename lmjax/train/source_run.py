"""Another trained run as a starting point: its tokenizers, config and parameters.

Two features read a finished workdir besides the run's own: word-level KD's teacher
(config.train.kd_teacher_workdir, lmjax/objectives/kd.py) and warm starts
(config.train.init_from): a fresh run whose parameters begin as another run's trained
ones, for fine-tuning, pruning a trained model (docs/COMPRESSION.md) or a new schedule,
as t5x's `initial_checkpoint_path` and fairseq's `--restore-file --reset-optimizer` do.
A warm start takes the parameters only: the optimizer state, step counter, data position
and best-checkpoint record start fresh. A resumed run restores its own checkpoint and
never reads the source again. Either way the fresh workdir first gets a copy of the
source's tokenizers/, so both runs share one vocabulary.
"""

import json
from typing import Any, Tuple

import flax
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from lmjax import fileio
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import init_rules


def copy_tokenizers(source: str, workdir: str) -> None:
  """Copies SOURCE/tokenizers/ into `workdir` when it has none (whole, or not at all).

  The task then loads them instead of building its own; a config whose
  config.task.tokenizer differs is stopped by the task's own check.
  """
  origin = fileio.join(source, 'tokenizers')
  target = fileio.join(workdir, 'tokenizers')
  if fileio.isdir(origin) and not fileio.exists(target):
    staging = target + '.tmp'  # moved into place whole: a killed copy is never half a folder
    fileio.rmtree(staging)
    for name in fileio.files_under(origin):
      fileio.makedirs(fileio.parent(fileio.join(staging, name)))
      fileio.write_bytes(fileio.join(staging, name), fileio.read_bytes(fileio.join(origin, name)))
    fileio.move(staging, target)


def adopt_tokenizers(config, workdir: str) -> None:
  """Before the task is built: a fresh workdir takes the vocabulary of the run it distils
  from (config.train.kd_weight > 0: the teacher) or starts from (config.train.init_from).

  The workdir is shared by every process: process 0 copies, the others wait for it (two
  processes copying into one staging folder would remove each other's files).
  """
  source = config.train.get('init_from', '')
  warm = source and not fileio.exists(fileio.join(workdir, 'checkpoints'))  # not on a resume
  if warm:
    check_run(source, 'config.train.init_from')  # on every process: all stop alike
  if jax.process_index() == 0:
    if config.train.kd_weight > 0:
      copy_tokenizers(config.train.kd_teacher_workdir, workdir)
    if warm:
      copy_tokenizers(source, workdir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('lmjax_adopt_tokenizers')


def check_run(workdir: str, field: str) -> str:
  """Returns `workdir`; ValueError naming `field` unless it holds a run's checkpoints."""
  if not fileio.isdir(fileio.join(workdir, 'checkpoints')):
    raise ValueError(f'{field}={workdir!r}: no checkpoints there; give the --workdir of a '
                     'trained run')
  return workdir


def read_config(workdir: str, field: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json; ValueError naming `field` (the config field that named it)."""
  path = fileio.join(workdir, 'config.json')
  try:
    return ml_collections.ConfigDict(json.loads(fileio.read_text(path)))
  except (OSError, ValueError) as e:
    raise ValueError(f'{field}={workdir!r}: cannot read {path} ({e}); '
                     'give the --workdir of a trained run') from e


def read_params(workdir: str, checkpoint: str, field: str, checkpoint_field: str) -> Tuple[Any, int]:
  """A run's evaluation parameters as host arrays.

  Args:
    workdir: the run directory.
    checkpoint: 'latest', 'best' or a step number of checkpoints/last.
    field, checkpoint_field: the config fields that named them (for error messages).

  Returns:
    (params: the moving average when the run kept one, else params; the step).

  Raises:
    ValueError: no checkpoint there, or none by that name.
  """
  slot = 'best' if checkpoint == 'best' else 'last'
  directory = fileio.join(fileio.resolve(workdir), 'checkpoints', slot)
  if not fileio.isdir(directory):
    raise ValueError(f'{field}={workdir!r}: no checkpoints in {directory}; train that run first')
  steps = ckpt_lib.complete_steps(workdir, slot)
  if checkpoint in ('latest', 'best'):
    step = steps[-1] if steps else None
  else:
    step = int(checkpoint) if str(checkpoint).isdigit() and int(checkpoint) in steps else None
  if step is None:
    raise ValueError(f'{field}={workdir!r}: no checkpoint {checkpoint!r} in {directory} '
                     f"(steps: {steps}); set {checkpoint_field} to 'latest', 'best' or one of them")
  return ckpt_lib.load_params(workdir, step, slot, prefer_ema=True)


def check_fits(host, target, where: str, step: int) -> None:
  """Raises ValueError when `host` params differ from `target`'s names or shapes (every
  parameter by its own name: `init_rules.assign` with the default rules).

  Args:
    host: the source's parameters.
    target: a tree of arrays or ShapeDtypeStructs with the names and shapes wanted.
    where: 'config.FIELD=VALUE' of the source, for the message.
    step: the source checkpoint's step, for the message.
  """
  shapes = lambda tree: {k: tuple(np.shape(v)) for k, v in init_rules.flat_paths(tree).items()}
  init_rules.assign(shapes(target), shapes(host), [], [], f'{where} (step {step})')


def warm_start(state, shardings, config, report_path: str = ''):
  """The fresh TrainState with config.train.init_from's parameters (unchanged when unset).

  Which parameters are loaded, from which checkpoint parameters, and which stay fresh
  follows config.train.init_rules / init_skip (lmjax/train/init_rules.py; default: all,
  by name).

  Args:
    state: the freshly initialised TrainState (step 0).
    shardings: its shardings.
    config: the run's config.
    report_path: where to write the JSON report of loaded / new / skipped parameters
      ('' = nowhere; the caller's process 0 passes WORKDIR/init_report.json).

  Returns:
    (state, a one-line description or '' when config.train.init_from is empty).

  Raises:
    ValueError: a source without that checkpoint, or parameters that do not match (one
      line per problem).
  """
  source = config.train.get('init_from', '')
  if not source:
    return state, ''
  field = 'config.train.init_from'
  host, step = read_params(source, str(config.train.get('init_checkpoint', 'latest')), field,
                           'config.train.init_checkpoint')
  ours, theirs = init_rules.flat_paths(state.params), init_rules.flat_paths(host)
  assignment = init_rules.assign(
      {k: np.shape(v) for k, v in ours.items()}, {k: np.shape(v) for k, v in theirs.items()},
      list(config.train.get('init_rules', [])), list(config.train.get('init_skip', [])),
      f'{field}={source!r} (step {step})')
  # Loaded parameters are placed from the host copy; new ones keep their fresh arrays.
  places = init_rules.flat_paths(shardings.params)
  merged = {k: jax.device_put(np.asarray(theirs[assignment.loaded[k]], v.dtype), places[k])
            if k in assignment.loaded else v for k, v in ours.items()}
  params = flax.traverse_util.unflatten_dict(merged, sep='/')
  ema = None if state.ema_params is None else jax.device_put(params, shardings.ema_params)
  if report_path:
    fileio.write_text(report_path, json.dumps(
        {'init_from': source, 'step': step, **assignment.report()}, indent=2))
  return state.replace(params=params, ema_params=ema), assignment.line(source, step)
