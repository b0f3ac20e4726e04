"""Orbax checkpoints: last K in WORKDIR/checkpoints/last, the best one in .../best.

A checkpoint holds the TrainState (params, optimizer state, step, RNG) and a JSON
item with the data-pipeline position and the loop's bookkeeping (best metric,
early-stopping counter), which is everything an exact resume needs. Orbax writes
each step to a temporary directory and renames it when complete, so a partial
save is never listed as a checkpoint.
"""

import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp


def _manager(directory: str, max_to_keep: int, async_save: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(directory, options=options, item_names=('state', 'meta'))


class Checkpointer:
  """Saves and restores TrainState + JSON metadata.

  Attributes:
    last: manager of the periodic checkpoints (keeps `keep` newest).
    best: manager holding the best checkpoint by the chosen eval metric.
  """

  def __init__(self, workdir: str, keep: int, async_save: bool = True):
    """Args: workdir: run directory; keep: how many periodic checkpoints to keep;
    async_save: let Orbax write in the background."""
    # Orbax needs absolute paths; users pass relative --workdir values.
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.last = _manager(os.path.join(self.directory, 'last'), keep, async_save)
    self.best = _manager(os.path.join(self.directory, 'best'), 1, async_save)

  def save(self, state, meta: Dict[str, Any], best: bool = False) -> None:
    """Saves `state` at its step (in the best slot when `best`)."""
    step = int(jax.device_get(state.step))
    manager = self.best if best else self.last
    if step in manager.all_steps():
      return
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)))

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
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax raises many types for damaged files.
      path = os.path.join(str(manager.directory), str(step))
      raise ValueError(
          f'checkpoint {path} is damaged or incompatible with this config and could not be '
          f'restored ({type(e).__name__}: {str(e)[:300]}). Nothing was deleted. Move that '
          'directory away to resume from the previous checkpoint, or use another --workdir.') from e
    return restored['state'], dict(restored['meta'])

  def wait(self) -> None:
    """Blocks until background saves are done."""
    self.last.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.last.close()
    self.best.close()


def abstract_like(state, shardings):
  """TrainState of ShapeDtypeStructs carrying `shardings` (restore target)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def load_params(workdir: str, step: Optional[int] = None, which: str = 'last'):
  """Reads the params of a checkpoint as host numpy arrays (no model or mesh needed).

  Args:
    workdir: run directory.
    step: checkpoint step (default: latest).
    which: 'last' or 'best'.

  Returns:
    (params, step).
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints', which)
  manager = ocp.CheckpointManager(directory, item_names=('state', 'meta'),
                                  options=ocp.CheckpointManagerOptions(create=False))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise ValueError(f'no checkpoint in {directory}')
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return restored['state']['params'], step
