"""Binds models to the decoding algorithms in `lmjax.decode`."""

from typing import Any, Tuple

import jax
import jax.numpy as jnp

from lmjax import decode


def init_cache(model, params, encoded, inputs, batch_size: int, max_length: int) -> Any:
  """Zero-filled decode cache for `batch_size` rows, shaped by one traced step.

  Args:
    model: a module with `decode_step` (see lmjax/models/CONTRACT.md).
    params: model parameters.
    encoded: encoder output with leading batch axis `batch_size` (or None).
    inputs: (batch_size, S) source ids (or None).
    batch_size: rows N.
    max_length: decode length.

  Returns:
    The cache pytree (leaves with leading axis N).
  """
  def one_step():
    _, variables = model.apply({'params': params}, encoded, inputs,
                               jnp.zeros((batch_size,), jnp.int32), jnp.zeros((), jnp.int32),
                               max_length=max_length, method='decode_step', mutable=['cache'])
    return variables['cache']
  shapes = jax.eval_shape(one_step)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def make_step_fn(model, params, encoded, inputs, max_length: int) -> decode.StepFn:
  """Step function (cache, token, position) -> (logits, cache) for `model`."""
  def step_fn(cache, token, position):
    logits, variables = model.apply({'params': params, 'cache': cache}, encoded, inputs, token,
                                    position, max_length=max_length, method='decode_step',
                                    mutable=['cache'])
    return logits, variables['cache']
  return step_fn


def repeat_batch(tree: Any, n: int) -> Any:
  """Repeats every leaf n times along its leading axis (b → b*n + i)."""
  return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), tree)


def greedy_decode(model, params, inputs: jnp.ndarray, max_length: int, eos_id: int = 1) -> jnp.ndarray:
  """Greedy-decodes a batch of sources (encdec) or continues from BOS (decoder).

  Args:
    model: encdec or decoder model.
    params: model parameters.
    inputs: (B, S) int32 source ids; for decoder-only models only B is used.
    max_length: tokens to produce.
    eos_id: end-of-sequence id.

  Returns:
    (B, max_length) int32 ids, 0 after EOS.
  """
  batch_size = inputs.shape[0]
  encoded = model.apply({'params': params}, inputs, method='encode')
  cache = init_cache(model, params, encoded, inputs, batch_size, max_length)
  step_fn = make_step_fn(model, params, encoded, inputs, max_length)
  return decode.greedy(step_fn, cache, batch_size, max_length, eos_id)
