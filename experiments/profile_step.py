r"""Where the train step's time goes (issue #7): per-HLO-instruction op time, grouped.

    python experiments/profile_step.py --shape=small [--model_overrides=matmul_dtype=bfloat16]
    python experiments/profile_step.py --shape=lstm-ptb

Runs the benchmark's train step (lmjax/bench/jax_train.py) under jax.profiler and prints
op time per category (matmul, elementwise, reduction, layout, data movement) and the
costliest non-matmul JAX ops. See lmjax/bench/profile.py.
"""

import sys

from absl import app
from absl import flags

from lmjax import runtime
from lmjax.bench import profile
from lmjax.bench import shapes

_SHAPE = flags.DEFINE_string(
    'shape', 'small', f'A Transformer shape {sorted(shapes.TRANSFORMER_SHAPES)} or lstm-<name> '
    f'for an LSTM shape {sorted(shapes.LSTM_SHAPES)}.')
_MODEL_OVERRIDES = flags.DEFINE_string('model_overrides', '',
                                       "Transformer config.model fields, e.g. 'scan_layers=True'.")
_CALLS = flags.DEFINE_integer('calls', 3, 'Profiled steps.')
_TOP = flags.DEFINE_integer('top', 15, 'Non-matmul ops to list.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    name = _SHAPE.value
    if name.startswith('lstm-'):
      shape = shapes.lookup(shapes.LSTM_SHAPES, name[len('lstm-'):], '--shape')
      config, batch = shapes.lstm_config(shape), shapes.lstm_batch(shape)
    else:
      shape = shapes.lookup(shapes.TRANSFORMER_SHAPES, name, '--shape')
      overrides = shapes.parse_overrides(_MODEL_OVERRIDES.value, prefix='model.')
      config, batch = shapes.transformer_config(shape, overrides), shapes.transformer_batch(shape)
    if _CALLS.value < 1:
      raise ValueError(f'--calls must be >= 1, got {_CALLS.value}')
  except ValueError as e:
    sys.exit(f'profile_step: {e}')
  runtime.setup(config)  # the process set-up of experiments/train.py
  sizes = {'vocab_size': shape.vocab_size, 'target_vocab_size': shape.vocab_size}
  breakdown = profile.profile_train_step(config, sizes, batch, _CALLS.value)
  print(f'train step, shape {name}')
  print(profile.format_breakdown(breakdown, _TOP.value))


if __name__ == '__main__':
  app.run(main)
