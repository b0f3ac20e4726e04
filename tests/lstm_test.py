"""LSTM cell/stack numerics, padding, attention, incremental decoding, TBPTT and training."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.decoding import predict
from lmjax.models import build_model
from lmjax.models import lstm

V = 11
E, H = 6, 8


def config(kind='encdec', **overrides):
  cfg = dict(family='lstm', kind=kind, emb_dim=E, hidden_dim=H, num_layers=1, num_decoder_layers=1,
             dropout_rate=0.1, bidirectional=True, attention='bahdanau', input_feeding=True,
             tie_output=False, share_embeddings=False, pooling='last', use_crf=False, head='')
  cfg.update(overrides)
  return cfg


def make_model(kind='encdec', **overrides):
  return build_model(config(kind, **overrides), vocab_size=V, target_vocab_size=V + 2)


def init(model, batch):
  variables = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, batch, train=False)
  return nn.meta.unbox(variables['params'])


def rand_ids(rng, shape, high=V):
  return jnp.asarray(rng.integers(2, high, size=shape), jnp.int32)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_cell(p, c, h, x):
  """Reference LSTM step in NumPy (same gate layout as flax's LSTMCell params)."""
  pre = {g: x @ np.asarray(p[f'i{g}']['kernel']) + h @ np.asarray(p[f'h{g}']['kernel'])
         + np.asarray(p[f'h{g}']['bias']) for g in 'ifgo'}
  c = sigmoid(pre['f']) * c + sigmoid(pre['i']) * np.tanh(pre['g'])
  return c, sigmoid(pre['o']) * np.tanh(c)


def np_layer(p, x, length, reverse):
  """Runs np_cell over x[:length] (reversed if asked). Returns outputs (L, H) and (c, h)."""
  c = h = np.zeros(H)
  out = np.zeros((x.shape[0], H))
  steps = range(length - 1, -1, -1) if reverse else range(length)
  for t in steps:
    c, h = np_cell(p, c, h, x[t])
    out[t] = h
  return out, (c, h)


def test_cell_matches_numpy():
  rng = np.random.default_rng(0)
  cell = lstm.lstm_cell(H, 'embed', jnp.float32)
  x = jnp.asarray(rng.normal(size=(3, E)), jnp.float32)
  carry = tuple(jnp.asarray(rng.normal(size=(3, H)), jnp.float32) for _ in range(2))
  params = nn.meta.unbox(cell.init(jax.random.key(0), carry, x)['params'])
  # Perturb so that biases are nonzero too.
  params = jax.tree.map(lambda a: a + 0.1 * rng.normal(size=a.shape).astype(np.float32), params)
  (c, h), y = cell.apply({'params': params}, carry, x)
  ref_c, ref_h = np_cell(params, np.asarray(carry[0]), np.asarray(carry[1]), np.asarray(x))
  np.testing.assert_allclose(c, ref_c, atol=1e-5)
  np.testing.assert_allclose(h, ref_h, atol=1e-5)
  np.testing.assert_allclose(y, ref_h, atol=1e-5)


@pytest.mark.parametrize('bidirectional', [False, True])
def test_layer_matches_numpy(bidirectional):
  rng = np.random.default_rng(1)
  stack = lstm.LSTMStack(H, 1, 0.0, bidirectional)
  x = jnp.asarray(rng.normal(size=(2, 5, E)), jnp.float32)
  lengths = jnp.array([5, 3])
  params = nn.meta.unbox(stack.init(jax.random.key(0), x, lengths, deterministic=True)['params'])
  out, states = stack.apply({'params': params}, x, lengths, deterministic=True)
  names = ['layer_0', 'layer_0_bwd'] if bidirectional else ['layer_0']
  for b, length in enumerate([5, 3]):
    for d, name in enumerate(names):
      ref_out, (ref_c, ref_h) = np_layer(params[name]['cell'], np.asarray(x[b]), length, d == 1)
      np.testing.assert_allclose(out[b, :length, d * H:(d + 1) * H], ref_out[:length], atol=1e-5)
      np.testing.assert_allclose(states[0][d][0][b], ref_c, atol=1e-5)
      np.testing.assert_allclose(states[0][d][1][b], ref_h, atol=1e-5)


@pytest.mark.parametrize('bidirectional', [False, True])
def test_padding_does_not_change_real_outputs_or_final_states(bidirectional):
  rng = np.random.default_rng(2)
  stack = lstm.LSTMStack(H, 2, 0.0, bidirectional)
  x = jnp.asarray(rng.normal(size=(3, 5, E)), jnp.float32)
  lengths = jnp.array([5, 2, 0])
  params = nn.meta.unbox(stack.init(jax.random.key(0), x, lengths, deterministic=True)['params'])
  out, states = stack.apply({'params': params}, x, lengths, deterministic=True)
  # Extra padded steps hold garbage: only the first `length` steps of a row are real.
  padded = jnp.concatenate([x, jnp.asarray(rng.normal(size=(3, 4, E)), jnp.float32)], 1)
  out2, states2 = stack.apply({'params': params}, padded, lengths, deterministic=True)
  for b, length in enumerate([5, 2, 0]):
    np.testing.assert_allclose(out2[b, :length], out[b, :length], atol=1e-6)
  for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(states2)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  np.testing.assert_array_equal(states[0][0][0][2], 0.0)  # an empty row keeps the zero state


ENCDEC_INPUTS = jnp.array([[3, 4, 5, 6, 7, 0, 0],
                           [8, 9, 2, 3, 4, 5, 6],
                           [5, 0, 0, 0, 0, 0, 0]], jnp.int32)
ENCDEC_TARGETS = jnp.array([[2, 3, 4, 5, 6, 1], [9, 8, 7, 6, 5, 1], [4, 4, 4, 4, 1, 0]], jnp.int32)


@functools.lru_cache(maxsize=None)
def encdec_case(attention, input_feeding):
  """Model, params, teacher-forced logits (B, T, V) and attention weights (B, T, S), built once."""
  # Vary the other options across cases to cover bridges, depth, tying and sharing too.
  deep = attention == 'bahdanau' and input_feeding
  model = build_model(config(attention=attention, input_feeding=input_feeding,
                             bidirectional=attention != 'luong_dot', tie_output=input_feeding,
                             share_embeddings=attention == 'none', num_layers=2 if deep else 1,
                             num_decoder_layers=3 if deep else 1),
                      vocab_size=V, target_vocab_size=V)
  batch = {'inputs': ENCDEC_INPUTS, 'targets': ENCDEC_TARGETS}
  params = init(model, batch)
  logits, state = model.apply({'params': params}, batch, train=False, mutable=['intermediates'])
  weights = state.get('intermediates', {}).get('attention_weights', (None,))[0]
  return model, params, logits, weights


def test_encdec_source_padding_does_not_change_logits():
  model, params, logits, _ = encdec_case('luong_general', True)
  padded = {'inputs': jnp.pad(ENCDEC_INPUTS, ((0, 0), (0, 3))), 'targets': ENCDEC_TARGETS}
  np.testing.assert_allclose(model.apply({'params': params}, padded, train=False), logits, atol=1e-5)


@pytest.mark.parametrize('attention', ['bahdanau', 'luong_dot', 'luong_general'])
def test_attention_weights_sum_to_one_on_real_positions(attention):
  _, _, _, weights = encdec_case(attention, True)
  assert weights.shape == (3, 6, 7)
  real = np.asarray(ENCDEC_INPUTS > 0)[:, None, :]
  np.testing.assert_allclose(np.sum(weights, -1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(np.where(real, 0.0, weights), 0.0)
  assert np.all(np.where(real, weights, 1.0) > 0.0)


def assert_decoding_matches(model, params, inputs, targets, full):
  """Steps predict.make_step_fn from a zero cache and compares with `full` (B, T, V)."""
  b, max_length = inputs.shape[0], 8
  encoded = model.apply({'params': params}, inputs, method='encode')
  cache = predict.init_cache(model, params, encoded, inputs, b, max_length)
  for leaf in jax.tree.leaves(cache):
    assert leaf.shape[0] == b
  step = jax.jit(predict.make_step_fn(model, params, encoded, inputs, max_length))
  token = jnp.zeros((b,), jnp.int32)
  for t in range(targets.shape[1]):
    logits, cache = step(cache, token, jnp.array(t, jnp.int32))
    np.testing.assert_allclose(logits, full[:, t], atol=1e-5, rtol=1e-5)
    token = targets[:, t]


@pytest.mark.parametrize('attention,input_feeding', [
    ('bahdanau', True), ('bahdanau', False), ('luong_dot', True), ('luong_dot', False),
    ('luong_general', True), ('luong_general', False), ('none', False)])
def test_incremental_decoding_matches_teacher_forcing_encdec(attention, input_feeding):
  model, params, logits, _ = encdec_case(attention, input_feeding)
  assert_decoding_matches(model, params, ENCDEC_INPUTS, ENCDEC_TARGETS, logits)


@pytest.mark.parametrize('tie_output', [True, False])
def test_incremental_decoding_matches_teacher_forcing_decoder(tie_output):
  rng = np.random.default_rng(6)
  model = make_model('decoder', tie_output=tie_output)
  inputs, targets = rand_ids(rng, (3, 5)), rand_ids(rng, (3, 6))
  params = init(model, {'targets': targets})
  full = model.apply({'params': params}, {'targets': targets}, train=False)
  assert_decoding_matches(model, params, inputs, targets, full)


def test_stateful_chunks_equal_one_pass():
  rng = np.random.default_rng(7)
  model = make_model('decoder')
  stream = rand_ids(rng, (2, 12))
  params = init(model, {'targets': stream})
  full = model.apply({'params': params}, {'targets': stream}, train=False)
  with_state = jax.jit(lambda chunk, state: model.apply(
      {'params': params}, {'targets': chunk}, state, train=False, method='apply_with_state'))
  state = model.zero_state(2)
  for lo in range(0, 12, 4):
    logits, state = with_state(stream[:, lo:lo + 4], state)
    np.testing.assert_allclose(logits, full[:, lo:lo + 4], atol=1e-5)
  _, state = with_state(stream[:, :4], model.zero_state(2))
  via_call = model.apply({'params': params}, {'targets': stream[:, 4:8]}, train=False,
                         initial_state=state)
  np.testing.assert_allclose(via_call, full[:, 4:8], atol=1e-5)


def test_packed_batches_are_rejected():
  rng = np.random.default_rng(8)
  model = make_model('decoder')
  batch = {'targets': rand_ids(rng, (1, 4))}
  params = init(model, batch)
  with pytest.raises(ValueError, match='packed'):
    model.apply({'params': params}, dict(batch, targets_segmentation=jnp.ones((1, 4), jnp.int32)),
                train=False)


def train_losses(model, batch, steps=30, lr=3e-2):
  """Adam on the token cross-entropy of `batch`; returns the losses."""
  params = init(model, batch)
  tx = optax.adam(lr)
  opt_state = tx.init(params)

  def loss_fn(params, rng):
    logits = model.apply({'params': params}, batch, train=True, rngs={'dropout': rng})
    weights = (batch['targets'] > 0).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])
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
  return losses


@pytest.mark.parametrize('kind', ['encdec', 'decoder'])
def test_training_reduces_loss(kind):
  rng = np.random.default_rng(9)
  inputs = rand_ids(rng, (8, 5))
  if kind == 'encdec':  # copy task
    targets = jnp.concatenate([inputs, jnp.ones((8, 1), jnp.int32)], 1)
  else:  # counting task: each token is the previous one + 1
    targets = 2 + (inputs[:, :1] + jnp.arange(6)[None]) % (V - 2)
  model = make_model(kind, bidirectional=False, attention='luong_general')
  losses = train_losses(model, {'inputs': inputs, 'targets': targets})
  assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize('kind', ['encdec', 'decoder', 'encoder'])
def test_build_model_builds_each_kind(kind):
  model = build_model(config(kind, head='classify'), vocab_size=V, target_vocab_size=V, num_classes=3)
  assert isinstance(model.config, lstm.LSTMConfig) and model.config.num_classes == 3


def test_config_errors_name_the_field():
  batch = {'inputs': jnp.ones((1, 3), jnp.int32), 'targets': jnp.ones((1, 3), jnp.int32)}
  with pytest.raises(ValueError, match='attention'):
    init(make_model(attention='luong_dot', bidirectional=True), batch)
  with pytest.raises(ValueError, match='attention'):
    init(make_model(attention='mlp'), batch)
  with pytest.raises(ValueError, match='missing'):
    build_model({k: v for k, v in config().items() if k != 'hidden_dim'}, vocab_size=V)
