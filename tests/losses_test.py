"""The hand-written gradients (fused cross-entropy, tied logits) equal autodiff of references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models import layers
from lmjax.objectives import losses


def reference_losses(logits, labels, eps):
  """Smoothed CE minus the entropy of q, and NLL, from explicit distributions (numpy-like)."""
  vocab = logits.shape[-1]
  log_p = jax.nn.log_softmax(logits, axis=-1)
  onehot = jax.nn.one_hot(labels, vocab)
  q = onehot * (1 - eps) + (1 - onehot) * (eps / (vocab - 1)) if eps > 0 else onehot
  entropy = -jnp.sum(jnp.where(q > 0, q * jnp.log(jnp.where(q > 0, q, 1.0)), 0.0), axis=-1)
  return -jnp.sum(q * log_p, axis=-1) - entropy, -jnp.sum(onehot * log_p, axis=-1)


@pytest.mark.parametrize('eps', [0.0, 0.1, 0.3])
def test_token_losses_values_and_gradients_match_autodiff(eps):
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 5, 11)) * 3, jnp.float32)
  labels = jnp.asarray(rng.integers(0, 11, size=(3, 5)), jnp.int32)
  w_loss = jnp.asarray(rng.uniform(size=(3, 5)), jnp.float32)
  w_nll = jnp.asarray(rng.uniform(size=(3, 5)), jnp.float32)

  loss, nll = losses.token_losses(logits, labels, eps)
  ref_loss, ref_nll = reference_losses(logits, labels, eps)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(nll, ref_nll, rtol=1e-5, atol=1e-5)

  def objective(fn):
    def f(z):
      a, b = fn(z)
      return jnp.sum(a * w_loss) + jnp.sum(b * w_nll)
    return jax.grad(f)(logits)
  np.testing.assert_allclose(objective(lambda z: losses.token_losses(z, labels, eps)),
                             objective(lambda z: reference_losses(z, labels, eps)),
                             rtol=1e-5, atol=1e-6)


def test_perfect_prediction_has_zero_smoothed_loss():
  vocab, eps = 7, 0.1
  q = np.full((1, vocab), eps / (vocab - 1), np.float32)
  q[0, 3] = 1 - eps
  loss, _ = losses.token_losses(jnp.log(jnp.asarray(q)), jnp.asarray([3]), eps)
  np.testing.assert_allclose(loss, [0.0], atol=1e-5)


def test_tied_logits_gradients_match_autodiff():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
  emb = jnp.asarray(rng.normal(size=(9, 4)), jnp.float32)
  cot = jnp.asarray(rng.normal(size=(2, 3, 9)), jnp.float32)
  np.testing.assert_allclose(layers.tied_logits(x, emb), np.einsum('btd,vd->btv', x, emb),
                             rtol=1e-5, atol=1e-5)
  got = jax.grad(lambda a, b: jnp.sum(layers.tied_logits(a, b) * cot), argnums=(0, 1))(x, emb)
  want = jax.grad(lambda a, b: jnp.sum(jnp.dot(a, b.T) * cot), argnums=(0, 1))(x, emb)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_step_schedule_matches_zaremba_epochs():
  """lr 1 for 4 'epochs' of 10 steps, then halved at the start of every later epoch."""
  from configs import default  # pylint: disable=g-import-not-at-top
  from lmjax import optim  # pylint: disable=g-import-not-at-top
  cfg = default.get_config().optimizer
  cfg.update(schedule='step', learning_rate=1.0, warmup_steps=0, decay_rate=0.5,
             decay_every=10, decay_begin=40)
  schedule = optim.make_schedule(cfg, 130)
  want = [0.5 ** max(step // 10 - 3, 0) for step in range(130)]
  np.testing.assert_allclose([float(schedule(s)) for s in range(130)], want, rtol=1e-6)
