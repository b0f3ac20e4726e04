"""End-to-end trainer behaviour: learning, exact resume, 8-device equivalence, bad input."""

import functools
import hashlib
import signal
import time
import os
import sys

import jax
import numpy as np
import pytest

from configs import default
from lmjax.config import configlib
from lmjax import models
from lmjax import parallel
from lmjax.train import reporting
from lmjax.data import tasks
from lmjax.tools import averaging
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import loop
from lmjax import optim
from lmjax.train import state as state_lib
from lmjax.objectives import cross_entropy
from lmjax.train import step as step_lib
from tests import scripts


def smoothed_ce(model):
  """The token cross-entropy of batch['targets'] with label smoothing 0.1."""
  return cross_entropy.TokenCrossEntropy(model, 'targets', 0.1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LSTM_MODEL = dict(family='lstm', kind='encdec', emb_dim=32, hidden_dim=32, num_layers=1,
                  num_decoder_layers=1, dropout_rate=0.1, bidirectional=True, attention='luong_general',
                  input_feeding=True, tie_output=False, share_embeddings=True, pooling='last',
                  use_crf=False, head='')


def tiny_config(family='transformer', steps=8):
  config = default.get_config('runlocal')
  config.train.num_train_steps = steps
  config.train.log_every = 2
  config.train.eval_every = steps
  config.train.checkpoint_every = 4
  config.train.async_checkpointing = False
  config.eval.num_samples = 0
  if family == 'lstm':
    config.model = LSTM_MODEL
  return config


def params_of(workdir):
  params, _ = ckpt_lib.load_params(workdir)
  return params


def assert_trees_equal(a, b):
  flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b)
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_loss_decreases_and_outputs_are_written(tmp_path, monkeypatch):
  config = tiny_config(steps=20)
  config.train.async_checkpointing = True
  monkeypatch.chdir(tmp_path.parent)
  loop.train_and_evaluate(config, tmp_path.name)  # a relative --workdir, as in the README
  train = [r for r in reporting.read_jsonl(str(tmp_path / 'metrics.jsonl')) if r['split'] == 'train']
  assert train[-1]['loss'] < train[0]['loss'] - 0.3
  for name in ('curves.png', 'summary.json', 'config.json', 'tokenizers/vocab.json'):
    assert (tmp_path / name).exists(), name
  assert os.listdir(tmp_path / 'tensorboard')


def train_rows(workdir):
  """The train rows of metrics.jsonl without the timing fields."""
  return [{k: v for k, v in r.items() if k not in ('time', 'tokens_per_sec')}
          for r in reporting.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          if r['split'] == 'train']


# LSTM runs resume the same way (the loop does not know the model); tests/kinds_test.py
# resumes the LSTM tagger (CRF) and the stateful LSTM LM (its carried state).
@pytest.mark.parametrize('family', ['transformer'])
def test_resume_equals_uninterrupted(tmp_path, family):
  """Stopped at step 5, inside a 4-step log window, and resumed by the same command: the
  parameters (and, for the Transformer, the EMA of them) and every logged row (the step-8 row
  averages steps 5-8 both ways) equal an uninterrupted run's."""
  config = tiny_config(family)
  config.train.log_every, config.train.checkpoint_every = 4, 5
  if family == 'transformer':
    config.train.ema_decay = 0.8
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  loop.train_and_evaluate(config, straight)
  loop.train_and_evaluate(config, resumed, stop_after_steps=5)
  assert ckpt_lib.load_params(resumed)[1] == 5
  loop.train_and_evaluate(config, resumed)  # the same command again: resumes at 5
  assert_trees_equal(params_of(straight), params_of(resumed))
  if family == 'transformer':
    ema = lambda d: averaging.read_checkpoint(d, 'last', 8)[0]['ema_params']
    assert_trees_equal(ema(straight), ema(resumed))
  assert [r['step'] for r in train_rows(straight)] == [4, 8]
  assert train_rows(straight) == train_rows(resumed)
  hist = lambda d: [(r['step'], r['split'], r.get('loss')) for r in
                    reporting.read_jsonl(os.path.join(d, 'metrics.jsonl'))]
  assert hist(straight) == hist(resumed)


@pytest.mark.parametrize('family', ['transformer', 'lstm'])
def test_data_parallel_step_matches_single_device(family):
  assert jax.device_count() == 8
  config = tiny_config(family)
  task = tasks.build_task(config.task, None)
  model = models.build_model(config.model, **task.model_sizes())
  tx = optim.make_optimizer(config.optimizer, 10)
  rules = parallel.rules_from_config(config)
  it = task.train_iterator(16, seed=0)
  batches = [next(it) for _ in range(3)]

  def run(devices):
    mesh = parallel.create_mesh(config.mesh, devices)
    state, shardings = state_lib.create_sharded_state(model, tx, batches[0], 0, mesh, rules)
    bsh = parallel.batch_sharding(mesh, rules)
    step = jax.jit(functools.partial(step_lib.train_step, objective=smoothed_ce(model), tx=tx),
                   in_shardings=(shardings, bsh), out_shardings=(shardings, parallel.replicated(mesh)))
    losses = []
    for b in batches:
      state, m = step(state, parallel.to_global(b, bsh))
      losses.append(float(m['loss'] / m['weight']))
    return losses, jax.device_get(state.params), state

  loss1, params1, _ = run(jax.devices()[:1])
  loss8, params8, state8 = run(jax.devices())
  assert len(jax.tree.leaves(state8.params)[0].sharding.device_set) == 8
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(params8), jax.tree.leaves(params1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_default_config_builds_and_runs_one_step(tmp_path):
  config = default.get_config()
  config.train.async_checkpointing = False
  config.eval.num_samples = 1
  config.task.num_eval = 256
  metrics = loop.train_and_evaluate(config, str(tmp_path), stop_after_steps=1)
  assert np.isfinite(metrics['loss'])
  assert ckpt_lib.load_params(str(tmp_path))[1] == 1


def test_indivisible_batch_is_a_clear_error(tmp_path):
  config = tiny_config()
  config.train.batch_size = 12
  with pytest.raises(ValueError, match=r'config.train.batch_size=12 is not divisible by the 8 devices'):
    loop.train_and_evaluate(config, str(tmp_path))


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(ValueError, match='is not writable'):
    loop.train_and_evaluate(tiny_config(), str(blocker / 'run'))


def test_invalid_values_are_listed_together():
  config = tiny_config()
  config.train.label_smoothing = 1.5
  config.model.num_heads = 3
  config.optimizer.warmup_steps = 10_000
  with pytest.raises(configlib.ConfigError) as err:
    configlib.validate(config)
  msg = str(err.value)
  assert 'train.label_smoothing' in msg and 'model.qkv_dim' in msg and 'optimizer.warmup_steps' in msg


def _digest(directory):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(directory)):
    for f in sorted(files):
      h.update(f.encode())
      with open(os.path.join(root, f), 'rb') as fh:
        h.update(fh.read())
  return h.hexdigest()


def _damage_arrays(step_dir):
  for root, _, files in os.walk(step_dir / 'state'):
    for f in files:
      with open(os.path.join(root, f), 'wb') as fh:
        fh.write(b'garbage')


def test_corrupted_checkpoint_is_a_clear_error_and_nothing_is_deleted(tmp_path):
  config = tiny_config()
  config.train.checkpoint_fallback = False
  loop.train_and_evaluate(config, str(tmp_path))
  last = tmp_path / 'checkpoints' / 'last'
  assert sorted(os.listdir(last)) == ['4', '8']
  _damage_arrays(last / '8')  # every array file of the newest checkpoint
  before = {d: _digest(last / d) for d in ('4', '8')}
  with pytest.raises(ValueError, match=r'checkpoints/last/8 is damaged.*Nothing was deleted'):
    loop.train_and_evaluate(config, str(tmp_path))
  assert {d: _digest(last / d) for d in ('4', '8')} == before


def test_fallback_moves_a_damaged_checkpoint_aside_and_resumes_from_the_previous(tmp_path, capsys):
  config = tiny_config()
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(config, straight)
  run = tmp_path / 'run'
  loop.train_and_evaluate(config, str(run), stop_after_steps=8)
  last = run / 'checkpoints' / 'last'
  assert sorted(os.listdir(last)) == ['4', '8']
  _damage_arrays(last / '8')
  damaged = _digest(last / '8')
  config.train.num_train_steps = 8
  loop.train_and_evaluate(config, str(run))  # resumes from 4, trains 5..8 again
  assert 'WARNING: checkpoint 8 could not be restored' in capsys.readouterr().out
  moved = os.listdir(run / 'checkpoints' / 'damaged')
  assert len(moved) == 1 and moved[0].startswith('last-8-')
  assert _digest(run / 'checkpoints' / 'damaged' / moved[0]) == damaged  # kept as it was
  assert_trees_equal(params_of(str(run)), params_of(straight))


def test_fallback_moves_nothing_when_no_checkpoint_restores(tmp_path):
  config = tiny_config()
  loop.train_and_evaluate(config, str(tmp_path))
  last = tmp_path / 'checkpoints' / 'last'
  for d in ('4', '8'):
    _damage_arrays(last / d)
  before = {d: _digest(last / d) for d in ('4', '8')}
  with pytest.raises(ValueError, match=r'checkpoints/last/8 is damaged'):
    loop.train_and_evaluate(config, str(tmp_path))
  assert {d: _digest(last / d) for d in ('4', '8')} == before
  assert not (tmp_path / 'checkpoints' / 'damaged').exists()


def test_keeps_last_k_plus_best(tmp_path):
  config = tiny_config(steps=8)
  config.train.checkpoint_every = 2
  config.train.keep_checkpoints = 2
  config.train.eval_every = 2
  config.train.best_metric, config.train.best_mode = 'loss', 'max'  # the first eval stays best
  loop.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints' / 'last')) == ['6', '8']
  assert os.listdir(tmp_path / 'checkpoints' / 'best') == ['2']


def test_early_stopping(tmp_path):
  config = tiny_config(steps=20)
  config.train.eval_every = 2
  config.train.early_stopping_patience = 2
  config.train.best_metric, config.train.best_mode = 'loss', 'max'  # loss falls: never "improves"
  loop.train_and_evaluate(config, str(tmp_path))
  evals = [r['step'] for r in reporting.read_jsonl(str(tmp_path / 'metrics.jsonl')) if r['split'] == 'eval']
  assert evals == [2, 4, 6]
  assert ckpt_lib.load_params(str(tmp_path))[1] == 6


def test_grad_accumulation_equals_one_big_batch():
  config = tiny_config()
  config.model.dropout_rate = 0.0  # micro-batches draw other dropout masks than one batch
  task = tasks.build_task(config.task, None)
  model = models.build_model(config.model, **task.model_sizes())
  tx = optim.make_optimizer(config.optimizer, 10)
  rules = parallel.rules_from_config(config)
  batch = next(task.train_iterator(64, seed=0))  # 4 micro-batches of 16 rows, 2 per device
  mesh = parallel.create_mesh(config.mesh)
  bsh = parallel.batch_sharding(mesh, rules)

  def run(k):
    state, shardings = state_lib.create_sharded_state(model, tx, batch, 0, mesh, rules)
    step = jax.jit(functools.partial(step_lib.train_step, objective=smoothed_ce(model), tx=tx,
                                     grad_accum_steps=k, batch_sharding=bsh,
                                     grad_shardings=shardings.params),
                   in_shardings=(shardings, bsh), out_shardings=(shardings, None))
    global_batch = parallel.to_global(batch, bsh)
    if k > 1:  # every device keeps its rows: no collective moves batch rows between devices
      hlo = step.lower(state, global_batch).compile().as_text()
      moves = {op: hlo.count(f' {op}(') + hlo.count(f' {op}-start(')
               for op in ('all-to-all', 'collective-permute', 'all-gather')}
      assert not any(moves.values()), moves
    for _ in range(2):
      state, m = step(state, global_batch)
    return jax.device_get(state.params), float(m['loss'] / m['loss_weight'])

  params1, loss1 = run(1)
  params4, loss4 = run(4)
  np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params4), jax.tree.leaves(params1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sigterm_checkpoints_and_resume_continues_exactly(tmp_path):
  steps = 60
  overrides = [f'--config.train.num_train_steps={steps}', '--config.train.log_every=2',
               f'--config.train.eval_every={steps}', '--config.train.checkpoint_every=1000',
               '--config.train.async_checkpointing=False', '--config.eval.num_samples=0']
  workdir = tmp_path / 'preempted'
  cmd = [sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
         '--config=' + os.path.join(REPO, 'configs', 'default.py') + ':runlocal',
         f'--workdir={workdir}'] + overrides
  env = dict(os.environ, PYTHONPATH=REPO)
  log = str(tmp_path / 'preempted.log')
  proc = scripts.start(cmd, log, env=env)
  metrics = workdir / 'metrics.jsonl'
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and reporting.read_jsonl(str(metrics)):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  proc.wait(120)
  assert proc.returncode == 0, open(log).read()[-2000:]
  stopped = ckpt_lib.load_params(str(workdir))[1]
  assert 2 <= stopped < steps, stopped
  resumed = scripts.run(cmd, env=env, cwd=REPO, timeout=300)
  assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]

  config = tiny_config(steps=steps)
  config.train.log_every, config.train.eval_every = 2, steps
  config.train.checkpoint_every = 1000
  loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  assert_trees_equal(params_of(str(tmp_path / 'straight')), params_of(str(workdir)))
