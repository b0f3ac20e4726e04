"""Config checks: command-line overrides of unknown fields, and values validated before compiling."""

import importlib.machinery
import importlib.util
import math
import os
import sys
from typing import List, Sequence

from absl import flags
import ml_collections
import numpy as np

from lmjax import fileio
from lmjax import models
from lmjax import optim
from lmjax import platforms
from lmjax.data import task_def
from lmjax.data import tokenizers as tok_lib
from lmjax.data import word_vectors
from lmjax.models import layers
from lmjax.models import quantization


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
    spec = _flag_value(argv, flag_name)
  except ValueError:  # not given: absl reports the required flag
    spec = None
  if spec is not None:
    add_config_root(spec.partition(':')[0])
    if '--debug' not in argv:  # --debug: let the loader's own traceback through
      _check_config_file(spec, flag_name)
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


def _check_config_file(spec: str, flag_name: str) -> None:
  """Exits with one line when the config file is missing or does not load (ml_collections
  would defer the error to the first use of the config and end in a traceback)."""
  path = spec.partition(':')[0]
  if not os.path.isfile(path):
    sys.stderr.write(f'--{flag_name}={spec}: no such config file {path!r} (config files '
                     'live in configs/, e.g. --config=configs/default.py)\n')
    sys.exit(2)
  try:
    load_config_file(spec)
  except Exception as e:  # pylint: disable=broad-except  (any error of the user's file)
    sys.stderr.write(f'--{flag_name}={spec}: the config file does not load: '
                     f'{type(e).__name__}: {e} (--debug shows the traceback)\n')
    sys.exit(2)


def _flag_value(argv: Sequence[str], flag_name: str) -> str:
  for i, a in enumerate(argv[1:], 1):
    if a.startswith(f'--{flag_name}='):
      return a.split('=', 1)[1]
    if a == f'--{flag_name}' and i + 1 < len(argv):
      return argv[i + 1]
  raise ValueError(f'--{flag_name} not given')


def add_config_root(path: str) -> None:
  """Lets a config file import its siblings (`from configs import text_task`).

  Config files live in a `configs/` package beside `lmjax/`, which is not installed
  with the library (a site-packages `configs` would collide with other projects'): the
  folder above the file's package goes on sys.path, whatever the working directory.

  Args:
    path: a config file's path.
  """
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isfile(os.path.join(folder, '__init__.py')):
    root = os.path.dirname(folder)
    if root not in sys.path:
      sys.path.insert(0, root)


def config_module(path: str):
  """Imports a config file (any name, any folder) as a module; its siblings importable."""
  add_config_root(path)
  loader = importlib.machinery.SourceFileLoader('_lmjax_config', path)  # any file name
  module_spec = importlib.util.spec_from_loader('_lmjax_config', loader)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:arg]' the way ml_collections' config flag does."""
  path, _, arg = spec.partition(':')
  module = config_module(path)
  return module.get_config(arg) if arg else module.get_config()


def repo_config(name: str, arg: str = '') -> ml_collections.ConfigDict:
  """A config of the repository's configs/ folder, for tools that run from its root
  (benchmarks, the device check): `repo_config('default.py', 'runlocal')`.

  Raises:
    ValueError: no configs/NAME under the working directory (names the folder).
  """
  path = os.path.join('configs', name)
  if not os.path.isfile(path):
    raise ValueError(f'{path} not found in {os.getcwd()}: run this from the root of the lmjax '
                     'repository (the config files are not installed with the package)')
  return load_config_file(f'{path}:{arg}' if arg else path)


def _has_path(config, dotted: str) -> bool:
  node = config
  for part in dotted.split('.'):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      return False
    node = node[part]
  return True


def _is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_num(x) -> bool:
  return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
          and math.isfinite(x))


def _positive_int(x) -> bool:
  return _is_int(x) and x > 0


def _nonneg_int(x) -> bool:
  return _is_int(x) and x >= 0


def _unit_interval(x) -> bool:  # [0, 1)
  return _is_num(x) and 0.0 <= x < 1.0


def validate(config: ml_collections.ConfigDict, check_paths: bool = False) -> None:
  """Checks values before anything is compiled; raises one ConfigError listing every problem.

  Args:
    config: the experiment config.
    check_paths: also check that the data directory and files the task names exist
      (the trainer does; config tests without the data do not).

  Raises:
    ConfigError: with one line per problem, each naming the field and what is expected.
  """
  problems = []

  def need(field, ok, expected):
    """Records a problem unless ok(value) (a wrong type counts as a problem, not a crash)."""
    try:
      value = _get(config, field)
    except (KeyError, AttributeError):
      return  # a field this config does not have
    try:
      good = bool(ok(value))
    except Exception:  # pylint: disable=broad-except  (e.g. None or a string compared with 0)
      good = False
    if not good:
      problems.append(f'config.{field}={value!r}: expected {expected}')

  def one_of(field, values):
    """`need` for a choice among `values` (the keys or names the implementation defines)."""
    names = [repr(v) for v in values]
    need(field, lambda x: isinstance(x, str) and x in values,
         ', '.join(names[:-1]) + ' or ' + names[-1] if len(names) > 1 else names[0])

  t, m = config.train, config.model
  for f in ('seed', 'data_seed'):
    need(f, _nonneg_int, 'an integer >= 0')
  for f in ('batch_size', 'num_train_steps', 'log_every', 'eval_every', 'checkpoint_every',
            'keep_checkpoints', 'max_nonfinite_steps'):
    need(f'train.{f}', _positive_int, 'a positive integer')
  need('train.grad_accum_steps',
       lambda k: _positive_int(k) and _positive_int(t.batch_size) and t.batch_size % k == 0,
       f'a positive divisor of train.batch_size={t.batch_size}')
  need('train.label_smoothing', _unit_interval, 'a value in [0, 1)')
  need('train.ema_decay', _unit_interval, 'a value in [0, 1) (0 = no moving average)')
  need('train.best_mode', lambda x: x in ('min', 'max'), "'min' or 'max'")
  need('train.early_stopping_patience', _nonneg_int, '>= 0 (0 = off)')
  need('train.nonfinite', lambda x: x in ('skip', 'stop'), "'skip' or 'stop'")
  _check_compression(config, need)
  need('optimizer.learning_rate', lambda x: _is_num(x) and x > 0, 'a positive finite number')
  need('optimizer.warmup_steps', lambda x: _nonneg_int(x) and x <= t.num_train_steps,
       f'an integer between 0 and train.num_train_steps={t.num_train_steps}')
  need('optimizer.grad_clip_norm', lambda x: _is_num(x) and x >= 0, '>= 0 (0 = off)')
  one_of('optimizer.name', optim.OPTIMIZERS)
  one_of('optimizer.schedule', optim.SCHEDULES)
  for f in ('b1', 'b2'):
    need(f'optimizer.{f}', _unit_interval, 'a value in [0, 1)')
  if _get(config, 'optimizer.schedule') == 'step':
    need('optimizer.decay_rate', lambda x: _is_num(x) and 0 < x <= 1, 'a number in (0, 1]')
    need('optimizer.decay_every', _positive_int, 'a positive integer')
    need('optimizer.decay_begin', _nonneg_int, 'an integer >= 0')
  for f in ('eps', 'weight_decay', 'end_learning_rate_factor'):
    need(f'optimizer.{f}', lambda x: _is_num(x) and x >= 0, 'a finite number >= 0')
  one_of('model.mlp_activation', layers.ACTIVATIONS)
  one_of('model.norm', layers.NORMS)
  need('model.norm_epsilon', lambda x: _is_num(x) and 0 < x < 1, 'a number in (0, 1)')
  one_of('model.init', layers.INIT_STYLES)
  one_of('model.embed_scale', layers.EMBED_SCALES)
  if m.get('family') == 'transformer':
    one_of('model.position', ('sinusoidal', 'learned', 'relative'))
  need('model.relative_buckets', lambda x: _is_int(x) and x >= 4 and x % 2 == 0,
       'an even integer >= 4')
  need('model.relative_max_distance',
       lambda x: _is_int(x) and x > _get(config, 'model.relative_buckets') // 2,
       'an integer > model.relative_buckets / 2 (buckets past the exact ones grow up to it)')
  need('model.padded_vocab_size', _nonneg_int, 'an integer >= 0 (0 = the vocabulary size)')
  need('model.type_vocab_size', _nonneg_int, 'an integer >= 0 (0 = no token-type embedding)')
  for f in ('scale_attention', 'scale_tied_logits', 'embed_norm'):
    need(f'model.{f}', lambda x: isinstance(x, bool), 'True or False')
  need(f'model.{models.NEVER_EMIT}', lambda x: isinstance(x, (list, tuple)) and all(
      _nonneg_int(i) for i in x), 'a list of token ids >= 0 ([] = none)')
  need('model.use_bias', lambda x: isinstance(x, bool), 'True or False')
  one_of('model.matmul_dtype', layers.MATMUL_DTYPES)
  for f in ('dropout_rate', 'attention_dropout_rate'):
    need(f'model.{f}', _unit_interval, 'a value in [0, 1)')
  for f in ('emb_dim', 'num_heads', 'qkv_dim', 'mlp_dim', 'hidden_dim', 'max_len'):
    need(f'model.{f}', _positive_int, 'a positive integer')
  if 'num_heads' in m and 'qkv_dim' in m and _positive_int(m.num_heads):
    need('model.qkv_dim', lambda x: x % m.num_heads == 0,
         f'a multiple of model.num_heads={m.num_heads} (the attention width is split over the heads)')
  for f in ('num_encoder_layers', 'num_decoder_layers', 'num_layers'):
    need(f'model.{f}', _nonneg_int, 'an integer >= 0')
  need('model.dtype', lambda x: x in platforms.DTYPES, ', '.join(map(repr, platforms.DTYPES)))
  need('model.attention_impl', lambda x: x in platforms.ATTENTION_IMPLS,
       ', '.join(map(repr, platforms.ATTENTION_IMPLS)))
  need('model.word_dropout', _unit_interval, 'a value in [0, 1)')
  for f in ('char_dim', 'char_filters', 'char_width'):
    need(f'model.{f}', _nonneg_int if f == 'char_dim' else _positive_int,
         'an integer >= 0 (0 = no character features)' if f == 'char_dim' else 'a positive integer')
  need('task.word_chars', _nonneg_int, 'an integer >= 0 (bytes per word; 0 = no `chars` feature)')
  if _is_int(m.get('char_dim')) and m.char_dim > 0:
    need('task.word_chars', lambda x: x > 0, f'> 0 (bytes per word): model.char_dim={m.char_dim} '
         'reads each word\'s bytes')
  need('task.unk_alpha', lambda x: _is_num(x) and x >= 0, 'a number >= 0 (0 = off)')
  need('task.entity_unk_rate', _unit_interval, 'a value in [0, 1)')
  if any(_is_num(config.task.get(f)) and config.task.get(f) > 0
         for f in ('unk_alpha', 'entity_unk_rate')):
    need('task.name', lambda x: x == 'text_tag', "'text_tag' (task.unk_alpha / "
         'task.entity_unk_rate replace words of tagging examples)')
    need('model.family', lambda x: x == 'lstm', "'lstm' (task.unk_alpha / task.entity_unk_rate "
         'feed the LSTM encoder\'s word dropout)')
  need('eval.batch_size', _positive_int, 'a positive integer')
  for f in ('num_samples', 'decode_max_length'):
    need(f'eval.{f}', _nonneg_int, 'an integer >= 0')
  for f in ('max_input_length', 'max_target_length', 'num_train', 'num_eval'):
    need(f'task.{f}', _positive_int, 'a positive integer')
  if 'max_len' in m and _is_int(m.max_len):
    for f in ('max_input_length', 'max_target_length'):
      need(f'task.{f}', lambda x: x <= m.max_len, f'<= model.max_len={m.max_len}')
  for f in ('max_train_examples', 'max_eval_examples'):
    need(f'task.source.{f}', _nonneg_int, 'an integer >= 0 (0 = all)')
  need('task.source.eval_fraction', lambda x: _is_num(x) and 0 < x < 1, 'a value in (0, 1)')
  if config.task.get('source', {}).get('stream_context'):
    need('task.source.lm_mode', lambda x: x == 'stream', "'stream' (stream_context=True)")
    need('task.batching.mode', lambda x: x in ('plain', 'windows'),
         "'plain' or 'windows' (stream_context=True)")
  if config.task.get('batching', {}).get('mode') == 'windows':
    need('task.source.lm_mode', lambda x: x == 'stream', "'stream' (batching.mode='windows')")
  need('task.tokenizer.vocab_size', _nonneg_int, 'an integer >= 0')
  one_of('task.tokenizer.type', tok_lib.TYPES)
  tok = config.task.get('tokenizer', {})
  if tok.get('vectors', ''):
    need('task.tokenizer.type', lambda x: x == 'word',
         "'word' (word vectors need one id per whitespace-separated word)")
  if 'vectors_vocab' in tok:
    need('task.tokenizer.vectors_vocab', _nonneg_int, 'an integer >= 0 (0 = add no words)')
  need('task.batching.max_tokens', _positive_int, 'a positive integer')
  need('task.batching.window', _positive_int, 'a positive integer (examples per bucket window)')
  need('task.batching.workers', _nonneg_int, 'an integer >= 0 (0 = no worker processes)')
  need('task.preprocess_workers', _nonneg_int, 'an integer >= 0 (0 = one per CPU)')
  need('task.batching.bucket_lengths', lambda x: len(x) > 0 and all(_positive_int(v) for v in x),
       'a non-empty list of positive integers')
  one_of('task.batching.mode', task_def.BATCHING_MODES)
  for axis, size in config.mesh.items():
    need(f'mesh.{axis}', lambda x: _positive_int(x) or x == -1, 'a positive integer or -1 (the rest)')
  for axis in config.get('mesh_dcn', {}):
    need(f'mesh_dcn.{axis}', lambda x, a=axis: _positive_int(x) and (x == 1 or a in config.mesh),
         f'a positive integer (> 1 only for an axis of config.mesh {list(config.mesh)})')
  if check_paths:
    problems.extend(_missing_paths(config.task))
  if problems:
    raise ConfigError('invalid config:\n  ' + '\n  '.join(problems))


def _check_compression(config, need) -> None:
  """config.train's distillation, quantization and pruning fields (docs/COMPRESSION.md)."""
  t = config.train
  need('train.kd_weight', lambda x: _is_num(x) and 0 <= x <= 1, 'a value in [0, 1] (0 = off)')
  need('train.kd_temperature', lambda x: _is_num(x) and x > 0, 'a positive number')
  if _is_num(t.get('kd_weight')) and t.kd_weight > 0:
    need('train.kd_teacher_workdir', lambda x: isinstance(x, str) and x,
         'the --workdir of a trained teacher run (config.train.kd_weight > 0)')
    need('train.stateful', lambda x: not x, 'False (word-level KD needs whole-batch logits; '
         'config.train.kd_weight > 0)')
    need('model.kind', lambda x: x != 'vae', "not 'vae' (config.train.kd_weight > 0)")
    need('model.use_crf', lambda x: not x, 'False: a CRF tagger has no per-token '
         'distribution to distil (config.train.kd_weight > 0)')
  need('train.kd_teacher_checkpoint', lambda x: x in ('latest', 'best') or str(x).isdigit(),
       "'latest', 'best' or a step number")
  need('train.init_from', lambda x: isinstance(x, str), "a trained run's --workdir or '' (off)")
  need('train.init_checkpoint', lambda x: x in ('latest', 'best') or str(x).isdigit(),
       "'latest', 'best' or a step number")
  for field in ('init_skip', 'freeze'):
    if field in t:
      need(f'train.{field}', lambda x: isinstance(x, (list, tuple)) and all(
          isinstance(p, str) for p in x), 'a list of regexes over parameter paths')
  if 'init_rules' in t:
    need('train.init_rules', lambda x: isinstance(x, (list, tuple)) and all(
        isinstance(r, (list, tuple)) and len(r) == 2 and isinstance(r[0], str)
        and (r[1] is None or isinstance(r[1], str)) for r in x),
         "a list of [model regex, checkpoint path or None] pairs ([] = all by name)")
  need('train.quantization', lambda x: x in ('',) + quantization.MODES,
       "'' (off), 'int8' or 'int8_weights'")
  if 'pruning' not in t:
    return
  p = t.pruning
  need('train.pruning.sparsity', _unit_interval, 'a value in [0, 1) (0 = off)')
  need('train.pruning.begin_step', _nonneg_int, 'an integer >= 0')
  need('train.pruning.update_every', _positive_int, 'a positive integer')
  if _is_num(p.sparsity) and p.sparsity > 0 and _is_int(p.begin_step) and _positive_int(p.update_every):
    end = p.end_step or t.num_train_steps
    need('train.pruning.end_step', lambda x: _nonneg_int(x) and end >= p.begin_step
         and (end - p.begin_step) % p.update_every == 0,
         f'0 (= train.num_train_steps) or a step >= train.pruning.begin_step={p.begin_step} '
         f'with (end_step - begin_step) a multiple of train.pruning.update_every={p.update_every}')
    need('train.ema_decay', lambda x: x == 0, '0 with pruning: a moving average of pruned '
         'weights is not sparse (config.train.pruning.sparsity > 0)')




def _missing_paths(task) -> List[str]:
  """The data directory and files that config.task names but that do not exist."""
  source = task.get('source')
  if not isinstance(source, ml_collections.ConfigDict) or source.get('type') == 'tfds':
    return []
  problems = []
  data_dir = task.get('data_dir', '') or ''
  if data_dir:
    try:
      fileio.check_url(data_dir, 'config.task.data_dir')
      found = fileio.isdir(data_dir)
    except Exception as e:  # pylint: disable=broad-except  (each storage backend has its own)
      return [f'config.task.data_dir={data_dir!r}: cannot be read ({fileio.first_line(e)})']
    if not found:
      return [f'config.task.data_dir={data_dir!r}: no such directory (give the data '
              'directory as the config argument, e.g. configs/x.py:/path/to/data)']
  for split in ('train_files', 'eval_files'):
    for i, name in enumerate(source.get(split, None) or []):
      path = fileio.join(data_dir, name) if data_dir else name
      if not fileio.isfile(path):
        hint = ('' if data_dir else ' (relative to the current directory: give the data directory '
                'as the config argument, e.g. configs/x.py:/path/to/data)')
        problems.append(f'config.task.source.{split}[{i}]={name!r}: file {path} not found{hint}')
  vectors = task.get('tokenizer', {}).get('vectors', '')
  if vectors:
    path = word_vectors.resolve(vectors, data_dir)
    if not fileio.isfile(path):
      problems.append(f'config.task.tokenizer.vectors={vectors!r}: file {path} not found '
                      '(a GloVe / word2vec text file, relative to config.task.data_dir)')
  return problems


def _get(config, dotted):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node
