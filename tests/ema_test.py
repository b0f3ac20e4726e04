"""Exponential moving average of the parameters (config.train.ema_decay)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.tools import averaging
from lmjax.config import configlib
from lmjax.tools import inference
from lmjax import models
from lmjax import parallel
from lmjax.data import tasks
from lmjax.train import loop
from lmjax import optim
from lmjax.train import state as state_lib
from lmjax.train import step as step_lib
from tests.train_test import smoothed_ce
from tests.train_test import assert_trees_equal
from tests.train_test import tiny_config



def _numpy_ema(param_history, decay):
  """Reference: e_0 = p_0; e_n = d_n e_{n-1} + (1 - d_n) p_n, d_n = min(decay, n / (9 + n))."""
  ema = [np.asarray(x, np.float64) for x in param_history[0]]
  for n, params in enumerate(param_history[1:], 1):
    d = min(decay, n / (9.0 + n))
    ema = [d * e + (1 - d) * np.asarray(p, np.float64) for e, p in zip(ema, params)]
  return ema


def _setup(config):
  task = tasks.build_task(config.task, None)
  model = models.build_model(config.model, **task.model_sizes())
  tx = optim.make_optimizer(config.optimizer, 10)
  rules = parallel.rules_from_config(config)
  it = task.train_iterator(16, seed=0)
  mesh = parallel.create_mesh(config.mesh)
  return model, tx, rules, mesh, [next(it) for _ in range(4)]


def test_ema_decay_ramp():
  got = [float(state_lib.ema_decay_at(0.999, jnp.asarray(n))) for n in (0, 1, 10, 10_000)]
  np.testing.assert_allclose(got, [0.1, 2 / 11, 11 / 20, 0.999], rtol=1e-6)
  assert float(state_lib.ema_decay_at(0.5, jnp.asarray(100))) == 0.5


def test_train_step_keeps_the_moving_average_of_the_params():
  config = tiny_config()
  model, tx, rules, mesh, batches = _setup(config)
  state, shardings = state_lib.create_sharded_state(model, tx, batches[0], 0, mesh, rules, ema=True)
  assert_trees_equal(state.ema_params, state.params)
  bsh = parallel.batch_sharding(mesh, rules)
  step = jax.jit(functools.partial(step_lib.train_step, objective=smoothed_ce(model), tx=tx,
                                   ema_decay=0.6),
                 in_shardings=(shardings, bsh), out_shardings=(shardings, parallel.replicated(mesh)))
  history = [jax.tree.leaves(jax.device_get(state.params))]
  for b in batches:
    state, _ = step(state, parallel.to_global(b, bsh))
    history.append(jax.tree.leaves(jax.device_get(state.params)))
  want = _numpy_ema(history, 0.6)
  got = jax.tree.leaves(jax.device_get(state.ema_params))
  for g, w, p in zip(got, want, history[-1]):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  assert any(not np.allclose(g, p) for g, p in zip(got, history[-1]))  # it does lag the params
  assert state.eval_params is state.ema_params


def test_skipped_step_leaves_the_average_alone():
  config = tiny_config()
  model, tx, rules, mesh, batches = _setup(config)
  state, _ = state_lib.create_sharded_state(model, tx, batches[0], 0, mesh, rules, ema=True)
  step = jax.jit(functools.partial(step_lib.train_step, objective=smoothed_ce(model), tx=tx,
                                   ema_decay=0.9))
  state, _ = step(state, batches[0])
  before = jax.device_get(state.ema_params)
  nan_params = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), state.params)
  state, m = step(state.replace(params=nan_params), batches[1])
  assert float(m['skipped']) == 1.0
  assert_trees_equal(jax.device_get(state.ema_params), before)


def test_without_ema_the_state_has_none():
  config = tiny_config()
  model, tx, rules, mesh, batches = _setup(config)
  state, _ = state_lib.create_sharded_state(model, tx, batches[0], 0, mesh, rules)
  assert state.ema_params is None and state.eval_params is state.params


def test_invalid_decay_is_a_config_error():
  config = tiny_config()
  config.train.ema_decay = 1.0
  with pytest.raises(configlib.ConfigError, match=r'config.train.ema_decay=1.0: expected a value in \[0, 1\)'):
    configlib.validate(config)


def test_tools_use_the_average(tmp_path):
  """(Resume with an EMA: train_test.test_resume_equals_uninterrupted[transformer].)"""
  config = tiny_config()
  config.train.ema_decay = 0.8
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(config, straight)
  a, _ = averaging.read_checkpoint(straight, 'last', 8)
  assert not all(np.array_equal(x, y) for x, y in
                 zip(jax.tree.leaves(a['ema_params']), jax.tree.leaves(a['params'])))
  # evaluate.py / decode.py load the moving average, and averaging averages it.
  run = inference.Run(straight)
  params, info = run.restore('latest')
  assert info.step == 8
  assert_trees_equal(jax.device_get(params), a['ema_params'])
  mean = averaging.average_params(straight, [4, 8])
  four, _ = averaging.read_checkpoint(straight, 'last', 4)
  want = jax.tree.map(lambda x, y: (np.float64(x) + np.float64(y)) / 2, four['ema_params'],
                      a['ema_params'])
  for g, w in zip(jax.tree.leaves(mean), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-6)
  path, _ = averaging.write_averaged(straight, steps=[4, 8])
  state, _ = averaging.read_checkpoint(straight, 'averaged', 8)
  assert 'ema_params' not in state and os.path.isdir(path)
  assert_trees_equal(state['params'], mean)
