"""config.eval.outside_bias / evaluate.py --outside_bias: a tagger's precision/recall knob.

The bias is added to the outside tag's score before Viterbi (CRF) or argmax decoding;
these tests check that decoding stays exact under the bias (against an exhaustive search),
that it moves predictions the way it should, and that bad values get clear errors.
"""

import importlib
import itertools
import json
import os

import flax
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.tools import workdir_tools
from lmjax.models import build_model
from lmjax.train import evaluation
from lmjax.train import loop
from lmjax.objectives import cross_entropy
from lmjax.objectives import predictions
from lmjax.objectives import registry

C, V = 4, 11  # tags (0 = padding, 1 = 'O'), vocabulary


def _cfg(use_crf):
  return dict(family='lstm', kind='encoder', emb_dim=6, hidden_dim=8, num_layers=1,
              num_decoder_layers=1, dropout_rate=0.0, bidirectional=True, attention='none',
              input_feeding=False, tie_output=False, share_embeddings=False, pooling='last',
              use_crf=use_crf, head='tag')


def crf_model():
  return build_model(_cfg(use_crf=True), vocab_size=V, num_classes=C)


def exhaustive_best(emissions, transitions, start, end):
  """Highest-scoring tags 1..C-1 for one unpadded row, by trying every sequence (numpy)."""
  best, best_tags = -np.inf, None
  for tags in itertools.product(range(1, emissions.shape[-1]), repeat=emissions.shape[0]):
    score = start[tags[0]] + end[tags[-1]] + sum(emissions[t, y] for t, y in enumerate(tags))
    score += sum(transitions[a, b] for a, b in zip(tags[:-1], tags[1:]))
    if score > best:
      best, best_tags = score, tags
  return list(best_tags)


def crf_batch():
  """Random word ids (3, 5) with a shorter row 1, and the batch holding them."""
  inputs = np.random.default_rng(0).integers(1, V, (3, 5))
  inputs[1, 3:] = 0
  return inputs, {'inputs': jnp.asarray(inputs, jnp.int32)}


def init_params(model, batch, seed, crf_scale=0.0):
  """Mutable parameters of `model`; crf_scale > 0: random N(0, crf_scale) CRF tables, so
  that transitions matter (init gives zeros)."""
  params = flax.core.unfreeze(nn.meta.unbox(model.init(jax.random.key(seed), batch,
                                                      train=False)['params']))
  if crf_scale:
    rng = np.random.default_rng(seed)
    for name in ('transitions', 'start', 'end'):
      shape = np.shape(params['crf'][name])
      params['crf'][name] = jnp.asarray(rng.normal(0, crf_scale, shape), jnp.float32)
  return params


def test_biased_viterbi_is_the_exhaustive_best_of_the_biased_scores():
  model = crf_model()
  inputs, batch = crf_batch()
  params = init_params(model, batch, 0, crf_scale=2.0)
  crf = params['crf']
  decode = jax.jit(lambda b: model.apply({'params': params}, batch, b, method='crf_decode'))
  emissions = np.asarray(model.apply({'params': params}, batch, train=False), np.float64)
  tables = [np.asarray(crf[k], np.float64) for k in ('transitions', 'start', 'end')]
  for bias in (-3.0, 0.0, 2.5):
    score_bias = np.asarray([0.0, bias, 0.0, 0.0])
    got = np.asarray(decode(jnp.asarray(score_bias, jnp.float32)))
    for row in range(inputs.shape[0]):
      n = int((inputs[row] > 0).sum())
      want = exhaustive_best(emissions[row, :n] + score_bias, *tables)
      assert list(got[row, :n]) == want, (row, bias)
      assert np.all(got[row, n:] == 0)


def test_biased_argmax_tagger_matches_numpy():
  model = build_model(_cfg(use_crf=False), vocab_size=V, num_classes=C)
  rng = np.random.default_rng(1)
  inputs = rng.integers(1, V, (4, 6))
  inputs[2, 2:] = 0
  batch = {'inputs': jnp.asarray(inputs, jnp.int32)}
  params = nn.meta.unbox(model.init(jax.random.key(1), batch, train=False)['params'])
  logits = np.asarray(model.apply({'params': params}, batch, train=False))  # (B, S, C)
  for bias in (0.0, -0.3, 0.4):
    score_bias = np.asarray([0.0, bias, 0.0, 0.0], np.float32)
    got = np.asarray(cross_entropy.TokenCrossEntropy(model, 'tags').predict_labels(
        params, batch, score_bias=None if bias == 0 else score_bias))
    want = np.where(inputs > 0, 1 + np.argmax((logits + score_bias)[..., 1:], -1), 0)
    np.testing.assert_array_equal(got, want)


def tagger(use_crf, steps=3):
  """A briefly trained tagger on the synthetic date-tagging task."""
  config = importlib.import_module('configs.dates_tag_lstm').get_config('runlocal')
  config.task.num_train, config.task.num_eval = 200, 40
  config.model.use_crf = use_crf
  config.optimizer.warmup_steps = 0
  config.train.num_train_steps = config.train.eval_every = config.train.checkpoint_every = steps
  config.train.async_checkpointing = False
  config.eval.batch_size = 16
  config.eval.num_samples = 0
  return config


def test_outside_bias_vector_and_errors():
  class Task:  # pylint: disable=too-few-public-methods
    def __init__(self, kind, names):
      self.kind, self.label_names = kind, names
  tag = Task('tag', ['<pad>', 'B-X', 'I-X', 'O'])
  assert predictions.outside_bias(tag, 0.0) is None
  np.testing.assert_array_equal(predictions.outside_bias(tag, -1.5), [0, 0, 0, -1.5])
  with pytest.raises(ValueError, match=r"config.eval.outside_bias=-1.0: only a tag task .*'O'"):
    predictions.outside_bias(Task('classify', ['neg', 'pos']), -1.0)
  with pytest.raises(ValueError, match=r"--outside_bias=2.0: only a tag task"):
    predictions.outside_bias(Task('tag', ['<pad>', 'B-X', 'I-X']), 2.0, '--outside_bias')
  for bad in (float('nan'), 'low', True):
    with pytest.raises(ValueError, match='expected a finite number'):
      predictions.outside_bias(tag, bad)


def test_bias_moves_outside_tags_and_evaluate_reports_it(tmp_path):
  config = tagger(use_crf=True)
  workdir = str(tmp_path / 'run')
  trainer = loop.Trainer(config, workdir)  # step-0 parameters are enough here
  loop.save_config(config, workdir, 0)
  trainer.checkpoint()
  trainer.checkpointer.wait()
  trainer.checkpointer.close()
  # Lowering the bias only ever turns 'O' tags into entity tags.
  outside = trainer.task.label_names.index('O')
  counts = []
  for bias in (50.0, 1.0, 0.0, -1.0, -50.0):
    config.eval.outside_bias = bias
    ev = evaluation.Evaluator(trainer.task, registry.build(config, trainer.task, trainer.model),
                              config, trainer.mesh, trainer.batch_sharding,
                              trainer.shardings.params)
    preds = ev.predict(trainer.state.params, trainer.task.eval_examples)
    counts.append(sum(int((p[:len(ex['tags'])] == outside).sum())
                      for p, ex in zip(preds, trainer.task.eval_examples)))
  total = sum(len(ex['tags']) for ex in trainer.task.eval_examples)
  assert counts[0] == total and counts[-1] == 0, counts
  assert counts == sorted(counts, reverse=True), counts
  plain = workdir_tools.evaluate_workdir(workdir)
  high = workdir_tools.evaluate_workdir(workdir, outside_bias=50.0)
  assert 'outside_bias' not in plain and high['outside_bias'] == 50.0
  assert high['output'] != plain['output'] and high['output'].endswith('_outside50.json')
  assert os.path.isfile(plain['output'])
  with open(high['output'], encoding='utf-8') as f:
    assert json.load(f)['metrics'] == high['metrics']
  # Everything tagged 'O': no entity is predicted, so none is found.
  assert plain['metrics']['entity_recall'] > 0 == high['metrics']['entity_recall']
  with pytest.raises(workdir_tools.ToolError, match='--outside_bias=nan'):
    workdir_tools.evaluate_workdir(workdir, outside_bias=float('nan'))
