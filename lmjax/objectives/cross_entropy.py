"""Token cross-entropy: seq2seq and decoder LMs (per target token), classifiers (per row),
taggers (per tag).

The loss is label-smoothed (`config.train.label_smoothing`); the sums are those of
`lmjax.objectives.base`. A language model's eval also reports `nll_in_context`: the NLL of
the targets after each row's first (with BOS rows, those predicted from at least one real
token).
"""

import functools
from typing import Any, Dict, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from lmjax.objectives import base
from lmjax.objectives import losses


class TokenCrossEntropy(base.Objective):
  """Cross-entropy of `batch[label_field]` under the model's logits.

  Args:
    model: unbound module; `model.apply(variables, inputs, train=...)` returns logits
      (..., V) aligned with the labels.
    label_field: the batch field of the labels: 'targets', 'tags' or 'label'.
    label_smoothing: ε in [0, 1).
    per_row: the labels are one per row (classification): a row counts when its inputs
      hold any token (the empty padding rows of the last eval batch do not).
    in_context: also report `nll_in_context` at eval (decoder LMs over sentences).
    predictor: see `base.Objective`.
  """

  def __init__(self, model, label_field: str = 'targets', label_smoothing: float = 0.0,
               per_row: bool = False, in_context: bool = False, predictor=None):
    super().__init__(model, predictor)
    self.label_field, self.label_smoothing = label_field, float(label_smoothing)
    self.per_row, self.in_context = per_row, in_context

  def label_weights(self, batch) -> jnp.ndarray:
    """Weights of the labels: 0 on padding tokens and on empty (padding) rows."""
    labels = batch[self.label_field]
    if self.per_row:
      if 'inputs' in batch:
        return (jnp.sum(batch['inputs'] > 0, axis=-1) > 0).astype(jnp.float32)  # (B,)
      return jnp.ones(labels.shape, jnp.float32)
    return (labels > 0).astype(jnp.float32)

  def forward(self, params, batch, *, train: bool, rngs=None, carry=None):
    """(logits, carry after the batch) of the model; the carry is None for this objective."""
    del carry
    return self.model.apply({'params': params}, base.model_inputs(batch), train=train,
                            rngs=rngs), None

  def logit_sums(self, logits, batch, train: bool) -> base.Sums:
    """The cross-entropy sums of `logits` against the batch's labels (smoothed in training)."""
    return base.cross_entropy_sums(logits, batch[self.label_field], self.label_weights(batch),
                                   self.label_smoothing if train else 0.0)

  def loss_and_metrics(self, params, batch, args: Sequence[Any] = (), *, train: bool,
                       rngs=None, step=0, carry=None):
    del args, step
    logits, carry = self.forward(params, batch, train=train, rngs=rngs, carry=carry)
    sums = self.logit_sums(logits, batch, train)
    return sums['loss'], sums, carry

  def extra_metric_names(self) -> Tuple[str, ...]:
    return ('nll_in_context',) if self.in_context else ()

  def extra_metrics(self, runner, params, final: bool) -> Dict[str, float]:
    del final
    if not self.in_context:
      return {}
    step = runner.jit('position_nll', functools.partial(position_nll, self), 'replicated')
    sums = counts = 0.0
    for batch in runner.batches(runner.task.eval_examples):
      s, c = step(params, batch)
      sums, counts = sums + np.asarray(s, np.float64), counts + np.asarray(c, np.float64)
    return {'nll_in_context': float(sums[1:].sum() / max(counts[1:].sum(), 1.0))}


def position_nll(objective: TokenCrossEntropy, params, batch) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Per-position NLL sums and target counts of a token-target batch (no dropout).

  Returns:
    ((T,) Σ over rows of the NLL at each target position, (T,) real targets there).
  """
  logits, _ = objective.forward(params, batch, train=False)  # (B, T, V)
  labels = batch['targets']  # (B, T)
  weights = (labels > 0).astype(jnp.float32)
  _, nll = losses.token_losses(logits.astype(jnp.float32), labels, 0.0)  # (B, T)
  return jnp.sum(nll * weights, axis=0), jnp.sum(weights, axis=0)
