"""Optimizer weight-decay mask, exact GELU and explicit decoder inputs behave as documented."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from lmjax.models import build_model
from lmjax.models import dropout_mask
from lmjax.models import layers
from lmjax import optim


def one_adamw_step(decay_matrices_only):
  cfg = default.get_config().optimizer
  cfg.update(name='adamw', schedule='constant', warmup_steps=0, learning_rate=0.1,
             weight_decay=0.5, grad_clip_norm=0.0, decay_matrices_only=decay_matrices_only)
  opt = optim.make_optimizer(cfg, total_steps=10)
  params = {'dense': {'kernel': jnp.ones((3, 2)), 'bias': jnp.ones((2,))},
            'ln': {'scale': jnp.ones((2,))}, 'embed': jnp.ones((5, 2))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = opt.update(zeros, opt.init(params), params)
  return jax.tree.map(lambda p, u: np.asarray(p + u), params, updates)


def test_decay_matrices_only_spares_biases_and_norm_scales():
  """With zero gradients only the decay moves params: p -= lr * wd * p = 0.95 p."""
  masked, full = one_adamw_step(True), one_adamw_step(False)
  np.testing.assert_allclose(masked['dense']['kernel'], 0.95)
  np.testing.assert_allclose(masked['embed'], 0.95)
  np.testing.assert_allclose(masked['dense']['bias'], 1.0)
  np.testing.assert_allclose(masked['ln']['scale'], 1.0)
  for leaf in jax.tree.leaves(full):
    np.testing.assert_allclose(leaf, 0.95)


def test_gelu_is_the_exact_erf_form_and_gelu_tanh_the_approximation():
  x = np.linspace(-4, 4, 41)
  exact = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
  tanh = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
  np.testing.assert_allclose(layers.ACTIVATIONS['gelu'](jnp.asarray(x)), exact, atol=1e-6)
  np.testing.assert_allclose(layers.ACTIVATIONS['gelu_tanh'](jnp.asarray(x)), tanh, atol=1e-6)
  assert np.abs(exact - tanh).max() > 1e-4  # the two really differ


def test_decoder_inputs_replace_the_shifted_targets():
  """batch['decoder_inputs'] is what the decoder reads: BOS + targets[:-1] reproduces the
  default (shift_right), a real context token instead of BOS changes every prediction."""
  cfg = dict(family='transformer', kind='decoder', share_embeddings=True, tie_output=True,
             emb_dim=16, num_heads=2, qkv_dim=16, mlp_dim=32, num_encoder_layers=0,
             num_decoder_layers=2, max_len=16, dropout_rate=0.0, attention_dropout_rate=0.0,
             pre_ln=True, position='learned', mlp_activation='gelu')
  model = build_model(cfg, vocab_size=13, target_vocab_size=13)
  targets = jnp.asarray(np.random.default_rng(0).integers(2, 13, size=(2, 8)), jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.key(0), {'targets': targets}, train=False)['params'])
  apply = lambda batch: np.asarray(model.apply({'params': params}, batch, train=False))
  plain = apply({'targets': targets})  # (B, T, V)
  bos = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), targets[:, :-1]], 1)
  np.testing.assert_allclose(apply({'targets': targets, 'decoder_inputs': bos}), plain, atol=1e-6)
  context = bos.at[:, 0].set(5)
  with_context = apply({'targets': targets, 'decoder_inputs': context})
  assert np.abs(with_context - plain).max(axis=-1).min() > 1e-4  # every position sees it


@pytest.mark.parametrize('rate', [0.1, 0.3, 0.5])
def test_keep_mask_rate_and_independence(rate):
  """16-bit dropout masks keep each element with probability 1 - rate, independently."""
  keep = np.asarray(dropout_mask.keep_mask(jax.random.key(0), (64, 250, 7), rate))  # odd last axis
  n = keep.size
  assert keep.shape == (64, 250, 7)
  assert abs(keep.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / n)
  # Neighbours (which share a 32-bit word or not) are uncorrelated.
  flat = keep.reshape(-1, 7).astype(float)
  for a, b in ((0, 1), (3, 4), (5, 6)):
    assert abs(np.corrcoef(flat[:, a], flat[:, b])[0, 1]) < 0.02
  other = np.asarray(dropout_mask.keep_mask(jax.random.key(1), (64, 250, 7), rate))
  assert (keep != other).mean() > 0.1


HUGE = (1024, 2048, 4096)  # 2^33 elements: only chosen coordinates are ever hashed


def test_keep_mask_hash_inputs_are_exact_beyond_2_to_the_32_elements():
  """Elements 2^32 apart in row-major order get different hash inputs; below 2^32 elements
  the input is the plain row-major index, and the masks are the ones earlier versions drew.

  Fails on the code before the fix, which hashed the row-major index mod 2^32: in a
  (1024, 2048, 4096) activation, rows 0 and 512 of the first axis had identical masks.
  """
  # Row-major indices 5 * 4096 + 7 and 2^32 + 5 * 4096 + 7.
  coords = [np.array([0, 512]), np.array([5, 5]), np.array([7, 7])]
  inner, outer = dropout_mask._index_words(HUGE, coords)
  assert outer is not None
  words = [(int(i), int(o)) for i, o in zip(np.asarray(inner), np.asarray(outer))]
  assert words[0] != words[1], words
  shape = (3, 1000, 1000, 1000)  # 3e9 elements: past int32, still one uint32 word
  coords = [np.random.default_rng(0).integers(0, d, 1000) for d in shape]
  inner, outer = dropout_mask._index_words(shape, coords)
  assert outer is None
  expected = np.ravel_multi_index(coords, shape).astype(np.int64) % 2**32
  np.testing.assert_array_equal(np.asarray(inner, np.int64), expected)
  # Pinned bits of a small mask, drawn with the code before the fix (resumed runs rely on them).
  keep = np.asarray(dropout_mask.keep_mask(jax.random.key(0), (4, 8, 9), 0.5))
  assert np.packbits(keep).tobytes().hex() == (
      '5aba40383bb4f4c51d5672b01b0ecd531b3e5d552d69b4ec73466b1bb3d5394116ab751d')


def test_keep_mask_beyond_2_to_the_32_elements_keeps_rate_and_independence():
  """Random elements of a 2^33-element mask and their partners 2^32 further on: each set
  keeps 1 - rate of its elements, and the two are uncorrelated. Fails on the code before
  the fix, where partners had equal bits (correlation 1)."""
  rng = np.random.default_rng(1)
  n, rate, key = 20000, 0.3, jax.random.key(3)
  coords = [rng.integers(0, 512, n), rng.integers(0, 2048, n), rng.integers(0, 4096, n)]
  partners = [coords[0] + 512, coords[1], coords[2]]
  keep, keep2 = (np.asarray(dropout_mask._keep_from_index(
      key, dropout_mask._index_words(HUGE, c), rate)) for c in (coords, partners))
  for k in (keep, keep2):
    assert abs(k.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / n)
  assert abs(np.corrcoef(keep, keep2)[0, 1]) < 0.04


def test_dropout_module_rescales_and_is_identity_when_deterministic():
  x = jnp.ones((32, 64))
  drop = layers.Dropout(0.25)
  out = np.asarray(drop.apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(3)}))
  assert np.all(np.isclose(out, 0.0) | np.isclose(out, 1.0 / 0.75))
  assert abs(out.mean() - 1.0) < 0.05
  np.testing.assert_array_equal(drop.apply({}, x, deterministic=True), x)


def decoder_params(init, layers_=4, d=64, **extra):
  cfg = dict(family='transformer', kind='decoder', share_embeddings=True, tie_output=True,
             emb_dim=d, num_heads=4, qkv_dim=d, mlp_dim=4 * d, num_encoder_layers=0,
             num_decoder_layers=layers_, max_len=16, dropout_rate=0.0,
             attention_dropout_rate=0.0, pre_ln=True, position='learned', init=init)
  cfg.update(extra)
  model = build_model(cfg, vocab_size=500, target_vocab_size=500)
  targets = jnp.ones((1, 8), jnp.int32)
  variables = model.init(jax.random.key(0), {'targets': targets}, train=False)
  return model, nn.meta.unbox(variables['params']), targets


def test_gpt2_init_has_gpt2_scales_and_unscaled_embeddings():
  """'gpt2': every matrix N(0, 0.02), residual projections 0.02 / sqrt(2 * 4 layers)."""
  model, params, targets = decoder_params('gpt2')
  std = lambda x: float(np.std(np.asarray(x)))
  assert abs(std(params['embed']['embedding']) - 0.02) < 0.001
  layer = params['decoder']['layer_1']
  for kernel in (layer['self_attention']['query']['kernel'], layer['mlp']['wi']['kernel']):
    assert abs(std(kernel) - 0.02) < 0.002
  for kernel in (layer['self_attention']['out']['kernel'], layer['mlp']['wo']['kernel']):
    assert abs(std(kernel) - 0.02 / math.sqrt(8)) < 0.001
  # The first layer's input is the raw embedding row plus the position: with all-zero
  # positions and weights, the logits are the embedding's Gram matrix row.
  zeroed = jax.tree_util.tree_map_with_path(
      lambda path, x: x if "['embed']" in jax.tree_util.keystr(path) else jnp.zeros_like(x),
      params)
  zeroed['decoder']['final_ln']['scale'] = jnp.ones_like(zeroed['decoder']['final_ln']['scale'])
  logits = np.asarray(model.apply({'params': zeroed}, {'targets': targets}, train=False))
  e = np.asarray(params['embed']['embedding'])
  x = e[1] - e[1].mean()
  x = x / np.sqrt(np.mean(x ** 2) + 1e-6)  # final LayerNorm of the unscaled row
  np.testing.assert_allclose(logits[0, 1], e @ x, rtol=1e-4, atol=1e-5)


def test_xavier_init_keeps_unit_scale_embeddings_and_rejects_unknown_styles():
  _, params, _ = decoder_params('xavier')
  assert abs(float(np.std(np.asarray(params['embed']['embedding']))) - 64 ** -0.5) < 0.005
  out = np.asarray(params['decoder']['layer_1']['mlp']['wo']['kernel'])
  assert abs(float(np.std(out)) - math.sqrt(2 / (256 + 64))) < 0.005  # Glorot
  with pytest.raises(ValueError, match='config.model.init'):
    decoder_params('kaiming')


def test_use_bias_false_drops_every_bias_and_equals_the_zero_bias_model():
  """use_bias=False: no bias anywhere (projections, LayerNorms, untied logits), and the same
  function as the biased model whose biases are zero (they are at init)."""
  targets = jnp.asarray([[3, 7, 1, 9, 4, 0, 0, 0]], jnp.int32)
  biased, p_biased, _ = decoder_params('xavier', layers_=2, tie_output=False)
  plain, p_plain, _ = decoder_params('xavier', layers_=2, tie_output=False, use_bias=False)
  keys = lambda p: [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(p)]
  assert not [k for k in keys(p_plain) if 'bias' in k]
  bias_keys = [k for k in keys(p_biased) if 'bias' in k]
  # query, value, out, wi, wo and 2 LayerNorms per layer; final LayerNorm; logits.
  assert len(bias_keys) == 2 * 7 + 2
  assert sorted(set(keys(p_biased)) - set(bias_keys)) == sorted(keys(p_plain))
  run = lambda m, p: np.asarray(m.apply({'params': p}, {'targets': targets}, train=False))
  np.testing.assert_allclose(run(plain, p_plain), run(biased, p_biased), rtol=1e-5, atol=1e-5)
  shifted = jax.tree_util.tree_map_with_path(
      lambda k, x: x + 0.5 if 'bias' in jax.tree_util.keystr(k) else x, p_biased)
  assert np.abs(run(biased, shifted) - run(plain, p_plain)).max() > 1e-2
