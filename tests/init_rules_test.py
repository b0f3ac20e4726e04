"""Fine-tuning with a new head: strict init_rules / init_skip and frozen parameters."""

import json
import os

import numpy as np
import pytest

from lmjax.config import configlib
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import init_rules
from lmjax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = {'embed/embedding': (50, 8), 'encoder/layer_0/mlp/wi/kernel': (8, 16),
         'head/class_logits/kernel': (8, 3)}


def test_default_rules_load_every_parameter_by_name():
  a = init_rules.assign(MODEL, MODEL, [], [], 'src')
  assert a.loaded == {k: k for k in MODEL} and not a.new and not a.skipped


def test_a_new_head_and_a_skipped_pretraining_head():
  source = {k: v for k, v in MODEL.items() if not k.startswith('head/')}
  source['mlm/dense/kernel'] = (8, 8)
  rules = [['head/.*', None], ['(.*)', r'\1']]
  a = init_rules.assign(MODEL, source, rules, ['mlm/.*'], 'src')
  assert a.new == ['head/class_logits/kernel'] and a.skipped == ['mlm/dense/kernel']
  renamed = init_rules.assign({'enc/w': (2,)}, {'encoder/w': (2,)}, [['enc/(.*)', r'encoder/\1']],
                              [], 'src')
  assert renamed.loaded == {'enc/w': 'encoder/w'}


def test_every_unaccounted_parameter_is_one_line_of_one_error():
  source = dict(MODEL, **{'mlm/bias': (50,), 'encoder/layer_0/mlp/wi/kernel': (8, 32)})
  rules = [['embed/.*', r'\g<0>'], ['encoder/.*', r'\g<0>'], ['decoder/.*', None]]
  with pytest.raises(ValueError) as e:
    init_rules.assign(MODEL, source, rules, ['pooler/.*'], 'src')
  lines = str(e.value).splitlines()[1:]
  assert len(lines) == 6, lines
  text = str(e.value)
  assert 'encoder/layer_0/mlp/wi/kernel (8, 16): the checkpoint has encoder/layer_0/mlp/wi/kernel with shape (8, 32)' in text
  assert 'head/class_logits/kernel (8, 3) is neither loaded nor declared new' in text
  assert "init_rules[2]=['decoder/.*', None] matches no model parameter" in text
  assert 'checkpoint parameter mlm/bias (50,) is loaded by no model parameter' in text
  assert 'checkpoint parameter head/class_logits/kernel (8, 3) is loaded by no' in text
  assert text.startswith('src: its parameters do not match this model (6 problem(s)')
  assert "init_skip[0]='pooler/.*' matches no unused checkpoint parameter" in text
  with pytest.raises(ValueError, match=r'init_rules\[0\].*expected \[model regex'):
    init_rules.assign(MODEL, MODEL, [['x']], [], 'src')


def _config(steps=20):
  config = configlib.load_config_file(
      os.path.join(REPO, 'configs', 'dates_classify_transformer.py') + ':runlocal')
  config.train.num_train_steps = steps
  config.train.eval_every = config.train.checkpoint_every = steps
  config.train.log_every = 5
  return config


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('init') / 'source')
  loop.train_and_evaluate(_config(steps=10), path)
  return path


def _flat(params):
  return init_rules.flat_paths(params)


def test_new_head_fresh_the_rest_loaded_frozen_stays_bit_identical(source, tmp_path):
  fresh = loop.Trainer(_config(), str(tmp_path / 'fresh'))
  fresh_params = _flat(fresh.state.params)
  fresh.abort()
  src = _flat(ckpt_lib.load_params(source)[0])

  config = _config()
  config.train.init_from = source
  config.train.init_rules = [['head/.*', None], ['(.*)', r'\1']]
  config.train.init_skip = ['head/.*']
  config.train.freeze = ['embed/.*', 'encoder/.*']
  work = tmp_path / 'ft'
  trainer = loop.Trainer(config, str(work))
  assert trainer.restore_latest() == 0
  start = _flat(trainer.state.params)
  trainer.abort()
  head = [k for k in start if k.startswith('head/')]
  assert head and len(head) < len(start)
  for k, v in start.items():
    expected = fresh_params[k] if k.startswith('head/') else src[k]
    np.testing.assert_array_equal(np.asarray(v), np.asarray(expected), err_msg=k)
  report = json.loads((work / 'init_report.json').read_text())
  assert sorted(report['new']) == sorted(head) and sorted(report['skipped']) == sorted(head)
  assert len(report['loaded']) == len(start) - len(head)

  loop.train_and_evaluate(config, str(work))
  end = _flat(ckpt_lib.load_params(str(work))[0])
  assert ckpt_lib.load_params(str(work))[1] == 20
  for k, v in end.items():
    if k.startswith('head/'):
      assert not np.array_equal(np.asarray(v), np.asarray(start[k])), k  # trained
    else:
      np.testing.assert_array_equal(np.asarray(v), np.asarray(start[k]), err_msg=k)  # frozen


def test_bad_rules_stop_the_run_before_anything_trains(source, tmp_path):
  config = _config()
  config.train.init_from = source
  config.train.init_rules = [['encoder/.*', r'\g<0>']]
  trainer = loop.Trainer(config, str(tmp_path / 'bad'))
  with pytest.raises(ValueError, match='neither loaded nor declared new'):
    trainer.restore_latest()
  trainer.abort()
  config = _config()
  config.train.freeze = ['nothing/.*']
  with pytest.raises(ValueError, match=r"freeze patterns \['nothing/\.\*'\] match no parameter"):
    loop.Trainer(config, str(tmp_path / 'bad2'))
