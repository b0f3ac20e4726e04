"""Inference on a trained workdir: load it, decode text in batches, evaluate a split.

Loading the workdir itself (config, checkpoint names, user errors) is `lmjax.tools.workdir`.

    run = inference.Run(workdir)
    params, ckpt = run.restore('best')                      # or 'latest', 'averaged', '1500'
    outputs = list(run.decode_lines(params, ['march third 1994'], DecodeOptions(beam_size=4)))
    report = run.evaluate(params, ckpt, beam_size=4)

`experiments/evaluate.py` and `experiments/decode.py` are flag wrappers around
`lmjax.tools.workdir_tools.evaluate_workdir` and `decode_file`. Errors a user can fix (missing workdir or
checkpoint, bad flag values) are `USER_ERRORS`; the scripts print them and exit 2.
"""

import dataclasses
import math
from typing import Any, Callable, Dict, Iterable, Iterator, List, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np

from lmjax import fileio
from lmjax.tools import averaging
from lmjax.tools import labeling
from lmjax.tools import param_report
from lmjax import metrics as metrics_lib
from lmjax import models
from lmjax import parallel
from lmjax.decoding import predict
from lmjax.data import pipeline
from lmjax.data import tasks
from lmjax.objectives import predictions as predictions_lib
from lmjax.objectives import registry
from lmjax.train import evaluation
# Re-exported: the tools use them through this module.
from lmjax.tools.workdir import (CheckpointInfo, SPLITS, ToolError, USER_ERRORS, inference_mesh,  # noqa: F401
                           load_config, resolve_checkpoint, setup_process, stderr_warning,
                           use_test_split)
from lmjax.tools.workdir import _check_matches


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How to decode (the flags of experiments/decode.py).

  Attributes:
    beam_size: beam width; 1 = greedy.
    alpha: GNMT length-penalty exponent for beam search.
    temperature: > 0 samples (with top_k / top_p); 0 = greedy or beam search.
    top_k: sample among the k most likely tokens (0 = all).
    top_p: nucleus mass (1 = all).
    seed: sampling seed.
    batch_size: sentences per batch (rounded up to a multiple of the batch devices).
    max_length: output tokens, EOS included (0 = config.eval.decode_max_length or the
      task's target length).
  """
  beam_size: int = 1
  alpha: float = 0.6
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  batch_size: int = 64
  max_length: int = 0

  @property
  def method(self) -> str:
    return 'sample' if self.temperature > 0 else 'beam' if self.beam_size > 1 else 'greedy'

  def validate(self) -> None:
    """Raises ToolError naming every bad flag value."""
    problems = []
    if self.beam_size < 1:
      problems.append(f'--beam_size={self.beam_size}: must be >= 1')
    if self.temperature < 0:
      problems.append(f'--temperature={self.temperature}: must be >= 0 (0 = no sampling)')
    if self.temperature > 0 and self.beam_size > 1:
      problems.append('--temperature > 0 samples and --beam_size > 1 searches: choose one')
    if self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
      problems.append(f'--top_k={self.top_k} / --top_p={self.top_p}: need top_k >= 0 and '
                      '0 < top_p <= 1')
    if self.temperature == 0 and (self.top_k or self.top_p < 1.0):
      problems.append('--top_k / --top_p only apply when sampling: set --temperature > 0')
    if self.batch_size < 1 or self.max_length < 0:
      problems.append(f'--batch_size={self.batch_size} / --max_length={self.max_length}: need '
                      'batch_size >= 1 and max_length >= 0')
    if problems:
      raise ToolError('bad decoding flags:\n  ' + '\n  '.join(problems))


class Run:
  """A trained workdir: its config, task, model and compiled decoders (no parameters).

  Attributes:
    workdir: the run directory.
    config: its config.json (eval.batch_size rounded to the batch devices here).
    task: the task (tokenizers from WORKDIR/tokenizers).
    model: the unbound module.
    mesh, batch_sharding, param_shardings: where batches and parameters live.
    rows_multiple: batch sizes are rounded up to a multiple of this (batch devices).
  """

  def __init__(self, workdir: str, split: str = 'eval'):
    """Args: workdir: the run directory; split: which held-out split `task.eval_examples`
    holds: 'eval' (as in training) or 'test' (config.task.source.test_files / test_split)."""
    self.workdir = workdir
    self.split = split
    config = load_config(workdir)
    if split not in SPLITS:
      raise ToolError(f'--split={split!r}: expected one of {list(SPLITS)}')
    if split == 'test':
      use_test_split(config)
    try:
      self.task = tasks.build_task(config.task, workdir)
      self.model = models.build_model(config.model, **self.task.model_sizes())
    except ValueError as e:
      raise ToolError(f'cannot rebuild the run from {workdir}/config.json: {e}') from e
    rules = parallel.rules_from_config(config)
    self.mesh = inference_mesh(config, rules)
    self.rows_multiple = math.prod(self.mesh.shape[a] for a in parallel.batch_axes(rules))
    config.eval.batch_size = self.round_rows(config.eval.batch_size)
    self.config = config
    self.batch_sharding = parallel.batch_sharding(self.mesh, rules)
    self.replicated = parallel.replicated(self.mesh)
    first = self.task.eval_examples[0] if self.task.eval_examples else self.task.train_example(0)
    dummy = pipeline.pad_batch([first], self.task.lengths, 1)
    rng = jax.random.key(0)
    boxed = jax.eval_shape(lambda: self.model.init({'params': rng, 'dropout': rng}, dummy,
                                                   train=False))['params']
    self.param_shardings = parallel.logical_shardings(boxed, self.mesh, rules)
    self.abstract_params = nn.meta.unbox(boxed)
    self._decoders: Dict[Any, Callable] = {}
    self._evaluator, self._greedy = None, None

  def round_rows(self, n: int) -> int:
    return -(-n // self.rows_multiple) * self.rows_multiple

  def restore(self, checkpoint: str = 'latest', average_last: int = 0) -> Tuple[Any, CheckpointInfo]:
    """Loads parameters onto the mesh (the moving average, for a run that kept one).

    Args:
      checkpoint: 'latest', 'best', 'averaged' or a step number.
      average_last: > 0: the mean of the newest N checkpoints of checkpoints/last instead.

    Returns:
      (params, CheckpointInfo).
    """
    if average_last > 0:
      if checkpoint != 'latest':
        raise ToolError(f'--average_last={average_last} averages the newest checkpoints of '
                        f'checkpoints/last: drop --checkpoint={checkpoint}')
      steps = averaging.select_steps(averaging.list_steps(self.workdir, 'last'), average_last,
                                     where=averaging.slot_dir(self.workdir, 'last'))
      host = averaging.average_params(self.workdir, steps, 'last')
      info = CheckpointInfo('last', steps[-1], tuple(steps))
    else:
      slot, step = resolve_checkpoint(self.workdir, checkpoint)
      state, meta = averaging.read_checkpoint(self.workdir, slot, step)
      host = averaging.model_params(state)
      info = CheckpointInfo(slot, step, tuple(meta.get('averaged_from', {}).get('steps', ())))
    _check_matches(host, self.abstract_params,
                   fileio.join(averaging.slot_dir(self.workdir, info.slot), str(info.step)))
    return jax.device_put(host, self.param_shardings), info

  @property
  def generates_from_prompts(self) -> bool:
    """Decoder-only (language model) runs continue prompts; encdec runs translate sources."""
    return self.config.model.kind == 'decoder'

  def decode_length(self, requested: int = 0) -> int:
    """Output length: `requested`, else config.eval.decode_max_length, else the task's."""
    length = requested or self.config.eval.decode_max_length or self.task.lengths.get('targets', 0)
    max_len = self.config.model.get('max_len')
    if max_len and length > max_len:
      raise ToolError(f'--max_length={length} exceeds the position table of the model '
                      f'(config.model.max_len={max_len}): use --max_length <= {max_len}')
    if self.generates_from_prompts and length < 2:
      raise ToolError(f'--max_length={length}: a language model needs room for a prompt token and '
                      'a generated one (>= 2)')
    return length

  def decoder(self, options: DecodeOptions, length: int) -> Callable:
    """Compiled (params, inputs (B, W), rng) -> (B, length) ids for `options` (cached).

    For encdec runs `inputs` are the sources; for decoder-only runs they are the
    prompts (right-padded with 0, W = length - 1), forced as the first tokens. No decoder
    chooses the ids of config.model.never_emit (`models.never_emitted`).
    """
    kind, o, model = self.config.model.kind, options, self.model
    if kind not in ('encdec', 'decoder') or self.task.kind not in ('seq2seq', 'lm'):
      raise ToolError(f'{self.workdir} has config.model.kind={kind!r} on a {self.task.kind!r} '
                      'task: decoding text needs an encdec (seq2seq) or decoder (language model) '
                      'run; evaluate this one with experiments/evaluate.py')
    if kind == 'decoder' and o.method == 'beam':
      raise ToolError('--beam_size > 1 is not supported for language-model (decoder-only) runs: '
                      'use greedy decoding or --temperature > 0')
    key = (o.method, length, o.beam_size, o.alpha, o.temperature, o.top_k, o.top_p)
    banned = models.never_emitted(self.config.model)
    if key not in self._decoders:
      if kind == 'decoder':  # temperature 0 = greedy continuation of the prompt
        fn = lambda p, x, rng: predict.sample_decode(model, p, x, rng, length, temperature=o.temperature,
                                                     top_k=o.top_k, top_p=o.top_p, prefix=x,
                                                     banned_ids=banned)
      elif o.method == 'greedy':
        fn = lambda p, x, rng: predict.greedy_decode(model, p, x, length, banned_ids=banned)
      elif o.method == 'beam':
        fn = lambda p, x, rng: predict.beam_decode(model, p, x, o.beam_size, length, alpha=o.alpha,
                                                   banned_ids=banned)[0][:, 0]  # best of the n-best
      else:
        fn = lambda p, x, rng: predict.sample_decode(model, p, x, rng, length, temperature=o.temperature,
                                                     top_k=o.top_k, top_p=o.top_p,
                                                     banned_ids=banned)
      self._decoders[key] = jax.jit(
          fn, in_shardings=(self.param_shardings, self.batch_sharding, self.replicated),
          out_shardings=self.batch_sharding)
    return self._decoders[key]

  def source_limit(self, options: DecodeOptions) -> int:
    """Most tokens of one input: the source length, or for prompts max_length - 1."""
    if self.generates_from_prompts:
      return self.decode_length(options.max_length) - 1
    return self.task.lengths['inputs']

  def encode_line(self, text: str, options: DecodeOptions) -> Tuple[List[int], int]:
    """Token ids of a source (or prompt) within `source_limit`, and its untruncated length.

    Over-long sources keep their first tokens; over-long prompts their last ones.
    """
    feature = 'targets' if self.generates_from_prompts else 'inputs'
    ids = self.task.tokenizers[feature].encode(text)
    limit = self.source_limit(options)
    if len(ids) <= limit:
      return ids, len(ids)
    return (ids[-limit:] if self.generates_from_prompts else ids[:limit]), len(ids)

  def decode_ids(self, params, sources: Sequence[Sequence[int]], options: DecodeOptions,
                 batch_index: int = 0) -> List[np.ndarray]:
    """Decodes encoded sources (or prompts), from `encode_line`, in one padded batch.

    Args:
      params: parameters from `restore`.
      sources: token ids, at most options.batch_size rows.
      options: decoding options.
      batch_index: folded into the sampling seed (different draws per batch).

    Returns:
      Per source, the output ids (0 after EOS); for prompts only the continuation.
    """
    rows = self.round_rows(max(options.batch_size, len(sources)))
    length = self.decode_length(options.max_length)
    width = self.source_limit(options)
    examples = [{'inputs': np.asarray(s, np.int32)} for s in sources]
    batch = pipeline.pad_batch(examples, {'inputs': width}, rows)  # (N, W)
    inputs = jax.device_put(batch['inputs'], self.batch_sharding)
    rng = jax.random.fold_in(jax.random.key(options.seed), batch_index)
    ids = np.asarray(jax.device_get(self.decoder(options, length)(params, inputs, rng)))  # (N, L)
    if self.generates_from_prompts:
      return [row[len(src):] for row, src in zip(ids, sources)]
    return list(ids[:len(sources)])

  def decode_lines(self, params, lines: Iterable[str], options: DecodeOptions,
                   warn: Callable[[str], None] = stderr_warning) -> Iterator[str]:
    """Decodes lines of text in batches, yielding one output line per input line, in order.

    Empty lines give empty outputs without running the model; sources longer than the
    model's input length (prompts longer than max_length - 1) are truncated with a
    warning. Newlines in outputs become spaces, so outputs stay aligned with inputs.

    Args:
      params: parameters from `restore`.
      lines: sources (encdec) or prompts (decoder-only); a trailing newline is ignored.
      options: decoding options.
      warn: receives warnings (default: printed to stderr).

    Yields:
      Detokenized outputs (for prompts: the continuation only); for classify and tag
      runs the label, or the tags of the line's words (`lmjax.tools.labeling`).
    """
    options.validate()
    if self.task.kind in labeling.KINDS:
      if options.method != 'greedy':
        raise ToolError(f'--beam_size / --temperature do not apply to a {self.task.kind!r} run: '
                        'it predicts one label per line (tag: per word)')
      yield from labeling.label_lines(self, params, lines, options.batch_size, warn)
      return
    self.decoder(options, self.decode_length(options.max_length))  # unsupported runs fail here
    limit = self.source_limit(options)
    chunk: List[List[int]] = []
    batch_index = 0

    def truncated(number, full):
      if self.generates_from_prompts:
        return (f'prompt line {number} has {full} tokens; truncated to the last {limit} '
                f'(--max_length={limit + 1} leaves room for {limit})')
      return (f'input line {number} has {full} tokens; truncated to the first {limit} '
              f'(config.task.max_input_length of {self.workdir})')

    def flush(chunk, batch_index):
      real = [ids for ids in chunk if ids]
      outputs = iter(self.decode_ids(params, real, options, batch_index) if real else [])
      for ids in chunk:
        yield self.task.detokenize(next(outputs)).replace('\n', ' ') if ids else ''

    for number, line in enumerate(lines, 1):
      ids, full = self.encode_line(line.rstrip('\r\n'), options)
      if full > limit:
        warn(truncated(number, full))
      chunk.append(ids)
      if len(chunk) == options.batch_size:
        yield from flush(chunk, batch_index)
        chunk, batch_index = [], batch_index + 1
    if chunk:
      yield from flush(chunk, batch_index)

  def evaluator(self) -> evaluation.Evaluator:
    """The trainer's Evaluator (the run's objective), built once; a seq2seq run's greedy
    decoder is kept in `_greedy`."""
    if self._evaluator is None:
      objective = registry.build(self.config, self.task, self.model)
      self._evaluator = evaluation.Evaluator(self.task, objective, self.config, self.mesh,
                                             self.batch_sharding, self.param_shardings)
      if isinstance(objective.predictor, predictions_lib.Decode):
        self._greedy = self._evaluator.predict_fn
    return self._evaluator

  def evaluate(self, params, info: CheckpointInfo, split: str = 'eval', beam_size: int = 1,
               alpha: float = 0.6) -> Dict[str, Any]:
    """The trainer's eval metrics of `split`, optionally decoding with beam search.

    Every metric comes from `lmjax.train.evaluation.Evaluator.evaluate`, as during
    training (loss, accuracy, perplexity; exact match, BLEU, chrF for seq2seq; F1 for
    classify and tag); seq2seq runs also get the sacreBLEU signatures and predictions.

    Args:
      params: parameters from `restore`.
      info: which checkpoint they are (for the report).
      split: one of SPLITS.
      beam_size: 1 = greedy (the trainer's decoder), else beam search (seq2seq only).
      alpha: length penalty for beam search.

    Returns:
      The report: workdir, checkpoint, split, num_examples, metrics, params (count, bytes,
      sparsity: `param_report.param_report`), and for seq2seq decoding, signatures, predictions.
    """
    if split != self.split:
      raise ToolError(f'--split={split!r}: this Run was built for split {self.split!r}')
    DecodeOptions(beam_size=beam_size, alpha=alpha).validate()
    evaluator = self.evaluator()
    if self._greedy is None and beam_size > 1:
      raise ToolError(f'--beam_size={beam_size}: only seq2seq runs decode during evaluation; '
                      f'this is a {self.task.kind!r} task')
    if beam_size > 1:  # the trainer's batching and scoring, another search
      beam = self.decoder(DecodeOptions(beam_size=beam_size, alpha=alpha),
                          evaluator.predictor.max_length)
      no_rng = jax.random.key(0)
      evaluator.predict_fn = lambda p, batch: beam(p, batch['inputs'], no_rng)
    elif self._greedy is not None:
      evaluator.predict_fn = self._greedy
    examples = self.task.eval_examples
    report = {'workdir': fileio.resolve(self.workdir), 'split': split,
              'num_examples': len(examples), 'metrics': evaluator.evaluate(params),
              'checkpoint': dict(dataclasses.asdict(info), label=info.label), 'signatures': {},
              'params': param_report.param_report(params)}
    if self._greedy is not None:
      predictions = evaluator.predict_texts(params, examples)
      refs = self.task.eval_references[:len(predictions)]
      if 'bleu' in report['metrics']:
        report['signatures']['bleu'] = metrics_lib.bleu(predictions, refs,
                                                        tokenize=self.task.bleu_tokenize)[1]
      if 'chrf' in report['metrics']:
        report['signatures']['chrf'] = metrics_lib.chrf(predictions, refs)[1]
      if 'ann_bleu' in report['metrics']:
        report['signatures']['ann_bleu'] = metrics_lib.bleu(
            predictions, self.task.eval_annotations[:len(predictions)],
            tokenize=self.task.bleu_tokenize)[1]
      report['decoding'] = {'method': 'beam' if beam_size > 1 else 'greedy',
                            'beam_size': beam_size, 'alpha': alpha if beam_size > 1 else None,
                            'max_length': evaluator.predictor.max_length}
      report['predictions'] = predictions
    return report
