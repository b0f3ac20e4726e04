"""Binds models to the decoding algorithms in `lmjax.decoding.decode`."""

from typing import Any, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from lmjax.decoding import decode


def init_cache(model, params, encoded, inputs, batch_size: int, max_length: int,
               beam_size: int = 1) -> Any:
  """Zero-filled decode cache for `batch_size` rows, shaped by one traced step.

  Args:
    model: a module with `decode_step` (see lmjax/models/CONTRACT.md).
    params: model parameters.
    encoded: encoder output with leading batch axis `batch_size` (or None).
    inputs: (batch_size, S) source ids (or None).
    batch_size: rows N.
    max_length: decode length.
    beam_size: beams per sentence K (rows b*K + k), for beam search.

  Returns:
    The cache pytree (leaves with leading axis N, or B for `slot_*` leaves).
  """
  def one_step():
    _, variables = model.apply({'params': params}, encoded, inputs,
                               jnp.zeros((batch_size,), jnp.int32), jnp.zeros((), jnp.int32),
                               max_length=max_length, beam_size=beam_size,
                               method='decode_step', mutable=['cache', 'cross_cache'])
    return variables['cache']
  shapes = jax.eval_shape(one_step)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def precompute_cross(model, params, encoded, inputs, batch_size: int, max_length: int) -> Any:
  """The 'cross_cache' collection: per-layer encoder keys/values, projected once.

  Runs one prefill decode step with 'cross_cache' mutable and keeps only that
  collection (the step's logits are unused and compiled away under jit).

  Args:
    model: a module with `decode_step`.
    params: model parameters.
    encoded: encoder output (batch_size, S, D), or None.
    inputs: (batch_size, S) source ids, or None.
    batch_size: rows N.
    max_length: decode length.

  Returns:
    The collection (leaves (N, H, S, Dh)); {} for models without cross-attention caches.
  """
  _, variables = model.apply({'params': params}, encoded, inputs,
                             jnp.zeros((batch_size,), jnp.int32), jnp.zeros((), jnp.int32),
                             max_length=max_length, method='decode_step',
                             mutable=['cache', 'cross_cache'])
  return variables.get('cross_cache', {})


def make_step_fn(model, params, encoded, inputs, max_length: int,
                 cross_cache: Optional[Any] = None, beam_size: int = 1) -> decode.StepFn:
  """Step function (cache, token, position) -> (logits, cache) for `model`.

  Args:
    model, params, encoded, inputs, max_length, beam_size: as for `init_cache`.
    cross_cache: `precompute_cross` output for these rows; computed here when None.

  Returns:
    The step function; the cross-attention keys/values are constants of its closure.
  """
  if cross_cache is None and (inputs is not None or encoded is not None):
    rows = (inputs if inputs is not None else encoded).shape[0]
    cross_cache = precompute_cross(model, params, encoded, inputs, rows, max_length)
  constants = {'params': params}
  if cross_cache:
    constants['cross_cache'] = cross_cache

  def step_fn(cache, token, position):
    logits, variables = model.apply({**constants, 'cache': cache}, encoded, inputs, token,
                                    position, max_length=max_length, beam_size=beam_size,
                                    method='decode_step', mutable=['cache'])
    return logits, variables['cache']
  return step_fn


def repeat_batch(tree: Any, n: int) -> Any:
  """Repeats every leaf n times along its leading axis (b → b*n + i)."""
  return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), tree)


def greedy_decode(model, params, inputs: jnp.ndarray, max_length: int, eos_id: int = 1,
                  banned_ids: Sequence[int] = ()) -> jnp.ndarray:
  """Greedy-decodes a batch of sources (encdec) or continues from BOS (decoder).

  Args:
    model: encdec or decoder model.
    params: model parameters.
    inputs: (B, S) int32 source ids; for decoder-only models only B is used.
    max_length: tokens to produce.
    eos_id: end-of-sequence id.
    banned_ids: ids never chosen (see `decode.greedy`).

  Returns:
    (B, max_length) int32 ids, 0 after EOS.
  """
  batch_size = inputs.shape[0]
  encoded = model.apply({'params': params}, inputs, method='encode')
  cache = init_cache(model, params, encoded, inputs, batch_size, max_length)
  step_fn = make_step_fn(model, params, encoded, inputs, max_length)
  return decode.greedy(step_fn, cache, batch_size, max_length, eos_id, banned_ids)


def beam_decode(model, params, inputs: jnp.ndarray, beam_size: int, max_length: int, *,
                alpha: float, eos_id: int = 1, max_len_a: float = 0.0,
                max_len_b: Optional[int] = None,
                banned_ids: Sequence[int] = ()) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Beam-search decodes a batch of sources (encdec) or continues from BOS (decoder).

  The encoder runs once per sentence; its output and the inputs are repeated K times
  (rows b*K + k) for the decoder.

  Args:
    model: encdec or decoder model.
    params: model parameters.
    inputs: (B, S) int32 source ids (0 = pad); for decoder-only models only B is used.
    beam_size: beam width K.
    max_length: output length L (static), EOS included.
    alpha: GNMT length-penalty exponent.
    eos_id: end-of-sequence id.
    max_len_a: per-sentence limit max_len_a * src_len + max_len_b tokens before EOS,
      src_len = number of non-pad source tokens (fairseq's --max-len-a/--max-len-b).
    max_len_b: see max_len_a; with max_len_a = 0 and max_len_b None only L limits.
    banned_ids: ids never chosen (see `decode.beam_search`).

  Returns:
    sequences: (B, K, L) int32 n-best hypotheses, best first, 0 after EOS.
    scores: (B, K) float32 length-normalised log-probabilities, descending.
  """
  batch_size = inputs.shape[0]
  encoded = model.apply({'params': params}, inputs, method='encode')
  # One copy per sentence: attention folds the K beams into its query axis.
  cross_cache = precompute_cross(model, params, encoded, inputs, batch_size, max_length)
  encoded, rep_inputs = repeat_batch((encoded, inputs), beam_size)
  cache = init_cache(model, params, encoded, rep_inputs, batch_size * beam_size, max_length,
                     beam_size)
  step_fn = make_step_fn(model, params, encoded, rep_inputs, max_length, cross_cache, beam_size)
  max_lengths = None
  if max_len_a != 0.0 or max_len_b is not None:
    src_len = jnp.sum(inputs > 0, axis=1).astype(jnp.float32)  # (B,)
    max_lengths = jnp.floor(max_len_a * src_len + (max_len_b or 0)).astype(jnp.int32)
  return decode.beam_search(step_fn, cache, batch_size, beam_size, max_length, eos_id=eos_id,
                            alpha=alpha, max_lengths=max_lengths, banned_ids=banned_ids)


def sample_decode(model, params, inputs: jnp.ndarray, rng: jax.Array, max_length: int, *,
                  temperature: float, top_k: int, top_p: float,
                  prefix: Optional[jnp.ndarray] = None, eos_id: int = 1,
                  banned_ids: Sequence[int] = ()) -> jnp.ndarray:
  """Samples one output per source (encdec) or per row (decoder, optionally from `prefix`).

  Args:
    model: encdec or decoder model.
    params: model parameters.
    inputs: (B, S) int32 source ids; for decoder-only models only B is used.
    rng: PRNG key.
    max_length: tokens to produce L.
    temperature: softmax temperature (0 = greedy).
    top_k: keep the k most likely tokens (0 = all).
    top_p: nucleus mass (1 = all).
    prefix: optional (B, P) int32 forced first tokens (0 = not forced), e.g. a prompt.
    eos_id: end-of-sequence id.
    banned_ids: ids never chosen (see `decode.sample`).

  Returns:
    (B, L) int32 ids (prefix included), 0 after EOS.
  """
  batch_size = inputs.shape[0]
  encoded = model.apply({'params': params}, inputs, method='encode')
  cache = init_cache(model, params, encoded, inputs, batch_size, max_length)
  step_fn = make_step_fn(model, params, encoded, inputs, max_length)
  return decode.sample(step_fn, cache, rng, batch_size, max_length, eos_id=eos_id,
                       temperature=temperature, top_k=top_k, top_p=top_p, prefix=prefix,
                       banned_ids=banned_ids)
