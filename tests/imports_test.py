"""The package's shape: no import cycles, layers import only downward.

Layers, lowest first (a module may import its own package and any lower layer):
  0  lmjax.fileio, lmjax.metrics, lmjax.optim, lmjax.parallel, lmjax.platforms, lmjax.runtime
  1  lmjax.models | lmjax.data                          (not each other)
  2  lmjax.config | lmjax.decoding                      (not each other)
  3  lmjax.objectives                                   losses, their metrics and predictions
  4  lmjax.train
  5  lmjax.tools                                        what runs on a finished workdir
  6  lmjax.bench | lmjax.hf                            (benchmarks; Hugging Face checkpoints in/out)
Imports inside functions count as well as module-level ones.
"""

from tests.import_graph import graph as _graph, imports as _imports, modules as _modules

LAYERS = {'lmjax': 0, 'lmjax.models': 1, 'lmjax.data': 1, 'lmjax.config': 2,
          'lmjax.decoding': 2, 'lmjax.objectives': 3, 'lmjax.train': 4, 'lmjax.tools': 5,
          'lmjax.bench': 6, 'lmjax.hf': 6}


def _package(name):
  return name if name in LAYERS else name.rsplit('.', 1)[0]


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
  assert _upward(graph) == ['lmjax.data.c imports lmjax.train.loop (layer 4 >= 1)']
  assert _upward({'lmjax.models.x': {'lmjax.data.y'}, 'lmjax.data.y': set()}) == [
      'lmjax.models.x imports lmjax.data.y (layer 1 >= 1)']


def _imports_configs(path):
  import ast  # pylint: disable=g-import-not-at-top
  with open(path, encoding='utf-8') as fh:
    tree = ast.parse(fh.read(), path)
  return any((isinstance(n, ast.Import) and any(a.name.split('.')[0] == 'configs' for a in n.names))
             or (isinstance(n, ast.ImportFrom) and (n.module or '').split('.')[0] == 'configs')
             for n in ast.walk(tree))


def test_the_library_imports_no_experiment_config():
  """configs/ is not installed with lmjax: the library takes defaults from
  lmjax/config/defaults.py and config files by path (configlib.repo_config)."""
  assert [m for m, p in _modules().items() if _imports_configs(p)] == []
