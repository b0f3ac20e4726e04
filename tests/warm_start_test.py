"""Warm starts (config.train.init_from): a fresh run begins from another run's parameters."""

import os
import shutil

import jax
import numpy as np
import pytest

from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import loop
from lmjax.train import reporting
from tests import train_test


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """A trained tiny run (8 steps, checkpoints at 4 and 8)."""
  path = str(tmp_path_factory.mktemp('warm') / 'source')
  loop.train_and_evaluate(train_test.tiny_config(), path)
  return path


def started(config, workdir):
  """The Trainer of `workdir` after its restore step (what its first train step starts from)."""
  trainer = loop.Trainer(config, workdir)
  step = trainer.restore_latest()
  trainer.abort()
  return trainer, step


def test_fresh_run_starts_from_the_source_params_with_a_fresh_optimizer(source, tmp_path):
  config = train_test.tiny_config()
  config.train.init_from, config.train.init_checkpoint = source, '4'
  trainer, step = started(config, str(tmp_path / 'a'))
  assert step == 0 and int(trainer.state.step) == 0
  train_test.assert_trees_equal(trainer.state.params, ckpt_lib.load_params(source, step=4)[0])
  opt = [np.asarray(x) for x in jax.tree.leaves(trainer.state.opt_state) if np.ndim(x)]
  assert opt and not any(x.any() for x in opt)  # Adam's moments start at zero


def test_warm_run_copies_the_tokenizers_trains_and_resumes_without_the_source(source, tmp_path):
  work = str(tmp_path / 'b')
  config = train_test.tiny_config(steps=6)
  config.train.init_from = source  # 'latest': step 8
  config.train.checkpoint_every = 3
  loop.train_and_evaluate(config, work, stop_after_steps=3)
  names = os.listdir(os.path.join(source, 'tokenizers'))
  assert names
  for name in names:
    with open(os.path.join(source, 'tokenizers', name), 'rb') as a, \
         open(os.path.join(work, 'tokenizers', name), 'rb') as b:
      assert a.read() == b.read(), name
  moved = source + '.away'  # a resume reads its own checkpoint, never the source again
  shutil.move(source, moved)
  try:
    metrics = loop.train_and_evaluate(config, work)
  finally:
    shutil.move(moved, source)
  assert ckpt_lib.load_params(work)[1] == 6 and np.isfinite(metrics['loss'])
  # From trained parameters the loss starts far below the source's own cold start (same seed).
  first = lambda w: next(r['loss'] for r in reporting.read_jsonl(os.path.join(w, 'metrics.jsonl'))
                         if r['split'] == 'train')
  assert first(work) < first(source) - 0.5, (first(work), first(source))


def test_bad_sources_are_clear_errors(source, tmp_path):
  config = train_test.tiny_config()
  config.train.init_from = str(tmp_path / 'nothing')
  with pytest.raises(ValueError, match=r"config.train.init_from='.*nothing': no checkpoints there"):
    loop.Trainer(config, str(tmp_path / 'c'))
  config.train.init_from, config.train.init_checkpoint = source, '5'
  with pytest.raises(ValueError, match=r"no checkpoint '5' .*set config.train.init_checkpoint"):
    started(config, str(tmp_path / 'd'))
  config.train.init_checkpoint = 'latest'
  config.model.emb_dim = config.model.qkv_dim = 2 * config.model.emb_dim
  with pytest.raises(ValueError, match=r'config.train.init_from=.*parameters do not match this model'):
    started(config, str(tmp_path / 'e'))
