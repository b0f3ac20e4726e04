r"""Data-pipeline throughput vs the train-step rate of the config's model.

    python experiments/benchmark_pipeline.py --config=configs/multi30k_transformer.py:/path/to/data

Builds the task, times host-local batches/s of every batching mode (plain, pack,
bucket), then times jitted train steps of the config's model on one such batch, and
prints the ratio (the pipeline must be ≥ 10× faster than the step so it never stalls
training). `--steps` / `--batches` set how many of each are timed.
"""

import functools
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from lmjax import configlib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_BATCHES = flags.DEFINE_integer('batches', 300, 'Pipeline batches timed per mode.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Train steps timed.')
flags.mark_flags_as_required(['config'])


def time_pipeline(task, config, mode: str, n: int) -> float:
  """Batches/s of `n` training batches in `mode` (the epoch plan included)."""
  task.batching = dict(config.task.batching, mode=mode)
  start = time.perf_counter()
  it = task.train_iterator(config.train.batch_size, seed=0)
  for _ in range(n):
    next(it)
  return n / (time.perf_counter() - start)


def time_train_step(task, config, n: int) -> float:
  """Train steps/s of the config's model on the task's plain batches (after compiling)."""
  import jax  # pylint: disable=g-import-not-at-top
  from lmjax import models, parallel  # pylint: disable=g-import-not-at-top
  from lmjax.train import optim, state as state_lib, step as step_lib  # pylint: disable=g-import-not-at-top
  mesh = parallel.create_mesh(config.mesh)
  rules = parallel.rules_from_config(config)
  model = models.build_model(config.model, **task.model_sizes())
  tx = optim.make_optimizer(config.optimizer, config.train.num_train_steps)
  task.batching = {'mode': 'plain'}
  batch = next(task.train_iterator(config.train.batch_size, seed=0))
  state, shardings = state_lib.create_sharded_state(model, tx, batch, config.seed, mesh, rules)
  sharding = parallel.batch_sharding(mesh, rules)
  step = jax.jit(functools.partial(step_lib.train_step, model=model, tx=tx, label_smoothing=0.1),
                 in_shardings=(shardings, sharding), donate_argnums=0)
  batch = parallel.to_global(batch, sharding)
  state, m = step(state, batch)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(n):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  return n / (time.perf_counter() - start)


def main(argv):
  del argv
  from lmjax.data import tasks  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  start = time.perf_counter()
  task = tasks.build_task(config.task, None)
  print(f'task {config.task.name}: {len(task.train_examples)} train examples, built in '
        f'{time.perf_counter() - start:.1f} s')
  modes = ['plain', 'pack', 'bucket']
  if task.kind in ('classify', 'tag'):
    modes = ['plain', 'bucket']
  rates = {m: time_pipeline(task, config, m, _BATCHES.value) for m in modes}
  steps = time_train_step(task, config, _STEPS.value)
  print(f'train step ({config.model.family}/{config.model.kind}, batch {config.train.batch_size}): '
        f'{steps:.2f} steps/s')
  for mode, rate in rates.items():
    print(f'pipeline {mode:6s}: {rate:9.1f} batches/s  = {rate / steps:7.1f}× the step rate '
          f"({'OK' if rate >= 10 * steps else 'TOO SLOW'}: needs ≥ 10×)")


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
