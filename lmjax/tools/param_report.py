"""What a run's parameters hold: count, bytes (float32 and int8), sparsity; for reports."""

from typing import Any, Dict, Optional

from lmjax.train import pruning
from lmjax.models import quantization


def param_report(params, quantized: Optional[Any] = None) -> Dict[str, Any]:
  """Counts, bytes and sparsity of `params`, and the bytes of their int8 form.

  Args:
    params: float parameters (as restored from a checkpoint).
    quantized: their int8 tree (`quantization.quantize_params`), when evaluated in int8.

  Returns:
    values, bytes (as stored: float32), sparsity (exact zeros of the prunable weights,
    `pruning.prunable`) and sparsity_all (of every parameter); with `quantized` also
    bytes_int8 (int8 values + float32 scales + the parameters left in float) and
    quantized_values.
  """
  stats = quantization.param_stats(params)
  report = {'values': stats['values'], 'bytes': stats['bytes'], **pruning.sparsity_stats(params)}
  if quantized is not None:
    q = quantization.param_stats(quantized)
    report.update(bytes_int8=q['bytes'], quantized_values=q['quantized_values'])
  return report


def format_params(report: Dict[str, Any]) -> str:
  """One line about report['params'] ('' when the report has none)."""
  p = report.get('params')
  if not p:
    return ''
  mb = lambda n: f'{n / 2**20:.2f} MiB'
  line = f"parameters: {p['values']:,} ({mb(p['bytes'])} float32"
  if 'bytes_int8' in p:
    line += (f", {mb(p['bytes_int8'])} {report.get('quantization', 'int8')}: "
             f"{p['bytes'] / max(p['bytes_int8'], 1):.2f}x smaller, "
             f"{p['quantized_values'] / max(p['values'], 1):.1%} of the values in int8")
  line += ')'
  if p.get('sparsity') is not None:
    line += (f"; sparsity {p['sparsity']:.2%} of the weight matrices, "
             f"{p['sparsity_all']:.2%} of all parameters")
  return line
