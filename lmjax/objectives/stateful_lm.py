"""Stateful truncated BPTT for the LSTM language model (`config.train.stateful=True`).

The LSTM state after one batch is the initial state of the next (Zaremba et al.,
2014): the data come as consecutive windows of B token streams
(`lmjax.data.lm_stream`), the state lives in the TrainState (`carry`), so it is
checkpointed with the parameters and a resumed run continues exactly, and it restarts
from zeros where the batch says `reset` (the first window of every epoch). The gradient
stops at the batch boundary (`apply_with_state` stops it); a step that is not applied
(non-finite) leaves the next batch to start from zeros, as after a reset.
"""

from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.data import lm_stream
from lmjax.objectives import cross_entropy


@flax.struct.dataclass
class StatefulTrainState:
  """The trainer's TrainState fields plus the LSTM state carried between batches.

  Attributes:
    carry: `LSTMLanguageModel.zero_state(B)`-shaped pytree: {'c', 'h': (B, L, H),
      'token': (B,)}, every leaf batch-leading (sharded like the batch).
  """
  step: Any
  params: Any
  opt_state: Any
  rng: Any
  ema_params: Any = None
  carry: Any = None

  @property
  def eval_params(self):
    """The parameters to evaluate: the moving average when kept, else `params`."""
    return self.params if self.ema_params is None else self.ema_params


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
  if config.train.grad_accum_steps != 1:
    problems.append(f'config.train.grad_accum_steps={config.train.grad_accum_steps}: each '
                    'batch continues the previous one, so it cannot be split; use 1')
  if problems:
    raise ValueError('config.train.stateful=True: ' + '; '.join(problems) +
                     ' (or set config.train.stateful=False)')


def reset_carry(carry, zero, reset: jnp.ndarray):
  """Rows with reset > 0 start from `zero`; the others keep `carry`. reset: (B,) int32."""
  def pick(z, c):
    r = reset.reshape(reset.shape + (1,) * (c.ndim - 1)) > 0
    return jnp.where(r, z, c)
  return jax.tree.map(pick, zero, carry)


class StatefulLM(cross_entropy.TokenCrossEntropy):
  """Token cross-entropy of an LSTM LM whose state flows from one batch to the next.

  Batches: {'targets': (B, T), 'reset': (B,)} consecutive windows of B streams.
  """

  def __init__(self, model, label_smoothing: float = 0.0):
    super().__init__(model, 'targets', label_smoothing)

  def forward(self, params, batch, *, train: bool, rngs=None, carry=None):
    carry = reset_carry(carry, self.model.zero_state(batch['targets'].shape[0]), batch['reset'])
    inputs = {k: v for k, v in batch.items() if k != 'reset'}
    return self.model.apply({'params': params}, inputs, carry, train=train, rngs=rngs,
                            method='apply_with_state')

  def loss_and_metrics(self, params, batch, args: Sequence[Any] = (), *, train: bool,
                       rngs=None, step=0, carry=None):
    if carry is None:
      raise ValueError('StatefulLM needs the carry of the previous batch (add_state)')
    return super().loss_and_metrics(params, batch, args, train=train, rngs=rngs, step=step,
                                    carry=carry)

  def add_state(self, state, shardings, batch_size: int, batch_sharding):
    """Adds a zero carry for `batch_size` rows, sharded over the batch axes."""
    zero = self.model.zero_state(batch_size)
    carry_shardings = jax.tree.map(lambda _: batch_sharding, zero)
    # One fresh buffer per leaf: zero_state may return the same array twice (c and h),
    # and the donated train step cannot take one buffer as two arguments.
    carry = jax.tree.map(lambda z, s: jax.device_put(np.zeros(z.shape, z.dtype), s),
                         zero, carry_shardings)
    fields = ('step', 'params', 'opt_state', 'rng', 'ema_params')
    return (StatefulTrainState(**{k: getattr(state, k) for k in fields}, carry=carry),
            StatefulTrainState(**{k: getattr(shardings, k) for k in fields},
                               carry=carry_shardings))

  def carry_in(self, state):
    return state.carry

  def carry_out(self, state, carry, ok):
    zero = self.model.zero_state(jax.tree.leaves(carry)[0].shape[0])
    return state.replace(carry=jax.tree.map(lambda c, z: jnp.where(ok, c, z), carry, zero))

  def eval_carry(self, batch_size: int, sharding):
    return jax.device_put(self.model.zero_state(batch_size), self.carry_sharding(sharding))

  def carry_sharding(self, batch_sharding):
    return jax.tree.map(lambda _: batch_sharding, self.model.zero_state(1))

  def train_iterator(self, task, batch_size: int, seed: int, process_index: int,
                     process_count: int):
    """The stream iterator over the training examples (concatenated, EOS-separated)."""
    return lm_stream.LMStreamIterator(lm_stream.concat_stream(task.train_examples), batch_size,
                                      task.lengths['targets'], seed, process_index,
                                      process_count)

  def eval_batches(self, task, batch_size: int, process_index: int, process_count: int):
    """The eval stream's windows (the state carries over from one to the next)."""
    return lm_stream.eval_stream_batches(lm_stream.concat_stream(task.eval_examples),
                                         batch_size, task.lengths['targets'], process_index,
                                         process_count)
