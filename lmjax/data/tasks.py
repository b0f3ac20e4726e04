"""Tasks: a data source + tokenizers + features + how predictions are scored.

`build_task(config.task, workdir)` looks the task up in `TASKS` (an explicit
registry) and returns a `Task`.
"""

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from lmjax.data import labeled_tasks
from lmjax.data import lm_stream
from lmjax.data import pipeline
from lmjax.data import preprocess
from lmjax.data import records
from lmjax.data import sources
from lmjax.data import synthetic
from lmjax.data import synthetic_tasks
from lmjax.data.task_def import Task  # noqa: F401  (tasks.Task is the public name)
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
  path = os.path.join(workdir, 'tokenizers', f'{name}.json')
  if os.path.exists(path):
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
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tokenizer.save(path, options)
  return tokenizer


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


# ---------------------------------------------------------------------------------------
# Generic tasks driven by config.task: a source (local files or TFDS), a tokenizer
# (sentencepiece / word / char, trained on the training split and cached in the
# workdir), length handling and a batching mode. See configs/multi30k_transformer.py.


def _path(cfg: Mapping, name: str) -> str:
  return os.path.join(cfg['data_dir'], name) if cfg['data_dir'] else name


def _read_split(cfg: Mapping, split: str):
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


def _limit(records: List, n: int) -> List:
  return records[:n] if n else records


def _tokenizer_options(cfg: Mapping) -> Dict:
  t = cfg['tokenizer']
  opts = {'type': t['type'], 'vocab_size': t['vocab_size'], 'lowercase': t['lowercase']}
  if t['type'] == 'sentencepiece':
    opts.update(model_type=t['model_type'], character_coverage=t['character_coverage'],
                max_sentences=t['max_sentences'])
  else:
    opts.update(min_count=t['min_count'])
  if t.get('vectors', ''):  # only then, so that older workdirs' tokenizers still match
    opts.update(vectors=t['vectors'], vectors_vocab=t.get('vectors_vocab', 0))
  return opts


def _build_tokenizer(cfg: Mapping, texts: List[str], opts: Mapping, seed: int):
  """Builds a tokenizer from training texts, plus the vectors file's leading words if asked."""
  tokenizer = tok_lib.build(texts, opts, seed)
  if opts.get('vectors_vocab', 0):
    path = word_vectors.resolve(opts['vectors'], cfg.get('data_dir', ''))
    extra = word_vectors.leading_words(path, opts['vectors_vocab'], opts['lowercase'])
    known = set(tokenizer.tokens)
    tokenizer = tok_lib.VocabTokenizer(tokenizer.tokens + [w for w in extra if w not in known],
                                       tokenizer.level)
  return tokenizer


def _tokenizers(cfg: Mapping, workdir: Optional[str], texts: Mapping[str, List[str]],
                seed: int) -> Dict[str, Any]:
  """Feature → tokenizer; one shared vocabulary or one per feature (config.task.tokenizer.shared)."""
  opts = _tokenizer_options(cfg)
  if cfg['tokenizer']['shared'] or len(texts) == 1:
    all_texts = [t for v in texts.values() for t in v]
    tok = load_or_build_tokenizer(workdir, 'vocab',
                                  lambda: _build_tokenizer(cfg, all_texts, opts, seed), opts)
    return {k: tok for k in texts}
  if opts.get('vectors'):
    raise ValueError('config.task.tokenizer.vectors needs one vocabulary: set '
                     'config.task.tokenizer.shared=True')
  return {k: load_or_build_tokenizer(workdir, f'{k}_vocab',
                                     lambda v=v: _build_tokenizer(cfg, v, opts, seed), opts)
          for k, v in texts.items()}


def _lower(cfg: Mapping, text: str) -> str:
  return text.lower() if cfg['tokenizer']['lowercase'] else text


def _fit(examples: List[pipeline.Example], lengths: Mapping[str, int], how: str) -> List:
  if how == 'filter':
    return pipeline.filter_by_length(examples, lengths)
  if how == 'truncate':
    return pipeline.truncate(examples, lengths)
  raise ValueError(f"config.task.length_handling must be 'truncate' or 'filter', got {how!r}")


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
  names, opts = _tokenizer_names(cfg, feats), _tokenizer_options(cfg)
  paths = [os.path.join(workdir, 'tokenizers', f'{n}.json') for n in names.values()]
  existing = None
  if all(os.path.exists(p) for p in paths):  # a resumed run: its tokenizers rule
    existing = {f: load_or_build_tokenizer(workdir, n, None, opts) for f, n in names.items()}
  adopt = lambda toks: {f: load_or_build_tokenizer(workdir, n, lambda f=f: toks[f], opts)
                        for f, n in names.items()}
  make = lambda texts: _tokenizers(cfg, workdir, texts, cfg['tokenizer_seed'])
  return preprocess.prepare(cfg, workdir, make, adopt, existing)


def preprocess_task(cfg: Mapping, root: str) -> records.RecordSource:
  """Preprocesses `config.task`'s training split into root/<key> (experiments/preprocess.py).

  Runs then pass `--config.task.preprocessed_dir=root` and adopt its tokenizers.
  """
  if not preprocess.streamable(cfg):
    raise ValueError(f"config.task.name={cfg['name']!r} with source.type="
                     f"{cfg['source']['type']!r} tokenizes in memory at start-up; preprocessing "
                     "applies to text_seq2seq (parallel, tfds) and text_lm (monolingual or tfds, "
                     "lm_mode='line')")
  cfg = dict(cfg, preprocessed_dir=root)
  make = lambda texts: _tokenizers(cfg, None, texts, cfg['tokenizer_seed'])
  source, _ = preprocess.prepare(cfg, root, make, lambda toks: toks, None)
  return source


def text_seq2seq(cfg: Mapping, workdir: Optional[str]) -> Task:
  """Translation or summarization from parallel files, AESLC-style documents or TFDS.

  Parallel files and TFDS train from preprocessed records (`preprocess`) when there is
  a workdir; documents, and runs without a workdir, tokenize the split in memory.
  """
  eval_records = _limit(_read_split(cfg, 'eval'), cfg['source']['max_eval_examples'])
  evals = _seq2seq_pairs(cfg, eval_records)
  annotations = None  # AESLC dev/test: every email has human-written reference subjects
  if cfg['source']['type'] == 'summaries' and eval_records and all(r['annotations'] for r in eval_records):
    annotations = [[_lower(cfg, a) for a in r['annotations']] for r in eval_records]
  evals = [(_lower(cfg, s), _lower(cfg, t)) for s, t in evals]
  lengths = {'inputs': cfg['max_input_length'], 'targets': cfg['max_target_length']}
  train_ex, train_source = None, None
  if preprocess.streamable(cfg) and workdir is not None:
    train_source, toks = _streamed(cfg, workdir, ('inputs', 'targets'))
  else:
    train = _seq2seq_pairs(cfg, _limit(_read_split(cfg, 'train'), cfg['source']['max_train_examples']))
    train = [(_lower(cfg, s), _lower(cfg, t)) for s, t in train]
    toks = _tokenizers(cfg, workdir, {'inputs': [s for s, _ in train], 'targets': [t for _, t in train]},
                       cfg['tokenizer_seed'])
    big = 1 << 30  # filter on the full length, then cut nothing
    train_ex = encode_seq2seq(train, toks['inputs'], toks['targets'], big, big)
    train_ex = _fit(train_ex, lengths, cfg['length_handling'])
    if not train_ex:
      raise ValueError('no training example fits config.task.max_input_length/max_target_length')
  eval_ex = encode_seq2seq(evals, toks['inputs'], toks['targets'], lengths['inputs'], lengths['targets'])
  return Task(name=cfg['name'], kind='seq2seq', tokenizers=toks, lengths=lengths,
              train_examples=train_ex, eval_examples=eval_ex, train_source=train_source,
              eval_sources=[s for s, _ in evals], eval_references=[t for _, t in evals],
              bleu_tokenize=cfg['bleu_tokenize'], batching=dict(cfg['batching']),
              decode_metrics=cfg['decode_metrics'], eval_annotations=annotations)


def _lm_texts(cfg: Mapping, records) -> List[str]:
  src = cfg['source']
  if src['type'] == 'tfds':
    return [r[src['target_key']] for r in records]
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
    evals = [_lower(cfg, t) for t in _lm_texts(cfg, _limit(_read_split(cfg, 'eval'),
                                                          src['max_eval_examples']))]
    train_source, toks = _streamed(cfg, workdir, ('targets',))
    tok = toks['targets']
  else:
    train_source = None
    train = _lm_texts(cfg, _limit(_read_split(cfg, 'train'), src['max_train_examples']))
    if src['train_files'] and not src['eval_files'] and src['type'] != 'tfds':
      if src['lm_mode'] != 'stream' or len(train) != 1:
        raise ValueError('config.task.source.eval_files is empty: an eval split carved from the '
                         "training text needs lm_mode='stream' and one training file")
      cut = int(len(train[0]) * (1 - src['eval_fraction']))
      train, evals = [train[0][:cut]], [train[0][cut:]]
    else:
      evals = _lm_texts(cfg, _limit(_read_split(cfg, 'eval'), src['max_eval_examples']))
    train = [_lower(cfg, t) for t in train]
    evals = [_lower(cfg, t) for t in evals]
    tok_texts = train if src['lm_mode'] != 'stream' or cfg['tokenizer']['type'] == 'char' else \
        [l for t in train for l in t.split('\n')]
    tok = _tokenizers(cfg, workdir, {'targets': tok_texts}, cfg['tokenizer_seed'])['targets']

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
    return _fit(out, {'targets': length}, fit)

  train_ex = None if train_source is not None else encode(train, cfg['length_handling'])
  eval_ex = encode(evals, 'truncate')
  context = src.get('stream_context', False)  # absent from configs of older workdirs
  lengths = {'targets': length, **({'decoder_inputs': length} if context else {})}
  return Task(name=cfg['name'], kind='lm', tokenizers={'targets': tok},
              lengths=lengths, train_examples=train_ex, eval_examples=eval_ex,
              train_source=train_source, eval_sources=[''] * len(eval_ex),
              eval_references=[tok.decode(ex['targets']) for ex in eval_ex],
              batching=dict(cfg['batching']))


# Task name → builder(config.task, workdir). Every task is listed here.
TASKS: Dict[str, Callable[[Mapping, Optional[str]], Task]] = {
    'synthetic_dates': synthetic_dates,
    'synthetic_dates_lm': synthetic_tasks.synthetic_dates_lm,
    'synthetic_dates_classify': synthetic_tasks.synthetic_dates_classify,
    'synthetic_dates_tag': synthetic_tasks.synthetic_dates_tag,
    'text_seq2seq': text_seq2seq,
    'text_lm': text_lm,
    'text_classify': labeled_tasks.text_classify,
    'text_tag': labeled_tasks.text_tag,
}


def build_task(task_config: Mapping, workdir: Optional[str]) -> Task:
  """Builds the task named by `task_config.name`.

  Args:
    task_config: `config.task`.
    workdir: where tokenizers are cached (None: do not cache).

  Returns:
    The Task.
  """
  name = task_config['name']
  if name not in TASKS:
    raise ValueError(f'config.task.name={name!r} is not a task; valid: {sorted(TASKS)}')
  return TASKS[name](task_config, workdir)
