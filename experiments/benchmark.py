r"""Benchmark suite (issue #7): train, PyTorch reference, LSTM, decode and pipeline throughput.

    python experiments/benchmark.py [--sections=train,torch,lstm,decode,pipeline] \
        [--shapes=small,base] [--precisions=float32,bfloat16] [--steps=10] [--json=PATH] \
        [--model_overrides=scan_layers=True,dtype=bfloat16] [--overrides=train.grad_accum_steps=2]
    python experiments/benchmark.py --sections=decode_int8 [--decode_shape=small]   # float32 vs int8

Prints device info, the f32 matmul ceiling and one table row per measurement (tokens/s,
median step time, compile time, analytic and XLA GFLOP, GFLOP/s, MFU, peak RSS, ratio to
PyTorch). The PyTorch rows need `pip install .[bench]`. See lmjax/bench/ for the details.
"""

import sys

from absl import app
from absl import flags

from lmjax.bench import shapes
from lmjax.bench import suite
from lmjax.bench import table

_SECTIONS = flags.DEFINE_list('sections', list(suite.SECTIONS), 'Sections to run (also: '
                              + ', '.join(suite.OPTIONAL_SECTIONS) + ', only when named).')
_SHAPES = flags.DEFINE_list('shapes', ['small', 'base'],
                            f'Train shapes: {sorted(shapes.TRANSFORMER_SHAPES)}.')
_PRECISIONS = flags.DEFINE_list(
    'precisions', ['float32'], 'Train/torch rows: float32, and/or bfloat16 (lmjax '
    "model.matmul_dtype='bfloat16' vs PyTorch bfloat16 autocast; MFU against a bf16 ceiling).")
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per measurement (median reported).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compiling.')
_JSON = flags.DEFINE_string('json', None, 'Also write the results to this JSON file.')
_MODEL_OVERRIDES = flags.DEFINE_string(
    'model_overrides', '', "config.model fields of the lmjax Transformer, e.g. "
    "'scan_layers=True,dtype=bfloat16'.")
_OVERRIDES = flags.DEFINE_string(
    'overrides', '', "Dotted config fields of the lmjax Transformer, e.g. "
    "'train.grad_accum_steps=2,model.remat_policy=full'.")
_DECODE_SHAPE = flags.DEFINE_string('decode_shape', 'small',
                                    f'Decode shape: {sorted(shapes.DECODE_SHAPES)}.')
_LSTM_SHAPE = flags.DEFINE_string('lstm_shape', 'ptb', f'LSTM shape: {sorted(shapes.LSTM_SHAPES)}.')
_PIPELINE_BATCHES = flags.DEFINE_integer('pipeline_batches', 300, 'Pipeline batches per mode.')
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 2048, 'Side of the ceiling matmuls.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    overrides = shapes.parse_overrides(_OVERRIDES.value)
    overrides.update(shapes.parse_overrides(_MODEL_OVERRIDES.value, prefix='model.'))
    options = suite.Options(
        sections=_SECTIONS.value, shapes=_SHAPES.value, steps=_STEPS.value, warmup=_WARMUP.value,
        overrides=overrides, decode_shape=_DECODE_SHAPE.value, lstm_shape=_LSTM_SHAPE.value,
        pipeline_batches=_PIPELINE_BATCHES.value, matmul_size=_MATMUL_SIZE.value,
        precisions=_PRECISIONS.value)
    suite.check_options(options)
  except ValueError as e:
    sys.exit(f'benchmark: {e}')
  report = suite.run(options)
  print(table.format_report(report))
  if _JSON.value:
    table.write_json(report, _JSON.value)
    print(f'wrote {_JSON.value}')


if __name__ == '__main__':
  app.run(main)
