"""Pure, top-level train and eval steps, and the losses they use.

Both steps return *sums* (loss, correct predictions, weights) so metrics can be
accumulated over batches and hosts exactly; `summarize` turns them into means.
"""

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from lmjax.train.state import TrainState

Metrics = Dict[str, jnp.ndarray]


def cross_entropy_sums(logits: jnp.ndarray, labels: jnp.ndarray, weights: jnp.ndarray,
                       label_smoothing: float) -> Metrics:
  """Weighted, label-smoothed cross-entropy and accuracy, as sums.

  The smoothed loss subtracts the entropy of the smoothed target distribution so
  that a perfect prediction scores 0 (as in the flax wmt example).

  Args:
    logits: (..., V) float32.
    labels: (...) int32.
    weights: (...) float32, 0 on padding.
    label_smoothing: epsilon in [0, 1).

  Returns:
    {'loss': Σ w·CE_smoothed, 'nll': Σ w·CE, 'correct': Σ w·[argmax = label], 'weight': Σ w}.
  """
  vocab = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
  if label_smoothing > 0:
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    normalizer = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
    smooth = -jnp.mean(log_probs, axis=-1) * vocab * low  # Σ_v low·(-log p_v), the label included
    loss = confidence * nll + smooth - low * nll - normalizer
  else:
    loss = nll
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return {'loss': jnp.sum(loss * weights), 'nll': jnp.sum(nll * weights),
          'correct': jnp.sum(correct * weights), 'weight': jnp.sum(weights)}


def label_key(batch) -> str:
  """Which batch field holds the supervised labels."""
  for key in ('targets', 'tags', 'label'):
    if key in batch:
      return key
  raise ValueError(f'batch has none of targets/tags/label (keys: {sorted(batch)})')


def compute_metrics(model, params, batch, *, train: bool, rngs=None,
                    label_smoothing: float = 0.0) -> Metrics:
  """Forward pass + loss sums for any model kind (see lmjax/models/CONTRACT.md).

  Models with a structured output layer (a CRF tagger) expose `crf_nll`; their
  loss is the sequence negative log-likelihood.
  """
  key = label_key(batch)
  labels = batch[key]
  if key == 'label':
    weights = jnp.ones(labels.shape, jnp.float32)
    if 'inputs' in batch:  # empty (padding) rows of the last eval batch do not count
      weights = (jnp.sum(batch['inputs'] > 0, axis=-1) > 0).astype(jnp.float32)
  else:
    weights = (labels > 0).astype(jnp.float32)
  variables = {'params': params}
  logits = model.apply(variables, batch, train=train, rngs=rngs)
  sums = cross_entropy_sums(logits, labels, weights, label_smoothing)
  if getattr(model.config, 'use_crf', False):
    nll = model.apply(variables, batch, train=train, rngs=rngs, method='crf_nll')  # (B,)
    row_w = (jnp.sum(weights, axis=-1) > 0).astype(jnp.float32)
    sums['loss'] = jnp.sum(nll * row_w) / jnp.maximum(jnp.sum(row_w), 1.0) * sums['weight']
    sums['nll'] = sums['loss']
  return sums


def train_step(state: TrainState, batch, *, model, tx, label_smoothing: float
               ) -> Tuple[TrainState, Metrics]:
  """One optimizer update on the global batch.

  The loss is the mean over non-padding labels of the whole (global) batch, so the
  gradient is the same on 1 device or N.

  Args:
    state: current TrainState (donated by the caller's jit).
    batch: global batch.
    model: unbound module (static).
    tx: optimizer (static).
    label_smoothing: epsilon (static).

  Returns:
    (new state, metric sums incl. 'grad_norm' and 'learning_rate'-free scalars).
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(params):
    sums = compute_metrics(model, params, batch, train=True, rngs={'dropout': rng},
                           label_smoothing=label_smoothing)
    return sums['loss'] / jnp.maximum(sums['weight'], 1.0), sums

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  sums['grad_norm'] = optax.global_norm(grads)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, sums


def eval_step(params, batch, *, model) -> Metrics:
  """Loss and accuracy sums on one eval batch (no dropout, no smoothing)."""
  return compute_metrics(model, params, batch, train=False)


def summarize(sums: Dict[str, Any]) -> Dict[str, float]:
  """Metric sums → means: loss, accuracy (%), perplexity."""
  w = max(float(sums['weight']), 1.0)
  out = {'loss': float(sums['loss']) / w, 'accuracy': 100.0 * float(sums['correct']) / w,
         'nll': float(sums['nll']) / w}
  out['perplexity'] = float(jnp.exp(jnp.minimum(out['nll'], 50.0)))
  if 'grad_norm' in sums:
    out['grad_norm'] = float(sums['grad_norm'])
  return out
