"""Deterministic, resumable batching of tokenized examples into static-shape batches.

An example is a dict of 1-D int arrays (e.g. `inputs`, `targets`) or scalars
(`label`). A batch is a dict of int32 arrays of static shape (B, L) / (B,),
padded with 0 (see lmjax/models/CONTRACT.md).

Three training modes (`make_train_iterator`):
  plain   one example per row, fixed batch size (`BatchIterator`).
  pack    several examples per row with `*_segmentation` / `*_position` fields
          (`PackedIterator`; Transformer only).
  bucket  rows of one of a few fixed lengths, as many rows as fit a token budget
          (`BucketIterator`, fairseq `max_tokens` style; one compiled program per bucket).
  windows an LM token stream re-cut at a new offset every epoch
          (`lm_stream.WindowIterator`; lm_mode='stream').
All are deterministic from (seed, epoch), give each process a disjoint slice of every
global batch, and resume exactly from `get_state()`.
"""

from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from lmjax.data import lm_stream

Example = Mapping[str, np.ndarray]
Batch = Dict[str, np.ndarray]


def pad_batch(examples: Sequence[Example], lengths: Mapping[str, int], batch_size: int) -> Batch:
  """Stacks examples into a (batch_size, L, ...) batch, padding rows and positions with 0.

  Args:
    examples: at most batch_size examples.
    lengths: static length L (first axis) per sequence feature; features not listed are
      scalars. A feature with more axes (e.g. `chars` (L, W)) keeps its trailing shape.
    batch_size: rows B; missing rows are all padding.

  Returns:
    Dict of int32 arrays.
  """
  keys = list(examples[0].keys() if examples else lengths.keys())
  return fill_batch(examples, keys, lengths, batch_size, examples[0] if examples else None)


class BatchIterator:
  """Endless epoch-shuffled training batches, exactly resumable from `get_state()`.

  Every process computes the same global permutation from (seed, epoch) and takes
  its own contiguous slice of each global batch, so hosts never overlap.
  """

  def __init__(self, examples: List[Example], global_batch_size: int, lengths: Mapping[str, int],
               seed: int, process_index: int = 0, process_count: int = 1):
    """Args:
      examples: the training split, already tokenized.
      global_batch_size: rows per step over all processes.
      lengths: static sequence length per feature.
      seed: shuffling seed.
      process_index: this host's index.
      process_count: number of hosts (must divide global_batch_size).
    """
    if global_batch_size % process_count:
      raise ValueError(f'config.train.batch_size={global_batch_size} must be divisible by '
                       f'the number of processes ({process_count})')
    if len(examples) < global_batch_size:
      raise ValueError(f'the training split has {len(examples)} examples, fewer than '
                       f'config.train.batch_size={global_batch_size}')
    self.examples = examples
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.lengths = dict(lengths)
    self.seed = seed
    self.process_index = process_index
    self.epoch = 0
    self.index = 0  # batch index within the epoch
    self._order = None

  @property
  def batches_per_epoch(self) -> int:
    return len(self.examples) // self.global_batch_size

  def _permutation(self) -> np.ndarray:
    if self._order is None or self._order[0] != self.epoch:
      rng = np.random.default_rng([self.seed, self.epoch])
      self._order = (self.epoch, rng.permutation(len(self.examples)))
    return self._order[1]

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    if self.index >= self.batches_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    order = self._permutation()
    start = self.index * self.global_batch_size + self.process_index * self.local_batch_size
    rows = [self.examples[i] for i in order[start:start + self.local_batch_size]]
    self.index += 1
    return pad_batch(rows, self.lengths, self.local_batch_size)

  def get_state(self) -> Dict[str, int]:
    """Position to save in a checkpoint."""
    return {'mode': 'plain', 'epoch': int(self.epoch), 'index': int(self.index),
            'seed': int(self.seed), 'num_examples': len(self.examples)}

  def set_state(self, state: Mapping[str, int]) -> None:
    """Continues from a position returned by `get_state` (same data and seed)."""
    if state.get('num_examples', len(self.examples)) != len(self.examples):
      raise ValueError(f"checkpointed data position is for {state['num_examples']} examples but "
                       f'the training split now has {len(self.examples)}: the data changed since '
                       'the checkpoint was written')
    if state.get('mode', 'plain') != 'plain':
      raise ValueError(f"checkpointed data position is for batching mode {state['mode']!r} but "
                       "config.task.batching.mode is now 'plain'")
    self.epoch, self.index = int(state['epoch']), int(state['index'])


def eval_batches(examples: List[Example], global_batch_size: int, lengths: Mapping[str, int],
                 process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """Eval batches in order, nothing dropped; the last batch is padded with empty rows.

  Empty rows are all 0, so their weights (derived from padding) are 0.

  Yields:
    Host-local batches of global_batch_size // process_count rows.
  """
  local = global_batch_size // process_count
  for start in range(0, len(examples), global_batch_size):
    chunk = examples[start:start + global_batch_size]
    mine = chunk[process_index * local:(process_index + 1) * local]
    yield fill_batch(mine, list(examples[0].keys()), lengths, local, examples[0])


def filter_by_length(examples: Sequence[Example], lengths: Mapping[str, int]) -> List[Example]:
  """Drops examples with a sequence feature longer than its static length."""
  return [ex for ex in examples
          if all(len(ex[k]) <= n for k, n in lengths.items() if k in ex)]


def truncate(examples: Sequence[Example], lengths: Mapping[str, int]) -> List[Example]:
  """Cuts every sequence feature to its static length."""
  return [{k: (np.asarray(v)[:lengths[k]] if k in lengths else v) for k, v in ex.items()}
          for ex in examples]


def pack_rows(examples: Sequence[Example], lengths: Mapping[str, int]) -> List[Example]:
  """Greedy in-order packing: each row takes examples while every feature still fits.

  Args:
    examples: examples with sequence features only, each no longer than `lengths`.
    lengths: static row length per feature.

  Returns:
    Packed rows: for each feature `f`, `f`, `f_segmentation` (1, 2, … per example) and
    `f_position` (0-based within each example), unpadded 1-D int32 arrays.
  """
  rows, current, used = [], [], {k: 0 for k in lengths}
  for ex in examples:
    sizes = {k: len(ex[k]) for k in lengths}
    if any(sizes[k] > lengths[k] for k in lengths):
      raise ValueError(f'example longer than the packing length {dict(lengths)}: {sizes}; '
                       'truncate or filter first')
    if current and any(used[k] + sizes[k] > lengths[k] for k in lengths):
      rows.append(merge_row(current, lengths))
      current, used = [], {k: 0 for k in lengths}
    current.append(ex)
    used = {k: used[k] + sizes[k] for k in lengths}
  if current:
    rows.append(merge_row(current, lengths))
  return rows


def merge_row(examples: Sequence[Example], lengths: Mapping[str, int]) -> Example:
  """One packed row of `examples` with `*_segmentation` / `*_position` fields (unpadded)."""
  row = {}
  for k in lengths:
    parts = [np.asarray(ex[k], np.int32) for ex in examples]
    row[k] = np.concatenate(parts)
    row[k + '_segmentation'] = np.concatenate(
        [np.full(len(p), i + 1, np.int32) for i, p in enumerate(parts)])
    row[k + '_position'] = np.concatenate([np.arange(len(p), dtype=np.int32) for p in parts])
  return row


def packed_lengths(lengths: Mapping[str, int]) -> Dict[str, int]:
  """Static lengths of a packed batch (the sequence features plus their packing fields)."""
  out = dict(lengths)
  for k, n in lengths.items():
    out[k + '_segmentation'] = out[k + '_position'] = n
  return out


def unpack_batch(batch: Mapping[str, np.ndarray]) -> List[Example]:
  """Inverse of packing: the examples of a packed batch, row by row, in order.

  Rows without any segment (padding rows) give nothing.
  """
  features = [k for k in batch if k + '_segmentation' in batch]
  out = []
  for r in range(batch[features[0]].shape[0]):
    n = max(int(batch[k + '_segmentation'][r].max()) for k in features)
    for seg in range(1, n + 1):
      out.append({k: batch[k][r][batch[k + '_segmentation'][r] == seg] for k in features})
  return out


def fill_batch(rows: Sequence[Example], keys: Sequence[str], lengths: Mapping[str, int],
               num_rows: int, template: Optional[Example] = None) -> Batch:
  """(num_rows, L, ...) int32 arrays of `rows`, zero-padded; trailing axes beyond the
  sequence axis come from `template` (any example of the split), so that hosts whose
  share of a batch is empty still build arrays of the same rank."""
  batch = {}
  for k in keys:
    tail = np.shape(template[k])[1:] if template is not None and k in lengths else ()
    batch[k] = np.zeros((num_rows, lengths[k]) + tail if k in lengths else (num_rows,), np.int32)
  for i, ex in enumerate(rows):
    for k in keys:
      if k in lengths:
        seq = np.asarray(ex[k])[:lengths[k]]
        batch[k][i, :len(seq)] = seq
      else:
        batch[k][i] = ex[k]
  return batch


class _PlannedIterator:
  """Base: each epoch is a list of global batches, each a list of rows (lists of example
  indices), planned from (seed, epoch); the state is (epoch, batch index)."""

  mode = ''

  def __init__(self, examples: List[Example], seed: int, process_index: int, process_count: int):
    if not examples:
      raise ValueError('the training split is empty')
    self.examples = examples
    self.seed = seed
    self.process_index, self.process_count = process_index, process_count
    self.keys = list(examples[0].keys())
    self.epoch, self.index = 0, 0
    self._plan = None

  def _plan_epoch(self, order: np.ndarray, rng: np.random.Generator):
    """Returns a list of (rows, shape key) global batches for one epoch."""
    raise NotImplementedError

  def _epoch_plan(self):
    if self._plan is None or self._plan[0] != self.epoch:
      rng = np.random.default_rng([self.seed, self.epoch])
      order = rng.permutation(len(self.examples))
      self._plan = (self.epoch, self._plan_epoch(order, rng))
    return self._plan[1]

  @property
  def batches_per_epoch(self) -> int:
    return len(self._epoch_plan())

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    if self.index >= len(self._epoch_plan()):
      self.epoch, self.index = self.epoch + 1, 0
    rows, shape = self._epoch_plan()[self.index]
    self.index += 1
    return self._local_batch(rows, shape)

  def _local_batch(self, rows, shape) -> Batch:
    raise NotImplementedError

  def get_state(self) -> Dict[str, int]:
    """Position to save in a checkpoint (JSON-serializable)."""
    return {'mode': self.mode, 'epoch': int(self.epoch), 'index': int(self.index),
            'seed': int(self.seed), 'num_examples': len(self.examples)}

  def set_state(self, state: Mapping[str, int]) -> None:
    """Continues from a position returned by `get_state` (same data, seed and mode)."""
    if state.get('num_examples', len(self.examples)) != len(self.examples):
      raise ValueError(f"checkpointed data position is for {state['num_examples']} examples but "
                       f'the training split now has {len(self.examples)}: the data changed since '
                       'the checkpoint was written')
    if state.get('mode', self.mode) != self.mode:
      raise ValueError(f"checkpointed data position is for batching mode {state['mode']!r} but "
                       f'config.task.batching.mode is now {self.mode!r}')
    self.epoch, self.index = int(state['epoch']), int(state['index'])


class PackedIterator(_PlannedIterator):
  """Endless packed training batches: each epoch, shuffle, pack greedily, batch rows.

  Nothing is dropped: the last batch of an epoch is completed with empty rows.
  """

  mode = 'pack'

  def __init__(self, examples: List[Example], global_batch_size: int, lengths: Mapping[str, int],
               seed: int, process_index: int = 0, process_count: int = 1):
    """Args as `BatchIterator`; examples hold sequence features only (no `label`)."""
    if global_batch_size % process_count:
      raise ValueError(f'config.train.batch_size={global_batch_size} must be divisible by '
                       f'the number of processes ({process_count})')
    super().__init__(examples, seed, process_index, process_count)
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.lengths = dict(lengths)
    self.batch_lengths = packed_lengths(lengths)
    self.sizes = [{k: len(ex[k]) for k in lengths} for ex in examples]

  def _plan_epoch(self, order, rng):
    rows, current, used = [], [], {k: 0 for k in self.lengths}
    for i in order:
      size = self.sizes[i]
      if current and any(used[k] + size[k] > self.lengths[k] for k in self.lengths):
        rows.append(current)
        current, used = [], {k: 0 for k in self.lengths}
      current.append(int(i))
      used = {k: used[k] + size[k] for k in self.lengths}
    rows.append(current)
    b = self.global_batch_size
    return [(rows[s:s + b], None) for s in range(0, len(rows), b)]

  def _local_batch(self, rows, shape):
    start = self.process_index * self.local_batch_size
    mine = rows[start:start + self.local_batch_size]
    packed = [merge_row([self.examples[i] for i in row], self.lengths) for row in mine]
    return fill_batch(packed, list(self.batch_lengths), self.batch_lengths, self.local_batch_size)


def bucket_shapes(bucket_lengths: Sequence[int], max_tokens: int, row_multiple: int
                  ) -> Dict[int, int]:
  """Rows per bucket: as many as fit `max_tokens`, rounded down to `row_multiple`.

  Returns:
    bucket length → rows (global).
  """
  shapes = {}
  for length in sorted(bucket_lengths):
    rows = (max_tokens // length) // row_multiple * row_multiple
    if rows < row_multiple:
      raise ValueError(f'config.task.batching.max_tokens={max_tokens} is too small for bucket '
                       f'length {length}: it must be at least {length * row_multiple} '
                       f'({row_multiple} rows, the batch-axis multiple)')
    shapes[length] = rows
  return shapes


class BucketIterator(_PlannedIterator):
  """Endless length-bucketed batches under a token budget (fairseq `max_tokens`).

  Every example goes to the smallest bucket length that holds all its sequence
  features; a bucket of length L has rows = max_tokens // L (rounded down to
  `row_multiple`), so rows × L ≤ max_tokens. Only len(bucket_lengths) shapes exist.
  Each epoch: shuffle, split into buckets, chunk into batches (the last per bucket is
  completed with empty rows; nothing is dropped), shuffle the batch order.
  """

  mode = 'bucket'

  def __init__(self, examples: List[Example], bucket_lengths: Sequence[int], max_tokens: int,
               seed: int, process_index: int = 0, process_count: int = 1, row_multiple: int = 1,
               lengths: Optional[Mapping[str, int]] = None):
    """Args:
      examples: tokenized training examples.
      bucket_lengths: allowed row lengths; the largest must hold every example.
      max_tokens: token budget per global batch (rows × length).
      seed: shuffling seed.
      process_index: this host's index.
      process_count: number of hosts.
      row_multiple: rows of every bucket are a multiple of this (devices on the batch
        axes; a multiple of process_count).
      lengths: per-feature caps (a feature never gets more than its static length).
    """
    if row_multiple % process_count:
      raise ValueError(f'row_multiple={row_multiple} must be a multiple of the number of '
                       f'processes ({process_count})')
    super().__init__(examples, seed, process_index, process_count)
    self.shapes = bucket_shapes(bucket_lengths, max_tokens, row_multiple)
    # Sequence features, incl. per-word ones such as `chars` (S, W): cut to the bucket length.
    self.seq_keys = [k for k in self.keys if np.ndim(examples[0][k]) >= 1]
    self.caps = dict(lengths or {})
    longest = max(self.shapes)
    bounds = np.asarray(sorted(self.shapes))
    need = np.asarray([max(len(ex[k]) for k in self.seq_keys) for ex in examples])
    if need.max() > longest:
      bad = int(np.argmax(need))
      raise ValueError(f'training example {bad} has {need[bad]} tokens, more than the largest '
                       f'bucket ({longest}); truncate or filter first')
    self.bucket_of = bounds[np.searchsorted(bounds, need)]

  def allowed_shapes(self):
    """(global rows, length) of every bucket."""
    return [(rows, length) for length, rows in self.shapes.items()]

  def _plan_epoch(self, order, rng):
    batches = []
    for length, rows in self.shapes.items():
      members = [int(i) for i in order if self.bucket_of[i] == length]
      batches.extend((members[s:s + rows], length) for s in range(0, len(members), rows))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]

  def _local_batch(self, rows, length):
    local = self.shapes[length] // self.process_count
    mine = rows[self.process_index * local:(self.process_index + 1) * local]
    lengths = {k: min(length, self.caps.get(k, length)) for k in self.seq_keys}
    return fill_batch([self.examples[i] for i in mine], self.keys, lengths, local, self.examples[0])


def make_train_iterator(examples: List[Example], global_batch_size: int,
                        lengths: Mapping[str, int], seed: int, process_index: int = 0,
                        process_count: int = 1, batching: Optional[Mapping] = None):
  """The training iterator for `batching['mode']` ('plain', 'pack' or 'bucket').

  Args:
    examples: tokenized training examples (already truncated or filtered to `lengths`).
    global_batch_size: rows per step (plain, pack); the row multiple of buckets.
    lengths: static length per sequence feature.
    seed: shuffling seed.
    process_index: this host's index.
    process_count: number of hosts.
    batching: `config.task.batching` ({'mode', 'bucket_lengths', 'max_tokens'}); None = plain.
      'windows' takes the rows `lm_stream.stream_rows` cut, in stream order.

  Returns:
    An iterator with get_state/set_state.
  """
  mode = (batching or {}).get('mode', 'plain')
  if mode == 'plain':
    return BatchIterator(examples, global_batch_size, lengths, seed, process_index, process_count)
  if mode == 'pack':
    return PackedIterator(examples, global_batch_size, lengths, seed, process_index, process_count)
  if mode == 'windows':
    return lm_stream.WindowIterator.from_rows(examples, global_batch_size, lengths['targets'],
                                              seed, process_index=process_index,
                                              process_count=process_count)
  if mode == 'bucket':
    return BucketIterator(examples, batching['bucket_lengths'], batching['max_tokens'], seed,
                          process_index, process_count, row_multiple=global_batch_size,
                          lengths=lengths)
  raise ValueError("config.task.batching.mode must be 'plain', 'pack', 'bucket' or 'windows', "
                   f'got {mode!r}')
