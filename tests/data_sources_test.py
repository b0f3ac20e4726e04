"""Data sources: local text formats, TFDS (through tfds.testing.mock_data) and bad input."""

import gzip
import os
import tarfile

import pytest

from lmjax.config import configlib
from lmjax.data import sources
from lmjax.data import tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, text, mode='w'):
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  opener = gzip.open if str(path).endswith('.gz') else open
  with opener(str(path), mode if mode == 'wb' else 'wt', **({} if mode == 'wb' else {'encoding': 'utf-8'})) as f:
    f.write(text)
  return str(path)


def test_parallel_plain_and_gz(tmp_path):
  src = write(tmp_path / 'a.en', 'a cat\nthe dog\n')
  tgt = write(tmp_path / 'a.de.gz', 'eine katze\r\nder hund\r\n')
  assert sources.parallel_text(src, tgt) == [('a cat', 'eine katze'), ('the dog', 'der hund')]


def test_parallel_line_counts_differ(tmp_path):
  src = write(tmp_path / 'a.en', 'a\nb\nc\n')
  tgt = write(tmp_path / 'a.de', 'x\ny\n')
  with pytest.raises(sources.DataError, match=r'a\.en has 3 lines but .*a\.de has 2'):
    sources.parallel_text(src, tgt)


def test_missing_and_empty_files(tmp_path):
  with pytest.raises(sources.DataError, match='nope.txt: file not found'):
    sources.read_lines(str(tmp_path / 'nope.txt'))
  with pytest.raises(sources.DataError, match='empty.txt: file is empty'):
    sources.read_lines(write(tmp_path / 'empty.txt', '\n\n'))


def test_non_utf8_names_file_and_line_and_can_replace(tmp_path):
  path = write(tmp_path / 'bad.txt', b'fine\nalso fine\nbad \xff byte\n', 'wb')
  with pytest.raises(sources.DataError, match=r'bad\.txt:3: not valid UTF-8.*encoding_errors'):
    sources.read_lines(path)
  assert sources.read_lines(path, errors='replace')[2] == 'bad \ufffd byte'


def test_monolingual_line_and_document(tmp_path):
  path = write(tmp_path / 'm.txt', 'one\n\ntwo three\n')
  assert sources.monolingual_text(path) == ['one', 'two three']
  assert sources.monolingual_text(path, 'document') == ['one\n\ntwo three\n']


def test_tsv_header_columns_and_labels(tmp_path):
  path = write(tmp_path / 't.tsv', 'sentence\tlabel\ngood film\t1\nbad film\t0\n')
  assert sources.tsv(path, ['0', '1']) == [(('good film',), 1), (('bad film',), 0)]
  pair = write(tmp_path / 'p.tsv', 'a\tb\tyes\n')
  assert sources.tsv(pair, ['no', 'yes'], num_text_columns=2) == [(('a', 'b'), 1)]
  bad_cols = write(tmp_path / 'c.tsv', 'sentence\tlabel\ngood\t1\nno label here\n')
  with pytest.raises(sources.DataError, match=r'c\.tsv:3: expected 2 tab-separated columns'):
    sources.tsv(bad_cols, ['0', '1'])
  bad_label = write(tmp_path / 'l.tsv', 'good\t1\nodd\t7\n')
  with pytest.raises(sources.DataError, match=r"l\.tsv:2: label '7' is not in the configured label set"):
    sources.tsv(bad_label, ['0', '1'])


def test_labeled_lines(tmp_path):
  path = write(tmp_path / 's.txt', '1 a fine film .\n0 dull\n')
  assert sources.labeled_lines(path, ['0', '1']) == [(('a fine film .',), 1), (('dull',), 0)]
  with pytest.raises(sources.DataError, match=r"s2\.txt:1: label '2'"):
    sources.labeled_lines(write(tmp_path / 's2.txt', '2 what\n'), ['0', '1'])


def test_conll(tmp_path):
  path = write(tmp_path / 'n.conll', 'Paris\tB-location\nis\tO\n\n\nBob\tB-person\r\n')
  assert sources.conll(path) == [(['Paris', 'is'], ['B-location', 'O']), (['Bob'], ['B-person'])]
  bad = write(tmp_path / 'b.conll', 'Paris\tB-location\nis\n')
  with pytest.raises(sources.DataError, match=r'b\.conll:2: .*the tag is missing'):
    sources.conll(bad)


EMAIL = 'Hi all,\nthe meeting moved.\n\n@subject\nMeeting moved\n'
EMAIL_ANN = EMAIL + '\n@ann0\nmeeting change\n\n@ann1\nnew time\n'


def test_summaries_dir_and_tar(tmp_path):
  write(tmp_path / 'd' / 'b.subject', EMAIL_ANN)
  write(tmp_path / 'd' / 'a.subject', EMAIL)
  docs = sources.summaries(str(tmp_path / 'd'))
  assert [d['summary'] for d in docs] == ['Meeting moved'] * 2
  assert docs[0]['document'] == 'Hi all, the meeting moved.'
  assert docs[1]['annotations'] == ['meeting change', 'new time'] and docs[0]['annotations'] == []
  tar_path = str(tmp_path / 'x.tar.gz')
  with tarfile.open(tar_path, 'w:gz') as tar:
    tar.add(str(tmp_path / 'd'), arcname='split')
  assert [d['summary'] for d in sources.summaries(tar_path)] == ['Meeting moved'] * 2
  write(tmp_path / 'e' / 'c.subject', 'no subject here\n')
  with pytest.raises(sources.DataError, match=r'c\.subject: no "@subject" line'):
    sources.summaries(str(tmp_path / 'e'))


def test_tokenizer_in_workdir_must_match_config(tmp_path):
  write(tmp_path / 'data' / 'lm.txt', 'the cat sat\non the mat\n' * 20)
  config = configlib.load_config_file(os.path.join(REPO, 'configs/ptb_lstm.py') + f':{tmp_path}/data')
  config.task.source.train_files = ['lm.txt']
  config.task.source.eval_files = ['lm.txt']
  config.task.max_target_length = 8
  tasks.build_task(config.task, str(tmp_path / 'wd'))
  tasks.build_task(config.task, str(tmp_path / 'wd'))  # resume: reuses the cached vocabulary
  config.task.tokenizer.vocab_size = 5
  with pytest.raises(sources.DataError, match=r'vocab\.json was built with other tokenizer settings.*'
                     r'vocab_size: file 0 vs config 5'):
    tasks.build_task(config.task, str(tmp_path / 'wd'))


TFDS_CONFIGS = ['tfds_wmt14_de_en', 'tfds_wmt17_de_en', 'tfds_lm1b', 'tfds_imdb', 'tfds_glue_sst2',
                'tfds_cnn_dailymail']


@pytest.mark.parametrize('name', TFDS_CONFIGS)
def test_tfds_config_with_mock_data(tmp_path, name):
  tfds = pytest.importorskip('tensorflow_datasets', reason="tensorflow-datasets not installed "
                             "(pip install -e '.[test]')")
  config = configlib.load_config_file(os.path.join(REPO, f'configs/{name}.py') + ':runlocal')
  config.task.tokenizer.vocab_size = min(config.task.tokenizer.vocab_size, 60) or 0
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    task = tasks.build_task(config.task, str(tmp_path))
  assert task.num_train_examples() > 0 and len(task.eval_examples) == 20
  batch = next(task.train_iterator(config.train.batch_size, seed=0))
  key = {'seq2seq': 'targets', 'lm': 'targets', 'classify': 'label', 'tag': 'tags'}[task.kind]
  assert batch[key].shape[0] % config.train.batch_size == 0  # bucket mode: a multiple
  if task.kind == 'classify':
    assert set(batch['label'].tolist()) <= {0, 1}
