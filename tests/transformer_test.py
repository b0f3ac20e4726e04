"""Masking, packing and incremental-decoding behaviour of the Transformer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.decoding import predict
from lmjax.models import build_model

V = 13


def make_model(kind='encdec', pre_ln=True, position='sinusoidal', tie=True, share=True):
  cfg = dict(family='transformer', kind=kind, share_embeddings=share, tie_output=tie,
             emb_dim=16, num_heads=2, qkv_dim=16, mlp_dim=32, num_encoder_layers=2,
             num_decoder_layers=2, max_len=32, dropout_rate=0.1, attention_dropout_rate=0.1,
             pre_ln=pre_ln, position=position)
  return build_model(cfg, vocab_size=V, target_vocab_size=V)


def init(model, batch):
  variables = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, batch, train=False)
  return nn.meta.unbox(variables['params'])


def rand_ids(rng, shape):
  return jnp.asarray(rng.integers(2, V, size=shape), jnp.int32)


VARIANTS = [dict(pre_ln=True, position='sinusoidal', tie=True, share=True),
            dict(pre_ln=False, position='learned', tie=False, share=False)]


@pytest.mark.parametrize('variant', VARIANTS)
def test_causal_future_target_does_not_change_earlier_logits(variant):
  rng = np.random.default_rng(0)
  model = make_model(**variant)
  batch = {'inputs': rand_ids(rng, (2, 7)), 'targets': rand_ids(rng, (2, 6))}
  params = init(model, batch)
  base = model.apply({'params': params}, batch, train=False)
  changed = dict(batch, targets=batch['targets'].at[:, 4].set(3))
  out = model.apply({'params': params}, changed, train=False)
  # Logits at t depend on targets < t only: positions 0..4 are unchanged.
  np.testing.assert_allclose(out[:, :5], base[:, :5], atol=1e-6)
  assert not np.allclose(out[:, 5:], base[:, 5:])


@pytest.mark.parametrize('variant', VARIANTS)
def test_padding_does_not_change_real_outputs(variant):
  rng = np.random.default_rng(1)
  model = make_model(**variant)
  inputs, targets = rand_ids(rng, (2, 5)), rand_ids(rng, (2, 4))
  batch = {'inputs': inputs, 'targets': targets}
  params = init(model, batch)
  base = model.apply({'params': params}, batch, train=False)
  padded = {'inputs': jnp.pad(inputs, ((0, 0), (0, 4))),
            # Target positions after the real ones hold arbitrary tokens.
            'targets': jnp.concatenate([targets, rand_ids(rng, (2, 3))], axis=1)}
  out = model.apply({'params': params}, padded, train=False)
  np.testing.assert_allclose(out[:, :4], base, atol=1e-5)


@pytest.mark.parametrize('kind', ['encdec', 'decoder'])
def test_packed_rows_equal_separate_rows(kind):
  rng = np.random.default_rng(2)
  model = make_model(kind=kind)
  a_in, b_in = rand_ids(rng, (1, 4)), rand_ids(rng, (1, 3))
  a_t, b_t = rand_ids(rng, (1, 3)), rand_ids(rng, (1, 5))
  params = init(model, {'inputs': a_in, 'targets': a_t})
  alone_a = model.apply({'params': params}, {'inputs': a_in, 'targets': a_t}, train=False)
  alone_b = model.apply({'params': params}, {'inputs': b_in, 'targets': b_t}, train=False)
  packed = {
      'inputs': jnp.concatenate([a_in, b_in, jnp.zeros((1, 2), jnp.int32)], 1),
      'inputs_segmentation': jnp.array([[1, 1, 1, 1, 2, 2, 2, 0, 0]]),
      'inputs_position': jnp.array([[0, 1, 2, 3, 0, 1, 2, 0, 0]]),
      'targets': jnp.concatenate([a_t, b_t, jnp.zeros((1, 1), jnp.int32)], 1),
      'targets_segmentation': jnp.array([[1, 1, 1, 2, 2, 2, 2, 2, 0]]),
      'targets_position': jnp.array([[0, 1, 2, 0, 1, 2, 3, 4, 0]]),
  }
  out = model.apply({'params': params}, packed, train=False)
  np.testing.assert_allclose(out[:, :3], alone_a, atol=1e-5)
  np.testing.assert_allclose(out[:, 3:8], alone_b, atol=1e-5)


@pytest.mark.parametrize('kind', ['encdec', 'decoder'])
@pytest.mark.parametrize('variant', VARIANTS)
def test_incremental_decoding_matches_full_forward(kind, variant):
  rng = np.random.default_rng(3)
  model = make_model(kind=kind, **variant)
  inputs = jnp.concatenate([rand_ids(rng, (3, 5)), jnp.zeros((3, 2), jnp.int32)], 1)
  inputs = inputs.at[1, 5:].set(4)  # row 1 without padding
  targets = rand_ids(rng, (3, 6))
  batch = {'inputs': inputs, 'targets': targets}
  params = init(model, batch)
  full = model.apply({'params': params}, batch, train=False)  # (B, T, V)
  max_length = 8
  encoded = model.apply({'params': params}, inputs, method='encode')
  cache = predict.init_cache(model, params, encoded, inputs, 3, max_length)
  step = jax.jit(predict.make_step_fn(model, params, encoded, inputs, max_length))
  token = jnp.zeros((3,), jnp.int32)
  for t in range(targets.shape[1]):
    logits, cache = step(cache, token, jnp.array(t, jnp.int32))
    np.testing.assert_allclose(logits, full[:, t], atol=1e-5, rtol=1e-5)
    token = targets[:, t]


def test_dropout_is_active_only_in_training():
  rng = np.random.default_rng(4)
  model = make_model()
  batch = {'inputs': rand_ids(rng, (2, 5)), 'targets': rand_ids(rng, (2, 4))}
  params = init(model, batch)
  eval1 = model.apply({'params': params}, batch, train=False)
  eval2 = model.apply({'params': params}, batch, train=False)
  np.testing.assert_array_equal(eval1, eval2)
  tr1 = model.apply({'params': params}, batch, train=True, rngs={'dropout': jax.random.key(0)})
  tr2 = model.apply({'params': params}, batch, train=True, rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(tr1, tr2)


def test_build_model_rejects_unknown_field():
  with pytest.raises(ValueError, match='bogus'):
    build_model(dict(family='transformer', kind='encdec', bogus=1), vocab_size=5, target_vocab_size=5)
  with pytest.raises(ValueError, match='valid: '):
    build_model(dict(family='nope', kind='encdec'))
