r"""Preprocesses a config's training split once into ArrayRecord shards (+ its tokenizer).

    python experiments/preprocess.py --config=configs/tfds_wmt17_de_en.py --output=/data/lmjax
    python experiments/train.py --config=configs/tfds_wmt17_de_en.py \
        --config.task.preprocessed_dir=/data/lmjax --workdir=workdirs/wmt17

Writes OUTPUT/<key>/ (key: a hash of the sources and the settings that change the
records); rerunning finds it and does nothing. `train.py` does the same step itself on
its first run (into WORKDIR/preprocessed unless config.task.preprocessed_dir is set).
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from lmjax.config import configlib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_OUTPUT = flags.DEFINE_string('output', None, 'Root folder of the preprocessed data.')
_WORKERS = flags.DEFINE_integer('workers', None, 'Tokenizing processes (default: '
                                'config.task.preprocess_workers; 0 = one per CPU).')
flags.mark_flags_as_required(['config', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from lmjax.data import preprocess  # pylint: disable=g-import-not-at-top
  from lmjax.data import sources  # pylint: disable=g-import-not-at-top
  from lmjax.data import text_tasks  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  try:
    configlib.validate(config, check_paths=True)
    if _WORKERS.value is not None:
      config.task.preprocess_workers = _WORKERS.value
    source = text_tasks.preprocess_task(config.task, _OUTPUT.value)
  except configlib.ConfigError as e:
    sys.exit(f'{e}\n(config file: {flags.FLAGS["config"].config_filename})')
  except preprocess.NothingToPreprocess as e:
    print(e)  # not an error: train.py builds such a task at start-up
    return
  except (sources.DataError, ValueError) as e:
    sys.exit(f'error: {e}')
  index = source.index
  print(f'{source.directory}: {index["num_examples"]} examples in {len(index["shards"])} shard(s), '
        f'tokenizer hash {index["tokenizer_hash"]}')
  print(f'train from it with --config.task.preprocessed_dir={_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
