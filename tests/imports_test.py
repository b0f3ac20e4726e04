"""The package's shape: no import cycles, layers import only downward, small modules.

Layers, lowest first (a module may import its own package and any lower layer):
  0  lmjax.metrics, lmjax.parallel, lmjax.runtime      shared utilities
  1  lmjax.models | lmjax.data                          (not each other)
  2  lmjax.config | lmjax.decoding                      (not each other)
  3  lmjax.train
  4  lmjax.tools                                        what runs on a finished workdir
  5  lmjax.bench
Imports inside functions count as well as module-level ones.
"""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {'lmjax': 0, 'lmjax.models': 1, 'lmjax.data': 1, 'lmjax.config': 2,
          'lmjax.decoding': 2, 'lmjax.train': 3, 'lmjax.tools': 4, 'lmjax.bench': 5}
MAX_LINES = 400


def _modules():
  """Module name → file path, for every module under lmjax/."""
  out = {}
  for root, _, files in os.walk(os.path.join(REPO, 'lmjax')):
    for f in files:
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].replace(os.sep, '.')
        out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(root, f)
  return out


def _imports(path, modules):
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
        found.add(sub if sub in modules else node.module)
  return found


def _package(name):
  return name if name in LAYERS else name.rsplit('.', 1)[0]


def _graph():
  modules = _modules()
  return {m: {i for i in _imports(p, modules) if i in modules and i != m} for m, p in modules.items()}


def test_every_package_has_a_layer():
  assert sorted({_package(m) for m in _modules()}) == sorted(LAYERS)


def _upward(graph):
  wrong = []
  for m, deps in graph.items():
    pm = _package(m)
    for d in deps:
      pd = _package(d)
      if pd != pm and pd != 'lmjax' and LAYERS[pd] >= LAYERS[pm]:
        wrong.append(f'{m} imports {d} (layer {LAYERS[pd]} >= {LAYERS[pm]})')
      if pm == 'lmjax' and pd != 'lmjax':
        wrong.append(f'{m} (layer 0) imports {d}')
  return sorted(wrong)


def test_layers_import_only_downward():
  wrong = _upward(_graph())
  assert not wrong, '\n'.join(wrong)


def _cycles(graph):
  # Tarjan's strongly connected components; any with more than one module is a cycle.
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return cycles


def test_no_import_cycles():
  cycles = _cycles(_graph())
  assert not cycles, cycles


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path):
  """The walker itself: a two-module cycle and an upward import are seen."""
  a, b = tmp_path / 'a.py', tmp_path / 'b.py'
  a.write_text('def f():\n  from lmjax.train import loop\n')
  b.write_text('from lmjax.models import lstm\nimport lmjax.data.tasks\n')
  modules = {'lmjax.train.loop', 'lmjax.models.lstm', 'lmjax.data.tasks'}
  assert _imports(str(a), modules) == {'lmjax.train.loop'}
  assert _imports(str(b), modules) == {'lmjax.models.lstm', 'lmjax.data.tasks'}
  graph = {'lmjax.data.a': {'lmjax.data.b'}, 'lmjax.data.b': {'lmjax.data.c'},
           'lmjax.data.c': {'lmjax.data.a', 'lmjax.train.loop'}, 'lmjax.train.loop': set()}
  assert _cycles(graph) == [['lmjax.data.a', 'lmjax.data.b', 'lmjax.data.c']]
  assert _upward(graph) == ['lmjax.data.c imports lmjax.train.loop (layer 3 >= 1)']
  assert _upward({'lmjax.models.x': {'lmjax.data.y'}, 'lmjax.data.y': set()}) == [
      'lmjax.models.x imports lmjax.data.y (layer 1 >= 1)']


def test_no_module_is_over_400_lines():
  long = {}
  for m, path in _modules().items():
    with open(path, encoding='utf-8') as fh:
      n = sum(1 for _ in fh)
    if n > MAX_LINES:
      long[m] = n
  assert not long, long
