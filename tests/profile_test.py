"""lmjax.bench.profile: HLO categories of known ops, and a profiled train step's accounting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.bench import profile
from lmjax.bench import shapes

TINY = shapes.TRANSFORMER_SHAPES['tiny']


def _categories(fn, *args):
  """Categories of the compiled entry computation's non-parameter instructions."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  entry = text[text.index('ENTRY'):]
  names = [line.split('=')[0].split()[-1].lstrip('%') for line in entry.splitlines()[1:]
           if ' = ' in line and ' parameter(' not in line and 'get-tuple-element' not in line
           and ' tuple(' not in line]
  parsed = profile.parse_hlo(text)
  return {parsed[n].category for n in names if n in parsed}


@pytest.mark.parametrize('fn, args, expected', [
    (lambda x, w: x @ w, (np.ones((64, 32), np.float32), np.ones((32, 16), np.float32)),
     {'matmul'}),
    (lambda x: jnp.exp(x) * 2.0 + 1.0, (np.ones((64, 32), np.float32),), {'elementwise'}),
    (lambda x: jnp.sum(x * x, axis=0), (np.ones((64, 32), np.float32),), {'reduction'}),
    (lambda x: x.T.copy(), (np.ones((64, 32), np.float32),), {'layout (copy/transpose)'}),
    (lambda x: x[3:40:2], (np.ones((64, 32), np.float32),),
     {'data movement (slice/gather/scatter)'}),
])
def test_known_ops_get_their_category(fn, args, expected):
  got = _categories(fn, *args)  # XLA may split an op (a reduce-window before a reduce)
  assert expected <= got, got
  assert ('matmul' in got) == ('matmul' in expected), got


def test_category_of_opcode_sets():
  assert profile._category({'dot', 'add', 'copy'}) == 'matmul'
  assert profile._category({'reduce', 'exp', 'parameter'}) == 'reduction'
  assert profile._category({'tanh', 'dynamic-update-slice', 'parameter'}) == 'elementwise'
  assert profile._category({'dynamic-slice', 'bitcast'}) == 'data movement (slice/gather/scatter)'
  assert profile._category({'transpose', 'parameter'}) == 'layout (copy/transpose)'
  assert profile._category({'while'}) == 'other'


@pytest.fixture(scope='module')
def tiny_breakdown():
  config = shapes.transformer_config(TINY)
  sizes = {'vocab_size': TINY.vocab_size, 'target_vocab_size': TINY.vocab_size}
  return profile.profile_train_step(config, sizes, shapes.transformer_batch(TINY), calls=2,
                                    warmup=1)


def test_train_step_breakdown_adds_up(tiny_breakdown):
  b = tiny_breakdown
  assert b.calls == 2 and b.wall_ms > 0 and b.threads >= 1
  assert set(b.by_category) <= set(profile.CATEGORIES)
  assert b.by_category['matmul'] > 0 and b.by_category['elementwise'] > 0
  assert b.busy_ms == pytest.approx(sum(b.by_op.values()))
  for name, ms in b.by_category.items():
    assert ms == pytest.approx(sum(v for (c, _), v in b.by_op.items() if c == name))
  # Attention's score matmuls and the MLP are model ops with their JAX names.
  assert any('self_attention' in op for c, op in b.by_op if c == 'matmul')
  text = profile.format_breakdown(b, top=3)
  for name in profile.CATEGORIES:
    assert name in text
  assert 'op time' in text and text.count('%  [') == 3
