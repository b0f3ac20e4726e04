"""Every model family × kind trains through the one trainer and reports its kind's metrics."""

import datetime
import functools
import glob
import importlib
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from seqeval import metrics as seqeval_metrics

from lmjax.config import configlib
from lmjax import metrics as metrics_lib
from lmjax import models
from lmjax.train import reporting
from lmjax.data import lm_stream
from lmjax.data import pipeline
from lmjax.data import synthetic_tasks
from lmjax.data import tasks
from lmjax.train import checkpoint as ckpt_lib
from lmjax.objectives import cross_entropy
from lmjax.objectives import predictions
from lmjax.objectives import registry
from lmjax.train import loop
from tests import scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(name: str, steps: int = 6, **train):
  """configs/<name>.py:runlocal, shrunk further: `steps` steps, one eval at the end."""
  config = importlib.import_module(f'configs.{name}').get_config('runlocal')
  config.task.num_train, config.task.num_eval = 400, 40
  config.train.num_train_steps = steps
  config.train.log_every = 1
  config.train.eval_every = steps
  config.train.checkpoint_every = steps
  config.train.async_checkpointing = False
  config.optimizer.warmup_steps = 0
  config.optimizer.learning_rate = 1e-2
  config.eval.batch_size = 16
  config.eval.num_samples = 2
  for k, v in train.items():
    config.train[k] = v
  return config


def train_losses(workdir):
  return [r['loss'] for r in reporting.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          if r['split'] == 'train']


# The stateful LSTM LM and the BiLSTM-CRF tagger train in test_resume_equals_uninterrupted.
CASES = {
    # name: (config, overrides of config.model, overrides of config.train, expected eval metrics)
    'lstm_encdec': ('dates_lstm', {}, {}, ('exact_match', 'bleu', 'chrf', 'perplexity')),
    'lstm_lm': ('dates_lm_lstm', {}, {'stateful': False},
                ('perplexity', 'accuracy', 'nll_in_context')),
    'lstm_classify': ('dates_classify_lstm', {}, {}, ('accuracy', 'macro_f1')),
    'lstm_tag': ('dates_tag_lstm', {'use_crf': False}, {}, ('accuracy', 'entity_f1', 'perplexity')),
    'transformer_classify': ('dates_classify_transformer', {}, {}, ('accuracy', 'macro_f1')),
    'transformer_tag': ('dates_tag_transformer', {}, {}, ('accuracy', 'entity_f1')),
    'transformer_decoder': ('dates_lm_lstm', None, {'stateful': False},
                            ('perplexity', 'nll_in_context')),
}


def transformer_decoder_model():
  from configs import default  # pylint: disable=g-import-not-at-top
  model = default.get_config('runlocal').model
  model.kind = 'decoder'
  return model


@pytest.mark.parametrize('case', sorted(CASES))
def test_kind_trains_and_reports_its_metrics(tmp_path, case):
  name, model_overrides, train_overrides, expected = CASES[case]
  config = tiny(name, **train_overrides)
  if model_overrides is None:
    config.model = transformer_decoder_model()
    config.task.max_target_length = 12
  else:
    for k, v in model_overrides.items():
      config.model[k] = v
  metrics = loop.train_and_evaluate(config, str(tmp_path))
  losses = train_losses(str(tmp_path))
  assert losses[-1] < losses[0], losses
  for k in expected:
    assert k in metrics and np.isfinite(metrics[k]), (k, metrics)
  assert metrics[config.train.best_metric] is not None


def test_position_nll_matches_a_numpy_reference():
  config = tiny('dates_lm_lstm', stateful=False)
  config.model = transformer_decoder_model()
  config.task.max_target_length = 12
  task = tasks.build_task(config.task, None)
  model = models.build_model(config.model, **task.model_sizes())
  batch = {k: jnp.asarray(v) for k, v in
           pipeline.pad_batch(task.eval_examples[:5], task.lengths, 6).items()}
  params = model.init(jax.random.key(0), batch, train=False)['params']
  objective = cross_entropy.TokenCrossEntropy(model, 'targets', in_context=True)
  sums, counts = jax.jit(functools.partial(cross_entropy.position_nll, objective))(params, batch)
  logits = np.asarray(model.apply({'params': params}, batch, train=False), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))  # (B, T, V)
  targets = np.asarray(batch['targets'])
  want = np.zeros(targets.shape[1])
  for b, t in zip(*np.nonzero(targets)):
    want[t] -= logp[b, t, targets[b, t]]
  np.testing.assert_allclose(np.asarray(sums), want, rtol=1e-4)
  np.testing.assert_array_equal(np.asarray(counts), (targets > 0).sum(0))
  assert counts[0] == 5 and counts[-1] < 5  # rows differ in length; row 6 is padding


def _crf_tagger():
  """The CRF tagger of configs/dates_tag_lstm.py, its objective, and a batch of 3 sentences
  plus one empty row."""
  config = tiny('dates_tag_lstm')
  task = tasks.build_task(config.task, None)
  model = models.build_model(config.model, **task.model_sizes())
  batch = {k: jnp.asarray(v) for k, v in
           pipeline.pad_batch(task.train_examples[:3], task.lengths, 4).items()}
  return model, registry.build(config, task, model), batch


def test_crf_loss_is_mean_sentence_nll():
  model, objective, batch = _crf_tagger()

  @jax.jit
  def run(batch):
    params = model.init(jax.random.key(0), batch, train=False)['params']
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), params)
    _, sums, _ = objective.loss_and_metrics(params, batch, train=False)
    return sums, model.apply({'params': params}, batch, train=False, method='crf_nll')[1]

  sums, nll = run(batch)  # nll: (4,), row 3 is empty
  assert float(sums['loss_weight']) == 3.0
  np.testing.assert_allclose(float(sums['loss']) / 3.0, float(jnp.mean(nll[:3])), rtol=1e-5)
  summary = objective.summarize(jax.device_get(sums))
  np.testing.assert_allclose(summary['loss'], float(jnp.mean(nll[:3])), rtol=1e-5)
  assert 'perplexity' not in summary and 'nll_per_token' in summary


def _dot_ops(fn, *args) -> int:
  """dot_general equations in the jaxpr of fn(*args), nested jaxprs (scans, remat) included."""
  def count(jaxpr):
    n = 0
    for eqn in jaxpr.eqns:
      n += eqn.primitive.name == 'dot_general'
      for sub in jax.core.jaxprs_in_params(eqn.params):
        n += count(sub)
    return n
  return count(jax.make_jaxpr(fn)(*args).jaxpr)


def test_crf_loss_runs_the_model_once():
  """The emissions' accuracy and the CRF NLL come from one forward pass: the loss has the
  matmuls of one `model.apply`, in training (dropout on) and in evaluation."""
  model, objective, batch = _crf_tagger()
  params = model.init(jax.random.key(0), batch, train=False)['params']
  rngs = {'dropout': jax.random.key(1)}
  for train in (True, False):
    forward = _dot_ops(lambda p: model.apply({'params': p}, batch, train=train, rngs=rngs), params)
    loss = _dot_ops(lambda p: objective.loss_and_metrics(p, batch, train=train, rngs=rngs)[0],
                    params)
    assert forward > 0 and loss == forward, (train, loss, forward)


def test_entity_f1_matches_seqeval():
  gold = [['B-DAY', 'I-DAY', 'O', 'B-MONTH', 'B-YEAR', 'I-YEAR'], ['B-MONTH', 'O', 'B-DAY']]
  pred = [['B-DAY', 'O', 'B-YEAR', 'B-MONTH', 'B-YEAR', 'I-YEAR'], ['B-MONTH', 'B-DAY', 'I-DAY']]
  scores = metrics_lib.entity_f1(gold, pred)
  assert scores['f1'] == pytest.approx(100 * seqeval_metrics.f1_score(gold, pred))
  # MONTH, YEAR (sentence 1) and MONTH (sentence 2) match: 3 of 6 predicted, 3 of 5 gold.
  assert scores['precision'] == pytest.approx(100 * 3 / 6)
  assert scores['recall'] == pytest.approx(100 * 3 / 5)
  assert scores['f1'] == pytest.approx(100 * 2 * 0.5 * 0.6 / 1.1)


def test_tagger_entity_f1_is_seqeval_of_viterbi_tags(tmp_path):
  config = tiny('dates_tag_lstm', steps=2)
  trainer = loop.Trainer(config, str(tmp_path))
  ev = trainer.evaluator
  preds = ev.predict(trainer.state.params, trainer.task.eval_examples)
  names = trainer.task.label_names
  gold = [[names[t] for t in ex['tags']] for ex in trainer.task.eval_examples]
  pred = [[names[t] for t in p[:len(g)]] for p, g in zip(preds, gold)]
  assert all(t != '<pad>' for row in pred for t in row)
  got = ev.predictor.score(preds)
  assert got['entity_f1'] == pytest.approx(100 * seqeval_metrics.f1_score(gold, pred))
  trainer.checkpointer.close()


def test_tag_metrics_count_words_past_the_length_limit_as_missed():
  # Perfect tags for the first 4 words of a 6-word sentence cut to 4: the gold entity at
  # words 5-6 is missed (recall 1/2), the other is found, as the official scorers count.
  names = ['<pad>', 'O', 'B-X', 'I-X']
  task = types.SimpleNamespace(label_names=names,
                               eval_references=['B-X O O O B-X I-X', 'O B-X'],
                               eval_examples=[{'tags': np.array([2, 1, 1, 1])},
                                              {'tags': np.array([1, 2])}])
  preds = [np.array([2, 1, 1, 1]), np.array([1, 2, 0, 0])]  # second row padded to 4
  got = predictions.Tags(task, types.SimpleNamespace(predict_labels=print)).score(preds)
  assert got['entity_precision'] == pytest.approx(100.0)
  assert got['entity_recall'] == pytest.approx(100 * 2 / 3)
  assert got['accuracy'] == pytest.approx(100 * 6 / 8)  # the two cut words were not tagged


def test_synthetic_tags_describe_the_source():
  task = tasks.build_task(tiny('dates_tag_lstm').task, None)
  for src, ref in zip(task.eval_sources, task.eval_references):
    assert len(src.split()) == len(ref.split())
  tagged = synthetic_tasks.tagged_source(datetime.date(1994, 3, 23), 0, 0)
  assert tagged == [('twenty', 'B-DAY'), ('third', 'I-DAY'), ('of', 'O'), ('march', 'B-MONTH'),
                    ('nineteen', 'B-YEAR'), ('ninety', 'I-YEAR'), ('four', 'I-YEAR')]
  train = {tuple(ex['inputs']) for ex in task.train_examples}
  assert not any(tuple(ex['inputs']) in train for ex in task.eval_examples)


def test_lm_stream_rows_are_consecutive_and_resumable():
  stream = np.arange(1, 200, dtype=np.int32)
  it = lm_stream.LMStreamIterator(stream, 4, 5, seed=0)
  b0, b1 = next(it), next(it)
  np.testing.assert_array_equal(b1['targets'][:, 0], b0['targets'][:, -1] + 1)
  assert b0['reset'].tolist() == [1] * 4 and b1['reset'].tolist() == [0] * 4
  state = it.get_state()
  rest = [next(it) for _ in range(20)]  # crosses an epoch boundary
  assert any(b['reset'][0] for b in rest)
  again = lm_stream.LMStreamIterator(stream, 4, 5, seed=0)
  again.set_state(state)
  for b in rest:
    np.testing.assert_array_equal(next(again)['targets'], b['targets'])
  tokens = np.concatenate([b['targets'][b['targets'] > 0] for b in
                           lm_stream.eval_stream_batches(stream, 8, 7)])
  assert sorted(tokens.tolist()) == stream.tolist()  # every eval token scored once


def checkpointed_state(workdir):
  """The whole TrainState of the latest checkpoint, as host arrays."""
  step = ckpt_lib.complete_steps(workdir)[-1]
  return ckpt_lib.read_state(os.path.join(workdir, 'checkpoints', 'last', str(step)))


@pytest.mark.parametrize('name,expected', [
    ('dates_lm_lstm', ('perplexity', 'accuracy')),  # stateful truncated BPTT
    ('dates_tag_lstm', ('accuracy', 'entity_f1', 'nll_per_token')),  # BiLSTM-CRF
])
def test_resume_equals_uninterrupted(tmp_path, name, expected):
  config = tiny(name, steps=6)
  config.train.checkpoint_every = 3
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  metrics = loop.train_and_evaluate(config, straight)
  losses = train_losses(straight)
  assert losses[-1] < losses[0], losses
  for k in expected:
    assert k in metrics and np.isfinite(metrics[k]), (k, metrics)
  assert 'nll_in_context' not in metrics  # a stateful window's first token has context
  loop.train_and_evaluate(config, resumed, stop_after_steps=3)
  loop.train_and_evaluate(config, resumed)
  a, b = checkpointed_state(straight), checkpointed_state(resumed)
  if config.train.stateful:  # the carried LSTM state is checkpointed (and nonzero)
    assert np.abs(a['carry']['h']).sum() > 0
    assert a['carry']['token'].shape == (config.train.batch_size,)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  hist = lambda d: [(r['step'], r['split'], r.get('loss'), r.get('entity_f1'))
                    for r in reporting.read_jsonl(os.path.join(d, 'metrics.jsonl'))]
  assert hist(straight) == hist(resumed)


def _kind(model) -> str:
  if model.kind == 'encoder':
    return model.head
  return {'encdec': 'seq2seq', 'decoder': 'lm', 'vae': 'lm'}[model.kind]


def _dummy_batch(kind, length=8, rows=2, word_chars=0):
  x = jnp.ones((rows, length), jnp.int32)
  chars = {'chars': jnp.ones((rows, length, word_chars), jnp.int32)} if word_chars else {}
  return {'seq2seq': {'inputs': x, 'targets': x}, 'lm': {'targets': x},
          'classify': {'inputs': x, 'label': jnp.zeros((rows,), jnp.int32), **chars},
          'tag': {'inputs': x, 'tags': x, **chars}, 'mlm': {'inputs': x, 'targets': x}}[kind]


# configs/finetune.py takes a workdir, not 'runlocal' (tests/hf_workdir_test.py runs it).
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
                 if not os.path.basename(p).startswith('_') and 'get_config' in open(p).read()
                 and os.path.basename(p) != 'finetune.py')


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds(name):
  config = configlib.load_config_file(os.path.join(REPO, 'configs', f'{name}.py') + ':runlocal')
  configlib.validate(config)
  model = models.build_model(config.model, vocab_size=50, target_vocab_size=50, num_classes=5)
  kind = _kind(config.model)
  task = types.SimpleNamespace(kind=kind, name=config.task.name, lengths={'targets': 8},
                               decode_metrics='rouge', label_names=['<pad>', 'O'], batching=None)
  names = registry.build(config, task, model).metric_names()
  assert config.train.best_metric in names, (config.train.best_metric, names)
  batch = _dummy_batch(kind, word_chars=config.task.get('word_chars', 0))
  jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  assert isinstance(config.train.stateful, bool)


@pytest.mark.parametrize('extra', [[], ['--config.train.ema_decay=0.9']])
def test_stateful_lm_trains_on_one_device_through_the_cli(tmp_path, extra):
  """The suite simulates 8 devices; a single device once hit a donated-twice carry buffer.

  With a moving average the state holds two copies of the initial params (also donated).
  """
  import os, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [sys.executable, os.path.join(repo, 'experiments', 'train.py'),
         '--config=' + os.path.join(repo, 'configs', 'dates_lm_lstm.py') + ':runlocal',
         f'--workdir={tmp_path}', '--config.train.num_train_steps=6', '--config.train.log_every=2',
         '--config.train.eval_every=6', '--config.train.checkpoint_every=6'] + extra
  env = dict(os.environ, PYTHONPATH=repo, XLA_FLAGS='')
  proc = scripts.run(cmd, cwd=repo, env=env, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / 'checkpoints' / 'last' / '6').is_dir()
