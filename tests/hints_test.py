"""Every config field and command-line flag that a message or docstring names exists
(the bad-input cases themselves run in tests/cli_bad_input_test.py)."""

import os
import re
import tokenize

from lmjax.config import configlib
from tests import import_graph

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


ABSL_FLAGS = {'help', 'helpfull', 'flagfile'}


def _flags_of(path):
  """Flags that the file at `path` defines (absl DEFINE_*) or, for launch.sh, its case labels."""
  with open(path, encoding='utf-8') as fh:
    text = fh.read()
  if path.endswith('.sh'):
    return set(re.findall(r'--([a-z][\w-]*)\)', text))
  return (set(re.findall(r"DEFINE_\w+\(\s*'(\w+)'", text))
          | set(re.findall(r"add_argument\(\s*'--(\w+)'", text))
          | ({'config'} if 'DEFINE_config_file' in text else set()))


def _scripts_showing():
  """File (repository-relative) → the flags of the commands whose messages it can print:
  an entry script's own flags; for an lmjax module, those of every entry script that
  imports it (directly or not), plus its own (e.g. lmjax/config/sweep.py's)."""
  scripts = {os.path.join('experiments', f): os.path.join(REPO, 'experiments', f)
             for f in os.listdir(os.path.join(REPO, 'experiments')) if f.endswith('.py')}
  shown = {rel: _flags_of(path) | ABSL_FLAGS for rel, path in scripts.items()}
  for rel, path in scripts.items():
    for module in import_graph.reached(path):
      name = os.path.relpath(import_graph.modules()[module], REPO)
      shown.setdefault(name, set()).update(shown[rel])
  for module, path in import_graph.modules().items():
    name = os.path.relpath(path, REPO)
    shown.setdefault(name, set()).update(_flags_of(path) | ABSL_FLAGS)
  launch = _flags_of(os.path.join(REPO, 'launch.sh'))
  shown['lmjax/config/sweep.py'] |= launch  # launch.sh runs it
  return shown


def test_every_flag_a_message_names_is_defined_by_a_command_that_shows_it():
  """lmjax/ code: by a command that runs it; entry scripts (whose hints may point at
  another command, e.g. average_checkpoints.py → evaluate.py --checkpoint): by any."""
  shown = _scripts_showing()
  any_command = set().union(*(v for k, v in shown.items() if k.startswith('experiments')))
  any_command |= _flags_of(os.path.join(REPO, 'launch.sh'))
  missing = []
  for name, text in _string_literals():
    known = shown[name] if name.startswith('lmjax') else any_command
    for flag in re.findall(r'(?<![\w-])--([a-z]\w*)(?![\w.-])', text):
      if flag not in known and not flag.startswith('xla_'):
        missing.append(f'{name}: --{flag} (defined by none of the commands that run this code)')
  assert not missing, '\n'.join(sorted(set(missing)))
