"""Side-by-side table (and plot) of `evaluate.py` reports: quality against model size.

Used for the compression results (docs/COMPRESSION.md): a teacher, its students, its
int8 and pruned versions, each evaluated into a JSON report. A score is only comparable
with another of the same split, example count and metric signature (sacreBLEU's
`nrefs:1|case:mixed|…`), so a comparison across different ones stops with an error that
names both reports.
"""

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence

from lmjax import fileio


@dataclasses.dataclass
class Entry:
  """One report.

  Attributes:
    label: the row's name.
    path: where the report was read.
    report: its JSON content.
  """
  label: str
  path: str
  report: Dict[str, Any]


def parse_spec(spec: str) -> Entry:
  """Reads 'LABEL=PATH' or 'PATH' (label: the report's folder and file name).

  Raises:
    ValueError: the file is missing, not JSON, or not an evaluate.py report.
  """
  label, sep, path = spec.partition('=')
  if not sep:
    label, path = '', spec
  if not fileio.exists(path):
    raise ValueError(f'--report={spec}: no such file {path}')
  try:
    report = json.loads(fileio.read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f'--report={spec}: {path} is not JSON ({e})') from None
  if not isinstance(report, dict) or not isinstance(report.get('metrics'), dict):
    raise ValueError(f'--report={spec}: {path} is not an evaluate.py report (no "metrics")')
  if not label:
    name = fileio.basename(path)
    stem = name[:-len('.json')] if name.endswith('.json') else name
    folder = fileio.basename(fileio.resolve(fileio.parent(path)))
    label = f'{folder}/{stem}' if folder else stem
  return Entry(label, path, report)


def weight_bytes(report: Dict[str, Any]) -> Optional[int]:
  """Bytes of the parameters as evaluated: int8 ones when quantized, else float32."""
  params = report.get('params') or {}
  if report.get('quantization') and 'bytes_int8' in params:
    return int(params['bytes_int8'])
  return int(params['bytes']) if 'bytes' in params else None


def check_comparable(entries: Sequence[Entry], metric: str) -> None:
  """Raises ValueError unless every report has `metric` on the same split, examples and signature."""
  if not entries:
    raise ValueError('--report: give at least one report')
  for e in entries:
    if metric not in e.report['metrics']:
      raise ValueError(f'--metric={metric}: {e.path} has no {metric!r} '
                       f'(it has {sorted(e.report["metrics"])})')
  first = entries[0]
  for key, what in (('split', 'split'), ('num_examples', 'number of examples')):
    for e in entries[1:]:
      if e.report.get(key) != first.report.get(key):
        raise ValueError(f'{e.path} and {first.path} differ in {what} '
                         f'({e.report.get(key)!r} vs {first.report.get(key)!r}): not comparable')
  sig = (first.report.get('signatures') or {}).get(metric)
  for e in entries[1:]:
    other = (e.report.get('signatures') or {}).get(metric)
    if other != sig:
      raise ValueError(f'{e.path} and {first.path} have different {metric} signatures '
                       f'({other!r} vs {sig!r}): their scores are not comparable')


def rows(entries: Sequence[Entry], metric: str) -> List[Dict[str, Any]]:
  """Per report: label, metric value, Δ to the first report, parameters, bytes, sparsity.

  Raises:
    ValueError: the reports are not comparable (`check_comparable`).
  """
  check_comparable(entries, metric)
  base = float(entries[0].report['metrics'][metric])
  out = []
  for e in entries:
    value = float(e.report['metrics'][metric])
    params = e.report.get('params') or {}
    decoding = e.report.get('decoding') or {}
    out.append({
        'label': e.label,
        metric: value,
        'delta': value - base,
        'params': params.get('values'),
        'weight_bytes': weight_bytes(e.report),
        'quantization': e.report.get('quantization') or 'float32',
        'sparsity': params.get('sparsity'),
        'checkpoint': (e.report.get('checkpoint') or {}).get('label', ''),
        'decoding': ' '.join(f'{k}={v}' for k, v in decoding.items() if k != 'max_length'),
    })
  return out


def _mib(n: Optional[int]) -> str:
  return '' if n is None else f'{n / 2**20:.2f}'


def markdown(table: Sequence[Dict[str, Any]], metric: str, signature: str = '') -> str:
  """The rows as a markdown table; the signature (if any) in a line under it."""
  head = ['run', metric, f'Δ {metric}', 'parameters', 'weights MiB', 'weights', 'sparsity',
          'checkpoint', 'decoding']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in table:
    cells = [r['label'], f'{r[metric]:.2f}', f'{r["delta"]:+.2f}',
             '' if r['params'] is None else f'{r["params"]:,}', _mib(r['weight_bytes']),
             r['quantization'], '' if r['sparsity'] is None else f'{100 * r["sparsity"]:.1f} %',
             r['checkpoint'], r['decoding']]
    lines.append('| ' + ' | '.join(str(c).replace('|', '\\|') for c in cells) + ' |')
  if signature:
    lines += ['', f'{metric} signature: `{signature}`']
  return '\n'.join(lines) + '\n'


def plot(table: Sequence[Dict[str, Any]], metric: str, path: str) -> None:
  """Writes a PNG of `metric` against weight MiB, one labelled point per report."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in table:
    if r['weight_bytes'] is None:
      continue
    x = r['weight_bytes'] / 2**20
    ax.scatter([x], [r[metric]], s=30)
    ax.annotate(r['label'], (x, r[metric]), textcoords='offset points', xytext=(5, 4), fontsize=8)
  ax.set_xlabel('weights (MiB, as evaluated)')
  ax.set_ylabel(metric)
  ax.set_xscale('log')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  with fileio.atomic_output(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=110)
  plt.close(fig)
