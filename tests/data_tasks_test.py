"""Real-corpus configs build their tasks from tiny files laid out like shared/data, and one
trains end to end; the real corpora are checked when present (skipped otherwise)."""

import os
import tarfile

import numpy as np
import pytest

from lmjax.config import configlib
from lmjax.data import tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DATA = os.environ.get('LMJAX_DATA_DIR', os.path.join(REPO, '..', 'shared', 'data'))

EN = ['a man rides a horse .', 'two dogs play in the snow .', 'a woman reads a book .',
      'children run on the beach .']
DE = ['ein mann reitet ein pferd .', 'zwei hunde spielen im schnee .', 'eine frau liest ein buch .',
      'kinder laufen am strand .']


def write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)


def fake_corpora(root):
  """Tiny files with the names and formats of shared/data (see its README)."""
  for split, n in (('train', 40), ('val', 8)):
    write(f'{root}/multi30k/tok/{split}.lc.norm.tok.en', '\n'.join((EN * n)[:n]) + '\n')
    write(f'{root}/multi30k/tok/{split}.lc.norm.tok.de', '\n'.join((DE * n)[:n]) + '\n')
  write(f'{root}/tinyshakespeare/input.txt', 'First Citizen:\nBefore we proceed any further, hear me speak.\n' * 60)
  for split in ('train', 'valid'):
    write(f'{root}/ptb/ptb.{split}.txt', ' the cat sat on the <unk> \n a dog ran N miles \n' * 120)
  write(f'{root}/sst2/glue/train.tsv', 'sentence\tlabel\n' + 'a fine , moving film . \t1\nmoving\t1\ndull and long\t0\n' * 20)
  for split in ('train', 'dev'):
    write(f'{root}/sst2/stsa_binary/stsa.binary.{split}', '1 a fine , moving film .\n0 dull and long .\n' * 20)
    write(f'{root}/wnut17/{"wnut17train" if split == "train" else "emerging.dev"}.conll',
          'Paris\tB-location\nis\tO\nnice\tO\n\n@bob\tO\nlikes\tO\nApple\tB-corporation\nMusic\tI-corporation\n\n' * 20)
    os.makedirs(f'{root}/aeslc', exist_ok=True)
    with tarfile.open(f'{root}/aeslc/enron_subject_line_{split}.tar.gz', 'w:gz') as tar:
      for i in range(24):
        body = f'Hi team,\nthe review meeting {i} moved to friday at {i % 12} pm.\n\n@subject\nmeeting {i} moved\n'
        if split == 'dev':  # the real dev/test emails carry human-written subjects
          body += f'\n@ann0\nReview {i} moved\n\n@ann1\nreview meeting moved to friday\n'
        path = f'{root}/aeslc/tmp/{split}/{i}.subject'
        write(path, body)
        tar.add(path, arcname=f'enron_subject_line/{split}/{i}.subject')


CONFIGS = {'multi30k_transformer': 'seq2seq', 'shakespeare_char': 'lm', 'ptb_lstm': 'lm',
           'sst2_bilstm': 'classify', 'wnut17_bilstm_crf': 'tag', 'aeslc_transformer': 'seq2seq',
           'multi30k_lstm': 'seq2seq', 'aeslc_lstm': 'seq2seq'}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('data'))
  fake_corpora(root)
  return root


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_builds_its_task(data_dir, tmp_path, name):
  config = configlib.load_config_file(os.path.join(REPO, f'configs/{name}.py') + f':{data_dir},runlocal')
  config.task.tokenizer.vocab_size = min(config.task.tokenizer.vocab_size, 40)
  configlib.validate(config)
  task = tasks.build_task(config.task, str(tmp_path))
  assert task.kind == CONFIGS[name]
  train = [task.train_example(i) for i in range(task.num_train_examples())]
  assert train and task.eval_examples
  for seq_key, n in task.lengths.items():
    assert all(len(ex[seq_key]) <= n for ex in train + task.eval_examples)
  batch = next(task.train_iterator(config.train.batch_size, seed=0))
  assert batch[{'seq2seq': 'targets', 'lm': 'targets', 'classify': 'label', 'tag': 'tags'}[task.kind]].size
  if task.kind == 'seq2seq':  # detokenization round-trips to the reference text
    ref = task.eval_references[0]
    assert task.detokenize(task.eval_examples[0]['targets']) == ref
  if task.kind == 'tag':
    assert task.label_names[0] == '<pad>' and len(task.label_names) == 14
  os.listdir(os.path.join(str(tmp_path), 'tokenizers'))


ANN1 = 'review meeting moved to friday'


def test_aeslc_scores_against_subject_and_annotations(data_dir):
  config = configlib.load_config_file(os.path.join(REPO, 'configs/aeslc_transformer.py') + f':{data_dir},runlocal')
  config.task.tokenizer.vocab_size = 40
  task = tasks.build_task(config.task, None)
  n = len(task.eval_examples)
  subjects = task.eval_references
  assert sorted(subjects) == sorted(f'meeting {i} moved' for i in range(n))
  assert task.eval_annotations == [[f'Review {s.split()[1]} moved', ANN1] for s in subjects]
  exact = task.score_predictions(subjects)  # the original subject lines
  assert exact['exact_match'] == exact['rouge1'] == 100.0 and exact['ann_exact_match'] == 0.0
  second = task.score_predictions([ANN1] * n)  # one annotator's subject, every email
  assert second['ann_exact_match'] == second['ann_rouge1'] == second['ann_rouge2'] == 100.0
  assert second['ann_bleu'] == pytest.approx(100.0) and second['bleu'] < 100.0
  p, r = 2 / 5, 2 / 3  # 'meeting', 'moved' of 5 | 3 words
  assert second['rouge1'] == pytest.approx(100 * 2 * p * r / (p + r))
  config.task.source.eval_files = config.task.source.train_files  # no annotations there
  assert tasks.build_task(config.task, None).eval_annotations is None


def test_data_dir_argument_forms(data_dir):
  a = configlib.load_config_file(os.path.join(REPO, 'configs/ptb_lstm.py') + f':{data_dir}')
  b = configlib.load_config_file(os.path.join(REPO, 'configs/ptb_lstm.py') + f':data_dir={data_dir},runlocal')
  assert a.task.data_dir == b.task.data_dir == data_dir
  assert b.train.num_train_steps < a.train.num_train_steps


def test_missing_data_dir_is_a_clear_error(tmp_path):
  config = configlib.load_config_file(os.path.join(REPO, 'configs/sst2_bilstm.py') + f':{tmp_path}/nowhere')
  with pytest.raises(ValueError, match=r'glue.train\.tsv: file not found'):
    tasks.build_task(config.task, None)


def test_sst2_bilstm_trains_end_to_end(data_dir, tmp_path):
  from lmjax.train import loop  # pylint: disable=g-import-not-at-top
  config = configlib.load_config_file(os.path.join(REPO, 'configs/sst2_bilstm.py') + f':{data_dir},runlocal')
  config.model.emb_dim = config.model.hidden_dim = 8
  config.train.num_train_steps = config.train.eval_every = config.train.checkpoint_every = 2
  config.optimizer.warmup_steps = 1
  config.train.async_checkpointing = False
  metrics = loop.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics['loss'])


@pytest.mark.skipif(not os.path.isdir(REAL_DATA), reason=f'real corpora not found at {REAL_DATA} '
                    '(set LMJAX_DATA_DIR to the shared data folder to run this)')
@pytest.mark.parametrize('name', ['ptb_lstm', 'sst2_bilstm', 'wnut17_bilstm_crf'])
def test_real_corpora(name):
  config = configlib.load_config_file(os.path.join(REPO, f'configs/{name}.py') + f':{REAL_DATA}')
  task = tasks.build_task(config.task, None)
  expected = {'ptb_lstm': (26_000, 2_000), 'sst2_bilstm': (6_920, 872), 'wnut17_bilstm_crf': (3_394, 1_009)}
  n_train, n_eval = expected[name]
  assert len(task.train_examples) >= n_train and len(task.eval_examples) >= n_eval


def test_stream_context_rows_predict_every_target_from_the_tokens_before_it(data_dir, tmp_path):
  """stream_context=True: row targets = stream[s+1:s+1+T], inputs = stream[s:s+T]."""
  config = configlib.load_config_file(os.path.join(REPO, 'configs/shakespeare_char.py') + f':{data_dir},runlocal')
  config.task.source.stream_context = True
  task = tasks.build_task(config.task, str(tmp_path))
  text = open(f'{data_dir}/tinyshakespeare/input.txt', encoding='utf-8').read()
  train_text = text[:int(len(text) * 0.9)]
  stream = np.asarray(task.tokenizers['targets'].encode(train_text))
  t = config.task.max_target_length
  for i, ex in enumerate(task.train_examples):
    np.testing.assert_array_equal(ex['targets'], stream[i * t + 1:i * t + 1 + t])
    np.testing.assert_array_equal(ex['decoder_inputs'], stream[i * t:i * t + len(ex['targets'])])
  assert sum(len(ex['targets']) for ex in task.train_examples) == len(stream) - 1
  batch = next(task.train_iterator(4, seed=0))
  assert batch['decoder_inputs'].shape == batch['targets'].shape == (4, t)
  config.task.batching.mode = 'pack'
  with pytest.raises(ValueError, match=r"task.batching.mode.*'plain' or 'windows' \(stream_context=True\)"):
    configlib.validate(config)


def test_wnut_traindev_weights_dev_k_fold_and_rejects_bad_counts():
  load = lambda arg: configlib.load_config_file(
      os.path.join(REPO, 'configs/wnut17_bilstm_crf.py') + ':/data' + arg)
  train, dev = 'wnut17/wnut17train.conll', 'wnut17/emerging.dev.conll'
  assert list(load('').task.source.train_files) == [train]
  assert list(load(',traindev').task.source.train_files) == [train, dev]
  assert list(load(',traindev=3').task.source.train_files) == [train, dev, dev, dev]
  for bad in ('0', 'two'):
    with pytest.raises(ValueError, match=f'traindev={bad}: expected a positive integer'):
      load(f',traindev={bad}')
