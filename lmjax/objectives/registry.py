"""Objectives by name, and the one place a run's objective is derived from its config.

| name | module | for |
|---|---|---|
| `cross_entropy` | `lmjax.objectives.cross_entropy` | seq2seq, decoder LM, classifier, tagger (the default) |
| `crf` | `lmjax.objectives.crf` | taggers with config.model.use_crf (derived) |
| `vae` | `lmjax.objectives.vae` | config.model.kind='vae' (derived) |
| `stateful_lm` | `lmjax.objectives.stateful_lm` | LSTM LMs with config.train.stateful (derived) |

config.train.objective = '' derives the name from the model and the task (the table's last
column); a name picks one; 'package.module:name' imports package.module first (which
registers `name` with `register`), so an objective defined outside lmjax trains through
experiments/train.py unchanged. Word-level distillation wraps whichever objective this
returns (`lmjax.objectives.kd`, composed by `lmjax.train.compose`). Every objective gets
the predictor of its task's kind (`lmjax.objectives.predictions.for_task`) unless it sets
its own.
"""

import importlib
import inspect
from typing import Callable, Dict, Tuple

from lmjax.objectives import base
from lmjax.objectives import crf
from lmjax.objectives import cross_entropy
from lmjax.objectives import predictions
from lmjax.objectives import stateful_lm
from lmjax.objectives import vae

# factory(config, task, model) -> Objective
Factory = Callable[..., base.Objective]
FIELD = 'config.train.objective'
# Which batch field holds the labels of each task kind.
LABEL_FIELDS = {'seq2seq': 'targets', 'lm': 'targets', 'classify': 'label', 'tag': 'tags',
                'mlm': 'targets'}


def _cross_entropy(config, task, model) -> base.Objective:
  return cross_entropy.TokenCrossEntropy(
      model, LABEL_FIELDS[task.kind], config.train.label_smoothing,
      per_row=task.kind == 'classify', in_context=task.kind == 'lm')


def _crf(config, task, model) -> base.Objective:
  del config
  if task.kind != 'tag':
    raise ValueError(f"{FIELD}='crf' (or config.model.use_crf=True) needs a tag task; "
                     f'config.task.name={task.name!r} is a {task.kind!r} task')
  return crf.CRFNegLogLikelihood(model)


def _vae(config, task, model) -> base.Objective:
  del task
  return vae.ELBO(model, config.train.label_smoothing, vae.iw_samples_of(config),
                  config.eval.batch_size)


def _stateful_lm(config, task, model) -> base.Objective:
  stateful_lm.check(config, task, model)
  return stateful_lm.StatefulLM(model, config.train.label_smoothing)


_REGISTRY: Dict[str, Factory] = {'cross_entropy': _cross_entropy, 'crf': _crf, 'vae': _vae,
                                 'stateful_lm': _stateful_lm}


def register(name: str) -> Callable[[Factory], Factory]:
  """Decorator: registers `factory(config, task, model) -> Objective` as `name`."""
  def add(factory: Factory) -> Factory:
    old = _REGISTRY.get(name)
    if old is not None and _origin(old) != _origin(factory):
      raise ValueError(f'objective {name!r} is already registered ({_origin(old)})')
    _REGISTRY[name] = factory  # (a module imported under two names registers twice)
    return factory
  return add


def _origin(factory: Factory) -> Tuple[str, str]:
  return getattr(factory, '__qualname__', repr(factory)), inspect.getfile(factory)


def names() -> Tuple[str, ...]:
  """The registered objective names."""
  return tuple(sorted(_REGISTRY))


def derive(config) -> str:
  """The objective name of `config`: config.train.objective, or derived from the model."""
  name = config.train.get('objective', '')
  if name:
    return name
  if config.model.get('kind') == 'vae':
    return 'vae'
  if config.train.get('stateful', False):
    return 'stateful_lm'
  if config.model.get('use_crf', False):
    return 'crf'
  return 'cross_entropy'


def _factory(name: str) -> Factory:
  key = name
  if ':' in name:  # 'package.module:name': the module registers the name when imported
    module, key = name.split(':', 1)
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise ValueError(f'{FIELD}={name!r}: cannot import {module!r} ({e})') from e
  if key not in _REGISTRY:
    raise ValueError(f'{FIELD}={name!r}: not a registered objective; expected one of '
                     f"{list(names())} or 'package.module:name'")
  return _REGISTRY[key]


def build(config, task, model) -> base.Objective:
  """The run's objective for `model` on `task`, with its task's predictor.

  Args:
    config: the experiment config (config.train.objective and what the objective reads).
    task: the built task.
    model: the unbound module (QAT-wrapped when quantization-aware).

  Raises:
    ValueError: an unknown objective name, or one that does not fit the model or task.
  """
  objective = _factory(derive(config))(config, task, model)
  if objective.predictor is None:
    objective.predictor = predictions.for_task(task, objective, config)
  return objective
