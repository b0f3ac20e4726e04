"""Reliability under faults: SIGKILL at any moment, non-finite steps, failed writes, bad configs."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from lmjax.config import configlib
from lmjax import fileio
from lmjax import models
from lmjax import parallel
from lmjax.train import reporting
from lmjax.data import task_def
from lmjax.data import tasks
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import guard
from lmjax.train import loop
from lmjax import optim
from lmjax.train import soak
from lmjax.train import state as state_lib
from lmjax.objectives import registry
from lmjax.train import step as step_lib
from tests import stream_test
from tests import scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'default.py') + ':runlocal'
BAD_ID = 10**6  # a token id far outside every vocabulary: the loss and gradients become NaN


def tiny_config(steps=8, checkpoint_every=2):
  config = default.get_config('runlocal')
  config.train.num_train_steps = steps
  config.train.log_every = 2
  config.train.eval_every = steps
  config.train.checkpoint_every = checkpoint_every
  config.eval.num_samples = 0
  return config


def digest(directory):
  h = hashlib.sha256()
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for f in sorted(files):
      h.update(os.path.relpath(os.path.join(root, f), directory).encode())
      with open(os.path.join(root, f), 'rb') as fh:
        h.update(fh.read())
  return h.hexdigest()


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def train_steps_logged(workdir):
  return [r['step'] for r in reporting.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          if r['split'] == 'train']


# --- Crashes ------------------------------------------------------------------------------


def test_sigkill_at_random_moments_resumes_bit_identically(tmp_path):
  """2 SIGKILLs (seeded delays, landing in steps, async saves, metrics writes, with two Grain
  worker processes reading ArrayRecord shards) vs no kill; each kill also damages the newest
  checkpoint."""
  data = stream_test.write_corpus(str(tmp_path / 'data'), num_train=2000)
  # 2,000 pairs in batches of 16 packed 32-token rows (~3.3 pairs a row): ~38 steps an epoch,
  # so checkpoints every 7 steps fall mid-epoch, and 42 steps cross an epoch's end, in the
  # last launch too (kill_by_step kills the one before by step 36: it resumes from 28 or
  # earlier). Each killed launch gets a few seconds of training (steps, background saves,
  # metric writes) for its kill to land in, and kill_by_step keeps every kill before the
  # run's last steps however fast the machine. Tokenizing in-process (preprocess_workers=1)
  # spares two interpreter start-ups; the Grain workers stay two.
  steps = 42
  overrides = ['--config.task.tokenizer.type=word', '--config.task.tokenizer.vocab_size=0',
               '--config.task.preprocess_workers=1', '--config.task.batching.workers=2',
               f'--config.train.num_train_steps={steps}', '--config.train.log_every=1',
               '--config.train.checkpoint_every=7', f'--config.train.eval_every={steps}',
               '--config.eval.num_samples=0']
  spec = f'configs/multi30k_transformer.py:{data},runlocal'
  # The session's compilation cache (tests/conftest.py), so that the launches are forked from
  # tests/scripts.py's server, which imported jax and lmjax once: each is train.py as its
  # command line runs it, in its own process group (the SIGKILL takes its Grain workers).
  env = soak.subprocess_env()
  start = lambda cmd, env, log: scripts.start(cmd, log, cwd=REPO, env=env)
  straight, killed = str(tmp_path / 'straight'), str(tmp_path / 'killed')
  soak.run_to_completion(soak.train_command(spec, straight, overrides), env, timeout=300,
                         start=start)
  # After each kill the newest checkpoint is also damaged (an array file cut short, then
  # emptied manifests): train.checkpoint_fallback moves it aside and resumes earlier.
  kills = soak.kill_and_resume(soak.train_command(spec, killed, overrides), killed, kills=2,
                               seed=1, max_delay=1.0, env=env, wait_for_progress=True, timeout=300,
                               damage={1: 'truncate', 2: 'manifest'}, kill_by_step=steps - 6,
                               start=start)
  result = soak.compare(straight, killed)
  print(soak.format_report(kills, result))
  assert not any(k.finished for k in kills), kills  # every kill landed in a live run
  resumed_at = [k.checkpoint for k in kills if k.checkpoint]
  assert any(c % 30 for c in resumed_at), kills  # killed mid-epoch, after a checkpoint
  # A launch with a damage due waits for two complete checkpoints (one to fall back to), so
  # both damages land, whatever the machine's speed, and both were set aside on resume.
  damaged = [k.damaged.split()[0] for k in kills if k.damaged]
  assert damaged == ['truncate', 'manifest'], kills
  assert len(os.listdir(os.path.join(killed, 'checkpoints', 'damaged'))) == len(damaged)
  assert result['step'] == (steps, steps)
  assert result['params_identical'], result
  assert result['metrics_identical'], result
  assert train_steps_logged(killed) == list(range(1, steps + 1))
  assert soak.partial_checkpoints(killed) == []


HOLD_SAVE = r'''
import asyncio, os, runpy, sys
from orbax.checkpoint._src.path import atomicity
original = atomicity.AtomicRenameTemporaryPath.finalize

async def held(self):  # the save of step HOLD_STEP never completes: SIGKILL comes first
  final = self.get_final()
  if final.name == os.environ['HOLD_STEP'] and final.parent.name == 'last':
    open(os.environ['HOLD_MARKER'], 'w').close()
    await asyncio.sleep(3600)
  return await original(self)

atomicity.AtomicRenameTemporaryPath.finalize = held
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def test_kill_inside_a_checkpoint_save_then_resume_ignores_partial_state(tmp_path):
  """SIGKILL while Orbax writes step 4; plus an uncommitted step dir and a torn metrics line."""
  workdir = tmp_path / 'run'
  config = tiny_config(steps=8, checkpoint_every=2)
  marker = tmp_path / 'holding'
  cmd = [sys.executable, '-c', HOLD_SAVE, os.path.join(REPO, 'experiments', 'train.py'),
         f'--config={CONFIG}', f'--workdir={workdir}', '--config.train.num_train_steps=8',
         '--config.train.log_every=2', '--config.train.eval_every=8',
         '--config.train.checkpoint_every=2', '--config.eval.num_samples=0']
  env = dict(soak.subprocess_env(), HOLD_STEP='4', HOLD_MARKER=str(marker))
  proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 120
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert marker.exists(), proc.communicate()[1].decode()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  last = workdir / 'checkpoints' / 'last'
  assert (last / '4.orbax-checkpoint-tmp').is_dir()  # the partial save
  assert soak.latest_complete_checkpoint(str(workdir)) == 2
  assert ckpt_lib.load_params(str(workdir))[1] == 2
  # More debris a crash can leave: a step directory without Orbax's commit file (a copy or
  # delete cut short) and a torn last line in metrics.jsonl.
  shutil.copytree(last / '2', last / '7')
  os.remove(last / '7' / ckpt_lib.COMMIT_FILE)
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 3, "split": "tr')

  loop.train_and_evaluate(config, str(workdir))  # the same run again: resumes from 2
  assert sorted(os.listdir(last)) == ['4', '6', '8']
  assert [p.split('-')[:2] for p in os.listdir(workdir / 'checkpoints' / 'incomplete')] == [['last', '7']]
  assert ckpt_lib.load_params(str(workdir))[1] == 8
  assert train_steps_logged(str(workdir)) == [2, 4, 6, 8]
  with open(workdir / 'metrics.jsonl') as f:
    text = f.read()
  assert text.endswith('\n') and all(json.loads(line) for line in text.splitlines())
  assert len(os.listdir(workdir / 'tensorboard')) == 2  # both runs' event files are kept


# --- Non-finite steps -------------------------------------------------------------------------


def poison(batch):
  """The batch with every real target token replaced by an id outside the vocabulary."""
  return dict(batch, targets=np.where(batch['targets'] > 0, BAD_ID, 0).astype(batch['targets'].dtype))


class PoisonedIterator:
  """Wraps a train iterator; the batches of the given (1-based) steps are poisoned."""

  def __init__(self, it, bad_steps):
    self.it, self.bad_steps, self.n = it, set(bad_steps), 0

  def __iter__(self):
    return self

  def __next__(self):
    self.n += 1
    batch = next(self.it)
    return poison(batch) if self.n in self.bad_steps else batch

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)

  def close(self):
    self.it.close()


def poison_steps(monkeypatch, bad_steps):
  original = task_def.Task.train_iterator
  monkeypatch.setattr(task_def.Task, 'train_iterator',
                      lambda self, *a, **k: PoisonedIterator(original(self, *a, **k), bad_steps))


@pytest.mark.parametrize('variant', ['plain', 'grad_accum', 'stateful'])
def test_nonfinite_step_is_not_applied(variant):
  config = (configlib.load_config_file(os.path.join(REPO, 'configs', 'dates_lm_lstm.py') + ':runlocal')
            if variant == 'stateful' else tiny_config())
  task = tasks.build_task(config.task, None)
  model = models.build_model(config.model, **task.model_sizes())
  tx = optim.make_optimizer(config.optimizer, 10)
  rules = parallel.rules_from_config(config)
  mesh = parallel.create_mesh(config.mesh)
  bsh = parallel.batch_sharding(mesh, rules)
  b = config.train.batch_size
  config.train.label_smoothing = 0.1
  objective = registry.build(config, task, model)
  if variant == 'stateful':
    batch = next(objective.train_iterator(task, b, 0, 0, 1))
    state, shardings = state_lib.create_sharded_state(model, tx, {'targets': batch['targets']}, 0,
                                                      mesh, rules)
    state, _ = objective.add_state(state, shardings, b, bsh)
  else:
    batch = next(task.train_iterator(b, 0))
    state, _ = state_lib.create_sharded_state(model, tx, batch, 0, mesh, rules)
  kwargs = {'grad_accum_steps': 2} if variant == 'grad_accum' else {}
  step = jax.jit(lambda s, x: step_lib.train_step(s, x, objective=objective, tx=tx, **kwargs))

  good, m_good = step(state, parallel.to_global(batch, bsh))
  assert float(m_good['skipped']) == 0 and np.isfinite(float(m_good['loss']))
  bad, m_bad = step(good, parallel.to_global(poison(batch), bsh))
  assert float(m_bad['skipped']) == 1 and not np.isfinite(float(m_bad['grad_norm']))
  assert float(m_bad['loss']) == 0 and float(m_bad['weight']) == 0  # left out of the sums
  assert int(bad.step) == int(good.step) + 1  # counts batches: the data position stays exact
  assert_trees_equal(bad.params, good.params)
  assert_trees_equal(bad.opt_state, good.opt_state)
  if variant == 'stateful':  # the next batch starts from zeros, as after a reset
    assert all(not np.any(np.asarray(c)) for c in jax.tree.leaves(bad.carry))
  summary = objective.summarize(jax.device_get(m_bad))
  assert summary['skipped_steps'] == 1 and np.isnan(summary['loss'])


def test_isolated_bad_batches_are_skipped_and_counted(tmp_path, monkeypatch):
  poison_steps(monkeypatch, bad_steps={3, 6})
  config = tiny_config(steps=8, checkpoint_every=8)
  config.train.max_nonfinite_steps = 2
  metrics = loop.train_and_evaluate(config, str(tmp_path))
  train = [r for r in reporting.read_jsonl(str(tmp_path / 'metrics.jsonl')) if r['split'] == 'train']
  assert [r['skipped_steps'] for r in train] == [0, 1, 1, 0]
  assert all(np.isfinite(r['loss']) for r in train) and np.isfinite(metrics['loss'])
  assert ckpt_lib.load_params(str(tmp_path))[1] == 8


def test_consecutive_nonfinite_steps_stop_the_run_with_a_clear_error(tmp_path, monkeypatch):
  poison_steps(monkeypatch, bad_steps=range(5, 100))
  config = tiny_config(steps=12, checkpoint_every=2)
  config.train.max_nonfinite_steps = 3
  with pytest.raises(guard.NonFiniteError) as err:
    loop.train_and_evaluate(config, str(tmp_path))
  msg = str(err.value)
  assert 'stopped at step 7' in msg and '3 consecutive step(s)' in msg
  assert os.path.join(str(tmp_path), 'checkpoints', 'last', '6') in msg
  assert 'learning rate' in msg and 'bfloat16' in msg and 'bad batch' in msg
  assert isinstance(err.value, guard.TrainingError)
  # The last good checkpoint loads; the skipped steps 5 and 6 left the params of step 4.
  params6, step = ckpt_lib.load_params(str(tmp_path))
  assert step == 6 and bool(guard.tree_finite(params6))
  assert_trees_equal(params6, ckpt_lib.load_params(str(tmp_path), step=4)[0])
  skipped = [r['skipped_steps'] for r in reporting.read_jsonl(str(tmp_path / 'metrics.jsonl'))
             if r['split'] == 'train']
  assert skipped == [0, 0, 2]  # rows of steps 2, 4, 6 (5 and 6 bad); the error came before step 8's


def test_nonfinite_parameters_are_never_checkpointed(tmp_path):
  config = tiny_config()
  trainer = loop.Trainer(config, str(tmp_path))
  trainer.checkpoint()  # step 0: fine
  nan_params = jax.tree.map(lambda x: x * jnp.nan, trainer.state.params)
  trainer.state = trainer.state.replace(step=trainer.state.step + 1, params=nan_params)
  with pytest.raises(guard.NonFiniteError, match=r'parameters at step 1 are NaN/Inf.*checkpoints/last/0'):
    trainer.checkpoint()
  trainer.checkpointer.close()
  assert sorted(os.listdir(tmp_path / 'checkpoints' / 'last')) == ['0']


def test_cli_stops_on_nonfinite_with_a_message_and_no_traceback(tmp_path):
  # A learning rate that overflows float32: the first update makes the params NaN, the
  # second step's loss is NaN and nonfinite='stop' ends the run there.
  proc = scripts.run(
      soak.train_command(CONFIG, str(tmp_path), [
          '--config.optimizer.learning_rate=1e39', '--config.train.nonfinite=stop',
          '--config.train.checkpoint_every=5', '--config.eval.num_samples=0']),
      text=True, timeout=300, cwd=REPO, env=soak.subprocess_env())
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert 'NonFiniteError' in proc.stderr and 'stopped at step 2' in proc.stderr
  assert "config.train.nonfinite='stop'" in proc.stderr and 'No checkpoint was written' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert soak.latest_complete_checkpoint(str(tmp_path)) is None


# --- Failed writes --------------------------------------------------------------------------


def test_checkpoint_write_failure_is_clear_and_the_run_resumes(tmp_path, monkeypatch):
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  config = tiny_config(steps=8, checkpoint_every=4)  # async saves (the default)
  last = tmp_path / 'checkpoints' / 'last'
  seen = {}
  original = atomicity.AtomicRenameTemporaryPath.finalize

  async def disk_full_at_step_8(self):  # both slots ('last' and 'best') fail at step 8
    if self.get_final().name == '8':
      if self.get_final().parent.name == 'last':
        seen['before'] = digest(last / '4')
      raise OSError(errno.ENOSPC, 'No space left on device', str(self.get()))
    return await original(self)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', disk_full_at_step_8)
  with pytest.raises(guard.WriteError, match=r'checkpoint .*checkpoints/last.*No space left on device'):
    loop.train_and_evaluate(config, str(tmp_path))
  assert digest(last / '4') == seen['before']  # the earlier checkpoint is intact
  assert soak.latest_complete_checkpoint(str(tmp_path)) == 4

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', original)  # space is back
  loop.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(last)) == ['4', '8']
  assert ckpt_lib.load_params(str(tmp_path))[1] == 8


class _DiskFullFile:
  """A file whose write stores half the text, then fails as a full disk does."""

  def __init__(self, f):
    self.f = f

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.f.close()

  def write(self, text):
    self.f.write(text[:len(text) // 2])
    self.f.flush()
    raise OSError(errno.ENOSPC, 'No space left on device')


def test_metrics_write_failure_is_clear_and_the_run_resumes(tmp_path, monkeypatch):
  config = tiny_config(steps=8, checkpoint_every=4)
  config.train.async_checkpointing = False
  path = str(tmp_path / 'metrics.jsonl')
  calls = {'n': 0}

  def failing_open(file, mode='r', *args, **kwargs):
    f = open(file, mode, *args, **kwargs)  # pylint: disable=unspecified-encoding
    if file == path and mode == 'a':
      calls['n'] += 1
      if calls['n'] == 3:  # the train row of step 6
        return _DiskFullFile(f)
    return f

  monkeypatch.setattr(fileio, 'open', failing_open, raising=False)  # fileio.append_text's open
  with pytest.raises(guard.WriteError, match=r'metrics file .*metrics\.jsonl \(No space left on device\)'):
    loop.train_and_evaluate(config, str(tmp_path))
  with open(path) as f:
    text = f.read()
  assert text.endswith('\n') and [json.loads(line)['step'] for line in text.splitlines()] == [2, 4]

  monkeypatch.undo()  # space is back
  loop.train_and_evaluate(config, str(tmp_path))
  assert train_steps_logged(str(tmp_path)) == [2, 4, 6, 8]
  assert ckpt_lib.load_params(str(tmp_path))[1] == 8


# --- Configs --------------------------------------------------------------------------------

NONPOSITIVE = st.integers(max_value=0)
NEGATIVE = st.integers(max_value=-1)
OUTSIDE_UNIT = st.one_of(st.floats(max_value=-1e-6), st.floats(min_value=1.0),
                         st.just(float('nan')))
WORDS = st.text(min_size=0, max_size=8)

# Field → values that are always invalid there (runlocal: batch 16, 20 steps, qkv_dim 32, max_len 32).
INVALID = {
    'train.batch_size': NONPOSITIVE,
    'train.num_train_steps': NONPOSITIVE,
    'train.grad_accum_steps': st.one_of(NONPOSITIVE, st.sampled_from([3, 5, 6, 7, 32, 48])),
    'train.log_every': NONPOSITIVE,
    'train.eval_every': NONPOSITIVE,
    'train.checkpoint_every': NONPOSITIVE,
    'train.keep_checkpoints': NONPOSITIVE,
    'train.max_nonfinite_steps': NONPOSITIVE,
    'train.early_stopping_patience': NEGATIVE,
    'train.label_smoothing': OUTSIDE_UNIT,
    'train.best_mode': WORDS.filter(lambda s: s not in ('min', 'max')),
    'train.nonfinite': WORDS.filter(lambda s: s not in ('skip', 'stop')),
    'optimizer.learning_rate': st.one_of(st.floats(max_value=0.0), st.just(float('inf')),
                                         st.just(float('nan'))),
    'optimizer.warmup_steps': st.one_of(NEGATIVE, st.integers(min_value=21)),
    'optimizer.grad_clip_norm': st.one_of(st.floats(max_value=-1e-6), st.just(float('nan'))),
    'optimizer.b1': OUTSIDE_UNIT,
    'optimizer.b2': OUTSIDE_UNIT,
    'optimizer.name': WORDS.filter(lambda s: s not in optim.OPTIMIZERS),
    'model.dropout_rate': OUTSIDE_UNIT,
    'model.attention_dropout_rate': OUTSIDE_UNIT,
    'model.emb_dim': NONPOSITIVE,
    'model.num_heads': st.one_of(NONPOSITIVE, st.sampled_from([3, 5, 6, 7, 64])),
    'model.qkv_dim': st.one_of(NONPOSITIVE, st.sampled_from([11, 13, 37])),  # no listed head count divides
    'model.mlp_dim': NONPOSITIVE,
    'model.max_len': st.integers(max_value=11),  # < task.max_target_length=12
    'model.num_encoder_layers': NEGATIVE,
    'eval.batch_size': NONPOSITIVE,
    'eval.num_samples': NEGATIVE,
    'task.max_input_length': st.one_of(NONPOSITIVE, st.integers(min_value=33)),
    'task.num_train': NONPOSITIVE,
    'mesh.data': st.one_of(st.integers(max_value=-2), st.just(0)),
}


def _set(config, dotted, value):
  node = config
  *parents, leaf = dotted.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value


@hypothesis.settings(max_examples=50, deadline=None)
@hypothesis.given(st.lists(st.sampled_from(sorted(INVALID)), min_size=1, max_size=4, unique=True)
                  .flatmap(lambda fields: st.tuples(*[st.tuples(st.just(f), INVALID[f]) for f in fields])))
def test_invalid_values_always_raise_one_config_error_naming_each(overrides):
  config = default.get_config('runlocal')
  for field, value in overrides:
    _set(config, field, value)
  with pytest.raises(configlib.ConfigError) as err:
    configlib.validate(config)
  msg = str(err.value)
  for field, _ in overrides:
    if field == 'model.qkv_dim' or field == 'model.num_heads':
      assert 'model.qkv_dim' in msg or 'model.num_heads' in msg, msg
    elif field == 'model.max_len':
      assert 'model.max_len' in msg, msg  # named by the task lengths it no longer holds
    else:
      assert f'config.{field}=' in msg, (field, msg)


@hypothesis.settings(max_examples=50, deadline=None)
@hypothesis.given(batch=st.sampled_from([8, 16, 64]), steps=st.integers(1, 10_000),
                  warmup_fraction=st.floats(0, 1), smoothing=st.floats(0, 0.99),
                  dropout=st.floats(0, 0.99), heads=st.sampled_from([1, 2, 4, 8]),
                  lr=st.floats(1e-8, 10))
def test_valid_values_pass(batch, steps, warmup_fraction, smoothing, dropout, heads, lr):
  config = default.get_config('runlocal')
  config.train.batch_size, config.train.num_train_steps = batch, steps
  config.optimizer.warmup_steps = int(warmup_fraction * steps)
  config.train.label_smoothing, config.model.dropout_rate = smoothing, dropout
  config.model.num_heads, config.optimizer.learning_rate = heads, lr
  configlib.validate(config)


def test_missing_data_files_are_config_errors(tmp_path):
  config = configlib.load_config_file(os.path.join(REPO, 'configs', 'ptb_lstm.py') + f':{tmp_path}')
  configlib.validate(config)  # values alone are fine
  with pytest.raises(configlib.ConfigError) as err:
    configlib.validate(config, check_paths=True)
  assert 'task.source.train_files[0]' in str(err.value) and 'ptb.train.txt' in str(err.value)
  assert 'task.source.eval_files[0]' in str(err.value)
  config.task.data_dir = str(tmp_path / 'nope')
  with pytest.raises(configlib.ConfigError, match=r'config.task.data_dir=.*no such directory'):
    configlib.validate(config, check_paths=True)


def test_cli_lists_every_invalid_value_without_a_traceback(tmp_path):
  proc = scripts.run(
      soak.train_command(CONFIG, str(tmp_path), ['--config.train.batch_size=0',
                                                 '--config.model.dropout_rate=1.5',
                                                 '--config.train.nonfinite=ignore']),
      text=True, timeout=120, cwd=REPO, env=soak.subprocess_env())
  assert proc.returncode == 1, proc.stderr[-2000:]
  for field in ('train.batch_size=0', 'model.dropout_rate=1.5', "train.nonfinite='ignore'"):
    assert f'config.{field}' in proc.stderr, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr


def test_failed_restore_noise_is_dropped_and_other_asyncio_errors_kept(tmp_path):
  """asyncio's 'never retrieved' reports of a failed restore's reads (any future class) are
  dropped; other asyncio errors still reach stderr."""
  script = tmp_path / 'noise.py'
  script.write_text(
      'import asyncio, gc\n'
      'from lmjax.train import checkpoint\n'
      'checkpoint.silence_closed_loop_noise()\n'
      'async def fail():\n'
      '  raise ValueError("a read that failed")\n'
      'async def main():\n'
      '  loop = asyncio.get_running_loop()\n'
      '  task = loop.create_task(fail())\n'
      '  gathered = asyncio.gather(fail())\n'
      '  future = loop.create_future(); future.set_exception(ValueError("plain"))\n'
      '  await asyncio.sleep(0.05)\n'
      '  del task, gathered, future\n'
      '  gc.collect()\n'
      '  loop.call_exception_handler({"message": "another asyncio error"})\n'
      'asyncio.run(main())\n')
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=repo,
                       env=dict(os.environ, PYTHONPATH=repo))
  assert out.returncode == 0, out.stderr
  assert 'never retrieved' not in out.stderr, out.stderr
  assert 'another asyncio error' in out.stderr


def test_replicated_small_and_large_arrays_save_and_restore_exactly(tmp_path):
  """Small replicated arrays are written by one replica, large ones split across the 8
  (checkpoint.MIN_REPLICA_SLICE_BYTES); both restore bit-identically."""
  from typing import NamedTuple
  from jax.sharding import NamedSharding, PartitionSpec as P

  class State(NamedTuple):
    step: jax.Array
    params: dict

  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))
  replicated = NamedSharding(mesh, P())
  rng = np.random.default_rng(0)
  big_rows = 8 * ckpt_lib.MIN_REPLICA_SLICE_BYTES // (4 * 128) * 2  # 2 MiB per replica
  params = {'bias': rng.normal(size=(7,)).astype(np.float32),
            'norm': rng.normal(size=(128,)).astype(np.float32),
            'big': rng.normal(size=(big_rows, 128)).astype(np.float32)}
  state = State(jax.device_put(np.int32(3), replicated),
                jax.tree.map(lambda x: jax.device_put(x, replicated), params))
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), keep=2, async_save=False)
  checkpointer.save(state, {'note': 'x'})
  checkpointer.wait()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  restored, meta, data = checkpointer.restore(abstract)
  assert data == [None]  # no data position given: one (empty) per process
  assert meta == {'note': 'x'}
  assert int(restored.step) == 3
  for name, value in params.items():
    np.testing.assert_array_equal(np.asarray(restored.params[name]), value)
    assert restored.params[name].sharding.is_equivalent_to(replicated, value.ndim)
