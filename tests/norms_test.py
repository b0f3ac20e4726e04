"""norms.LayerNorm: forward against numpy, backward against autodiff of the plain formula,
and the params/outputs of flax's nn.LayerNorm (checkpoints stay interchangeable)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models import norms


def _inputs(seed=0, shape=(3, 5, 16)):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32) * 3 + 1
  scale = rng.normal(size=shape[-1:]).astype(np.float32)
  bias = rng.normal(size=shape[-1:]).astype(np.float32)
  dy = rng.normal(size=shape).astype(np.float32)
  return x, scale, bias, dy


def _numpy_ln(x, scale, bias, eps=1e-6):
  x = x.astype(np.float64)
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  y = (x - mu) / np.sqrt(var + eps) * scale
  return y if bias is None else y + bias


def _plain_ln(x, scale, bias, eps=1e-6):
  """The formula, differentiated by JAX's autodiff (the reference backward)."""
  mu = jnp.mean(x, -1, keepdims=True)
  var = jnp.mean(jnp.square(x - mu), -1, keepdims=True)
  y = (x - mu) / jnp.sqrt(var + eps) * scale
  return y if bias is None else y + bias


@pytest.mark.parametrize('with_bias', [True, False])
def test_forward_and_gradients_match_references(with_bias):
  x, scale, bias, dy = _inputs()
  bias = bias if with_bias else None
  y = norms.layer_norm_fn(x, scale, bias, 1e-6)
  np.testing.assert_allclose(y, _numpy_ln(x, scale, bias), rtol=1e-5, atol=1e-5)

  def loss(fn):
    return lambda x, scale, *b: jnp.sum(fn(x, scale, b[0] if b else None, 1e-6) * dy)

  args = (x, scale) if bias is None else (x, scale, bias)
  argnums = tuple(range(len(args)))
  ours = jax.grad(loss(norms.layer_norm_fn), argnums)(*args)
  ref = jax.grad(loss(_plain_ln), argnums)(*args)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)
  assert float(jnp.abs(ours[0]).max()) > 0.1  # a real gradient, not zeros


@pytest.mark.parametrize('use_bias', [True, False])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_same_params_and_outputs_as_flax_layernorm(use_bias, dtype):
  x, _, _, dy = _inputs(1)
  ours, theirs = norms.LayerNorm(dtype=dtype, use_bias=use_bias), nn.LayerNorm(dtype=dtype,
                                                                               use_bias=use_bias)
  params = nn.meta.unbox(ours.init(jax.random.key(0), x))
  reference = theirs.init(jax.random.key(0), x)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(reference)
  rng = np.random.default_rng(2)
  params = jax.tree_util.tree_map(lambda p: p + rng.normal(size=p.shape).astype(p.dtype), params)
  y, y_ref = ours.apply(params, x), theirs.apply(params, x)
  assert y.dtype == y_ref.dtype == dtype
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(np.float32(y), np.float32(y_ref), rtol=tol, atol=tol)
  g = jax.grad(lambda p: jnp.sum(ours.apply(p, x).astype(jnp.float32) * dy))(params)
  g_ref = jax.grad(lambda p: jnp.sum(theirs.apply(p, x).astype(jnp.float32) * dy))(params)
  for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4 if dtype == jnp.float32 else 5e-2, atol=1e-3)


def test_params_are_logically_partitioned():
  variables = norms.LayerNorm().init(jax.random.key(0), jnp.ones((2, 8)))
  names = jax.tree_util.tree_map(lambda p: p.names, variables['params'],
                                 is_leaf=lambda p: isinstance(p, nn.LogicallyPartitioned))
  assert names == {'scale': ('embed',), 'bias': ('embed',)}
