"""Pure, top-level train and eval steps over any objective (`lmjax.objectives.base`).

Both steps return the objective's metric *sums* so metrics can be accumulated over
batches and hosts exactly; `Objective.summarize` turns them into means. What the loss
is, which batch fields it reads and what state flows from one batch to the next (an
LSTM LM's state under truncated BPTT) are the objective's business, not the steps'.
"""

import math
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from lmjax.train import state as state_lib
from lmjax.train.state import TrainState

Metrics = Dict[str, jnp.ndarray]


def _update(state: TrainState, grads, sums: Metrics, tx,
            ema_decay: float = 0.0) -> Tuple[TrainState, Metrics, jnp.ndarray]:
  """Applies the optimizer update only when the loss and the gradient norm are finite.

  With `state.ema_params` the moving average takes in each applied update's params
  (decay `state_lib.ema_decay_at(ema_decay, state.step)`); a skipped step leaves it
  as it is.

  A non-finite step keeps the params and optimizer state (so the learning-rate schedule
  does not advance either), zeroes its metric sums and reports `skipped` = 1; the step
  counter advances all the same, so it keeps counting batches and an exact resume holds.
  A `lax.cond`, not a select: a select reads and writes params and both Adam moments
  once more every step (2.5 % of a small Transformer's step on CPU).
  """
  grad_norm = optax.global_norm(grads)
  ok = jnp.isfinite(sums['loss']) & jnp.isfinite(grad_norm)

  keep_ema = state.ema_params is not None

  def apply(_):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = None
    if keep_ema:
      ema = state_lib.update_ema(state.ema_params, params,
                                 state_lib.ema_decay_at(ema_decay, state.step))
    return params, opt_state, ema

  params, opt_state, ema = jax.lax.cond(
      ok, apply, lambda _: (state.params, state.opt_state, state.ema_params), None)
  sums = {k: jnp.where(ok, v, jnp.zeros_like(v)) for k, v in sums.items()}
  sums['grad_norm'] = grad_norm
  sums['skipped'] = jnp.logical_not(ok).astype(jnp.float32)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       ema_params=ema), sums, ok


def split_micro_batches(batch, k: int, batch_sharding=None):
  """(B, ...) → (k, B/k, ...): micro-batch i holds rows i, i + k, i + 2k, … (a stride).

  The batch is sharded over the data-parallel devices in contiguous blocks of rows, so a
  stride gives every device B/(k·devices) rows of every micro-batch: each micro-step uses
  all devices and no rows move (MaxText's reshape to (B/k, k) and swap). A contiguous
  split would put micro-batch i on 1/k of the devices and make XLA move rows each step.

  Args:
    batch: global batch arrays (B, ...).
    k: micro-batches (B must be divisible by k).
    batch_sharding: the batch's NamedSharding; when given (and B/k divides over its
      devices), the stacked micro-batches are constrained to it on their second axis.
  """
  def split(x):
    y = x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)  # (k, B/k, ...)
    if batch_sharding is not None and (x.shape[0] // k) % devices == 0:
      spec = jax.sharding.PartitionSpec(None, *batch_sharding.spec)
      y = jax.lax.with_sharding_constraint(
          y, jax.sharding.NamedSharding(batch_sharding.mesh, spec))
    return y
  devices = 1
  if batch_sharding is not None:  # the devices the rows are split over
    rows = batch_sharding.spec[0] if batch_sharding.spec else None
    axes = rows if isinstance(rows, tuple) else (rows,)
    devices = math.prod(batch_sharding.mesh.shape[a] for a in axes if a)
  return jax.tree.map(split, batch)


def train_step(state: TrainState, batch, *args, objective, tx, grad_accum_steps: int = 1,
               ema_decay: float = 0.0, batch_sharding=None,
               grad_shardings=None) -> Tuple[TrainState, Metrics]:
  """One optimizer update on the global batch.

  The loss is the mean over the whole (global) batch's `loss_weight` (non-padding labels,
  or sentences for a CRF), so the gradient is the same on 1 device or N, and with
  `grad_accum_steps` micro-batches it equals the gradient of the whole batch.

  Args:
    state: current TrainState (donated by the caller's jit).
    batch: global batch.
    *args: the objective's `step_args()` arrays (e.g. a distillation teacher's params).
    objective: `lmjax.objectives.base.Objective` (static).
    tx: optimizer (static).
    grad_accum_steps: split the batch into this many micro-batches, run them one
      after the other and sum their gradients (static; 1 = off). Saves activation memory.
    ema_decay: decay of `state.ema_params` when the state keeps them (static).
    batch_sharding: the batch's sharding (static): micro-batches keep it.
    grad_shardings: the parameters' shardings (static): the accumulated gradient keeps
      them from one micro-step to the next.

  Returns:
    (new state, metric sums incl. 'grad_norm' and 'skipped'). A step whose loss or
    gradient norm is NaN/Inf is not applied (see `_update`).
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  carry = objective.carry_in(state)

  def sum_loss_fn(params, micro_batch, micro_rng):
    loss, sums, new_carry = objective.loss_and_metrics(
        params, micro_batch, args, train=True, rngs={'dropout': micro_rng}, step=state.step,
        carry=carry)
    return loss, (sums, new_carry)

  if grad_accum_steps == 1:
    grad_sum, (sums, new_carry) = jax.grad(sum_loss_fn, has_aux=True)(state.params, batch, rng)
  else:
    k = grad_accum_steps
    micro = split_micro_batches(batch, k, batch_sharding)  # (k, B/k, ...)
    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        jax.grad(sum_loss_fn, has_aux=True), state.params, first, rng))

    def keep(grads):
      if grad_shardings is None:
        return grads
      return jax.lax.with_sharding_constraint(grads, grad_shardings)

    def body(acc, xs):
      i, micro_batch = xs
      grads, aux = jax.grad(sum_loss_fn, has_aux=True)(state.params, micro_batch,
                                                       jax.random.fold_in(rng, i))
      acc_grads, acc_aux = acc
      return (keep(jax.tree.map(jnp.add, acc_grads, grads)),
              jax.tree.map(jnp.add, acc_aux, aux)), None

    zeros = (keep(zeros[0]), zeros[1])

    (grad_sum, (sums, new_carry)), _ = jax.lax.scan(body, zeros, (jnp.arange(k), micro))
  grads = jax.tree.map(lambda g: g / jnp.maximum(sums['loss_weight'], 1.0), grad_sum)
  state, sums, ok = _update(state, grads, sums, tx, ema_decay)
  return objective.carry_out(state, new_carry, ok), sums


def eval_step(params, carry, batch, *, objective) -> Tuple[Metrics, Any]:
  """Loss and accuracy sums on one eval batch (no dropout, no smoothing).

  Args:
    params: parameters.
    carry: the objective's state after the previous eval batch (None when stateless).
    batch: global eval batch.
    objective: the objective (static).

  Returns:
    (metric sums, carry after this batch).
  """
  _, sums, carry = objective.loss_and_metrics(params, batch, train=False, carry=carry)
  return sums, carry
