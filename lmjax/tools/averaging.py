"""Checkpoints as host arrays: list, read, average, and write an averaged checkpoint.

Model-free: the tree structure comes from the checkpoint's own metadata, so a
checkpoint written on N devices reads on any number of devices. Averaging the
parameters of the last few checkpoints of a run (Vaswani et al., 2017 average the
last 5 or 20) usually scores a little better than the last one alone.

Layout (see lmjax.train.checkpoint): WORKDIR/checkpoints/<slot>/<step>/{state,meta}
with slots 'last' (periodic), 'best' and 'averaged' (written here, never overwritten).
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from lmjax import fileio
from lmjax.train import checkpoint

SLOTS = ('last', 'best', 'averaged')


class CheckpointError(ValueError):
  """A checkpoint is missing, unreadable or inconsistent; the message names the path."""


def slot_dir(workdir: str, slot: str) -> str:
  """WORKDIR/checkpoints/<slot>."""
  if slot not in SLOTS:
    raise CheckpointError(f'checkpoint slot {slot!r} is not one of {SLOTS}')
  return fileio.join(workdir, 'checkpoints', slot)


def _manager(directory: str, create: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(create=create, max_to_keep=None,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options, item_names=('state', 'meta'))


def list_steps(workdir: str, slot: str = 'last') -> List[int]:
  """Complete checkpoints of a slot, oldest first ([] when the slot does not exist)."""
  slot_dir(workdir, slot)  # checks the slot name
  return checkpoint.complete_steps(workdir, slot)


def read_checkpoint(workdir: str, slot: str, step: int,
                    params_only: bool = True) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """Reads one checkpoint as numpy arrays.

  Args:
    workdir: run directory.
    slot: 'last', 'best' or 'averaged'.
    step: checkpoint step (a directory name in the slot).
    params_only: read only the parameters (not the optimizer state).

  Returns:
    (state, meta): state is {'params': …} (+ 'ema_params' when the run kept a moving
    average) or the whole TrainState as a dict {'step', 'params', 'opt_state', 'rng',
    …}; meta is the checkpoint's JSON item.

  Raises:
    CheckpointError: the checkpoint does not exist or cannot be read.
  """
  available = list_steps(workdir, slot)
  path = fileio.join(slot_dir(workdir, slot), str(step))
  if step not in available:
    raise CheckpointError(f'no checkpoint {path}; {slot} checkpoints of {workdir}: '
                          f'{available or "none"}')
  try:
    state = checkpoint.read_state(path, keys=('params', 'ema_params') if params_only else None)
    meta = checkpoint.read_meta(path)
  except Exception as e:  # Orbax raises many types for damaged files.
    raise CheckpointError(f'checkpoint {path} could not be read ({type(e).__name__}: '
                          f'{str(e)[:300]}); pick another checkpoint (evaluate.py/decode.py: --checkpoint=STEP; '
                          'average_checkpoints.py: --steps=S1,S2)') from e
  return state, meta


def average_trees(trees: Sequence[Any]) -> Any:
  """Element-wise mean of trees of identical structure and shapes.

  Sums in float64 and casts back, so averaging N copies of one tree returns it exactly.

  Args:
    trees: at least one pytree of float arrays.

  Returns:
    A tree of numpy arrays with the dtypes of `trees[0]`.
  """
  if not trees:
    raise ValueError('average_trees needs at least one tree')
  structure = jax.tree.structure(trees[0])
  for i, t in enumerate(trees[1:], 1):
    if jax.tree.structure(t) != structure:
      raise ValueError(f'tree {i} has a different structure from tree 0')

  def mean(*leaves):
    shapes = {np.shape(x) for x in leaves}
    if len(shapes) != 1:
      raise ValueError(f'cannot average arrays of shapes {sorted(shapes)}')
    dtype = np.asarray(leaves[0]).dtype
    total = np.sum([np.asarray(x, np.float64) for x in leaves], axis=0)
    return (total / len(leaves)).astype(dtype)

  return jax.tree.map(mean, *trees)


def select_steps(available: Sequence[int], last: int = 0,
                 steps: Optional[Sequence[int]] = None, where: str = '') -> List[int]:
  """The steps to average: the newest `last` of `available`, or exactly `steps`.

  Args:
    available: steps present, any order.
    last: how many of the newest to take (flag --last / --average_last).
    steps: explicit steps (flag --steps); used when given.
    where: the directory, for error messages.

  Returns:
    Sorted steps.

  Raises:
    CheckpointError: a requested step is missing, or fewer than `last` are kept.
  """
  available = sorted(available)
  if steps:
    missing = sorted(set(steps) - set(available))
    if missing:
      raise CheckpointError(f'steps {missing} are not in {where}; available: {available or "none"}')
    return sorted(set(steps))
  if last < 1:
    raise CheckpointError('give --last=N (N >= 1) or --steps=S1,S2,...')
  if len(available) < last:
    raise CheckpointError(f'asked to average the last {last} checkpoints but {where} keeps '
                          f'{len(available)} ({available or "none"}); use a smaller N or raise '
                          'config.train.keep_checkpoints for future runs')
  return available[-last:]


def model_params(state: Dict[str, Any]) -> Any:
  """The parameters a checkpoint is evaluated with: its moving average when it has one.

  Args:
    state: a checkpoint's state as read by `read_checkpoint`.

  Returns:
    state['ema_params'] (config.train.ema_decay > 0) or else state['params'].
  """
  ema = state.get('ema_params')
  return state['params'] if ema is None else ema


def average_params(workdir: str, steps: Sequence[int], slot: str = 'last') -> Any:
  """Mean of the evaluated parameters (`model_params`) of `steps` of one slot, as numpy."""
  trees = [model_params(read_checkpoint(workdir, slot, s)[0]) for s in steps]
  try:
    return average_trees(trees)
  except ValueError as e:
    raise CheckpointError(f'checkpoints {list(steps)} of {slot_dir(workdir, slot)} cannot be '
                          f'averaged: {e} (were they written by different configs?)') from e


def write_averaged(workdir: str, *, last: int = 0, steps: Optional[Sequence[int]] = None,
                   output_step: Optional[int] = None, slot: str = 'last') -> Tuple[str, List[int]]:
  """Averages checkpoints and saves the result to WORKDIR/checkpoints/averaged/<output_step>.

  The new checkpoint has the usual items: 'state' is the newest source TrainState
  (step, optimizer state, RNG) with the averaged parameters (of the moving averages,
  for a run that kept them: those replace 'params' and 'ema_params' is dropped), and
  'meta' is its JSON plus {'averaged_from': {'slot', 'steps'}}. Nothing existing is
  overwritten.

  Args:
    workdir: run directory.
    last: average the newest `last` checkpoints of `slot`.
    steps: or exactly these steps.
    output_step: directory name of the result (default: the newest averaged step).
    slot: where the sources are ('last' or 'best').

  Returns:
    (path of the new checkpoint, averaged steps).

  Raises:
    CheckpointError: missing sources, or the output step already exists.
  """
  chosen = select_steps(list_steps(workdir, slot), last, steps, slot_dir(workdir, slot))
  output_step = chosen[-1] if output_step is None else int(output_step)
  out_dir = slot_dir(workdir, 'averaged')
  path = fileio.join(out_dir, str(output_step))
  if fileio.exists(path):
    raise CheckpointError(f'{path} already exists and is never overwritten; choose another '
                          '--output_step or move that directory away')
  state, meta = read_checkpoint(workdir, slot, chosen[-1], params_only=False)
  state['params'] = average_params(workdir, chosen, slot)
  state.pop('ema_params', None)
  meta['averaged_from'] = {'slot': slot, 'steps': chosen}
  write_checkpoint(workdir, 'averaged', output_step, state, meta)
  return path, chosen


def write_checkpoint(workdir: str, slot: str, step: int, state: Dict[str, Any],
                     meta: Dict[str, Any]) -> str:
  """Writes host arrays as WORKDIR/checkpoints/<slot>/<step> (items 'state' and 'meta'),
  synchronously, in the layout `read_checkpoint` and the trainer's warm start read.

  Args:
    workdir: run directory.
    slot: 'last', 'best' or 'averaged'.
    step: the directory name.
    state: {'params': …} and any other TrainState entries, as numpy arrays.
    meta: JSON bookkeeping.

  Returns:
    The checkpoint's path.
  """
  manager = _manager(slot_dir(workdir, slot), create=True)
  try:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()
  finally:
    manager.close()
  return fileio.join(slot_dir(workdir, slot), str(step))
