"""Scanned layer stacks, rematerialisation and bf16 compute in the Transformer."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.decoding import predict
from lmjax.models import build_model
from lmjax.models import transformer

V = 13


def make_model(kind='encdec', **kw):
  cfg = dict(family='transformer', kind=kind, share_embeddings=True, tie_output=True,
             emb_dim=16, num_heads=2, qkv_dim=16, mlp_dim=32, num_encoder_layers=2,
             num_decoder_layers=3, max_len=32, dropout_rate=0.1, attention_dropout_rate=0.1,
             pre_ln=True, position='sinusoidal')
  cfg.update(kw)
  return build_model(cfg, vocab_size=V, target_vocab_size=V)


def make_batch(seed=0, b=4):
  rng = np.random.default_rng(seed)
  inputs = jnp.asarray(rng.integers(2, V, size=(b, 7)), jnp.int32).at[:, 5:].set(0)
  return {'inputs': inputs, 'targets': jnp.asarray(rng.integers(2, V, size=(b, 6)), jnp.int32)}


def init(model, batch):
  return nn.meta.unbox(model.init({'params': jax.random.key(0)}, batch, train=False)['params'])


# T5's options (lmjax/hf/t5.py): relative position bias shared by a stack's layers (broadcast
# into the scan; in decoding, one row of it per step), RMSNorm, gated GELU, no biases.
T5 = dict(position='relative', relative_buckets=8, relative_max_distance=5, scale_attention=False,
          embed_scale='none', norm='rmsnorm', use_bias=False, mlp_activation='gated_gelu_tanh',
          scale_tied_logits=True)


@pytest.mark.parametrize('kind,extra', [('encdec', {}), ('decoder', {}), ('encdec', T5)],
                         ids=['encdec', 'decoder', 'encdec_t5'])
def test_scanned_stack_equals_unrolled_with_converted_params(kind, extra):
  batch = make_batch()
  unrolled, scanned = make_model(kind, **extra), make_model(kind, scan_layers=True, **extra)
  params = init(unrolled, batch)
  converted = transformer.unstacked_to_scanned(params)
  # Same tree as a scanned model creates, with a leading layers axis.
  assert (jax.tree.map(jnp.shape, converted) == jax.tree.map(jnp.shape, init(scanned, batch)))
  wi = 'wi_0' if extra else 'wi'
  assert converted['decoder']['layers']['mlp'][wi]['kernel'].shape == (3, 16, 32)
  full = unrolled.apply({'params': params}, batch, train=False)
  np.testing.assert_allclose(scanned.apply({'params': converted}, batch, train=False), full,
                             atol=1e-5, rtol=1e-5)
  back = transformer.scanned_to_unstacked(converted)
  assert jax.tree.structure(back) == jax.tree.structure(params)

  # Incremental decoding through the scanned cache equals the full forward pass.
  max_length, b = 8, batch['targets'].shape[0]
  encoded = scanned.apply({'params': converted}, batch['inputs'], method='encode')
  cache = predict.init_cache(scanned, converted, encoded, batch['inputs'], b, max_length)
  for leaf in jax.tree.leaves(cache):  # batch stays the leading axis (beam search gathers on it)
    assert leaf.shape[:2] == (b, 3)
  step = jax.jit(predict.make_step_fn(scanned, converted, encoded, batch['inputs'], max_length))
  token = jnp.zeros((b,), jnp.int32)
  for t in range(batch['targets'].shape[1]):
    logits, cache = step(cache, token, jnp.array(t, jnp.int32))
    np.testing.assert_allclose(logits, full[:, t], atol=1e-5, rtol=1e-5)
    token = batch['targets'][:, t]


def _grads(model, params, batch):
  def loss(p):
    logits = model.apply({'params': p}, batch, train=True, rngs={'dropout': jax.random.key(3)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets']).mean()
  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize('scan,policy', [(False, 'full'), (True, 'dots_saveable')])
def test_remat_gives_the_same_gradients(scan, policy):
  batch = make_batch(1)
  base = make_model('decoder', scan_layers=scan)  # dropout on: remat must replay the same masks
  params = init(base, batch)
  loss0, g0 = _grads(base, params, batch)
  loss1, g1 = _grads(make_model('decoder', scan_layers=scan, remat_policy=policy), params, batch)
  np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_unknown_remat_policy_is_a_clear_error():
  with pytest.raises(ValueError, match=r"remat_policy='some'"):
    init(make_model(remat_policy='some'), make_batch())


def test_bf16_compute_keeps_fp32_params_and_trains():
  batch = make_batch(2, b=8)
  model = make_model('decoder', dtype='bfloat16', scan_layers=True, remat_policy='full',
                     dropout_rate=0.0, attention_dropout_rate=0.0)
  params = init(model, batch)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype('float32')}
  logits = model.apply({'params': params}, batch, train=False)
  assert logits.dtype == jnp.float32  # logits are cast back for the loss
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      lg = model.apply({'params': p}, batch, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(lg, batch['targets']).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state, losses = tx.init(params), []
  for _ in range(10):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.3, losses
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype('float32')}
