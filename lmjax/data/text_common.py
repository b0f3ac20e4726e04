"""Readers, tokenizer building and length handling shared by the task builders.

The generic text tasks (`text_tasks`, `labeled_tasks`) read a split with `read_split`,
build or reuse the workdir's tokenizers with `build_tokenizers`, and cut or filter the
examples with `fit` (config.task.length_handling).
"""

from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from lmjax import fileio
from lmjax.data import pipeline
from lmjax.data import sources
from lmjax.data import tokenizers as tok_lib
from lmjax.data import word_vectors


def encode_seq2seq(pairs, src_tok, tgt_tok, max_input_length, max_target_length):
  """Tokenizes (source, target) pairs; targets end with EOS; over-long ones are truncated."""
  out = []
  for src, tgt in pairs:
    inputs = src_tok.encode(src)[:max_input_length]
    targets = (tgt_tok.encode(tgt)[:max_target_length - 1]) + [tok_lib.EOS_ID]
    out.append({'inputs': np.asarray(inputs, np.int32), 'targets': np.asarray(targets, np.int32)})
  return out


def load_or_build_tokenizer(workdir: Optional[str], name: str, build: Callable[[], Any],
                            options: Optional[Mapping[str, Any]] = None):
  """Reuses WORKDIR/tokenizers/<name>.json when present (resume), else builds and saves it.

  Args:
    workdir: run directory (None: build, do not cache).
    name: file stem.
    build: makes the tokenizer.
    options: the settings it is built with; a cached tokenizer built with other settings
      (e.g. another vocab_size) is an error.

  Returns:
    The tokenizer.
  """
  if workdir is None:
    return build()
  path = fileio.join(workdir, 'tokenizers', f'{name}.json')
  if fileio.exists(path):
    tokenizer = tok_lib.load(path)
    saved = getattr(tokenizer, 'options', {})
    if options is not None and saved != dict(options):
      diff = {k: (saved.get(k), v) for k, v in dict(options).items() if saved.get(k) != v}
      raise sources.DataError(
          f'{path} was built with other tokenizer settings than config.task.tokenizer '
          f'({", ".join(f"{k}: file {a!r} vs config {b!r}" for k, (a, b) in diff.items())}): '
          'use a fresh --workdir, or delete the file to rebuild it (the checkpoints in this '
          'workdir were trained with the old vocabulary)')
    return tokenizer
  tokenizer = build()
  fileio.makedirs(fileio.parent(path))
  tokenizer.save(path, options)
  return tokenizer


# ---------------------------------------------------------------------------------------
# Generic tasks driven by config.task: a source (local files or TFDS), a tokenizer
# (sentencepiece / word / char, trained on the training split and cached in the
# workdir; or hf_bpe, imported into it by experiments/import_hf.py), length handling and
# a batching mode. See configs/multi30k_transformer.py.


def _path(cfg: Mapping, name: str) -> str:
  return fileio.join(cfg['data_dir'], name) if cfg['data_dir'] else name


def read_split(cfg: Mapping, split: str):
  """Raw records of one split ('train' or 'eval') for the configured source type."""
  src = cfg['source']
  kind, errors = (split == 'train' and src.get('train_type')) or src['type'], src['encoding_errors']
  files = [_path(cfg, f) for f in src[f'{split}_files']]
  if kind == 'tfds':
    return sources.tfds_examples(src['tfds_name'], src[f'{split}_split'], src['tfds_data_dir'] or None,
                                 src[f'max_{split}_examples'])
  if not files:
    raise ValueError(f'config.task.source.{split}_files is empty: list the {split} file(s)')
  if kind == 'parallel':
    if len(files) != 2:
      raise ValueError(f'config.task.source.{split}_files needs 2 files (source, target) for '
                       f"type='parallel', got {files}")
    return sources.parallel_text(files[0], files[1], errors)
  if kind == 'monolingual':
    return [t for f in files for t in sources.monolingual_text(
        f, 'document' if src['lm_mode'] == 'stream' else 'line', errors)]
  if kind == 'tsv':
    return [r for f in files for r in sources.tsv(f, list(src['labels']), src['num_text_columns'],
                                                   'auto', errors)]
  if kind == 'labeled_lines':
    return [r for f in files for r in sources.labeled_lines(f, list(src['labels']), errors)]
  if kind == 'conll':
    return [r for f in files for r in sources.conll(f, errors=errors)]
  if kind == 'summaries':
    return [r for f in files for r in sources.summaries(f, errors=errors)]
  field = 'train_type' if split == 'train' and src.get('train_type') else 'type'
  raise ValueError(f"config.task.source.{field}={kind!r} is not one of 'tfds', 'parallel', "
                   "'monolingual', 'tsv', 'labeled_lines', 'conll', 'summaries'")


def limit(records: List, n: int) -> List:
  return records[:n] if n else records


def tokenizer_options(cfg: Mapping) -> Dict:
  t = cfg['tokenizer']
  opts = {'type': t['type'], 'vocab_size': t['vocab_size'], 'lowercase': t['lowercase']}
  if t['type'] == 'sentencepiece':
    opts.update(model_type=t['model_type'], character_coverage=t['character_coverage'],
                max_sentences=t['max_sentences'])
    if t.get('extra_ids', 0):  # only then, so that older workdirs' tokenizers still match
      opts.update(extra_ids=t['extra_ids'])
  elif t['type'] != 'hf_bpe':  # an imported tokenizer has no build settings
    opts.update(min_count=t['min_count'])
  if t.get('vectors', ''):  # only then, so that older workdirs' tokenizers still match
    opts.update(vectors=t['vectors'], vectors_vocab=t.get('vectors_vocab', 0))
  return opts


def build_tokenizer(cfg: Mapping, texts: List[str], opts: Mapping, seed: int):
  """Builds a tokenizer from training texts, plus the vectors file's leading words if asked."""
  tokenizer = tok_lib.build(texts, opts, seed)
  if opts.get('vectors_vocab', 0):
    path = word_vectors.resolve(opts['vectors'], cfg.get('data_dir', ''))
    extra = word_vectors.leading_words(path, opts['vectors_vocab'], opts['lowercase'])
    known = set(tokenizer.tokens)
    tokenizer = tok_lib.VocabTokenizer(tokenizer.tokens + [w for w in extra if w not in known],
                                       tokenizer.level)
  return tokenizer


def build_tokenizers(cfg: Mapping, workdir: Optional[str], texts: Mapping[str, List[str]],
                seed: int) -> Dict[str, Any]:
  """Feature → tokenizer; one shared vocabulary or one per feature (config.task.tokenizer.shared)."""
  opts = tokenizer_options(cfg)
  if cfg['tokenizer']['shared'] or len(texts) == 1:
    all_texts = [t for v in texts.values() for t in v]
    tok = load_or_build_tokenizer(workdir, 'vocab',
                                  lambda: build_tokenizer(cfg, all_texts, opts, seed), opts)
    return {k: tok for k in texts}
  if opts.get('vectors'):
    raise ValueError('config.task.tokenizer.vectors needs one vocabulary: set '
                     'config.task.tokenizer.shared=True')
  return {k: load_or_build_tokenizer(workdir, f'{k}_vocab',
                                     lambda v=v: build_tokenizer(cfg, v, opts, seed), opts)
          for k, v in texts.items()}


def lower(cfg: Mapping, text: str) -> str:
  return text.lower() if cfg['tokenizer']['lowercase'] else text


def fit_lengths(examples: List[pipeline.Example], lengths: Mapping[str, int], how: str) -> List:
  if how == 'filter':
    return pipeline.filter_by_length(examples, lengths)
  if how == 'truncate':
    return pipeline.truncate(examples, lengths)
  raise ValueError(f"config.task.length_handling must be 'truncate' or 'filter', got {how!r}")


