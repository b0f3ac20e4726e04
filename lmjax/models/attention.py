"""Multi-head scaled dot-product attention with an incremental-decoding cache."""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


Dtype = Any


def dot_product_attention(q, k, v, mask, dropout_rng, dropout_rate, deterministic, dtype,
                          kv_heads_major: bool = False):
  """Scaled dot-product attention.

  Args:
    q: (B, Lq, H, D) queries.
    k: (B, Lk, H, D) keys, or (B, H, Lk, D) when `kv_heads_major`.
    v: values, shaped like k.
    mask: (B, 1|H, Lq, Lk) bool or None; False entries are not attended.
    dropout_rng: PRNG key for attention dropout (unused when deterministic).
    dropout_rate: probability of dropping an attention weight.
    deterministic: disables dropout.
    dtype: computation dtype.
    kv_heads_major: k/v are laid out (B, H, Lk, D), as in the decode caches: the batched
      matmuls then read them in place instead of transposing the whole cache every step.

  Returns:
    (B, Lq, H, D) attended values.
  """
  depth = q.shape[-1]
  q = q / jnp.sqrt(depth).astype(dtype)
  kv = 'bhkd' if kv_heads_major else 'bkhd'
  logits = jnp.einsum(f'bqhd,{kv}->bhqk', q, k)  # (B, H, Lq, Lk)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  # Softmax in float32 for stability under bf16.
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)
  if not deterministic and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0).astype(dtype)
  return jnp.einsum(f'bhqk,{kv}->bqhd', weights, v)


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
        needs `position` and `max_length`) or 'cross' (encoder keys/values projected
        once, when 'cross_cache' is mutable, and read from it afterwards).
      position: scalar int32 position of the new token when decoding.
      max_length: cache length for decode='self'.

    Returns:
      (B, Lq, D) output.
    """
    features = x_q.shape[-1]
    q = self._proj('query')(x_q)  # (B, Lq, H, Dh)
    heads_major = bool(decode)
    if decode == 'self':
      # Caches are (B, H, max_length, Dh): head-major, so attention reads them in place.
      k_new = self._proj('key')(x_kv).transpose(0, 2, 1, 3)  # (B, H, 1, Dh)
      v_new = self._proj('value')(x_kv).transpose(0, 2, 1, 3)
      shape = k_new.shape[:2] + (max_length,) + k_new.shape[3:]
      ck = self.variable('cache', 'cached_key', jnp.zeros, shape, k_new.dtype)
      cv = self.variable('cache', 'cached_value', jnp.zeros, shape, v_new.dtype)
      ck.value = jax.lax.dynamic_update_slice_in_dim(ck.value, k_new, position, axis=2)
      cv.value = jax.lax.dynamic_update_slice_in_dim(cv.value, v_new, position, axis=2)
      k, v = ck.value, cv.value  # (B, H, max_length, Dh)
      mask = (jnp.arange(max_length) <= position)[None, None, None, :]  # (1, 1, 1, max_length)
    elif decode == 'cross':
      # The encoder keys/values live in their own collection, 'cross_cache': computed by
      # a prefill call that makes it mutable (lmjax.predict.precompute_cross), then only
      # read, so the decode loop neither recomputes nor carries (nor beam-reorders) them.
      shape = (x_kv.shape[0], self.num_heads, x_kv.shape[1], self.qkv_dim // self.num_heads)
      ck = self.variable('cross_cache', 'cached_key', jnp.zeros, shape, self.dtype)
      cv = self.variable('cross_cache', 'cached_value', jnp.zeros, shape, self.dtype)
      if self.is_mutable_collection('cross_cache'):
        ck.value = self._proj('key')(x_kv).transpose(0, 2, 1, 3)  # (B, H, S, Dh)
        cv.value = self._proj('value')(x_kv).transpose(0, 2, 1, 3)
      k, v = ck.value, cv.value
      if k.shape[0] != q.shape[0]:
        # Beam search keeps one copy per sentence (B rows) for its B*K query rows
        # (b*K + k): fold the K beams into the query axis instead of repeating K/V.
        return self._out(self._folded_cross(q, k, v, mask), features)
    else:
      k = self._proj('key')(x_kv)  # (B, Lk, H, Dh)
      v = self._proj('value')(x_kv)
    q = nn.with_logical_constraint(q, ('batch', 'length', 'heads', 'kv'))
    dropout_rng = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng('dropout')
    out = dot_product_attention(q, k, v, mask, dropout_rng, self.dropout_rate,
                                deterministic, self.dtype, heads_major)  # (B, Lq, H, Dh)
    return self._out(out, features)

  def _folded_cross(self, q, k, v, mask):
    """Cross-attention of (B*K, Lq, H, Dh) queries to per-sentence (B, H, S, Dh) keys/values."""
    n, lq, h, dh = q.shape
    b = k.shape[0]
    if n % b:
      raise ValueError(f'cross-attention: {n} query rows are not a multiple of the {b} rows '
                       'in the cross_cache')
    q = q.reshape(b, (n // b) * lq, h, dh)  # (B, K*Lq, H, Dh)
    if mask is not None:  # (B*K, 1, Lq, S): equal within a sentence
      mask = mask.reshape((b, n // b) + mask.shape[1:])[:, 0]
      mask = jnp.tile(mask, (1, 1, n // b, 1))  # (B, 1, K*Lq, S)
    out = dot_product_attention(q, k, v, mask, None, 0.0, True, self.dtype, True)
    return out.reshape(n, lq, h, dh)

  def _out(self, out, features):
    """Output projection (B, Lq, H, Dh) → (B, Lq, features)."""
    return nn.DenseGeneral(
        features, axis=(-2, -1), dtype=self.dtype, name='out',
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ('heads', 'kv', 'embed')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)))(out)
