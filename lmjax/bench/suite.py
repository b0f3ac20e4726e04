"""`run(options) -> Report`: the benchmark sections of issue #7, in one process.

Sections:
  train     lmjax encoder-decoder train step per named shape (lmjax.bench.jax_train)
  torch     the nn.Transformer reference per shape; sets the lmjax rows' 'vs torch'
  lstm      PTB-style LSTM LM, lmjax and nn.LSTM (lmjax.bench.lstm)
  decode    beam and greedy decode (lmjax.bench.decode)
  decode_int8  the same decodes in float32 and in int8 (qwix), one after the other; not run
            unless named (--sections=decode_int8)
  pipeline  input pipeline vs train step on configs/default.py (lmjax.bench.pipeline)
"""

import dataclasses
import datetime
import importlib.util
import os
import platform
import statistics
import sys
from typing import Any, Callable, Dict, Mapping, Sequence

import jax

from lmjax import runtime
from lmjax.config import configlib
from lmjax.bench import decode
from lmjax.bench import flops
from lmjax.bench import jax_train
from lmjax.bench import lstm
from lmjax.bench import pipeline
from lmjax.bench import shapes
from lmjax.bench import table
from lmjax.bench import timing

SECTIONS = ('train', 'torch', 'lstm', 'decode', 'pipeline')
# Sections run only when --sections names them.
OPTIONAL_SECTIONS = ('decode_int8',)


@dataclasses.dataclass
class Options:
  """What to run.

  Attributes:
    sections: subset of SECTIONS.
    shapes: keys of shapes.TRANSFORMER_SHAPES for the train and torch sections.
    steps: timed steps (calls) per measurement; the median is reported.
    warmup: untimed steps after compiling.
    overrides: dotted config overrides for the lmjax Transformer (train, decode), e.g.
      {'model.scan_layers': 'True'}; the PyTorch reference ignores them.
    decode_shape: key of shapes.DECODE_SHAPES.
    lstm_shape: key of shapes.LSTM_SHAPES.
    pipeline_config: `get_config` argument of configs/default.py ('' or 'runlocal').
    pipeline_batches: pipeline batches timed per batching mode.
    matmul_size: side of the matmul that sets the MFU ceiling.
    matmul_repeats: timed calls of that matmul.
    precisions: of the train and torch rows, a subset of timing.PRECISIONS: 'float32',
      and 'bfloat16' for lmjax with `model.matmul_dtype='bfloat16'` against PyTorch under
      bfloat16 autocast, with a bf16-operand matmul ceiling. The other sections are float32.
  """
  sections: Sequence[str] = SECTIONS
  shapes: Sequence[str] = ('small', 'base')
  steps: int = 10
  warmup: int = 2
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  decode_shape: str = 'small'
  lstm_shape: str = 'ptb'
  pipeline_config: str = ''
  pipeline_batches: int = 300
  matmul_size: int = 2048
  matmul_repeats: int = 10
  precisions: Sequence[str] = ('float32',)


def torch_available() -> bool:
  """Whether the optional torch dependency (`pip install .[bench]`) is importable."""
  return importlib.util.find_spec('torch') is not None


def device_info() -> Dict[str, Any]:
  """Devices, CPU count and library versions, printed above the table."""
  info = {
      'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
      'jax': f'{jax.__version__} ({jax.default_backend()})',
      'devices': ', '.join(f'{d.platform}:{d.id} {d.device_kind}' for d in jax.devices()),
      'cpu_count': f'{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})'
                   if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
      'host': f'{platform.machine()} {platform.system()}, python {sys.version.split()[0]}',
  }
  if torch_available():
    import torch  # pylint: disable=g-import-not-at-top  (optional extra)
    info['torch'] = f'{torch.__version__} (threads set to os.cpu_count()={os.cpu_count()})'
  else:
    info['torch'] = 'not installed'
  return info


def torch_transformer_row(shape: shapes.TransformerShape, steps: int, warmup: int,
                          precision: str = 'float32', device: str = 'cpu') -> table.Row:
  """The nn.Transformer reference at `shape` (eager; float32 or bfloat16 autocast) on
  `device` ('cpu' or 'cuda').

  Returns:
    Row 'torch <shape>' ('torch <shape> bf16'), or a 'torch not installed' row.
  """
  name = f'torch {shape.name}' + shapes.precision_suffix(precision)
  if not torch_available():
    return table.Row(name=name, precision=precision,
                     note='torch not installed (pip install .[bench])')
  from lmjax.bench import torch_ref  # pylint: disable=g-import-not-at-top  (optional extra)
  threads = torch_ref.setup_threads()
  config = shapes.transformer_config(shape)
  v = shape.vocab_size
  model = torch_ref.Seq2SeqTransformer(config.model, v)
  times, loss = torch_ref.time_train(model, shapes.transformer_batch(shape), config, steps,
                                     warmup, precision, device)
  median = statistics.median(times)
  gflop = flops.transformer_train_flops(config.model, v, shape.batch_size, shape.source_length,
                                        shape.target_length) / 1e9
  autocast = '; autocast bfloat16' if precision == 'bfloat16' else ''
  where = f'{threads} threads' if device == 'cpu' else device
  return table.Row(name=name, tokens_per_s=shape.batch_size * shape.target_length / median,
                   step_ms=1e3 * median, gflop=gflop, peak_rss_mb=timing.peak_rss_mb(),
                   precision=precision, note=f'loss {loss:.2f}; eager, {where}{autocast}')


def check_options(options: Options) -> None:
  """Fails fast on unknown sections or shapes, bad step counts and bad overrides.

  Raises:
    ValueError: naming the flag and the valid values.
  """
  unknown = sorted(set(options.sections) - set(SECTIONS + OPTIONAL_SECTIONS))
  if unknown:
    raise ValueError(f'--sections: unknown {unknown}; valid: '
                     f'{", ".join(SECTIONS + OPTIONAL_SECTIONS)}')
  for name in options.shapes:
    shapes.transformer_config(shapes.lookup(shapes.TRANSFORMER_SHAPES, name, '--shapes'),
                              options.overrides)
  shapes.lookup(shapes.DECODE_SHAPES, options.decode_shape, '--decode_shape')
  shapes.lookup(shapes.LSTM_SHAPES, options.lstm_shape, '--lstm_shape')
  bad = sorted(set(options.precisions) - set(timing.PRECISIONS))
  if bad or not options.precisions:
    raise ValueError(f'--precisions: got {list(options.precisions)}; valid: '
                     f'{", ".join(timing.PRECISIONS)} (one or both)')
  if options.steps < 1 or options.warmup < 0:
    raise ValueError(f'--steps must be >= 1 and --warmup >= 0, got {options.steps}, '
                     f'{options.warmup}')


def run(options: Options, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
        ) -> table.Report:
  """Runs the selected sections.

  Args:
    options: what to run.
    log: progress messages (one per finished row).

  Returns:
    The Report (device info, matmul ceiling, rows).
  """
  check_options(options)
  config = configlib.repo_config('default.py', options.pipeline_config)
  runtime.setup(config)  # the process set-up of experiments/train.py
  sections = set(options.sections)
  precisions = [p for p in timing.PRECISIONS if p in options.precisions]
  ceiling = lambda p: timing.matmul_ceiling(options.matmul_size, options.matmul_repeats, p)
  first = {p: ceiling(p) for p in timing.PRECISIONS if p in precisions or p == 'float32'}
  report = table.Report(device_info(), first['float32'],
                        bf16_ceiling_gflops=first.get('bfloat16'))

  def add(row: table.Row) -> table.Row:
    rate = f'{row.tokens_per_s:.0f} tok/s, ' if row.tokens_per_s else ''
    ms = f'{row.step_ms:.1f} ms; ' if row.step_ms else ''
    log(f'[benchmark] {row.name}: {rate}{ms}{row.note}')
    return report.add(row)

  steps, warmup = options.steps, options.warmup
  for name in options.shapes:
    shape = shapes.TRANSFORMER_SHAPES[name]
    for precision in precisions:
      ours = theirs = None
      if 'train' in sections:
        ours = add(jax_train.transformer_row(shape, steps, warmup, options.overrides, precision))
      if 'torch' in sections:
        theirs = add(torch_transformer_row(shape, steps, warmup, precision))
      if ours is not None and theirs is not None and theirs.tokens_per_s:
        ours.vs_torch = ours.tokens_per_s / theirs.tokens_per_s
  if 'lstm' in sections:
    for row in lstm.rows(shapes.LSTM_SHAPES[options.lstm_shape], steps, warmup, torch_available()):
      add(row)
  if 'decode' in sections:
    for row in decode.rows(shapes.DECODE_SHAPES[options.decode_shape], steps, warmup,
                           options.overrides):
      add(row)
  if 'decode_int8' in sections:  # float32 and int8 rows of one shape, measured back to back
    for quantize in ('', 'int8'):
      for row in decode.rows(shapes.DECODE_SHAPES[options.decode_shape], steps, warmup,
                             options.overrides, quantize):
        add(row)
  if 'pipeline' in sections:
    shapes.use_one_device(config)
    for row in pipeline.rows(config, steps, warmup, options.pipeline_batches):
      add(row)
  # Measured again at the end, the better of the two: a busy moment lowers one of them.
  for precision, start in first.items():
    last = ceiling(precision)
    report.set_ceiling(max(start, last), precision)
    label = 'f32' if precision == 'float32' else 'bf16 operands, f32 result,'
    key = 'ceiling' if precision == 'float32' else 'bf16 ceiling'
    report.info[key] = (f'{label} {options.matmul_size}x{options.matmul_size} jnp.dot (jit), '
                        f'median of {options.matmul_repeats}; best of start {start:.1f} '
                        f'and end {last:.1f} GFLOP/s')
  return report
