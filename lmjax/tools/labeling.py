"""Classify and tag lines of raw text with a trained encoder run (experiments/decode.py).

A classifier writes one label name per input line; a tagger writes one tag per
whitespace-separated word of the line, so outputs align word for word with inputs.
Inputs are encoded by the task's own `encode_input` (as its training examples were)
and predicted by the trainer's `predict_step` (Viterbi decoding with a CRF).
"""

from typing import Callable, Iterable, Iterator, List, Optional

from lmjax.data import pipeline
from lmjax.tools.workdir import ToolError

KINDS = ('classify', 'tag')


def label_lines(run, params, lines: Iterable[str], batch_size: int,
                warn: Callable[[str], None]) -> Iterator[str]:
  """Yields the label (classify) or the tags (tag) of each line, in order.

  Empty lines give empty outputs without running the model. A line longer than the
  model's input length is cut to its first `max_input_length` tokens with a warning;
  a tagger labels the words past the cut 'O', so each output keeps one tag per word.

  Args:
    run: an `lmjax.tools.inference.Run` of a classify or tag task.
    params: parameters from `run.restore`.
    lines: raw text lines; a trailing newline is ignored.
    batch_size: lines per batch.
    warn: receives the truncation warnings.

  Yields:
    One output line per input line.
  """
  task = run.task
  if task.kind not in KINDS or task.encode_input is None:
    raise ToolError(f'{run.workdir} is a {task.kind!r} run: labelling text needs a classify '
                    'or tag run')
  evaluator = run.evaluator()
  limit = task.lengths['inputs']
  names = task.label_names
  chunk: List[Optional[pipeline.Example]] = []

  def output(example, prediction) -> str:
    if task.kind == 'classify':
      return names[int(prediction)]
    words = len(example['inputs'])
    return ' '.join([names[t] for t in prediction[:min(words, limit)]] + ['O'] * (words - limit))

  def flush(chunk):
    real = [ex for ex in chunk if ex is not None]
    predictions = iter(evaluator.predict(params, real) if real else [])
    for ex in chunk:
      yield '' if ex is None else output(ex, next(predictions))

  for number, line in enumerate(lines, 1):
    text = line.rstrip('\r\n')
    example = task.encode_input(text) if text.strip() else None
    if example is not None and len(example['inputs']) > limit:
      full = len(example['inputs'])
      warn((f'input line {number} has {full} words; those past the first {limit} are tagged O'
            if task.kind == 'tag' else
            f'input line {number} has {full} tokens; truncated to the first {limit}')
           + f' (config.task.max_input_length of {run.workdir})')
    chunk.append(example)
    if len(chunk) == batch_size:
      yield from flush(chunk)
      chunk = []
  if chunk:
    yield from flush(chunk)
