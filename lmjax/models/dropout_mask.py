"""Dropout keep masks hashed from element indices: fused, and independent of sharding."""

from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np


def _mix32(x: jnp.ndarray) -> jnp.ndarray:
  """lowbias32 integer hash (C. Wellons): a bijection of uint32 with strong avalanche."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _index_words(shape, coords) -> Tuple[jnp.ndarray, Optional[jnp.ndarray]]:
  """The hash inputs of `keep_mask`: the exact row-major index of elements, as uint32 words.

  An array of 2^32 or more elements has indices a uint32 cannot hold (and x64 is off), so
  its dimensions split into the longest suffix with fewer than 2^32 elements and the
  prefix before it; each part's row-major index is exact in uint32. Below 2^32 elements
  there is no prefix part and the word is the plain row-major index.

  Args:
    shape: the array's (static) shape.
    coords: one integer array per dimension of `shape`, broadcastable together: the
      coordinates of the elements (in `keep_mask`, the iotas of the whole array).

  Returns:
    (inner, outer) uint32 arrays of the broadcast shape of `coords`: the index within the
    suffix dimensions and the index within the prefix ones; outer is None when `shape`
    has fewer than 2^32 elements.

  Raises:
    ValueError: `coords` does not match `shape`, or the prefix alone has 2^32 or more
      elements.
  """
  shape = tuple(int(n) for n in shape)
  if len(coords) != len(shape):
    raise ValueError(f'{len(coords)} coordinate arrays for shape {shape}')
  split = 0
  if np.prod(shape, dtype=object) >= 2**32:
    split, inner_size = len(shape), 1
    while inner_size * shape[split - 1] < 2**32:
      split -= 1
      inner_size *= shape[split]

  def row_major(dims):
    index, stride = jnp.uint32(0), 1
    for dim in reversed(dims):
      index = index + jnp.asarray(coords[dim], jnp.uint32) * jnp.uint32(stride % 2**32)
      stride *= shape[dim]
    return index

  inner = row_major(range(split, len(shape)))
  if not split:
    return inner, None
  if np.prod(shape[:split], dtype=object) >= 2**32:
    raise ValueError(f'keep_mask supports shapes whose leading dimensions {shape[:split]} '
                     f'(before the last {len(shape) - split}) have < 2^32 elements; got {shape}')
  return inner, row_major(range(split))


def _keep_from_index(rng: jax.Array, words, rate: float) -> jnp.ndarray:
  """`keep_mask` of the elements whose `_index_words` are `words` = (inner, outer)."""
  # The key's own words are the seed: they are already threefry output (flax's make_rng
  # folds the module path in), and drawing bits from it would add a threefry loop per
  # dropout site to the compiled step (~15 % of base's compile time on CPU).
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  seeds = rng.reshape(-1)[-2:].astype(jnp.uint32)
  inner, outer = words
  bits = _mix32(_mix32(inner * jnp.uint32(0x9E3779B9) + seeds[0]) ^ seeds[1])
  if outer is not None:
    # Only for >= 2^32 elements, so smaller arrays keep the masks they always had.
    bits = _mix32(bits ^ _mix32(outer * jnp.uint32(0x85EBCA6B) + seeds[1]))
  return (bits >> 8) >= jnp.uint32(round(rate * 2**24))


def keep_mask(rng: jax.Array, shape, rate: float) -> jnp.ndarray:
  """Bernoulli(1 − rate) keep mask, hashed from each element's index and a random seed.

  `jax.random.bernoulli` runs threefry over a materialised array of random words,
  ~14 % of a small Transformer's CPU training step. Here the bits are a function of
  (seed, global element index) only, so XLA fuses them into the dropout's elementwise
  op, and they do not depend on how the array is sharded. The seed is the last two
  32-bit words of the key `rng`; `rate` is rounded to a multiple of 2^-24. Arrays of
  2^32 or more elements hash their index as two words (`_index_words`), so no two
  elements share a hash input.

  Args:
    rng: PRNG key.
    shape: mask shape.
    rate: drop probability in [0, 1).

  Returns:
    bool array of `shape`, True = keep.
  """
  coords = [jax.lax.broadcasted_iota(jnp.uint32, shape, dim) for dim in range(len(shape))]
  return _keep_from_index(rng, _index_words(shape, coords), rate)
