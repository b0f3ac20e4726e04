"""Label-smoothed cross-entropy with a fused, hand-written gradient.

With autodiff, `log_softmax` → gather → mean → their transposes read and write the
(N, V) logits-sized tensors several times; here the forward pass keeps only the
per-token log-sum-exp and the backward pass writes d(logits) = softmax − q in one
pass, q being the smoothed target distribution.
"""

import functools

import jax
import jax.numpy as jnp


def smoothing_constants(vocab: int, label_smoothing: float):
  """(confidence, low, normalizer) of the smoothed target distribution q.

  q puts `confidence` = 1 − ε on the label and `low` = ε / (V − 1) on every other
  token; `normalizer` is its entropy, so that a perfect prediction has loss 0 (as in
  the flax wmt example).
  """
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  normalizer = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
  return confidence, low, normalizer


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def token_losses(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float):
  """Per-token smoothed cross-entropy and plain negative log-likelihood.

  Args:
    logits: (..., V) float32.
    labels: (...) int32.
    label_smoothing: ε in [0, 1) (static).

  Returns:
    (loss, nll), each (...) float32: loss = KL(q ‖ softmax(logits)) (= CE(q) − H(q)),
    nll = −log softmax(logits)[label].
  """
  return _forward(logits, labels, label_smoothing)[0]


def _forward(logits, labels, label_smoothing):
  vocab = logits.shape[-1]
  lse = jax.nn.logsumexp(logits, axis=-1)  # (...)
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  nll = lse - label_logit
  if label_smoothing > 0:
    confidence, low, normalizer = smoothing_constants(vocab, label_smoothing)
    # Σ_v q_v·(−log p_v) = (confidence − low)·nll + low·Σ_v (lse − z_v)
    mean_logit = jnp.mean(logits, axis=-1)
    loss = (confidence - low) * nll + low * vocab * (lse - mean_logit) - normalizer
  else:
    loss = nll
  return (loss, nll), lse


def _fwd(logits, labels, label_smoothing):
  out, lse = _forward(logits, labels, label_smoothing)
  return out, (logits, labels, lse)


def _bwd(label_smoothing, residuals, cotangents):
  logits, labels, lse = residuals
  g_loss, g_nll = cotangents  # (...) each
  vocab = logits.shape[-1]
  probs = jnp.exp(logits - lse[..., None])  # (..., V)
  onehot = jnp.arange(vocab) == labels[..., None]
  # d loss / d z = softmax − q;  d nll / d z = softmax − onehot.
  if label_smoothing > 0:
    confidence, low, _ = smoothing_constants(vocab, label_smoothing)
    q = jnp.where(onehot, confidence, low)
  else:
    q = onehot.astype(logits.dtype)
  d_logits = (g_loss[..., None] * (probs - q)
              + g_nll[..., None] * (probs - onehot.astype(logits.dtype)))
  return d_logits.astype(logits.dtype), None


token_losses.defvjp(_fwd, _bwd)


def kd_token_kl(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                temperature: float) -> jnp.ndarray:
  """Per-token KL(p_T ‖ q_T) of word-level knowledge distillation (Hinton et al., 2015).

  p_T = softmax(teacher_logits / T), q_T = softmax(student_logits / T). Autodiff gives
  d KL / d student_logits = (q_T − p_T) / T; the trainer scales the term by T² so that
  its gradient keeps the size of the cross-entropy's as T changes.

  Args:
    student_logits: (..., V).
    teacher_logits: (..., V), treated as constants.
    temperature: T > 0 (static).

  Returns:
    (...) float32 KL divergences.
  """
  log_p = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
                             / temperature, axis=-1)
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
