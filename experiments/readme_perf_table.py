r"""Writes one benchmark run's table into README.md (between the perf-table markers).

    python experiments/benchmark.py --precisions=float32,bfloat16 --json=/tmp/bench.json
    python experiments/readme_perf_table.py --json=/tmp/bench.json [--readme=README.md]

The README's performance table is only ever written this way, so it always shows one
run of the current code, with its date and matmul ceilings.
"""

import json
import os
import sys

from absl import app
from absl import flags

from lmjax.bench import table

_JSON = flags.DEFINE_string('json', None, 'A JSON file written by experiments/benchmark.py --json.')
_README = flags.DEFINE_string('readme', 'README.md', 'The markdown file to update.')
flags.mark_flags_as_required(['json'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    with open(_JSON.value, encoding='utf-8') as fh:
      report = json.load(fh)
    block = table.markdown(report)
  except (OSError, ValueError, KeyError) as e:
    sys.exit(f'--json={_JSON.value}: not a benchmark.py --json file ({type(e).__name__}: {e})')
  try:
    with open(_README.value, encoding='utf-8') as fh:
      text = table.replace_between_markers(fh.read(), block)
  except (OSError, ValueError) as e:
    sys.exit(f'--readme={_README.value}: {e}')
  tmp = f'{_README.value}.tmp-{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as fh:
    fh.write(text)
  os.replace(tmp, _README.value)
  print(f"wrote the table of {len(report['rows'])} rows into {_README.value}")


if __name__ == '__main__':
  app.run(main)
