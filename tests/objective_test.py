"""A new objective lives in one file: this test defines a focal loss, registers it, and
trains a tiny config with it through experiments/train.py, touching nothing in lmjax/.

    --config.train.objective=tests.objective_test:focal

imports this module in the training process (which registers 'focal' below) and trains
with it; every other part of the run (data, evaluator, predictor, checkpoints) is the
registry's as for the built-in objectives.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.config import configlib
from lmjax.data import tasks
from lmjax import models
from lmjax.objectives import cross_entropy
from lmjax.objectives import predictions
from lmjax.objectives import registry
from lmjax.train import reporting
from tests import scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAMMA = 2.0


class FocalLoss(cross_entropy.TokenCrossEntropy):
  """Focal loss (Lin et al., 2017): Σ −(1 − p_t)^γ log p_t over the labels, γ = 2.

  Everything but the loss (label weights, forward pass, metric sums, eval) is the token
  cross-entropy's.
  """

  def loss_and_metrics(self, params, batch, args=(), *, train, rngs=None, step=0, carry=None):
    logits, carry = self.forward(params, batch, train=train, rngs=rngs, carry=carry)
    sums = self.logit_sums(logits, batch, train)
    labels = batch[self.label_field]
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)),
                                labels[..., None], axis=-1)[..., 0]
    focal = -((1.0 - jnp.exp(log_p)) ** GAMMA) * log_p
    sums['loss'] = jnp.sum(focal * self.label_weights(batch))
    return sums['loss'], sums, carry


@registry.register('focal')
def focal(config, task, model):
  """The registry's factory: the labels and row weighting of the task's kind."""
  del config
  return FocalLoss(model, registry.LABEL_FIELDS[task.kind], per_row=task.kind == 'classify')


class Logits:  # a "model" whose logits are its parameters
  def apply(self, variables, inputs, **kwargs):
    del inputs, kwargs
    return variables['params']


def test_focal_loss_equals_numpy_and_down_weights_easy_labels():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 5, 7)).astype(np.float32) * 3
  labels = rng.integers(0, 7, size=(4, 5)).astype(np.int32)  # 0 = padding
  loss, sums, _ = FocalLoss(Logits()).loss_and_metrics(jnp.asarray(logits),
                                                       {'targets': jnp.asarray(labels)},
                                                       train=True)
  x = logits.astype(np.float64)
  log_p = x - x.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  log_pt = np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
  want = np.sum((labels > 0) * -((1 - np.exp(log_pt)) ** GAMMA) * log_pt)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert float(loss) < float(sums['nll'])  # (1 − p)^γ < 1: below the cross-entropy


def test_registry_resolves_an_objective_defined_outside_lmjax():
  config = configlib.load_config_file(
      os.path.join(REPO, 'configs', 'dates_classify_lstm.py') + ':runlocal')
  config.train.objective = 'tests.objective_test:focal'
  task = tasks.build_task(config.task, None)
  objective = registry.build(config, task, models.build_model(config.model, **task.model_sizes()))
  # (pytest may import this file under another module name than the registry did)
  assert type(objective).__qualname__ == 'FocalLoss' and objective.label_field == 'label'
  assert isinstance(objective.predictor, predictions.Classes)  # the task's predictor
  assert 'macro_f1' in objective.metric_names()
  for bad in ('nope', 'tests.no_such_module:focal'):
    config.train.objective = bad
    with pytest.raises(ValueError, match=r'config\.train\.objective='):
      registry.build(config, task, objective.model)


def test_trains_through_the_train_script(tmp_path):
  workdir = str(tmp_path / 'focal')
  cmd = [sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
         '--config=' + os.path.join(REPO, 'configs', 'default.py') + ':runlocal',
         f'--workdir={workdir}', '--config.train.objective=tests.objective_test:focal',
         '--config.train.num_train_steps=40', '--config.train.log_every=10',
         '--config.train.eval_every=40', '--config.train.checkpoint_every=40',
         '--config.eval.num_samples=0']
  done = scripts.run(cmd, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, timeout=300)
  assert done.returncode == 0, done.stderr.decode()[-3000:]
  train = [r for r in reporting.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
           if r['split'] == 'train']
  assert train[-1]['loss'] < 0.7 * train[0]['loss'], [r['loss'] for r in train]
  # The logged loss is the focal loss: below the cross-entropy (nll) of the same tokens.
  assert all(r['loss'] < r['nll'] for r in train)
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['step'] == 40 and 'exact_match' in summary  # the seq2seq predictor's
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['train']['objective'] == 'tests.objective_test:focal'
