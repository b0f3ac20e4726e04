"""The PTB-style LSTM language-model section: lmjax (configs/ptb_lstm.py) and nn.LSTM.

Both train the same model (embedding → 2-layer LSTM → tied logits, the dropout and
optimizer of configs/ptb_lstm.py) on random (B, T) windows, each row from a zero state
(the non-stateful step; truncated-BPTT state carrying adds no matmuls).
"""

import statistics
from typing import List

from lmjax.bench import flops
from lmjax.bench import jax_train
from lmjax.bench import shapes
from lmjax.bench import table
from lmjax.bench import timing


def rows(shape: shapes.LSTMShape, steps: int, warmup: int, with_torch: bool) -> List[table.Row]:
  """Train throughput of the lmjax LSTM LM and (when `with_torch`) its PyTorch reference.

  Args:
    shape: the LSTM shape.
    steps: timed steps.
    warmup: untimed steps after compiling.
    with_torch: also time nn.LSTM (needs torch); else a 'torch not installed' row.

  Returns:
    ['lmjax lstm-<shape>', 'torch lstm-<shape>'] rows; the lmjax row has the ratio.
  """
  config = shapes.lstm_config(shape)
  batch = shapes.lstm_batch(shape)
  v, tokens = shape.vocab_size, shape.batch_size * shape.length
  gflop = flops.lstm_train_flops(config.model, v, shape.batch_size, shape.length) / 1e9
  result = jax_train.time_train_step(config, {'vocab_size': v, 'target_vocab_size': v}, batch,
                                     steps, warmup)
  median = result.timing.median
  ours = table.Row(
      name=f'lmjax lstm-{shape.name}', tokens_per_s=tokens / median, step_ms=1e3 * median,
      compile_s=result.timing.compile_s, gflop=gflop,
      xla_gflop=None if result.xla_flops is None else result.xla_flops / 1e9,
      peak_rss_mb=timing.peak_rss_mb(),
      note=f'loss {result.loss:.2f}; {config.optimizer.name}, dropout {config.model.dropout_rate}')
  name = f'torch lstm-{shape.name}'
  if not with_torch:
    return [ours, table.Row(name=name, note='torch not installed (pip install .[bench])')]
  from lmjax.bench import torch_ref  # pylint: disable=g-import-not-at-top  (optional extra)
  torch_ref.setup_threads()
  model = torch_ref.LSTMLanguageModel(config.model, v)
  times, loss = torch_ref.time_train(model, batch, config, steps, warmup)
  median = statistics.median(times)
  theirs = table.Row(name=name, tokens_per_s=tokens / median, step_ms=1e3 * median, gflop=gflop,
                     peak_rss_mb=timing.peak_rss_mb(), note=f'loss {loss:.2f}; eager')
  ours.vs_torch = ours.tokens_per_s / theirs.tokens_per_s
  return [ours, theirs]
