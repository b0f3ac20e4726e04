"""Decode throughput: jitted `lmjax.decoding.predict.beam_decode` and `greedy_decode`, random params;
optionally of the same model quantized to int8 by qwix (`lmjax.models.quantization`).

Every call produces exactly B × L output tokens: EOS is made unreachable by passing
eos_id = V, one past the last logit, so no hypothesis finishes early and beam search's
early stop (all sentences have K finished hypotheses) never fires; hypotheses are
finished only at the last position. No model or decoder code changes for this.
"""

import functools
from typing import Any, List, Mapping, Optional

import flax.linen as nn
import jax
import numpy as np

from lmjax import models
from lmjax.decoding import predict
from lmjax.bench import flops
from lmjax.bench import shapes
from lmjax.bench import table
from lmjax.bench import timing
from lmjax.models import quantization


def init_params(model: nn.Module, inputs: np.ndarray, seed: int = 0):
  """Random (unboxed) parameters of an encdec model for (B, S) `inputs`."""
  batch = {'inputs': inputs, 'targets': inputs}  # shapes only matter for init
  init = lambda rng: nn.meta.unbox(model.init({'params': rng}, batch, train=False))['params']
  return jax.jit(init)(jax.random.key(seed))


def rows(shape: shapes.DecodeShape, steps: int, warmup: int,
         overrides: Optional[Mapping[str, Any]] = None, quantize: str = '') -> List[table.Row]:
  """Beam (K = shape.beam_size) and greedy decode throughput of the model of `shape.model`.

  Args:
    shape: the decode shape.
    steps: timed calls.
    warmup: untimed calls after compiling.
    overrides: dotted config overrides of the lmjax model (e.g. {'model.dtype': 'bfloat16'}).
    quantize: '' (float), or a mode of `quantization.MODES`: the same model and
      parameters, quantized by qwix (post-training) and decoded in int8.

  Returns:
    ['lmjax decode beam<K> <shape>', 'lmjax decode greedy <shape>'] rows (names end in
    ' <quantize>' when quantized); tokens/s counts B × L output tokens per call.
  """
  model_shape = shapes.TRANSFORMER_SHAPES[shape.model]
  config = shapes.transformer_config(model_shape, overrides)
  config.model.max_len = max(config.model.max_len, shape.max_length, shape.source_length)
  v = model_shape.vocab_size
  model = models.build_model(config.model, vocab_size=v, target_vocab_size=v)
  rng = np.random.default_rng(0)
  inputs = shapes.random_ids(rng, (shape.batch_size, shape.source_length), v)  # (B, S)
  params = init_params(model, inputs)
  suffix, note = '', ''
  if quantize:
    model = quantization.ptq_model(model, quantize)
    abstract = quantization.abstract_params(model, {'inputs': inputs, 'targets': inputs})
    params = jax.jit(lambda p: quantization.quantize_params(p, abstract))(params)
    suffix, note = f' {quantize}', f'; qwix {quantize} (post-training)'
  b, l, k = shape.batch_size, shape.max_length, shape.beam_size
  decoders = {
      f'beam{k}': (jax.jit(functools.partial(predict.beam_decode, model, beam_size=k,
                                             max_length=l, alpha=0.6, eos_id=v)), k),
      'greedy': (jax.jit(functools.partial(predict.greedy_decode, model, max_length=l,
                                           eos_id=v)), 1),
  }
  out = []
  for name, (fn, beam) in decoders.items():
    compiled, compile_s = timing.compile_timed(fn, params, inputs)
    times = timing.time_calls(lambda c=compiled: c(params, inputs), steps, warmup)
    median = float(np.median(times))
    gflop = flops.transformer_decode_flops(config.model, v, b, shape.source_length, l, beam) / 1e9
    xla = flops.xla_flops(compiled)
    out.append(table.Row(
        name=f'lmjax decode {name} {shape.name}{suffix}', tokens_per_s=b * l / median,
        step_ms=1e3 * median, compile_s=compile_s, gflop=gflop,
        xla_gflop=None if xla is None else xla / 1e9, peak_rss_mb=timing.peak_rss_mb(),
        note=f'B{b}×L{l} tokens/call, S{shape.source_length}, EOS unreachable'
        + ('; XLA counts the while body once' if beam > 1 else '') + note))
  return out
