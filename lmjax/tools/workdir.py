"""A training workdir as the tools see it: its config, checkpoints and user-facing errors."""

import dataclasses
import json
import sys
from typing import Tuple

from absl import logging
import jax
import ml_collections
import numpy as np

from lmjax.config import defaults
from lmjax.tools import averaging
from lmjax import fileio
from lmjax import parallel


class ToolError(ValueError):
  """A problem the user can fix; the message names the flag or path and the fix."""


USER_ERRORS = (ToolError, averaging.CheckpointError)
SPLITS = ('eval', 'test')  # 'test' only for final numbers (evaluate.py --split=test)


def setup_process() -> None:
  """Quiet logging (Orbax logs every array at INFO) and the trainer's RNG mode."""
  logging.set_verbosity(logging.WARNING)
  jax.config.update('jax_threefry_partitionable', True)


def stderr_warning(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
  """Which parameters were loaded: slot ('last', 'best', 'averaged'), step, averaged steps."""
  slot: str
  step: int
  averaged_steps: Tuple[int, ...] = ()

  @property
  def label(self) -> str:
    if self.averaged_steps:
      return f'avg{len(self.averaged_steps)}-{self.slot}-{self.step}'
    return f'{self.slot}-{self.step}'


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads WORKDIR/config.json (written by the trainer)."""
  try:
    fileio.check_url(workdir, '--workdir')
    found = fileio.isdir(workdir)
  except Exception as e:  # pylint: disable=broad-except  (each storage backend has its own)
    raise ToolError(f'--workdir {workdir}: cannot be read ({fileio.first_line(e)})') from None
  if not found:
    raise ToolError(f'--workdir {workdir} does not exist: pass the --workdir of a training run '
                    '(experiments/train.py)')
  path = fileio.join(workdir, 'config.json')
  if not fileio.isfile(path):
    raise ToolError(f'{path} not found: {workdir} is not a training workdir (the trainer writes '
                    'config.json when it starts)')
  try:
    config = ml_collections.ConfigDict(json.loads(fileio.read_text(path)))
  except ValueError as e:
    raise ToolError(f'{path} is not valid JSON ({e}); restore it from the run') from e
  _backfill(config, path)
  return config


def _backfill(config: ml_collections.ConfigDict, path: str) -> None:
  """Gives trainer fields added after the run was written (train.*, eval.*) their defaults."""
  base, added = ml_collections.ConfigDict(), []
  defaults.add_parallelism(base)
  for key in ('sharding', 'sharding_rules'):
    if key not in config:
      config[key] = base[key]
      added.append(key)
  for section, fields in (('train', defaults.train()), ('eval', defaults.eval())):
    for key, value in fields.items():
      if key not in config[section]:
        config[section][key] = value
        added.append(f'{section}.{key}={value!r}')
  if added:
    logging.warning('%s predates config fields %s; using their defaults', path, ', '.join(added))


def inference_mesh(config, rules) -> jax.sharding.Mesh:
  """config.mesh when it fits the devices here, else every device on the first batch axis."""
  try:
    return parallel.create_mesh(config.mesh)
  except ValueError:
    names = list(config.mesh.keys())
    first = (parallel.batch_axes(rules) or names)[0]
    logging.warning('config.mesh=%s does not fit %d devices; using data parallelism',
                    dict(config.mesh), jax.device_count())
    return parallel.create_mesh({n: -1 if n == first else 1 for n in names})


def resolve_checkpoint(workdir: str, checkpoint: str) -> Tuple[str, int]:
  """'latest' | 'best' | 'averaged' | 'STEP' → (slot, step).

  A bare step is looked up in the slots 'last', 'best', 'averaged' in that order.
  """
  found = {slot: averaging.list_steps(workdir, slot) for slot in averaging.SLOTS}
  listing = '; '.join(f'{s}: {v or "none"}' for s, v in found.items())
  named = {'latest': 'last', 'last': 'last', 'best': 'best', 'averaged': 'averaged'}
  if checkpoint in named:
    slot = named[checkpoint]
    if not found[slot]:
      hint = ('run experiments/average_checkpoints.py first' if slot == 'averaged'
              else 'train first, or pick another with --checkpoint')
      raise ToolError(f'no checkpoint in {averaging.slot_dir(workdir, slot)} ({listing}): {hint}')
    return slot, found[slot][-1]
  if checkpoint.isdigit():
    for slot, steps in found.items():
      if int(checkpoint) in steps:
        return slot, int(checkpoint)
    raise ToolError(f'--checkpoint={checkpoint}: no such step in {workdir}/checkpoints ({listing})')
  raise ToolError(f'--checkpoint={checkpoint!r}: expected latest, best, averaged or a step number')


def _check_matches(host, abstract, where: str) -> None:
  got = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(host)}
  want = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(abstract)}
  if got != want:
    diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))[:3]
    detail = ', '.join(f'{k}: checkpoint {got.get(k)} vs model {want.get(k)}' for k in diff)
    raise ToolError(f'checkpoint {where} does not fit the model of config.json ({detail}); '
                    'was config.json edited after training?')


def use_test_split(config) -> None:
  """Points config.task's eval split at the test split (files or TFDS split), in place.

  Raises:
    ToolError: the config names no test split.
  """
  src = config.task.get('source')
  if src is None:
    raise ToolError(f"--split=test: the run's task (config.task.name={config.task.name!r}) has "
                    "no test split; only tasks read from files or TFDS have one ('eval' works)")
  if src.type == 'tfds':
    src.eval_split = src.get('test_split', 'test')
  elif not src.get('test_files'):
    raise ToolError('--split=test: config.task.source.test_files is empty in the run\'s '
                    'config.json; list the test file(s) there')
  else:
    src.eval_files = list(src.test_files)
  src.max_eval_examples = 0
