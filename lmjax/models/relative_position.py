"""T5's relative position bias (Raffel et al., 2020): one learned scalar per head and
distance bucket, added to the attention scores.

Distances are bucketed as T5 and Hugging Face's `T5Attention._relative_position_bucket`
do: half the buckets hold exact small distances, the other half distances growing
logarithmically up to `max_distance`, beyond which everything shares the last bucket.
A bidirectional bias (the encoder) gives each direction half of the buckets; a causal
one (the decoder) sees only keys at or before the query. The bias is computed once per
stack (by the Encoder or Decoder) and shared by every layer's self-attention.
"""

import math

import flax.linen as nn
import jax.numpy as jnp


def relative_position_bucket(relative_position, *, bidirectional: bool, num_buckets: int,
                             max_distance: int):
  """Bucket ids of key position minus query position.

  Args:
    relative_position: int array of (key position - query position).
    bidirectional: keys after the query get their own buckets (encoder); else only
      keys at or before the query are told apart (decoder).
    num_buckets: buckets in all.
    max_distance: distances from here on share the last bucket.

  Returns:
    int32 array of bucket ids in [0, num_buckets), shaped like `relative_position`.
  """
  buckets = jnp.zeros_like(relative_position, dtype=jnp.int32)
  if bidirectional:
    num_buckets //= 2
    buckets += (relative_position > 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  # log(0) at distance 0 is discarded by the `where` below; clamp to keep it finite.
  log_ratio = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
               / math.log(max_distance / max_exact))
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(distance < max_exact, distance, large).astype(jnp.int32)


class RelativePositionBias(nn.Module):
  """Additive attention bias (B|1, H, Lq, Lk) from query and key positions.

  Attributes:
    num_heads: H.
    num_buckets: distance buckets (T5: 32).
    max_distance: the distance where bucketing saturates (T5: 128).
    bidirectional: encoder (True) or causal decoder (False) bucketing.
    init_std: of the table's normal initialisation (T5: d_model^-0.5).
  """
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  bidirectional: bool = True
  init_std: float = 1.0

  @nn.compact
  def __call__(self, q_positions, k_positions):
    """Args: q_positions (B|1, Lq), k_positions (B|1, Lk) int32 positions (within each
    packed segment). Returns (B|1, H, Lq, Lk) float32 bias."""
    table = self.param('rel_embedding', nn.with_logical_partitioning(
        nn.initializers.normal(self.init_std), (None, 'heads')), (self.num_buckets, self.num_heads))
    relative = k_positions[:, None, :] - q_positions[:, :, None]  # (B, Lq, Lk)
    buckets = relative_position_bucket(relative, bidirectional=self.bidirectional,
                                       num_buckets=self.num_buckets,
                                       max_distance=self.max_distance)
    bias = jnp.take(table, buckets, axis=0)  # (B, Lq, Lk, H)
    return bias.transpose(0, 3, 1, 2).astype(jnp.float32)
