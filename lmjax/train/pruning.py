"""Gradual magnitude pruning (Zhu & Gupta, 2017) as an optax transformation.

Sparsity follows s(t) = s_f · (1 − (1 − (t − t0) / (t1 − t0))³) from t0 = begin_step to
t1 = end_step (0 before, s_f after); steps count as the trainer's do: the update that makes
step t (t = 1 for the first). At every pruning step t0, t0 + Δ, …, t1 (Δ =
update_every) each weight matrix (every parameter named 'kernel' or 'embedding': dense and
LSTM kernels, token embeddings; not biases, norms, positions or CRF transitions) gets a new mask that zeroes its round(s(t) · n) entries of smallest magnitude after that
step's update, ties broken by position. Between pruning steps a masked weight stays
exactly 0: its update is replaced by −w. The masks are optimizer state, so they are in
every checkpoint and a resumed run is identical to an uninterrupted one.

    tx = optax.chain(adamw, magnitude_pruning(0.8, begin_step=2000, end_step=6000,
                                              update_every=100))

References:
  Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
  compression", 2017 (arXiv:1710.01878).
"""

from typing import Any, Dict, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax


class PruningState(NamedTuple):
  """count: updates applied so far (int32; the next one makes step count + 1); masks: bool
  tree like the params (True = kept)."""
  count: jnp.ndarray
  masks: Any


PRUNED_NAMES = ('kernel', 'embedding')


def prunable(path) -> bool:
  """Whether the parameter at a tree path is pruned: named 'kernel' or 'embedding'."""
  names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
  return bool(names) and names[-1] in PRUNED_NAMES


def sparsity_at(step, sparsity: float, begin_step: int, end_step: int):
  """s(step) of the cubic schedule (works on Python numbers and on traced arrays).

  Args:
    step: the trainer step t (1 = the first update).
    sparsity: final sparsity s_f in [0, 1).
    begin_step: t0, the first pruning step (s = 0 there).
    end_step: t1 >= t0, the last (s = s_f from there on).

  Returns:
    The target sparsity at `step`.
  """
  span = max(end_step - begin_step, 1)
  frac = jnp.clip((step - begin_step) / span, 0.0, 1.0)
  return jnp.where(step >= begin_step, sparsity * (1.0 - (1.0 - frac) ** 3), 0.0)


def is_pruning_step(step, begin_step: int, end_step: int, update_every: int):
  """Whether the masks are recomputed at update `step`: t0, t0 + Δ, …, up to t1."""
  return (step >= begin_step) & (step <= end_step) & ((step - begin_step) % update_every == 0)


def pruned_count(sparsity, size: int):
  """Entries a mask zeroes at `sparsity` in a tensor of `size` entries: round(s · n)."""
  return jnp.round(sparsity * size).astype(jnp.int32)


def magnitude_mask(w: jnp.ndarray, sparsity) -> jnp.ndarray:
  """The mask (True = kept) that zeroes the round(s · n) smallest |w|, ties by position.

  Args:
    w: any shape, n entries.
    sparsity: scalar in [0, 1).

  Returns:
    bool array of w's shape with exactly `pruned_count(sparsity, n)` False entries.
  """
  flat = jnp.abs(w).reshape(-1)  # (n,)
  order = jnp.argsort(flat, stable=True)  # smallest first
  rank = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
  return (rank >= pruned_count(sparsity, flat.size)).reshape(w.shape)


def magnitude_pruning(sparsity: float, begin_step: int, end_step: int,
                      update_every: int) -> optax.GradientTransformation:
  """Gradual magnitude pruning; chain it after the optimizer (it needs `params`).

  Args:
    sparsity: final fraction of zeros of every matrix, in [0, 1).
    begin_step: first pruning step (trainer steps count from 1).
    end_step: last pruning step (>= begin_step; end - begin a multiple of update_every).
    update_every: steps between mask updates.

  Returns:
    A transformation whose updates keep masked weights at exactly 0.
  """

  def init_fn(params):
    # Initialised on boxed params (as the optimizer moments), the masks keep their names.
    return PruningState(count=jnp.zeros((), jnp.int32),
                        masks=jax.tree.map(lambda p: jnp.ones(jnp.shape(p), jnp.bool_), params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('magnitude_pruning needs the params: call update(updates, state, params)')
    step = state.count + 1  # the trainer step this update makes
    target = sparsity_at(step, sparsity, begin_step, end_step)

    def recompute(_):
      new = jax.tree.map(lambda p, u: p + u, params, updates)
      return jax.tree_util.tree_map_with_path(
          lambda path, w, m: magnitude_mask(w, target) if prunable(path) else m, new, state.masks)

    masks = jax.lax.cond(is_pruning_step(step, begin_step, end_step, update_every),
                         recompute, lambda _: state.masks, None)
    # p + (−p) is exactly 0: a masked weight is 0 after every update.
    updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p).astype(u.dtype),
                           updates, params, masks)
    return updates, PruningState(count=state.count + 1, masks=masks)

  return optax.GradientTransformation(init_fn, update_fn)


def from_config(tx: optax.GradientTransformation, cfg: Mapping,
                total_steps: int) -> optax.GradientTransformation:
  """`tx`, followed by `magnitude_pruning` when `config.train.pruning.sparsity` > 0.

  Args:
    tx: the optimizer.
    cfg: `config.train.pruning`: sparsity, begin_step, end_step (0 = total_steps),
      update_every.
    total_steps: config.train.num_train_steps.

  Returns:
    The (possibly) pruning optimizer.
  """
  if not cfg['sparsity']:
    return tx
  end = cfg['end_step'] or total_steps
  return optax.chain(tx, magnitude_pruning(cfg['sparsity'], cfg['begin_step'], end,
                                           cfg['update_every']))


def sparsity_stats(params) -> Dict[str, Optional[float]]:
  """Fractions of exact zeros a parameter tree holds.

  Returns:
    sparsity: zeros / entries over the prunable weights (`prunable`; None when there are
    none); sparsity_all: over every parameter.
  """
  zeros = size = zeros_all = size_all = 0
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    n, z = int(np.prod(np.shape(x))), int(np.sum(np.asarray(x) == 0))
    zeros_all, size_all = zeros_all + z, size_all + n
    if prunable(path):
      zeros, size = zeros + z, size + n
  return {'sparsity': zeros / size if size else None,
          'sparsity_all': zeros_all / size_all if size_all else None}
