"""Orbax checkpoints: last K in WORKDIR/checkpoints/last, the best one in .../best.

A checkpoint step directory holds three items, everything an exact resume needs:

    state/   the TrainState (params, optimizer state, step, RNG): Orbax PyTree, sharded
    meta/    JSON bookkeeping every process agrees on (best metric, early-stopping counter)
    data/    process_<i>-of-<n>.json: each process's own data-pipeline position (Grain's
             layout: in pack mode every host packs its own examples)

One reader (`read_state`) restores any checkpoint onto the current mesh's shardings, or
as host numpy arrays, whatever topology wrote it: resume, warm start, the KD teacher and
the tools all go through it. Decisions about checkpoints are collective: every process
tries the same step and the newest step that every process can read wins
(`Checkpointer.restore_newest_good`), so a read error on one host never leaves hosts on
different steps or waiting for each other.

Crash safety: Orbax writes each step to `<step>.orbax-checkpoint-tmp`, writes
`commit_success.txt` and renames it when complete, so a save cut short (SIGKILL, full
disk) leaves only a tmp directory: never listed, removed at the next start, rewritten
if that step is saved again. A step directory without `commit_success.txt` (a delete
or copy cut short) is moved to WORKDIR/checkpoints/incomplete/ at start, never loaded.
A failed write raises `guard.WriteError` naming the path; parameters that are not
finite are never saved (`guard.NonFiniteError`).
"""

import dataclasses
import json
import logging as std_logging
import re
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
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


class DataStateHandler(ocp.CheckpointHandler):
  """Orbax handler of the `data` item: every process writes its own iterator state.

  The file layout is Grain's (`process_<i>-of-<n>.json`), so the positions of all
  processes are kept, and a resume with another process count can see all of them.
  """

  def save(self, directory: epath.Path, args: 'DataStateSave') -> None:
    """Writes this process's state (JSON) into the item directory."""
    name = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
    fileio.write_text(fileio.join(str(directory), name), json.dumps(args.state))

  def restore(self, directory: epath.Path, args: Any = None) -> List[Any]:
    """Returns every saving process's state, in process order."""
    del args
    return read_data_states(str(directory))

  def metadata(self, directory: epath.Path) -> None:
    del directory
    return None

  def finalize(self, directory: epath.Path) -> None:
    del directory

  def close(self) -> None:
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  """Args of `DataStateHandler.save`: `state`, this process's JSON-serializable position."""
  state: Any


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  """Args of `DataStateHandler.restore` (none)."""


_DATA_FILE = re.compile(r'process_(\d+)-of-(\d+)\.json$')


def read_data_states(item_dir: str) -> List[Any]:
  """The per-process data positions of a checkpoint's `data` item.

  Args:
    item_dir: STEP_DIR/data.

  Returns:
    One state per process of the run that wrote it, in process order.

  Raises:
    ValueError: files missing or of different process counts (names the directory).
  """
  found = {}
  for name in fileio.listdir(item_dir):
    m = _DATA_FILE.match(name)
    if m:
      found[(int(m.group(1)), int(m.group(2)))] = name
  counts = {n for _, n in found}
  if len(counts) != 1 or {i for i, _ in found} != set(range(next(iter(counts)))):
    raise ValueError(f'{item_dir}: expected one process_<i>-of-<n>.json per process of the run '
                     f'that wrote it, found {sorted(found.values())}')
  return [json.loads(fileio.read_text(fileio.join(item_dir, found[(i, n)])))
          for i, n in sorted(found)]


def _manager(directory: str, max_to_keep: int, async_save: bool) -> ocp.CheckpointManager:
  register_array_handler()
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=async_save,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(directory, options=options, item_names=('state', 'meta', 'data'))


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

  def save(self, state, meta: Dict[str, Any], data_state: Any = None, best: bool = False) -> None:
    """Saves `state` at its step (in the best slot when `best`).

    Args:
      state: the TrainState (global arrays).
      meta: JSON bookkeeping, the same on every process (written by the primary one).
      data_state: this process's data-pipeline position (JSON-serializable; every
        process writes its own).
      best: save into the best slot.

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
                                                 meta=ocp.args.JsonSave(meta),
                                                 data=DataStateSave(data_state)))

  def latest_path(self, which: str = 'last') -> Optional[str]:
    """Directory of the newest complete checkpoint of a slot, or None."""
    manager = self.best if which == 'best' else self.last
    step = manager.latest_step()
    return None if step is None else fileio.join(str(manager.directory), str(step))

  def latest_step(self, which: str = 'last') -> Optional[int]:
    return (self.best if which == 'best' else self.last).latest_step()

  def restore(self, abstract_state, step: Optional[int] = None,
              which: str = 'last') -> Tuple[Any, Dict[str, Any], List[Any]]:
    """Restores a checkpoint onto the shardings of `abstract_state` (this process only).

    Args:
      abstract_state: TrainState of jax.ShapeDtypeStruct with shardings.
      step: which step (default: latest).
      which: 'last' or 'best'.

    Returns:
      (state, meta, data_states): data_states holds one position per process of the
      run that saved it (see `read_data_states`).

    Raises:
      ValueError: nothing to restore, or an unreadable checkpoint (the message names
        its directory; nothing is deleted).
    """
    manager = self.best if which == 'best' else self.last
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
      raise ValueError(f'no checkpoint {step if step is not None else ""} in '
                       f'{manager.directory}; available: {list(manager.all_steps())}')
    path = fileio.join(str(manager.directory), str(step))
    try:
      state = read_state(path, abstract_state)
      meta = read_meta(path)
      data_dir = fileio.join(path, 'data')
      # Checkpoints written before the per-process `data` item kept one position in meta.
      data = (read_data_states(data_dir) if fileio.isdir(data_dir)
              else [meta.pop('data', None)] * jax.process_count())
    except Exception as e:  # Orbax raises many types for damaged files.
      raise ValueError(
          f'checkpoint {path} is damaged or incompatible with this config and could not be '
          f'restored ({type(e).__name__}: {str(e)[:300]}). Nothing was deleted. Move that '
          'directory away to resume from the previous checkpoint, or use another --workdir.') from e
    return state, meta, data

  def restore_newest_good(self, abstract_state,
                          fallback: bool) -> Tuple[Optional[int], Any, Dict, List[Any]]:
    """Restores the newest periodic checkpoint that every process can restore.

    A collective decision: all processes try the same step in the same order (process
    0's listing) and report whether it restored; the newest step that restored on every
    process wins. A read error on one process therefore never leaves processes on
    different steps, and never leaves one waiting for the others.

    Args:
      abstract_state: restore target (see `restore`).
      fallback: when the newest cannot be restored (on any process) but an older one
        can, move the newer ones to checkpoints/damaged/ and use the older; False: raise
        for the newest, on every process.

    Returns:
      (step, state, meta, data_states); (None, None, {}, []) when there is no checkpoint.

    Raises:
      ValueError: the newest checkpoint cannot be restored and (with fallback) neither can
        any older one, e.g. a config that changed the model (nothing is moved then).
    """
    steps = _agreed_steps(sorted(self.last.all_steps(), reverse=True))
    if not steps:
      return None, None, {}, []
    first_error = None
    for i, step in enumerate(steps):
      try:
        restored, error = self.restore(abstract_state, step), None
      except ValueError as e:
        restored, error = None, e
      failed = _failed_processes(error is not None)
      if failed:
        if error is None:  # read here, not on another process: the same decision everywhere
          error = ValueError(f'checkpoint {fileio.join(str(self.last.directory), str(step))} '
                             f'could not be restored on process(es) {failed} (see their '
                             'output); nothing was deleted. Move that directory away to '
                             'resume from the previous checkpoint.')
        if not fallback:
          raise error
        first_error = first_error or error
        continue
      for bad in steps[:i]:
        moved = self.set_aside_damaged(bad)
        logging.warning('checkpoint %d could not be restored: moved to %s', bad, moved)
        if jax.process_index() == 0:
          print(f'WARNING: checkpoint {bad} could not be restored; moved it to {moved} '
                f'(train.checkpoint_fallback) and resumed from step {step}. First error: '
                f'{first_error}', flush=True)
      return (step, *restored)
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


def read_meta(step_dir: str) -> Dict[str, Any]:
  """The `meta` JSON item of a checkpoint step directory ({} when it holds none)."""
  meta = ocp.JsonCheckpointHandler().restore(epath.Path(step_dir) / 'meta')
  return dict(meta or {})


def read_state(step_dir: str, target: Any = None, keys: Optional[Tuple[str, ...]] = None) -> Any:
  """The one checkpoint reader: a TrainState item onto any mesh, whatever topology saved it.

  Reads only this process's shards with no barrier, so a caller can decide collectively
  what to do when one process fails (see `Checkpointer.restore_newest_good`).

  Args:
    step_dir: WORKDIR/checkpoints/<slot>/<step>.
    target: a tree of jax.ShapeDtypeStruct with shardings (e.g. `abstract_like`): the
      arrays are restored onto those shardings, from a checkpoint written on any number of
      devices or processes. None: host numpy arrays, with the tree structure of the
      checkpoint's own metadata (no model or mesh needed).
    keys: with target None, read only these top-level entries (e.g. ('params',)); entries
      the checkpoint lacks are left out.

  Returns:
    The restored tree (the structure of `target`, or nested dicts for None).
  """
  silence_closed_loop_noise()  # a damaged checkpoint's reads fail from other threads
  register_array_handler()
  path = epath.Path(step_dir) / 'state'
  handler = ocp.PyTreeCheckpointHandler()
  try:
    if target is not None:
      args = ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))
      return handler.restore(path, args=args)
    tree = handler.metadata(path).tree
    partial = keys is not None
    if partial:
      tree = {k: tree[k] for k in keys if tree.get(k) is not None}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return dict(handler.restore(path, args=ocp.args.PyTreeRestore(
        item=tree, restore_args=restore_args, partial_restore=partial)))
  finally:
    handler.close()


def load_params(workdir: str, step: Optional[int] = None, which: str = 'last',
                prefer_ema: bool = False):
  """Reads the params of a checkpoint as host numpy arrays (no model or mesh needed).

  Any saving topology (devices, processes) reads on any current one (`read_state`).

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
  state = read_state(fileio.join(directory, str(step)), keys=('params', 'ema_params'))
  return (state.get('ema_params') if prefer_ema else None) or state['params'], step


def _agreed_steps(steps: List[int]) -> List[int]:
  """Process 0's list of steps, on every process (one listing decides the order)."""
  if jax.process_count() == 1:
    return steps
  count = int(multihost_utils.broadcast_one_to_all(np.int32(len(steps))))
  padded = np.zeros(max(count, 1), np.int64)
  padded[:min(count, len(steps))] = steps[:count]
  return [int(s) for s in multihost_utils.broadcast_one_to_all(padded)[:count]]


def _failed_processes(failed_here: bool) -> List[int]:
  """Indices of the processes that report a failure (collective over all processes)."""
  if jax.process_count() == 1:
    return [0] if failed_here else []
  flags = multihost_utils.process_allgather(np.int32(failed_here))
  return [int(i) for i in np.flatnonzero(np.asarray(flags).reshape(-1))]
