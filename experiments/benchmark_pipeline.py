r"""Data-pipeline throughput vs the train-step rate of the config's model.

    python experiments/benchmark_pipeline.py --config=configs/multi30k_transformer.py:/path/to/data

Builds the task, times host-local batches/s of every batching mode (plain, pack,
bucket), then times jitted train steps of the config's model on one such batch, and
prints the ratio (the pipeline must be ≥ 10× faster than the step so it never stalls
training). `--steps` / `--batches` set how many of each are timed. The logic lives in
lmjax/bench/pipeline.py (also the 'pipeline' section of experiments/benchmark.py).
"""

import time

from absl import app
from absl import flags
from ml_collections import config_flags

from lmjax import configlib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_BATCHES = flags.DEFINE_integer('batches', 300, 'Pipeline batches timed per mode.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Train steps timed.')
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  from lmjax.bench import pipeline  # pylint: disable=g-import-not-at-top
  from lmjax.data import tasks  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  start = time.perf_counter()
  task = tasks.build_task(config.task, None)
  print(f'task {config.task.name}: {len(task.train_examples)} train examples, built in '
        f'{time.perf_counter() - start:.1f} s')
  rates = {m: pipeline.time_pipeline(task, config, m, _BATCHES.value)
           for m in pipeline.batching_modes(task, config)}
  steps, _ = pipeline.time_train_step(task, config, _STEPS.value)
  print(f'train step ({config.model.family}/{config.model.kind}, batch {config.train.batch_size}): '
        f'{steps:.2f} steps/s')
  for mode, rate in rates.items():
    ok = rate >= pipeline.REQUIRED_RATIO * steps
    print(f'pipeline {mode:6s}: {rate:9.1f} batches/s  = {rate / steps:7.1f}× the step rate '
          f"({'OK' if ok else 'TOO SLOW'}: needs ≥ {pipeline.REQUIRED_RATIO:.0f}×)")


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
