"""Decoding algorithms over a model-agnostic step function.

A step function has the signature

    step_fn(cache, token, position) -> (logits, cache)

with `token` (N,) int32 the previous token (0 = BOS at position 0), `position` a
scalar int32 and `logits` (N, V) float32. `cache` is any pytree whose leaves have
the batch N as leading axis. `lmjax.decoding.predict` builds step functions from models.
"""

from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

StepFn = Callable[[Any, jnp.ndarray, jnp.ndarray], Tuple[jnp.ndarray, Any]]


def ban(logits: jnp.ndarray, banned_ids: Sequence[int]) -> jnp.ndarray:
  """logits (..., V) with the columns `banned_ids` at -inf (unchanged when there are none)."""
  if not banned_ids:
    return logits
  return logits.at[..., jnp.asarray(tuple(banned_ids), jnp.int32)].set(-jnp.inf)


def greedy(step_fn: StepFn, cache: Any, batch_size: int, max_length: int,
           eos_id: int = 1, banned_ids: Sequence[int] = ()) -> jnp.ndarray:
  """Greedy decoding with per-sentence early finishing.

  Args:
    step_fn: see module docstring.
    cache: initial cache for `batch_size` rows.
    batch_size: number of rows B.
    max_length: number of tokens to produce L (static).
    eos_id: end-of-sequence id; tokens after it are 0 (padding).
    banned_ids: ids never chosen (e.g. copies of a row that an imported vocabulary
      needs at several lmjax ids, as GPT-2's <|endoftext|> at BOS, EOS and unknown).

  Returns:
    (B, L) int32 decoded ids, EOS included, padded with 0 after EOS.
  """

  def body(carry, position):
    cache, token, done = carry
    logits, cache = step_fn(cache, token, position)  # (B, V)
    nxt = jnp.argmax(ban(logits, banned_ids), axis=-1).astype(jnp.int32)
    nxt = jnp.where(done, 0, nxt)
    done = done | (nxt == eos_id)
    return (cache, nxt, done), nxt

  init = (cache, jnp.zeros((batch_size,), jnp.int32), jnp.zeros((batch_size,), bool))
  _, tokens = jax.lax.scan(body, init, jnp.arange(max_length))
  return tokens.T  # (B, L)


def length_penalty(length, alpha: float) -> jnp.ndarray:
  """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016).

  Args:
    length: hypothesis length(s), EOS included; int or array.
    alpha: strength; 0 disables normalisation, larger values favour longer outputs.

  Returns:
    float32 array of the shape of `length`.
  """
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _gather_beams(x: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
  """x (B, M, ...) and index (B, J) → (B, J, ...)."""
  index = index.reshape(index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)


def reorder_cache(cache: Any, rows: jnp.ndarray) -> Any:
  """Gathers every cache leaf's rows `rows` (N,), except leaves keyed `slot_*`.

  `slot_*` leaves are indexed by beam slot, not by hypothesis (see
  lmjax/models/CONTRACT.md): the model resolves each row's history itself.
  """
  def gather(path, x):
    key = path[-1]
    name = getattr(key, 'key', getattr(key, 'name', ''))
    if isinstance(name, str) and name.startswith('slot_'):
      return x
    return jnp.take(x, rows, axis=0, mode='clip')  # rows are in range
  return jax.tree_util.tree_map_with_path(gather, cache)


def beam_search(step_fn: StepFn, cache: Any, batch_size: int, beam_size: int, max_length: int,
                *, eos_id: int = 1, alpha: float = 0.6,
                max_lengths: Optional[jnp.ndarray] = None,
                banned_ids: Sequence[int] = ()) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Beam search with GNMT length penalty and per-sentence early finishing.

  At each step the K live hypotheses of a sentence are extended by every token and the
  top 2K of the K*V candidates are kept. Of those, candidates ending in EOS that rank
  among the top K leave the beam as finished hypotheses, scored
  log P / length_penalty(length, alpha) with the length counting EOS (so beam 1 with
  alpha=0 is greedy decoding); the best K other candidates stay live. Finished
  hypotheses are never extended. A sentence stops once its K-th best finished score is
  at least the best score any live hypothesis could still reach (its log-probability
  can only fall, divided by the largest penalty of the lengths left), so the whole
  n-best list is final; the loop (`lax.while_loop`) stops when every sentence has.
  Hypotheses that reach `max_length` tokens without EOS are finished as they are
  (truncated, no EOS).

  Args:
    step_fn: see module docstring.
    cache: initial cache with leading axis N = B*K ordered b*K + k (the rows of one
      sentence adjacent, e.g. `lmjax.decoding.predict.repeat_batch` of a per-sentence cache);
      leaves keyed `slot_*` stay in place (`reorder_cache`).
    batch_size: number of sentences B.
    beam_size: beam width K (also the size of the n-best list).
    max_length: output length L (static), EOS included.
    eos_id: end-of-sequence id.
    alpha: length-penalty exponent.
    max_lengths: optional (B,) int32: sentence b gets at most max_lengths[b] tokens
      before EOS, i.e. EOS is forced at position max_lengths[b] (fairseq's
      max_len_a * src_len + max_len_b). None: only `max_length` limits.
    banned_ids: ids never chosen (see `greedy`); the others keep the model's
      log-probabilities.

  Returns:
    sequences: (B, K, L) int32 n-best hypotheses, best first, 0 after EOS.
    scores: (B, K) float32 length-normalised log-probabilities, sorted descending;
      -inf (with an all-zero sequence) where fewer than K hypotheses exist.
  """
  b_size, k_size, l_size = batch_size, beam_size, max_length
  if k_size < 1 or l_size < 1:
    raise ValueError(f'beam_search needs beam_size >= 1 and max_length >= 1, '
                     f'got {beam_size} and {max_length}')
  neg_inf = jnp.array(-jnp.inf, jnp.float32)
  if max_lengths is None:
    limit = jnp.full((b_size,), l_size, jnp.int32)  # position L is never reached
  else:
    limit = jnp.clip(jnp.asarray(max_lengths, jnp.int32).reshape(b_size), 0, l_size)
  longest = jnp.minimum(limit + 1, l_size)  # (B,) longest possible hypothesis
  positions = jnp.arange(l_size)

  def cond(state):
    i, done = state[0], state[-1]
    return (i < l_size) & ~jnp.all(done)

  def body(state):
    i, cache, live_tok, live_seqs, live_logp, fin_seqs, fin_scores, done = state
    logits, cache = step_fn(cache, live_tok.reshape(b_size * k_size), i)  # (N, V)
    vocab = logits.shape[-1]
    logits = logits.astype(jnp.float32).reshape(b_size, k_size, vocab)  # (B, K, V)
    # log-probabilities only of the kept candidates: logit − logsumexp (no (B, K, V) log_softmax).
    lse = jax.nn.logsumexp(logits, axis=-1, keepdims=True)  # (B, K, 1)
    logits = ban(logits, banned_ids)
    forced = (i >= limit)[:, None, None] & (jnp.arange(vocab) != eos_id)
    logits = jnp.where(forced, neg_inf, logits)
    num = min(2 * k_size, k_size * vocab)
    # The top 2K of all K*V candidates are among each beam's own top 2K: two small top_k
    # instead of one over K*V (several times faster on CPU).
    row_logit, row_tok = jax.lax.top_k(logits, min(num, vocab))  # (B, K, C)
    row_logp = row_logit - lse
    cand = (live_logp[:, :, None] + row_logp).reshape(b_size, -1)  # (B, K*C)
    top_logp, top_idx = jax.lax.top_k(cand, num)  # (B, 2K)
    parent = top_idx // row_tok.shape[-1]
    tok = jnp.take_along_axis(row_tok.reshape(b_size, -1), top_idx, axis=1).astype(jnp.int32)
    seqs = _gather_beams(live_seqs, parent)  # (B, 2K, L)
    seqs = jnp.where(positions == i, tok[:, :, None], seqs)
    final = (tok == eos_id) | (i == l_size - 1)  # (B, 2K)

    # Finished: merge the final candidates among the top K with the old n-best.
    in_beam = jnp.arange(num) < k_size
    new_scores = jnp.where(final & in_beam, top_logp / length_penalty(i + 1, alpha), neg_inf)
    fin_scores, idx = jax.lax.top_k(jnp.concatenate([fin_scores, new_scores], 1), k_size)
    fin_seqs = _gather_beams(jnp.concatenate([fin_seqs, seqs], 1), idx)  # (B, K, L)

    # Live: the best K candidates that did not finish; reorder the cache to match.
    live_logp, idx = jax.lax.top_k(jnp.where(final, neg_inf, top_logp), k_size)  # (B, K)
    live_seqs = _gather_beams(seqs, idx)
    live_tok = _gather_beams(tok, idx)
    rows = (jnp.arange(b_size)[:, None] * k_size + _gather_beams(parent, idx)).reshape(-1)
    cache = reorder_cache(cache, rows)

    # log P only falls, and length_penalty is monotone in the length.
    max_penalty = jnp.maximum(length_penalty(i + 2, alpha), length_penalty(longest, alpha))
    bound = live_logp[:, 0] / max_penalty  # (B,)
    done = done | (fin_scores[:, -1] >= bound)
    live_logp = jnp.where(done[:, None], neg_inf, live_logp)
    return i + 1, cache, live_tok, live_seqs, live_logp, fin_seqs, fin_scores, done

  live_logp = jnp.where(jnp.arange(k_size) == 0, 0.0, neg_inf)  # identical beams: expand one
  state = (jnp.zeros((), jnp.int32), cache,
           jnp.zeros((b_size, k_size), jnp.int32),
           jnp.zeros((b_size, k_size, l_size), jnp.int32),
           jnp.broadcast_to(live_logp, (b_size, k_size)).astype(jnp.float32),
           jnp.zeros((b_size, k_size, l_size), jnp.int32),
           jnp.full((b_size, k_size), neg_inf),
           jnp.zeros((b_size,), bool))
  state = jax.lax.while_loop(cond, body, state)
  fin_seqs, fin_scores = state[5], state[6]
  fin_seqs = jnp.where(jnp.isfinite(fin_scores)[:, :, None], fin_seqs, 0)
  return fin_seqs, fin_scores


def _filter_logits(logits: jnp.ndarray, top_k: int, top_p: float):
  """Top-k then nucleus filtering. Returns (candidate logits (N, C), token ids (N, C) or None)."""
  ids = None
  if top_k > 0 or top_p < 1.0:
    k = min(top_k, logits.shape[-1]) if top_k > 0 else logits.shape[-1]
    logits, ids = jax.lax.top_k(logits, k)  # (N, C) sorted descending
  if top_p < 1.0:
    probs = jax.nn.softmax(logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of better candidates
    # The nucleus is the smallest prefix with mass >= top_p; the best token is always in it.
    keep = (before < top_p) | (jnp.arange(logits.shape[-1]) == 0)
    logits = jnp.where(keep, logits, -jnp.inf)
  return logits, ids


def sample(step_fn: StepFn, cache: Any, rng: jax.Array, batch_size: int, max_length: int, *,
           eos_id: int = 1, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           prefix: Optional[jnp.ndarray] = None, banned_ids: Sequence[int] = ()) -> jnp.ndarray:
  """Ancestral sampling with temperature, top-k and nucleus (top-p) filtering.

  Filters apply in the order temperature, top-k, top-p (as in Hugging Face
  `generate`); the nucleus is the smallest set of most likely tokens whose
  renormalised probability reaches `top_p`. Step t draws with `fold_in(rng, t)`.

  Args:
    step_fn: see module docstring.
    cache: initial cache for `batch_size` rows.
    rng: PRNG key; the same key gives the same samples.
    batch_size: number of rows B.
    max_length: number of tokens to produce L (static).
    eos_id: end-of-sequence id; tokens after it are 0.
    temperature: logits are divided by it; 0 means greedy (argmax).
    top_k: sample among the k most likely tokens only; 0 disables.
    top_p: nucleus mass in (0, 1]; 1 disables.
    prefix: optional (B, P) int32 forced start tokens, P <= L; 0 = not forced at that
      position (e.g. prompts of different lengths, right-padded). Forced tokens appear
      in the output.
    banned_ids: ids never chosen (forced prefix tokens may still be any id).

  Returns:
    (B, L) int32 ids, 0 after EOS.
  """
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f'sample needs 0 < top_p <= 1, got {top_p}')
  if temperature < 0 or top_k < 0:
    raise ValueError(f'sample needs temperature >= 0 and top_k >= 0, got {temperature}, {top_k}')
  if prefix is None:
    prefix = jnp.zeros((batch_size, 0), jnp.int32)
  if prefix.shape[1] > max_length:
    raise ValueError(f'prefix length {prefix.shape[1]} exceeds max_length {max_length}')
  forced_all = jnp.pad(jnp.asarray(prefix, jnp.int32),
                       ((0, 0), (0, max_length - prefix.shape[1]))).T  # (L, B)

  def body(carry, xs):
    cache, token, done = carry
    position, forced = xs
    logits, cache = step_fn(cache, token, position)  # (B, V)
    logits = ban(logits.astype(jnp.float32), banned_ids)
    if temperature == 0.0:
      nxt = jnp.argmax(logits, axis=-1)
    else:
      cand, ids = _filter_logits(logits / temperature, top_k, top_p)
      choice = jax.random.categorical(jax.random.fold_in(rng, position), cand, axis=-1)
      nxt = choice if ids is None else jnp.take_along_axis(ids, choice[:, None], 1)[:, 0]
    nxt = jnp.where(forced > 0, forced, nxt.astype(jnp.int32))
    nxt = jnp.where(done, 0, nxt)
    done = done | (nxt == eos_id)
    return (cache, nxt, done), nxt

  init = (cache, jnp.zeros((batch_size,), jnp.int32), jnp.zeros((batch_size,), bool))
  _, tokens = jax.lax.scan(body, init, (jnp.arange(max_length), forced_all))
  return tokens.T  # (B, L)
