"""lmjax train-step throughput, measured on the step users run.

The step is `lmjax.train.step.train_step` jitted as `lmjax.train.loop.Trainer` does it
(in/out shardings from the logical rules, the state donated), with the state created by
`create_sharded_state`; it is compiled ahead of time so that compile time is measured
on its own, then called `warmup` times and timed `steps` times to completion.
"""

import dataclasses
import functools
import math
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np

from lmjax import models
from lmjax import parallel
from lmjax.bench import flops
from lmjax.bench import shapes
from lmjax.bench import table
from lmjax.bench import timing
from lmjax import optim
from lmjax.train import state as state_lib
from lmjax.objectives import cross_entropy
from lmjax.objectives import registry
from lmjax.train import step as step_lib


@dataclasses.dataclass
class TrainResult:
  """One timed train step.

  Attributes:
    timing: step times and compile time.
    xla_flops: XLA cost-analysis FLOPs of the compiled step (None if unavailable).
    loss: mean training loss of the last timed step (NaN if the step was skipped as
      non-finite; the timing stands, a skipped step costs the same).
  """
  timing: timing.Timing
  xla_flops: Optional[float]
  loss: float


def mesh_devices(mesh_config: Mapping[str, int]) -> Optional[Sequence[Any]]:
  """The first prod(sizes) devices for a mesh without -1 (e.g. a 1-device mesh); else None = all."""
  sizes = [int(s) for s in mesh_config.values()]
  return None if -1 in sizes else jax.devices()[:math.prod(sizes)]


def build_train_step(config, sizes: Mapping[str, int], example_batch: Mapping[str, np.ndarray],
                     task=None):
  """The trainer's jitted train step, its initial state and the batch on the mesh.

  Args:
    config: experiment config (model, optimizer, train, mesh, sharding).
    sizes: data-dependent model sizes (vocab_size=…, target_vocab_size=…).
    example_batch: host-local numpy batch, also the batch that is timed.
    task: the built task, whose objective the step trains (lmjax.objectives.registry);
      None = the token cross-entropy of batch['targets'] (seq2seq and LM shapes).

  Returns:
    (jitted step (state, batch) -> (state, metric sums), state, global batch).
  """
  mesh = parallel.create_mesh(config.mesh, mesh_devices(config.mesh))
  rules = parallel.rules_from_config(config)
  model = models.build_model(config.model, **sizes)
  tx = optim.make_optimizer(config.optimizer, config.train.num_train_steps)
  state, shardings = state_lib.create_sharded_state(model, tx, example_batch, config.seed, mesh,
                                                    rules)
  batch_sharding = parallel.batch_sharding(mesh, rules)
  objective = (registry.build(config, task, model) if task is not None else
               cross_entropy.TokenCrossEntropy(model, 'targets', config.train.label_smoothing))
  step = jax.jit(
      functools.partial(step_lib.train_step, objective=objective, tx=tx,
                        grad_accum_steps=config.train.grad_accum_steps),
      in_shardings=(shardings, batch_sharding),
      out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)
  return step, state, parallel.to_global(example_batch, batch_sharding)


def time_train_step(config, sizes: Mapping[str, int], example_batch: Mapping[str, np.ndarray],
                    steps: int, warmup: int, task=None) -> TrainResult:
  """Compiles the train step, then times `steps` steps on `example_batch` after `warmup`.

  Args:
    config: experiment config.
    sizes: data-dependent model sizes.
    example_batch: host-local numpy batch.
    steps: timed steps.
    warmup: untimed steps after compiling.
    task: the built task (its objective), or None (see `build_train_step`).

  Returns:
    The TrainResult.
  """
  step, state, batch = build_train_step(config, sizes, example_batch, task)
  compiled, compile_s = timing.compile_timed(step, state, batch)
  carry = {'state': state}

  def call():
    carry['state'], carry['metrics'] = compiled(carry['state'], batch)  # state donated
    return carry['state'], carry['metrics']

  times = timing.time_calls(call, steps, warmup)
  sums = jax.device_get(carry['metrics'])
  loss = float(sums['loss']) / max(float(sums['loss_weight']), 1.0)
  return TrainResult(timing.Timing(times, compile_s), flops.xla_flops(compiled), loss)


def transformer_row(shape: shapes.TransformerShape, steps: int, warmup: int,
                    overrides: Optional[Mapping[str, Any]] = None,
                    precision: str = 'float32') -> table.Row:
  """Train throughput of the lmjax encoder-decoder at `shape`.

  Args:
    shape: the train shape.
    steps: timed steps.
    warmup: untimed steps after compiling.
    overrides: dotted config overrides (e.g. {'model.scan_layers': 'True'}).
    precision: 'float32', or 'bfloat16' for `model.matmul_dtype='bfloat16'` (bf16
      matmul operands, float32 results; unless `overrides` sets matmul_dtype itself).

  Returns:
    Row 'lmjax <shape>' ('lmjax <shape> bf16'); tokens = target tokens, B·T per step.
  """
  if precision == 'bfloat16':
    overrides = {'model.matmul_dtype': 'bfloat16', **(overrides or {})}
  config = shapes.transformer_config(shape, overrides)
  v = shape.vocab_size
  result = time_train_step(config, {'vocab_size': v, 'target_vocab_size': v},
                           shapes.transformer_batch(shape), steps, warmup)
  median = result.timing.median
  gflop = flops.transformer_train_flops(config.model, v, shape.batch_size, shape.source_length,
                                        shape.target_length) / 1e9
  note = f'loss {result.loss:.2f}'
  if overrides:
    note += '; ' + ','.join(f'{k}={val}' for k, val in overrides.items())
  return table.Row(
      name=f'lmjax {shape.name}' + shapes.precision_suffix(precision), precision=precision,
      tokens_per_s=shape.batch_size * shape.target_length / median,
      step_ms=1e3 * median, compile_s=result.timing.compile_s, gflop=gflop,
      xla_gflop=None if result.xla_flops is None else result.xla_flops / 1e9,
      peak_rss_mb=timing.peak_rss_mb(), note=note)
