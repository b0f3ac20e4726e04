"""Linear-chain CRF (Lafferty et al., 2001) as pure functions over padded batches.

The score of tags y_1..y_n on the n real positions of a row is

    start[y_1] + Σ_t emissions[t, y_t] + Σ_{t>1} transitions[y_{t-1}, y_t] + end[y_n].

Tag id 0 is padding: it is never allowed on a real position (its emission is
replaced by layers.NEG_INF), so the partition function and Viterbi range over the real
tags 1..C-1 only, and Viterbi writes 0 on padding. A gold tag 0 on a real
position therefore gets a huge NLL (~1e9): tags must be > 0 wherever inputs > 0.
Padded positions (mask False) are skipped wherever they are: the chain links
consecutive real positions. A row without real positions has NLL 0.
"""

import jax
import jax.numpy as jnp

from lmjax.models import layers



def _real_tags_only(emissions: jnp.ndarray) -> jnp.ndarray:
  """(B, S, C) float32 emissions with the padding tag 0 forbidden."""
  return emissions.astype(jnp.float32).at[..., 0].set(layers.NEG_INF)


def log_partition(emissions, mask, transitions, start, end) -> jnp.ndarray:
  """log Z by the forward algorithm.

  Args:
    emissions: (B, S, C) unary scores.
    mask: (B, S) bool, True on real positions.
    transitions: (C, C) score of tag i followed by tag j.
    start: (C,) score of the first real tag.
    end: (C,) score of the last real tag.

  Returns:
    (B,) float32 log-partition (0 for rows without real positions).
  """
  em = _real_tags_only(emissions)

  def step(carry, xs):
    alpha, started = carry  # (B, C), (B,)
    e_t, m_t = xs  # (B, C), (B,)
    via = jax.nn.logsumexp(alpha[:, :, None] + transitions[None], axis=1)  # (B, C)
    nxt = jnp.where(started[:, None], via, alpha) + e_t
    return (jnp.where(m_t[:, None], nxt, alpha), started | m_t), None

  alpha0 = jnp.broadcast_to(start.astype(jnp.float32), em.shape[:1] + em.shape[2:])  # (B, C)
  init = (alpha0, jnp.zeros(mask.shape[:1], bool))
  (alpha, started), _ = jax.lax.scan(step, init, (em.swapaxes(0, 1), mask.T))
  return jnp.where(started, jax.nn.logsumexp(alpha + end, axis=-1), 0.0)


def sequence_score(emissions, tags, mask, transitions, start, end) -> jnp.ndarray:
  """Score of the given tag sequences.

  Args:
    emissions: (B, S, C) unary scores.
    tags: (B, S) int32 gold tags (ignored where mask is False).
    mask: (B, S) bool, True on real positions.
    transitions: (C, C); start: (C,); end: (C,).

  Returns:
    (B,) float32 scores.
  """
  em = _real_tags_only(emissions)

  def step(carry, xs):
    score, prev, started = carry  # (B,), (B,), (B,)
    e_t, y_t, m_t = xs  # (B, C), (B,), (B,)
    emit = jnp.take_along_axis(e_t, y_t[:, None], axis=1)[:, 0]
    link = jnp.where(started, transitions[prev, y_t], start[y_t])
    score = score + jnp.where(m_t, emit + link, 0.0)
    return (score, jnp.where(m_t, y_t, prev), started | m_t), None

  b = mask.shape[0]
  init = (jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32), jnp.zeros((b,), bool))
  (score, last, started), _ = jax.lax.scan(step, init, (em.swapaxes(0, 1), tags.T, mask.T))
  return score + jnp.where(started, end[last], 0.0)


def nll(emissions, tags, mask, transitions, start, end) -> jnp.ndarray:
  """Negative log-likelihood log Z - score(tags), (B,) float32, ≥ 0."""
  return (log_partition(emissions, mask, transitions, start, end)
          - sequence_score(emissions, tags, mask, transitions, start, end))


def viterbi(emissions, mask, transitions, start, end) -> jnp.ndarray:
  """Best tag sequence per row.

  Args:
    emissions: (B, S, C) unary scores.
    mask: (B, S) bool, True on real positions.
    transitions: (C, C); start: (C,); end: (C,).

  Returns:
    (B, S) int32 tags in 1..C-1 on real positions, 0 on padding.
  """
  em = _real_tags_only(emissions)
  num_tags = em.shape[-1]
  identity = jnp.arange(num_tags)[None]  # (1, C)

  def forward(carry, xs):
    delta, started = carry  # (B, C), (B,)
    e_t, m_t = xs
    cand = delta[:, :, None] + transitions[None]  # (B, C_prev, C)
    nxt = jnp.where(started[:, None], jnp.max(cand, axis=1), delta) + e_t
    # Padded and first real steps keep the tag: the backtrace passes through them.
    back = jnp.where((m_t & started)[:, None], jnp.argmax(cand, axis=1), identity)  # (B, C)
    return (jnp.where(m_t[:, None], nxt, delta), started | m_t), back

  delta0 = jnp.broadcast_to(start.astype(jnp.float32), em.shape[:1] + em.shape[2:])
  (delta, _), backs = jax.lax.scan(forward, (delta0, jnp.zeros(mask.shape[:1], bool)),
                                   (em.swapaxes(0, 1), mask.T))  # backs: (S, B, C)

  def backward(tag, xs):
    back_t, m_t = xs
    out = jnp.where(m_t, tag, 0)
    return jnp.take_along_axis(back_t, tag[:, None], axis=1)[:, 0], out

  last = jnp.argmax(delta + end, axis=-1)  # (B,)
  _, path = jax.lax.scan(backward, last, (backs, mask.T), reverse=True)  # (S, B)
  return path.T.astype(jnp.int32)
