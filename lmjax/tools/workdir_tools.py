"""The evaluate and decode tools as library functions: a workdir in, a report or a file out.

`experiments/evaluate.py` and `experiments/decode.py` are flag wrappers around
`evaluate_workdir` (+ `format_report`) and `decode_file`; the work is `inference.Run`.
"""

import json
import sys
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import jax

from lmjax import fileio
from lmjax.tools import ensemble as ensemble_lib
from lmjax.tools.inference import DecodeOptions, Run, ToolError, stderr_warning
from lmjax.objectives import predictions


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
                     ensemble: Sequence[str] = (), iw_samples: Optional[int] = None,
                     run_factory: Callable[[str, str], Run] = Run,
                     output_suffix: str = '') -> Dict[str, Any]:
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
      `workdir` from their mean scores (`lmjax.tools.ensemble`), each restoring `checkpoint`
      (or its `average_last` mean).
    iw_samples: VAE runs: importance samples per sentence for the IW bound (None = the
      run's config.eval.iw_samples; 0 = off).
    run_factory: builds the Run from (workdir, split), e.g. an int8 one (tools/quantized.py).
    output_suffix: appended to the default report name (e.g. '_int8').

  Returns:
    The report (also written to `report['output']`).
  """
  if output:
    check_output(output)
  run = run_factory(workdir, split)
  if outside_bias is not None:
    try:
      predictions.outside_bias(run.task, outside_bias, '--outside_bias')
    except ValueError as e:
      raise ToolError(str(e)) from e
    run.config.eval.outside_bias = outside_bias
  if iw_samples is not None:
    if run.config.model.get('kind') != 'vae' or iw_samples < 0:
      raise ToolError(f'--iw_samples={iw_samples}: needs a VAE run (model.kind=vae) and a '
                      f'value >= 0; {workdir} holds model.kind={run.config.model.get("kind")}')
    run.config.eval.iw_samples = iw_samples
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
  suffix += (f'_ensemble{len(ensemble) + 1}' if ensemble else '') + output_suffix
  output = output or fileio.join(workdir, f'eval_{info.label}_{split}{suffix}.json')
  report['output'] = fileio.resolve(output)
  with _atomic_output(output) as f:
    json.dump(report, f, indent=2, ensure_ascii=False)
  return report


class _atomic_output:  # pylint: disable=invalid-name
  """A file whose content replaces PATH only when the block completes (fileio.atomic_output),
  so a failed run never leaves a truncated file where an earlier complete output was."""

  def __init__(self, path: str):
    check_output(path)
    self.path, self._output = path, fileio.atomic_output(path, 'w')

  def __enter__(self):
    try:
      return self._output.__enter__()
    except OSError as e:
      raise ToolError(f'--output={self.path}: cannot write there ({e.strerror})') from e

  def __exit__(self, kind, error, tb):
    return self._output.__exit__(kind, error, tb)


def check_output(path: str) -> None:
  """Checks, before any work, that `path` can become an output file (its folder is made).

  Raises:
    ToolError: `path` is a folder, or its folder cannot be made.
  """
  try:
    fileio.check_url(path, '--output')
    if fileio.isdir(path):
      raise ToolError(f'--output={path} is a folder: give a file name')
    fileio.makedirs(fileio.parent(path))
  except ToolError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (each storage backend has its own)
    reason = getattr(e, 'strerror', None) or fileio.first_line(e)
    raise ToolError(f'--output={path}: cannot make its folder ({reason})') from e


def input_lines(path: str, errors: str = 'strict') -> Iterator[str]:
  """Lines of `path` ('-' = stdin) decoded as UTF-8 the same way for files and stdin.

  Args:
    path: input file or '-'.
    errors: 'strict' (an undecodable byte is a ToolError naming the line) or 'replace'.

  Yields:
    Lines without their line ending.
  """
  name = '<stdin>' if path == '-' else path
  stream = sys.stdin.buffer if path == '-' else fileio.open_file(path, 'rb')
  try:
    for lineno, raw in enumerate(stream, 1):
      raw = raw.rstrip(b'\n')
      raw = raw[:-1] if raw.endswith(b'\r') else raw
      try:
        yield raw.decode('utf-8', errors=errors)
      except UnicodeDecodeError as e:
        raise ToolError(f'{name}:{lineno}: not valid UTF-8 (byte {raw[e.start:e.start + 1]!r} at '
                        f'column {e.start + 1}); pass --encoding_errors=replace to replace '
                        'undecodable bytes with U+FFFD, or re-encode the input as UTF-8') from None
  finally:
    if stream is not sys.stdin.buffer:
      stream.close()


def _evaluate_ensemble(run: Run, primary, workdirs: Sequence[str], checkpoint: str,
                       average_last: int, beam_size: int) -> Dict[str, Any]:
  """`lmjax.tools.ensemble.evaluate` of `primary` (workdir, params, info) and `workdirs`."""
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
                warn: Callable[[str], None] = stderr_warning, encoding_errors: str = 'strict',
                run_factory: Callable[[str, str], Run] = Run) -> int:
  """Decodes every line of `input_path` ('-' = stdin) into `output_path` ('-' = stdout).

  Args:
    workdir: training run directory.
    input_path: one source sentence per line.
    output_path: one output per input line (empty for empty inputs).
    options: decoding options.
    checkpoint: 'latest', 'best', 'averaged' or a step.
    warn: receives warnings (truncated inputs).
    encoding_errors: 'strict' or 'replace' (see `input_lines`).
    run_factory: builds the Run from (workdir, split), e.g. an int8 one (tools/quantized.py).

  Returns:
    Number of lines written. A file output appears only once complete (an earlier
    output at that path is untouched when decoding fails).
  """
  if encoding_errors not in ('strict', 'replace'):
    raise ToolError(f"--encoding_errors={encoding_errors!r}: expected 'strict' or 'replace'")
  options.validate()
  if input_path != '-' and not fileio.isfile(input_path):
    raise ToolError(f'--input={input_path}: no such file (use - for stdin)')
  if output_path != '-':
    check_output(output_path)
  run = run_factory(workdir, 'eval')
  params, _ = run.restore(checkpoint)
  lines = input_lines(input_path, encoding_errors)
  count = 0
  if output_path == '-':
    for out in run.decode_lines(params, lines, options, warn):
      sys.stdout.write(out + '\n')
      sys.stdout.flush()
      count += 1
    return count
  with _atomic_output(output_path) as fout:
    for out in run.decode_lines(params, lines, options, warn):
      fout.write(out + '\n')
      count += 1
  return count
