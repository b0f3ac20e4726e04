"""Optimizers and learning-rate schedules from `config.optimizer`."""

import re
from typing import Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import optax


def _warmup_then(lr: float, warmup: int, after: optax.Schedule) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup` steps, then `after` (`after` alone if 0)."""
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, max(warmup, 1)), after], [warmup])


def _constant(cfg, lr, warmup, end, total_steps):
  del cfg, end, total_steps
  return _warmup_then(lr, warmup, optax.constant_schedule(lr))


def _rsqrt(cfg, lr, warmup, end, total_steps):
  del cfg, end, total_steps
  w = max(warmup, 1)
  return lambda step: lr * jnp.minimum(1.0, (step + 1) / w) * jnp.sqrt(w / jnp.maximum(step + 1, w))


def _cosine(cfg, lr, warmup, end, total_steps):
  del cfg
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1), end)


def _linear(cfg, lr, warmup, end, total_steps):
  del cfg
  return optax.join_schedules([optax.linear_schedule(0.0, lr, max(warmup, 1)),
                               optax.linear_schedule(lr, end, max(total_steps - warmup, 1))],
                              [warmup])


def _step(cfg, lr, warmup, end, total_steps):
  del end, total_steps
  rate, every, begin = cfg['decay_rate'], max(int(cfg['decay_every']), 1), int(cfg['decay_begin'])

  def step_decay(step):
    periods = jnp.where(step >= begin, (step - begin) // every + 1, 0)
    value = lr * rate ** periods
    return value * jnp.minimum(1.0, step / warmup) if warmup else value
  return step_decay


# config.optimizer.schedule → (cfg, lr, warmup, end lr, total steps) → schedule.
SCHEDULES = {'constant': _constant, 'rsqrt': _rsqrt, 'cosine': _cosine, 'linear': _linear,
             'step': _step}


def make_schedule(cfg: Mapping, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule.

  Args:
    cfg: `config.optimizer` with `learning_rate`, `schedule` (a key of SCHEDULES:
      'constant' | 'rsqrt' | 'cosine' | 'linear' | 'step'), `warmup_steps`,
      `end_learning_rate_factor`, and for 'step' `decay_rate`, `decay_every`, `decay_begin`.
    total_steps: training length (for cosine/linear decay).

  Returns:
    step → learning rate. 'rsqrt' is lr · min(1, step/warmup) · sqrt(warmup / max(step, warmup))
    (Vaswani et al. with the peak at `learning_rate`). 'step' keeps `learning_rate` after
    warmup, multiplies it by `decay_rate` at step `decay_begin` and again every
    `decay_every` steps (Zaremba et al. 2014's PTB schedule: × 0.5 per epoch after 4).
  """
  lr, warmup, kind = cfg['learning_rate'], int(cfg['warmup_steps']), cfg['schedule']
  if kind not in SCHEDULES:
    raise ValueError(f'config.optimizer.schedule={kind!r}; valid: '
                     + ', '.join(map(repr, SCHEDULES)))
  return SCHEDULES[kind](cfg, lr, warmup, lr * cfg['end_learning_rate_factor'], total_steps)


def matrices_only(params):
  """Weight-decay mask: True for kernels and embeddings (ndim >= 2), False for biases and norms.

  Args:
    params: parameter pytree (arrays or flax `Partitioned` boxes).

  Returns:
    A pytree of bools with the structure of `params`.
  """
  return jax.tree_util.tree_map(lambda p: jnp.ndim(p) >= 2, params)


# config.optimizer.name → (cfg, schedule) → optimizer (before clipping).
OPTIMIZERS = {
    'adamw': lambda cfg, schedule: optax.adamw(
        schedule, b1=cfg['b1'], b2=cfg['b2'], eps=cfg['eps'], weight_decay=cfg['weight_decay'],
        mask=matrices_only if cfg.get('decay_matrices_only', False) else None),
    'adam': lambda cfg, schedule: optax.adam(schedule, b1=cfg['b1'], b2=cfg['b2'], eps=cfg['eps']),
    'adafactor': lambda cfg, schedule: optax.adafactor(
        schedule, weight_decay_rate=cfg['weight_decay'] or None),
    'sgd': lambda cfg, schedule: optax.sgd(schedule, momentum=cfg['b1'] or None),
}


def make_optimizer(cfg: Mapping, total_steps: int) -> optax.GradientTransformation:
  """Optax optimizer with optional global-norm clipping and weight decay.

  Args:
    cfg: `config.optimizer`: `name` (a key of OPTIMIZERS: 'adamw' | 'adam' | 'adafactor' |
      'sgd'), `b1`, `b2`, `eps`, `weight_decay`, `decay_matrices_only` (adamw: no decay on
      biases and norm scales, as nanoGPT/GPT-2), `grad_clip_norm` (0 = off) and the
      schedule fields.
    total_steps: training length.

  Returns:
    The gradient transformation.
  """
  name = cfg['name']
  if name not in OPTIMIZERS:
    raise ValueError(f'config.optimizer.name={name!r}; valid: ' + ', '.join(map(repr, OPTIMIZERS)))
  opt = OPTIMIZERS[name](cfg, make_schedule(cfg, total_steps))
  if cfg['grad_clip_norm'] > 0:
    opt = optax.chain(optax.clip_by_global_norm(cfg['grad_clip_norm']), opt)
  return opt


def param_path(path) -> str:
  """A pytree key path → the '/'-joined parameter path ('encoder/layer_0/mlp/wi/kernel')."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def freeze(tx: optax.GradientTransformation, patterns: Sequence[str]
           ) -> optax.GradientTransformation:
  """`tx` for every parameter but those whose path fully matches one of `patterns`, whose
  updates are zero (`optax.multi_transform` with `set_to_zero`): frozen parameters stay
  bit-identical, and `tx` (its clipping, decay and moments) sees only the others.

  Args:
    tx: the optimizer.
    patterns: config.train.freeze regexes over '/'-joined parameter paths ([] = none).

  Returns:
    The gradient transformation.

  Raises:
    ValueError: a pattern that is not a regex, or matches no parameter (at init).
  """
  if not patterns:
    return tx
  compiled = []
  for i, pattern in enumerate(patterns):
    try:
      compiled.append(re.compile(pattern))
    except re.error as e:
      raise ValueError(f'config.train.freeze[{i}]={pattern!r} is not a regular expression '
                       f'({e})') from e

  def labels(params):
    used = set()

    def label(path, _):
      hits = {i for i, regex in enumerate(compiled) if regex.fullmatch(param_path(path))}
      used.update(hits)
      return 'frozen' if hits else 'trained'

    out = jax.tree_util.tree_map_with_path(
        label, params, is_leaf=lambda x: isinstance(x, flax.core.meta.AxisMetadata))
    unused = [p for i, p in enumerate(patterns) if i not in used]
    if unused:
      raise ValueError(f'config.train.freeze patterns {unused} match no parameter (paths look '
                       "like 'encoder/layer_0/mlp/wi/kernel')")
    return out

  return optax.multi_transform({'trained': tx, 'frozen': optax.set_to_zero()}, labels)
