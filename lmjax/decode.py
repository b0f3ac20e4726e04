"""Decoding algorithms over a model-agnostic step function.

A step function has the signature

    step_fn(cache, token, position) -> (logits, cache)

with `token` (N,) int32 the previous token (0 = BOS at position 0), `position` a
scalar int32 and `logits` (N, V) float32. `cache` is any pytree whose leaves have
the batch N as leading axis. `lmjax.predict` builds step functions from models.
"""

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp

StepFn = Callable[[Any, jnp.ndarray, jnp.ndarray], Tuple[jnp.ndarray, Any]]


def greedy(step_fn: StepFn, cache: Any, batch_size: int, max_length: int,
           eos_id: int = 1) -> jnp.ndarray:
  """Greedy decoding with per-sentence early finishing.

  Args:
    step_fn: see module docstring.
    cache: initial cache for `batch_size` rows.
    batch_size: number of rows B.
    max_length: number of tokens to produce L (static).
    eos_id: end-of-sequence id; tokens after it are 0 (padding).

  Returns:
    (B, L) int32 decoded ids, EOS included, padded with 0 after EOS.
  """

  def body(carry, position):
    cache, token, done = carry
    logits, cache = step_fn(cache, token, position)  # (B, V)
    nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    nxt = jnp.where(done, 0, nxt)
    done = done | (nxt == eos_id)
    return (cache, nxt, done), nxt

  init = (cache, jnp.zeros((batch_size,), jnp.int32), jnp.zeros((batch_size,), bool))
  _, tokens = jax.lax.scan(body, init, jnp.arange(max_length))
  return tokens.T  # (B, L)
