r"""Device check (issues 34, 47): the attention kernel matrix, peak bf16 FLOP/s, bf16 train rows with MFU, PyTorch, beam decode,
and a 300-step train run of configs/default.py checked against the CPU loss. Run it
through `experiments/device_check.sh`:

    experiments/device_check.sh [--mode=auto|full|quick|tiny] \
        [--sections=kernels,matmul,train,torch,decode,train_run] [--json=PATH] [--out=DIR]

--mode=auto: 'full' on TPU/GPU (<= 4 minutes on one GPU), 'quick' on CPU (<= 3 minutes).
Exits 1 when an attention kernel check fails or the train run's loss is outside the
tolerance. See lmjax/bench/device_check.py.
"""

import sys

from absl import app
from absl import flags

from lmjax.bench import device_check
from lmjax.bench import table

_MODE = flags.DEFINE_enum('mode', 'auto', list(device_check.MODES),
                          "'full' (accelerator), 'quick' (CPU), 'tiny' (smoke test); 'auto' picks "
                          'full or quick by platform.')
_SECTIONS = flags.DEFINE_list('sections', list(device_check.SECTIONS), 'Sections to run.')
_JSON = flags.DEFINE_string('json', None, 'Also write the table to this JSON file.')
_OUT = flags.DEFINE_string('out', None, 'Also write the report to this folder: '
                           'device_check.md and device_check.json.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  options = device_check.Options(mode=_MODE.value, sections=_SECTIONS.value)
  try:
    device_check.check_options(options)
  except ValueError as e:
    sys.exit(f'device_check: {e}')
  result = device_check.run(options)
  print(device_check.format_result(result))
  if _JSON.value:
    table.write_json(result.report, _JSON.value)
    print(f'wrote {_JSON.value}')
  if _OUT.value:
    print('wrote ' + ' and '.join(device_check.write_report(result, _OUT.value)))
  if not result.ok:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
