"""Orbax checkpoints: last K in WORKDIR/checkpoints/last, the best one in .../best.

A checkpoint holds the TrainState (params, optimizer state, step, RNG) and a JSON
item with the data-pipeline position and the loop's bookkeeping (best metric,
early-stopping counter), which is everything an exact resume needs.

Crash safety: Orbax writes each step to `<step>.orbax-checkpoint-tmp`, writes
`commit_success.txt` and renames it when complete, so a save cut short (SIGKILL, full
disk) leaves only a tmp directory: never listed, removed at the next start, rewritten
if that step is saved again. A step directory without `commit_success.txt` (a delete
or copy cut short) is moved to WORKDIR/checkpoints/incomplete/ at start, never loaded.
A failed write raises `guard.WriteError` naming the path; parameters that are not
finite are never saved (`guard.NonFiniteError`).
"""

import logging as std_logging
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint._src.metadata import array_metadata_store  # no public path in 0.12

from lmjax import fileio
from lmjax.train import guard

# Written by Orbax into a step directory as the last file before it is committed.
COMMIT_FILE = 'commit_success.txt'


# Orbax splits every replicated array across its replicas so that each writes a part
# ("replica parallel"): one device slice per replica and array, ~0.2 ms each. A
# data-parallel state has hundreds of small arrays (biases, norms, their Adam moments)
# where this costs more than the bytes it spreads (5 saves of a 1.4 M-parameter model on
# 8 CPU devices: 1.51 s with it, 0.31 s without). Arrays whose per-replica part would be
# under 1 MiB are written by one replica; large ones are still split.
MIN_REPLICA_SLICE_BYTES = 1 << 20


def register_array_handler() -> None:
  """Orbax's default jax.Array handler, with MIN_REPLICA_SLICE_BYTES (idempotent)."""
  current = ocp.type_handlers.get_type_handler(jax.Array)
  if getattr(current, 'lmjax_handler', False):
    return
  handler = ocp.type_handlers.ArrayHandler(
      array_metadata_store=array_metadata_store.Store(),
      min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES)
  handler.lmjax_handler = True
  ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def _manager(directory: str, max_to_keep: int, async_save: bool) -> ocp.CheckpointManager:
  register_array_handler()
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=async_save,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(directory, options=options, item_names=('state', 'meta'))


def incomplete_steps(directory: str) -> List[str]:
  """Step directories of a slot that lack Orbax's commit file (never loadable)."""
  return [n for n in fileio.listdir(directory) if n.isdigit() and
          fileio.isdir(fileio.join(directory, n)) and
          not fileio.exists(fileio.join(directory, n, COMMIT_FILE))]


def set_aside_incomplete(directory: str) -> List[str]:
  """Moves incomplete step directories of `directory` to ../incomplete/ (nothing is deleted).

  Args:
    directory: a slot directory, WORKDIR/checkpoints/<slot>.

  Returns:
    The new paths.
  """
  moved = []
  for name in incomplete_steps(directory):
    target_dir = fileio.join(fileio.parent(directory), 'incomplete')
    fileio.makedirs(target_dir)
    target = fileio.join(target_dir, f'{fileio.basename(directory)}-{name}-{int(time.time())}')
    fileio.move(fileio.join(directory, name), target)
    logging.warning('checkpoint %s is incomplete (no %s): moved to %s', fileio.join(directory, name),
                    COMMIT_FILE, target)
    moved.append(target)
  return moved


def silence_closed_loop_noise() -> None:
  """Drops the reports that the TensorStore reads of a failed restore leave behind: 'Event
  loop is closed' and 'error while reading array index' tracebacks of their threads and
  coroutines (through sys.unraisablehook) and asyncio's 'Task/Future/_GatheringFuture
  exception was never retrieved' log records (one traceback per array). They would
  bury the one message lmjax gives. Every other report goes through as before."""
  std_logging.getLogger('asyncio').addFilter(_drop_unretrieved_task_errors)
  previous = sys.unraisablehook
  if getattr(previous, 'lmjax_filter', False):
    return

  def hook(unraisable):
    message = str(unraisable.exc_value)
    if ((unraisable.exc_type is RuntimeError and message == 'Event loop is closed')
        or message.startswith('Encountered error while reading array index')):
      return  # the failed reads of a restore that lmjax reports itself
    previous(unraisable)

  hook.lmjax_filter = True
  sys.unraisablehook = hook


def _drop_unretrieved_task_errors(record) -> bool:
  # asyncio names the class: 'Task', 'Future' or '_GatheringFuture exception was never retrieved'.
  first_line = str(record.msg).split('\n', 1)[0]
  return not first_line.endswith('exception was never retrieved')


class Checkpointer:
  """Saves and restores TrainState + JSON metadata.

  Attributes:
    last: manager of the periodic checkpoints (keeps `keep` newest).
    best: manager holding the best checkpoint by the chosen eval metric.
  """

  def __init__(self, workdir: str, keep: int, async_save: bool = True):
    """Args: workdir: run directory; keep: how many periodic checkpoints to keep;
    async_save: let Orbax write in the background."""
    # Orbax needs absolute paths (or URLs); users pass relative --workdir values.
    self.directory = fileio.join(fileio.resolve(workdir), 'checkpoints')
    if jax.process_index() == 0:
      for slot in ('last', 'best'):
        set_aside_incomplete(fileio.join(self.directory, slot))
    if jax.process_count() > 1:  # the others list the steps only once process 0 is done
      multihost_utils.sync_global_devices('lmjax_checkpoint_set_aside')
    self.last = _manager(fileio.join(self.directory, 'last'), keep, async_save)
    self.best = _manager(fileio.join(self.directory, 'best'), 1, async_save)

  def save(self, state, meta: Dict[str, Any], best: bool = False) -> None:
    """Saves `state` at its step (in the best slot when `best`).

    Raises:
      guard.NonFiniteError: the parameters are not all finite (nothing is written).
      guard.WriteError: this or an earlier background save could not be written.
    """
    step = int(jax.device_get(state.step))
    manager = self.best if best else self.last
    if step in manager.all_steps():
      return
    if not bool(guard.tree_finite(state.params)):
      self.wait()
      raise guard.NonFiniteError(
          f'the parameters at step {step} are NaN/Inf (an update overflowed although its '
          f'gradients were finite): not saving them to {manager.directory}. Last good checkpoint: '
          f'{self.latest_path() or "none"}. ' + guard.LIKELY_CAUSES)
    with _WriteErrors(fileio.join(str(manager.directory), str(step))):
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)))

  def latest_path(self, which: str = 'last') -> Optional[str]:
    """Directory of the newest complete checkpoint of a slot, or None."""
    manager = self.best if which == 'best' else self.last
    step = manager.latest_step()
    return None if step is None else fileio.join(str(manager.directory), str(step))

  def latest_step(self, which: str = 'last') -> Optional[int]:
    return (self.best if which == 'best' else self.last).latest_step()

  def restore(self, abstract_state, step: Optional[int] = None,
              which: str = 'last') -> Tuple[Any, Dict[str, Any]]:
    """Restores a checkpoint into the shardings of `abstract_state`.

    Args:
      abstract_state: TrainState of jax.ShapeDtypeStruct with shardings.
      step: which step (default: latest).
      which: 'last' or 'best'.

    Returns:
      (state, meta).

    Raises:
      ValueError: nothing to restore, or an unreadable checkpoint (the message names
        its directory; nothing is deleted).
    """
    manager = self.best if which == 'best' else self.last
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
      raise ValueError(f'no checkpoint {step if step is not None else ""} in '
                       f'{manager.directory}; available: {list(manager.all_steps())}')
    silence_closed_loop_noise()  # a damaged checkpoint's reads fail from other threads
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax raises many types for damaged files.
      path = fileio.join(str(manager.directory), str(step))
      raise ValueError(
          f'checkpoint {path} is damaged or incompatible with this config and could not be '
          f'restored ({type(e).__name__}: {str(e)[:300]}). Nothing was deleted. Move that '
          'directory away to resume from the previous checkpoint, or use another --workdir.') from e
    return restored['state'], dict(restored['meta'])

  def restore_newest_good(self, abstract_state, fallback: bool) -> Tuple[Optional[int], Any, Dict]:
    """Restores the newest periodic checkpoint that restores.

    Args:
      abstract_state: restore target (see `restore`).
      fallback: when the newest cannot be restored but an older one can, move the newer
        ones to checkpoints/damaged/ and use the older; False: raise for the newest.

    Returns:
      (step, state, meta); (None, None, {}) when there is no checkpoint.

    Raises:
      ValueError: the newest checkpoint cannot be restored and (with fallback) neither can
        any older one, e.g. a config that changed the model (nothing is moved then).
    """
    steps = sorted(self.last.all_steps(), reverse=True)
    if not steps:
      return None, None, {}
    first_error = None
    for i, step in enumerate(steps):
      try:
        state, meta = self.restore(abstract_state, step)
      except ValueError as e:
        if not fallback:
          raise
        first_error = first_error or e
        continue
      for bad in steps[:i]:
        moved = self.set_aside_damaged(bad)
        logging.warning('checkpoint %d could not be restored: moved to %s', bad, moved)
        print(f'WARNING: checkpoint {bad} could not be restored; moved it to {moved} '
              f'(train.checkpoint_fallback) and resumed from step {step}. First error: '
              f'{first_error}', flush=True)
      return step, state, meta
    raise first_error

  def set_aside_damaged(self, step: int) -> str:
    """Moves checkpoints/last/<step> to checkpoints/damaged/ (nothing is deleted).

    Returns:
      The new path.
    """
    source = fileio.join(str(self.last.directory), str(step))
    target = fileio.join(self.directory, 'damaged', f'last-{step}-{int(time.time())}')
    if jax.process_index() == 0:
      fileio.makedirs(fileio.parent(target))
      fileio.move(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'lmjax_checkpoint_damaged_{step}')
    self.last.reload()
    return target

  def wait(self) -> None:
    """Blocks until background saves are done.

    Raises:
      guard.WriteError: a background save could not be written.
    """
    for manager in (self.last, self.best):
      with _WriteErrors(str(manager.directory)):
        manager.wait_until_finished()

  def close(self) -> None:
    """Waits for background saves and releases the managers (WriteError as `wait`)."""
    try:
      self.wait()
    finally:
      for manager in (self.last, self.best):
        try:
          manager.close()
        except Exception:  # pylint: disable=broad-except  (already reported by wait)
          pass


class _WriteErrors:
  """Turns an OSError from a (background) Orbax write into a guard.WriteError naming `path`."""

  def __init__(self, path: str):
    self.path = path

  def __enter__(self):
    return self

  def __exit__(self, kind, error, tb):
    os_error = None if error is None else guard.find_os_error(error)
    if os_error is not None:
      raise guard.write_error(os_error, self.path, 'checkpoint') from error
    return False


def abstract_like(state, shardings):
  """TrainState of ShapeDtypeStructs carrying `shardings` (restore target)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def complete_steps(workdir: str, which: str = 'last') -> List[int]:
  """Sorted steps of WORKDIR/checkpoints/WHICH that Orbax committed ([] when none)."""
  directory = fileio.join(fileio.resolve(workdir), 'checkpoints', which)
  if not fileio.isdir(directory):
    return []
  manager = ocp.CheckpointManager(directory, item_names=('state', 'meta'),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    incomplete = {int(n) for n in incomplete_steps(directory)}
    return sorted(s for s in manager.all_steps() if s not in incomplete)
  finally:
    manager.close()


def load_params(workdir: str, step: Optional[int] = None, which: str = 'last',
                prefer_ema: bool = False):
  """Reads the params of a checkpoint as host numpy arrays (no model or mesh needed).

  Args:
    workdir: run directory.
    step: checkpoint step (default: latest).
    which: 'last' or 'best'.
    prefer_ema: return the parameters' moving average when the run kept one.

  Returns:
    (params, step).
  """
  directory = fileio.join(fileio.resolve(workdir), 'checkpoints', which)
  step = max(complete_steps(workdir, which), default=None) if step is None else step
  if step is None:
    raise ValueError(f'no checkpoint in {directory}')
  manager = ocp.CheckpointManager(directory, item_names=('state', 'meta'),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  finally:
    manager.close()
  return (state.get('ema_params') if prefer_ema else None) or state['params'], step
