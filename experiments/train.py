r"""Trains a model. Rerunning the same command resumes from the latest checkpoint.

    python experiments/train.py --config=configs/default.py --workdir=workdirs/default \
        [--config.train.num_train_steps=5000 ...]
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from lmjax.config import configlib
from lmjax import runtime

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (checkpoints, metrics, plots).')
_DEBUG = flags.DEFINE_bool('debug', False, 'Show the traceback of errors a user can fix '
                           '(bad config values, data, workdir or checkpoint).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runtime.setup(_CONFIG.value)
  # pylint: disable=g-import-not-at-top  (after runtime setup)
  from lmjax.data import sources
  from lmjax.train import guard
  from lmjax.train import loop
  try:
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except configlib.ConfigError as e:
    sys.exit(f'{e}\n(config file: {flags.FLAGS["config"].config_filename})')
  except (guard.TrainingError, sources.DataError, ValueError) as e:
    # What the user can fix (non-finite training, full disk, bad data, a batch size the
    # devices do not divide, an unwritable workdir, an unreadable checkpoint, an unknown
    # task): the message, no traceback.
    if _DEBUG.value:
      raise
    sys.exit(f'error ({type(e).__name__}): {e}\n(--debug shows the traceback)')


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
