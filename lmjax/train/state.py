"""TrainState and its sharded creation."""

from typing import Any, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from lmjax import parallel


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (all of it checkpointed).

  Attributes:
    step: int32 scalar, number of updates applied.
    params: model parameters.
    opt_state: optimizer state.
    rng: base PRNG key data; step keys are fold_in(rng, step).
    ema_params: exponential moving average of `params` (config.train.ema_decay > 0),
      else None. Evaluation, the best checkpoint and the tools use it when present.
  """
  step: jnp.ndarray
  params: Any
  opt_state: Any
  rng: jnp.ndarray
  ema_params: Any = None

  @property
  def eval_params(self):
    """The parameters to evaluate: the moving average when kept, else `params`."""
    return self.params if self.ema_params is None else self.ema_params


def ema_decay_at(decay: float, updates: jnp.ndarray) -> jnp.ndarray:
  """Decay of the average's update at step n = `updates`: min(decay, (1 + n) / (10 + n)).

  The ramp (TensorFlow's ExponentialMovingAverage with num_updates) keeps the average
  from remembering the random initialisation for ~1 / (1 - decay) steps.
  """
  n = updates.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def update_ema(ema, params, decay: jnp.ndarray):
  """decay · ema + (1 − decay) · params, leaf by leaf (in the params' dtype)."""
  return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)


def create_sharded_state(model: nn.Module, tx: optax.GradientTransformation, dummy_batch,
                         seed: int, mesh, rules, ema: bool = False) -> Tuple[TrainState, Any]:
  """Initializes params and optimizer state directly into their shardings.

  `jax.eval_shape(init)` gives the logical partitioning; the rules turn it into
  NamedShardings and `jit(init, out_shardings=…)` creates the arrays in place.

  Args:
    model: unbound module.
    tx: optimizer.
    dummy_batch: a batch of the right shapes (values unused).
    seed: parameter-init and dropout seed.
    mesh: device mesh.
    rules: logical-axis rules.
    ema: also keep `ema_params` (starting equal to the initial params, sharded alike).

  Returns:
    (state, state_shardings).
  """
  def init(rng):
    init_rng, train_rng = jax.random.split(rng)
    variables = model.init({'params': init_rng, 'dropout': init_rng}, dummy_batch, train=False)
    params = variables['params']
    # Initialised on boxed params, the optimizer moments keep the params' logical
    # names, so FSDP rules shard them like the params.
    opt_state = tx.init(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                      rng=jax.random.key_data(train_rng), ema_params=params if ema else None)

  rng = jax.random.key(seed)
  abstract = jax.eval_shape(init, rng)
  shardings = parallel.logical_shardings(abstract, mesh, rules)
  with mesh:
    state = jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=shardings)(rng)
  return state, shardings
