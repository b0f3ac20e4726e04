"""Predictions on the eval split and their scores: what the evaluator reports beyond the loss.

| predictor | task kind | predictions | metrics |
|---|---|---|---|
| `Decode` | seq2seq | greedy decodes (B, T) | exact_match, bleu, chrf (+ rouge1/2/L; `ann_*`) |
| `Classes` | classify | class ids (B,) | macro_f1 (%) |
| `Tags` | tag | tag ids (B, S) | accuracy of the predicted tags (%), entity_precision / recall / f1 |

Classes and tags come from the objective (`predict_labels`: argmax, or Viterbi for a CRF),
with config.eval.outside_bias added to the outside tag's ('O') score first, to move a
tagger along its precision/recall curve.
"""

import functools
from typing import Dict, List, Optional, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from lmjax import metrics as metrics_lib
from lmjax import models
from lmjax.decoding import predict


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


class Predictor:
  """Makes predictions for eval batches and scores them against the task's references.

  Attributes:
    metric_names: what `score` reports.
  """
  metric_names: Tuple[str, ...] = ()

  def __init__(self, task):
    self.task = task

  def predict_batch(self, params, batch) -> jnp.ndarray:
    """(B, ...) int32 predictions of one global batch (compiled by the evaluator)."""
    raise NotImplementedError  # abstract

  def score(self, predictions: List[np.ndarray]) -> Dict[str, float]:
    """Metrics of the eval split's predictions (in order)."""
    raise NotImplementedError  # abstract

  def texts(self, predictions: List[np.ndarray], examples) -> List[str]:
    """The predictions as text (for samples and the tools)."""
    raise NotImplementedError  # abstract


class Decode(Predictor):
  """Greedy decoding of a seq2seq model, scored as text (`task.score_predictions`)."""

  def __init__(self, task, model, max_length: int, banned_ids: Sequence[int] = ()):
    """Args: task, model: the run's; max_length: decoded tokens; banned_ids: ids never
    chosen (config.model.never_emit)."""
    super().__init__(task)
    self.model, self.max_length, self.banned_ids = model, max_length, tuple(banned_ids)
    rouge = ('rouge1', 'rouge2', 'rougeL') if task.decode_metrics == 'rouge' else ()
    self.metric_names = ('exact_match', 'bleu', 'chrf') + rouge

  def predict_batch(self, params, batch) -> jnp.ndarray:
    return predict.greedy_decode(self.model, params, batch['inputs'], max_length=self.max_length,
                                 banned_ids=self.banned_ids)

  def texts(self, predictions, examples) -> List[str]:
    del examples
    return [self.task.detokenize(row) for row in predictions]

  def score(self, predictions) -> Dict[str, float]:
    return self.task.score_predictions(self.texts(predictions, None))


class Labels(Predictor):
  """Class or tag ids from the objective's `predict_labels` (with the outside bias)."""

  def __init__(self, task, objective, score_bias=None):
    super().__init__(task)
    self.predict_batch = functools.partial(objective.predict_labels, score_bias=score_bias)


class Classes(Labels):
  """Predicted classes, scored by macro F1."""
  metric_names = ('macro_f1',)

  def gold(self) -> np.ndarray:
    return np.asarray([int(ex['label']) for ex in self.task.eval_examples])

  def score(self, predictions, with_accuracy: bool = False) -> Dict[str, float]:
    """macro_f1 (%); with `with_accuracy` (ensembles: no loss pass) also accuracy (%)."""
    gold = self.gold()
    out = {'macro_f1': 100.0 * metrics_lib.macro_f1(np.asarray(predictions), gold)}
    if with_accuracy:
      out = {'accuracy': 100.0 * float((np.asarray(predictions) == gold).mean()), **out}
    return out

  def texts(self, predictions, examples) -> List[str]:
    del examples
    return [self.task.label_names[int(i)] for i in predictions]


class Tags(Labels):
  """Predicted tag rows, scored per token and per entity (seqeval, CoNLL scoring)."""
  metric_names = ('entity_precision', 'entity_recall', 'entity_f1')

  def score(self, predictions, with_accuracy: bool = True) -> Dict[str, float]:
    """Token accuracy (%) and entity-level P/R/F1 (seqeval) of predicted tag rows.

    Scored against every word of the eval sentences (`task.eval_references`), as the
    official scorers do: words past config.task.max_input_length were never tagged, so
    they count as 'O' and their gold entities as misses.
    """
    del with_accuracy  # the tag accuracy always replaces the loss pass's argmax accuracy
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

  def texts(self, predictions, examples) -> List[str]:
    names = self.task.label_names
    return [' '.join(names[t] for t in row[:len(ex['tags'])])
            for row, ex in zip(predictions, examples)]


def for_task(task, objective, config) -> Optional[Predictor]:
  """The predictor of `task`'s kind (None for language modelling)."""
  if task.kind == 'seq2seq':
    length = config.eval.decode_max_length or task.lengths.get('targets', 0)
    return Decode(task, objective.model, length, models.never_emitted(config.model))
  if task.kind == 'classify':
    return Classes(task, objective, outside_bias(task, config.eval.outside_bias))
  if task.kind == 'tag':
    return Tags(task, objective, outside_bias(task, config.eval.outside_bias))
  return None
