"""Text classification and sequence-tagging tasks (`text_classify`, `text_tag` in
`lmjax.data.tasks.TASKS`), from TSV / `label text` lines / TFDS and CoNLL files.

Both give the Task an `encode_input` (raw line → model features, as the training
examples are built) for experiments/decode.py.
"""

import collections
from typing import List, Mapping, Optional, Tuple

import numpy as np

from lmjax.data import sources
from lmjax.data import tokenizers as tok_lib
from lmjax.data.task_def import Task
from lmjax.data.text_common import build_tokenizers, fit_lengths, limit, lower, read_split


def _classify_rows(cfg: Mapping, records) -> List[Tuple[str, int]]:
  src = cfg['source']
  labels = list(src['labels'])
  if src['type'] == 'tfds':
    rows = []
    for i, r in enumerate(records):
      label = int(r[src['label_key']])
      if not 0 <= label < len(labels):
        raise sources.DataError(f"TFDS {src['tfds_name']} example {i}: label {label} is outside "
                                f'the configured label set {labels} (config.task.source.labels)')
      rows.append((r[src['input_key']], label))
    return rows
  if src['type'] in ('tsv', 'labeled_lines'):
    return [(' ||| '.join(texts), label) for texts, label in records]
  raise ValueError(f"config.task.source.type={src['type']!r} cannot feed a classify task "
                   "(use 'tsv', 'labeled_lines' or 'tfds')")


def text_classify(cfg: Mapping, workdir: Optional[str]) -> Task:
  """Sentence(-pair) classification from TSV, `label text` lines or TFDS.

  With config.task.word_chars = W > 0 (word tokenizer only), examples also hold
  `chars` (S, W): the bytes of each whitespace-separated word, case kept, for a
  character CNN (words the vocabulary never saw still have their spelling).
  """
  src = cfg['source']
  width = cfg.get('word_chars', 0)
  if width and cfg['tokenizer']['type'] != 'word':
    raise ValueError(f"config.task.word_chars={width} needs config.task.tokenizer.type='word' "
                     f"(one id per whitespace-separated word), got {cfg['tokenizer']['type']!r}")
  train = _classify_rows(cfg, limit(read_split(cfg, 'train'), src['max_train_examples']))
  evals = _classify_rows(cfg, limit(read_split(cfg, 'eval'), src['max_eval_examples']))
  tok = build_tokenizers(cfg, workdir, {'inputs': [lower(cfg, t) for t, _ in train]},
                       cfg['tokenizer_seed'])['inputs']
  n = cfg['max_input_length']
  lengths = dict(inputs=n, **({'chars': n} if width else {}))

  def encode_input(text):
    ids = tok.encode(lower(cfg, text))
    if not ids:  # an empty text is one <unk> word
      return {'inputs': np.asarray([tok_lib.UNK_ID], np.int32),
              **({'chars': np.zeros((1, width), np.int32)} if width else {})}
    ex = {'inputs': np.asarray(ids, np.int32)}
    if width:
      ex['chars'] = tok_lib.word_bytes(text.split(), width)  # (S, W), aligned with the ids
    return ex

  def encode(rows, fit):
    return fit_lengths([dict(encode_input(t), label=np.int32(y)) for t, y in rows], lengths, fit)

  names = list(src['label_names'] or src['labels'])
  return Task(name=cfg['name'], kind='classify', tokenizers={'inputs': tok},
                 lengths=lengths, train_examples=encode(train, cfg['length_handling']),
                 eval_examples=encode(evals, 'truncate'), eval_sources=[t for t, _ in evals],
                 eval_references=[names[y] for _, y in evals], label_names=names,
                 batching=dict(cfg['batching']), encode_input=encode_input)


def text_tag(cfg: Mapping, workdir: Optional[str]) -> Task:
  """Sequence tagging (e.g. NER) from CoNLL files: one word-level id and one tag per token.

  Tag ids: 0 = padding, real tags from 1 in the order of config.task.source.labels
  (or, when that is empty, sorted tags of the training split). With
  config.task.word_chars = W > 0, examples also hold `chars` (S, W): each word's bytes.
  """
  src = cfg['source']
  if src['type'] != 'conll':
    raise ValueError(f"config.task.source.type={src['type']!r} cannot feed a tag task (use 'conll')")
  if cfg['tokenizer']['type'] != 'word':
    raise ValueError("tag tasks need config.task.tokenizer.type='word' (one id per token)")
  train = limit(read_split(cfg, 'train'), src['max_train_examples'])
  evals = limit(read_split(cfg, 'eval'), src['max_eval_examples'])
  tags = list(src['labels']) or sorted({t for _, ts in train for t in ts})
  names = [tok_lib.PAD] + tags
  ids = {t: i for i, t in enumerate(names)}
  texts = [' '.join(lower(cfg, w) for w in ws) for ws, _ in train]
  tok = build_tokenizers(cfg, workdir, {'inputs': texts}, cfg['tokenizer_seed'])['inputs']
  n = cfg['max_input_length']
  files = {'train': src['train_files'], 'eval': src['eval_files']}
  width = cfg.get('word_chars', 0)
  unk = unk_permille(cfg, train, lower)  # per-sentence (S,) arrays, or None
  lengths = dict(inputs=n, tags=n, **({'chars': n} if width else {}),
                 **({'unk_permille': n} if unk else {}))

  def encode_words(words):
    ex = {'inputs': np.asarray([tok._ids.get(lower(cfg, w), tok_lib.UNK_ID) for w in words],
                               np.int32)}  # one id per token
    if width:
      ex['chars'] = tok_lib.word_bytes(words, width)  # (S, W), case kept
    return ex

  def encode(sentences, fit, split, extra=None):
    out = []
    for i, (words, ts) in enumerate(sentences):
      bad = [t for t in ts if t not in ids]
      if bad:
        raise sources.DataError(f'{files[split]}: sentence {i + 1} has tag {bad[0]!r}, not in the '
                                f'label set {tags} (config.task.source.labels)')
      out.append(dict(encode_words(words), tags=np.asarray([ids[t] for t in ts], np.int32),
                      **({'unk_permille': extra[i]} if extra else {})))
    return fit_lengths(out, lengths, fit)

  return Task(name=cfg['name'], kind='tag', tokenizers={'inputs': tok}, lengths=lengths,
                 encode_input=lambda text: encode_words(text.split()),
                 train_examples=encode(train, cfg['length_handling'], 'train', unk),
                 eval_examples=encode(evals, 'truncate', 'eval'),
                 eval_sources=[' '.join(ws) for ws, _ in evals],
                 eval_references=[' '.join(ts) for _, ts in evals], label_names=names,
                 batching=dict(cfg['batching']))


def unk_permille(cfg: Mapping, sentences, lower) -> Optional[List[np.ndarray]]:
  """Per-word probabilities (in 1/1000) of becoming <unk> in training, or None when off.

  A word w of count c(w) in `sentences` is dropped with probability α / (α + c(w))
  (α = config.task.unk_alpha: rare words most often, as unseen words will be), and a word
  inside a gold entity also with probability config.task.entity_unk_rate (independently).

  Args:
    cfg: config.task.
    sentences: training (words, tags) pairs.
    lower: the task's lowercasing, cfg, word → vocabulary form.

  Returns:
    One (S,) int32 array per sentence, or None when both settings are 0.

  Raises:
    ValueError: entity_unk_rate is set but the label set has no outside tag 'O'.
  """
  alpha, rate = float(cfg.get('unk_alpha', 0.0)), float(cfg.get('entity_unk_rate', 0.0))
  if not alpha and not rate:
    return None
  if rate and not any('O' in ts for _, ts in sentences):
    raise ValueError(f'config.task.entity_unk_rate={rate}: the training tags have no outside '
                     "tag 'O', so no word is outside an entity")
  counts = collections.Counter(lower(cfg, w) for ws, _ in sentences for w in ws)
  out = []
  for words, ts in sentences:
    keep = np.ones(len(words))
    if alpha:
      c = np.asarray([counts[lower(cfg, w)] for w in words], np.float64)
      keep *= c / (alpha + c)
    if rate:
      keep *= np.where(np.asarray(ts) != 'O', 1.0 - rate, 1.0)
    out.append(np.rint(1000.0 * (1.0 - keep)).astype(np.int32))  # (S,)
  return out
