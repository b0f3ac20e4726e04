"""Multi-head scaled dot-product attention with an incremental-decoding cache.

Full-sequence attention runs the implementation `config.model.attention_impl` names
(this file's einsum-softmax 'reference', or a fused kernel of attention_impls.py). The
cached one-token decoding steps (`decode='self'` / `'cross'`: beam search, greedy,
sampling) always run `cached_attention` here: one query row per step, over caches laid
out for it, where a flash kernel has nothing to fuse.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import platforms
from lmjax.models import attention_impls
from lmjax.models import dropout_mask
from lmjax.models import layers


Dtype = Any


def masked_softmax(logits, mask, dtype):
  """Softmax over the last axis (in float32, for stability under bf16) where `mask` is True."""
  if mask is not None:
    logits = jnp.where(mask, logits, layers.NEG_INF)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)


def dot_product_attention(q, k, v, mask, dropout_rng, dropout_rate, deterministic, dtype,
                          bias=None, scale: bool = True):
  """Scaled dot-product attention.

  Args:
    q: (B, Lq, H, D) queries.
    k: (B, Lk, H, D) keys.
    v: values, shaped like k.
    mask: (B, 1|H, Lq, Lk) bool or None; False entries are not attended.
    dropout_rng: PRNG key for attention dropout (unused when deterministic).
    dropout_rate: probability of dropping an attention weight.
    deterministic: disables dropout.
    dtype: computation dtype.
    bias: (B|1, H|1, Lq, Lk) float32 added to the scores (T5's relative positions), or None.
    scale: divide the scores by sqrt(D) (False: T5, whose initialisation absorbs it).

  Returns:
    (B, Lq, H, D) attended values.
  """
  if scale:
    q = q * (q.shape[-1] ** -0.5)
  scores = with_bias(jnp.einsum('bqhd,bkhd->bhqk', q, k), bias)
  weights = masked_softmax(scores, mask, dtype)  # (B, H, Lq, Lk)
  if not deterministic and dropout_rate > 0.0:
    keep = dropout_mask.keep_mask(dropout_rng, weights.shape, dropout_rate)
    weights = jnp.where(keep, weights * (1.0 / (1.0 - dropout_rate)), 0.0).astype(dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, v)


def with_bias(scores, bias):
  """Scores plus an additive bias (in float32), or the scores unchanged when bias is None."""
  return scores if bias is None else scores.astype(jnp.float32) + bias


def cached_attention(q, k_t, v, mask, dtype, bias=None, scale: bool = True):
  """Attention over decode caches, every operand batch-major (no layout changes).

  Args:
    q: (B, H, Q, D) queries.
    k_t: (B, H, D, M) keys, transposed.
    v: (B, H, M, D) values.
    mask: (B, 1|H, Q|1, M) bool or None; False entries are not attended.
    dtype: computation dtype.
    bias: (B|1, H, Q|1, M) float32 added to the scores, or None.
    scale: divide the scores by sqrt(D).

  Returns:
    (B, H, Q, D) attended values.
  """
  if scale:
    q = q * (q.shape[-1] ** -0.5)
  scores = with_bias(jnp.einsum('bhqd,bhdm->bhqm', q, k_t), bias)
  weights = masked_softmax(scores, mask, dtype)  # (B, H, Q, M)
  return jnp.einsum('bhqm,bhmd->bhqd', weights, v)


class MultiHeadAttention(nn.Module):
  """Multi-head attention (self or cross) with optional decode cache.

  Attributes:
    num_heads: number of heads H.
    qkv_dim: total width of queries/keys/values (H * head_dim).
    dropout_rate: attention-weight dropout.
    dtype: computation dtype.
    init: init style of the projections (see `layers.kernel_init`).
    residual_layers: depth of the stack the output projection writes into.
    use_bias: biases on the query, value and output projections (False: none, as nanoGPT
      and T5).
    matmul_dtype: of the projections (see `layers.matmul_fn`).
    attention_impl: of full-sequence attention, a value of
      `lmjax.platforms.ATTENTION_IMPLS` ('auto' resolved by `resolve_attention_impl`).
    scale_scores: divide the scores by sqrt(head_dim) (False: T5).
  """
  num_heads: int
  qkv_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  init: str = 'xavier'
  residual_layers: int = 0
  use_bias: bool = True
  matmul_dtype: str = ''
  attention_impl: str = 'reference'
  scale_scores: bool = True

  def _proj(self, name):
    head_dim = self.qkv_dim // self.num_heads
    # A key bias adds the same score to every key of a query, which softmax cancels:
    # its gradient is exactly zero and Adam would only amplify rounding noise.
    return nn.DenseGeneral(
        (self.num_heads, head_dim), dtype=self.dtype, name=name, use_bias=self.use_bias and name != 'key',
        dot_general=layers.matmul_fn(self.matmul_dtype),
        kernel_init=layers.dense_general_partitioning(layers.kernel_init(self.init),
                                                     ('embed', 'heads', 'kv')),
        bias_init=layers.dense_general_partitioning(nn.initializers.zeros, ('heads', 'kv')))

  @nn.compact
  def __call__(self, x_q: jnp.ndarray, x_kv: jnp.ndarray,
               mask: Optional[attention_impls.AttentionMask], *,
               deterministic: bool, decode: str = '', position=None,
               max_length: int = 0, beam_size: int = 1, bias=None) -> jnp.ndarray:
    """Attends from x_q to x_kv.

    Args:
      x_q: (B, Lq, D) queries' inputs.
      x_kv: (B, Lk, D) keys/values' inputs.
      mask: which keys each query sees (None: all), or for decode='self' None (built
        from `position`).
      deterministic: disables dropout.
      decode: '' (full sequence), 'self' (one new token, cached keys/values,
        needs `position` and `max_length`) or 'cross' (encoder keys/values projected
        once, when 'cross_cache' is mutable, and read from it afterwards).
      position: scalar int32 position of the new token when decoding.
      max_length: cache length for decode='self'.
      beam_size: beams per sentence K for decode='self' (rows b*K + k); the keys/values
        stay in their beam slot (see `_self_step`).
      bias: float32 added to the scores (T5's relative position bias), or None: (B|1, H,
        Lq, Lk) for full sequences, (B|1, H, 1, max_length) for decode='self'.

    Returns:
      (B, Lq, D) output.
    """
    features = x_q.shape[-1]
    q = self._proj('query')(x_q)  # (B, Lq, H, Dh)
    if decode == 'self':
      return self._out(self._self_step(q, x_kv, position, max_length, beam_size, bias),
                       features)
    if decode == 'cross':
      return self._out(self._cross_step(q, x_kv, mask), features)
    k = self._proj('key')(x_kv)  # (B, Lk, H, Dh)
    v = self._proj('value')(x_kv)
    q = nn.with_logical_constraint(
        q, ('activation_batch', 'activation_length', 'activation_heads', 'activation_kv'))
    dropout = not deterministic and self.dropout_rate > 0.0
    # The dtype q actually has (with matmul_dtype='bfloat16' the projections return float32
    # whatever config.model.dtype says): cuDNN takes 16-bit inputs only.
    impl = platforms.resolve_attention_impl(self.attention_impl, dtype=q.dtype.name,
                                            head_dim=q.shape[-1], dropout=dropout,
                                            bias=bias is not None)
    why = attention_impls.cudnn_unsupported(q.shape[1], k.shape[1], mask) if impl == 'cudnn' else ''
    if why and self.attention_impl != 'auto':
      raise ValueError(f"config.model.attention_impl='cudnn': {why}; use 'auto' or 'xla'")
    if why:
      impl = 'xla'  # what 'auto' falls back to on GPU
    if impl == 'reference':
      out = dot_product_attention(q, k, v, attention_impls.dense_or_none(mask),
                                  self.make_rng('dropout') if dropout else None, self.dropout_rate,
                                  deterministic, self.dtype, bias, self.scale_scores)  # (B, Lq, H, Dh)
    else:
      out = attention_impls.fused_attention(q, k, v, mask, impl, bias=bias,
                                            scale=self.scale_scores).astype(self.dtype)
    return self._out(out, features)

  def _self_step(self, q, x_kv, position, max_length: int, beam_size: int, bias=None):
    """Cached causal self-attention of one new token per row.

    Every row writes its key/value into its beam slot, where it stays: 'slot_key' and
    'slot_value' are never reordered by beam search (see lmjax/models/CONTRACT.md).
    'ancestry' (reordered like any other cache leaf) records, per row and position,
    which slot of its sentence holds that position. The K beams of a sentence are K
    queries against all its slots, masked to each row's own history, so a step reads
    the cache in place instead of copying every layer's cache to follow the beams.
    With K = 1 (greedy, sampling) the ancestry is just the written positions.

    Args:
      q: (N, 1, H, Dh) queries of N = B*K rows (b*K + k).
      x_kv: (N, 1, D) inputs of the new keys/values.
      position: scalar int32 position t of the new token.
      max_length: cache length L.
      beam_size: K.
      bias: (1, H, 1, L) float32 bias of the new token's position against every cache
        position, or None.

    Returns:
      (N, 1, H, Dh) attended values.
    """
    n, _, h, dh = q.shape
    if n % beam_size:
      raise ValueError(f'self-attention decode: {n} rows are not a multiple of beam_size={beam_size}')
    b, k_size = n // beam_size, beam_size
    # Entry t*K + k holds position t of slot k. Keys are stored transposed, (B, H, Dh, L*K),
    # so that scores are a plain batched (K, Dh) @ (Dh, L*K) matmul on CPU/GPU/TPU.
    kt = self.variable('cache', 'slot_key', jnp.zeros, (b, h, dh, max_length * k_size), self.dtype)
    v = self.variable('cache', 'slot_value', jnp.zeros, (b, h, max_length * k_size, dh), self.dtype)
    anc = self.variable('cache', 'ancestry', jnp.zeros, (n, max_length, k_size), jnp.bool_)
    by_sentence = lambda x: x.reshape(b, k_size, h, dh).transpose(0, 2, 1, 3)  # → (B, H, K, Dh)
    k_new = by_sentence(self._proj('key')(x_kv)).astype(self.dtype)
    v_new = by_sentence(self._proj('value')(x_kv)).astype(self.dtype)
    kt.value = jax.lax.dynamic_update_slice_in_dim(kt.value, k_new.transpose(0, 1, 3, 2),
                                                   position * k_size, axis=3)
    v.value = jax.lax.dynamic_update_slice_in_dim(v.value, v_new, position * k_size, axis=2)
    own = jax.nn.one_hot(jnp.arange(n) % k_size, k_size, dtype=jnp.bool_)  # (N, K)
    anc.value = jax.lax.dynamic_update_slice_in_dim(anc.value, own[:, None, :], position, axis=1)
    # Positions after t were never written: their ancestry is all False.
    mask = anc.value.reshape(b, 1, k_size, max_length * k_size)  # (B, 1, K, L*K)
    if bias is not None:  # entry t*K + k holds position t
      bias = jnp.repeat(bias, k_size, axis=-1)  # (1, H, 1, L*K)
    out = cached_attention(by_sentence(q), kt.value, v.value, mask, self.dtype, bias,
                           self.scale_scores)  # (B, H, K, Dh)
    return out.transpose(0, 2, 1, 3).reshape(n, 1, h, dh)

  def _cross_step(self, q, x_kv, mask):
    """Cross-attention of one new token per row to the encoder output.

    The encoder keys/values live in their own collection, 'cross_cache': computed by a
    prefill call that makes it mutable (lmjax.decoding.predict.precompute_cross), then only read,
    so the decode loop neither recomputes nor carries (nor beam-reorders) them. Beam
    search keeps one copy per sentence (B rows) for its N = B*K query rows (b*K + k):
    the K beams are folded into the query axis instead of repeating the keys/values.

    Args:
      q: (N, 1, H, Dh) queries.
      x_kv: (B', S, D) encoder output (B' = N, or B when prefilling for beam search).
      mask: source mask of the N rows (dense: (N, 1, 1, S)), equal within a sentence.

    Returns:
      (N, 1, H, Dh) attended values.
    """
    n, _, h, dh = q.shape
    kt = self.variable('cross_cache', 'cached_key', jnp.zeros, (x_kv.shape[0], h, dh, x_kv.shape[1]),
                       self.dtype)  # (B, H, Dh, S): transposed, as the self-attention keys
    v = self.variable('cross_cache', 'cached_value', jnp.zeros, (x_kv.shape[0], h, x_kv.shape[1], dh),
                      self.dtype)
    if self.is_mutable_collection('cross_cache'):
      kt.value = self._proj('key')(x_kv).transpose(0, 2, 3, 1).astype(self.dtype)
      v.value = self._proj('value')(x_kv).transpose(0, 2, 1, 3).astype(self.dtype)
    b = kt.value.shape[0]
    if n % b:
      raise ValueError(f'cross-attention: {n} query rows are not a multiple of the {b} rows '
                       'in the cross_cache')
    k_size = n // b
    q = q.reshape(b, k_size, h, dh).transpose(0, 2, 1, 3)  # (B, H, K, Dh)
    mask = attention_impls.dense_or_none(mask)
    if mask is not None:
      mask = mask.reshape((b, k_size) + mask.shape[1:])[:, 0]  # (B, 1, 1, S)
    out = cached_attention(q, kt.value, v.value, mask, self.dtype,
                           scale=self.scale_scores)  # (B, H, K, Dh)
    return out.transpose(0, 2, 1, 3).reshape(n, 1, h, dh)

  def _out(self, out, features):
    """Output projection (B, Lq, H, Dh) → (B, Lq, features)."""
    return nn.DenseGeneral(
        features, axis=(-2, -1), dtype=self.dtype, name='out', use_bias=self.use_bias,
        dot_general=layers.matmul_fn(self.matmul_dtype),
        kernel_init=layers.dense_general_partitioning(
            layers.kernel_init(self.init, self.residual_layers), ('heads', 'kv', 'embed')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)))(out)
