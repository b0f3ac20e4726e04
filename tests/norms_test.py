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


def test_rmsnorm_matches_flax_rmsnorm_and_numpy_forward_and_backward():
  """kind='rmsnorm' (T5's norm): no centring, scale only; the params and outputs of
  flax's nn.RMSNorm, and its gradients those of autodiff through nn.RMSNorm."""
  from lmjax.models import layers  # pylint: disable=g-import-not-at-top
  x, scale, _, dy = _inputs(2)
  ours = layers.layer_norm(kind='rmsnorm', epsilon=1e-6)
  ref = nn.RMSNorm(epsilon=1e-6)
  params = nn.meta.unbox(ours.init(jax.random.key(0), x))
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref.init(jax.random.key(0), x))
  params = {'params': {'scale': jnp.asarray(scale)}}
  x64 = x.astype(np.float64)
  want = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-6) * scale
  np.testing.assert_allclose(ours.apply(params, x), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)

  loss = lambda module: lambda p, x: jnp.sum(module.apply(p, x) * dy)
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)
  # The centring term is really gone: LayerNorm's gradient differs on the same inputs.
  ln = layers.layer_norm(use_bias=False)
  g_ln = jax.grad(loss(ln), argnums=1)(params, x)
  assert float(jnp.abs(g_ln - g_ours[1]).max()) > 1e-2
  with pytest.raises(ValueError, match=r"config.model.norm='batchnorm': expected one of "
                                       r'layernorm, rmsnorm'):
    layers.layer_norm(kind='batchnorm')


def test_transformer_with_rmsnorm_has_scale_only_norms_and_trains():
  """config.model.norm='rmsnorm' and norm_epsilon reach every norm of a Transformer (the
  sublayers' and the final one): scale params only, and a few steps lower the loss."""
  import optax  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from lmjax import models  # pylint: disable=g-import-not-at-top
  config = default.get_config('runlocal')
  config.model.norm, config.model.norm_epsilon = 'rmsnorm', 1e-5
  model = models.build_model(config.model, vocab_size=20, target_vocab_size=20)
  rng = np.random.default_rng(0)
  batch = {'inputs': jnp.asarray(rng.integers(1, 20, (4, 6))),
           'targets': jnp.asarray(rng.integers(1, 20, (4, 6)))}
  params = nn.meta.unbox(model.init(jax.random.key(0), batch, train=False))
  norm_params = {'/'.join(str(getattr(k, 'key', k)) for k in path): v
                 for path, v in jax.tree_util.tree_leaves_with_path(params) if '_ln' in str(path)}
  assert norm_params and all(name.endswith('scale') for name in norm_params), sorted(norm_params)
  assert any('final_ln' in name for name in norm_params)

  def loss_fn(p):
    logits = model.apply(p, batch, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets']).mean()

  tx = optax.adam(1e-2)
  opt = tx.init(params)
  losses = []
  for _ in range(5):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    params = optax.apply_updates(params, updates)
    losses.append(float(loss))
  assert losses[-1] < losses[0], losses
