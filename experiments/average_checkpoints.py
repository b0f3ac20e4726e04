r"""Averages the parameters of several checkpoints into WORKDIR/checkpoints/averaged/<step>.

    python experiments/average_checkpoints.py --workdir=workdirs/default --last=3
    python experiments/average_checkpoints.py --workdir=workdirs/default --steps=1000,1500,2000 \
        [--output_step=2000]

Then evaluate or decode with --checkpoint=averaged. Existing checkpoints are never
overwritten.
"""

import sys

from absl import app
from absl import flags

from lmjax.config import configlib
from lmjax.tools import averaging
from lmjax.tools import inference

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.')
_LAST = flags.DEFINE_integer('last', 0, 'Average the newest N kept checkpoints of checkpoints/last.')
_STEPS = flags.DEFINE_list('steps', [], 'Or average exactly these steps (comma-separated).')
_OUTPUT_STEP = flags.DEFINE_integer('output_step', None,
                                    'Step directory of the result (default: newest averaged step).')
_SOURCE = flags.DEFINE_enum('source', 'last', ['last', 'best'], 'Checkpoint slot to average.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  inference.setup_process()
  try:
    if bool(_LAST.value) == bool(_STEPS.value):
      raise inference.ToolError('give exactly one of --last=N or --steps=S1,S2,...')
    if not all(s.isdigit() for s in _STEPS.value):
      raise inference.ToolError(f'--steps={",".join(_STEPS.value)}: expected step numbers')
    inference.load_config(_WORKDIR.value)  # a clear error for a wrong --workdir
    path, steps = averaging.write_averaged(_WORKDIR.value, last=_LAST.value,
                                           steps=[int(s) for s in _STEPS.value],
                                           output_step=_OUTPUT_STEP.value, slot=_SOURCE.value)
  except inference.USER_ERRORS as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'averaged steps {steps} → {path}  (use --checkpoint=averaged)')


if __name__ == '__main__':
  app.run(main, flags_parser=configlib.flags_parser)
