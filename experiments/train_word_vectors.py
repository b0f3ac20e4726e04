r"""Trains word vectors (word2vec skip-gram, gensim) on local text for config.task.tokenizer.vectors.

    python experiments/train_word_vectors.py --input=words:emails.tar.gz,train.conll,phrases.tsv,tok.txt.gz \
        --output=vectors.txt --dim=100 --lowercase

Inputs are read by their names (see `lmjax.data.word_vectors.corpus_lines`: archives,
CoNLL first columns, TSV first columns, plain or gzipped lines) and split on whitespace;
a `words:` prefix splits that input's raw text into runs of word characters and single
punctuation marks instead. Needs `pip install -e '.[vectors]'`. Use only text that is not
the test data of the tasks the vectors will serve.
"""

import re
import sys

from absl import app
from absl import flags

from lmjax.data import sources
from lmjax.data import word_vectors

_INPUT = flags.DEFINE_list('input', None, 'Corpus files, each optionally prefixed "words:" '
                           '(tokenize raw text); .gz, .tar.gz, .conll, .tsv allowed.')
_OUTPUT = flags.DEFINE_string('output', None, 'Vectors file to write (word2vec text format).')
_DIM = flags.DEFINE_integer('dim', 100, 'Vector width (= config.model.emb_dim).')
_WINDOW = flags.DEFINE_integer('window', 5, 'Context window in words.')
_MIN_COUNT = flags.DEFINE_integer('min_count', 3, 'Ignore rarer words.')
_EPOCHS = flags.DEFINE_integer('epochs', 10, 'Passes over the corpus.')
_LOWERCASE = flags.DEFINE_bool('lowercase', False, 'Lowercase the text first.')
_SEED = flags.DEFINE_integer('seed', 0, 'Training seed.')
_WORKERS = flags.DEFINE_integer('workers', 1, 'Training threads (1 = reproducible).')
flags.mark_flags_as_required(['input', 'output'])

_WORDS = re.compile(r'\w+|[^\w\s]')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name, value in (('--dim', _DIM.value), ('--window', _WINDOW.value),
                      ('--min_count', _MIN_COUNT.value), ('--epochs', _EPOCHS.value)):
    if value < 1:
      raise app.UsageError(f'{name}={value}: expected a positive integer')
  sentences = []
  try:
    for spec in _INPUT.value:
      raw = spec.startswith('words:')
      split = _WORDS.findall if raw else str.split
      for line in word_vectors.corpus_lines(spec[len('words:'):] if raw else spec):
        sentences.append(split(line.lower() if _LOWERCASE.value else line))
  except sources.DataError as e:
    print(f'error: --input: {e}', file=sys.stderr)
    sys.exit(2)
  sentences = [s for s in sentences if s]
  count = word_vectors.train_word2vec(sentences, _OUTPUT.value, _DIM.value, _WINDOW.value,
                                      _MIN_COUNT.value, _EPOCHS.value, _SEED.value, _WORKERS.value)
  print(f'{count} words, {sum(map(len, sentences))} training tokens in {len(sentences)} lines '
        f'-> {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
