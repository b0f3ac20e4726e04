"""lmjax.tools.ensemble / evaluate.py --ensemble: classifiers and taggers predicting together.

The ensemble's predictions are checked against references written here in numpy (an
exhaustive search over tag paths, a numpy Viterbi, averaged log-softmax), and the
workdir plumbing against errors a user can make.
"""

import json
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.tools import ensemble
from lmjax.tools import workdir_tools
from lmjax.data import pipeline
from lmjax.models import build_model
from lmjax.objectives import crf as crf_objective
from lmjax.objectives import cross_entropy
from lmjax.train import loop
from tests.outside_bias_test import (C, V, _cfg, crf_batch, crf_model, exhaustive_best,
                                     init_params, tagger)


def _mean_scores(model, members, inputs):
  """The members' mean emissions (B, S, C) and [transitions, start, end] (numpy float64)."""
  emissions = np.mean([np.asarray(model.apply({'params': p}, inputs, train=False), np.float64)
                       for p in members], 0)
  tables = [np.mean([np.asarray(p['crf'][k], np.float64) for p in members], 0)
            for k in ('transitions', 'start', 'end')]
  return emissions, tables


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_crf_ensemble_is_the_exhaustive_best_of_the_mean_scores():
  model = crf_model()
  inputs, batch = crf_batch()
  members = [init_params(model, batch, seed, crf_scale=2.0) for seed in (0, 1, 2)]
  objective = crf_objective.CRFNegLogLikelihood(model)
  emissions, tables = _mean_scores(model, members, batch)
  for bias in (0.0, -2.0):
    score_bias = np.asarray([0.0, bias, 0.0, 0.0], np.float32)
    got = np.asarray(ensemble.predict_step(members, batch, objective=objective,
                                           score_bias=jnp.asarray(score_bias)))
    for row in range(inputs.shape[0]):
      n = int((inputs[row] > 0).sum())
      assert list(got[row, :n]) == exhaustive_best(emissions[row, :n] + score_bias, *tables)
      assert np.all(got[row, n:] == 0)
  # One member is the single model.
  one = ensemble.predict_step(members[:1], batch, objective=objective)
  np.testing.assert_array_equal(one, objective.predict_labels(members[0], batch))


@pytest.mark.parametrize('head', ['tag', 'classify'])
def test_argmax_ensemble_averages_log_probabilities(head):
  model = build_model(dict(_cfg(use_crf=False), head=head), vocab_size=V, num_classes=C)
  rng = np.random.default_rng(3)
  inputs = rng.integers(1, V, (6, 5))
  inputs[1, 3:] = 0
  batch = {'inputs': jnp.asarray(inputs, jnp.int32)}
  members = [init_params(model, batch, seed) for seed in (4, 5)]
  # Scaled logits: averaging raw logits would let the sharper member decide alone.
  members[1] = jax.tree.map(lambda x: x * 3.0, members[1])
  logp = np.mean([_log_softmax(np.asarray(model.apply({'params': p}, batch, train=False),
                                          np.float64)) for p in members], 0)
  objective = cross_entropy.TokenCrossEntropy(model, 'label' if head == 'classify' else 'tags')
  got = np.asarray(ensemble.predict_step(members, batch, objective=objective))
  if head == 'classify':
    np.testing.assert_array_equal(got, np.argmax(logp, -1))
  else:
    np.testing.assert_array_equal(got, np.where(inputs > 0, 1 + np.argmax(logp[..., 1:], -1), 0))


def _numpy_viterbi(emissions, transitions, start, end):
  """Best tags 1..C-1 of one unpadded row (numpy dynamic programme)."""
  em = emissions[:, 1:]
  tr, st, en = transitions[1:, 1:], start[1:], end[1:]
  delta, back = st + em[0], []
  for t in range(1, len(em)):
    cand = delta[:, None] + tr  # (prev, next)
    back.append(cand.argmax(0))
    delta = cand.max(0) + em[t]
  tags = [int((delta + en).argmax())]
  for ptr in reversed(back):
    tags.append(int(ptr[tags[-1]]))
  return [t + 1 for t in reversed(tags)]


def _workdir(path, seed, **model_overrides):
  config = tagger(use_crf=True)
  config.seed = seed
  for k, v in model_overrides.items():
    setattr(config.model, k, v)
  workdir = str(path)
  trainer = loop.Trainer(config, workdir)  # step-0 parameters: every seed predicts differently
  loop.save_config(config, workdir, 0)
  trainer.checkpoint()
  trainer.checkpointer.wait()
  trainer.checkpointer.close()
  return workdir, trainer


def test_evaluate_ensemble_of_workdirs_and_errors(tmp_path):
  a, trainer_a = _workdir(tmp_path / 'a', seed=0)
  b, trainer_b = _workdir(tmp_path / 'b', seed=1)
  task, model = trainer_a.task, trainer_a.model
  # Reference: mean emissions and CRF tables of the two trainers' parameters, numpy Viterbi.
  examples = task.eval_examples
  batch = pipeline.pad_batch(examples, task.lengths, len(examples))
  inputs = {k: v for k, v in batch.items() if k != 'reset'}
  params = [jax.device_get(t.state.params) for t in (trainer_a, trainer_b)]
  emissions, tables = _mean_scores(model, params, inputs)
  want = []
  for row, ex in enumerate(examples):
    n = int((np.asarray(batch['inputs'][row]) > 0).sum())
    want.append(np.asarray(_numpy_viterbi(emissions[row, :n], *tables)))
  expected = trainer_a.objective.predictor.score(want, with_accuracy=True)

  report = workdir_tools.evaluate_workdir(a, ensemble=[b])
  assert report['metrics'] == pytest.approx(expected)
  assert [m['workdir'] for m in report['ensemble']] == [os.path.abspath(a), os.path.abspath(b)]
  assert report['output'].endswith('eval_last-0_eval_ensemble2.json')
  with open(report['output'], encoding='utf-8') as f:
    assert json.load(f)['metrics'] == report['metrics']
  assert 'ensemble of 2' in workdir_tools.format_report(report)
  # A run ensembled with itself predicts as the run alone.
  single = workdir_tools.evaluate_workdir(a)
  self_pair = workdir_tools.evaluate_workdir(a, ensemble=[a], output=str(tmp_path / 'self.json'))
  assert set(self_pair['metrics']) == {'accuracy', 'entity_precision', 'entity_recall',
                                       'entity_f1'}
  assert self_pair['metrics'] == pytest.approx({k: single['metrics'][k]
                                                for k in self_pair['metrics']})

  # Errors name the member and what differs; nothing is written for them.
  wide, _ = _workdir(tmp_path / 'wide', seed=2, hidden_dim=trainer_a.config.model.hidden_dim + 4)
  with pytest.raises(workdir_tools.ToolError, match=r'--ensemble member .*wide: config.model '
                     r'differs .*hidden_dim'):
    workdir_tools.evaluate_workdir(a, ensemble=[wide], output=str(tmp_path / 'no1.json'))
  other_vocab = str(tmp_path / 'other_vocab')
  shutil.copytree(b, other_vocab)
  name = sorted(os.listdir(os.path.join(other_vocab, 'tokenizers')))[0]
  with open(os.path.join(other_vocab, 'tokenizers', name), 'a', encoding='utf-8') as f:
    f.write('\n')
  with pytest.raises(workdir_tools.ToolError, match=r'other_vocab: its tokenizers/ differ'):
    workdir_tools.evaluate_workdir(a, ensemble=[other_vocab], output=str(tmp_path / 'no2.json'))
  with pytest.raises(workdir_tools.ToolError, match=r'--beam_size=4: --ensemble'):
    workdir_tools.evaluate_workdir(a, ensemble=[b], beam_size=4, output=str(tmp_path / 'no3.json'))
  assert not any(os.path.exists(tmp_path / f'no{i}.json') for i in (1, 2, 3))


def test_check_member_rejects_generation_runs():
  run = types.SimpleNamespace(task=types.SimpleNamespace(kind='seq2seq'), workdir='w0')
  with pytest.raises(workdir_tools.ToolError, match=r"only classify and tag runs .* 'seq2seq'"):
    ensemble.check_member(run, run)
