"""Benchmark suite (lmjax.bench, experiments/benchmark.py): every section at tiny shapes,
and the FLOP formulas checked against independent counts (jaxpr matmuls, XLA, by hand).
"""

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import pytest

from lmjax import models
from lmjax.decoding import predict
from lmjax.bench import decode
from lmjax.bench import flops
from lmjax.bench import jax_train
from lmjax.bench import shapes
from lmjax.bench import suite
from lmjax.bench import table
from tests import scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = shapes.TRANSFORMER_SHAPES['tiny']
TINY_LSTM = shapes.LSTM_SHAPES['tiny']


@pytest.fixture(scope='module')
def report():
  """One run of every section at tiny shapes, 2 timed steps, f32 and bf16 train/torch rows."""
  options = suite.Options(shapes=['tiny'], steps=2, warmup=1, decode_shape='tiny',
                          lstm_shape='tiny', pipeline_config='runlocal', pipeline_batches=5,
                          matmul_size=128, matmul_repeats=2, precisions=['bfloat16', 'float32'])
  return suite.run(options, log=lambda _: None)


def test_every_section_has_measured_rows(report):
  names = [r.name for r in report.rows]
  lmjax_rows = ['lmjax tiny', 'lmjax lstm-tiny', 'lmjax decode beam2 tiny',
                'lmjax decode greedy tiny', 'lmjax synthetic_dates train (pipeline ref)']
  for name in lmjax_rows + ['torch tiny', 'torch lstm-tiny', 'pipeline plain (synthetic_dates)',
                            'pipeline pack (synthetic_dates)']:
    assert name in names
  assert report.ceiling_gflops > 0
  for name in lmjax_rows:
    row = report.find(name)
    assert row.tokens_per_s > 0 and row.step_ms > 0 and row.compile_s > 0, row
    assert row.gflop > 0 and row.xla_gflop > 0 and row.gflop_per_s > 0 and row.mfu_pct > 0, row
    assert row.peak_rss_mb > 0
  pipe = report.find('pipeline plain (synthetic_dates)')
  assert pipe.step_ms > 0 and 'x train steps/s' in pipe.note


def test_train_row_uses_the_analytic_flops(report):
  row = report.find('lmjax tiny')
  config = shapes.transformer_config(TINY)
  expected = flops.transformer_train_flops(config.model, TINY.vocab_size, TINY.batch_size,
                                           TINY.source_length, TINY.target_length)
  assert row.gflop == pytest.approx(expected / 1e9)
  tokens = TINY.batch_size * TINY.target_length
  assert row.tokens_per_s == pytest.approx(tokens / (row.step_ms / 1e3))
  assert row.mfu_pct == pytest.approx(100 * row.gflop_per_s / report.ceiling_gflops)


def test_torch_rows_and_ratio(report):
  pytest.importorskip('torch')
  for ours, theirs in [('lmjax tiny', 'torch tiny'), ('lmjax lstm-tiny', 'torch lstm-tiny')]:
    a, b = report.find(ours), report.find(theirs)
    assert b.tokens_per_s > 0 and b.compile_s is None
    assert a.vs_torch == pytest.approx(a.tokens_per_s / b.tokens_per_s)


def test_torch_missing_gives_a_row(monkeypatch):
  monkeypatch.setattr(suite, 'torch_available', lambda: False)
  row = suite.torch_transformer_row(TINY, steps=2, warmup=1)
  assert row.tokens_per_s is None and 'torch not installed' in row.note


def test_table_and_json(report, tmp_path):
  text = table.format_report(report)
  assert 'matmul ceiling' in text and 'MFU %' in text and 'lmjax decode greedy tiny' in text
  path = tmp_path / 'bench.json'
  table.write_json(report, str(path))
  data = json.loads(path.read_text())
  assert data['ceiling_gflops'] == report.ceiling_gflops
  assert {r['name'] for r in data['rows']} == {r.name for r in report.rows}
  assert 'mfu_pct' in data['rows'][0]


def test_readme_table_is_written_from_one_json_between_the_markers(report, tmp_path):
  bench = tmp_path / 'bench.json'
  table.write_json(report, str(bench))
  readme = tmp_path / 'README.md'
  readme.write_text('# x\n\n<!-- perf-table:begin -->\nold table\n<!-- perf-table:end -->\n\nafter\n')
  script = os.path.join(REPO, 'experiments', 'readme_perf_table.py')
  env = dict(os.environ, PYTHONPATH=REPO)
  proc = scripts.run([sys.executable, script, f'--json={bench}', f'--readme={readme}'],
                     text=True, env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr
  text = readme.read_text()
  assert 'old table' not in text and text.startswith('# x\n') and text.endswith('\nafter\n')
  assert f'matmul ceiling {report.ceiling_gflops:.1f} GFLOP/s f32' in text
  assert report.info['date'] in text
  rows = [l for l in text.splitlines() if l.startswith('| lmjax tiny |')]
  assert len(rows) == 1 and f'{report.find("lmjax tiny").tokens_per_s:.0f}' in rows[0]
  assert len([l for l in text.splitlines() if l.startswith('| ')]) == len(report.rows) + 1
  before = readme.read_text()
  readme.write_text('no markers\n')
  proc = scripts.run([sys.executable, script, f'--json={bench}', f'--readme={readme}'],
                     text=True, env=env, timeout=120)
  assert proc.returncode != 0 and 'perf-table:begin' in proc.stderr and 'Traceback' not in proc.stderr
  assert readme.read_text() == 'no markers\n' and before != 'no markers\n'


def test_bf16_rows_use_their_own_ceiling_and_torch_autocast(report):
  assert report.bf16_ceiling_gflops > 0 and report.ceiling_gflops > 0
  assert 'bf16 matmul ceiling' in table.format_report(report)
  f32, bf16 = report.find('lmjax tiny'), report.find('lmjax tiny bf16')
  assert f32.precision == 'float32' and bf16.precision == 'bfloat16'
  assert 'model.matmul_dtype=bfloat16' in bf16.note and 'matmul_dtype' not in f32.note
  assert bf16.mfu_pct == pytest.approx(100 * bf16.gflop_per_s / report.bf16_ceiling_gflops)
  assert f32.mfu_pct == pytest.approx(100 * f32.gflop_per_s / report.ceiling_gflops)
  assert bf16.gflop == f32.gflop  # same model, same FLOPs
  if suite.torch_available():
    theirs = report.find('torch tiny bf16')
    assert 'autocast bfloat16' in theirs.note and theirs.precision == 'bfloat16'
    assert bf16.vs_torch == pytest.approx(bf16.tokens_per_s / theirs.tokens_per_s)
    assert f32.vs_torch == pytest.approx(f32.tokens_per_s / report.find('torch tiny').tokens_per_s)
  with pytest.raises(ValueError, match='--precisions'):
    suite.check_options(suite.Options(precisions=['float16']))
  with pytest.raises(ValueError, match='precision'):
    jax_train.timing.matmul_ceiling(16, 1, 'int8')


def test_overrides():
  overrides = shapes.parse_overrides('scan_layers=True,dtype=bfloat16', prefix='model.')
  overrides.update(shapes.parse_overrides('train.grad_accum_steps=2'))
  config = shapes.transformer_config(TINY, overrides)
  assert config.model.scan_layers is True and config.model.dtype == 'bfloat16'
  assert config.train.grad_accum_steps == 2
  with pytest.raises(ValueError, match='unknown field.*scan_layers'):
    shapes.transformer_config(TINY, {'model.scan_layer': 'True'})
  with pytest.raises(ValueError, match='expected true/false'):
    shapes.transformer_config(TINY, {'model.scan_layers': 'maybe'})
  with pytest.raises(ValueError, match='--sections'):
    suite.run(suite.Options(sections=['trian']))


# FLOP counting.


def test_matmul_counter_by_hand():
  a, b = jnp.ones((3, 4)), jnp.ones((4, 5))
  assert flops.jaxpr_matmul_flops(jnp.dot, a, b) == 2 * 3 * 4 * 5
  scanned = lambda a, b: jax.lax.scan(lambda c, _: (c, c @ b), a, None, length=7)[1]
  assert flops.jaxpr_matmul_flops(scanned, a, b) == 7 * 2 * 3 * 4 * 5
  dead = lambda a, b: (a @ b, jnp.sum(a))[1]  # unused results are not counted
  assert flops.jaxpr_matmul_flops(dead, a, b) == 0


def test_transformer_formula_by_hand():
  """A one-layer model with B=1, S=T=2, D=Q=4, F=8, V=8, every matmul written out."""
  model = dict(emb_dim=4, qkv_dim=4, mlp_dim=8, num_encoder_layers=1, num_decoder_layers=1)
  b, s, t, d, q, f, v = 1, 2, 2, 4, 4, 8, 8
  # q, k, v, out projections; QKᵀ and AV; the two MLP matmuls.
  encoder = 4 * 2 * b * s * d * q + 2 * 2 * b * s * s * q + 2 * 2 * b * s * d * f
  self_attn = 4 * 2 * b * t * d * q + 2 * 2 * b * t * t * q
  cross = 2 * 2 * b * t * d * q + 2 * 2 * b * s * d * q + 2 * 2 * b * t * s * q  # q/o, k/v, QK/AV
  decoder = self_attn + cross + 2 * 2 * b * t * d * f
  logits = 2 * b * t * d * v
  assert encoder + decoder + logits == 1600
  assert flops.transformer_train_flops(model, v, b, s, t) == 3 * 1600


@pytest.mark.parametrize('overrides', [
    {},
    {'model.scan_layers': 'True'},
    {'model.num_encoder_layers': '2', 'model.qkv_dim': '16', 'model.mlp_dim': '48'},
])
def test_train_flops_match_the_jaxpr(overrides):
  """The formula equals the dot_generals of the real (jitted, differentiated) train step."""
  config = shapes.transformer_config(TINY, overrides)
  v = TINY.vocab_size
  step, state, batch = jax_train.build_train_step(
      config, {'vocab_size': v, 'target_vocab_size': v}, shapes.transformer_batch(TINY))
  expected = flops.transformer_train_flops(config.model, v, TINY.batch_size, TINY.source_length,
                                           TINY.target_length)
  assert flops.jaxpr_matmul_flops(step, state, batch) == expected


def test_train_flops_close_to_xla(report):
  """XLA counts every op of the compiled step: at least the matmuls, and not far above."""
  row = report.find('lmjax tiny')
  assert 0.5 * row.xla_gflop <= row.gflop <= row.xla_gflop


def test_lstm_flops_match_the_jaxpr():
  config = shapes.lstm_config(TINY_LSTM)
  v = TINY_LSTM.vocab_size
  step, state, batch = jax_train.build_train_step(
      config, {'vocab_size': v, 'target_vocab_size': v}, shapes.lstm_batch(TINY_LSTM))
  expected = flops.lstm_train_flops(config.model, v, TINY_LSTM.batch_size, TINY_LSTM.length)
  assert flops.jaxpr_matmul_flops(step, state, batch) == expected


@pytest.mark.parametrize('beam,length', [(1, 1), (1, 3), (2, 1)])
def test_decode_flops_match_the_jaxpr(beam, length):
  """Greedy at any length (a scan); beam search only at L=1 (its while body counts once)."""
  config = shapes.transformer_config(TINY)
  v = TINY.vocab_size
  model = models.build_model(config.model, vocab_size=v, target_vocab_size=v)
  inputs = shapes.transformer_batch(TINY)['inputs']  # (B, S)
  params = decode.init_params(model, inputs)
  if beam == 1:
    fn = functools.partial(predict.greedy_decode, model, max_length=length, eos_id=v)
  else:
    fn = functools.partial(predict.beam_decode, model, beam_size=beam, max_length=length,
                           alpha=0.6, eos_id=v)
  expected = flops.transformer_decode_flops(config.model, v, TINY.batch_size, TINY.source_length,
                                            length, beam)
  assert flops.jaxpr_matmul_flops(fn, params, inputs) == expected

