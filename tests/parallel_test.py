"""Sharding strategies on 8 simulated CPU devices: equal to one device, placed as the rules say."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import default
from lmjax import models
from lmjax import parallel
from lmjax.data import tasks
from lmjax import optim
from lmjax.train import state as state_lib
from lmjax.train import step as step_lib
from tests.train_test import smoothed_ce


STEPS = 3


def tiny_config(sharding='dp', mesh=None):
  config = default.get_config('runlocal')
  config.model.dropout_rate = 0.0  # isolate the sharding from the RNG
  config.sharding = sharding
  if mesh:
    config.mesh = mesh
  return config


@functools.lru_cache(maxsize=None)
def _setup():
  config = tiny_config()
  task = tasks.build_task(config.task, None)
  model = models.build_model(config.model, **task.model_sizes())
  tx = optim.make_optimizer(config.optimizer, 10)
  it = task.train_iterator(16, seed=0)
  return model, tx, [next(it) for _ in range(STEPS)]


def run(config, devices):
  """STEPS train steps on `devices`; returns (losses, host params, final state)."""
  model, tx, batches = _setup()
  rules = parallel.rules_from_config(config)
  mesh = parallel.create_mesh(config.mesh, devices)
  state, shardings = state_lib.create_sharded_state(model, tx, batches[0], 0, mesh, rules)
  bsh = parallel.batch_sharding(mesh, rules)
  step = parallel.RulesJit(
      functools.partial(step_lib.train_step, objective=smoothed_ce(model), tx=tx), mesh, rules,
      in_shardings=(shardings, bsh), out_shardings=(shardings, parallel.replicated(mesh)))
  losses = []
  for b in batches:
    state, m = step(state, parallel.to_global(b, bsh))
    losses.append(float(m['loss'] / m['weight']))
  return losses, jax.device_get(state.params), state


@functools.lru_cache(maxsize=None)
def single_device():
  losses, params, _ = run(tiny_config(), jax.devices()[:1])
  return losses, params


def expected_spec(names, rules):
  return P(*nn.logical_to_mesh_axes(names, rules))


@pytest.mark.parametrize('sharding,mesh', [
    ('dp', {'data': -1, 'fsdp': 1, 'model': 1}),
    ('fsdp', {'data': 1, 'fsdp': -1, 'model': 1}),
    ('fsdp', {'data': 2, 'fsdp': 4, 'model': 1}),
    ('fsdp_tp', {'data': 2, 'fsdp': 2, 'model': 2}),  # activations constrained (live rules)
])
def test_strategy_matches_single_device_and_follows_rules(sharding, mesh):
  assert jax.device_count() == 8
  config = tiny_config(sharding, mesh)
  losses, params, state = run(config, jax.devices())
  ref_losses, ref_params = single_device()
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

  # Every param and optimizer moment is placed as the rules say.
  model, tx, batches = _setup()
  rules = parallel.rules_from_config(config)
  abstract = jax.eval_shape(lambda: tx.init(model.init(
      {'params': jax.random.key(0)}, batches[0], train=False)['params']))
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  boxes = [b for b in jax.tree.leaves(abstract, is_leaf=is_box) if is_box(b)]
  arrays = [a for a in jax.tree.leaves(state.opt_state) if a.ndim > 0]
  assert len(boxes) == len(arrays) == 2 * len(jax.tree.leaves(state.params))  # Adam mu, nu
  for box, array in zip(boxes, arrays):
    assert array.sharding.spec == expected_spec(box.names, rules), box.names
  kernel = state.params['decoder']['layer_0']['mlp']['wi']['kernel']  # ('embed', 'mlp')
  assert kernel.sharding.spec == {'fsdp': P('fsdp', None), 'fsdp_tp': P('fsdp', 'model')}.get(
      sharding, P(None, None))
  if sharding != 'dp':  # each device holds a fraction of the params
    shard = kernel.addressable_shards[0].data
    assert shard.size < kernel.size


def _abstract_state(config):
  model, tx, batches = _setup()
  if config.model.scan_layers:
    task = tasks.build_task(config.task, None)
    model = models.build_model(config.model, **task.model_sizes())
  return jax.eval_shape(lambda: state_lib.TrainState(
      step=0, params=(p := model.init({'params': jax.random.key(0)}, batches[0],
                                      train=False)['params']),
      opt_state=tx.init(p), rng=0))


def test_fsdp_tp_shards_over_fsdp_and_model():
  config = tiny_config('fsdp_tp', {'data': 2, 'fsdp': 2, 'model': 2})
  shardings = parallel.logical_shardings(_abstract_state(config), parallel.create_mesh(config.mesh),
                                         parallel.rules_from_config(config))
  assert shardings.params['decoder']['layer_0']['mlp']['wi']['kernel'].spec == P('fsdp', 'model')
  assert shardings.params['decoder']['layer_0']['self_attention']['out']['kernel'].spec == P(
      'model', None, 'fsdp')
  moments = [s.spec for path, s in jax.tree_util.tree_leaves_with_path(shardings.opt_state)
             if jax.tree_util.keystr(path).endswith("['decoder']['layer_0']['mlp']['wo']['kernel']")]
  assert moments == [P('model', 'fsdp')] * 2  # Adam mu and nu, like the param ('mlp', 'embed')


def test_scanned_params_shard_with_layers_axis():
  config = tiny_config('fsdp', {'data': 1, 'fsdp': -1, 'model': 1})
  config.model.scan_layers = True
  rules = parallel.rules_from_config(config)
  mesh = parallel.create_mesh(config.mesh)
  shardings = parallel.logical_shardings(_abstract_state(config), mesh, rules)
  assert shardings.params['decoder']['layers']['mlp']['wi']['kernel'].spec == P(None, 'fsdp', None)


def test_logical_axis_without_rule_is_a_clear_error():
  config = tiny_config('custom')
  config.logical_axis_rules = [r for r in config.logical_axis_rules if r[0] != 'mlp']
  mesh = parallel.create_mesh(config.mesh)
  with pytest.raises(ValueError,
                     match=r"logical axis 'mlp' \(e.g. of params/decoder/.*\) has no rule"):
    parallel.logical_shardings(_abstract_state(config), mesh, parallel.rules_from_config(config))


def test_indivisible_param_dimension_names_path_dim_and_mesh_axis():
  config = tiny_config('fsdp_tp', {'data': 1, 'fsdp': 1, 'model': -1})  # heads=4 over 8 devices
  mesh = parallel.create_mesh(config.mesh)
  with pytest.raises(ValueError, match=r"params/decoder/layer_0/self_attention/query/kernel "
                     r"\(32, 4, 8\): dimension 1 \('heads', size 4\) is not divisible by mesh "
                     r"axes \('model',\) of size 8"):
    parallel.logical_shardings(_abstract_state(config), mesh, parallel.rules_from_config(config))


def test_unknown_strategy_and_mesh_axis_are_clear_errors():
  with pytest.raises(ValueError, match=r"config.sharding='zero' is not a strategy"):
    parallel.rules_from_config(tiny_config('zero'))
  config = tiny_config('custom')
  config.logical_axis_rules = list(config.logical_axis_rules) + [('vocab', 'tensor')]
  with pytest.raises(ValueError, match=r"names mesh axis 'tensor'"):
    parallel.logical_shardings(_abstract_state(config), parallel.create_mesh(config.mesh),
                               parallel.rules_from_config(config))


def test_mesh_size_must_match_devices():
  with pytest.raises(ValueError, match='does not fit 8 devices'):
    parallel.create_mesh({'data': 3, 'fsdp': -1, 'model': 1})


class _FakeDevice:  # what mesh_utils reads of a device
  def __init__(self, i, slice_index, platform='cpu'):
    self.id, self.slice_index, self.platform = i, slice_index, platform
    self.device_kind, self.process_index = platform, i // 4

  def __repr__(self):
    return f'd{self.id}'


def test_mesh_follows_the_topology_and_puts_dcn_axes_across_slices(monkeypatch):
  # CPU has no topology: the devices in order.
  mesh = parallel.create_mesh({'data': 4, 'fsdp': 2, 'model': 1})
  np.testing.assert_array_equal(mesh.devices, np.asarray(jax.devices()).reshape(4, 2, 1))
  # Two slices of 4 chips, data over both: each slice holds one half of the data axis,
  # so only the data-parallel gradient reduction crosses the slow network.
  fake = [_FakeDevice(i, slice_index=i // 4) for i in range(8)]
  grid = parallel.device_array([4, 2, 1], fake[::-1], [2, 1, 1])
  assert grid.shape == (4, 2, 1)
  assert {d.slice_index for d in grid[:2].ravel()} == {0}
  assert {d.slice_index for d in grid[2:].ravel()} == {1}
  # TPU / GPU: mesh_utils' topology-aware arrangement is used.
  calls = []
  monkeypatch.setattr(parallel.mesh_utils, 'create_device_mesh',
                      lambda shape, devices, **kw: calls.append(shape) or np.asarray(
                          devices[::-1]).reshape(shape))
  tpus = [_FakeDevice(i, 0, 'tpu') for i in range(8)]
  grid = parallel.device_array([8, 1, 1], tpus)
  assert calls == [[8, 1, 1]] and grid[0, 0, 0] is tpus[-1]
  with pytest.raises(ValueError, match=r'config.mesh_dcn=\{.data.: 3\}'):
    parallel.create_mesh({'data': 4, 'fsdp': 2, 'model': 1}, dcn={'data': 3})


def test_activation_constraints_are_live_under_the_rules():
  """The models' `nn.with_logical_constraint`s reach the compiled step only when it is
  traced under the mesh and rules (parallel.RulesJit): one per layer at least."""
  config = tiny_config('fsdp_tp', {'data': 2, 'fsdp': 2, 'model': 2})
  model, tx, batches = _setup()
  rules = parallel.rules_from_config(config)
  mesh = parallel.create_mesh(config.mesh)
  state, shardings = state_lib.create_sharded_state(model, tx, batches[0], 0, mesh, rules)
  bsh = parallel.batch_sharding(mesh, rules)
  fn = functools.partial(step_lib.train_step, objective=smoothed_ce(model), tx=tx)
  batch = parallel.to_global(batches[0], bsh)

  def constraints(step):
    return step.lower(state, batch).as_text().count('sharding_constraint')

  layers = config.model.num_encoder_layers + config.model.num_decoder_layers
  assert constraints(parallel.RulesJit(fn, mesh, rules, in_shardings=(shardings, bsh))) >= layers
  # Without the mesh and rules (plain jax.jit) every constraint is a no-op.
  assert constraints(jax.jit(fn, in_shardings=(shardings, bsh))) == 0


def test_activation_names_have_rules_of_their_own_or_their_parameter_names():
  rules = parallel.rules_from_config(tiny_config('fsdp_tp'))
  assert dict(rules)['activation_mlp'] == 'model' and dict(rules)['activation_embed'] is None
  # A table written before the activation names (a saved config.json): each takes the rule
  # of its parameter name, as the models' constraints used those names then.
  old = [('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('length', None), ('mlp', 'model'),
         ('heads', 'model'), ('kv', None), ('vocab', None)]
  filled = dict(parallel.with_activation_rules(old))
  assert filled['activation_batch'] == ('data', 'fsdp') and filled['activation_mlp'] == 'model'
  with pytest.raises(ValueError, match=r"name no mesh axes for \['activation_vocab'\]"):
    parallel.with_activation_rules([r for r in old if r[0] != 'vocab'])
