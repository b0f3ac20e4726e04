"""Config checks: command-line overrides of unknown fields, and values validated before compiling."""

import importlib.util
import sys
from typing import List, Sequence

from absl import flags
import ml_collections


class ConfigError(ValueError):
  """A config (or its overrides) is invalid; the message lists every problem."""


def _valid_keys(config: ml_collections.ConfigDict, dotted: str) -> str:
  """Valid field names at the level of `dotted` (e.g. 'train.lrr' → fields of config.train)."""
  node = config
  parts = dotted.split('.')
  for i, part in enumerate(parts[:-1]):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return f"config{'.' + '.'.join(parts[:i]) if i else ''} has fields: {', '.join(sorted(node.keys()))}"
    node = node[part]
  prefix = 'config.' + '.'.join(parts[:-1]) if len(parts) > 1 else 'config'
  keys = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
  return f'{prefix} has fields: {", ".join(keys)}'


def flags_parser(argv: Sequence[str], flag_name: str = 'config') -> List[str]:
  """absl flags parser that turns an override of an unknown config field into a clear error.

  Args:
    argv: command line.
    flag_name: name of the config_flags flag.

  Returns:
    Remaining positional arguments (as absl's default parser).
  """
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError) as e:
    bad = [a.split('=', 1)[0][len(f'--{flag_name}.'):] for a in argv[1:]
           if a.startswith(f'--{flag_name}.')]
    config = None
    try:
      config = load_config_file(_flag_value(argv, flag_name))
    except Exception:  # pylint: disable=broad-except
      pass
    if config is not None:
      unknown = [b for b in bad if not _has_path(config, b)]
      if unknown:
        lines = [f'unknown config field --{flag_name}.{u}: {_valid_keys(config, u)}' for u in unknown]
        sys.stderr.write('\n'.join(lines) + '\n')
        sys.exit(2)
    sys.stderr.write(f'bad command line: {e}\n')
    sys.exit(2)


def _flag_value(argv: Sequence[str], flag_name: str) -> str:
  for i, a in enumerate(argv[1:], 1):
    if a.startswith(f'--{flag_name}='):
      return a.split('=', 1)[1]
    if a == f'--{flag_name}' and i + 1 < len(argv):
      return argv[i + 1]
  raise ValueError(f'--{flag_name} not given')


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:arg]' the way ml_collections' config flag does."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_lmjax_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _has_path(config, dotted: str) -> bool:
  node = config
  for part in dotted.split('.'):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      return False
    node = node[part]
  return True


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks values before anything is compiled; raises one ConfigError listing every problem.

  Args:
    config: the experiment config.

  Raises:
    ConfigError: with one line per problem, each naming the field and what is expected.
  """
  problems = []

  def need(cond, field, expected):
    if not cond:
      value = _get(config, field)
      problems.append(f'config.{field}={value!r}: expected {expected}')

  t, o, m = config.train, config.optimizer, config.model
  need(t.batch_size > 0, 'train.batch_size', 'a positive integer')
  need(t.num_train_steps > 0, 'train.num_train_steps', 'a positive integer')
  need(t.grad_accum_steps > 0 and t.batch_size % max(t.grad_accum_steps, 1) == 0,
       'train.grad_accum_steps', f'a positive divisor of train.batch_size={t.batch_size}')
  for f in ('log_every', 'eval_every', 'checkpoint_every'):
    need(t[f] > 0, f'train.{f}', 'a positive integer')
  need(t.keep_checkpoints > 0, 'train.keep_checkpoints', 'a positive integer')
  need(0.0 <= t.label_smoothing < 1.0, 'train.label_smoothing', 'a value in [0, 1)')
  need(t.best_mode in ('min', 'max'), 'train.best_mode', "'min' or 'max'")
  need(t.early_stopping_patience >= 0, 'train.early_stopping_patience', '>= 0 (0 = off)')
  need(o.learning_rate > 0, 'optimizer.learning_rate', 'a positive number')
  need(0 <= o.warmup_steps <= t.num_train_steps, 'optimizer.warmup_steps',
       f'between 0 and train.num_train_steps={t.num_train_steps}')
  need(o.grad_clip_norm >= 0, 'optimizer.grad_clip_norm', '>= 0 (0 = off)')
  for f in ('dropout_rate', 'attention_dropout_rate'):
    if f in m:
      need(0.0 <= m[f] < 1.0, f'model.{f}', 'a value in [0, 1)')
  for f in ('emb_dim', 'num_heads', 'qkv_dim', 'mlp_dim', 'hidden_dim', 'max_len'):
    if f in m:
      need(m[f] > 0, f'model.{f}', 'a positive integer')
  if 'num_heads' in m and 'qkv_dim' in m and m.num_heads > 0:
    need(m.qkv_dim % m.num_heads == 0, 'model.qkv_dim',
         f'a multiple of model.num_heads={m.num_heads}')
  for f in ('num_encoder_layers', 'num_decoder_layers', 'num_layers'):
    if f in m:
      need(m[f] >= 0, f'model.{f}', '>= 0')
  need(config.eval.batch_size > 0, 'eval.batch_size', 'a positive integer')
  if 'max_len' in m:
    for f in ('max_input_length', 'max_target_length'):
      if f in config.task:
        need(config.task[f] <= m.max_len, f'task.{f}', f'<= model.max_len={m.max_len}')
  if problems:
    raise ConfigError('invalid config:\n  ' + '\n  '.join(problems))


def _get(config, dotted):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node
