"""Pretrained word vectors (GloVe / word2vec / fastText text files) for word vocabularies.

A vectors file has one word per line followed by its D floats, separated by spaces
(GloVe); word2vec and fastText `.vec` files start with a `count dim` header line. `.gz`
files are read as gzip. Files list frequent words first, which is what
`leading_words` relies on to extend a vocabulary.

`config.task.tokenizer.vectors` names the file; `config.task.tokenizer.vectors_vocab`
adds the file's first N words to the vocabulary (so that words training never saw keep a
pretrained row instead of becoming <unk>, as Lample et al. 2016 do); the trainer then
copies the vectors into the input embedding rows of a fresh run (`lmjax.train.loop`).
"""

import io
import os
import tempfile
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from lmjax import fileio
from lmjax.data import sources


def resolve(path: str, data_dir: str = '') -> str:
  """The vectors path as the config means it: relative to config.task.data_dir unless absolute."""
  return path if os.path.isabs(path) or fileio.is_remote(path) or not data_dir else \
      fileio.join(data_dir, path)


def _open(path: str):
  return io.TextIOWrapper(sources.open_data(path), encoding='utf-8')


def _entries(path: str) -> Iterator[Tuple[int, str, List[str]]]:
  """Yields (line number, word, float fields) for every vector line; checks the widths.

  Raises:
    sources.DataError: missing/unreadable file, or a line with another width than the first.
  """
  dim = None
  try:
    with _open(path) as f:
      for n, line in enumerate(f, 1):
        fields = line.rstrip('\n').rstrip(' ').split(' ')
        if n == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
          dim = int(fields[1])  # word2vec / fastText header: count dim
          continue
        if len(fields) == 1 and not fields[0]:
          continue
        if dim is None:
          dim = len(fields) - 1
          if dim < 1:
            raise sources.DataError(f'{path}:{n}: expected "word v1 ... vD", got {line[:80]!r}')
        if len(fields) < dim + 1:
          raise sources.DataError(f'{path}:{n}: expected a word and {dim} numbers (the width of '
                                  f'the first vector), got {len(fields) - 1} fields')
        # A few GloVe words contain spaces: the last `dim` fields are the vector.
        yield n, ' '.join(fields[:-dim]), fields[-dim:]
  except OSError as e:
    raise sources.DataError(f'word vectors file {path}: {e}') from e
  except UnicodeDecodeError as e:
    raise sources.DataError(f'word vectors file {path} is not UTF-8 text ({e})') from e


def leading_words(path: str, count: int, lowercase: bool = False) -> List[str]:
  """The first `count` distinct words of a vectors file (its most frequent words).

  Args:
    path: vectors file.
    count: how many words.
    lowercase: lowercase them (for a lowercasing tokenizer); duplicates are dropped.

  Returns:
    The words, in file order.
  """
  words, seen = [], set()
  if count <= 0:
    return words
  for _, word, _ in _entries(path):
    word = word.lower() if lowercase else word
    if word and word not in seen:
      seen.add(word)
      words.append(word)
      if len(words) == count:
        break
  return words


def read(path: str, wanted: Optional[Set[str]] = None,
         lowercase: bool = False) -> Tuple[Dict[str, np.ndarray], int]:
  """Reads the vectors of the words in `wanted` (all words when None).

  Args:
    path: vectors file.
    wanted: words to keep (after lowercasing), or None for all.
    lowercase: lowercase the file's words; the first (most frequent) casing wins.

  Returns:
    (word → float32 (D,) vector, D). D is 0 for a file without vectors.

  Raises:
    sources.DataError: unreadable file, ragged widths or a field that is not a number.
  """
  vectors: Dict[str, np.ndarray] = {}
  dim = 0
  for n, word, fields in _entries(path):
    dim = len(fields)
    word = word.lower() if lowercase else word
    if word in vectors or (wanted is not None and word not in wanted):
      continue
    try:
      vectors[word] = np.asarray(fields, dtype=np.float32)
    except ValueError as e:
      raise sources.DataError(f'{path}:{n}: the vector of {word!r} is not all numbers ({e})') from e
  return vectors, dim


def embedding_rows(tokens: Sequence[str], path: str,
                   lowercase: bool = False) -> Tuple[np.ndarray, np.ndarray]:
  """Looks up every vocabulary token in a vectors file.

  Args:
    tokens: the vocabulary, id → token.
    path: vectors file.
    lowercase: whether the tokenizer lowercases (file words are then lowercased too).

  Returns:
    (table float32 (V, D) with zero rows for tokens the file lacks, found bool (V,)).

  Raises:
    sources.DataError: unreadable file, or no vocabulary word has a vector.
  """
  vectors, dim = read(path, set(tokens), lowercase)
  if not vectors:
    raise sources.DataError(f'word vectors file {path} has no vector for any of the '
                            f'{len(tokens)} vocabulary words (is it the right file and casing?)')
  table = np.zeros((len(tokens), dim), np.float32)
  found = np.zeros((len(tokens),), bool)
  for i, token in enumerate(tokens):
    if token in vectors:
      table[i], found[i] = vectors[token], True
  return table, found


def corpus_lines(path: str) -> Iterator[str]:
  """Text lines of one corpus file, by its name.

  `.tar.gz` / `.tgz`: every line of every member; `.conll`: one line per sentence (the
  token column's words); `.tsv`: the first column, after a header line; anything else
  (`.gz` allowed): its lines. Bytes that are not UTF-8 become U+FFFD.

  Raises:
    sources.DataError: a file that cannot be read.
  """
  if path.endswith(('.tar.gz', '.tgz')):
    import tarfile  # pylint: disable=g-import-not-at-top
    try:
      with sources.open_data(path) as f, tarfile.open(fileobj=f, mode='r:*') as archive:
        for member in archive:
          if member.isfile():
            yield from archive.extractfile(member).read().decode('utf-8', 'replace').splitlines()
    except (OSError, tarfile.TarError) as e:
      raise sources.DataError(f'corpus file {path}: {e}') from e
  elif path.endswith('.conll'):
    yield from (' '.join(tokens) for tokens, _ in sources.conll(path, errors='replace'))
  elif path.endswith('.tsv'):
    yield from (line.split('\t')[0] for line in sources.read_lines(path, errors='replace')[1:])
  else:
    yield from sources.read_lines(path, errors='replace')


def train_word2vec(sentences: Sequence[List[str]], output: str, dim: int = 100, window: int = 5,
                   min_count: int = 3, epochs: int = 10, seed: int = 0, workers: int = 1,
                   skip_gram: bool = True) -> int:
  """Trains word2vec (gensim) on tokenized sentences; writes a word2vec text file.

  The file lists words most frequent first, as `leading_words` expects, and is written
  atomically (a temporary file renamed), so an existing file is never left half-written.

  Args:
    sentences: lists of tokens.
    output: the vectors file to write (`.gz` for gzip).
    dim: vector width (must equal config.model.emb_dim of the runs that use it).
    window: context window in words.
    min_count: ignore words rarer than this.
    epochs: passes over the corpus.
    seed: training seed (with workers=1 the same corpus gives the same file).
    workers: training threads.
    skip_gram: skip-gram (else CBOW).

  Returns:
    The number of words written.
  """
  from gensim.models import Word2Vec  # pylint: disable=g-import-not-at-top
  model = Word2Vec(sentences=sentences, vector_size=dim, window=window, min_count=min_count,
                   epochs=epochs, seed=seed, workers=workers, sg=int(skip_gram))
  fileio.makedirs(fileio.parent(output))
  with tempfile.TemporaryDirectory(prefix='lmjax-vectors-') as tmp:
    local = os.path.join(tmp, fileio.basename(output))  # gensim writes local files only
    model.wv.save_word2vec_format(local, binary=False)
    with open(local, 'rb') as f:  # local disk: gensim's output, copied to `output` below
      fileio.write_bytes(output, f.read())
  return len(model.wv)
