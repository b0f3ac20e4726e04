"""Stateful truncated BPTT for the LSTM language model (`config.train.stateful=True`).

The LSTM state after one batch is the initial state of the next (Zaremba et al.,
2014): the data come as consecutive windows of B token streams
(`lmjax.data.lm_stream`), the state lives in the TrainState (`carry`), so it is
checkpointed with the parameters and a resumed run continues exactly, and it restarts
from zeros where the batch says `reset` (the first window of every epoch).
"""

from typing import Any, Tuple

import flax.struct
import jax
import numpy as np
import jax.numpy as jnp

from lmjax.data import lm_stream
from lmjax.train.state import TrainState


@flax.struct.dataclass
class StatefulTrainState(TrainState):
  """TrainState plus the LSTM state carried between batches.

  Attributes:
    carry: `LSTMLanguageModel.zero_state(B)`-shaped pytree: {'c', 'h': (B, L, H),
      'token': (B,)}, every leaf batch-leading (sharded like the batch).
  """
  carry: Any = None


def check(config, task, model) -> None:
  """Raises a ValueError naming the fields when stateful training does not apply."""
  problems = []
  if task.kind != 'lm':
    problems.append(f"config.task.name={task.name!r} is a {task.kind!r} task; stateful "
                    "training needs a language-modelling ('lm') task")
  if not (hasattr(model, 'apply_with_state') and hasattr(model, 'zero_state')):
    problems.append(f'config.model.family/kind={config.model.family}/{config.model.kind} does '
                    'not carry a state between batches; use family=lstm, kind=decoder')
  if (task.batching or {}).get('mode', 'plain') != 'plain':
    problems.append(f"config.task.batching.mode={task.batching['mode']!r}: stateful training "
                    "batches the token stream itself; use 'plain'")
  if problems:
    raise ValueError('config.train.stateful=True: ' + '; '.join(problems) +
                     ' (or set config.train.stateful=False)')


def add_carry(state: TrainState, shardings: TrainState, model, batch_size: int,
              batch_sharding) -> Tuple[StatefulTrainState, StatefulTrainState]:
  """Adds a zero carry for `batch_size` rows, sharded over the batch axes.

  Returns:
    (state, shardings) as StatefulTrainState.
  """
  zero = model.zero_state(batch_size)
  carry_shardings = jax.tree.map(lambda _: batch_sharding, zero)
  # One fresh buffer per leaf: zero_state may return the same array twice (c and h),
  # and the donated train step cannot take one buffer as two arguments.
  carry = jax.tree.map(lambda z, s: jax.device_put(np.zeros(z.shape, z.dtype), s),
                       zero, carry_shardings)
  fields = {k: getattr(state, k) for k in ('step', 'params', 'opt_state', 'rng', 'ema_params')}
  shard_fields = {k: getattr(shardings, k) for k in fields}
  return (StatefulTrainState(**fields, carry=carry),
          StatefulTrainState(**shard_fields, carry=carry_shardings))


def train_iterator(task, config, process_index: int, process_count: int):
  """The stream iterator over the training examples (concatenated, EOS-separated)."""
  return lm_stream.LMStreamIterator(
      lm_stream.concat_stream(task.train_examples), config.train.batch_size,
      task.lengths['targets'], config.data_seed, process_index, process_count)


def zero_carry(model, batch_size: int, sharding) -> Any:
  """A zero state for `batch_size` rows placed with `sharding` (eval passes)."""
  zero = model.zero_state(batch_size)
  return jax.device_put(zero, jax.tree.map(lambda _: sharding, zero))


def eval_sums(eval_step, params, task, model, config, batch_sharding, to_global) -> Any:
  """One pass over the eval stream carrying the state; returns the summed metrics.

  Args:
    eval_step: jitted `step.stateful_eval_step` (params, carry, batch) -> (sums, carry).
    params: parameters.
    task: the LM task.
    model: the LSTM LM.
    config: experiment config (eval.batch_size).
    batch_sharding: sharding of batch arrays.
    to_global: host-local batch → global arrays.
  """
  carry = zero_carry(model, config.eval.batch_size, batch_sharding)
  sums = None
  for local in lm_stream.eval_stream_batches(
      lm_stream.concat_stream(task.eval_examples), config.eval.batch_size,
      task.lengths['targets'], jax.process_index(), jax.process_count()):
    m, carry = eval_step(params, carry, to_global(local, batch_sharding))
    sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
  return sums
