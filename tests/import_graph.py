"""The import graph of lmjax/ and of the entry scripts (a helper of the tests)."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules():
  """Module name → file path, for every module under lmjax/."""
  out = {}
  for root, _, files in os.walk(os.path.join(REPO, 'lmjax')):
    for f in files:
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].replace(os.sep, '.')
        out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(root, f)
  return out


def imports(path, known):
  """The lmjax modules a file imports (`from lmjax.x import y` counts lmjax.x.y when it is a
  module, else lmjax.x)."""
  with open(path, encoding='utf-8') as fh:
    tree = ast.parse(fh.read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith('lmjax'))
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('lmjax'):
      for a in node.names:
        sub = f'{node.module}.{a.name}'
        found.add(sub if sub in known else node.module)
  return found


def graph():
  """lmjax module → the lmjax modules it imports (at any depth of its code)."""
  mods = modules()
  return {m: {i for i in imports(p, mods) if i in mods and i != m} for m, p in mods.items()}


def reached(path):
  """The lmjax modules that the file at `path` imports, directly or through others."""
  mods, edges = modules(), graph()
  todo, seen = [i for i in imports(path, mods) if i in mods], set()
  while todo:
    m = todo.pop()
    if m not in seen:
      seen.add(m)
      todo.extend(edges[m])
      parent = m.rsplit('.', 1)[0]  # importing a.b runs a/__init__.py too
      if parent in mods:
        todo.append(parent)
  return seen
