"""Finds direct file-system calls in lmjax/ that bypass lmjax.fileio (used by fileio_test)."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'lmjax')

# Calls that touch a path on the file system directly.
CALLS = {'open', 'os.makedirs', 'os.mkdir', 'os.replace', 'os.rename', 'os.remove', 'os.unlink',
         'os.listdir', 'os.scandir', 'os.walk', 'os.truncate', 'os.stat', 'os.path.exists',
         'os.path.isdir', 'os.path.isfile', 'os.path.getsize', 'os.path.abspath',
         'shutil.rmtree', 'shutil.copytree', 'shutil.copy', 'shutil.copyfile', 'shutil.move',
         'gzip.open', 'tarfile.open', 'tempfile.mkstemp', 'glob.glob'}
# A line that works on the local disk on purpose carries this comment, with the reason.
PRAGMA = '# local disk:'
# Whole modules that only ever work on this machine's disk, and why.
LOCAL_MODULES = {
    'fileio.py': 'the path layer itself',
    'config/configlib.py': 'config files are Python modules, imported from the local disk',
    'train/soak.py': 'the soak harness damages checkpoint files of local test runs',
    'bench': 'benchmarks write scratch runs and reports on the machine they measure',
    'data/records.py': 'ArrayRecord shards are local files (a remote cache is mirrored first)',
    'data/mirror.py': 'keeps the local copies of remote preprocessed folders',
}


def _name(node) -> str:
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    inner = _name(node.value)
    return f'{inner}.{node.attr}' if inner else ''
  return ''


def _exempt(rel: str) -> bool:
  return any(rel == m or rel.startswith(m + '/') for m in LOCAL_MODULES)


def offenders(root: str = ROOT):
  """['lmjax/<file>:<line>: <call>'] for direct calls without the pragma."""
  found = []
  for dirpath, _, files in os.walk(root):
    for name in sorted(files):
      if not name.endswith('.py'):
        continue
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root)
      if _exempt(rel):
        continue
      with open(path, encoding='utf-8') as f:
        text = f.read()
      lines = text.splitlines()
      for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call):
          call = _name(node.func)
          if call == 'tarfile.open' and not node.args:
            continue  # tarfile.open(fileobj=…) reads an already opened file
          if call in CALLS and PRAGMA not in lines[node.lineno - 1]:
            found.append(f'lmjax/{rel}:{node.lineno}: {call}')
  return sorted(found)


if __name__ == '__main__':
  print('\n'.join(offenders()))
