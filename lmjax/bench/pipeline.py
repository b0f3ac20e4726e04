"""Input-pipeline throughput against the train-step rate of the same config's model.

The pipeline must produce batches at least 10× faster than the model consumes them,
so that it never stalls training. Used by experiments/benchmark.py (section 'pipeline',
on the built-in synthetic task of configs/default.py) and
experiments/benchmark_pipeline.py (any config).
"""

import dataclasses
import time
from typing import List, Tuple

import numpy as np

from lmjax.bench import flops
from lmjax.bench import jax_train
from lmjax.bench import table
from lmjax.bench import timing
from lmjax.data import tasks

# The pipeline must be this many times faster than the train step.
REQUIRED_RATIO = 10.0


def batching_modes(task, config) -> List[str]:
  """Batching modes to time: plain, pack (not classify/tag), bucket (if config.task sets it up)."""
  modes = ['plain'] if task.kind in ('classify', 'tag') else ['plain', 'pack']
  batching = config.task.get('batching')
  if batching is not None and batching.get('bucket_lengths') and batching.get('max_tokens'):
    modes.append('bucket')
  return modes


def time_pipeline(task, config, mode: str, n: int) -> float:
  """Batches/s of `n` host-local training batches in `mode` (the epoch plan included).

  Args:
    task: the built Task.
    config: experiment config (train.batch_size, task.batching for bucket options).
    mode: 'plain', 'pack' or 'bucket'.
    n: batches drawn.

  Returns:
    Batches per second.
  """
  batching = dict(config.task.get('batching') or {}, mode=mode)
  start = time.perf_counter()
  # The trainer's own iterator (Grain, see Task.train_iterator) in the mode timed.
  it = dataclasses.replace(task, batching=batching).train_iterator(config.train.batch_size, seed=0)
  for _ in range(n):
    next(it)
  rate = n / (time.perf_counter() - start)
  it.close()
  return rate


def plain_batch(task, config):
  """The first plain (unpacked) training batch of the task: {name: (B, L) int32}."""
  it = dataclasses.replace(task, batching={'mode': 'plain'}).train_iterator(
      config.train.batch_size, seed=0)
  batch = next(it)
  it.close()
  return batch


def time_train_step(task, config, steps: int,
                    warmup: int = 1) -> Tuple[float, jax_train.TrainResult]:
  """Train steps/s of the config's model on the task's first plain batch (after compiling).

  Args:
    task: the built Task.
    config: experiment config (its mesh: a 1-device mesh or all devices).
    steps: timed steps.
    warmup: untimed steps after compiling.

  Returns:
    (steps per second from the median step time, the TrainResult).
  """
  result = jax_train.time_train_step(config, task.model_sizes(), plain_batch(task, config), steps,
                                     warmup, task)
  return 1.0 / result.timing.median, result


def rows(config, steps: int, warmup: int, batches: int) -> List[table.Row]:
  """The section: the config's train step, then one row per batching mode with its ratio.

  Args:
    config: experiment config with a 1-device mesh (configs/default.py: synthetic task).
    steps: timed train steps.
    warmup: untimed train steps.
    batches: pipeline batches timed per mode.

  Returns:
    ['lmjax <task> train (pipeline ref)', 'pipeline <mode>' …] rows.
  """
  task = tasks.build_task(config.task, None)
  steps_per_s, result = time_train_step(task, config, steps, warmup)
  batch = plain_batch(task, config)
  label = 'targets' if 'targets' in batch else next(iter(batch))
  gflop, m = None, config.model
  if m.family == 'transformer' and m.kind == 'encdec':
    gflop = flops.transformer_train_flops(m, task.model_sizes()['target_vocab_size'],
                                          config.train.batch_size, task.lengths['inputs'],
                                          task.lengths['targets']) / 1e9
  out = [table.Row(
      name=f'lmjax {task.name} train (pipeline ref)',
      tokens_per_s=float(np.sum(batch[label] > 0)) * steps_per_s,
      step_ms=1e3 / steps_per_s, compile_s=result.timing.compile_s, gflop=gflop,
      xla_gflop=None if result.xla_flops is None else result.xla_flops / 1e9,
      peak_rss_mb=timing.peak_rss_mb(),
      note=f'batch {config.train.batch_size}, real target tokens; {steps_per_s:.2f} steps/s')]
  for mode in batching_modes(task, config):
    rate = time_pipeline(task, config, mode, batches)
    ratio = rate / steps_per_s
    verdict = 'OK' if ratio >= REQUIRED_RATIO else 'TOO SLOW'
    out.append(table.Row(
        name=f'pipeline {mode} ({task.name})', step_ms=1e3 / rate,
        peak_rss_mb=timing.peak_rss_mb(),
        note=f'{rate:.0f} batches/s = {ratio:.0f}x train steps/s ({verdict}: needs >= '
        f'{REQUIRED_RATIO:.0f}x)'))
  return out
