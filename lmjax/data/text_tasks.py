"""Translation, summarization and language-modelling tasks from text (`text_seq2seq`,
`text_lm`), and the built-in synthetic dates translation task (`synthetic_dates`).
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from lmjax import fileio
from lmjax.data import lm_stream
from lmjax.data import pipeline
from lmjax.data import preprocess
from lmjax.data import records
from lmjax.data import synthetic
from lmjax.data import tokenizers as tok_lib
from lmjax.data.task_def import Task
from lmjax.data.text_common import (build_tokenizers, encode_seq2seq, fit_lengths, limit,
                                    load_or_build_tokenizer, lower, read_split,
                                    tokenizer_options)


def synthetic_dates(cfg: Mapping, workdir: Optional[str]) -> Task:
  """The built-in dates → ISO translation task (see lmjax.data.synthetic)."""
  train_pairs = synthetic.dates_pairs('train', cfg['num_train'], cfg['data_seed'])
  eval_pairs = synthetic.dates_pairs('eval', cfg['num_eval'], cfg['data_seed'])
  vocab = load_or_build_tokenizer(
      workdir, 'vocab', lambda: tok_lib.VocabTokenizer(synthetic.vocabulary(), 'word'))
  expected = tok_lib.VocabTokenizer(synthetic.vocabulary(), 'word')
  if vocab.tokens != expected.tokens:
    raise ValueError(f'{workdir}/tokenizers/vocab.json does not match the synthetic task '
                     'vocabulary: use a fresh --workdir')
  lengths = {'inputs': cfg['max_input_length'], 'targets': cfg['max_target_length']}
  enc = lambda p: encode_seq2seq(p, vocab, vocab, lengths['inputs'], lengths['targets'])
  return Task(name='synthetic_dates', kind='seq2seq', tokenizers={'inputs': vocab, 'targets': vocab},
              lengths=lengths, train_examples=enc(train_pairs), eval_examples=enc(eval_pairs),
              eval_sources=[s for s, _ in eval_pairs], eval_references=[t for _, t in eval_pairs],
              bleu_tokenize='none')


def _seq2seq_pairs(cfg: Mapping, records) -> List[Tuple[str, str]]:
  src = cfg['source']
  if src['type'] == 'tfds':
    return [(r[src['input_key']], r[src['target_key']]) for r in records]
  if src['type'] == 'summaries':
    return [(r['document'], r['summary']) for r in records]
  if src['type'] == 'parallel':
    return records
  raise ValueError(f"config.task.source.type={src['type']!r} cannot feed a seq2seq task "
                   "(use 'parallel', 'summaries' or 'tfds')")


def _tokenizer_names(cfg: Mapping, feats) -> Dict[str, str]:
  shared = cfg['tokenizer']['shared'] or len(feats) == 1
  return {f: 'vocab' if shared else f'{f}_vocab' for f in feats}


def _streamed(cfg: Mapping, workdir: str, feats) -> Tuple[records.RecordSource, Dict[str, Any]]:
  """The preprocessed training split and its tokenizers (built on first use; see preprocess)."""
  names, opts = _tokenizer_names(cfg, feats), tokenizer_options(cfg)
  paths = [fileio.join(workdir, 'tokenizers', f'{n}.json') for n in names.values()]
  existing = None
  if all(fileio.exists(p) for p in paths):  # a resumed run: its tokenizers rule
    existing = {f: load_or_build_tokenizer(workdir, n, None, opts) for f, n in names.items()}
  adopt = lambda toks: {f: load_or_build_tokenizer(workdir, n, lambda f=f: toks[f], opts)
                        for f, n in names.items()}
  make = lambda texts: build_tokenizers(cfg, workdir, texts, cfg['tokenizer_seed'])
  return preprocess.prepare(cfg, workdir, make, adopt, existing)


def preprocess_task(cfg: Mapping, root: str) -> records.RecordSource:
  """Preprocesses `config.task`'s training split into root/<key> (experiments/preprocess.py).

  Runs then pass `--config.task.preprocessed_dir=root` and adopt its tokenizers.
  """
  if not preprocess.streamable(cfg):
    source = cfg.get('source')
    what = 'builds its examples' if source is None else f"with source.type={source['type']!r} tokenizes"
    raise preprocess.NothingToPreprocess(
        f"config.task.name={cfg['name']!r} has nothing to preprocess: it {what} in memory at "
        "start-up (preprocessing applies to text_seq2seq with parallel or tfds sources and "
        "text_lm with monolingual or tfds sources and lm_mode='line')")
  cfg = dict(cfg, preprocessed_dir=root)
  make = lambda texts: build_tokenizers(cfg, None, texts, cfg['tokenizer_seed'])
  source, _ = preprocess.prepare(cfg, root, make, lambda toks: toks, None)
  return source


def text_seq2seq(cfg: Mapping, workdir: Optional[str]) -> Task:
  """Translation or summarization from parallel files, AESLC-style documents or TFDS.

  Parallel files and TFDS train from preprocessed records (`preprocess`) when there is
  a workdir; documents, and runs without a workdir, tokenize the split in memory.
  """
  eval_records = limit(read_split(cfg, 'eval'), cfg['source']['max_eval_examples'])
  evals = _seq2seq_pairs(cfg, eval_records)
  annotations = None  # AESLC dev/test: every email has human-written reference subjects
  if cfg['source']['type'] == 'summaries' and eval_records and all(r['annotations'] for r in eval_records):
    annotations = [[lower(cfg, a) for a in r['annotations']] for r in eval_records]
  evals = [(lower(cfg, s), lower(cfg, t)) for s, t in evals]
  lengths = {'inputs': cfg['max_input_length'], 'targets': cfg['max_target_length']}
  train_ex, train_source = None, None
  if preprocess.streamable(cfg) and workdir is not None:
    train_source, toks = _streamed(cfg, workdir, ('inputs', 'targets'))
  else:
    train = _seq2seq_pairs(cfg, limit(read_split(cfg, 'train'), cfg['source']['max_train_examples']))
    train = [(lower(cfg, s), lower(cfg, t)) for s, t in train]
    toks = build_tokenizers(cfg, workdir, {'inputs': [s for s, _ in train], 'targets': [t for _, t in train]},
                       cfg['tokenizer_seed'])
    big = 1 << 30  # filter on the full length, then cut nothing
    train_ex = encode_seq2seq(train, toks['inputs'], toks['targets'], big, big)
    train_ex = fit_lengths(train_ex, lengths, cfg['length_handling'])
    if not train_ex:
      raise ValueError('no training example fits config.task.max_input_length/max_target_length')
  eval_ex = encode_seq2seq(evals, toks['inputs'], toks['targets'], lengths['inputs'], lengths['targets'])
  return Task(name=cfg['name'], kind='seq2seq', tokenizers=toks, lengths=lengths,
              train_examples=train_ex, eval_examples=eval_ex, train_source=train_source,
              eval_sources=[s for s, _ in evals], eval_references=[t for _, t in evals],
              bleu_tokenize=cfg['bleu_tokenize'], batching=dict(cfg['batching']),
              decode_metrics=cfg['decode_metrics'], eval_annotations=annotations)


def _lm_texts(cfg: Mapping, records, split: str) -> List[str]:
  """The texts of a split's records; of a labelled file, its text columns (labels unused),
  as one document in lm_mode='stream' (a line per row)."""
  src = cfg['source']
  kind = (split == 'train' and src.get('train_type')) or src['type']
  if kind == 'tfds':
    return [r[src['target_key']] for r in records]
  if kind in ('tsv', 'labeled_lines'):
    texts = [' '.join(texts) for texts, _ in records]
    return ['\n'.join(texts)] if src['lm_mode'] == 'stream' else texts
  return records


def text_lm(cfg: Mapping, workdir: Optional[str]) -> Task:
  """Language modelling on lines (one example each, EOS-terminated) or a token stream.

  lm_mode 'line': each line is an example (packing recommended for the Transformer).
  lm_mode 'stream': the text is one stream cut into rows of max_target_length (no EOS
  is added; word-level streams get an EOS between lines as the sentence separator).
  With no eval files, the last `eval_fraction` of the (stream) training text is the eval split.
  """
  src = cfg['source']
  length = cfg['max_target_length']
  if preprocess.streamable(cfg) and workdir is not None and (src['eval_files'] or src['type'] == 'tfds'):
    train = []  # the training lines stream from preprocessed records
    evals = [lower(cfg, t) for t in _lm_texts(cfg, limit(read_split(cfg, 'eval'),
                                                          src['max_eval_examples']), 'eval')]
    train_source, toks = _streamed(cfg, workdir, ('targets',))
    tok = toks['targets']
  else:
    train_source = None
    train = _lm_texts(cfg, limit(read_split(cfg, 'train'), src['max_train_examples']), 'train')
    if src['train_files'] and not src['eval_files'] and src['type'] != 'tfds':
      if src['lm_mode'] != 'stream' or len(train) != 1:
        raise ValueError('config.task.source.eval_files is empty: an eval split carved from the '
                         "training text needs lm_mode='stream' and one training file")
      cut = int(len(train[0]) * (1 - src['eval_fraction']))
      train, evals = [train[0][:cut]], [train[0][cut:]]
    else:
      evals = _lm_texts(cfg, limit(read_split(cfg, 'eval'), src['max_eval_examples']), 'eval')
    train = [lower(cfg, t) for t in train]
    evals = [lower(cfg, t) for t in evals]
    tok_texts = train if src['lm_mode'] != 'stream' or cfg['tokenizer']['type'] == 'char' else \
        [l for t in train for l in t.split('\n')]
    tok = build_tokenizers(cfg, workdir, {'targets': tok_texts}, cfg['tokenizer_seed'])['targets']

  def encode(texts: List[str], fit: str) -> List[pipeline.Example]:
    if src['lm_mode'] == 'stream':
      ids = []
      for t in texts:
        if cfg['tokenizer']['type'] == 'char':
          ids.extend(tok.encode(t))
        else:
          for line in t.split('\n'):
            if line.strip():
              ids.extend(tok.encode(line) + [tok_lib.EOS_ID])
      return lm_stream.stream_rows(ids, length, src.get('stream_context', False))
    out = [{'targets': np.asarray(tok.encode(t) + [tok_lib.EOS_ID], np.int32)} for t in texts]
    return fit_lengths(out, {'targets': length}, fit)

  train_ex = None if train_source is not None else encode(train, cfg['length_handling'])
  eval_ex = encode(evals, 'truncate')
  context = src.get('stream_context', False)  # absent from configs of older workdirs
  lengths = {'targets': length, **({'decoder_inputs': length} if context else {})}
  return Task(name=cfg['name'], kind='lm', tokenizers={'targets': tok},
              lengths=lengths, train_examples=train_ex, eval_examples=eval_ex,
              train_source=train_source, eval_sources=[''] * len(eval_ex),
              eval_references=[tok.decode(ex['targets']) for ex in eval_ex],
              batching=dict(cfg['batching']))


