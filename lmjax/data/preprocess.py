"""Preprocess a text corpus once: tokenizer from a bounded sample, tokenize in worker
processes, write ArrayRecord shards + index (fairseq-preprocess / seqio-cache style).

    raw records (line-aligned files, monolingual lines, or tfds.data_source by index)
      ─▶ seeded reservoir sample (≤ tokenizer.max_sentences) ─▶ tokenizer
      ─▶ chunks ─▶ worker processes: lowercase, encode, truncate/filter ─▶ record bytes
      ─▶ shards `train-NNNNN.array_record` + `index.json` + `tokenizers/`

The folder is `<root>/<key>`: the key hashes the sources (paths, sizes, mtimes; or the
TFDS name and split) and every setting that changes the records, so reruns and other
runs of the same data reuse it. It is built under a temporary name and renamed into
place when complete; nothing in an existing folder is ever rewritten.
"""

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lmjax import fileio
from lmjax.data import mirror
from lmjax.data import records
from lmjax.data import sources
from lmjax.data import tokenizers as tok_lib

CHUNK = 2048  # raw records per worker task


class NothingToPreprocess(ValueError):
  """The task builds or tokenizes its examples in memory: there are no records to write."""


def streamable(cfg: Mapping) -> bool:
  """Whether `config.task` trains from preprocessed records (seq2seq / line LM on files or TFDS)."""
  src = cfg.get('source')
  if src is None:  # a built-in task: it generates its examples at start-up
    return False
  kind = src.get('train_type') or src['type']
  if cfg['name'] == 'text_seq2seq':
    return kind in ('parallel', 'tfds')
  if cfg['name'] == 'text_lm':
    return kind in ('monolingual', 'tfds') and src['lm_mode'] == 'line'
  return False


def _files(cfg: Mapping) -> List[str]:
  d = cfg['data_dir']
  return [fileio.join(d, f) if d else f for f in cfg['source']['train_files']]


def cache_key(cfg: Mapping) -> str:
  """Hash of the training sources and every setting that changes the records."""
  src = cfg['source']
  if src['type'] == 'tfds':
    origin = {'tfds': src['tfds_name'], 'split': src['train_split'],
              'data_dir': src['tfds_data_dir'], 'keys': [src['input_key'], src['target_key']]}
  else:
    origin = {'files': []}
    for f in _files(cfg):
      sources._check_exists(f)  # pylint: disable=protected-access
      st = fileio.path(f).stat()
      origin['files'].append([fileio.resolve(f), st.length, st.mtime])
  t = dict(cfg['tokenizer'])
  desc = {'task': cfg['name'], 'origin': origin, 'tokenizer': t, 'seed': cfg['tokenizer_seed'],
          'lengths': [cfg['max_input_length'], cfg['max_target_length']],
          'length_handling': cfg['length_handling'], 'max': src['max_train_examples'],
          'errors': src['encoding_errors'], 'lm_mode': src['lm_mode'], 'format': records.FORMAT_VERSION}
  return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _lines(path: str, errors: str) -> Iterator[str]:
  with sources.open_data(path) as f:
    for lineno, raw in enumerate(f, 1):
      raw = raw.rstrip(b'\n')
      raw = raw[:-1] if raw.endswith(b'\r') else raw
      yield sources._decode(raw, path, lineno, errors)  # pylint: disable=protected-access


def raw_records(cfg: Mapping) -> Iterator[Tuple[str, ...]]:
  """The training split's raw texts, streamed: (source, target) pairs or (text,).

  Honours max_train_examples; parallel files that are not line-aligned are an error.
  """
  src, limit = cfg['source'], cfg['source']['max_train_examples']
  seq2seq = cfg['name'] == 'text_seq2seq'
  n = 0
  if src['type'] == 'tfds':
    data = tfds_source(cfg)
    keys = (src['input_key'], src['target_key']) if seq2seq else (src['target_key'],)
    for i in range(len(data) if not limit else min(limit, len(data))):
      row = data[i]
      yield tuple(sources._to_python(row[k]) for k in keys)  # pylint: disable=protected-access
    return
  files, errors = _files(cfg), src['encoding_errors']
  if seq2seq:
    if len(files) != 2:
      raise ValueError(f'config.task.source.train_files needs 2 files (source, target) for '
                       f"type='parallel', got {files}")
    a, b = _lines(files[0], errors), _lines(files[1], errors)
    count = 0
    for s in a:
      t = next(b, None)
      if t is None:
        raise sources.DataError(f'parallel files are not line-aligned: {files[0]} has more '
                                f'lines than {files[1]} ({count})')
      count += 1
      yield (s.strip(), t.strip())
      if limit and count >= limit:
        return
    if next(b, None) is not None:
      raise sources.DataError(f'parallel files are not line-aligned: {files[1]} has more lines '
                              f'than {files[0]} ({count})')
    return
  for f in files:
    for line in _lines(f, errors):
      if line.strip():
        yield (line.strip(),)
        n += 1
        if limit and n >= limit:
          return


def tfds_source(cfg: Mapping):
  """`tfds.data_source` of the training split (random access, no list of the split)."""
  src = cfg['source']
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise sources.DataError(f"TFDS dataset {src['tfds_name']!r} needs tensorflow-datasets: "
                            "pip install -e '.[tfds]'") from e
  sources.register_tfds_builder(src['tfds_name'])
  return tfds.data_source(src['tfds_name'], split=src['train_split'],
                          data_dir=src['tfds_data_dir'] or None)


def reservoir_sample(items: Iterator[Tuple[str, ...]], k: int, seed: int) -> List[Tuple[str, ...]]:
  """A uniform sample of at most k items from a stream of unknown length (Algorithm R).

  k = 0 keeps everything. Deterministic in `seed`; memory O(k). The random draws are
  made a chunk at a time (numpy), so the pass costs about as much as reading the stream.
  """
  rng = np.random.default_rng(seed)
  sample: List = []
  seen = 0
  for chunk in _chunks(items, 1 << 14):
    if not k or seen + len(chunk) <= k:
      sample.extend(chunk)
    else:
      fill = max(0, k - seen)
      sample.extend(chunk[:fill])
      positions = np.arange(seen + fill, seen + len(chunk))  # 0-based stream positions
      draws = (rng.random(len(positions)) * (positions + 1)).astype(np.int64)
      for i in np.flatnonzero(draws < k):  # in stream order: later items replace earlier
        sample[draws[i]] = chunk[fill + i]
    seen += len(chunk)
  return sample


# --- worker processes ------------------------------------------------------------------

_WORKER: Dict[str, Any] = {}


def _init_worker(tokenizer_paths: Mapping[str, str], settings: Mapping[str, Any]) -> None:
  _WORKER['toks'] = {k: tok_lib.load(p) for k, p in tokenizer_paths.items()}
  _WORKER.update(settings)


def encode_chunk(chunk: Sequence[Tuple[str, ...]], toks=None, settings=None) -> List[bytes]:
  """Raw records → record bytes (lowercase, encode, truncate or filter), as tasks.py does."""
  toks = toks or _WORKER['toks']
  s = settings or _WORKER
  out = []
  for rec in chunk:
    rec = tuple(t.lower() for t in rec) if s['lowercase'] else rec
    if s['seq2seq']:
      ex = {'inputs': toks['inputs'].encode(rec[0]),
            'targets': toks['targets'].encode(rec[1]) + [tok_lib.EOS_ID]}
    else:
      ex = {'targets': toks['targets'].encode(rec[0]) + [tok_lib.EOS_ID]}
    if any(len(v) > s['lengths'][k] for k, v in ex.items()):
      if s['length_handling'] == 'filter':
        continue
      ex = {k: v[:s['lengths'][k]] for k, v in ex.items()}
    out.append(records.encode(ex, s['spec'], s['dtype']))
  return out


def _chunks(items: Iterator, size: int) -> Iterator[List]:
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def tokenizer_hash(toks: Mapping[str, Any]) -> str:
  """Content hash of a feature → tokenizer mapping (vocabulary or SentencePiece model)."""
  h = hashlib.sha256()
  for k in sorted(toks):
    t = toks[k]
    h.update(k.encode())
    h.update(t.model_proto if hasattr(t, 'model_proto') else '\n'.join(t.tokens).encode())
    h.update(getattr(t, 'level', '').encode())
  return h.hexdigest()[:16]


def build(cfg: Mapping, directory: str, make_tokenizers: Callable[[Dict[str, List[str]]], Dict],
          workers: int = 0, progress: bool = True) -> records.RecordSource:
  """Preprocesses the training split of `cfg` into `directory` (which must not exist).

  Args:
    cfg: `config.task` (a streamable task, see `streamable`).
    directory: output folder; written under a temporary name, renamed when complete.
    make_tokenizers: feature → training texts ↦ feature → tokenizer (tasks.py's builder,
      which reuses a workdir's tokenizers when present).
    workers: tokenizing processes (0 = one per CPU).
    progress: show a progress bar.

  Returns:
    The validated RecordSource.
  """
  seq2seq = cfg['name'] == 'text_seq2seq'
  feats = ('inputs', 'targets') if seq2seq else ('targets',)
  t0 = time.time()
  sample = reservoir_sample(raw_records(cfg), cfg['tokenizer']['max_sentences'], cfg['tokenizer_seed'])
  if not sample:
    raise sources.DataError(f'{_describe(cfg)}: the training split is empty')
  lower = (lambda x: x.lower()) if cfg['tokenizer']['lowercase'] else (lambda x: x)
  toks = make_tokenizers({f: [lower(r[i]) for r in sample] for i, f in enumerate(feats)})
  del sample
  tmp = f'{directory.rstrip("/")}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)  # local disk: shards are built locally (data/mirror.py)
  os.makedirs(os.path.join(tmp, 'tokenizers'))  # local disk: as above
  paths = {}
  for f, t in toks.items():
    paths[f] = os.path.join(tmp, 'tokenizers', f'{f}.json')
    t.save(paths[f], getattr(t, 'options', None))
  lengths = {'inputs': cfg['max_input_length'], 'targets': cfg['max_target_length']}
  spec = {f: [] for f in feats}
  settings = {'seq2seq': seq2seq, 'lowercase': cfg['tokenizer']['lowercase'], 'spec': spec,
              'lengths': {f: lengths[f] for f in feats}, 'length_handling': cfg['length_handling'],
              'dtype': records.value_dtype(max(t.vocab_size for t in toks.values()))}
  writer = records.ShardWriter(tmp)
  workers = workers or os.cpu_count() or 1
  bar = _progress(progress)
  pool = None
  try:
    chunks = _counting(_chunks(raw_records(cfg), CHUNK), bar)
    if workers == 1:
      encoded = (encode_chunk(c, toks, settings) for c in chunks)
    else:
      pool = multiprocessing.get_context('spawn').Pool(workers, _init_worker, (paths, settings))
      encoded = pool.imap(encode_chunk, chunks, chunksize=1)
    for recs in encoded:
      for r in recs:
        writer.write(r)
    shards = writer.close()
    if not sum(s['num_records'] for s in shards):
      raise ValueError('no training example fits config.task.max_input_length/max_target_length')
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)  # local disk: only our own unfinished folder
    raise
  finally:
    bar.close()
    if pool is not None:
      pool.terminate()
  total = sum(s['num_records'] for s in shards)
  records.write_index(tmp, {
      'features': spec, 'dtype': settings['dtype'], 'num_examples': total, 'shards': shards,
      'tokenizers': {f: f'tokenizers/{f}.json' for f in toks},
      'tokenizer_hash': tokenizer_hash(toks), 'lengths': settings['lengths'],
      'source': _describe(cfg), 'key': cache_key(cfg), 'seconds': round(time.time() - t0, 1)})
  try:
    os.rename(tmp, directory)  # local disk: publish the finished folder at once
  except OSError:  # another process (host) finished the same folder first: use theirs
    shutil.rmtree(tmp, ignore_errors=True)  # local disk: our copy
  return records.open_records(directory)


def _counting(chunks, bar):
  for c in chunks:
    bar.update(len(c))
    yield c


def _progress(enabled: bool):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(desc='preprocess', unit=' examples', disable=not enabled, mininterval=2.0,
              unit_scale=True)


def _describe(cfg: Mapping) -> str:
  src = cfg['source']
  if src['type'] == 'tfds':
    return f"tfds {src['tfds_name']} split {src['train_split']}"
  return ', '.join(_files(cfg))


def load_tokenizers(directory: str, index: Mapping[str, Any]) -> Dict[str, Any]:
  """The tokenizers a preprocessed folder was built with (feature → tokenizer)."""
  return {f: tok_lib.load(fileio.join(directory, p)) for f, p in index['tokenizers'].items()}


def prepare(cfg: Mapping, workdir: str, make_tokenizers: Callable[[Dict[str, List[str]]], Dict],
            adopt_tokenizers: Callable[[Dict[str, Any]], Dict], workdir_tokenizers: Optional[Dict],
            progress: bool = True) -> Tuple[records.RecordSource, Dict[str, Any]]:
  """The preprocessed training split of `cfg`: reused from the cache, or built now.

  Args:
    cfg: `config.task` (streamable).
    workdir: the run directory (the default cache root is WORKDIR/preprocessed).
    make_tokenizers: builds (or reuses the workdir's) tokenizers from sampled texts.
    adopt_tokenizers: saves a cached folder's tokenizers into a fresh workdir; returns them.
    workdir_tokenizers: the workdir's tokenizers when it has them (a resumed run), else None.
    progress: show a progress bar while preprocessing.

  Returns:
    (source, feature → tokenizer).

  Raises:
    sources.DataError: damaged cache (missing/truncated shard, bad index) or a cache built
      with another tokenizer than the workdir's; nothing is deleted or rewritten.
  """
  root = cfg['preprocessed_dir'] or fileio.join(workdir, 'preprocessed')
  directory = fileio.join(root, cache_key(cfg))
  remote = fileio.is_remote(directory)
  local = mirror.local_folder(directory, cfg['local_cache_dir']) if remote else directory
  if not os.path.exists(local) and not (remote and mirror.fetch(directory, local)):  # local disk: shards
    os.makedirs(os.path.dirname(local), exist_ok=True)  # local disk: shards are read locally
    print(f'Preprocessing {_describe(cfg)} into {local}', flush=True)
    build(cfg, local, make_tokenizers, cfg['preprocess_workers'], progress)
    if remote:
      print(f'Uploading it to {directory}', flush=True)
      mirror.publish(local, directory)
  directory = local
  index = records.read_index(directory)
  toks = workdir_tokenizers
  if toks is None:
    toks = adopt_tokenizers(load_tokenizers(directory, index))
  return records.open_records(directory, tokenizer_hash(toks)), toks
