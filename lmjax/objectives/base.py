"""The `Objective` interface: what the trainer, the evaluator and the tools ask of a loss.

An objective owns everything that differs between training signals: which batch field
holds the labels, the forward pass and its loss, the metric sums it reports, state
carried from one batch to the next (a stateful LM's LSTM state), the extra arrays every
train step needs (a distillation teacher's parameters), its eval summaries, and how
predictions are made and scored. `lmjax.train.step`, `lmjax.train.evaluation` and
`lmjax.train.loop` call it without knowing which one it is (t5x's `BaseModel`: the
trainer calls `loss_fn`, `score_batch` and `predict_batch`, never the architecture).

Metric sums (so they add over batches, micro-batches and hosts exactly):

  loss         Σ training loss terms (what the gradient is taken of);
  loss_weight  what `loss` is a mean over (tokens, rows, or sentences);
  nll          Σ unsmoothed negative log-likelihood (same units as `loss`);
  correct      Σ correct argmax predictions;  weight  Σ scored tokens (rows for classify).

An objective may add its own sums (a CRF's `sentences`, a VAE's ELBO terms, KD's `kd_kl`)
and turns them into means in `summarize`.
"""

from typing import Any, Dict, Iterator, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.data import pipeline
from lmjax.objectives import losses

Sums = Dict[str, jnp.ndarray]

# Batch keys that steer the trainer and are not model inputs.
CONTROL_KEYS = ('reset',)


def model_inputs(batch) -> Dict[str, Any]:
  """The batch without the trainer's control fields."""
  return {k: v for k, v in batch.items() if k not in CONTROL_KEYS}


def cross_entropy_sums(logits: jnp.ndarray, labels: jnp.ndarray, weights: jnp.ndarray,
                       label_smoothing: float) -> Sums:
  """Weighted, label-smoothed cross-entropy and accuracy, as sums.

  The smoothed loss subtracts the entropy of the smoothed target distribution so
  that a perfect prediction scores 0 (as in the flax wmt example).

  Args:
    logits: (..., V) float32.
    labels: (...) int32.
    weights: (...) float32, 0 on padding.
    label_smoothing: epsilon in [0, 1).

  Returns:
    {'loss': Σ w·CE_smoothed, 'nll': Σ w·CE, 'correct': Σ w·[argmax = label],
     'weight': Σ w, 'loss_weight': Σ w}.
  """
  loss, nll = losses.token_losses(logits.astype(jnp.float32), labels, float(label_smoothing))
  weight = jnp.sum(weights)
  return {'loss': jnp.sum(loss * weights), 'nll': jnp.sum(nll * weights),
          'correct': jnp.sum(argmax_correct(logits, labels) * weights), 'weight': weight,
          'loss_weight': weight}


def argmax_correct(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """(...) 1.0 where the label's logit is the maximum (argmax = label up to exact ties).

  It reuses the max and the label gather of the loss (XLA merges them), saving an
  argmax pass over (..., V).
  """
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  return (label_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)


def argmax_predictions(scores, tokens, score_bias=None) -> jnp.ndarray:
  """Classes (B,) from class scores (B, C), or tags (B, S) from tag scores (B, S, C).

  Args:
    scores: logits or log-probabilities.
    tokens: (B, S) input ids; a tag is 0 (padding) where they are 0.
    score_bias: optional (C,) added to the scores first.

  Returns:
    (B,) int32 classes, or (B, S) int32 tags in 1..C-1 on real positions.
  """
  if score_bias is not None:
    scores = scores + score_bias
  if scores.ndim == 2:  # (B, C) classes
    return jnp.argmax(scores, -1).astype(jnp.int32)
  tags = jnp.argmax(scores[..., 1:], -1).astype(jnp.int32) + 1  # (B, S), never the padding id
  return jnp.where(tokens > 0, tags, 0)


class Objective:
  """A training objective (override what differs; the defaults are a stateless loss).

  Attributes:
    model: the unbound module the objective trains.
    predictor: makes and scores predictions on the eval split (an
      `lmjax.objectives.predictions.Predictor`), or None: loss metrics only.
  """

  # The metric means `summarize` reports for the eval loss pass (before any predictor's).
  loss_metrics: Tuple[str, ...] = ('loss', 'accuracy', 'nll', 'perplexity')

  def __init__(self, model, predictor=None):
    self.model = model
    self.predictor = predictor

  # --- what a train step computes --------------------------------------------------------

  def loss_and_metrics(self, params, batch, args: Sequence[Any] = (), *, train: bool,
                       rngs=None, step=0, carry=None) -> Tuple[jnp.ndarray, Sums, Any]:
    """Forward pass, loss and metric sums of one (micro-)batch.

    Args:
      params: model parameters.
      batch: a global batch (model inputs, labels, control fields).
      args: the arrays of `step_args()` (e.g. a teacher's parameters).
      train: enables dropout and train-only terms.
      rngs: {'dropout': key} when training, else None.
      step: the optimizer step (int32 scalar; schedules inside the loss follow it).
      carry: the state carried from the previous batch (`carry_in`), None when stateless.

    Returns:
      (Σ loss (the gradient is taken of it), metric sums, carry for the next batch).
    """
    raise NotImplementedError  # abstract

  def step_args(self) -> Tuple[Tuple[Any, ...], Tuple[Any, ...]]:
    """(arrays, their shardings) passed to every train step as arguments, not constants."""
    return (), ()

  # --- state carried between batches (none by default) ----------------------------------

  def add_state(self, state, shardings, batch_size: int, batch_sharding):
    """(state, shardings) with whatever this objective carries between train batches."""
    del batch_size, batch_sharding
    return state, shardings

  def carry_in(self, state):
    """What the next train batch starts from (None: stateless)."""
    del state

  def carry_out(self, state, carry, ok):
    """`state` after a step that produced `carry` (`ok`: the update was applied)."""
    del carry, ok
    return state

  def eval_carry(self, batch_size: int, sharding):
    """The carry at the start of an eval pass of `batch_size` rows (None when stateless)."""
    del batch_size, sharding

  def carry_sharding(self, batch_sharding):
    """The sharding (pytree) of the carry, given the batch's (None when stateless)."""
    del batch_sharding

  # --- data ------------------------------------------------------------------------------

  def train_iterator(self, task, batch_size: int, seed: int, process_index: int,
                     process_count: int):
    """The resumable training-batch iterator (the task's own by default)."""
    return task.train_iterator(batch_size, seed, process_index, process_count)

  def eval_batches(self, task, batch_size: int, process_index: int,
                   process_count: int) -> Iterator[pipeline.Example]:
    """This process's batches of the eval split for the loss pass."""
    return pipeline.eval_batches(task.eval_examples, batch_size, task.lengths, process_index,
                                 process_count)

  # --- reporting -------------------------------------------------------------------------

  def metric_names(self) -> Tuple[str, ...]:
    """Every eval metric `Evaluator.evaluate` reports for this objective (final eval too)."""
    names = self.loss_metrics + self.extra_metric_names()
    return names + (self.predictor.metric_names if self.predictor is not None else ())

  def extra_metric_names(self) -> Tuple[str, ...]:
    """Names of `extra_metrics`."""
    return ()

  def extra_metrics(self, runner, params, final: bool) -> Dict[str, float]:
    """Eval metrics beyond the loss pass's sums and the predictor's (see `runner`).

    Args:
      runner: the `lmjax.train.evaluation.Evaluator` (its `jit`, `batches`, `to_global`).
      params: parameters (sharded).
      final: the run's last evaluation (costly bounds run only then).
    """
    del runner, params, final
    return {}

  def summarize(self, sums: Dict[str, Any]) -> Dict[str, float]:
    """Metric sums → means.

    Returns:
      loss (per `loss_weight` unit) and accuracy (%, argmax per token/row), the
      objective's own means (`means`), plus grad_norm when present, and skipped_steps
      (train sums: steps whose update was not applied; their loss is left out, NaN when
      every step was).
    """
    lw = max(float(sums['loss_weight']), 1.0)
    out = {'loss': float(sums['loss']) / lw,
           'accuracy': 100.0 * float(sums['correct']) / max(float(sums['weight']), 1.0)}
    out.update(self.means(sums))
    if 'skipped' in sums:
      out['skipped_steps'] = float(sums['skipped'])
      if out['skipped_steps'] > 0 and float(sums['loss_weight']) == 0:
        out.update({k: float('nan') for k in out if k != 'skipped_steps'})
    if 'grad_norm' in sums:
      out['grad_norm'] = float(sums['grad_norm'])
    return out

  def means(self, sums: Dict[str, Any]) -> Dict[str, float]:
    """The objective's means besides loss and accuracy: nll and perplexity per token."""
    nll = float(sums['nll']) / max(float(sums['weight']), 1.0)
    return {'nll': nll, 'perplexity': float(np.exp(min(nll, 50.0)))}

  # --- predictions (classifiers and taggers) ---------------------------------------------

  def scores(self, params, batch):
    """The scores predictions are made from (one member's, for ensembles): a tuple."""
    logits = self.model.apply({'params': params}, model_inputs(batch), train=False)
    return (jax.nn.log_softmax(logits.astype(jnp.float32)),)

  def predict_from_scores(self, scores, batch, score_bias=None) -> jnp.ndarray:
    """Class ids (B,) or tag ids (B, S) from (mean) `scores` (see `scores`)."""
    return argmax_predictions(scores[0], batch['inputs'], score_bias)

  def predict_labels(self, params, batch, score_bias=None) -> jnp.ndarray:
    """Class ids (B,) or tag ids (B, S) (0 on padding) from the model's logits."""
    inputs = model_inputs(batch)
    logits = self.model.apply({'params': params}, inputs, train=False)
    return argmax_predictions(logits, inputs['inputs'], score_bias)

