r"""Compares `evaluate.py` reports side by side: the metric, its change, parameters, bytes, sparsity.

    python experiments/compare_reports.py --metric=bleu \
        --report=teacher=W_teacher/eval_best_test_beam5.json \
        --report=int8=W_teacher/eval_best_test_beam5_int8.json \
        --report=student=W_student/eval_best_test_beam5.json [--output_md=T.md] [--output_png=T.png]

Prints a markdown table (Δ against the first report); --output_png plots the metric against
the weight bytes. Reports of different splits, example counts or metric signatures (e.g.
sacreBLEU's) are refused with an error naming both files.
"""

import sys

from absl import app
from absl import flags

from lmjax import fileio
from lmjax.tools import compare

_REPORTS = flags.DEFINE_multi_string('report', [], 'LABEL=PATH or PATH of an evaluate.py JSON report '
                                     '(repeat the flag; the first is the baseline).')
_METRIC = flags.DEFINE_string('metric', 'bleu', 'Metric of the reports to compare.')
_OUTPUT_MD = flags.DEFINE_string('output_md', '', 'Also write the table to this file.')
_OUTPUT_PNG = flags.DEFINE_string('output_png', '', 'Write a plot of the metric against weight bytes.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    for name, path in (('--output_md', _OUTPUT_MD.value), ('--output_png', _OUTPUT_PNG.value)):
      if path and fileio.isdir(path):
        raise ValueError(f'{name}={path} is a directory; expected a file path')
    entries = [compare.parse_spec(spec) for spec in _REPORTS.value]
    table = compare.rows(entries, _METRIC.value)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  signature = (entries[0].report.get('signatures') or {}).get(_METRIC.value, '')
  text = compare.markdown(table, _METRIC.value, signature)
  print(text, end='')
  for path in (_OUTPUT_MD.value, _OUTPUT_PNG.value):
    if path:
      fileio.makedirs(fileio.parent(path))
  if _OUTPUT_MD.value:
    fileio.write_text(_OUTPUT_MD.value, text)
  if _OUTPUT_PNG.value:
    compare.plot(table, _METRIC.value, _OUTPUT_PNG.value)
    print(f'plot: {_OUTPUT_PNG.value}')


if __name__ == '__main__':
  app.run(main)
