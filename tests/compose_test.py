"""One composition function picks every feature of a run (lmjax/train/compose.py): a test
per feature, and the objective the registry derives for each model and task."""

import importlib

import jax
import numpy as np
import pytest

from lmjax import models
from lmjax import parallel
from lmjax.data import pipeline
from lmjax.data import tasks
from lmjax.objectives import crf
from lmjax.objectives import cross_entropy
from lmjax.objectives import kd
from lmjax.objectives import predictions
from lmjax.objectives import stateful_lm
from lmjax.objectives import vae
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import compose
from lmjax.train import pruning
from tests.compression_test import data, teacher, tiny_config  # noqa: F401  (fixtures)


def _parts(config):
  task = tasks.build_task(config.task, None)
  dummy = pipeline.pad_batch([task.train_example(0)], task.lengths, config.train.batch_size)
  mesh = parallel.create_mesh(config.mesh)
  return compose.compose(config, task, dummy, mesh, parallel.rules_from_config(config)), task, dummy


def _runlocal(name):
  return importlib.import_module(f'configs.{name}').get_config('runlocal')


def _param_shapes(model, dummy):
  rng = jax.random.key(0)
  return jax.tree.map(lambda x: x.shape, jax.eval_shape(
      lambda: model.init({'params': rng, 'dropout': rng}, dummy, train=False))['params'])


def _pruning_states(parts, dummy):
  zeros = jax.tree.map(np.zeros, _param_shapes(parts.model, dummy),
                       is_leaf=lambda x: isinstance(x, tuple))
  is_state = lambda s: isinstance(s, pruning.PruningState)
  return [s for s in jax.tree.leaves(parts.tx.init(zeros), is_leaf=is_state) if is_state(s)]


def test_a_plain_run_is_the_model_its_optimizer_and_the_token_cross_entropy():
  config = _runlocal('default')
  parts, task, dummy = _parts(config)
  assert type(parts.model) is type(models.build_model(config.model, **task.model_sizes()))
  assert type(parts.objective) is cross_entropy.TokenCrossEntropy
  assert parts.objective.label_smoothing == config.train.label_smoothing
  assert isinstance(parts.objective.predictor, predictions.Decode)
  assert parts.objective.step_args() == ((), ())
  assert not _pruning_states(parts, dummy)


def test_quantization_wraps_the_model_and_keeps_its_parameters():
  config = _runlocal('default')
  plain, _, dummy = _parts(config)
  config.train.quantization = 'int8'
  parts, _, _ = _parts(config)
  assert type(parts.model) is not type(plain.model)  # qwix's fake-quantized module
  assert _param_shapes(parts.model, dummy) == _param_shapes(plain.model, dummy)


def test_pruning_follows_the_optimizer():
  config = _runlocal('default')
  config.train.pruning.sparsity = 0.5
  parts, _, dummy = _parts(config)
  assert len(_pruning_states(parts, dummy)) == 1


def test_distillation_wraps_the_objective_with_the_teacher(data, teacher):  # noqa: F811
  config = tiny_config(data)
  config.train.kd_weight, config.train.kd_temperature = 0.5, 2.0
  config.train.kd_teacher_workdir = teacher
  parts, _, _ = _parts(config)
  assert isinstance(parts.objective, kd.Distillation)
  assert type(parts.objective.inner) is cross_entropy.TokenCrossEntropy
  assert (parts.objective.weight, parts.objective.temperature) == (0.5, 2.0)
  (params,), (shardings,) = parts.objective.step_args()
  saved, _ = ckpt_lib.load_params(teacher)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(got), want)
  assert jax.tree.structure(shardings) == jax.tree.structure(params)


@pytest.mark.parametrize('name,objective_type,predictor_type', [
    ('dates_tag_lstm', crf.CRFNegLogLikelihood, predictions.Tags),  # model.use_crf
    ('dates_tag_transformer', cross_entropy.TokenCrossEntropy, predictions.Tags),
    ('dates_classify_lstm', cross_entropy.TokenCrossEntropy, predictions.Classes),
    ('dates_lm_lstm', stateful_lm.StatefulLM, type(None)),  # train.stateful
    ('dates_vae', vae.ELBO, type(None)),  # model.kind='vae'
])
def test_the_registry_derives_each_objective_from_the_model_and_task(name, objective_type,
                                                                     predictor_type):
  parts, _, _ = _parts(_runlocal(name))
  assert type(parts.objective) is objective_type
  assert type(parts.objective.predictor) is predictor_type
