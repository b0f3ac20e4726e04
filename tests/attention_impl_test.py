"""config.model.attention_impl and dtype='auto' (issue 34).

Every attention implementation that runs on CPU ('xla', and the argument forms that
'cudnn' and 'splash' use, run through XLA and through the Pallas interpreter) equals
'reference' — outputs and gradients, float32, atol 1e-5 — with padding, causal and
packed-segment masks, in the attention module and in whole tiny Transformers; 'auto'
resolves per platform; the kernels a platform lacks fail naming the config field.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import parallel
from lmjax import platforms
from lmjax import runtime
from lmjax.config import configlib
from lmjax.decoding import predict
from lmjax.models import attention
from lmjax.models import attention_impls
from lmjax.models import build_model
from lmjax.models import heads
from lmjax.models import transformer
from configs import default

ATOL = 1e-5
V = 11
B, L, S, D = 2, 7, 5, 16  # batch, query length, key length (cross), model width


def _mask(case):
  """An AttentionMask of each kind, on (B, L) queries and (B, L|S) keys."""
  pad_l = jnp.array([[1] * 7, [1] * 4 + [0] * 3], bool)  # (B, L) padding follows real tokens
  pad_s = jnp.array([[1] * 5, [1] * 2 + [0] * 3], bool)  # (B, S)
  seg_l = jnp.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 2, 2, 2, 3, 0]], jnp.int32)
  seg_s = jnp.array([[1, 1, 2, 2, 0], [1, 2, 2, 3, 0]], jnp.int32)
  ones = jnp.ones((B, L), bool)
  return {
      'self_padding': attention_impls.AttentionMask(pad_l, pad_l),
      'self_causal': attention_impls.AttentionMask(ones, ones, causal=True),
      'self_packed': attention_impls.AttentionMask(seg_l > 0, seg_l > 0, seg_l, seg_l),
      'self_packed_causal': attention_impls.AttentionMask(ones, ones, seg_l, seg_l, causal=True),
      'cross_padding': attention_impls.AttentionMask(ones, pad_s),
      'cross_packed': attention_impls.AttentionMask(ones, seg_s > 0, seg_l, seg_s),
  }[case]


CASES = ['self_padding', 'self_causal', 'self_packed', 'self_packed_causal', 'cross_padding',
         'cross_packed']


def _inputs(case, seed=0):
  rng = np.random.default_rng(seed)
  x_q = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
  x_kv = x_q if case.startswith('self') else jnp.asarray(rng.normal(size=(B, S, D)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)  # loss weights of the outputs
  return x_q, x_kv, w


def _real_rows(mask):
  """(B, L) True on query rows that attend to something real (not padding)."""
  real = mask.q_valid if mask.q_segment is None else mask.q_valid & (mask.q_segment > 0)
  return real & jnp.any(mask.dense()[:, 0], axis=-1)


def _module_value_and_grads(impl, case):
  x_q, x_kv, w = _inputs(case)
  mask = _mask(case)
  module = attention.MultiHeadAttention(num_heads=2, qkv_dim=D, attention_impl=impl)
  # nn.Module.init: the module's own `init` attribute names its init style.
  params = nn.Module.init(module, jax.random.key(0), x_q, x_kv, mask, deterministic=True)

  def loss(p, xq, xkv):
    out = module.apply(p, xq, xkv, mask, deterministic=True)
    return jnp.sum(out * w), out

  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
      params, x_q, x_kv)
  return out, grads


def _assert_trees_close(a, b, atol=ATOL):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


@pytest.mark.parametrize('case', ['self_padding', 'self_packed_causal', 'cross_padding',
                                  'cross_packed'])
def test_xla_attention_module_equals_reference(case):
  ref_out, ref_grads = _module_value_and_grads('reference', case)
  out, grads = _module_value_and_grads('xla', case)
  np.testing.assert_allclose(out, ref_out, atol=ATOL, rtol=0)  # every row, padding ones too
  _assert_trees_close(grads, ref_grads)


def _core(fn, case, seed=1):
  """Outputs and q/k/v gradients of `fn(q, k, v, mask)`, weighted on real query rows."""
  rng = np.random.default_rng(seed)
  lk = L if case.startswith('self') else S
  q, k, v = (jnp.asarray(rng.normal(size=(B, n, 2, 8)), jnp.float32) for n in (L, lk, lk))
  mask = _mask(case)
  w = jnp.asarray(rng.normal(size=(B, L, 2, 8)), jnp.float32) * _real_rows(mask)[:, :, None, None]
  loss = lambda q, k, v: jnp.sum(fn(q, k, v, mask) * w)
  out = jax.jit(fn)(q, k, v, mask) * _real_rows(mask)[:, :, None, None]
  return out, jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


def _reference(q, k, v, mask):
  return attention.dot_product_attention(q, k, v, mask.dense(), None, 0.0, True, jnp.float32)


@pytest.mark.parametrize('case', CASES)
def test_cudnn_arguments_through_xla_equal_reference(case):
  """The masking arguments the 'cudnn' path passes (sequence lengths / dense mask,
  is_causal) mean the same as the reference mask: checked by running them through XLA."""
  cudnn_form = lambda q, k, v, mask: jax.nn.dot_product_attention(
      q, k, v, implementation='xla', **attention_impls.cudnn_arguments(mask))
  out, grads = _core(cudnn_form, case)
  ref_out, ref_grads = _core(_reference, case)
  np.testing.assert_allclose(out, ref_out, atol=ATOL, rtol=0)
  _assert_trees_close(grads, ref_grads)


@pytest.mark.parametrize('case', ['self_padding', 'self_packed_causal', 'cross_packed'])
def test_splash_kernel_in_the_pallas_interpreter_equals_reference(case):
  """The 'splash' path (segment ids, 128-padding, Causal/FullMask), run by the Pallas
  interpreter on CPU, equals the reference on real query rows."""
  splash = lambda q, k, v, mask: attention_impls.splash_attention(q, k, v, mask, interpret=True)
  out, grads = _core(splash, case)
  ref_out, ref_grads = _core(_reference, case)
  np.testing.assert_allclose(out, ref_out, atol=ATOL, rtol=0)
  _assert_trees_close(grads, ref_grads)


def test_splash_segment_ids_give_every_query_a_key():
  # Row 1: its source is all padding, so its queries (id 1) would see nothing.
  mask = attention_impls.AttentionMask(jnp.ones((2, 3), bool),
                                       jnp.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool))
  q_ids, kv_ids = attention_impls.splash_segment_ids(mask, 128, 128)
  assert q_ids.shape == kv_ids.shape == (2, 128)
  seen = np.any(np.asarray(q_ids)[:, :, None] == np.asarray(kv_ids)[:, None, :], axis=-1)
  assert seen.all()
  np.testing.assert_array_equal(q_ids[0, :3], [1, 1, 1])


def _model(kind, impl, **extra):
  cfg = dict(family='transformer', kind=kind, share_embeddings=True, tie_output=True,
             emb_dim=D, num_heads=2, qkv_dim=D, mlp_dim=32, num_encoder_layers=1,
             num_decoder_layers=1, max_len=16, dropout_rate=0.0, attention_dropout_rate=0.0,
             pre_ln=True, position='sinusoidal', attention_impl=impl, **extra)
  return build_model(cfg, vocab_size=V, target_vocab_size=V)


def _batch(kind):
  rng = np.random.default_rng(3)
  ids = lambda *shape: jnp.asarray(rng.integers(2, V, size=shape), jnp.int32)
  if kind == 'decoder_packed':
    seg = jnp.array([[1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 2, 2, 3, 3, 3, 3]], jnp.int32)
    pos = jnp.array([[0, 1, 2, 0, 1, 2, 0, 0], [0, 1, 0, 1, 0, 1, 2, 3]], jnp.int32)
    return {'targets': jnp.where(seg > 0, ids(B, 8), 0), 'targets_segmentation': seg,
            'targets_position': pos}
  if kind == 'encdec_packed':
    in_seg = jnp.array([[1, 1, 1, 2, 2, 0], [1, 2, 2, 2, 3, 3]], jnp.int32)
    in_pos = jnp.array([[0, 1, 2, 0, 1, 0], [0, 0, 1, 2, 0, 1]], jnp.int32)
    tgt_seg = jnp.array([[1, 1, 2, 2, 2, 0, 0], [1, 1, 2, 3, 3, 3, 0]], jnp.int32)
    tgt_pos = jnp.array([[0, 1, 0, 1, 2, 0, 0], [0, 1, 0, 0, 1, 2, 0]], jnp.int32)
    return {'inputs': jnp.where(in_seg > 0, ids(B, 6), 0), 'inputs_segmentation': in_seg,
            'inputs_position': in_pos, 'targets': jnp.where(tgt_seg > 0, ids(B, 7), 0),
            'targets_segmentation': tgt_seg, 'targets_position': tgt_pos}
  return {'inputs': ids(B, 6).at[1, 3:].set(0), 'targets': ids(B, 7).at[0, 5:].set(0)}


def _init(model, batch):
  init = jax.jit(lambda r: model.init({'params': r}, batch, train=False)['params'])
  return nn.meta.unbox(init(jax.random.key(0)))


def _model_value_and_grads(kind, impl, params, **extra):
  model = _model(kind.split('_')[0], impl, **extra)
  batch = _batch(kind)

  def loss(p):
    logits = model.apply({'params': p}, batch, train=False)
    w = jnp.cos(jnp.arange(logits.size, dtype=jnp.float32)).reshape(logits.shape)
    return jnp.sum(logits * w), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return logits, grads


# Padding (encoder self, decoder causal, cross); packed segments through nn.scan + remat;
# a packed decoder-only LM. (The encoder heads run the same transformer.Encoder.)
@pytest.mark.parametrize('kind,extra', [
    ('encdec', {}), ('encdec_packed', {'scan_layers': True, 'remat_policy': 'full'}),
    ('decoder_packed', {})])
def test_whole_transformer_with_xla_attention_equals_reference(kind, extra):
  params = _init(_model(kind.split('_')[0], 'reference', **extra), _batch(kind))
  ref_logits, ref_grads = _model_value_and_grads(kind, 'reference', params, **extra)
  logits, grads = _model_value_and_grads(kind, 'xla', params, **extra)
  np.testing.assert_allclose(logits, ref_logits, atol=ATOL, rtol=0)
  _assert_trees_close(grads, ref_grads)


def test_greedy_and_beam_decoding_with_xla_attention_equal_reference():
  inputs = _batch('encdec')['inputs']
  out = {}
  params = _init(_model('encdec', 'reference'), _batch('encdec'))
  for impl in ('reference', 'xla'):
    model = _model('encdec', impl)
    greedy = jax.jit(lambda p: predict.greedy_decode(model, p, inputs, max_length=6))(params)
    seqs, scores = jax.jit(lambda p: predict.beam_decode(model, p, inputs, beam_size=3,
                                                         max_length=6, alpha=0.6))(params)
    out[impl] = greedy, seqs, scores
  np.testing.assert_array_equal(out['xla'][0], out['reference'][0])
  np.testing.assert_array_equal(out['xla'][1], out['reference'][1])
  np.testing.assert_allclose(out['xla'][2], out['reference'][2], atol=ATOL)


@pytest.mark.parametrize('platform,dtype,head_dim,devices,expected', [
    ('cpu', 'float32', 64, 1, platforms.CPU_ATTENTION),
    ('cpu', 'bfloat16', 64, 1, platforms.CPU_ATTENTION),
    ('gpu', 'bfloat16', 64, 1, 'cudnn'),
    ('gpu', 'bfloat16', 128, 8, 'cudnn'),
    ('gpu', 'float32', 64, 1, 'xla'),  # cuDNN flash attention takes 16-bit inputs only
    ('gpu', 'bfloat16', 12, 1, 'xla'),  # head width not a multiple of 8
    ('gpu', 'bfloat16', 256, 1, 'xla'),
    ('tpu', 'bfloat16', 64, 1, 'splash'),
    ('tpu', 'float32', 64, 1, 'splash'),
    ('tpu', 'bfloat16', 64, 8, 'splash'),  # in a shard_map over the batch (and head) axes
])
def test_auto_attention_resolves_by_platform(monkeypatch, platform, dtype, head_dim, devices,
                                             expected):
  monkeypatch.setattr(platforms, 'backend', lambda: platform)
  monkeypatch.setattr(platforms.jax, 'device_count', lambda: devices)
  assert platforms.resolve_attention_impl('auto', dtype=dtype, head_dim=head_dim) == expected
  # Attention-weight dropout exists only in the reference implementation.
  assert platforms.resolve_attention_impl('auto', dtype=dtype, head_dim=head_dim,
                                          dropout=True) == 'reference'
  for name in ('reference', 'xla'):
    assert platforms.resolve_attention_impl(name, dtype=dtype, head_dim=head_dim) == name


@pytest.mark.parametrize('impl', ['cudnn', 'splash'])
def test_kernels_missing_on_cpu_fail_naming_the_config_field(impl):
  assert platforms.backend() == 'cpu'
  model = _model('encdec', impl)
  with pytest.raises(ValueError, match=rf"config\.model\.attention_impl='{impl}' needs a "
                                       r"(GPU|TPU) \(this process runs on cpu\)"):
    model.init({'params': jax.random.key(0)}, _batch('encdec'), train=False)


def test_cudnn_needs_bf16_and_no_attention_dropout_is_fused(monkeypatch):
  monkeypatch.setattr(platforms, 'backend', lambda: 'gpu')
  with pytest.raises(ValueError, match=r"attention_impl='cudnn'.*config\.model\.dtype"):
    platforms.resolve_attention_impl('cudnn', dtype='float32')
  with pytest.raises(ValueError, match=r'config\.model\.attention_dropout_rate=0'):
    platforms.resolve_attention_impl('xla', dropout=True)
  with pytest.raises(ValueError, match=r'config\.model\.attention_impl=.flash.'):
    platforms.resolve_attention_impl('flash')


def test_config_validation_lists_the_valid_attention_impls_and_dtypes():
  config = default.get_config('runlocal')
  assert config.model.attention_impl == 'auto' and config.model.dtype == 'auto'
  configlib.validate(config)
  config.model.attention_impl, config.model.dtype = 'flash', 'fp16'
  with pytest.raises(configlib.ConfigError) as e:
    configlib.validate(config)
  assert "config.model.attention_impl='flash'" in str(e.value) and "'splash'" in str(e.value)
  assert "config.model.dtype='fp16'" in str(e.value)


@pytest.mark.parametrize('platform,expected', [('cpu', 'float32'), ('gpu', 'bfloat16'),
                                               ('tpu', 'bfloat16')])
def test_auto_dtype_is_float32_on_cpu_and_bfloat16_on_accelerators(monkeypatch, platform,
                                                                   expected):
  monkeypatch.setattr(platforms, 'backend', lambda: platform)
  assert platforms.resolve_dtype('auto') == expected
  assert platforms.resolve_dtype('float32') == 'float32'
  assert _model('encdec', 'reference', dtype='auto').config.jnp_dtype == jnp.dtype(expected)
  enc = heads.TransformerEncoderConfig(
      vocab_size=V, emb_dim=D, num_heads=2, qkv_dim=D, mlp_dim=32, num_encoder_layers=1,
      max_len=16, dropout_rate=0.0, attention_dropout_rate=0.0, pre_ln=True,
      position='sinusoidal', pooling='mean', use_crf=False, head='classify', dtype='auto',
      attention_impl='xla')
  assert enc.jnp_dtype == jnp.dtype(expected)
  with pytest.raises(ValueError, match=r'config\.model\.dtype'):
    platforms.resolve_dtype('fp8')


def test_auto_dtype_on_gpu_gives_bf16_activations_and_float32_params(monkeypatch):
  monkeypatch.setattr(platforms, 'backend', lambda: 'gpu')
  model = _model('encdec', 'reference', dtype='auto')
  batch = _batch('encdec')
  variables = jax.jit(lambda r: model.init({'params': r}, batch, train=False))(jax.random.key(0))
  # Params, and so the optimizer state made from them, stay float32.
  assert {x.dtype for x in jax.tree.leaves(nn.meta.unbox(variables))} == {jnp.dtype('float32')}
  _, inter = jax.jit(lambda v: model.apply(
      v, batch, train=False, mutable=['intermediates'],
      capture_intermediates=lambda mdl, _: isinstance(mdl, transformer.Block)))(variables)
  assert {x.dtype for x in jax.tree.leaves(inter)} == {jnp.dtype('bfloat16')}


def test_compilation_cache_dir_is_set_at_start_up(monkeypatch, tmp_path):
  updates = {}
  monkeypatch.setattr(runtime.jax.config, 'update', lambda k, v: updates.__setitem__(k, v))
  config = default.get_config('runlocal')
  assert config.compilation_cache_dir == ''
  runtime.setup(config)
  assert 'jax_compilation_cache_dir' not in updates
  config.compilation_cache_dir = str(tmp_path / 'xla_cache')
  runtime.setup(config)
  assert updates['jax_compilation_cache_dir'] == str(tmp_path / 'xla_cache')


def test_cudnn_at_odd_packed_lengths_falls_back_to_xla_under_auto(monkeypatch):
  """JAX's cuDNN path trains with a mask only at even lengths: 'auto' then runs 'xla' (on
  CPU here, where the platform lookup says 'gpu'); an explicit 'cudnn' names the field."""
  monkeypatch.setattr(platforms, 'backend', lambda: 'gpu')
  x_q, _, _ = _inputs('self_packed')  # L = 7
  mask = _mask('self_packed')
  assert attention_impls.cudnn_unsupported(L, L, mask) and not attention_impls.cudnn_unsupported(
      L, L, _mask('self_padding'))
  outs = {}
  for impl in ('auto', 'reference'):
    module = attention.MultiHeadAttention(num_heads=2, qkv_dim=D, attention_impl=impl,
                                          dtype=jnp.bfloat16)
    params = nn.Module.init(module, jax.random.key(0), x_q, x_q, mask, deterministic=True)
    outs[impl] = module.apply(params, x_q, x_q, mask, deterministic=True)
  np.testing.assert_allclose(np.asarray(outs['auto'], np.float32),
                             np.asarray(outs['reference'], np.float32), atol=0.05)
  module = attention.MultiHeadAttention(num_heads=2, qkv_dim=D, attention_impl='cudnn',
                                        dtype=jnp.bfloat16)
  with pytest.raises(ValueError, match=r"config\.model\.attention_impl='cudnn': packed rows"):
    nn.Module.init(module, jax.random.key(0), x_q, x_q, mask, deterministic=True)


def test_every_model_dtype_resolves_auto_through_the_platform(monkeypatch):
  from lmjax.models import lstm, lstm_vae  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(platforms, 'backend', lambda: 'tpu')
  for cls in (transformer.TransformerConfig, heads.TransformerEncoderConfig, lstm.LSTMConfig,
              lstm_vae.VAEConfig):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    needed = {n: 1 for n, f in fields.items()
              if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert cls(**needed, dtype='auto').jnp_dtype == jnp.dtype('bfloat16'), cls.__name__


def _batch_of_8(case, seed=2):
  """q, k, v (8, L, 2, 8) and the case's mask tiled to 8 rows (a batch each device can split)."""
  rng = np.random.default_rng(seed)
  lk = L if case.startswith('self') else S
  q, k, v = (jnp.asarray(rng.normal(size=(8, n, 2, 8)), jnp.float32) for n in (L, lk, lk))
  mask = jax.tree.map(lambda x: jnp.tile(x, (4, 1)), _mask(case))
  return q, k, v, mask


@pytest.mark.parametrize('case', ['self_padding', 'self_packed_causal'])
@pytest.mark.parametrize('sharding,mesh', [
    ('dp', {'data': 8, 'fsdp': 1, 'model': 1}),
    ('fsdp', {'data': 2, 'fsdp': 4, 'model': 1}),
    ('fsdp_tp', {'data': 2, 'fsdp': 2, 'model': 2}),  # heads split over 'model' too
])
def test_splash_runs_in_a_shard_map_over_the_mesh(case, sharding, mesh):
  """Under the trainer's mesh and rules the splash kernel (Pallas interpreter) runs per
  device on its rows (and heads): outputs and gradients equal the reference on real rows."""
  config = default.get_config('runlocal')
  config.sharding = sharding
  rules = parallel.rules_from_config(config)
  mesh = parallel.create_mesh(mesh)
  q, k, v, mask = _batch_of_8(case)
  real = _real_rows(mask)[:, :, None, None]
  w = jnp.asarray(np.random.default_rng(3).normal(size=q.shape), jnp.float32) * real

  def value_and_grads(fn):
    loss = lambda q, k, v: jnp.sum(fn(q, k, v, mask) * w)
    return fn(q, k, v, mask) * real, jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  splash = lambda q, k, v, m: attention_impls.splash_attention(q, k, v, m, interpret=True)
  step = parallel.RulesJit(lambda: value_and_grads(splash), mesh, rules)
  assert 'manual_computation' in step.lower().as_text()  # the shard_map'd kernel
  out, grads = step()
  ref_out, ref_grads = jax.jit(lambda: value_and_grads(_reference))()
  np.testing.assert_allclose(out, ref_out, atol=ATOL, rtol=0)
  _assert_trees_close(grads, ref_grads)


def test_auto_on_a_multi_device_tpu_lowers_the_sharded_splash_kernel(monkeypatch):
  monkeypatch.setattr(platforms, 'backend', lambda: 'tpu')  # 8 (CPU) devices pose as TPUs
  config = default.get_config('runlocal')
  config.model.attention_impl = 'auto'
  config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
  model = build_model(config.model, vocab_size=V, target_vocab_size=V)
  batch = {'inputs': jnp.ones((8, 6), jnp.int32), 'targets': jnp.ones((8, 5), jnp.int32)}
  params = nn.meta.unbox(model.init(jax.random.key(0), batch, train=False)['params'])
  mesh = parallel.create_mesh(config.mesh)
  loss = lambda p: jnp.sum(model.apply({'params': p}, batch, train=False))
  text = parallel.RulesJit(jax.grad(loss), mesh, parallel.rules_from_config(config)).lower(
      params).as_text()
  # Encoder self-attention, decoder self- and cross-attention: each a shard_map'd kernel.
  assert text.count('sdy.manual_computation') >= 3, text.count('sdy.manual_computation')


def test_padding_rows_and_an_empty_row_stay_finite_on_every_impl():
  """The last eval batch ends in rows of nothing but padding (length 0): every impl that
  runs on CPU, and the cuDNN arguments run through XLA, give finite outputs on every row."""
  rng = np.random.default_rng(4)
  q, k, v = (jnp.asarray(rng.normal(size=(3, 6, 2, 8)), jnp.float32) for _ in range(3))
  valid = jnp.array([[1] * 6, [1] * 2 + [0] * 4, [0] * 6], bool)  # row 2: zero length
  impls = {
      'reference': _reference,
      'xla': lambda q, k, v, m: attention_impls.fused_attention(q, k, v, m, 'xla'),
      'splash': lambda q, k, v, m: attention_impls.splash_attention(q, k, v, m, interpret=True),
      'cudnn arguments': lambda q, k, v, m: jax.nn.dot_product_attention(
          q, k, v, implementation='xla', **attention_impls.cudnn_arguments(m)),
  }
  for causal in (False, True):
    mask = attention_impls.AttentionMask(valid, valid, causal=causal)
    lengths = attention_impls.cudnn_arguments(mask)
    assert np.asarray(lengths['query_seq_lengths']).tolist() == [6, 2, 1]  # never 0
    for name, fn in impls.items():
      out = np.asarray(jax.jit(fn)(q, k, v, mask))
      assert np.isfinite(out).all(), (name, causal)


def test_splash_split_that_does_not_divide_is_one_clear_error():
  attention_impls.check_splash_split(8, 4, 8, 2)  # fits
  with pytest.raises(ValueError, match=r"config\.model\.attention_impl='splash'.*6 rows.*8 devices"):
    attention_impls.check_splash_split(6, 4, 8, 1)
  with pytest.raises(ValueError, match=r"3 heads do not split over the 2 devices"):
    attention_impls.check_splash_split(8, 3, 4, 2)
  # Through the model path: a batch of 4 rows on the 8-device dp mesh.
  config = default.get_config('runlocal')
  mesh = parallel.create_mesh(config.mesh)
  q = k = v = jnp.ones((4, 8, 2, 8), jnp.float32)
  step = parallel.RulesJit(
      lambda: attention_impls.splash_attention(q, k, v, None, interpret=True), mesh,
      parallel.rules_from_config(config))
  with pytest.raises(ValueError, match=r"4 rows of a batch do not split over the 8 devices"):
    step.lower()


@pytest.mark.parametrize('platform,expected', [('cpu', platforms.CPU_ATTENTION), ('gpu', 'xla'),
                                               ('tpu', 'xla')])
def test_a_score_bias_passes_over_kernels_that_take_none(monkeypatch, platform, expected):
  """T5's relative position bias: 'auto' picks an implementation that adds it; naming
  'cudnn' or 'splash' for such a model is one error naming the config field."""
  monkeypatch.setattr(platforms, 'backend', lambda: platform)
  assert platforms.resolve_attention_impl('auto', dtype='bfloat16', bias=True) == expected
  if platform != 'cpu':
    kernel = 'cudnn' if platform == 'gpu' else 'splash'
    assert platforms.resolve_attention_impl(kernel, dtype='bfloat16') == kernel
    with pytest.raises(ValueError, match=rf"config\.model\.attention_impl='{kernel}' takes no "
                                         r"additive attention bias.*position='relative'"):
      platforms.resolve_attention_impl(kernel, dtype='bfloat16', bias=True)


@pytest.mark.parametrize('case', ['self_padding', 'self_packed_causal'])
def test_xla_attention_with_a_bias_and_no_scaling_equals_reference(case):
  """The 'xla' path adds the bias and honours scale=False as the reference does."""
  bias = jnp.asarray(np.random.default_rng(3).normal(size=(1, 2, L, L)), jnp.float32)
  ref = lambda q, k, v, mask: attention.dot_product_attention(
      q, k, v, mask.dense(), None, 0.0, True, jnp.float32, bias, False)
  xla = lambda q, k, v, mask: attention_impls.fused_attention(q, k, v, mask, 'xla', bias=bias,
                                                             scale=False)
  (out, grads), (ref_out, ref_grads) = _core(xla, case), _core(ref, case)
  np.testing.assert_allclose(out, ref_out, atol=ATOL, rtol=0)
  _assert_trees_close(grads, ref_grads)
