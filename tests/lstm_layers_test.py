"""lstm_layers against the nn.RNN(nn.OptimizedLSTMCell) construction: params, outputs, gradients."""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.decoding import predict
from lmjax.models import build_model
from lmjax.models import layers
from lmjax.models import lstm
from lmjax.models import lstm_layers

B, L, E, H = 4, 6, 5, 8
LENGTHS = jnp.array([6, 3, 0, 1], jnp.int32)  # full, ragged, empty, one step


def reference_cell(features, input_axis, dtype=jnp.float32):
  """The cell LSTMStack was built from, spelled out (no lmjax code): kernels, axes, inits."""
  return nn.OptimizedLSTMCell(
      features, dtype=dtype, parent=None,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                               (input_axis, 'hidden')),
      recurrent_kernel_init=nn.with_logical_partitioning(nn.initializers.orthogonal(),
                                                         ('hidden_in', 'hidden')),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('hidden',)))


class ReferenceStack(nn.Module):
  """The LSTMStack as it was built on nn.RNN(nn.OptimizedLSTMCell) (checkpoints of it restore)."""
  hidden_dim: int
  num_layers: int
  dropout_rate: float
  bidirectional: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, seq_lengths=None, initial_state=None, *, deterministic: bool):
    directions = (False, True) if self.bidirectional else (False,)
    final = []
    for i in range(self.num_layers):
      if i > 0:
        x = layers.Dropout(self.dropout_rate)(x, deterministic=deterministic)
      outputs, states = [], []
      for d, reverse in enumerate(directions):
        cell = reference_cell(self.hidden_dim, 'embed' if i == 0 else 'hidden_in', self.dtype)
        rnn = nn.RNN(cell, return_carry=True, reverse=reverse, keep_order=True,
                     name=f'layer_{i}' + ('_bwd' if reverse else ''))
        zeros = jnp.zeros(x.shape[:1] + (self.hidden_dim,), jnp.float32)
        start = (zeros, zeros) if initial_state is None else initial_state[i][d]
        carry, y = rnn(x, initial_carry=start, seq_lengths=seq_lengths)
        if seq_lengths is not None:
          keep = (seq_lengths > 0)[:, None]
          carry = jax.tree.map(lambda a, b: jnp.where(keep, a, b), carry, start)
        outputs.append(y)
        states.append(carry)
      x = jnp.concatenate(outputs, axis=-1)
      final.append(tuple(states))
    return x, tuple(final)


class ReferenceOutputLayer(nn.Module):
  """lstm.OutputLayer as it was: dense on (B, T, H), tied logits through nn.Embed.attend."""
  config: lstm.LSTMConfig

  @nn.compact
  def __call__(self, x, embedding: Optional[nn.Embed], *, deterministic: bool):
    cfg = self.config
    x = layers.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    if embedding is None:
      logits = layers.dense(cfg.target_vocab_size, ('hidden', 'vocab'), cfg.jnp_dtype,
                            name='logits')(x)
    else:
      if x.shape[-1] != cfg.emb_dim:
        x = layers.dense(cfg.emb_dim, ('hidden', 'embed'), cfg.jnp_dtype, name='projection')(x)
      logits = embedding.attend(x)
    return logits.astype(jnp.float32)


def random_normal(seed, shape, scale=1.0):
  return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def perturbed(params, seed=0):
  """Params + noise, so that biases are nonzero and gates are not symmetric."""
  leaves, tree = jax.tree.flatten(params)
  return jax.tree.unflatten(tree, [a + random_normal(seed + i, a.shape, 0.3)
                                   for i, a in enumerate(leaves)])


def assert_trees_close(a, b, atol=1e-5, rtol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), atol=atol,
                               rtol=rtol)


def readout(outputs, states):
  """A scalar that depends on every output and final state, with unequal weights."""
  total = jnp.sum(jnp.sin(outputs) * random_normal(1, outputs.shape))
  for i, leaf in enumerate(jax.tree.leaves(states)):
    total += jnp.sum(jnp.cos(leaf) * (i + 1))
  return total


@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('ragged', [False, True])
def test_layer_matches_nn_rnn(reverse, ragged):
  x = random_normal(2, (B, L, E))
  start = (random_normal(3, (B, H)), random_normal(4, (B, H)))
  lengths = LENGTHS if ragged else None
  ours = lstm_layers.LSTMLayer(H, 'embed', reverse)
  ref = nn.RNN(reference_cell(H, 'embed'), return_carry=True, reverse=reverse, keep_order=True)
  params = nn.meta.unbox(ours.init(jax.random.key(0), x, start, lengths)['params'])
  ref_params = nn.meta.unbox(ref.init(jax.random.key(0), x, initial_carry=start,
                                      seq_lengths=lengths)['params'])
  assert_trees_close(params, ref_params, atol=0, rtol=0)  # same tree and same initial values
  params = perturbed(params)

  def run_ours(p, x, start):
    return ours.apply({'params': p}, x, start, lengths)

  def run_ref(p, x, start):
    return ref.apply({'params': p}, x, initial_carry=start, seq_lengths=lengths)

  # Every step, padded ones included: nn.RNN runs on over the padding (and backwards from
  # each row's true end), so the outputs there are defined and must agree too.
  assert_trees_close(run_ours(params, x, start), run_ref(params, x, start))
  grads = jax.grad(lambda *a: readout(*run_ours(*a)[::-1]), argnums=(0, 1, 2))(params, x, start)
  ref_grads = jax.grad(lambda *a: readout(*run_ref(*a)[::-1]), argnums=(0, 1, 2))(params, x, start)
  assert_trees_close(grads, ref_grads)


@pytest.mark.parametrize('bidirectional', [False, True])
def test_stack_matches_reference_with_dropout_lengths_and_initial_state(bidirectional):
  x = random_normal(5, (B, L, E))
  d = 2 if bidirectional else 1
  initial = tuple(tuple((random_normal(10 + 4 * i + 2 * k, (B, H)),
                         random_normal(11 + 4 * i + 2 * k, (B, H))) for k in range(d))
                  for i in range(2))
  ours = lstm_layers.LSTMStack(H, 2, 0.4, bidirectional)
  ref = ReferenceStack(H, 2, 0.4, bidirectional)
  params = perturbed(nn.meta.unbox(ours.init(jax.random.key(0), x, LENGTHS, initial,
                                             deterministic=True)['params']))
  rngs = {'dropout': jax.random.key(7)}

  def loss(module):
    def fn(p, x, initial):
      out, states = module.apply({'params': p}, x, LENGTHS, initial, deterministic=False, rngs=rngs)
      return readout(out, states), (out, states)
    return jax.grad(fn, argnums=(0, 1, 2), has_aux=True)

  (grads, (out, states)), (ref_grads, (ref_out, ref_states)) = (
      loss(ours)(params, x, initial), loss(ref)(params, x, initial))
  assert_trees_close(out, ref_out)
  assert_trees_close(states, ref_states)
  assert_trees_close(grads, ref_grads)
  for got, want in zip(states, initial):  # the empty row (length 0) keeps its initial state
    for (c, h), (c0, h0) in zip(got, want):
      np.testing.assert_array_equal(c[2], c0[2])
      np.testing.assert_array_equal(h[2], h0[2])


def model_case(kind, **overrides):
  cfg = dict(family='lstm', kind=kind, emb_dim=E, hidden_dim=H, num_layers=2, num_decoder_layers=1,
             dropout_rate=0.3, bidirectional=kind != 'decoder', attention='bahdanau',
             input_feeding=True, tie_output=False, share_embeddings=False, pooling='mean',
             use_crf=False, head='tag' if kind == 'encoder' else '')
  cfg.update(overrides)
  v = 11
  model = build_model(cfg, vocab_size=v, target_vocab_size=v, num_classes=4)
  real = np.arange(L) < np.asarray(LENGTHS)[:, None]  # (B, L)
  ids = np.random.default_rng(8).integers(2, v, size=(B, L)) * real
  targets = jnp.asarray(np.random.default_rng(9).integers(1, v, size=(B, L - 1)), jnp.int32)
  if kind == 'decoder':
    batch = {'targets': targets}
  elif kind == 'encoder':
    batch = {'inputs': jnp.asarray(ids, jnp.int32),
             'targets': jnp.asarray((ids > 0) * 2, jnp.int32)}
  else:
    batch = {'inputs': jnp.asarray(ids, jnp.int32), 'targets': targets}
  return model, batch


MODEL_CASES = {
    'lm': ('decoder', {}),
    'lm_tied': ('decoder', {'tie_output': True}),
    'lm_bf16': ('decoder', {'dtype': 'bfloat16'}),
    'encdec_bidirectional': ('encdec', {}),
    'encdec_tied_unidirectional': ('encdec', {'bidirectional': False, 'tie_output': True,
                                              'attention': 'luong_general'}),
    'encoder_bidirectional': ('encoder', {}),
}


def init_and_grads(model, batch):
  """Boxed params, eval logits, train (dropout) logits and gradients of a train readout."""
  # Not a jitted init: that is a new program per model and construction, and compiling its
  # dozens of inlined threefry generators took ~3 s each (2/3 of this test's time).
  # lazy_init runs only the initializers, op by op (each compiles once per shape, shared by
  # both constructions and every case), and traces the forward pass without running it.
  # Both constructions init the same way, so their values must still be equal exactly.
  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch)
  variables = model.lazy_init({'params': jax.random.key(0)}, shapes, train=False)
  params = nn.meta.unbox(variables['params'])

  @jax.jit
  def run(p):
    logits = lambda p, train: model.apply({'params': p}, batch, train=train,
                                          rngs={'dropout': jax.random.key(5)})
    train_logits, vjp = jax.vjp(lambda p: logits(p, True), p)
    return logits(p, False), train_logits, vjp(jnp.cos(train_logits))[0]  # d Σ sin(logits)

  return (variables['params'],) + run(params)


@pytest.mark.parametrize('case', sorted(MODEL_CASES))
def test_models_match_the_nn_rnn_construction(case, monkeypatch):
  kind, overrides = MODEL_CASES[case]
  model, batch = model_case(kind, **overrides)
  boxed, logits, train_logits, grads = init_and_grads(model, batch)
  monkeypatch.setattr(lstm, 'LSTMStack', ReferenceStack)
  monkeypatch.setattr(lstm, 'OutputLayer', ReferenceOutputLayer)
  ref_boxed, ref_logits, ref_train_logits, ref_grads = init_and_grads(model, batch)
  # Checkpoints restore: same names, nesting, shapes, logical axes and initial values.
  shapes = jax.tree.map(jnp.shape, nn.meta.unbox(boxed))
  assert shapes == jax.tree.map(jnp.shape, nn.meta.unbox(ref_boxed))
  axes = lambda tree: jax.tree.map(lambda b: b.names, tree,
                                   is_leaf=lambda b: isinstance(b, nn.Partitioned))
  assert axes(boxed) == axes(ref_boxed)
  assert_trees_close(nn.meta.unbox(boxed), nn.meta.unbox(ref_boxed), atol=0, rtol=0)
  tol = 5e-2 if 'bf16' in case else 1e-5
  assert_trees_close(logits, ref_logits, atol=tol, rtol=tol)
  assert_trees_close(train_logits, ref_train_logits, atol=tol, rtol=tol)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
  assert_trees_close(grads, ref_grads, atol=(3e-2 if 'bf16' in case else 1e-5) * scale, rtol=tol)


@pytest.mark.parametrize('kind', ['decoder', 'encdec'])
def test_decode_steps_match_the_nn_rnn_construction(kind, monkeypatch):
  model, batch = model_case(kind)
  params = nn.meta.unbox(model.init({'params': jax.random.key(0)}, batch, train=False)['params'])
  inputs = batch.get('inputs', batch['targets'])
  tokens = batch['targets']

  def decode():
    encoded = model.apply({'params': params}, inputs, method='encode')
    cache = predict.init_cache(model, params, encoded, inputs, B, L)
    step = jax.jit(predict.make_step_fn(model, params, encoded, inputs, L))
    out = []
    for t in range(tokens.shape[1]):
      logits, cache = step(cache, tokens[:, t], jnp.array(t, jnp.int32))
      out.append(logits)
    return jnp.stack(out, 1), cache  # (B, T, V)

  logits, cache = decode()
  monkeypatch.setattr(lstm, 'LSTMStack', ReferenceStack)
  monkeypatch.setattr(lstm, 'OutputLayer', ReferenceOutputLayer)
  ref_logits, ref_cache = decode()
  assert_trees_close(logits, ref_logits)
  assert_trees_close(cache, ref_cache)


def test_recurrence_gradient_matches_autodiff():
  """The hand-written backward pass against autodiff of the same forward loop."""
  args = (random_normal(20, (L, B, 4 * H)), random_normal(21, (H, 4 * H), H ** -0.5),
          random_normal(22, (4 * H,)), random_normal(23, (B, H)), random_normal(24, (B, H)))

  def autodiff(xw, w_h, b, c0, h0):
    def step(carry, xw_t):
      c, h = carry
      i, f, g, o = jnp.split(h @ w_h + b + xw_t, 4, axis=-1)
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(c)
      return (c, h), (c, h)
    return jax.lax.scan(step, (c0, h0), xw)[1]

  def loss(fn):
    return lambda *a: readout(fn(*a)[1], fn(*a)[0])

  assert_trees_close(lstm_layers.lstm_recurrence(*args), autodiff(*args))
  argnums = tuple(range(len(args)))
  assert_trees_close(jax.grad(loss(lstm_layers.lstm_recurrence), argnums)(*args),
                     jax.grad(loss(autodiff), argnums)(*args))
