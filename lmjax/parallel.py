"""Device mesh, logical-axis rules → NamedSharding, global batches, multi-host init.

jax.jit with NamedSharding is the one parallelism path: data parallelism is
`batch → data`; FSDP / tensor parallelism are further rules over the same mesh.
A strategy is a named rules table in `config.sharding_rules`, chosen by
`config.sharding` (see `rules_from_config`); `logical_shardings` validates the
tables against the parameters before anything is created.
"""

import functools
import math
from typing import Any, Mapping, Optional, Sequence, Tuple

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Rules = Sequence[Tuple[str, Any]]


def create_mesh(mesh_config: Mapping[str, int], devices=None,
                dcn: Optional[Mapping[str, int]] = None) -> Mesh:
  """Builds a Mesh from named axis sizes; one size may be -1 ("the rest").

  The devices are arranged by `device_array`: along the chips' interconnect topology on
  TPU and GPU, across slices (DCN) first for a multi-slice job, in order on CPU.

  Args:
    mesh_config: ordered axis name → size, e.g. {'data': -1, 'fsdp': 1, 'model': 1}.
    devices: devices to use (default: all).
    dcn: axis name → how many slices that axis spans (`config.mesh_dcn`; each size of
      `mesh_config` is the total over slices). None or all 1: one slice.

  Returns:
    The Mesh.

  Raises:
    ValueError: sizes that do not multiply to the device count, or DCN sizes that do
      not divide them.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = list(mesh_config.keys())
  sizes = [int(mesh_config[n]) for n in names]
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh: at most one axis may be -1, got {dict(mesh_config)}')
  known = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes) or len(devices) % known:
    raise ValueError(f'config.mesh={dict(mesh_config)} does not fit {len(devices)} devices: '
                     'the sizes must multiply to the device count (use -1 for one axis)')
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != len(devices):
    raise ValueError(f'config.mesh={dict(mesh_config)} has {math.prod(sizes)} devices but '
                     f'{len(devices)} are present')
  dcn = {k: v for k, v in dict(dcn or {}).items() if v != 1}
  unknown = sorted(set(dcn) - set(names))
  if unknown:
    raise ValueError(f'config.mesh_dcn names axes {unknown} that config.mesh={dict(mesh_config)} '
                     'does not have')
  dcn_sizes = [int(dcn.get(n, 1)) for n in names]
  if any(d < 1 or s % d for s, d in zip(sizes, dcn_sizes)):
    raise ValueError(f'config.mesh_dcn={dcn}: each must be a positive divisor of its '
                     f'config.mesh size {dict(zip(names, sizes))}')
  return Mesh(device_array(sizes, devices, dcn_sizes), names)


def device_array(sizes: Sequence[int], devices: Sequence[Any],
                 dcn_sizes: Optional[Sequence[int]] = None) -> np.ndarray:
  """The devices as an array of shape `sizes`, arranged for fast collectives.

  Multi-slice (some DCN size > 1): `mesh_utils.create_hybrid_device_mesh` puts each
  axis's DCN factor across slices and the rest within a slice. TPU and GPU:
  `mesh_utils.create_device_mesh` follows the interconnect (torus coordinates on TPU,
  global ids on GPU). Elsewhere (CPU, which has no topology), and where the topology
  cannot take the shape: the devices in order, reshaped.

  Args:
    sizes: total size of each mesh axis.
    devices: the devices (their product).
    dcn_sizes: per axis, the number of slices it spans (None = one slice).
  """
  dcn_sizes = list(dcn_sizes or [1] * len(sizes))
  if math.prod(dcn_sizes) > 1:
    ici = [s // d for s, d in zip(sizes, dcn_sizes)]
    return mesh_utils.create_hybrid_device_mesh(ici, dcn_sizes, devices,
                                                allow_split_physical_axes=True)
  if devices[-1].platform in ('tpu', 'gpu'):
    try:
      return mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError) as e:  # a shape the topology cannot take
      logging.warning('mesh %s: no topology-aware arrangement (%s); using device order',
                      sizes, e)
  return np.asarray(devices).reshape(sizes)


def batch_axes(rules: Rules) -> Tuple[str, ...]:
  """Mesh axes that the logical 'batch' axis is split over."""
  for name, axes in rules:
    if name == 'batch':
      if axes is None:
        return ()
      return tuple(axes) if isinstance(axes, (list, tuple)) else (axes,)
  return ()


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Sharding of batch arrays: leading axis over the batch mesh axes."""
  axes = batch_axes(rules)
  return NamedSharding(mesh, P(axes if axes else None))


def check_batch_divisible(global_batch_size: int, mesh: Mesh, rules: Rules, field: str) -> None:
  """Raises a clear error when the batch does not split evenly over the batch axes."""
  n = math.prod(mesh.shape[a] for a in batch_axes(rules))
  if global_batch_size % n:
    raise ValueError(f'{field}={global_batch_size} is not divisible by the {n} devices of mesh '
                     f'axes {batch_axes(rules)}: use a multiple of {n}')


def rules_from_config(config) -> list:
  """The logical-axis rules of a run: `config.sharding_rules[config.sharding]`.

  `config.sharding = 'custom'` selects `config.logical_axis_rules` instead.

  Args:
    config: experiment config.

  Returns:
    List of (logical name, mesh axes) tuples; mesh axes are None, a name or a tuple.

  Raises:
    ValueError: unknown strategy.
  """
  if config.sharding == 'custom':
    table = config.logical_axis_rules
  elif config.sharding in config.sharding_rules:
    table = config.sharding_rules[config.sharding]
  else:
    raise ValueError(f'config.sharding={config.sharding!r} is not a strategy: expected one of '
                     f"{sorted(config.sharding_rules)} (config.sharding_rules) or 'custom' "
                     '(config.logical_axis_rules)')
  rules = [(name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in table]
  return with_activation_rules(rules)


# The logical names of activations (the models' `nn.with_logical_constraint`s), apart from
# the parameters' names (as MaxText's activation_*): a table can shard them differently,
# e.g. ('activation_length', 'model') for sequence parallelism.
ACTIVATION_AXES = ('activation_batch', 'activation_length', 'activation_embed',
                   'activation_mlp', 'activation_heads', 'activation_kv', 'activation_vocab')


def with_activation_rules(rules: Rules) -> list:
  """`rules` plus, for each activation name it lacks, the rule of the parameter name it
  comes from ('activation_mlp' ← 'mlp'), so tables written before the activation names
  (a saved config.json) shard activations as before.

  Raises:
    ValueError: an activation name with no rule of its own nor of its parameter name.
  """
  rules = list(rules)
  known = dict(rules)
  missing = []
  for name in ACTIVATION_AXES:
    if name not in known:
      base = name[len('activation_'):]
      if base not in known:
        missing.append(name)
      else:
        rules.append((name, known[base]))
  if missing:
    raise ValueError(f'sharding rules (config.sharding / config.sharding_rules, '
                     f'config.logical_axis_rules) name no mesh axes for {missing}: add '
                     "(name, None) to replicate them, or a mesh axis to shard them")
  return rules


def _path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return '/'.join(parts)


def _mesh_axes(axes) -> Tuple[str, ...]:
  if axes is None:
    return ()
  return tuple(axes) if isinstance(axes, (list, tuple)) else (axes,)


def check_rules(abstract_tree: Any, mesh: Mesh, rules: Rules) -> None:
  """Validates rules against a tree of boxed (logically named) abstract values.

  Args:
    abstract_tree: e.g. `jax.eval_shape(init)` of the TrainState (params and
      optimizer state carry their logical names).
    mesh: device mesh.
    rules: logical-axis rules.

  Raises:
    ValueError: listing every problem: a rule naming a mesh axis the mesh lacks, a
      logical axis without a rule, a dimension not divisible by its mesh axes (with
      the param path, dimension and mesh axes).
  """
  problems = []
  for name, axes in rules:
    for a in _mesh_axes(axes):
      if a not in mesh.shape:
        problems.append(f'rule ({name!r}, {axes!r}) names mesh axis {a!r}, but config.mesh has '
                        f'only {list(mesh.shape)}')
  known = {name for name, _ in rules}
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  leaves = jax.tree_util.tree_flatten_with_path(abstract_tree, is_leaf=is_box)[0]
  missing = {}
  for path, leaf in leaves:
    if not is_box(leaf):
      continue
    names = leaf.names
    for n in names:
      if isinstance(n, str) and n not in known:
        missing.setdefault(n, _path_str(path))
    if any(isinstance(n, str) and n not in known for n in names):
      continue
    shape = leaf.value.shape
    for dim, axes in enumerate(nn.logical_to_mesh_axes(names, list(rules))):
      mesh_axes = tuple(a for a in _mesh_axes(axes) if a in mesh.shape)
      n = math.prod(mesh.shape[a] for a in mesh_axes)
      if n > 1 and shape[dim] % n:
        problems.append(
            f'{_path_str(path)} {tuple(shape)}: dimension {dim} ({names[dim]!r}, size '
            f'{shape[dim]}) is not divisible by mesh axes {mesh_axes} of size {n}: change the '
            f'model size, config.mesh, or the rule for {names[dim]!r}')
  for n, path in sorted(missing.items()):
    problems.insert(0, f'logical axis {n!r} (e.g. of {path}) has no rule: add ({n!r}, None) to '
                    'replicate it, or a mesh axis to shard it')
  if problems:
    shown = problems[:20] + ([f'... and {len(problems) - 20} more'] if len(problems) > 20 else [])
    raise ValueError('sharding rules do not fit the model (config.sharding / '
                     'config.sharding_rules, config.mesh):\n  ' + '\n  '.join(shown))


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a tree of (boxed) logically partitioned values.

  Validates the rules first (see `check_rules`).
  """
  check_rules(abstract_tree, mesh, rules)
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, list(rules))


class RulesJit:
  """`jax.jit(fn)` traced and run with `mesh` set and the logical-axis `rules` in force.

  The models name their activations' logical axes (`nn.with_logical_constraint`); only
  with the mesh set (`jax.set_mesh`, outside the jit) and the rules in force (inside it)
  do those names become sharding constraints of the compiled step. Without them every
  constraint is a no-op and XLA's propagation alone places the activations.
  """

  def __init__(self, fn, mesh: Mesh, rules: Rules, **jit_kwargs):
    rules = list(rules)

    @functools.wraps(fn)
    def traced(*args, **kwargs):
      with nn.logical_axis_rules(rules):
        return fn(*args, **kwargs)

    self.mesh, self.jitted = mesh, jax.jit(traced, **jit_kwargs)

  def __call__(self, *args, **kwargs):
    with jax.set_mesh(self.mesh):
      return self.jitted(*args, **kwargs)

  def lower(self, *args, **kwargs):
    """`jax.jit(...).lower` under the mesh (its `.as_text()` shows the constraints)."""
    with jax.set_mesh(self.mesh):
      return self.jitted.lower(*args, **kwargs)


def to_global(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> Any:
  """Host-local numpy batch → global jax.Array sharded over the batch axes."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), dict(batch))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def maybe_initialize_distributed(dist_config: Mapping) -> None:
  """Starts JAX's multi-controller runtime when asked (one process per host).

  Args:
    dist_config: `config.distributed` with `enabled`, `coordinator_address`,
      `num_processes`, `process_id` (empty/-1 = auto-detect on Cloud TPU / SLURM).
  """
  if not dist_config['enabled']:
    return
  kwargs = {}
  if dist_config['coordinator_address']:
    kwargs['coordinator_address'] = dist_config['coordinator_address']
  if dist_config['num_processes'] > 0:
    kwargs['num_processes'] = dist_config['num_processes']
  if dist_config['process_id'] >= 0:
    kwargs['process_id'] = dist_config['process_id']
  jax.distributed.initialize(**kwargs)
