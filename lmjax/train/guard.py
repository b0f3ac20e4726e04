"""What stops a run on purpose: non-finite training, failed writes.

The train step (`lmjax.train.step`) never applies an update whose loss or gradient
norm is NaN/Inf and returns `skipped` (1.0 for such a step). `NonFiniteGuard` counts
those steps on the host and stops the run after `config.train.max_nonfinite_steps`
consecutive ones (at the first with `config.train.nonfinite='stop'`). The checkpointer
refuses parameters that are not finite, so the last checkpoint is always a good one.
"""

from typing import Any, List, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp


class TrainingError(RuntimeError):
  """A run stopped for a reason the user can act on; the message names the step or path and the fix."""


class NonFiniteError(TrainingError):
  """The loss, the gradient norm or the parameters stopped being finite."""


class WriteError(TrainingError):
  """A file of the run (checkpoint, metrics) could not be written; earlier ones are intact."""


@jax.jit
def tree_finite(tree: Any) -> jnp.ndarray:
  """Whether every floating-point leaf of `tree` is finite (a bool scalar)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


LIKELY_CAUSES = (
    'Likely causes: a learning rate too high for this model (lower config.optimizer.learning_rate, '
    'lengthen config.optimizer.warmup_steps, or set config.optimizer.grad_clip_norm > 0); '
    "bfloat16 overflow (with config.model.dtype='bfloat16': try 'float32'); or a bad batch "
    '(token ids outside the vocabulary, corrupted data near this step). The run is deterministic: '
    'resuming with the same config reaches the same step again, so change one of these first.')


def nonfinite_message(step: int, run: int, config, last_checkpoint: Optional[str]) -> str:
  """The error text for a run stopped by non-finite steps.

  Args:
    step: the step at which the limit was reached.
    run: consecutive non-finite steps up to `step`.
    config: experiment config (train.nonfinite, train.max_nonfinite_steps).
    last_checkpoint: directory of the newest complete checkpoint, or None.

  Returns:
    A message naming the step, the policy, the last good checkpoint and the likely causes.
  """
  t = config.train
  policy = ("config.train.nonfinite='stop'" if t.nonfinite == 'stop' else
            f"config.train.nonfinite='skip', config.train.max_nonfinite_steps={t.max_nonfinite_steps}")
  where = (f'Last good checkpoint: {last_checkpoint} (rerunning the same command resumes there).'
           if last_checkpoint else 'No checkpoint was written before this step.')
  return (f'training stopped at step {step}: the loss or gradient norm was NaN/Inf for {run} '
          f'consecutive step(s) ({policy}); those updates were not applied. {where} ' + LIKELY_CAUSES)


class NonFiniteGuard:
  """Counts consecutive skipped (non-finite) steps on the host.

  Reading the step's `skipped` flag at once would make the host wait for every step;
  the flags are read one step late (the device already runs the next step), and all of
  them at log, eval and checkpoint boundaries, so the count saved with a checkpoint is exact.

  Attributes:
    run: consecutive skipped steps up to the last flag read (checkpointed, so a resumed
      run counts on).
  """

  def __init__(self, mode: str, max_steps: int, run: int = 0):
    """Args: mode: 'skip' or 'stop' (= stop at the first); max_steps: the limit with 'skip';
    run: consecutive skipped steps carried over from the checkpoint."""
    self.limit = 1 if mode == 'stop' else max_steps
    self.run = run
    self._pending: List[Tuple[int, Any]] = []

  def observe(self, step: int, skipped) -> None:
    """Queues the device flag of `step` (1.0 = the update was skipped)."""
    self._pending.append((step, skipped))

  def resolve(self, everything: bool) -> Optional[int]:
    """Reads queued flags (all of them, or all but the newest).

    Args:
      everything: read every flag (a boundary); otherwise leave the newest on the device.

    Returns:
      The step at which `run` reached the limit, or None.
    """
    while len(self._pending) > (0 if everything else 1):
      step, skipped = self._pending.pop(0)
      if float(skipped) > 0:
        self.run += 1
        logging.warning('step %d: loss or gradient norm not finite; update skipped (%d in a row)',
                        step, self.run)
        if self.run >= self.limit:
          self._pending.clear()
          return step
      else:
        self.run = 0
    return None


def find_os_error(error: BaseException) -> Optional[OSError]:
  """The OSError in `error`'s chain of causes (Orbax re-raises its writer thread's error), or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, OSError):
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


def write_error(error: OSError, path: str, what: str) -> WriteError:
  """A WriteError for a failed write of `what` under `path`, with the fix.

  Args:
    error: the OSError (its errno, message and file name are quoted).
    path: the file or directory being written.
    what: e.g. 'checkpoint', 'metrics file'.

  Returns:
    The error to raise (`raise write_error(e, ...) from e`).
  """
  reason = error.strerror or str(error)
  detail = f'{reason}' + (f', at {error.filename}' if error.filename and
                          str(error.filename) != str(path) else '')
  return WriteError(
      f'could not write the {what} {path} ({detail}). Free disk space or restore write '
      'permission there, then rerun the same command: it resumes from the last complete '
      'checkpoint (earlier checkpoints are intact; partial ones are ignored).')
