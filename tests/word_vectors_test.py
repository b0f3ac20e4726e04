"""Pretrained word vectors: file formats, vocabulary extension, embedding init, and their use.

config.task.tokenizer.vectors names a GloVe / word2vec text file; vectors_vocab adds its
leading words to the vocabulary; a fresh run copies the vectors into the embedding rows.
"""

import collections
import gzip
import os
import tarfile

import numpy as np
import pytest

from configs import model_sections
from lmjax.config import configlib
from lmjax.data import sources
from lmjax.data import tasks
from lmjax.data import tokenizers as tok_lib
from lmjax.data import word_vectors
from lmjax.train import loop
from tests import scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM = 8


def write_vectors(path, vectors, header=True):
  opener = gzip.open if str(path).endswith('.gz') else open
  with opener(str(path), 'wt', encoding='utf-8') as f:
    if header:
      f.write(f'{len(vectors)} {len(next(iter(vectors.values())))}\n')
    for word, vec in vectors.items():
      f.write(word + ' ' + ' '.join(f'{x:.6f}' for x in vec) + '\n')
  return str(path)


def test_glove_and_word2vec_files_plain_and_gz(tmp_path):
  vecs = {'The': [1.0, 2.0], 'the': [3.0, 4.0], 'new york': [5.0, 6.0], 'cat': [7.0, 8.0]}
  for name, header in (('g.txt', False), ('w.txt.gz', True)):
    path = write_vectors(tmp_path / name, vecs, header)
    assert word_vectors.leading_words(path, 3) == ['The', 'the', 'new york']
    # Lowercased, the first (most frequent) casing wins and duplicates are dropped.
    assert word_vectors.leading_words(path, 3, lowercase=True) == ['the', 'new york', 'cat']
    table, dim = word_vectors.read(path, {'the', 'cat', 'dog'}, lowercase=True)
    assert dim == 2 and sorted(table) == ['cat', 'the']
    np.testing.assert_array_equal(table['the'], [1.0, 2.0])
    rows, found = word_vectors.embedding_rows(['<pad>', 'cat', 'dog', 'new york'], path)
    np.testing.assert_array_equal(found, [False, True, False, True])
    np.testing.assert_array_equal(rows, [[0, 0], [7, 8], [0, 0], [5, 6]])


def test_bad_vector_files_name_the_file_and_line(tmp_path):
  ragged = tmp_path / 'ragged.txt'
  ragged.write_text('a 1 2 3\nb 1 2\n', encoding='utf-8')
  with pytest.raises(sources.DataError, match=r'ragged\.txt:2: expected a word and 3 numbers'):
    word_vectors.read(str(ragged))
  words = tmp_path / 'words.txt'
  words.write_text('a 1 2\nb 1 x\n', encoding='utf-8')
  with pytest.raises(sources.DataError, match=r"words\.txt:2: the vector of 'b' is not all numbers"):
    word_vectors.read(str(words))
  with pytest.raises(sources.DataError, match=r'missing\.txt'):
    word_vectors.leading_words(str(tmp_path / 'missing.txt'), 5)
  with pytest.raises(sources.DataError, match=r'no vector for any of the 2 vocabulary words'):
    word_vectors.embedding_rows(['x', 'y'], str(words))


def sentiment_data(tmp_path, seed=0):
  """Train sentences use sentiment words p0..p9 / n0..n9; eval only p10..p19 / n10..n19.

  The vectors put every p word near +u and every n word near −u, so a model can classify
  eval sentences only through the vectors of words it never saw in training.
  """
  rng = np.random.default_rng(seed)
  fillers = [f'f{i}' for i in range(8)]

  def sentence(words):
    label = int(rng.integers(2))
    row = list(rng.choice(fillers, int(rng.integers(3, 6))))
    row.insert(int(rng.integers(len(row) + 1)), ('p' if label else 'n') + str(rng.choice(words)))
    return ' '.join(row), label

  data = tmp_path / 'data'
  data.mkdir()
  train = [sentence(range(10)) for _ in range(400)]
  (data / 'train.tsv').write_text('sentence\tlabel\n' + ''.join(f'{s}\t{y}\n' for s, y in train))
  for split in ('dev', 'test'):
    rows = [sentence(range(10, 20)) for _ in range(128)]
    (data / split).write_text(''.join(f'{y} {s}\n' for s, y in rows))
  u = np.eye(DIM)[0]
  vectors = {'<unk>': rng.normal(size=DIM)}  # a file word that is also a special: skipped
  vectors.update({f: 0.3 * rng.normal(size=DIM) for f in fillers})
  for i in range(20):
    vectors[f'p{i}'] = u + 0.1 * rng.normal(size=DIM)
    vectors[f'n{i}'] = -u + 0.1 * rng.normal(size=DIM)
  write_vectors(data / 'vectors.txt', vectors)
  return str(data), vectors


def config_for(data_dir, vectors='vectors.txt', vectors_vocab=100, steps=150):
  config = configlib.load_config_file(os.path.join(REPO, 'configs/sst2_bilstm.py') +
                                      f':{data_dir},runlocal')
  config.task.source.train_files = ['train.tsv']
  config.task.source.eval_files = ['dev']
  config.task.source.test_files = ['test']
  config.task.source.max_train_examples = config.task.source.max_eval_examples = 0
  config.task.word_chars = 0
  config.task.max_input_length = 8  # one bucket: one compiled shape
  config.task.batching.bucket_lengths = [8]
  config.task.batching.max_tokens = 128
  config.model.char_dim = 0
  config.model.emb_dim, config.model.hidden_dim = DIM, 16
  config.task.tokenizer.vectors = vectors
  config.task.tokenizer.vectors_vocab = vectors_vocab
  config.model.dropout_rate = 0.0
  config.train.ema_decay = 0.0
  config.optimizer.learning_rate = 3e-3
  config.train.num_train_steps = steps
  config.train.eval_every = config.train.checkpoint_every = steps
  config.train.async_checkpointing = False
  config.eval.num_samples = 0
  return config


@pytest.mark.parametrize('family', ['lstm', 'transformer'])
def test_vocab_extension_and_embedding_rows_of_a_fresh_run(tmp_path, family):
  data_dir, vectors = sentiment_data(tmp_path)
  config = config_for(data_dir, vectors_vocab=100)
  if family == 'transformer':
    config.model = model_sections.transformer_encoder(emb_dim=DIM, qkv_dim=DIM, num_heads=2,
                                                      mlp_dim=16, num_encoder_layers=1, max_len=64)
  config.train.ema_decay = 0.99
  trainer = loop.Trainer(config, str(tmp_path / 'wd'))
  tokens = trainer.task.tokenizers['inputs'].tokens
  # Training words first, then the file's words training never saw (p10.., n10..).
  assert {'p15', 'n19', 'f3'} <= set(tokens) and len(tokens) == len(set(tokens)) == 3 + 8 + 40
  assert trainer.restore_latest() == 0
  for params in (trainer.state.params, trainer.state.ema_params):
    emb = np.asarray(params['embed']['embedding'])
    for word in ('p3', 'n17', 'f0'):
      np.testing.assert_allclose(emb[tokens.index(word)], vectors[word], atol=1e-6)
    assert not np.allclose(emb[tok_lib.UNK_ID], vectors['<unk>'])  # specials stay random
  # Without vectors_vocab, eval-only words get no id.
  plain = tasks.build_task(config_for(data_dir, vectors_vocab=0).task, str(tmp_path / 'wd0'))
  assert 'p15' not in plain.tokenizers['inputs'].tokens


def test_vectors_classify_words_training_never_saw_and_resume_keeps_trained_rows(tmp_path):
  data_dir, vectors = sentiment_data(tmp_path)
  workdir = str(tmp_path / 'wd')
  metrics = loop.train_and_evaluate(config_for(data_dir, steps=100), workdir)
  # Every eval sentence's only informative word is unseen in training: without its vector
  # it would be <unk> and accuracy would be at chance (50 %; 89.8 % measured with vectors).
  assert metrics['accuracy'] > 80, metrics
  resumed = loop.Trainer(config_for(data_dir, steps=100), workdir)
  assert resumed.restore_latest() == 100
  tokens = resumed.task.tokenizers['inputs'].tokens
  trained = np.asarray(resumed.state.params['embed']['embedding'])[tokens.index('f0')]
  assert not np.allclose(trained, vectors['f0'], atol=1e-3)  # trained row, not re-initialised


def test_bad_vector_settings_get_clear_errors(tmp_path):
  data_dir, _ = sentiment_data(tmp_path)
  with pytest.raises(configlib.ConfigError, match=r'config\.task\.tokenizer\.vectors=.*nope\.txt.*'
                     r'not found'):
    configlib.validate(config_for(data_dir, vectors='nope.txt'), check_paths=True)
  config = config_for(data_dir)
  config.model.emb_dim = 12
  trainer = loop.Trainer(config, str(tmp_path / 'wd'))
  with pytest.raises(configlib.ConfigError, match=r'8-dimensional vectors but the embedding '
                     r"'embed' is 12 wide: set config\.model\.emb_dim=8"):
    trainer.restore_latest()
  # The vocabulary cached in a workdir records the vectors settings it was built with.
  config = config_for(data_dir, vectors_vocab=5)
  with pytest.raises(sources.DataError, match=r'vectors_vocab: file 100 vs config 5'):
    tasks.build_task(config.task, str(tmp_path / 'wd'))
  config = config_for(data_dir)
  config.task.tokenizer.type = 'sentencepiece'
  with pytest.raises(configlib.ConfigError, match=r"config\.task\.tokenizer\.type=.*expected 'word'"):
    configlib.validate(config)


def test_corpus_lines_by_file_name(tmp_path):
  (tmp_path / 'a.conll').write_text('Paris\tB-location\nis\tO\n\nok\tO\n', encoding='utf-8')
  (tmp_path / 'p.tsv').write_text('sentence\tlabel\ngood film \t1\n', encoding='utf-8')
  member = tmp_path / 'mail.txt'
  member.write_text('Hi Bob,\nsee you\n', encoding='utf-8')
  with tarfile.open(tmp_path / 'm.tar.gz', 'w:gz') as archive:
    archive.add(member, arcname='x/mail.txt')
  read = lambda name: list(word_vectors.corpus_lines(str(tmp_path / name)))
  assert read('a.conll') == ['Paris is', 'ok']
  assert read('p.tsv') == ['good film ']
  assert read('m.tar.gz') == ['Hi Bob,', 'see you']
  with pytest.raises(sources.DataError, match=r'nope\.conll: file not found'):
    read('nope.conll')


def test_train_word_vectors_script_learns_cooccurrence(tmp_path):
  """word2vec on two topics whose words never share a line: topic words end up closer."""
  import sys  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  lines = [' '.join(rng.choice([f'{t}{i}' for i in range(6)], 8)) for t in 'ab' for _ in range(300)]
  corpus = tmp_path / 'corpus.txt.gz'
  with gzip.open(corpus, 'wt', encoding='utf-8') as f:
    f.write('\n'.join(['A0 A0'] + lines) + '\n')
  script = os.path.join(REPO, 'experiments', 'train_word_vectors.py')

  def train(out):
    proc = scripts.run([sys.executable, script, f'--input=words:{corpus}', f'--output={out}',
                        '--dim=16', '--min_count=1', '--epochs=40', '--lowercase'],
                       text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out, 'rb') as f:
      return f.read()

  out = tmp_path / 'new' / 'vectors.txt'  # the folder is created
  assert train(out) == train(tmp_path / 'again.txt')  # another process, the same vectors
  vectors, dim = word_vectors.read(str(out))
  assert dim == 16 and len(vectors) == 12 and 'A0' not in vectors  # lowercased into a0
  unit = {w: v / np.linalg.norm(v) for w, v in vectors.items()}
  same = np.mean([unit[f'a{i}'] @ unit[f'a{j}'] for i in range(6) for j in range(i)])
  cross = np.mean([unit[f'a{i}'] @ unit[f'b{j}'] for i in range(6) for j in range(6)])
  assert same > cross + 0.3, (same, cross)
  counts = collections.Counter(' '.join(['a0 a0'] + lines).split())
  order = [counts[w] for w in word_vectors.leading_words(str(out), 12)]
  assert order == sorted(order, reverse=True)  # most frequent first
  proc = scripts.run([sys.executable, script, f'--input={tmp_path}/nope.txt', f'--output={out}'],
                     text=True, timeout=300)
  assert proc.returncode == 2 and 'error: --input: ' in proc.stderr and 'nope.txt: file not found' in proc.stderr
  assert word_vectors.read(str(out))[1] == 16  # the earlier file is untouched


@pytest.mark.parametrize('name', ['sst2_bilstm', 'wnut17_bilstm_crf'])
def test_real_data_configs_take_a_vectors_argument(name):
  path = os.path.join(REPO, 'configs', f'{name}.py')
  config = configlib.load_config_file(f'{path}:/data,vectors=/v/local.txt,vectors_dim=50')
  assert config.task.tokenizer.vectors == '/v/local.txt' and config.model.emb_dim == 50
  assert config.task.tokenizer.vectors_vocab > 0
  assert configlib.load_config_file(f'{path}:/data').task.tokenizer.vectors == ''
