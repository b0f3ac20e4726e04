"""The VAE objective (config.model.kind='vae'): ELBO terms, KL annealing, free bits, active units, importance weighting.

Sums, as in `lmjax.train.step` (so they add over batches and hosts exactly):

  loss         Σ rec + β(step)·KL_fb (the free-bits KL), over sentences;
  loss_weight  Σ target tokens (so `loss` and the gradient scale read per token, as for an LM);
  nll          Σ (rec + KL): the ELBO's bound on −log p(x); `nll` / tokens gives its perplexity;
  rec, kl      Σ reconstruction NLL and Σ KL(q(z|x) ‖ N(0, I)) over sentences;
  vae_sentences  Σ sentences;  kl_weight  Σ β over sentences (train only);
  mu_sum, mu_sq_sum  (Z,) Σ and Σ² of posterior means (eval only: active units).

References:
  Bowman et al. (2016), Generating sentences from a continuous space.
  Burda et al. (2016), Importance weighted autoencoders (IW bound, active units).
  Kingma et al. (2016), Improved variational inference with inverse autoregressive flow (free bits).
  Fu et al. (2019), Cyclical annealing schedule.
"""

import functools
import math
from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from lmjax.data import pipeline
from lmjax.objectives import base
from lmjax.objectives import losses

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al.: Cov_x(E_q[z_u]) above this counts as active
# Fixed noise for eval ELBOs, so an eval is deterministic.
EVAL_SEED = 0


def gaussian_kl(mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """KL(N(mean, exp(logvar)) ‖ N(0, 1)) per unit, (..., Z) → (..., Z)."""
  return 0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)


def kl_weight(cfg, step) -> jnp.ndarray:
  """β(step) of the KL annealing schedule (`VAEConfig.kl_schedule`), step counted from 0.

  'constant': 1. 'linear': min(1, step / kl_warmup_steps) (1 when warmup is 0).
  'cyclical' (Fu et al., 2019): τ = (step mod kl_cycle_steps) / kl_cycle_steps;
  β = min(1, τ / kl_cycle_ratio).
  """
  step = jnp.asarray(step, jnp.float32)
  if cfg.kl_schedule == 'constant' or (cfg.kl_schedule == 'linear' and cfg.kl_warmup_steps == 0):
    return jnp.ones((), jnp.float32)
  if cfg.kl_schedule == 'linear':
    return jnp.minimum(1.0, step / cfg.kl_warmup_steps)
  tau = jnp.mod(step, cfg.kl_cycle_steps) / cfg.kl_cycle_steps
  return jnp.minimum(1.0, tau / cfg.kl_cycle_ratio)


def free_bits_kl(kl: jnp.ndarray, rows: jnp.ndarray, free_bits: float) -> jnp.ndarray:
  """Σ over sentences of the KL with free bits (Kingma et al., 2016).

  Each unit's batch-mean KL below `free_bits` nats is replaced by `free_bits` (no
  gradient reaches it): n · Σ_u max(λ, mean_b KL_bu).

  Args:
    kl: (B, Z) per-sentence, per-unit KL.
    rows: (B,) 1.0 on real sentences, 0.0 on padding rows.
    free_bits: λ in nats per unit; 0 = plain Σ KL.

  Returns:
    Scalar.
  """
  if free_bits == 0.0:
    return jnp.sum(kl * rows[:, None])
  n = jnp.sum(rows)
  mean = jnp.sum(kl * rows[:, None], 0) / jnp.maximum(n, 1.0)  # (Z,)
  return n * jnp.sum(jnp.maximum(mean, free_bits))


def noise_key(rngs):
  """The key of ε: from the train step's dropout key, or fixed for evals."""
  if rngs is None:
    return jax.random.key(EVAL_SEED)
  return jax.random.fold_in(rngs['dropout'], 1)


def vae_sums(model, params, batch, *, train: bool, rngs=None, step=0,
             label_smoothing: float = 0.0) -> Dict[str, jnp.ndarray]:
  """Forward pass and ELBO sums (see the module docstring) of one batch.

  Args:
    model: an `LSTMVAE`.
    params: parameters.
    batch: {'targets': (B, T)}.
    train: enables dropout, word dropout and the KL weight β(step).
    rngs: {'dropout': key} when training; ε is drawn from a key folded from it.
    step: the optimizer step (for β); unused in eval (β = 1).
    label_smoothing: ε of the reconstruction cross-entropy in `loss`.

  Returns:
    Metric sums.
  """
  targets = batch['targets']
  weights = (targets > 0).astype(jnp.float32)  # (B, T)
  rows = (jnp.sum(weights, -1) > 0).astype(jnp.float32)  # (B,)
  cfg = model.config
  noise = jax.random.normal(noise_key(rngs), (targets.shape[0], cfg.latent_dim), jnp.float32)
  out = model.apply({'params': params}, {'targets': targets}, noise, train=train, rngs=rngs,
                    method='vae_outputs')
  sums = base.cross_entropy_sums(out['logits'], targets, weights, label_smoothing)
  kl = gaussian_kl(out['mean'], out['logvar'])  # (B, Z)
  kl_sum = jnp.sum(kl * rows[:, None])
  beta = kl_weight(cfg, step) if train else jnp.ones((), jnp.float32)
  rec_loss = sums['loss']
  sums.update(rec=sums['nll'], kl=kl_sum, vae_sentences=jnp.sum(rows))
  sums['nll'] = sums['nll'] + kl_sum
  sums['loss'] = rec_loss + beta * free_bits_kl(kl, rows, cfg.free_bits if train else 0.0)
  if train:
    sums['kl_weight'] = beta * jnp.sum(rows)
  else:
    mean = out['mean'] * rows[:, None]
    sums.update(mu_sum=jnp.sum(mean, 0), mu_sq_sum=jnp.sum(jnp.square(mean), 0))
  return sums


def summarize(sums) -> Dict[str, float]:
  """Per-sentence means of the VAE sums: rec, kl, elbo (= −(rec + kl)), kl_weight (train)
  and active_units (eval)."""
  n = max(float(sums['vae_sentences']), 1.0)
  out = {'rec': float(sums['rec']) / n, 'kl': float(sums['kl']) / n}
  out['elbo'] = -(out['rec'] + out['kl'])
  if 'kl_weight' in sums:
    out['kl_weight'] = float(sums['kl_weight']) / n
  if 'mu_sum' in sums:
    out['active_units'] = float(active_units(sums['mu_sum'], sums['mu_sq_sum'], n))
  return out


def active_units(mu_sum, mu_sq_sum, n: float) -> int:
  """Units whose posterior-mean variance over the data exceeds 0.01 (Burda et al., 2016)."""
  mu_sum, mu_sq_sum = np.asarray(mu_sum, np.float64), np.asarray(mu_sq_sum, np.float64)
  variance = mu_sq_sum / n - np.square(mu_sum / n)
  return int(np.sum(variance > ACTIVE_UNIT_THRESHOLD))


def iw_log_weights(params, batch, key, *, model, samples: int) -> jnp.ndarray:
  """log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x) for `samples` draws per sentence.

  Args:
    params: parameters.
    batch: {'targets': (B, T)}.
    key: PRNG key of the draws.
    model: an `LSTMVAE` (static).
    samples: draws K per sentence (static).

  Returns:
    (B, K) float32 log importance weights.
  """
  targets = batch['targets']
  b, z_dim = targets.shape[0], model.config.latent_dim
  variables = {'params': params}
  q = model.apply(variables, targets, method='posterior')
  eps = jax.random.normal(key, (b, samples, z_dim), jnp.float32)  # (B, K, Z)
  z = q['mean'][:, None] + jnp.exp(0.5 * q['logvar'])[:, None] * eps  # (B, K, Z)
  tiled = jnp.repeat(targets, samples, axis=0)  # (B·K, T), row b·K + k
  logits = model.apply(variables, z.reshape(b * samples, z_dim), tiled, train=False,
                       method='reconstruct')  # (B·K, T, V)
  _, nll = losses.token_losses(logits, tiled, 0.0)  # (B·K, T)
  log_px = -jnp.sum(nll * (tiled > 0), -1).reshape(b, samples)  # (B, K)
  log_norm = -0.5 * math.log(2 * math.pi)
  log_pz = jnp.sum(log_norm - 0.5 * jnp.square(z), -1)
  log_qz = jnp.sum(log_norm - 0.5 * q['logvar'][:, None] - 0.5 * jnp.square(eps), -1)
  return log_px + log_pz - log_qz


def iw_nll(log_weights: np.ndarray) -> np.ndarray:
  """−log (1/K) Σ_k w_k per sentence, from (B, K) log weights (float64 on the host)."""
  lw = np.asarray(log_weights, np.float64)
  top = lw.max(-1, keepdims=True)
  return -(top[:, 0] + np.log(np.mean(np.exp(lw - top), -1)))


# Rows (sentences × samples) per importance-weighting call: bounds its (rows, T, V) logits.
IW_ROWS = 512
# The IW pass batches sentences of similar length, padded to the next multiple of this (one
# compile per bucket): PTB's test sentences average 22 tokens of a 64-token limit.
IW_BUCKET = 16
VAE_METRICS = ('rec', 'kl', 'elbo', 'active_units')
IW_METRICS = ('iw_nll', 'iw_perplexity')


def iw_samples_of(config) -> int:
  """config.eval.iw_samples; ValueError when absent or not an integer >= 0."""
  k = config.eval.get('iw_samples')
  if isinstance(k, bool) or not isinstance(k, int) or k < 0:
    raise ValueError(f'config.eval.iw_samples={k!r}: a VAE needs an integer >= 0 (importance '
                     'samples per sentence for the IW bound; 0 = off); see configs/ptb_vae.py')
  return k


class ELBO(base.Objective):
  """The sentence VAE's negative ELBO (module docstring) with KL annealing and free bits.

  Its eval adds rec, kl, elbo (per sentence) and active_units, with nll / perplexity the
  ELBO's per-word bound; with `iw_samples` K > 0 the run's last eval also reports iw_nll
  (per sentence) and iw_perplexity (per word), the importance-weighted bound of Burda et
  al. (2016).

  Args:
    model: an `LSTMVAE`.
    label_smoothing: ε of the reconstruction cross-entropy in `loss`.
    iw_samples: K importance samples per sentence for the final eval (0 = off).
    eval_batch_size: sentences per eval batch (sizes the IW calls).
  """

  def __init__(self, model, label_smoothing: float = 0.0, iw_samples: int = 0,
               eval_batch_size: int = 1):
    super().__init__(model)
    self.label_smoothing, self.iw_samples = float(label_smoothing), int(iw_samples)
    self.iw_chunk = min(self.iw_samples, max(1, IW_ROWS // eval_batch_size))

  def loss_and_metrics(self, params, batch, args: Sequence[Any] = (), *, train: bool,
                       rngs=None, step=0, carry=None):
    del args
    sums = vae_sums(self.model, params, base.model_inputs(batch), train=train, rngs=rngs,
                    step=step, label_smoothing=self.label_smoothing if train else 0.0)
    return sums['loss'], sums, carry

  def means(self, sums: Dict[str, Any]) -> Dict[str, float]:
    return {**super().means(sums), **summarize(sums)}

  def extra_metric_names(self) -> Tuple[str, ...]:
    return VAE_METRICS + (IW_METRICS if self.iw_samples else ())

  def extra_metrics(self, runner, params, final: bool) -> Dict[str, float]:
    """The importance-weighted NLL bound with `iw_samples` draws per sentence (final eval):
    iw_nll (nats per sentence) and iw_perplexity (per word, EOS included)."""
    if not (self.iw_samples and final):
      return {}
    step = runner.jit('iw_log_weights', functools.partial(
        iw_log_weights, model=self.model, samples=self.iw_chunk), 'batch', extra=1)
    k, chunk = self.iw_samples, self.iw_chunk
    calls = -(-k // chunk)
    total = tokens = sentences = 0.0
    examples = runner.task.eval_examples
    # K = 500 on PTB's test split takes over an hour on a CPU host: show sentences done.
    bar = tqdm.tqdm(total=len(examples), unit=' sentences', desc=f'IW bound (K={k})',
                    disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=2.0)
    for i, local in enumerate(_length_bucketed_batches(runner, examples)):
      batch = runner.to_global(local)
      weights = np.concatenate([runner.gather(step(
          params, batch, jax.random.fold_in(jax.random.key(EVAL_SEED + 1), i * calls + c)))
                                for c in range(calls)], 1)[:, :k]
      lengths = np.sum(runner.gather(batch['targets']) > 0, -1)
      nll = iw_nll(weights)
      total += float(np.sum(nll[lengths > 0]))
      tokens += float(np.sum(lengths))
      real = int(np.sum(lengths > 0))  # padding rows have no tokens
      sentences += real
      bar.update(real)
    bar.close()
    return {'iw_nll': total / max(sentences, 1.0),
            'iw_perplexity': float(np.exp(min(total / max(tokens, 1.0), 50.0)))}


def _length_bucketed_batches(runner, examples):
  """Eval batches of the examples whose targets fit the same multiple of IW_BUCKET (at
  most the task's target length), each padded to that length, shortest bucket first."""
  lengths = runner.task.lengths
  groups = {}
  for ex in examples:
    bucket = min(-(-max(len(ex['targets']), 1) // IW_BUCKET) * IW_BUCKET, lengths['targets'])
    groups.setdefault(bucket, []).append(ex)
  for bucket in sorted(groups):
    yield from pipeline.eval_batches(groups[bucket], runner.batch_size,
                                     dict(lengths, targets=bucket), jax.process_index(),
                                     jax.process_count())
