"""Errors a user can fix end the entry scripts with one message naming the place, exit
status != 0 and no traceback; every config field a message names exists.
"""

import os
import re
import subprocess
import sys
import tokenize

import pytest

from lmjax.config import configlib
from lmjax.train import soak

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/default.py:runlocal'
SMALL = ['--config.train.num_train_steps=4', '--config.train.checkpoint_every=2', '--config.optimizer.warmup_steps=1',
         '--config.train.eval_every=4', '--config.eval.num_samples=0',
         '--config.train.async_checkpointing=false']


def train(workdir, *flags):
  cmd = [sys.executable, 'experiments/train.py', f'--config={CONFIG}', f'--workdir={workdir}', *flags]
  env = soak.subprocess_env()
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def assert_one_clear_error(proc, *needles):
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  for needle in needles:
    assert needle in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize('flags,needles', [
    (['--config.task.name=nope'], ['config.task.name=', "'nope'", 'synthetic_dates']),
    (['--config.train.batch_size=12'], ['config.train.batch_size=12', 'not divisible']),
])
def test_train_config_mistakes_are_one_line(tmp_path, flags, needles):
  assert_one_clear_error(train(str(tmp_path / 'w'), *flags), *needles)


def test_train_unwritable_workdir_is_one_line(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  assert_one_clear_error(train(str(blocker / 'w')), '--workdir', 'is not writable')


def test_damaged_checkpoint_without_fallback_is_one_line_and_kept(tmp_path):
  workdir = str(tmp_path / 'w')
  assert train(workdir, *SMALL).returncode == 0
  step_dir = os.path.join(workdir, 'checkpoints', 'last', '4')
  soak.damage_checkpoint(step_dir, 'manifest')
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints', 'last')))
  proc = train(workdir, *SMALL, '--config.train.checkpoint_fallback=false',
               '--config.train.num_train_steps=6')
  assert_one_clear_error(proc, 'checkpoints/last/4 is damaged', 'Nothing was deleted')
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints', 'last'))) == before
  proc = train(workdir, *SMALL, '--config.train.num_train_steps=6')  # fallback (default): resumes
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'WARNING: checkpoint 4 could not be restored' in proc.stdout
  assert os.listdir(os.path.join(workdir, 'checkpoints', 'damaged'))


def _config_paths():
  """Every dotted field of every config file (and its runlocal variant)."""
  paths = set()

  def walk(node, prefix):
    for k, v in node.items():
      paths.add(prefix + k)
      if hasattr(v, 'items'):
        walk(v, prefix + k + '.')

  for name in sorted(os.listdir(os.path.join(REPO, 'configs'))):
    if name.endswith('.py') and name not in ('__init__.py', 'text_task.py', 'model_sections.py'):
      for arg in ('', 'runlocal'):
        try:
          config = configlib.load_config_file(os.path.join(REPO, 'configs', name) + ':' + arg)
        except Exception:  # pylint: disable=broad-except  (configs that need a data argument)
          continue
        walk(config, '')
  from configs import text_task  # pylint: disable=g-import-not-at-top
  for task in ('text_seq2seq', 'text_lm', 'text_classify', 'text_tag'):
    walk(text_task.task_config(task, ''), 'task.')
  return paths


def test_every_config_field_a_message_names_exists():
  known = _config_paths()
  missing = []
  for name, text in _string_literals():
    for path in re.findall(r'(?<![\w.])config\.((?:[a-z_]+\.)*[a-z_]+)(?![\w({])', text):
      if path in ('json', 'py', 'x'):  # file names and placeholders
        continue
      if path not in known and not any(p.startswith(path + '.') for p in known):
        missing.append(f'{name}: config.{path}')
  assert not missing, '\n'.join(sorted(set(missing)))


def _string_literals():
  """(file, its string literals joined): the messages and docs of lmjax/ and experiments/."""
  for folder in ('lmjax', 'experiments'):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
      for f in sorted(files):
        if f.endswith('.py'):
          with open(os.path.join(root, f), encoding='utf-8') as fh:
            strings = [t.string for t in tokenize.generate_tokens(fh.readline)
                       if t.type == tokenize.STRING]
          yield os.path.relpath(os.path.join(root, f), REPO), '\n'.join(strings)


def _defined_flags():
  names = {'config', 'workdir', 'debug', 'help'}
  for folder in ('experiments', 'lmjax'):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
      for f in files:
        if f.endswith('.py'):
          with open(os.path.join(root, f), encoding='utf-8') as fh:
            names.update(re.findall(r"DEFINE_\w+\(\s*'(\w+)'", fh.read()))
  with open(os.path.join(REPO, 'launch.sh'), encoding='utf-8') as fh:
    names.update(re.findall(r'--([a-z][\w-]*)\)', fh.read()))  # its case labels
  return names


def test_every_flag_a_message_names_exists():
  known = _defined_flags()
  missing = []
  for name, text in _string_literals():
    for flag in re.findall(r'(?<![\w-])--([a-z]\w*)(?![\w.-])', text):
      if flag not in known and not flag.startswith('xla_'):
        missing.append(f'{name}: --{flag}')
  assert not missing, '\n'.join(sorted(set(missing)))
