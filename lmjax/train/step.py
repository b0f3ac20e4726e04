"""Pure, top-level train and eval steps, and the losses they use.

Both steps return *sums* so metrics can be accumulated over batches and hosts
exactly; `summarize` turns them into means. The sums are

  loss         Σ training loss terms: token cross-entropy, or per-sentence CRF NLL;
  loss_weight  what `loss` is a mean over: tokens (rows for classify), or sentences (CRF);
  nll          Σ unsmoothed negative log-likelihood (same units as `loss`);
  correct      Σ correct argmax predictions;  weight  Σ scored tokens (rows for classify);
  sentences    CRF only: Σ sentences (= loss_weight), marks a sentence-level loss.

The stateful (truncated-BPTT) LM steps carry the LSTM state from one batch to the next
(Zaremba et al., 2014); see `lmjax.train.stateful`.
"""

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from lmjax.train import losses
from lmjax.train import state as state_lib
from lmjax.train import vae_objective
from lmjax.train.state import TrainState

Metrics = Dict[str, jnp.ndarray]

# Batch keys that steer the trainer and are not model inputs.
CONTROL_KEYS = ('reset',)


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
    {'loss': Σ w·CE_smoothed, 'nll': Σ w·CE, 'correct': Σ w·[argmax = label],
     'weight': Σ w, 'loss_weight': Σ w}.
  """
  loss, nll = losses.token_losses(logits.astype(jnp.float32), labels, float(label_smoothing))
  # label logit == max logit, i.e. argmax = label (up to exact ties): it reuses the max and
  # the label gather of the loss (XLA merges them), saving an argmax pass over (..., V).
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  correct = (label_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
  weight = jnp.sum(weights)
  return {'loss': jnp.sum(loss * weights), 'nll': jnp.sum(nll * weights),
          'correct': jnp.sum(correct * weights), 'weight': weight, 'loss_weight': weight}


def label_key(batch) -> str:
  """Which batch field holds the supervised labels."""
  for key in ('targets', 'tags', 'label'):
    if key in batch:
      return key
  raise ValueError(f'batch has none of targets/tags/label (keys: {sorted(batch)})')


def label_weights(batch) -> jnp.ndarray:
  """Weights of the labels: 0 on padding tokens and on empty (padding) classification rows."""
  key = label_key(batch)
  labels = batch[key]
  if key == 'label':
    if 'inputs' in batch:  # empty (padding) rows of the last eval batch do not count
      return (jnp.sum(batch['inputs'] > 0, axis=-1) > 0).astype(jnp.float32)
    return jnp.ones(labels.shape, jnp.float32)
  return (labels > 0).astype(jnp.float32)


def uses_crf(model) -> bool:
  """Whether `model` is a CRF tagger (its loss is the sentence NLL, `crf_nll`)."""
  return bool(getattr(model.config, 'use_crf', False))


def model_inputs(batch) -> Dict[str, Any]:
  """The batch without the trainer's control fields."""
  return {k: v for k, v in batch.items() if k not in CONTROL_KEYS}


def compute_metrics(model, params, batch, *, train: bool, rngs=None,
                    label_smoothing: float = 0.0, carry: Optional[Any] = None, step=0,
                    kd=None, teacher_params=None):
  """Forward pass + loss sums for any model kind (see lmjax/models/CONTRACT.md).

  A CRF tagger's loss is the mean negative log-likelihood per sentence: `loss` and
  `nll` hold Σ sentence NLL and `loss_weight` the number of sentences (label
  smoothing does not apply). `correct`/`weight` still give the argmax-emission token
  accuracy.

  Args:
    model: unbound module.
    params: parameters.
    batch: global batch.
    train: enables dropout.
    rngs: {'dropout': key} when training.
    label_smoothing: epsilon for the cross-entropy.
    carry: stateful LM only: the LSTM state from the previous batch (see
      `LSTMLanguageModel.apply_with_state`); None for every other model.
    step: the optimizer step; a VAE's KL weight follows it (`vae_objective.kl_weight`).
    kd: word-level distillation (`lmjax.train.kd.KD`) with the teacher's `teacher_params`:
      its term enters 'loss' and Σ KL is 'kd_kl'; None = off.
    teacher_params: the teacher's parameters (with `kd`).

  Returns:
    Metric sums (a VAE's: the ELBO sums of `vae_objective.vae_sums`); with `carry`,
    (sums, new carry).
  """
  if vae_objective.is_vae(model):
    return vae_objective.vae_sums(model, params, model_inputs(batch), train=train, rngs=rngs,
                                  step=step, label_smoothing=label_smoothing)
  labels = batch[label_key(batch)]
  weights = label_weights(batch)
  variables = {'params': params}
  inputs = model_inputs(batch)
  if carry is not None:
    logits, new_carry = model.apply(variables, inputs, carry, train=train, rngs=rngs,
                                    method='apply_with_state')
  else:
    logits = model.apply(variables, inputs, train=train, rngs=rngs)
  sums = cross_entropy_sums(logits, labels, weights, label_smoothing)
  if kd is not None:
    sums = kd.mix(sums, logits, kd.logits(teacher_params, inputs), weights)
  if uses_crf(model):
    nll = model.apply(variables, inputs, train=train, rngs=rngs, method='crf_nll')  # (B,)
    sentences = (jnp.sum(weights, axis=-1) > 0).astype(jnp.float32)  # (B,)
    sums['loss'] = sums['nll'] = jnp.sum(nll * sentences)
    sums['loss_weight'] = sums['sentences'] = jnp.sum(sentences)
  return sums if carry is None else (sums, new_carry)


def _update(state: TrainState, grads, sums: Metrics, tx,
            ema_decay: float = 0.0) -> Tuple[TrainState, Metrics, jnp.ndarray]:
  """Applies the optimizer update only when the loss and the gradient norm are finite.

  With `state.ema_params` the moving average takes in each applied update's params
  (decay `state_lib.ema_decay_at(ema_decay, state.step)`); a skipped step leaves it
  as it is.

  A non-finite step keeps the params and optimizer state (so the learning-rate schedule
  does not advance either), zeroes its metric sums and reports `skipped` = 1; the step
  counter advances all the same, so it keeps counting batches and an exact resume holds.
  A `lax.cond`, not a select: a select reads and writes params and both Adam moments
  once more every step (2.5 % of a small Transformer's step on CPU).
  """
  grad_norm = optax.global_norm(grads)
  ok = jnp.isfinite(sums['loss']) & jnp.isfinite(grad_norm)

  keep_ema = state.ema_params is not None

  def apply(_):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = None
    if keep_ema:
      ema = state_lib.update_ema(state.ema_params, params,
                                 state_lib.ema_decay_at(ema_decay, state.step))
    return params, opt_state, ema

  params, opt_state, ema = jax.lax.cond(
      ok, apply, lambda _: (state.params, state.opt_state, state.ema_params), None)
  sums = {k: jnp.where(ok, v, jnp.zeros_like(v)) for k, v in sums.items()}
  sums['grad_norm'] = grad_norm
  sums['skipped'] = jnp.logical_not(ok).astype(jnp.float32)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       ema_params=ema), sums, ok


def train_step(state: TrainState, batch, teacher_params=None, *, model, tx,
               label_smoothing: float, grad_accum_steps: int = 1, ema_decay: float = 0.0,
               kd=None) -> Tuple[TrainState, Metrics]:
  """One optimizer update on the global batch.

  The loss is the mean over the whole (global) batch's non-padding labels (or
  sentences for a CRF), so the gradient is the same on 1 device or N, and with
  `grad_accum_steps` micro-batches it equals the gradient of the whole batch.

  Args:
    state: current TrainState (donated by the caller's jit).
    batch: global batch.
    teacher_params: word-level distillation's teacher parameters (with `kd`), else None.
    model: unbound module (static).
    tx: optimizer (static).
    label_smoothing: epsilon (static).
    grad_accum_steps: split the batch into this many micro-batches, run them one
      after the other and sum their gradients (static; 1 = off). Saves activation memory.
    ema_decay: decay of `state.ema_params` when the state keeps them (static).
    kd: `lmjax.train.kd.KD` (static), or None: no distillation term.

  Returns:
    (new state, metric sums incl. 'grad_norm' and 'skipped'). A step whose loss or
    gradient norm is NaN/Inf is not applied (see `_update`).
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def sum_loss_fn(params, micro_batch, micro_rng):
    sums = compute_metrics(model, params, micro_batch, train=True, rngs={'dropout': micro_rng},
                           label_smoothing=label_smoothing, step=state.step, kd=kd,
                           teacher_params=teacher_params)
    return sums['loss'], sums

  if grad_accum_steps == 1:
    grad_sum, sums = jax.grad(sum_loss_fn, has_aux=True)(state.params, batch, rng)
  else:
    k = grad_accum_steps
    # (B, ...) → (k, B/k, ...): micro-batch i holds rows i*B/k … (i+1)*B/k - 1.
    micro = jax.tree.map(lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:]), batch)
    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        jax.grad(sum_loss_fn, has_aux=True), state.params, first, rng))

    def body(acc, xs):
      i, micro_batch = xs
      out = jax.grad(sum_loss_fn, has_aux=True)(state.params, micro_batch,
                                                jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, acc, out), None

    (grad_sum, sums), _ = jax.lax.scan(body, zeros, (jnp.arange(k), micro))
  grads = jax.tree.map(lambda g: g / jnp.maximum(sums['loss_weight'], 1.0), grad_sum)
  state, sums, _ = _update(state, grads, sums, tx, ema_decay)
  return state, sums


def reset_carry(carry, zero, reset: jnp.ndarray):
  """Rows with reset > 0 start from `zero`; the others keep `carry`. reset: (B,) int32."""
  def pick(z, c):
    r = reset.reshape(reset.shape + (1,) * (c.ndim - 1)) > 0
    return jnp.where(r, z, c)
  return jax.tree.map(pick, zero, carry)


def stateful_train_step(state, batch, *, model, tx, label_smoothing: float,
                        ema_decay: float = 0.0):
  """`train_step` for truncated BPTT: the LSTM state `state.carry` flows between batches.

  Rows with batch['reset'] > 0 (the first window of an epoch) start from zeros; the
  gradient stops at the batch boundary (`apply_with_state` stops it). A non-finite step
  is not applied (see `_update`) and the next batch starts from zeros, as after a reset.

  Args:
    state: a `stateful.StatefulTrainState` (donated by the caller's jit).
    batch: {'targets': (B, T), 'reset': (B,)} consecutive windows of B streams.
    model: an LSTM language model (static).
    tx: optimizer (static).
    label_smoothing: epsilon (static).
    ema_decay: decay of `state.ema_params` when the state keeps them (static).

  Returns:
    (new state with the carry after this batch, metric sums incl. 'grad_norm' and 'skipped').
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  zero = model.zero_state(batch['targets'].shape[0])
  carry = reset_carry(state.carry, zero, batch['reset'])

  def loss_fn(params):
    sums, new_carry = compute_metrics(model, params, batch, train=True, rngs={'dropout': rng},
                                      label_smoothing=label_smoothing, carry=carry)
    return sums['loss'] / jnp.maximum(sums['loss_weight'], 1.0), (sums, new_carry)

  grads, (sums, new_carry) = jax.grad(loss_fn, has_aux=True)(state.params)
  state, sums, ok = _update(state, grads, sums, tx, ema_decay)
  new_carry = jax.tree.map(lambda c, z: jnp.where(ok, c, z), new_carry, zero)
  return state.replace(carry=new_carry), sums


def eval_step(params, batch, *, model) -> Metrics:
  """Loss and accuracy sums on one eval batch (no dropout, no smoothing)."""
  return compute_metrics(model, params, batch, train=False)


def position_nll_step(params, batch, *, model) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Per-position NLL sums and target counts of a token-target batch (no dropout).

  Returns:
    ((T,) Σ over rows of the NLL at each target position, (T,) real targets there).
  """
  logits = model.apply({'params': params}, model_inputs(batch), train=False)  # (B, T, V)
  labels = batch['targets']  # (B, T)
  weights = (labels > 0).astype(jnp.float32)
  _, nll = losses.token_losses(logits.astype(jnp.float32), labels, 0.0)  # (B, T)
  return jnp.sum(nll * weights, axis=0), jnp.sum(weights, axis=0)


def stateful_eval_step(params, carry, batch, *, model) -> Tuple[Metrics, Any]:
  """`eval_step` for a stream batch, from `carry` (reset where batch['reset'] > 0).

  Returns:
    (metric sums, carry after this batch).
  """
  carry = reset_carry(carry, model.zero_state(batch['targets'].shape[0]), batch['reset'])
  return compute_metrics(model, params, batch, train=False, carry=carry)


def predict_step(params, batch, *, model, score_bias=None) -> jnp.ndarray:
  """Predicted classes (B,) for classifiers, tags (B, S) for taggers (0 on padding).

  A CRF tagger predicts by Viterbi decoding (`crf_decode`), other taggers by argmax
  over the real tags 1..C-1.

  Args:
    params: model parameters.
    batch: an eval batch.
    model: the classifier or tagger.
    score_bias: optional (C,) float added to every class or tag score (logits, or CRF
      emissions) before the argmax or Viterbi search; None = no bias.

  Returns:
    (B,) int32 classes or (B, S) int32 tags.
  """
  inputs = model_inputs(batch)
  variables = {'params': params}
  if uses_crf(model):
    return model.apply(variables, inputs, score_bias, method='crf_decode')
  return argmax_predictions(model.apply(variables, inputs, train=False), inputs['inputs'],
                            score_bias)


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


def summarize(sums: Dict[str, Any]) -> Dict[str, float]:
  """Metric sums → means.

  Returns:
    loss (per token, or per sentence for a CRF), accuracy (%, argmax per token/row) and
    for token-level losses nll and perplexity; for a CRF nll_per_token (Σ sentence NLL /
    tokens) instead. Plus grad_norm when present, and skipped_steps (train sums: steps
    whose update was not applied; their loss is left out, NaN when every step was).
  """
  w = max(float(sums['weight']), 1.0)
  lw = max(float(sums['loss_weight']), 1.0)
  out = {'loss': float(sums['loss']) / lw, 'accuracy': 100.0 * float(sums['correct']) / w}
  if 'sentences' in sums:  # sentence-level (CRF) loss: a per-token perplexity would be meaningless
    out['nll_per_token'] = float(sums['nll']) / w
  else:
    out['nll'] = float(sums['nll']) / w
    out['perplexity'] = float(jnp.exp(jnp.minimum(out['nll'], 50.0)))
  if 'vae_sentences' in sums:
    out.update(vae_objective.summarize(sums))
  if 'kd_kl' in sums:  # word-level distillation: mean KL to the teacher per target
    out['kd_kl'] = float(sums['kd_kl']) / w
  if 'skipped' in sums:
    out['skipped_steps'] = float(sums['skipped'])
    if out['skipped_steps'] > 0 and float(sums['loss_weight']) == 0:
      out.update({k: float('nan') for k in out if k != 'skipped_steps'})
  if 'grad_norm' in sums:
    out['grad_norm'] = float(sums['grad_norm'])
  return out
