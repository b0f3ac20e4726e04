r"""Fine-tunes from another workdir with its exact config: an imported checkpoint
(experiments/import_hf.py) or a finished run.

    python experiments/train.py --config=configs/finetune.py:workdirs/t5 --workdir=workdirs/t5_ft \
        [--config.train.num_train_steps=2000 --config.optimizer.learning_rate=1e-4 ...]

The argument is the source workdir: its config.json (task, model, training) is the
starting config and config.train.init_from points at it, so the new run starts from its
parameters and copies its tokenizers (lmjax/train/source_run.py). Override anything
else on the command line.
"""

import json

import ml_collections

from lmjax import fileio


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Returns the source workdir's config with train.init_from = that workdir."""
  if not arg:
    raise ValueError('configs/finetune.py needs the source workdir: '
                     '--config=configs/finetune.py:WORKDIR')
  path = fileio.join(arg, 'config.json')
  try:
    c = ml_collections.ConfigDict(json.loads(fileio.read_text(path)))
  except (OSError, ValueError) as e:
    raise ValueError(f'configs/finetune.py:{arg}: cannot read {path} ({e}); give the '
                     '--workdir of an imported checkpoint or a trained run') from e
  c.train.init_from = arg
  c.train.init_checkpoint = 'latest'
  return c
