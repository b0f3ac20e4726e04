"""Multi-head scaled dot-product attention with an incremental-decoding cache."""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


Dtype = Any


def dot_product_attention(q, k, v, mask, dropout_rng, dropout_rate, deterministic, dtype):
  """Scaled dot-product attention.

  Args:
    q: (B, Lq, H, D) queries.
    k: (B, Lk, H, D) keys.
    v: (B, Lk, H, D) values.
    mask: (B, 1|H, Lq, Lk) bool or None; False entries are not attended.
    dropout_rng: PRNG key for attention dropout (unused when deterministic).
    dropout_rate: probability of dropping an attention weight.
    deterministic: disables dropout.
    dtype: computation dtype.

  Returns:
    (B, Lq, H, D) attended values.
  """
  depth = q.shape[-1]
  q = q / jnp.sqrt(depth).astype(dtype)
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k)  # (B, H, Lq, Lk)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  # Softmax in float32 for stability under bf16.
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)
  if not deterministic and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0).astype(dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, v)


class MultiHeadAttention(nn.Module):
  """Multi-head attention (self or cross) with optional decode cache.

  Attributes:
    num_heads: number of heads H.
    qkv_dim: total width of queries/keys/values (H * head_dim).
    dropout_rate: attention-weight dropout.
    dtype: computation dtype.
  """
  num_heads: int
  qkv_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  def _proj(self, name):
    head_dim = self.qkv_dim // self.num_heads
    # A key bias adds the same score to every key of a query, which softmax cancels:
    # its gradient is exactly zero and Adam would only amplify rounding noise.
    return nn.DenseGeneral(
        (self.num_heads, head_dim), dtype=self.dtype, name=name, use_bias=name != 'key',
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ('embed', 'heads', 'kv')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('heads', 'kv')))

  @nn.compact
  def __call__(self, x_q: jnp.ndarray, x_kv: jnp.ndarray, mask: Optional[jnp.ndarray], *,
               deterministic: bool, decode: str = '', position=None,
               max_length: int = 0) -> jnp.ndarray:
    """Attends from x_q to x_kv.

    Args:
      x_q: (B, Lq, D) queries' inputs.
      x_kv: (B, Lk, D) keys/values' inputs.
      mask: (B, 1, Lq, Lk) bool, or for decode='self' None (built from `position`).
      deterministic: disables dropout.
      decode: '' (full sequence), 'self' (one new token, cached keys/values,
        needs `position` and `max_length`) or 'cross' (encoder keys/values
        projected once at position 0 and cached).
      position: scalar int32 position of the new token when decoding.
      max_length: cache length for decode='self'.

    Returns:
      (B, Lq, D) output.
    """
    features = x_q.shape[-1]
    q = self._proj('query')(x_q)  # (B, Lq, H, Dh)
    if decode == 'self':
      k_new = self._proj('key')(x_kv)  # (B, 1, H, Dh)
      v_new = self._proj('value')(x_kv)
      ck = self.variable('cache', 'cached_key', jnp.zeros, (k_new.shape[0], max_length) + k_new.shape[2:], k_new.dtype)
      cv = self.variable('cache', 'cached_value', jnp.zeros, ck.value.shape, v_new.dtype)
      ck.value = jax.lax.dynamic_update_slice_in_dim(ck.value, k_new, position, axis=1)
      cv.value = jax.lax.dynamic_update_slice_in_dim(cv.value, v_new, position, axis=1)
      k, v = ck.value, cv.value  # (B, max_length, H, Dh)
      mask = (jnp.arange(max_length) <= position)[None, None, None, :]  # (1, 1, 1, max_length)
    elif decode == 'cross':
      key_proj, value_proj = self._proj('key'), self._proj('value')
      shape = x_kv.shape[:2] + (self.num_heads, self.qkv_dim // self.num_heads)
      ck = self.variable('cache', 'cached_key', jnp.zeros, shape, self.dtype)
      cv = self.variable('cache', 'cached_value', jnp.zeros, shape, self.dtype)
      if self.is_initializing() or self.is_mutable_collection('params'):
        k, v = key_proj(x_kv), value_proj(x_kv)
      else:
        k, v = jax.lax.cond(position == 0, lambda: (key_proj(x_kv), value_proj(x_kv)),
                            lambda: (ck.value, cv.value))
      ck.value, cv.value = k, v
    else:
      k = self._proj('key')(x_kv)  # (B, Lk, H, Dh)
      v = self._proj('value')(x_kv)
    q = nn.with_logical_constraint(q, ('batch', 'length', 'heads', 'kv'))
    dropout_rng = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng('dropout')
    out = dot_product_attention(q, k, v, mask, dropout_rng, self.dropout_rate,
                                deterministic, self.dtype)  # (B, Lq, H, Dh)
    return nn.DenseGeneral(
        features, axis=(-2, -1), dtype=self.dtype, name='out',
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ('heads', 'kv', 'embed')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)))(out)
