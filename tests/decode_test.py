"""Beam search and sampling on toy step functions, checked against numpy and greedy."""

import dataclasses
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.decoding import decode
from lmjax.decoding import predict
from lmjax.models import build_model
from lmjax.models import transformer

EOS = 1
M = 97  # toy hash-state size


def make_toy(seed, vocab, eos_bias=0.0):
  """Random toy LM whose logits depend on the whole history through its cache."""
  rng = np.random.default_rng(seed)
  table = (2.0 * rng.normal(size=(M, vocab))).astype(np.float32)
  table[:, EOS] += eos_bias
  proj = rng.normal(size=(3, vocab)).astype(np.float32)
  return table, proj


def toy_step_fn(table, proj):
  table, proj = jnp.asarray(table), jnp.asarray(proj)

  def step_fn(cache, token, position):
    h = (cache['h'] * 7 + token * 3 + position + 1) % M  # (N,)
    count = cache['count'] + jax.nn.one_hot(token % 3, 3)  # (N, 3)
    return table[h] + 0.3 * count @ proj, {'h': h, 'count': count}
  return step_fn


def toy_cache(h0, repeat=1):
  """Cache for sentences with start states h0 (B,), each row repeated `repeat` times."""
  h = jnp.repeat(jnp.asarray(h0, jnp.int32), repeat)
  return {'h': h, 'count': jnp.zeros((h.shape[0], 3), jnp.float32)}


def np_logprobs(table, proj, h0, seq):
  """Log-probability of each token of `seq` under the toy LM, in numpy."""
  h, count, prev, out = h0, np.zeros(3), 0, []
  for pos, tok in enumerate(seq):
    h = (h * 7 + prev * 3 + pos + 1) % M
    count = count + np.eye(3)[prev % 3]
    logits = (table[h] + 0.3 * count @ proj).astype(np.float64)
    logp = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
    out.append(logp[tok])
    prev = tok
  return np.array(out)


def np_penalty(length, alpha):
  return ((5.0 + length) / 6.0) ** alpha


def hyp_tokens(seq):
  """Tokens of a returned hypothesis: up to and including EOS, or all L if truncated."""
  seq = list(np.asarray(seq))
  return seq[:seq.index(EOS) + 1] if EOS in seq else seq


def np_score(table, proj, h0, seq, alpha):
  toks = hyp_tokens(seq)
  return np_logprobs(table, proj, h0, toks).sum() / np_penalty(len(toks), alpha)


def assert_nothing_after_eos(seqs):
  for seq in np.asarray(seqs).reshape(-1, seqs.shape[-1]):
    seq = list(seq)
    if EOS in seq:
      assert not any(seq[seq.index(EOS) + 1:]), seq


@pytest.mark.parametrize('alpha,max_lengths', [(0.0, None), (1.0, None), (0.6, [1, 9])])
def test_beam_covering_all_hypotheses_is_exhaustive_search(alpha, max_lengths):
  vocab, length, beam = 4, 3, 4 ** 3
  table, proj = make_toy(0, vocab)
  h0 = [0, 5]
  ml = None if max_lengths is None else jnp.array(max_lengths, jnp.int32)
  seqs, scores = jax.jit(lambda c: decode.beam_search(
      toy_step_fn(table, proj), c, 2, beam, length, alpha=alpha, max_lengths=ml))(
          toy_cache(h0, beam))
  others = [t for t in range(vocab) if t != EOS]
  for b in range(2):
    limit = np.inf if max_lengths is None else max_lengths[b]
    hyps = [p + (EOS,) for n in range(length) if n <= limit
            for p in itertools.product(others, repeat=n)]
    if limit >= length:  # EOS never forced: truncated hypotheses of length L exist
      hyps += list(itertools.product(others, repeat=length))
    exact = sorted((np_score(table, proj, h0[b], h, alpha), h) for h in hyps)[::-1]
    n = len(exact)
    np.testing.assert_allclose(scores[b, :n], [s for s, _ in exact], rtol=1e-5, atol=1e-5)
    assert hyp_tokens(seqs[b, 0]) == list(exact[0][1])
    assert np.all(np.isneginf(scores[b, n:])) and not np.any(seqs[b, n:])
    assert len({tuple(hyp_tokens(s)) for s in np.asarray(seqs[b, :n])}) == n


def test_nbest_sorted_rescored_and_nothing_after_eos():
  vocab, length, beam, h0 = 7, 6, 3, [0, 11, 42]
  table, proj = make_toy(1, vocab, eos_bias=1.0)
  seqs, scores = jax.jit(lambda c: decode.beam_search(
      toy_step_fn(table, proj), c, 3, beam, length, alpha=0.6))(toy_cache(h0, beam))
  assert seqs.shape == (3, beam, length) and seqs.dtype == jnp.int32
  assert scores.shape == (3, beam) and scores.dtype == jnp.float32
  assert np.all(np.diff(scores, axis=1) <= 0)
  assert_nothing_after_eos(seqs)
  for b in range(3):
    for k in range(beam):
      np.testing.assert_allclose(scores[b, k], np_score(table, proj, h0[b], seqs[b, k], 0.6),
                                 rtol=1e-5)


def test_beam_one_with_alpha_zero_equals_greedy():
  vocab, length, h0 = 6, 8, list(range(0, 80, 10))
  table, proj = make_toy(2, vocab, eos_bias=-1.0)
  step = toy_step_fn(table, proj)
  seqs, _ = jax.jit(lambda c: decode.beam_search(step, c, 8, 1, length, alpha=0.0))(toy_cache(h0))
  greedy = jax.jit(lambda c: decode.greedy(step, c, 8, length))(toy_cache(h0))
  np.testing.assert_array_equal(seqs[:, 0], greedy)
  assert np.any(greedy == EOS) and not np.all(np.any(greedy == EOS, axis=1))  # both cases hit


def test_banned_ids_are_never_chosen_and_beam_scores_stay_the_models():
  """An imported GPT-2's BOS row copies EOS's (`banned_ids`): greedy, sampling and every
  beam hypothesis skip the banned ids; beam scores are still the unbanned model's."""
  vocab, length, beam, h0 = 6, 7, 3, [0, 11, 42, 5]
  table, proj = make_toy(4, vocab)
  table[:, 0] = table[:, 2] = table.max() + 1.0  # banned: otherwise always the best tokens
  step, banned = toy_step_fn(table, proj), (0, 2)
  greedy = jax.jit(lambda c: decode.greedy(step, c, 4, length, banned_ids=banned))(toy_cache(h0))
  sampled = jax.jit(lambda c: decode.sample(step, c, jax.random.key(0), 4, length,
                                            banned_ids=banned))(toy_cache(h0))
  seqs, scores = jax.jit(lambda c: decode.beam_search(step, c, 4, beam, length, alpha=0.6,
                                                      banned_ids=banned))(toy_cache(h0, beam))
  for out in (greedy, sampled, seqs):
    assert_nothing_after_eos(out)
    tokens = [t for row in np.asarray(out).reshape(-1, length) for t in hyp_tokens(row)]
    assert not set(tokens) & set(banned), out
  for b in range(4):
    for k in range(beam):
      np.testing.assert_allclose(scores[b, k], np_score(table, proj, h0[b], seqs[b, k], 0.6),
                                 rtol=1e-5)
  unbanned = jax.jit(lambda c: decode.greedy(step, c, 4, length))(toy_cache(h0))
  assert np.all(np.isin(unbanned[:, 0], banned))  # the ban, not the toy, kept them out


def table_step_fn(logp):
  """Step function with log-probabilities logp[position, previous token] (L, V, V)."""
  logp = jnp.asarray(logp, jnp.float32)
  return lambda cache, token, position: (logp[position, token], cache)


def test_length_penalty_alpha_switches_short_and_long():
  vocab, length = 4, 3
  probs = np.full((length, vocab, vocab), 1.0 / vocab)
  probs[0, 0] = [0.02, 0.40, 0.50, 0.08]  # [EOS]: log .4 = -0.92
  probs[1, 2] = [0.10, 0.70, 0.10, 0.10]  # [2, EOS]: log .5 + log .7 = -1.05
  step = table_step_fn(np.log(probs))
  cache = {'dummy': jnp.zeros((2,))}
  np.testing.assert_allclose(decode.length_penalty(2, 2.0), (7 / 6) ** 2, rtol=1e-6)
  short, _ = decode.beam_search(step, cache, 1, 2, length, alpha=0.0)
  np.testing.assert_array_equal(short[0, 0], [EOS, 0, 0])
  long, scores = decode.beam_search(step, cache, 1, 2, length, alpha=2.0)
  np.testing.assert_array_equal(long[0, 0], [2, EOS, 0])
  np.testing.assert_allclose(scores[0, 0], np.log(0.5 * 0.7) / (7 / 6) ** 2, rtol=1e-5)


def test_max_lengths_force_eos_per_sentence():
  vocab, length, beam, h0 = 6, 6, 3, [0, 1, 2, 3]
  table, proj = make_toy(3, vocab, eos_bias=-6.0)  # EOS is never chosen freely
  max_lengths = jnp.array([0, 2, 4, 9], jnp.int32)
  seqs, scores = jax.jit(lambda c, ml: decode.beam_search(
      toy_step_fn(table, proj), c, 4, beam, length, alpha=0.6, max_lengths=ml))(
          toy_cache(h0, beam), max_lengths)
  assert_nothing_after_eos(seqs)
  assert np.all(np.isfinite(scores[1:])) and np.isfinite(scores[0, 0])
  np.testing.assert_array_equal(seqs[0, 0], [EOS, 0, 0, 0, 0, 0])
  for b, m in enumerate([2, 4]):
    for k in range(beam):
      assert list(seqs[b + 1, k]).index(EOS) == m  # forced right after m tokens
  assert not np.any(seqs[3] == EOS)  # 9 > L: truncated at L tokens
  for k in range(beam):
    np.testing.assert_allclose(scores[3, k], np_score(table, proj, h0[3], seqs[3, k], 0.6),
                               rtol=1e-5)


def test_loop_stops_once_no_live_hypothesis_can_win():
  table, proj = make_toy(0, 6, eos_bias=3.0)  # EOS likely: K hypotheses finish early
  base, positions = toy_step_fn(table, proj), []

  def step(cache, token, position):
    jax.debug.callback(lambda p: positions.append(int(p)), position)
    return base(cache, token, position)
  seqs, _ = jax.jit(lambda c: decode.beam_search(step, c, 2, 3, 20, alpha=0.0))(
      toy_cache([0, 1], 3))
  jax.block_until_ready(seqs)
  assert 0 < len(positions) < 10 and int(np.max(np.sum(seqs > 0, -1))) <= len(positions)


# ------------------------------------------------------------------ sampling


def sample_toy(seed=4, vocab=6, length=8, batch=8, **kw):
  table, proj = make_toy(seed, vocab)
  step = toy_step_fn(table, proj)
  h0 = list(range(batch))
  fn = jax.jit(lambda c, r: decode.sample(step, c, r, batch, length, **kw))
  greedy = decode.greedy(step, toy_cache(h0), batch, length)
  return fn, toy_cache(h0), greedy, (table, proj, h0)


@pytest.mark.parametrize('kw', [dict(top_k=1), dict(top_p=1e-6), dict(temperature=1e-4),
                                dict(temperature=0.0)])
def test_degenerate_sampling_equals_greedy(kw):
  fn, cache, greedy, _ = sample_toy(**kw)
  np.testing.assert_array_equal(fn(cache, jax.random.key(0)), greedy)


def test_same_seed_same_samples_different_seed_different():
  fn, cache, greedy, _ = sample_toy(temperature=1.0)
  a, b, c = (fn(cache, jax.random.key(s)) for s in (0, 0, 1))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c) and not np.array_equal(a, greedy)
  assert_nothing_after_eos(a)


@pytest.mark.parametrize('top_k,top_p,allowed', [(0, 0.8, {2, 3, 4}), (2, 1.0, {2, 3}),
                                                 (3, 0.6, {2, 3})])
def test_nucleus_and_top_k_support_and_frequencies(top_k, top_p, allowed):
  probs = np.array([0.05, 0.10, 0.40, 0.30, 0.15])
  step = lambda cache, token, position: (jnp.log(jnp.asarray(probs, jnp.float32))[None].repeat(
      token.shape[0], 0), cache)
  n = 4000
  out = jax.jit(lambda r: decode.sample(step, {'d': jnp.zeros((n,))}, r, n, 1, top_k=top_k,
                                        top_p=top_p))(jax.random.key(7))[:, 0]
  counts = np.bincount(np.asarray(out), minlength=5)
  assert set(np.flatnonzero(counts)) == allowed
  expected = np.zeros(5)
  expected[list(allowed)] = probs[list(allowed)] / probs[list(allowed)].sum()
  np.testing.assert_allclose(counts / n, expected, atol=0.03)


def test_prefix_is_forced_and_continued():
  prefix = jnp.array([[2, 3, 4], [5, 0, 0], [0, 0, 0], [4, 4, 0]], jnp.int32)
  fn, cache, greedy, (table, proj, h0) = sample_toy(batch=4, top_k=1, prefix=prefix)
  out = np.asarray(fn(cache, jax.random.key(0)))
  forced = np.asarray(prefix) > 0
  np.testing.assert_array_equal(out[:, :3][forced], np.asarray(prefix)[forced])
  np.testing.assert_array_equal(out[2], greedy[2])
  for b in range(4):  # every unforced token is the argmax given the emitted history
    for t in range(8):
      if (t < 3 and forced[b, t]) or EOS in list(out[b, :t]):
        continue
      logp = [np_logprobs(table, proj, h0[b], list(out[b, :t]) + [v])[-1] for v in range(6)]
      assert out[b, t] == int(np.argmax(logp))


# ------------------------------------------------------- models through predict


@functools.lru_cache(maxsize=None)
def tiny_model(kind):
  cfg = dict(family='transformer', kind=kind, share_embeddings=True, tie_output=True,
             emb_dim=16, num_heads=2, qkv_dim=16, mlp_dim=32, num_encoder_layers=1,
             num_decoder_layers=2, max_len=32, dropout_rate=0.0, attention_dropout_rate=0.0,
             pre_ln=True, position='sinusoidal')
  model = build_model(cfg, vocab_size=11, target_vocab_size=11)
  batch = {'inputs': jnp.ones((1, 4), jnp.int32), 'targets': jnp.ones((1, 4), jnp.int32)}
  params = nn.meta.unbox(model.init(jax.random.key(0), batch, train=False)['params'])
  return model, params


# Compiled once per model; the model and the sizes are static.
beam_decode = jax.jit(predict.beam_decode, static_argnums=(0, 3, 4),
                      static_argnames=('alpha', 'max_len_b'))
greedy_decode = jax.jit(predict.greedy_decode, static_argnums=(0, 3))


def model_inputs():
  rng = np.random.default_rng(5)
  inputs = rng.integers(2, 11, size=(3, 6))
  inputs[0, 4:] = 0
  return jnp.asarray(inputs, jnp.int32)


@pytest.mark.parametrize('kind', ['encdec', 'decoder'])
def test_predict_beam_one_equals_greedy_decode(kind):
  model, params = tiny_model(kind)
  inputs = model_inputs()
  seqs, _ = beam_decode(model, params, inputs, 1, 7, alpha=0.0)
  np.testing.assert_array_equal(seqs[:, 0], greedy_decode(model, params, inputs, 7))


def test_predict_beam_scores_match_teacher_forced_model():
  model, params = tiny_model('encdec')
  inputs, beam, alpha = model_inputs(), 3, 0.6
  seqs, scores = beam_decode(model, params, inputs, beam, 7, alpha=alpha, max_len_b=4)
  assert_nothing_after_eos(seqs)
  # Causal decoder: tokens after EOS do not change the log-probs up to EOS.
  targets = seqs.reshape(3 * beam, 7)
  logits = model.apply({'params': params}, {'inputs': predict.repeat_batch(inputs, beam),
                                            'targets': targets}, train=False)
  logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                            np.asarray(targets)[..., None], -1)[..., 0].reshape(3, beam, 7)
  for b in range(3):
    for k in range(beam):
      n = len(hyp_tokens(seqs[b, k]))
      assert n <= 5  # max_len_b = 4 tokens, then EOS
      np.testing.assert_allclose(scores[b, k], logp[b, k, :n].sum() / np_penalty(n, alpha),
                                 rtol=1e-4, atol=1e-5)


def reordering_beam_decode(model, params, inputs, beam, max_length, alpha):
  """Reference: K = 1 caches (one per row) that beam search reorders like any other leaf.

  The slot_* leaves are renamed while beam search holds the cache, so that
  decode.reorder_cache gathers them too.
  """
  b = inputs.shape[0]
  encoded = model.apply({'params': params}, inputs, method='encode')
  encoded, rep = predict.repeat_batch((encoded, inputs), beam)
  rename = lambda tree, a, z: {(k.replace(a, z) if isinstance(k, str) else k):
                               (rename(v, a, z) if isinstance(v, dict) else v)
                               for k, v in tree.items()}
  cache = predict.init_cache(model, params, encoded, rep, b * beam, max_length)
  inner = predict.make_step_fn(model, params, encoded, rep, max_length)

  def step_fn(cache, token, position):
    logits, cache = inner(rename(cache, 'row_', 'slot_'), token, position)
    return logits, rename(cache, 'slot_', 'row_')
  return decode.beam_search(step_fn, rename(cache, 'slot_', 'row_'), b, beam, max_length,
                            alpha=alpha)


@pytest.mark.parametrize('kind,scan', [('encdec', False), ('decoder', False), ('encdec', True)])
def test_slot_caches_equal_reordered_caches(kind, scan):
  """Beam search with per-slot self-attention caches + ancestry (predict.beam_decode)
  returns the hypotheses and scores of beam search that reorders whole caches."""
  model, params = tiny_model(kind)
  if scan:
    model = type(model)(config=dataclasses.replace(model.config, scan_layers=True))
    params = transformer.unstacked_to_scanned(params)
  inputs, beam, length, alpha = model_inputs(), 4, 9, 0.6
  seqs, scores = beam_decode(model, params, inputs, beam, length, alpha=alpha)
  cache = predict.init_cache(model, params, None, inputs, 3 * beam, length, beam) if kind == 'decoder' else None
  if cache is not None:
    assert any('slot_key' in str(p) for p, _ in jax.tree_util.tree_flatten_with_path(cache)[0])
  ref_seqs, ref_scores = jax.jit(reordering_beam_decode, static_argnums=(0, 3, 4, 5))(
      model, params, inputs, beam, length, alpha)
  np.testing.assert_array_equal(seqs, ref_seqs)
  np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
