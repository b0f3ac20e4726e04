"""The evaluate and decode tools as library functions: a workdir in, a report or a file out.

`experiments/evaluate.py` and `experiments/decode.py` are flag wrappers around
`evaluate_workdir` (+ `format_report`) and `decode_file`; the work is `inference.Run`.
"""

import json
import os
import sys
from typing import Any, Callable, Dict, Optional, Sequence

import jax

from lmjax import ensemble as ensemble_lib
from lmjax.inference import DecodeOptions, Run, ToolError, stderr_warning
from lmjax.train import evaluation


def format_report(report: Dict[str, Any]) -> str:
  """The report as a text table with the sacreBLEU signatures."""
  ckpt, dec = report['checkpoint'], report.get('decoding')
  how = 'no decoding' if dec is None else (
      f"beam {dec['beam_size']}, alpha {dec['alpha']}" if dec['method'] == 'beam' else 'greedy')
  lines = [f"{report['workdir']}  checkpoint {ckpt['label']}"
           + (f" (average of steps {ckpt['averaged_steps']})" if ckpt['averaged_steps'] else '')]
  if report.get('ensemble'):
    how = 'ensemble (mean scores)'
    lines += [f"ensemble of {len(report['ensemble'])}: "
              + ', '.join(f"{m['workdir']} ({m['checkpoint']})" for m in report['ensemble'])]
  lines += [f"split {report['split']} ({report['num_examples']} examples), {how}"
            + (f", outside bias {report['outside_bias']}" if report.get('outside_bias') else ''),
            f"{'metric':<18}{'value':>12}", '-' * 30]
  lines += [f'{k:<18}{v:>12.4f}' for k, v in report['metrics'].items()]
  names = {'bleu': 'BLEU', 'chrf': 'chrF', 'ann_bleu': 'BLEU (annotations)'}
  lines += [f'{names.get(k, k)} signature: {sig}' for k, sig in report['signatures'].items()]
  return '\n'.join(lines)


def evaluate_workdir(workdir: str, checkpoint: str = 'latest', average_last: int = 0,
                     split: str = 'eval', beam_size: int = 1, alpha: float = 0.6,
                     output: str = '', outside_bias: Optional[float] = None,
                     ensemble: Sequence[str] = ()) -> Dict[str, Any]:
  """Restores a checkpoint of `workdir`, evaluates `split`, writes the JSON report.

  Args:
    workdir: training run directory.
    checkpoint: 'latest', 'best', 'averaged' or a step.
    average_last: evaluate the mean of the newest N checkpoints instead.
    split: one of SPLITS.
    beam_size: 1 = greedy, else beam search.
    alpha: beam-search length penalty.
    output: report path ('' = WORKDIR/eval_<checkpoint label>_<split>.json).
    outside_bias: taggers: replaces the run's config.eval.outside_bias (None = keep it).
    ensemble: other workdirs of the same config (classifiers, taggers) predicting with
      `workdir` from their mean scores (`lmjax.ensemble`), each restoring `checkpoint`
      (or its `average_last` mean).

  Returns:
    The report (also written to `report['output']`).
  """
  run = Run(workdir, split)
  if outside_bias is not None:
    try:
      evaluation.outside_bias(run.task, outside_bias, '--outside_bias')
    except ValueError as e:
      raise ToolError(str(e)) from e
    run.config.eval.outside_bias = outside_bias
  params, info = run.restore(checkpoint, average_last)
  if ensemble:
    report = _evaluate_ensemble(run, (workdir, params, info), ensemble, checkpoint,
                                average_last, beam_size)
  else:
    report = run.evaluate(params, info, split, beam_size, alpha)
  bias = run.config.eval.outside_bias
  if bias:
    report['outside_bias'] = bias
  suffix = (f'_beam{beam_size}' if beam_size > 1 else '') + (f'_outside{bias:g}' if bias else '')
  suffix += f'_ensemble{len(ensemble) + 1}' if ensemble else ''
  output = output or os.path.join(workdir, f'eval_{info.label}_{split}{suffix}.json')
  report['output'] = os.path.abspath(output)
  os.makedirs(os.path.dirname(report['output']), exist_ok=True)
  with open(output, 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=2, ensure_ascii=False)
  return report


def _evaluate_ensemble(run: Run, primary, workdirs: Sequence[str], checkpoint: str,
                       average_last: int, beam_size: int) -> Dict[str, Any]:
  """`lmjax.ensemble.evaluate` of `primary` (workdir, params, info) and `workdirs`."""
  if beam_size > 1:
    raise ToolError(f'--beam_size={beam_size}: --ensemble evaluates classifiers and taggers, '
                    'which do not decode; drop --beam_size')
  members = [primary]
  for workdir in workdirs:
    member = Run(workdir, run.split)
    ensemble_lib.check_member(run, member)
    params, info = member.restore(checkpoint, average_last)
    members.append((workdir, jax.device_put(params, run.param_shardings), info))
  return ensemble_lib.evaluate(run, members)


def decode_file(workdir: str, input_path: str = '-', output_path: str = '-',
                options: DecodeOptions = DecodeOptions(), checkpoint: str = 'latest',
                warn: Callable[[str], None] = stderr_warning) -> int:
  """Decodes every line of `input_path` ('-' = stdin) into `output_path` ('-' = stdout).

  Args:
    workdir: training run directory.
    input_path: one source sentence per line.
    output_path: one output per input line (empty for empty inputs).
    options: decoding options.
    checkpoint: 'latest', 'best', 'averaged' or a step.
    warn: receives warnings (truncated inputs).

  Returns:
    Number of lines written.
  """
  options.validate()
  if input_path != '-' and not os.path.isfile(input_path):
    raise ToolError(f'--input={input_path}: no such file (use - for stdin)')
  run = Run(workdir)
  params, _ = run.restore(checkpoint)
  fin = sys.stdin if input_path == '-' else open(input_path, encoding='utf-8')
  fout = sys.stdout if output_path == '-' else open(output_path, 'w', encoding='utf-8')
  count = 0
  try:
    for out in run.decode_lines(params, fin, options, warn):
      fout.write(out + '\n')
      fout.flush()
      count += 1
  finally:
    if fin is not sys.stdin:
      fin.close()
    if fout is not sys.stdout:
      fout.close()
  return count
