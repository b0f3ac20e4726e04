r"""Sequence-level knowledge distillation (Kim & Rush, 2016): trains a student on the
teacher's beam-search translations of the student task's training sources.

    python experiments/distill.py --teacher_workdir=workdirs/m30k \
        --config=configs/multi30k_transformer.py:DATA,student --workdir=workdirs/m30k_student \
        [--beam_size=5 --alpha=0.6] [--teacher_checkpoint=latest] [--corpus_dir=DIR] [--train=false]

The translations are cached beside the student's training files (or in --corpus_dir) as
a parallel corpus, written in resumable chunks: rerunning the same command continues the
decoding where it stopped, then trains (or resumes training) the student. The student's
eval and test splits are its config's. See docs/COMPRESSION.md.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from lmjax.config import configlib
from lmjax import runtime

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Student config file (a text_seq2seq '
                                          'task on parallel files).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, "The student's run directory.")
_TEACHER = flags.DEFINE_string('teacher_workdir', None, "The trained teacher's run directory.")
_CHECKPOINT = flags.DEFINE_string('teacher_checkpoint', 'latest',
                                  "The teacher's checkpoint: latest, best, averaged or a step.")
_BEAM_SIZE = flags.DEFINE_integer('beam_size', 5, "Beam width of the teacher's search.")
_ALPHA = flags.DEFINE_float('alpha', 0.6, 'Beam-search length-penalty exponent.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Sentences per decoding batch.')
_MAX_LENGTH = flags.DEFINE_integer('max_length', 0, 'Output tokens incl. EOS (0 = the '
                                   "teacher's eval decode length).")
_CORPUS_DIR = flags.DEFINE_string('corpus_dir', '', 'Folder of the distilled corpus (default: '
                                  "beside the student's training files).")
_CHUNK = flags.DEFINE_integer('chunk_lines', 1024, 'Sentences per resumable chunk.')
_TRAIN = flags.DEFINE_bool('train', True, 'Train the student (--train=false: only the corpus).')
_DEBUG = flags.DEFINE_bool('debug', False, 'Show the traceback of errors a user can fix.')
flags.mark_flags_as_required(['config', 'workdir', 'teacher_workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runtime.setup(_CONFIG.value)
  # pylint: disable=g-import-not-at-top  (after runtime setup)
  from lmjax.data import sources
  from lmjax.tools import distill_data
  from lmjax.tools import inference
  from lmjax.train import guard
  options = inference.DecodeOptions(beam_size=_BEAM_SIZE.value, alpha=_ALPHA.value,
                                    batch_size=_BATCH_SIZE.value, max_length=_MAX_LENGTH.value)
  try:
    distill_data.distill(_TEACHER.value, _CONFIG.value, _WORKDIR.value, _CHECKPOINT.value,
                         options, _CORPUS_DIR.value, _CHUNK.value, _TRAIN.value)
  except configlib.ConfigError as e:
    sys.exit(f'{e}\n(config file: {flags.FLAGS["config"].config_filename})')
  except (*inference.USER_ERRORS, guard.TrainingError, sources.DataError, ValueError) as e:
    if _DEBUG.value:
      raise
    sys.exit(f'error ({type(e).__name__}): {e}\n(--debug shows the traceback)')


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
