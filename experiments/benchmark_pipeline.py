r"""Data-pipeline throughput vs the train-step rate of the config's model.

    python experiments/benchmark_pipeline.py --config=configs/multi30k_transformer.py:/path/to/data

Builds the task, times host-local batches/s of every batching mode (plain, pack,
bucket), then times jitted train steps of the config's model on one such batch, and
prints the ratio (the pipeline must be ≥ 10× faster than the step so it never stalls
training). `--steps` / `--batches` set how many of each are timed. The logic lives in
lmjax/bench/pipeline.py (also the 'pipeline' section of experiments/benchmark.py).

    python experiments/benchmark_pipeline.py --scale [--scale_pairs=60000,1000000,6000000] \
        [--scale_lines=30000000] [--scale_workers=0,1,2] [--scale_dir=/tmp/lmjax_scale]

--scale (no --config) benchmarks the streaming data path at corpus scale instead: it
generates parallel and monolingual corpora, preprocesses them (text_tasks.preprocess_task),
times train.py's start-up and peak RSS per corpus size and packed-batch throughput with
0/1/2 Grain workers, prints one table against the goals and writes
SCALE_DIR/scale_results.json. The logic lives in lmjax/bench/scale.py.
"""

import time

from absl import app
from absl import flags
from ml_collections import config_flags

from lmjax.config import configlib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_BATCHES = flags.DEFINE_integer('batches', 300, 'Pipeline batches timed per mode.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Train steps timed.')
_SCALE = flags.DEFINE_bool('scale', False, 'Run the corpus-scale benchmark (lmjax/bench/scale.py).')
_SCALE_DIR = flags.DEFINE_string('scale_dir', '/tmp/lmjax_scale', 'Corpora, preprocessed data, '
                                 'runs and scale_results.json (reused between runs).')
_SCALE_PAIRS = flags.DEFINE_list('scale_pairs', ['60000', '1000000', '6000000'],
                                 'Parallel corpus sizes (pairs).')
_SCALE_LINES = flags.DEFINE_integer('scale_lines', 30_000_000,
                                   'Monolingual corpus lines (0 = none).')
_SCALE_WORKERS = flags.DEFINE_list('scale_workers', ['0', '1', '2'],
                                   'Grain worker counts of the packed-throughput rows.')
_SCALE_BATCHES = flags.DEFINE_integer('scale_batches', 30, 'Packed batches timed per worker count.')
_SCALE_SPM = flags.DEFINE_integer('scale_spm_sentences', 200_000,
                                  'config.task.tokenizer.max_sentences (SentencePiece sample).')
_SCALE_SEED = flags.DEFINE_integer('scale_seed', 0, 'Corpus seed.')


def main(argv):
  del argv
  if _SCALE.value:
    from lmjax.bench import scale  # pylint: disable=g-import-not-at-top
    results = scale.run(_SCALE_DIR.value, [int(n) for n in _SCALE_PAIRS.value], _SCALE_LINES.value,
                        [int(w) for w in _SCALE_WORKERS.value], _SCALE_BATCHES.value,
                        _SCALE_SPM.value, _SCALE_SEED.value)
    print(scale.format_table(results))
    return
  if _CONFIG.value is None:
    raise app.UsageError('--config is required (or give --scale)')
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
