"""CRF against brute force, classifier/tagger heads on LSTM and Transformer encoders."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.models import build_model
from lmjax.models import crf
from lmjax.models import heads

V, C = 11, 4  # C tag ids: 0 = padding, real tags 1..3

# Rows: full, right-padded, a gap in the middle, empty.
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]], bool)


def crf_problem(seed):
  rng = np.random.default_rng(seed)
  emissions = jnp.asarray(rng.normal(size=MASK.shape + (C,)), jnp.float32)
  transitions = jnp.asarray(rng.normal(size=(C, C)), jnp.float32)
  start, end = (jnp.asarray(rng.normal(size=(C,)), jnp.float32) for _ in range(2))
  return emissions, transitions, start, end


def brute_force(emissions, transitions, start, end, mask):
  """All real-tag sequences of one row: list of (tags on real positions, score)."""
  em, tr, st, en = (np.asarray(a, np.float64) for a in (emissions, transitions, start, end))
  real = np.flatnonzero(mask)
  out = []
  for tags in itertools.product(range(1, C), repeat=len(real)):
    if not tags:
      continue
    score = st[tags[0]] + en[tags[-1]] + sum(em[t, y] for t, y in zip(real, tags))
    score += sum(tr[a, b] for a, b in zip(tags[:-1], tags[1:]))
    out.append((tags, score))
  return out


@pytest.mark.parametrize('seed', [0, 1])
def test_crf_matches_brute_force(seed):
  emissions, transitions, start, end = crf_problem(seed)
  mask = jnp.asarray(MASK)
  log_z = crf.log_partition(emissions, mask, transitions, start, end)
  best = crf.viterbi(emissions, mask, transitions, start, end)
  gold = jnp.asarray(np.random.default_rng(seed).integers(1, C, MASK.shape), jnp.int32)
  nll = crf.nll(emissions, gold, mask, transitions, start, end)
  for b in range(MASK.shape[0]):
    paths = brute_force(emissions[b], transitions, start, end, MASK[b])
    if not paths:  # empty row
      assert float(log_z[b]) == 0.0 and float(nll[b]) == 0.0
      np.testing.assert_array_equal(best[b], 0)
      continue
    scores = np.array([s for _, s in paths])
    ref_log_z = np.log(np.sum(np.exp(scores - scores.max()))) + scores.max()
    np.testing.assert_allclose(log_z[b], ref_log_z, rtol=1e-5)
    expected = np.zeros(MASK.shape[1], np.int32)
    expected[MASK[b]] = paths[int(np.argmax(scores))][0]
    np.testing.assert_array_equal(best[b], expected)
    gold_score = dict(paths)[tuple(np.asarray(gold[b])[MASK[b]])]
    np.testing.assert_allclose(nll[b], ref_log_z - gold_score, rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(nll) >= 0.0)


def test_crf_never_uses_padding_tag_on_real_positions():
  emissions, transitions, start, end = crf_problem(2)
  emissions = emissions.at[..., 0].set(100.0)  # tag 0 would win everywhere if allowed
  best = crf.viterbi(emissions, jnp.asarray(MASK), transitions, start, end)
  assert np.all(np.asarray(best)[MASK] > 0) and np.all(np.asarray(best)[~MASK] == 0)


def lstm_config(**overrides):
  cfg = dict(family='lstm', kind='encoder', emb_dim=6, hidden_dim=8, num_layers=1,
             num_decoder_layers=1, dropout_rate=0.1, bidirectional=True, attention='none',
             input_feeding=False, tie_output=False, share_embeddings=False, pooling='last',
             use_crf=False, head='classify')
  cfg.update(overrides)
  return cfg


def transformer_config(**overrides):
  cfg = dict(family='transformer', kind='encoder', emb_dim=16, num_heads=2, qkv_dim=16, mlp_dim=32,
             num_encoder_layers=1, max_len=16, dropout_rate=0.1, attention_dropout_rate=0.0,
             pre_ln=True, position='sinusoidal', pooling='mean', use_crf=False, head='classify')
  cfg.update(overrides)
  return cfg


def make_model(cfg):
  return build_model(cfg, vocab_size=V, num_classes=C)


def init(model, batch):
  variables = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, batch, train=False)
  return nn.meta.unbox(variables['params'])


def make_batch(seed, rows=8, length=6):
  """A learnable task: label = first token mod C, tag = 1 + token mod (C - 1)."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(2, V, (rows, length))
  lengths = rng.integers(2, length + 1, rows)
  inputs[np.arange(length)[None] >= lengths[:, None]] = 0
  tags = np.where(inputs > 0, 1 + inputs % (C - 1), 0)
  return {'inputs': jnp.asarray(inputs, jnp.int32), 'label': jnp.asarray(inputs[:, 0] % C, jnp.int32),
          'tags': jnp.asarray(tags, jnp.int32)}


@pytest.mark.parametrize('cfg', [lstm_config(pooling='last'), lstm_config(pooling='mean'),
                                 lstm_config(pooling='max'),
                                 lstm_config(pooling='attention', bidirectional=False),
                                 transformer_config(pooling='last'),
                                 transformer_config(head='tag', use_crf=True)],
                         ids=['lstm-last', 'lstm-mean', 'lstm-max', 'lstm-attention', 'transformer-last',
                              'transformer-tag'])
def test_padding_does_not_change_outputs(cfg):
  model = make_model(cfg)
  batch = make_batch(0, rows=3)
  params = init(model, batch)
  out = model.apply({'params': params}, batch, train=False)
  padded = dict(batch, inputs=jnp.pad(batch['inputs'], ((0, 0), (0, 3))),
                tags=jnp.pad(batch['tags'], ((0, 0), (0, 3))))
  out2 = model.apply({'params': params}, padded, train=False)
  if cfg['head'] == 'tag':
    real = np.asarray(batch['inputs'] > 0)
    np.testing.assert_allclose(np.asarray(out2)[:, :6][real], np.asarray(out)[real], atol=1e-5)
    nll = model.apply({'params': params}, batch, train=False, method='crf_nll')[1]
    nll2 = model.apply({'params': params}, padded, train=False, method='crf_nll')[1]
    np.testing.assert_allclose(nll2, nll, rtol=1e-5)
  else:
    np.testing.assert_allclose(out2, out, atol=1e-5)


def train(model, batch, loss_kind, steps=30, lr=3e-2):
  """Adam on the model's loss; returns (losses, params)."""
  params = init(model, batch)
  tx = optax.adam(lr)
  opt_state = tx.init(params)

  def loss_fn(params, rng):
    variables, rngs = {'params': params}, {'dropout': rng}
    if loss_kind == 'crf':
      return jnp.mean(model.apply(variables, batch, train=True, rngs=rngs, method='crf_nll')[1])
    logits = model.apply(variables, batch, train=True, rngs=rngs)
    if loss_kind == 'classify':
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']))
    weights = (batch['tags'] > 0).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['tags'])
    return jnp.sum(ce * weights) / jnp.sum(weights)

  @jax.jit
  def step(params, opt_state, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, rng)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state, jax.random.key(i))
    losses.append(float(loss))
  return losses, params


@pytest.mark.parametrize('cfg,loss_kind', [
    (lstm_config(pooling='attention'), 'classify'),
    (lstm_config(head='tag'), 'tag'),
    (lstm_config(head='tag', use_crf=True), 'crf'),
    (transformer_config(pooling='mean'), 'classify'),
    (transformer_config(head='tag'), 'tag'),
    (transformer_config(head='tag', use_crf=True), 'crf'),
], ids=['lstm-classify', 'lstm-tag', 'lstm-crf', 'transformer-classify', 'transformer-tag',
        'transformer-crf'])
def test_training_reduces_loss(cfg, loss_kind):
  model = make_model(cfg)
  batch = make_batch(1)
  losses, params = train(model, batch, loss_kind)
  assert losses[-1] < 0.6 * losses[0], losses
  if loss_kind == 'crf':
    tags = model.apply({'params': params}, batch, method='crf_decode')
    real = np.asarray(batch['inputs'] > 0)
    assert tags.dtype == jnp.int32 and np.all(np.asarray(tags)[~real] == 0)
    assert np.mean(np.asarray(tags)[real] == np.asarray(batch['tags'])[real]) > 0.8


@pytest.mark.parametrize('cfg', [lstm_config(), transformer_config()], ids=['lstm', 'transformer'])
def test_build_model_builds_encoders(cfg):
  model = make_model(cfg)
  assert model.config.num_classes == C and model.config.vocab_size == V
  expected = heads.LSTMEncoderModel if cfg['family'] == 'lstm' else heads.TransformerEncoderModel
  assert isinstance(model, expected)


@pytest.mark.parametrize('overrides,field', [
    (dict(head='classify', use_crf=True), 'use_crf'),
    (dict(head='span'), 'head'),
    (dict(pooling='sum'), 'pooling'),
])
def test_bad_head_config_names_the_field(overrides, field):
  batch = make_batch(0, rows=1)
  for cfg in (lstm_config(**overrides), transformer_config(**overrides)):
    with pytest.raises(ValueError, match=f'config.model.{field}'):
      init(make_model(cfg), batch)
  with pytest.raises(ValueError, match='num_classes'):
    init(build_model(lstm_config(), vocab_size=V), batch)


def test_max_pooling_matches_numpy():
  """'max' pools each feature over the real positions only; an all-padding row gives zeros."""
  head = heads.Head('classify', 'max', C, 0.0)
  rng = np.random.default_rng(3)
  feats = rng.normal(size=(3, 5, 4)).astype(np.float32) - 5.0  # all negative: padding must not win
  mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
  variables = head.init(jax.random.key(0), feats, mask, feats[:, 0], deterministic=True)
  got = head.apply(variables, feats, mask, feats[:, 0], deterministic=True)
  k = variables['params']['class_logits']
  kernel, bias = np.asarray(nn.meta.unbox(k['kernel'])), np.asarray(nn.meta.unbox(k['bias']))
  pooled = np.stack([feats[0, :2].max(0), feats[1].max(0), np.zeros(4, np.float32)])
  np.testing.assert_allclose(got, pooled @ kernel + bias, rtol=1e-5, atol=1e-5)
