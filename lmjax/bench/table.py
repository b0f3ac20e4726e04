"""Benchmark results: one Row per measurement, the printed table and the JSON file."""

import dataclasses
import json
from typing import Any, Dict, List, Optional


@dataclasses.dataclass
class Row:
  """One measurement. None prints as '-'.

  Attributes:
    name: what was measured.
    tokens_per_s: target (train) or output (decode) tokens per second.
    step_ms: median step / call / batch time, ms.
    compile_s: lower + compile time, s (None for eager PyTorch and the pipeline).
    gflop: analytic matmul GFLOP per step (lmjax.bench.flops).
    xla_gflop: GFLOP of XLA's cost analysis of the compiled step.
    peak_rss_mb: peak host memory of the process after this measurement, MB.
    vs_torch: lmjax tokens/s ÷ PyTorch tokens/s of the same shape.
    note: anything else (pipeline ratios, why a row is empty).
    precision: matmul operand dtype of the measurement ('float32' or 'bfloat16'); its
      MFU is taken against the ceiling of the same precision.
    mfu_ceiling: GFLOP/s of the matmul ceiling, set by `Report.add`.
  """
  name: str
  tokens_per_s: Optional[float] = None
  step_ms: Optional[float] = None
  compile_s: Optional[float] = None
  gflop: Optional[float] = None
  xla_gflop: Optional[float] = None
  peak_rss_mb: Optional[float] = None
  vs_torch: Optional[float] = None
  note: str = ''
  precision: str = 'float32'
  mfu_ceiling: Optional[float] = None

  @property
  def gflop_per_s(self) -> Optional[float]:
    """Achieved analytic GFLOP/s."""
    if self.gflop is None or not self.step_ms:
      return None
    return self.gflop / (self.step_ms / 1e3)

  @property
  def mfu_pct(self) -> Optional[float]:
    """Achieved GFLOP/s as % of the matmul ceiling."""
    if self.gflop_per_s is None or not self.mfu_ceiling:
      return None
    return 100.0 * self.gflop_per_s / self.mfu_ceiling

  def as_dict(self) -> Dict[str, Any]:
    """The fields plus the derived gflop_per_s and mfu_pct (for the JSON)."""
    out = dataclasses.asdict(self)
    out.update(gflop_per_s=self.gflop_per_s, mfu_pct=self.mfu_pct)
    return out


@dataclasses.dataclass
class Report:
  """A benchmark run: device information, the matmul ceilings and the rows.

  Attributes:
    info: device / library facts printed above the table.
    ceiling_gflops: float32 matmul ceiling GFLOP/s (the MFU denominator of float32 rows).
    rows: measurements in run order.
    bf16_ceiling_gflops: bfloat16-operand matmul ceiling (of bfloat16 rows), if measured.
  """
  info: Dict[str, Any]
  ceiling_gflops: float
  rows: List[Row] = dataclasses.field(default_factory=list)
  bf16_ceiling_gflops: Optional[float] = None

  def ceiling(self, precision: str) -> Optional[float]:
    """The ceiling of `precision` ('float32' or 'bfloat16'; None if not measured)."""
    return self.bf16_ceiling_gflops if precision == 'bfloat16' else self.ceiling_gflops

  def add(self, row: Row) -> Row:
    """Appends `row` (its MFU is taken against this report's ceiling). Returns it."""
    row.mfu_ceiling = self.ceiling(row.precision)
    self.rows.append(row)
    return row

  def set_ceiling(self, gflops: float, precision: str = 'float32') -> None:
    """Sets the MFU denominator of `precision` for the report and its rows."""
    if precision == 'bfloat16':
      self.bf16_ceiling_gflops = gflops
    else:
      self.ceiling_gflops = gflops
    for row in self.rows:
      row.mfu_ceiling = self.ceiling(row.precision)

  def find(self, name: str) -> Optional[Row]:
    """The first row called `name`, or None."""
    return next((r for r in self.rows if r.name == name), None)

  def as_dict(self) -> Dict[str, Any]:
    """{'info', 'ceiling_gflops', 'bf16_ceiling_gflops', 'rows': [Row.as_dict()]} (--json)."""
    return {'info': self.info, 'ceiling_gflops': self.ceiling_gflops,
            'bf16_ceiling_gflops': self.bf16_ceiling_gflops,
            'rows': [r.as_dict() for r in self.rows]}


def _gflop(x: float) -> str:
  return f'{x:.2f}' if x >= 1 else f'{x:.3g}'


# (header, Row attribute, formatter)
COLUMNS = [
    ('tok/s', 'tokens_per_s', '{:.0f}'.format),
    ('step ms', 'step_ms', '{:.1f}'.format),
    ('compile s', 'compile_s', '{:.1f}'.format),
    ('GFLOP/step', 'gflop', _gflop),
    ('XLA GFLOP', 'xla_gflop', _gflop),
    ('GFLOP/s', 'gflop_per_s', '{:.1f}'.format),
    ('MFU %', 'mfu_pct', '{:.1f}'.format),
    ('peak RSS MB', 'peak_rss_mb', '{:.0f}'.format),
    ('vs torch', 'vs_torch', '{:.2f}x'.format),
]

LEGEND = [
    'tok/s: target tokens (train) or output tokens (decode) per second at the median step time.',
    'GFLOP/step: analytic matmul FLOPs, train = 3 x forward (lmjax/bench/flops.py); XLA GFLOP:',
    '  the compiled step\'s cost analysis (every op; a loop body - scan, while - counted once).',
    'MFU: GFLOP/s / matmul ceiling of the row\'s precision (bf16 rows: the bf16 ceiling).',
    'peak RSS: the process peak so far (ru_maxrss, monotone).',
    'vs torch: lmjax tok/s / PyTorch tok/s, same shape and precision (PyTorch eager, same',
    '  CPU threads; bf16 rows: torch.autocast bfloat16).',
]


def format_report(report: Report) -> str:
  """Renders a report as text.

  Args:
    report: the benchmark results.

  Returns:
    The info lines, the matmul ceiling, an aligned table (one line per row, notes
    last, '-' where a value does not apply) and the column legend.
  """
  lines = [f'{k}: {v}' for k, v in report.info.items()]
  lines.append(f'matmul ceiling: {report.ceiling_gflops:.1f} GFLOP/s')
  if report.bf16_ceiling_gflops:
    lines.append(f'bf16 matmul ceiling: {report.bf16_ceiling_gflops:.1f} GFLOP/s '
                 '(bfloat16 operands, float32 result; MFU of the bf16 rows)')
  header = ['name'] + [c[0] for c in COLUMNS] + ['note']
  body = []
  for r in report.rows:
    cells = [r.name]
    for _, attr, fmt in COLUMNS:
      value = getattr(r, attr)
      cells.append('-' if value is None else fmt(value))
    body.append(cells + [r.note])
  widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header) - 1)]

  def line(cells):
    left = cells[0].ljust(widths[0])
    mid = [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:])]
    return '  '.join([left] + mid + [cells[-1]]).rstrip()

  lines += ['', line(header), '-' * (sum(widths) + 2 * len(widths) + 4)] + [line(b) for b in body]
  return '\n'.join(lines + [''] + LEGEND)


def write_json(report: Report, path: str) -> None:
  """Writes `report.as_dict()` to `path`."""
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(report.as_dict(), f, indent=2)
    f.write('\n')


MARKDOWN_COLUMNS = [('tok/s', 'tokens_per_s', '{:.0f}'.format), ('step ms', 'step_ms', '{:.0f}'.format),
                    ('compile s', 'compile_s', '{:.1f}'.format), ('GFLOP/step', 'gflop', _gflop),
                    ('MFU %', 'mfu_pct', '{:.1f}'.format), ('vs PyTorch', 'vs_torch', '{:.2f}×'.format)]


def markdown(report: Dict[str, Any]) -> str:
  """A benchmark JSON (`Report.as_dict()`) as the README's markdown table.

  Args:
    report: the dict `write_json` wrote.

  Returns:
    A line with the run's date, devices and matmul ceilings, then one table row per
    measurement ('–' where a value does not apply), then the notes of the rows whose
    result is only in their note (the input pipeline's rates).
  """
  info = report.get('info', {})
  ceilings = f"{report['ceiling_gflops']:.1f} GFLOP/s f32"
  if report.get('bf16_ceiling_gflops'):
    ceilings += f", {report['bf16_ceiling_gflops']:.1f} bf16"
  lines = [f"Run of {info.get('date', 'an unknown date')} on {info.get('devices', '?')} "
           f"(cpu_count {info.get('cpu_count', '?')}; jax {info.get('jax', '?')}; torch "
           f"{info.get('torch', '?')}); matmul ceiling {ceilings}.", '',
           '| name | ' + ' | '.join(c[0] for c in MARKDOWN_COLUMNS) + ' |',
           '|---' * (len(MARKDOWN_COLUMNS) + 1) + '|']
  notes = []
  for row in report['rows']:
    cells = [row['name']]
    for _, key, fmt in MARKDOWN_COLUMNS:
      value = row.get(key)
      cells.append('–' if value is None else fmt(value))
    lines.append('| ' + ' | '.join(cells) + ' |')
    if row.get('note') and row.get('tokens_per_s') is None:
      notes.append(f"- {row['name']}: {row['note']}")
  return '\n'.join(lines + ([''] + notes if notes else []))


def replace_between_markers(text: str, block: str, name: str = 'perf-table') -> str:
  """Replaces what lies between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in `text`.

  Raises:
    ValueError: the markers are missing or out of order.
  """
  begin, end = f'<!-- {name}:begin -->', f'<!-- {name}:end -->'
  i, j = text.find(begin), text.find(end)
  if i < 0 or j < i:
    raise ValueError(f'expected the lines {begin} and {end} (in this order) around the table')
  return text[:i + len(begin)] + '\n' + block.rstrip('\n') + '\n' + text[j:]
