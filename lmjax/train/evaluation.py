"""Evaluation during training: loss/accuracy on the eval split plus the metrics of each task kind.

| task kind | metrics (`metric_names`) |
|---|---|
| seq2seq  | loss, accuracy, nll, perplexity (teacher-forced); exact_match, bleu, chrf (greedy decode) |
| lm       | loss, accuracy (next-token, %), nll, perplexity; nll_in_context (targets after |
|          | each row's first: with BOS rows, those predicted from at least one real token; |
|          | not with a stateful LSTM, whose windows carry context) |
| classify | loss, accuracy (%), nll, perplexity, macro_f1 (%) |
| tag      | loss, accuracy (of the predicted tags, %), entity_precision, entity_recall, entity_f1 |
|          | (seqeval, CoNLL scoring); nll and perplexity, or nll_per_token with a CRF |

Taggers with a CRF predict by Viterbi decoding (`crf_decode`), the others by argmax; a
CRF's loss is the mean NLL per sentence. config.eval.outside_bias is added to the outside
tag's ('O') score before either, to move a tagger along its precision/recall curve.

A VAE (config.model.kind='vae') on an 'lm' task reports its ELBO terms instead of
nll_in_context: rec, kl, elbo (per sentence), active_units, with nll / perplexity being the
ELBO's per-word bound; with config.eval.iw_samples = K > 0 also iw_nll (per sentence) and
iw_perplexity (per word), the importance-weighted bound of Burda et al. (2016).
"""

import functools
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from lmjax import metrics as metrics_lib
from lmjax import parallel
from lmjax.decoding import predict
from lmjax.data import pipeline
from lmjax.train import stateful
from lmjax.train import step as step_lib
from lmjax.train import vae_objective

KIND_METRICS = {
    'seq2seq': ('loss', 'accuracy', 'nll', 'perplexity', 'exact_match', 'bleu', 'chrf'),
    # nll_in_context: targets after a row's first (BOS rows: that one has no context).
    'lm': ('loss', 'accuracy', 'nll', 'perplexity', 'nll_in_context'),
    'classify': ('loss', 'accuracy', 'nll', 'perplexity', 'macro_f1'),
    'tag': ('loss', 'accuracy', 'entity_precision', 'entity_recall', 'entity_f1'),
}
VAE_METRICS = ('rec', 'kl', 'elbo', 'active_units')
IW_METRICS = ('iw_nll', 'iw_perplexity')
# Rows (sentences × samples) per importance-weighting call: bounds its (rows, T, V) logits.
IW_ROWS = 512
# The IW pass batches sentences of similar length, padded to the next multiple of this (one
# compile per bucket): PTB's test sentences average 22 tokens of a 64-token limit.
IW_BUCKET = 16


def iw_samples(config, model) -> int:
  """config.eval.iw_samples for a VAE (0 for other models); ValueError when absent or < 0."""
  if not vae_objective.is_vae(model):
    return 0
  k = config.eval.get('iw_samples')
  if isinstance(k, bool) or not isinstance(k, int) or k < 0:
    raise ValueError(f'config.eval.iw_samples={k!r}: a VAE needs an integer >= 0 (importance '
                     'samples per sentence for the IW bound; 0 = off); see configs/ptb_vae.py')
  return k


def metric_names(task, model, stateful: bool = False, iw: int = 0) -> Tuple[str, ...]:
  """Names of the eval metrics the trainer reports for `task` and `model` (`iw`: a VAE's
  config.eval.iw_samples)."""
  names = KIND_METRICS[task.kind]
  if stateful or vae_objective.is_vae(model):  # carried state: a window's first token has context
    names = tuple(n for n in names if n != 'nll_in_context')
  if vae_objective.is_vae(model):
    names += VAE_METRICS + (IW_METRICS if iw else ())
  if task.kind == 'seq2seq' and task.decode_metrics == 'rouge':
    names += ('rouge1', 'rouge2', 'rougeL')
  if task.kind == 'tag':
    names += ('nll_per_token',) if step_lib.uses_crf(model) else ('nll', 'perplexity')
  return names


def check_best_metric(config, task, model) -> None:
  """Raises a ValueError when config.train.best_metric is not reported for this task."""
  iw_samples(config, model)  # checks the field; IW metrics come with the last eval only
  names = metric_names(task, model, config.train.stateful)
  if config.train.best_metric not in names:
    raise ValueError(f'config.train.best_metric={config.train.best_metric!r} is not an eval '
                     f'metric of this {task.kind!r} task; choose one of {list(names)}')


def _gather(x) -> np.ndarray:
  return np.asarray(multihost_utils.process_allgather(x, tiled=True)
                    if jax.process_count() > 1 else x)


def outside_bias(task, value: float, name: str = 'config.eval.outside_bias'):
  """The (C,) score bias putting `value` on the tag named 'O', or None when `value` is 0.

  Args:
    task: the run's task (its kind and label_names).
    value: config.eval.outside_bias.
    name: the field or flag named in errors.

  Returns:
    (C,) float32 array or None.

  Raises:
    ValueError: `value` is not a finite number, or is nonzero for a task without an 'O' tag.
  """
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
    raise ValueError(f'{name}={value!r}: expected a finite number')
  if value == 0:
    return None
  names = list(task.label_names or [])
  if task.kind != 'tag' or 'O' not in names:
    raise ValueError(f'{name}={value}: only a tag task with an outside tag '
                     f"'O' (config.task.source.labels) can use it; this {task.kind!r} task has "
                     f'labels {names}')
  bias = np.zeros(len(names), np.float32)
  bias[names.index('O')] = value
  return jnp.asarray(bias)


class Evaluator:
  """Compiles the eval, predict and greedy-decode functions once and runs them over the eval split."""

  def __init__(self, task, model, config, mesh, batch_sharding, param_shardings):
    self.task, self.model, self.config = task, model, config
    self.batch_sharding = batch_sharding
    rep = parallel.replicated(mesh)
    self.eval_step = jax.jit(functools.partial(step_lib.eval_step, model=model),
                             in_shardings=(param_shardings, batch_sharding), out_shardings=rep)
    self.stateful_eval_step = None
    if config.train.stateful:
      carry = jax.tree.map(lambda _: batch_sharding, model.zero_state(1))
      self.stateful_eval_step = jax.jit(
          functools.partial(step_lib.stateful_eval_step, model=model),
          in_shardings=(param_shardings, carry, batch_sharding), out_shardings=(rep, carry))
    self.position_step = None
    if task.kind == 'lm' and not config.train.stateful and not vae_objective.is_vae(model):
      self.position_step = jax.jit(functools.partial(step_lib.position_nll_step, model=model),
                                   in_shardings=(param_shardings, batch_sharding),
                                   out_shardings=rep)
    self.predict_step = None
    if task.kind in ('classify', 'tag'):
      bias = outside_bias(task, config.eval.outside_bias)
      self.predict_step = jax.jit(functools.partial(step_lib.predict_step, model=model,
                                                    score_bias=bias),
                                  in_shardings=(param_shardings, batch_sharding),
                                  out_shardings=batch_sharding)
    self.iw_samples = iw_samples(config, model)
    if self.iw_samples:
      self.iw_chunk = min(self.iw_samples, max(1, IW_ROWS // config.eval.batch_size))
      self.iw_step = jax.jit(
          functools.partial(vae_objective.iw_log_weights, model=model, samples=self.iw_chunk),
          in_shardings=(param_shardings, batch_sharding, rep), out_shardings=batch_sharding)
    self.decode_length = config.eval.decode_max_length or task.lengths.get('targets', 0)
    self.decode = None
    if task.kind == 'seq2seq':
      self.decode = jax.jit(
          functools.partial(predict.greedy_decode, model, max_length=self.decode_length),
          in_shardings=(param_shardings, batch_sharding), out_shardings=batch_sharding)

  def _batches(self, examples):
    return pipeline.eval_batches(examples, self.config.eval.batch_size, self.task.lengths,
                                 jax.process_index(), jax.process_count())

  def evaluate(self, params, iw: bool = True) -> Dict[str, float]:
    """The eval-split metrics of the task's kind (see the table at the top of this module).

    Args:
      params: model parameters (sharded).
      iw: a VAE with config.eval.iw_samples > 0 also computes the IW bound (costly: the
        trainer asks for it at its last eval only).

    Returns:
      Metric name → value.
    """
    if self.stateful_eval_step is not None:
      sums = stateful.eval_sums(self.stateful_eval_step, params, self.task, self.model,
                                self.config, self.batch_sharding, parallel.to_global)
    else:
      sums = None
      for local in self._batches(self.task.eval_examples):
        m = self.eval_step(params, parallel.to_global(local, self.batch_sharding))
        sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
    metrics = step_lib.summarize(jax.device_get(sums))
    metrics.pop('grad_norm', None)
    if self.position_step is not None:
      sums, counts = self.position_nll(params)
      metrics['nll_in_context'] = float(sums[1:].sum() / max(counts[1:].sum(), 1.0))
    if self.iw_samples and iw:
      metrics.update(self.iw_metrics(params))
    if self.decode is not None:
      predictions = self.predict_texts(params, self.task.eval_examples)
      metrics.update(self.task.score_predictions(predictions))
    if self.task.kind == 'classify':
      metrics.update(self.classify_metrics(self.predict_ids(params, self.task.eval_examples)))
    if self.task.kind == 'tag':
      metrics.update(self.tag_metrics(self.predict_ids(params, self.task.eval_examples)))
    return metrics

  def iw_metrics(self, params) -> Dict[str, float]:
    """The importance-weighted NLL bound with config.eval.iw_samples draws per sentence:
    iw_nll (nats per sentence) and iw_perplexity (per word, EOS included)."""
    k, chunk = self.iw_samples, self.iw_chunk
    calls = -(-k // chunk)
    total = tokens = sentences = 0.0
    # K = 500 on PTB's test split takes over an hour on a CPU host: show sentences done.
    bar = tqdm.tqdm(total=len(self.task.eval_examples), unit=' sentences',
                    desc=f'IW bound (K={k})', disable=jax.process_index() != 0,
                    dynamic_ncols=True, mininterval=2.0)
    for i, local in enumerate(self._length_bucketed_batches(self.task.eval_examples)):
      batch = parallel.to_global(local, self.batch_sharding)
      weights = np.concatenate([_gather(self.iw_step(
          params, batch, jax.random.fold_in(jax.random.key(vae_objective.EVAL_SEED + 1),
                                            i * calls + c))) for c in range(calls)], 1)[:, :k]
      lengths = np.sum(_gather(batch['targets']) > 0, -1)
      nll = vae_objective.iw_nll(weights)
      total += float(np.sum(nll[lengths > 0]))
      tokens += float(np.sum(lengths))
      real = int(np.sum(lengths > 0))  # padding rows have no tokens
      sentences += real
      bar.update(real)
    bar.close()
    return {'iw_nll': total / max(sentences, 1.0),
            'iw_perplexity': float(np.exp(min(total / max(tokens, 1.0), 50.0)))}

  def _length_bucketed_batches(self, examples):
    """Eval batches of the examples whose targets fit the same multiple of IW_BUCKET (at
    most the task's target length), each padded to that length, shortest bucket first."""
    limit = self.task.lengths['targets']
    groups = {}
    for ex in examples:
      bucket = min(-(-max(len(ex['targets']), 1) // IW_BUCKET) * IW_BUCKET, limit)
      groups.setdefault(bucket, []).append(ex)
    for bucket in sorted(groups):
      yield from pipeline.eval_batches(groups[bucket], self.config.eval.batch_size,
                                       dict(self.task.lengths, targets=bucket),
                                       jax.process_index(), jax.process_count())

  def position_nll(self, params) -> Tuple[np.ndarray, np.ndarray]:
    """NLL sums and target counts at each target position over the eval split, ((T,), (T,))."""
    sums = counts = 0.0
    for local in self._batches(self.task.eval_examples):
      s, c = self.position_step(params, parallel.to_global(local, self.batch_sharding))
      sums, counts = sums + np.asarray(s, np.float64), counts + np.asarray(c, np.float64)
    return sums, counts

  def predict_ids(self, params, examples, step=None) -> List[np.ndarray]:
    """Predicted class ids (classify) or tag-id rows (tag) for `examples`, in order.

    `step(params, batch)` replaces the compiled `predict_step` (e.g. an ensemble's).
    """
    step = step or self.predict_step
    out = []
    for local in self._batches(examples):
      out.extend(_gather(step(params, parallel.to_global(local, self.batch_sharding))))
    return out[:len(examples)]

  def prediction_metrics(self, predictions: List[np.ndarray]) -> Dict[str, float]:
    """The metrics computed from predictions alone: accuracy (%) and macro F1 (classify),
    or token accuracy and entity P/R/F1 (tag)."""
    if self.task.kind == 'tag':
      return self.tag_metrics(predictions)
    gold = np.asarray([int(ex['label']) for ex in self.task.eval_examples])
    correct = np.asarray(predictions) == gold
    return {'accuracy': 100.0 * float(correct.mean()), **self.classify_metrics(predictions)}

  def classify_metrics(self, predictions: List[np.ndarray]) -> Dict[str, float]:
    """Macro-F1 (%) of predicted classes against the eval labels."""
    gold = [int(ex['label']) for ex in self.task.eval_examples]
    return {'macro_f1': 100.0 * metrics_lib.macro_f1(np.asarray(predictions), np.asarray(gold))}

  def tag_metrics(self, predictions: List[np.ndarray]) -> Dict[str, float]:
    """Token accuracy (%) and entity-level P/R/F1 (seqeval) of predicted tag rows.

    Scored against every word of the eval sentences (`task.eval_references`), as the
    official scorers do: words past config.task.max_input_length were never tagged, so
    they count as 'O' and their gold entities as misses.
    """
    names = self.task.label_names
    gold_tags, pred_tags = [], []
    for ref, pred in zip(self.task.eval_references, predictions):
      gold = ref.split()
      tagged = [names[t] for t in pred[:len(gold)]]
      gold_tags.append(gold)
      pred_tags.append(tagged + ['O'] * (len(gold) - len(tagged)))
    tokens = sum(len(g) for g in gold_tags)
    correct = sum(g == p for gs, ps in zip(gold_tags, pred_tags) for g, p in zip(gs, ps))
    scores = metrics_lib.entity_f1(gold_tags, pred_tags)
    return {'accuracy': 100.0 * correct / max(tokens, 1), 'entity_precision': scores['precision'],
            'entity_recall': scores['recall'], 'entity_f1': scores['f1']}

  def predict_texts(self, params, examples) -> List[str]:
    """Greedy-decoded, detokenized outputs for `examples` (in order)."""
    out = []
    for local in self._batches(examples):
      batch = parallel.to_global(local, self.batch_sharding)
      ids = _gather(self.decode(params, batch['inputs']))
      out.extend(self.task.detokenize(row) for row in ids)
    return out[:len(examples)]

  def samples(self, params, n: int) -> List[str]:
    """A few 'source → prediction (reference)' lines for the log."""
    if n <= 0:
      return []
    examples = self.task.eval_examples[:n]
    refs = self.task.eval_references[:n]
    if self.decode is not None:
      preds = self.predict_texts(params, examples)
    elif self.predict_step is not None:
      ids = self.predict_ids(params, examples)
      names = self.task.label_names
      preds = ([names[int(i)] for i in ids] if self.task.kind == 'classify' else
               [' '.join(names[t] for t in row[:len(ex['tags'])]) for row, ex in zip(ids, examples)])
    else:
      return []
    return [f'{s}  →  {p}   (ref: {r})' for s, p, r in zip(self.task.eval_sources[:n], preds, refs)]
