"""Preprocessed examples on disk: ArrayRecord shards of token ids plus `index.json`.

A record is one example: a header of int32 lengths (one per sequence feature), then
every feature's values, flattened, in the index's dtype. Scalar features (`label`)
take one value and no header entry. Shards are written with `group_size:1` so that
any record is one seek away (Grain's global shuffle reads them in random order).

`open_records(directory)` validates a folder (index present and readable, every shard
present, complete and of the indexed size, tokenizer hash as expected) and returns a
picklable random-access source for `grain.MapDataset.source`.
"""

import json
import os
import threading
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from lmjax.data import sources

FORMAT_VERSION = 1
INDEX = 'index.json'
WRITER_OPTIONS = 'group_size:1,uncompressed'
# max_parallelism:0 keeps reads on the calling thread: a thread-pool dispatch costs ~0.6 ms
# per record, a plain seek + read ~2 µs.
READER_OPTIONS = 'readahead_buffer_size:0,max_parallelism:0'
RECORDS_PER_SHARD = 500_000


def _array_record():
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  return array_record_module


def feature_spec(example: Mapping[str, Any]) -> Dict[str, Optional[List[int]]]:
  """Feature → trailing shape after the sequence axis ([] for 1-D), None for scalars."""
  spec = {}
  for k, v in example.items():
    shape = np.shape(v)
    spec[k] = None if not shape else list(shape[1:])
  return spec


def value_dtype(max_value: int) -> str:
  """The smallest record dtype that holds ids up to `max_value`."""
  return 'uint16' if max_value < 1 << 16 else 'int32'


def encode(example: Mapping[str, Any], spec: Mapping[str, Optional[List[int]]], dtype: str) -> bytes:
  """One example → record bytes (see the module docstring for the layout)."""
  header, parts = [], []
  for k, tail in spec.items():
    v = np.asarray(example[k])
    if tail is not None:
      header.append(v.shape[0] if v.ndim else 0)
    parts.append(v.reshape(-1).astype(dtype, copy=False))
  return np.asarray(header, np.int32).tobytes() + np.concatenate(parts).astype(dtype).tobytes()


def decode(raw: bytes, spec: Mapping[str, Optional[List[int]]], dtype: str) -> Dict[str, np.ndarray]:
  """Record bytes → example dict of int32 arrays (inverse of `encode`)."""
  num_seq = sum(tail is not None for tail in spec.values())
  header = np.frombuffer(raw, np.int32, count=num_seq)
  values = np.frombuffer(raw, dtype, offset=4 * num_seq).astype(np.int32)
  out, pos, h = {}, 0, 0
  for k, tail in spec.items():
    if tail is None:
      out[k] = values[pos]
      pos += 1
      continue
    n = int(header[h]) * int(np.prod(tail, dtype=np.int64))
    out[k] = values[pos:pos + n].reshape([int(header[h])] + list(tail))
    pos, h = pos + n, h + 1
  return out


class ShardWriter:
  """Writes records into numbered shards `<prefix>-NNNNN.array_record` of a directory."""

  def __init__(self, directory: str, prefix: str = 'train',
               records_per_shard: int = RECORDS_PER_SHARD):
    self.directory, self.prefix, self.records_per_shard = directory, prefix, records_per_shard
    self.shards: List[Dict[str, Any]] = []
    self._writer, self._count = None, 0

  def write(self, record: bytes) -> None:
    if self._writer is None or self._count >= self.records_per_shard:
      self._finish_shard()
      name = f'{self.prefix}-{len(self.shards):05d}.array_record'
      self.shards.append({'file': name, 'num_records': 0})
      self._writer = _array_record().ArrayRecordWriter(os.path.join(self.directory, name),
                                                       WRITER_OPTIONS)
      self._count = 0
    self._writer.write(record)
    self._count += 1

  def _finish_shard(self) -> None:
    if self._writer is not None:
      self._writer.close()
      shard = self.shards[-1]
      shard['num_records'] = self._count
      shard['num_bytes'] = os.path.getsize(os.path.join(self.directory, shard['file']))
      self._writer = None

  def close(self) -> List[Dict[str, Any]]:
    """Finishes the last shard; returns [{'file', 'num_records', 'num_bytes'}] per shard."""
    self._finish_shard()
    return self.shards


def write_index(directory: str, index: Mapping[str, Any]) -> None:
  """Writes `index.json` atomically (a reader never sees half an index)."""
  tmp = os.path.join(directory, INDEX + '.tmp')
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(dict(index, format=FORMAT_VERSION), f, indent=1)
  os.replace(tmp, os.path.join(directory, INDEX))


REDO_HINT = ('delete the folder and run experiments/preprocess.py again (or train.py, which '
             'preprocesses on its first run); nothing else reads it')


def read_index(directory: str) -> Dict[str, Any]:
  """The folder's index, or DataError naming the file and the fix."""
  path = os.path.join(directory, INDEX)
  if not os.path.exists(path):
    raise sources.DataError(f'{path}: no index (the folder is not preprocessed data, or its '
                            f'preprocessing did not finish): {REDO_HINT}')
  try:
    with open(path, encoding='utf-8') as f:
      index = json.load(f)
    if index['format'] != FORMAT_VERSION:
      raise ValueError(f"format {index['format']}, this lmjax reads format {FORMAT_VERSION}")
    for k in ('features', 'dtype', 'num_examples', 'shards'):
      index[k]  # pylint: disable=pointless-statement
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise sources.DataError(f'{path}: unreadable index ({e}): {REDO_HINT}') from None
  return index


class RecordSource:
  """Random access to the examples of a preprocessed folder (a Grain data source).

  Picklable: Grain worker processes reopen the shards on first read. Reads keep to the
  calling thread; one reader per thread.
  """

  def __init__(self, directory: str, index: Mapping[str, Any]):
    self.directory = directory
    self.index = dict(index)
    self.spec = index['features']
    self.dtype = index['dtype']
    self.paths = [os.path.join(directory, s['file']) for s in index['shards']]
    self.starts = np.cumsum([0] + [s['num_records'] for s in index['shards']])
    self._local = threading.local()

  def __len__(self) -> int:
    return int(self.starts[-1])

  def __getstate__(self):
    state = dict(self.__dict__)
    del state['_local']
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  def _readers(self):
    readers = getattr(self._local, 'readers', None)
    if readers is None:
      ar = _array_record()
      readers = self._local.readers = [ar.ArrayRecordReader(p, READER_OPTIONS) for p in self.paths]
    return readers

  def __getitem__(self, i: int) -> bytes:
    i = int(i)
    shard = int(np.searchsorted(self.starts, i, side='right')) - 1
    reader = self._readers()[shard]
    reader.seek(i - int(self.starts[shard]))
    return reader.read()

  def example(self, i: int) -> Dict[str, np.ndarray]:
    """The i-th example, decoded."""
    return decode(self[i], self.spec, self.dtype)


def open_records(directory: str, tokenizer_hash: Optional[str] = None) -> RecordSource:
  """Validates a preprocessed folder and returns its source.

  Args:
    directory: the folder (`index.json` + shards).
    tokenizer_hash: the run's tokenizer hash; data preprocessed with another tokenizer
      is an error (None: not checked).

  Returns:
    The RecordSource.

  Raises:
    sources.DataError: a missing or truncated shard, an index that does not match its
      shards, or another tokenizer; the message names the file and the fix.
  """
  index = read_index(directory)
  ar = _array_record()
  for shard in index['shards']:
    path = os.path.join(directory, shard['file'])
    if not os.path.exists(path):
      raise sources.DataError(f'{path}: shard listed in {INDEX} is missing: {REDO_HINT}')
    size = os.path.getsize(path)
    if size != shard['num_bytes']:
      raise sources.DataError(f'{path}: {size} bytes but {INDEX} says {shard["num_bytes"]} (a '
                              f'truncated or replaced shard): {REDO_HINT}')
    try:
      reader = ar.ArrayRecordReader(path, READER_OPTIONS)
      count = reader.num_records()
      reader.close()
    except Exception as e:  # pylint: disable=broad-except
      raise sources.DataError(f'{path}: not a readable ArrayRecord shard ({e}): {REDO_HINT}') from None
    if count != shard['num_records']:
      raise sources.DataError(f'{path}: {count} records but {INDEX} says {shard["num_records"]}: '
                              f'{REDO_HINT}')
  total = sum(s['num_records'] for s in index['shards'])
  if total != index['num_examples'] or not total:
    raise sources.DataError(f'{os.path.join(directory, INDEX)}: num_examples={index["num_examples"]} '
                            f'but the shards hold {total} records: {REDO_HINT}')
  if tokenizer_hash is not None and index.get('tokenizer_hash') != tokenizer_hash:
    raise sources.DataError(
        f'{os.path.join(directory, INDEX)}: preprocessed with another tokenizer (hash '
        f'{index.get("tokenizer_hash")}) than this run\'s (hash {tokenizer_hash}, in the '
        'workdir\'s tokenizers/): use a fresh --workdir to train on this data, or set '
        'config.task.preprocessed_dir to an empty folder to preprocess again with the '
        "workdir's tokenizer")
  return RecordSource(directory, index)
