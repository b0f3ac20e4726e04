"""The T5 span-corruption pretraining task (configs/pretrain_t5_span.py) on a tiny corpus."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lmjax.config import configlib
from lmjax.data import span_corruption as sc
from lmjax.data import tasks
from lmjax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ('a dog runs in the park . ein hund läuft im park . two men play music on a street . '
         'zwei männer spielen musik auf einer straße . the child eats red apples . ').split()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('corpus')
  rng = np.random.default_rng(0)
  folder = root / 'multi30k' / 'tok'
  folder.mkdir(parents=True)
  sst = root / 'sst2'
  (sst / 'glue').mkdir(parents=True)
  (sst / 'stsa_binary').mkdir()
  rows = [(' '.join(rng.choice(WORDS, size=6)), i % 2) for i in range(200)]
  (sst / 'glue' / 'train.tsv').write_text('sentence\tlabel\n' + ''.join(
      f'{t}\t{y}\n' for t, y in rows))
  (sst / 'stsa_binary' / 'stsa.binary.dev').write_text(''.join(f'{y} {t}\n' for t, y in rows[:32]))
  for split, n in (('train', 400), ('val', 16)):
    for lang in ('en', 'de'):
      lines = [' '.join(rng.choice(WORDS, size=int(rng.integers(5, 14)))) for _ in range(n)]
      (folder / f'{split}.lc.norm.tok.{lang}').write_text('\n'.join(lines) + '\n')
  return str(root)


def _load(config_name, data_dir, overrides):
  """A pretraining config at runlocal size with a 120-piece vocabulary, then `overrides`
  ({'dotted.field': value})."""
  config = configlib.load_config_file(
      os.path.join(REPO, 'configs', config_name) + f':{data_dir},runlocal')
  config.task.tokenizer.vocab_size = 120
  return _apply(config, overrides)


def _apply(config, overrides):
  """Sets {'dotted.field': value} in `config` (as launch.sh sweeps do); returns it."""
  for key, value in overrides.items():
    node = config
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    node[last] = value
  return config


def _config(data_dir, **overrides):
  return _load('pretrain_t5_span.py', data_dir, overrides)


def test_task_examples_have_seqio_lengths_and_sentinels_after_the_pieces(data_dir):
  config = _config(data_dir)
  task = tasks.build_task(config.task, None)
  tok = task.tokenizers['inputs']
  assert task.tokenizers['targets'] is tok
  assert tok.vocab_size == tok.pieces + 100
  assert task.lengths == {'inputs': 64, 'targets': 14}
  raw, _ = sc.random_spans_helper(64)
  for ex in task.eval_examples:
    # Every held-out chunk but the last is a full 70-token chunk: 64 inputs, 14 targets.
    assert len(ex['inputs']) <= 64 and len(ex['targets']) <= 14
  full = [ex for ex in task.eval_examples[:-1]]
  assert full and all(len(ex['inputs']) == 64 and len(ex['targets']) == 14 for ex in full)
  assert task.eval_references[0].startswith('<extra_id_0>')
  example = task.train_example(3)
  assert set(example) == {'inputs', 'targets'} and example['targets'][0] == tok.vocab_size - 1
  assert raw == 70 and all(len(ex['tokens']) == raw for ex in task.train_examples[:-1])
  again = tasks.build_task(config.task, None)  # fixed eval masks
  assert all(np.array_equal(a['inputs'], b['inputs'])
             for a, b in zip(task.eval_examples, again.eval_examples))


def test_bad_settings_are_one_clear_error(data_dir):
  with pytest.raises(ValueError, match='shared SentencePiece'):
    tasks.build_task(_config(data_dir, **{'task.tokenizer.type': 'word'}).task, None)
  with pytest.raises(ValueError, match='extra_ids'):
    tasks.build_task(_config(data_dir, **{'task.tokenizer.extra_ids': 0}).task, None)
  with pytest.raises(ValueError, match='too few'):
    tasks.build_task(_config(data_dir, **{'task.source.max_train_examples': 3}).task, None)


SHORT_RUN = {'train.num_train_steps': 30, 'train.eval_every': 30, 'train.log_every': 10,
             'train.checkpoint_every': 30, 'optimizer.learning_rate': 1e-2}


def _pretrain_and_check_the_loss_falls(config, workdir):
  """Trains `config` 30 steps in `workdir`; its logged training loss falls by > 0.5."""
  loop.train_and_evaluate(config, str(workdir))
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  losses = [r['loss'] for r in rows if r.get('split') == 'train']
  assert len(losses) == 3 and losses[-1] < losses[0] - 0.5, losses


def test_span_corruption_pretraining_trains_and_a_translation_fine_tune_starts_from_it(
    data_dir, tmp_path):
  _pretrain_and_check_the_loss_falls(_config(data_dir, **SHORT_RUN), tmp_path)
  saved = json.loads((tmp_path / 'tokenizers' / 'vocab.json').read_text())
  assert saved['type'] == 'sentencepiece' and saved['extra_ids'] == 100  # fine-tunes keep them

  # configs/multi30k_t5.py: the same network on translation, from the pretrained run.
  fine = configlib.load_config_file(os.path.join(REPO, 'configs', 'multi30k_t5.py')
                                    + f':{data_dir},init_from={tmp_path},runlocal')
  fine.task.tokenizer.vocab_size = 120
  fine.train.num_train_steps, fine.train.log_every, fine.train.eval_every = 20, 10, 20
  fine.train.checkpoint_every = 20
  fine_dir = tmp_path.parent / (tmp_path.name + '_ft')
  loop.train_and_evaluate(fine, str(fine_dir))
  copied = json.loads((fine_dir / 'tokenizers' / 'vocab.json').read_text())
  assert copied == saved  # the pretraining run's vocabulary and sentinels
  rows = [json.loads(l) for l in (fine_dir / 'metrics.jsonl').read_text().splitlines()]
  fine_losses = [r['loss'] for r in rows if r.get('split') == 'train']
  assert len(fine_losses) == 2 and np.isfinite(fine_losses).all()


def _mlm_config(data_dir, **overrides):
  files = ['multi30k/tok/train.lc.norm.tok.en', 'multi30k/tok/train.lc.norm.tok.de']
  return _load('pretrain_bert_mlm.py', data_dir,
               {'task.source.train_files': files, **overrides})


def test_masked_lm_task_rows_mask_and_model_head(data_dir):
  config = _mlm_config(data_dir)
  task = tasks.build_task(config.task, None)
  tok = task.tokenizers['inputs']
  mask = tok.pieces  # the one id after the pieces
  assert task.kind == 'mlm' and tok.vocab_size == mask + 1
  assert task.lengths == {'inputs': 64, 'targets': 64}
  selected = 0
  for ex in task.eval_examples:
    sel = ex['targets'] > 0
    selected += int(sel.sum())
    assert np.all(ex['targets'][sel] >= 3)  # regular tokens only
  assert selected > 0 and any(np.any(ex['inputs'] == mask) for ex in task.eval_examples)
  from lmjax import models  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  model = models.build_model(config.model, **task.model_sizes())
  batch = {k: np.stack([ex[k] for ex in task.eval_examples[:2]]) for k in ('inputs', 'targets')}
  variables = model.init(jax.random.key(0), batch, train=False)
  logits = model.apply(variables, batch, train=False)
  assert logits.shape == (2, 64, tok.vocab_size)
  assert variables['params']['head']['bias'].value.shape == (tok.vocab_size,)
  with pytest.raises(ValueError, match='extra_ids'):
    tasks.build_task(_mlm_config(data_dir, **{'task.tokenizer.extra_ids': 0}).task, None)


def _sst2_text_task(data_dir, config_name, field):
  """(the task of `config_name` with text=sst2 at runlocal size, its tokenizer, the token
  stream of its training examples' `field`, and the file's sentences encoded with an EOS
  after each)."""
  config = configlib.load_config_file(
      os.path.join(REPO, 'configs', config_name) + f':{data_dir},text=sst2,runlocal')
  config.task.tokenizer.vocab_size = 120
  task = tasks.build_task(config.task, None)
  tok = task.tokenizers[field if field != 'tokens' else 'inputs']
  rows = (Path(data_dir) / 'sst2' / 'glue' / 'train.tsv').read_text().splitlines()[1:]
  want = [t for r in rows for t in tok.encode(r.split('\t')[0]) + [1]]  # not header or labels
  return task, [t for ex in task.train_examples for t in ex[field]], want


def test_masked_lm_pretrains_on_the_text_of_a_labelled_file(data_dir):
  _, stream, want = _sst2_text_task(data_dir, 'pretrain_bert_mlm.py', 'tokens')
  assert stream == want[:len(stream)] and len(stream) > len(want) // 2
  with pytest.raises(ValueError, match="text='x'"):
    configlib.load_config_file(
        os.path.join(REPO, 'configs', 'pretrain_bert_mlm.py') + f':{data_dir},text=x')


def test_lstm_lm_pretrains_on_the_text_of_a_labelled_file(data_dir):
  _, train, want = _sst2_text_task(data_dir, 'pretrain_lstm_lm.py', 'targets')
  # One stream, its last 1 % held out for eval. The text is cut at 99 % of its characters:
  # the cut line ends in an EOS of its own.
  assert train[:-1] == want[:len(train) - 1] and train[-1] == 1
  assert 0.9 * len(want) < len(train) < len(want)


def test_masked_lm_pretraining_trains_and_a_classifier_fine_tunes_with_a_new_head(data_dir,
                                                                                  tmp_path):
  _pretrain_and_check_the_loss_falls(_mlm_config(data_dir, **SHORT_RUN), tmp_path)

  # configs/sst2_mlm_finetune.py: the encoder and embeddings loaded, the MLM head skipped,
  # a fresh classifier head.
  fine = configlib.load_config_file(os.path.join(REPO, 'configs', 'sst2_mlm_finetune.py')
                                    + f':{data_dir},init_from={tmp_path},runlocal')
  fine.task.tokenizer.vocab_size = 120
  fine.train.num_train_steps, fine.train.eval_every = 10, 10
  fine.train.checkpoint_every = 10
  fine_dir = tmp_path.parent / (tmp_path.name + '_cls')
  loop.train_and_evaluate(fine, str(fine_dir))
  report = json.loads((fine_dir / 'init_report.json').read_text())
  assert report['new'] == ['head/class_logits/bias', 'head/class_logits/kernel']
  assert report['skipped'] and all(p.startswith('head/') for p in report['skipped'])
  assert 'embed/embedding' in report['loaded'] and len(report['loaded']) > 10


def test_lstm_lm_pretraining_trains_and_seeds_the_classifier_of_dai_and_le(data_dir, tmp_path):
  config = configlib.load_config_file(
      os.path.join(REPO, 'configs', 'pretrain_lstm_lm.py') + f':{data_dir},text=sst2,runlocal')
  config.task.tokenizer.vocab_size = 120
  _pretrain_and_check_the_loss_falls(_apply(config, SHORT_RUN), tmp_path)

  fine = configlib.load_config_file(os.path.join(REPO, 'configs', 'sst2_lm_finetune.py')
                                    + f':{data_dir},init_from={tmp_path},runlocal')
  fine.task.tokenizer.vocab_size = 120
  fine.train.num_train_steps = fine.train.eval_every = fine.train.checkpoint_every = 10
  fine_dir = tmp_path.parent / (tmp_path.name + '_cls')
  loop.train_and_evaluate(fine, str(fine_dir))
  report = json.loads((fine_dir / 'init_report.json').read_text())
  # The LM's layers read left to right become the encoder; its next-token layer is left out.
  assert report['new'] == ['head/class_logits/bias', 'head/class_logits/kernel']
  assert report['skipped'] and all(p.startswith('output/') for p in report['skipped'])
  assert 'embed/embedding' in report['loaded']
  assert any(p.startswith('encoder/') for p in report['loaded'])


@pytest.mark.parametrize('name', ['sst2_mlm_finetune', 'sst2_lm_finetune'])
def test_fine_tune_sweeps_apply_to_the_config(data_dir, name):
  module = __import__(f'configs.{name}', fromlist=['get_config'])
  for sweep in ('lr', 'seeds'):
    for trial in module.get_sweep(sweep):
      config = _apply(module.get_config(f'{data_dir},labelled=1000,runlocal'), trial)
      configlib.validate(config)
      assert config.task.source.max_train_examples == 1000
  with pytest.raises(ValueError, match="no sweep 'x'"):
    module.get_sweep('x')
