"""Optimizers and learning-rate schedules from `config.optimizer`."""

from typing import Mapping

import jax
import jax.numpy as jnp
import optax


def make_schedule(cfg: Mapping, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule.

  Args:
    cfg: `config.optimizer` with `learning_rate`, `schedule` ('constant' | 'rsqrt' |
      'cosine' | 'linear' | 'step'), `warmup_steps`, `end_learning_rate_factor`, and for
      'step' `decay_rate`, `decay_every`, `decay_begin`.
    total_steps: training length (for cosine/linear decay).

  Returns:
    step → learning rate. 'rsqrt' is lr · min(1, step/warmup) · sqrt(warmup / max(step, warmup))
    (Vaswani et al. with the peak at `learning_rate`). 'step' keeps `learning_rate` after
    warmup, multiplies it by `decay_rate` at step `decay_begin` and again every
    `decay_every` steps (Zaremba et al. 2014's PTB schedule: × 0.5 per epoch after 4).
  """
  lr, warmup, kind = cfg['learning_rate'], int(cfg['warmup_steps']), cfg['schedule']
  end = lr * cfg['end_learning_rate_factor']
  if kind == 'constant':
    return optax.join_schedules([optax.linear_schedule(0.0, lr, max(warmup, 1)),
                                 optax.constant_schedule(lr)], [warmup]) if warmup else optax.constant_schedule(lr)
  if kind == 'rsqrt':
    w = max(warmup, 1)
    return lambda step: lr * jnp.minimum(1.0, (step + 1) / w) * jnp.sqrt(w / jnp.maximum(step + 1, w))
  if kind == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1), end)
  if kind == 'linear':
    return optax.join_schedules([optax.linear_schedule(0.0, lr, max(warmup, 1)),
                                 optax.linear_schedule(lr, end, max(total_steps - warmup, 1))], [warmup])
  if kind == 'step':
    rate, every, begin = cfg['decay_rate'], max(int(cfg['decay_every']), 1), int(cfg['decay_begin'])

    def step_decay(step):
      periods = jnp.where(step >= begin, (step - begin) // every + 1, 0)
      value = lr * rate ** periods
      return value * jnp.minimum(1.0, step / warmup) if warmup else value
    return step_decay
  raise ValueError(f"config.optimizer.schedule={kind!r}; valid: 'constant', 'rsqrt', 'cosine', "
                   "'linear', 'step'")


def matrices_only(params):
  """Weight-decay mask: True for kernels and embeddings (ndim >= 2), False for biases and norms.

  Args:
    params: parameter pytree (arrays or flax `Partitioned` boxes).

  Returns:
    A pytree of bools with the structure of `params`.
  """
  return jax.tree_util.tree_map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(cfg: Mapping, total_steps: int) -> optax.GradientTransformation:
  """Optax optimizer with optional global-norm clipping and weight decay.

  Args:
    cfg: `config.optimizer`: `name` ('adamw' | 'adam' | 'adafactor' | 'sgd'), `b1`, `b2`,
      `eps`, `weight_decay`, `decay_matrices_only` (adamw: no decay on biases and norm
      scales, as nanoGPT/GPT-2), `grad_clip_norm` (0 = off) and the schedule fields.
    total_steps: training length.

  Returns:
    The gradient transformation.
  """
  schedule = make_schedule(cfg, total_steps)
  name = cfg['name']
  if name == 'adamw':
    opt = optax.adamw(schedule, b1=cfg['b1'], b2=cfg['b2'], eps=cfg['eps'],
                      weight_decay=cfg['weight_decay'],
                      mask=matrices_only if cfg.get('decay_matrices_only', False) else None)
  elif name == 'adam':
    opt = optax.adam(schedule, b1=cfg['b1'], b2=cfg['b2'], eps=cfg['eps'])
  elif name == 'adafactor':
    opt = optax.adafactor(schedule, weight_decay_rate=cfg['weight_decay'] or None)
  elif name == 'sgd':
    opt = optax.sgd(schedule, momentum=cfg['b1'] or None)
  else:
    raise ValueError(f"config.optimizer.name={name!r}; valid: 'adamw', 'adam', 'adafactor', 'sgd'")
  if cfg['grad_clip_norm'] > 0:
    opt = optax.chain(optax.clip_by_global_norm(cfg['grad_clip_norm']), opt)
  return opt
