"""config.model.matmul_dtype='bfloat16': bfloat16 operands, float32 results, forward and backward."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from configs import default
from lmjax.config import configlib
from lmjax.models import build_model
from lmjax.models import layers


def bf16_round(x):
  return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def test_bf16_dot_general_matches_a_numpy_reference_and_its_gradients():
  """Forward and both gradients equal float64 products of bfloat16-rounded operands."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 6)).astype(np.float32)  # contracts (6,) ...
  w = rng.normal(size=(6, 3, 4)).astype(np.float32)  # ... into (3, 4), as DenseGeneral
  dims = (((2,), (0,)), ((), ()))
  out = layers.bf16_dot_general(jnp.asarray(x), jnp.asarray(w), dims)
  assert out.shape == (2, 5, 3, 4) and out.dtype == jnp.float32
  ref = np.einsum('bld,dhk->blhk', bf16_round(x), bf16_round(w))
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  g = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
  dx, dw = jax.grad(lambda a, b: jnp.sum(layers.bf16_dot_general(a, b, dims) * g), (0, 1))(
      jnp.asarray(x), jnp.asarray(w))
  assert dx.dtype == dw.dtype == jnp.float32
  np.testing.assert_allclose(dx, np.einsum('blhk,dhk->bld', bf16_round(g), bf16_round(w)),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, np.einsum('bld,blhk->dhk', bf16_round(x), bf16_round(g)),
                             rtol=1e-5, atol=1e-5)
  exact = np.einsum('bld,dhk->blhk', x.astype(np.float64), w.astype(np.float64))
  assert np.abs(np.asarray(out) - exact).max() > 1e-4  # really rounded to bfloat16
  with pytest.raises(ValueError, match='trailing input axes with leading kernel axes'):
    layers.bf16_dot_general(jnp.asarray(x), jnp.asarray(w), (((1,), (0,)), ((), ())))


def make(matmul_dtype, tie_output):
  cfg = dict(family='transformer', kind='encdec', share_embeddings=True, tie_output=tie_output,
             emb_dim=16, num_heads=2, qkv_dim=16, mlp_dim=32, num_encoder_layers=1,
             num_decoder_layers=1, max_len=16, dropout_rate=0.0, attention_dropout_rate=0.0,
             pre_ln=True, position='learned', matmul_dtype=matmul_dtype)
  return build_model(cfg, vocab_size=11, target_vocab_size=11)


@pytest.mark.parametrize('tie_output', [True, False])
def test_model_with_bf16_matmuls_has_the_same_params_and_close_outputs(tie_output):
  rng = np.random.default_rng(1)
  batch = {'inputs': jnp.asarray(rng.integers(1, 11, (2, 7)), jnp.int32),
           'targets': jnp.asarray(rng.integers(1, 11, (2, 6)), jnp.int32)}
  f32, b16 = make('', tie_output), make('bfloat16', tie_output)
  params = nn.meta.unbox(f32.init(jax.random.key(0), batch, train=False)['params'])
  params16 = nn.meta.unbox(b16.init(jax.random.key(0), batch, train=False)['params'])
  assert jax.tree.structure(params) == jax.tree.structure(params16)  # checkpoints interchange
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params16)):
    np.testing.assert_array_equal(a, b)

  def loss(model, p):
    logits = model.apply({'params': p}, batch, train=False)
    return jnp.mean(jax.nn.logsumexp(logits, -1)), logits

  (l32, logits32), g32 = jax.value_and_grad(lambda p: loss(f32, p), has_aux=True)(params)
  (l16, logits16), g16 = jax.value_and_grad(lambda p: loss(b16, p), has_aux=True)(params)
  assert logits16.dtype == jnp.float32
  err = np.abs(np.asarray(logits16) - np.asarray(logits32)).max()
  assert 1e-5 < err < 0.05 * np.abs(np.asarray(logits32)).max()  # rounded, yet close
  for a, b in zip(jax.tree.leaves(g32), jax.tree.leaves(g16)):
    np.testing.assert_allclose(b, a, atol=0.05 * (np.abs(a).max() + 1e-3))


def test_matmul_dtype_is_validated():
  config = default.get_config()
  config.model.matmul_dtype = 'float16'
  with pytest.raises(ValueError, match='model.matmul_dtype'):
    configlib.validate(config)
  with pytest.raises(ValueError, match=r"config.model.matmul_dtype must be one of .*'float16'"):
    layers.matmul_fn('float16')
