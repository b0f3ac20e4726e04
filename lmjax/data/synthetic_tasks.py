"""Built-in synthetic tasks of the other kinds, derived from the dates generator.

Same dates, formats and held-out split as `lmjax.data.synthetic` (eval dates never
occur in training), same word vocabulary:

| task | kind | example |
|---|---|---|
| synthetic_dates_lm       | lm       | `twenty third of march nineteen ninety four </s>` (source or ISO target strings) |
| synthetic_dates_classify | classify | `0 3 / 2 3 / 1 9 9 4` → `march` (12 months; the month must be found in any format) |
| synthetic_dates_tag      | tag      | `twenty third of march …` → `B-DAY I-DAY O B-MONTH B-YEAR I-YEAR I-YEAR` |

Config fields (`config.task`): name, num_train, num_eval, data_seed, max_input_length
(classify, tag), max_target_length (lm), lm_text ('source' or 'target', lm only).
"""

import datetime
from typing import List, Mapping, Optional, Tuple

import numpy as np

from lmjax.data import synthetic
from lmjax.data import tokenizers as tok_lib
from lmjax.data.task_def import Task
from lmjax.data.text_common import load_or_build_tokenizer

# Tag names: index 0 is padding, real tags from 1 (see lmjax/models/CONTRACT.md).
TAG_NAMES = [tok_lib.PAD, 'O', 'B-DAY', 'I-DAY', 'B-MONTH', 'I-MONTH', 'B-YEAR', 'I-YEAR']
LM_TEXTS = ('source', 'target')


def sample_dates(split: str, num_examples: int, seed: int) -> List[Tuple[datetime.date, int, int]]:
  """Deterministic (date, format, reading) triples, selected as `synthetic.dates_pairs` does.

  Args:
    split: 'train' or 'eval' (disjoint sets of dates).
    num_examples: how many distinct triples.
    seed: sampling seed.

  Returns:
    List of (date, source format 0..3, reading variant 0..1).
  """
  if split not in ('train', 'eval'):
    raise ValueError(f"synthetic dates split must be 'train' or 'eval', got {split!r}")
  dates = synthetic.split_dates(split)
  per_date = synthetic.NUM_FORMATS * 2
  if num_examples > len(dates) * per_date:
    raise ValueError(f'config.task: asked for {num_examples} {split} examples, '
                     f'the dates task has {len(dates) * per_date}')
  rng = np.random.default_rng([seed, 0 if split == 'train' else 1])
  out = []
  for p in rng.choice(len(dates) * per_date, size=num_examples, replace=False):
    date_idx, rest = divmod(int(p), per_date)
    fmt, variant = divmod(rest, 2)
    out.append((dates[date_idx], fmt, variant))
  return out


def _span(text: str, label: str) -> List[Tuple[str, str]]:
  """BIO-tagged words of one field, e.g. ('twenty third', 'DAY') → B-DAY, I-DAY."""
  words = text.split()
  if label == 'O':
    return [(w, 'O') for w in words]
  return [(w, ('B-' if i == 0 else 'I-') + label) for i, w in enumerate(words)]


def tagged_source(date: datetime.date, fmt: int, variant: int) -> List[Tuple[str, str]]:
  """The source sentence of `synthetic.render` as (word, BIO tag) pairs."""
  y, m, d = date.year, date.month, date.day
  month = synthetic.MONTHS[m - 1]
  year = _span(synthetic.year_words(y, variant), 'YEAR')
  if fmt == 0:
    out = _span(synthetic.ordinal_words(d), 'DAY') + _span('of', 'O') + _span(month, 'MONTH') + year
  elif fmt == 1:
    out = _span(month, 'MONTH') + _span(synthetic.ordinal_words(d), 'DAY') + year
  elif fmt == 2:
    out = (_span(' '.join(str(d)), 'DAY') + _span(month[:3], 'MONTH') +
           _span(synthetic.digits(y, 4), 'YEAR'))
  else:
    out = (_span(synthetic.digits(m, 2), 'MONTH') + _span('/', 'O') +
           _span(synthetic.digits(d, 2), 'DAY') + _span('/', 'O') +
           _span(synthetic.digits(y, 4), 'YEAR'))
  source = synthetic.render(date, fmt, variant)[0]
  if ' '.join(w for w, _ in out) != source:  # the tags must describe exactly the rendered text
    raise AssertionError(f'tagged source {out} does not match {source!r}')
  return out


def _vocab(workdir: Optional[str]):
  vocab = load_or_build_tokenizer(
      workdir, 'vocab', lambda: tok_lib.VocabTokenizer(synthetic.vocabulary(), 'word'))
  if vocab.tokens != tok_lib.VocabTokenizer(synthetic.vocabulary(), 'word').tokens:
    raise ValueError(f'{workdir}/tokenizers/vocab.json does not match the synthetic task '
                     'vocabulary: use a fresh --workdir')
  return vocab


def _splits(cfg: Mapping):
  return (sample_dates('train', cfg['num_train'], cfg['data_seed']),
          sample_dates('eval', cfg['num_eval'], cfg['data_seed']))


def synthetic_dates_lm(cfg: Mapping, workdir: Optional[str]):
  """Language modelling over the dates task's source (or ISO target) strings, one per example.

  Each example is the string's tokens + EOS, cut to config.task.max_target_length. With
  config.train.stateful the trainer concatenates them into one stream.
  """
  if cfg['lm_text'] not in LM_TEXTS:
    raise ValueError(f"config.task.lm_text={cfg['lm_text']!r}: expected one of {LM_TEXTS}")
  vocab = _vocab(workdir)
  length = cfg['max_target_length']
  column = LM_TEXTS.index(cfg['lm_text'])

  def encode(samples):
    texts = [synthetic.render(*s)[column] for s in samples]
    return texts, [{'targets': np.asarray((vocab.encode(t) + [tok_lib.EOS_ID])[:length], np.int32)}
                   for t in texts]

  (_, train), (eval_texts, evals) = map(encode, _splits(cfg))
  return Task(name='synthetic_dates_lm', kind='lm', tokenizers={'targets': vocab},
                       lengths={'targets': length}, train_examples=train, eval_examples=evals,
                       eval_sources=[''] * len(evals), eval_references=eval_texts,
                       bleu_tokenize='none')


def synthetic_dates_classify(cfg: Mapping, workdir: Optional[str]):
  """Month of the date (12 classes) from the source sentence, in any of the four formats."""
  vocab = _vocab(workdir)
  n = cfg['max_input_length']

  def encode(samples):
    sources = [synthetic.render(*s)[0] for s in samples]
    examples = [{'inputs': np.asarray(vocab.encode(src)[:n], np.int32),
                 'label': np.int32(date.month - 1)} for src, (date, _, _) in zip(sources, samples)]
    return sources, examples

  train_samples, eval_samples = _splits(cfg)
  _, train = encode(train_samples)
  eval_sources, evals = encode(eval_samples)
  return Task(name='synthetic_dates_classify', kind='classify',
                       tokenizers={'inputs': vocab}, lengths={'inputs': n},
                       train_examples=train, eval_examples=evals, eval_sources=eval_sources,
                       eval_references=[synthetic.MONTHS[d.month - 1] for d, _, _ in eval_samples],
                       label_names=list(synthetic.MONTHS),
                       encode_input=lambda text: {'inputs': np.asarray(
                           vocab.encode(text) or [tok_lib.UNK_ID], np.int32)})


def synthetic_dates_tag(cfg: Mapping, workdir: Optional[str]):
  """BIO tags of the day, month and year fields of each source token (`TAG_NAMES`)."""
  vocab = _vocab(workdir)
  n = cfg['max_input_length']
  ids = {t: i for i, t in enumerate(TAG_NAMES)}

  def encode(samples):
    tagged = [tagged_source(*s)[:n] for s in samples]
    examples = [{'inputs': np.asarray([vocab.encode(w)[0] for w, _ in words], np.int32),
                 'tags': np.asarray([ids[t] for _, t in words], np.int32)} for words in tagged]
    return tagged, examples

  train_samples, eval_samples = _splits(cfg)
  _, train = encode(train_samples)
  eval_tagged, evals = encode(eval_samples)
  return Task(name='synthetic_dates_tag', kind='tag', tokenizers={'inputs': vocab},
                       lengths={'inputs': n, 'tags': n}, train_examples=train,
                       eval_examples=evals,
                       eval_sources=[' '.join(w for w, _ in words) for words in eval_tagged],
                       eval_references=[' '.join(t for _, t in words) for words in eval_tagged],
                       label_names=list(TAG_NAMES),
                       encode_input=lambda text: {'inputs': np.asarray(
                           [(vocab.encode(w) or [tok_lib.UNK_ID])[0] for w in text.split()],
                           np.int32)})
