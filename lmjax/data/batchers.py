"""Grain batchers of the training stream (see lmjax.data.stream): greedy packing and
windowed token-budget buckets, each resumable from its `get_state()`.

Kept apart from stream.py because importing Grain takes ~2 s: only training imports it.
"""

from typing import Callable, Dict, Mapping, Optional

import grain
import numpy as np

from lmjax.data import pipeline

Batch = Dict[str, np.ndarray]


class PackIterator(grain.DatasetIterator):
  """Greedy in-order packing into `rows` rows; the example that does not fit waits."""

  def __init__(self, parent, rows: int, lengths: Mapping[str, int]):
    super().__init__(parent)
    self._rows, self._lengths = rows, dict(lengths)
    self._batch_lengths = pipeline.packed_lengths(lengths)
    self._pending: Optional[Dict[str, np.ndarray]] = None

  def __next__(self) -> Batch:
    rows, current, used = [], [], dict.fromkeys(self._lengths, 0)
    while True:
      if self._pending is not None:
        ex, self._pending = self._pending, None
      else:
        try:
          ex = next(self._parent)
        except StopIteration:
          break
      size = {k: len(ex[k]) for k in self._lengths}
      if current and any(used[k] + size[k] > n for k, n in self._lengths.items()):
        rows.append(pipeline.merge_row(current, self._lengths))
        current, used = [], dict.fromkeys(self._lengths, 0)
        if len(rows) == self._rows:
          self._pending = ex
          break
      current.append(ex)
      used = {k: used[k] + size[k] for k in self._lengths}
    if current and len(rows) < self._rows:
      rows.append(pipeline.merge_row(current, self._lengths))
    if not rows:
      raise StopIteration
    return pipeline.pad_batch(rows, self._batch_lengths, self._rows)

  def get_state(self):
    pending = None if self._pending is None else {
        k: np.asarray(v).tolist() for k, v in self._pending.items()}
    return {'parent': self._parent.get_state(), 'pending': pending}

  def set_state(self, state):
    self._parent.set_state(state['parent'])
    p = state['pending']
    self._pending = None if p is None else {k: np.asarray(v, np.int32) for k, v in p.items()}


class BucketIterator(grain.DatasetIterator):
  """Windowed token-budget buckets: read `window` examples, group them by the smallest
  bucket length that holds them, cut each group into batches of that bucket's rows (the
  last one completed with empty rows), shuffle the batch order, emit this host's rows.

  The state is the parent's state at the window's start and the batch index in it: a
  resumed iterator re-reads the window and re-plans it identically.
  """

  def __init__(self, parent, shapes: Mapping[int, int], window: int, seed: int,
               caps: Mapping[str, int], process_index: int, process_count: int):
    super().__init__(parent)
    self._shapes = dict(shapes)
    self._bounds = np.asarray(sorted(shapes))
    self._window, self._seed, self._caps = window, seed, dict(caps)
    self._process_index, self._process_count = process_index, process_count
    self._start, self._count, self._index, self._plan = None, -1, 0, []

  def _load(self, start_state, count: int) -> None:
    self._start, self._count, self._index = start_state, count, 0
    examples = []
    for _ in range(self._window):
      try:
        examples.append(next(self._parent))
      except StopIteration:
        break
    if not examples:
      raise StopIteration
    seq_keys = [k for k in examples[0] if np.ndim(examples[0][k]) >= 1]
    need = np.asarray([max(len(ex[k]) for k in seq_keys) for ex in examples])
    if need.max() > self._bounds[-1]:
      raise ValueError(f'a training example has {need.max()} tokens, more than the largest '
                       f'bucket ({self._bounds[-1]}): raise config.task.batching.bucket_lengths '
                       'or lower the task lengths')
    bucket_of = self._bounds[np.searchsorted(self._bounds, need)]
    batches = []
    for length, rows in self._shapes.items():
      members = [examples[i] for i in np.flatnonzero(bucket_of == length)]
      batches.extend((members[s:s + rows], length) for s in range(0, len(members), rows))
    order = np.random.default_rng([self._seed, count]).permutation(len(batches))
    self._plan = [batches[i] for i in order]
    self._seq_keys = seq_keys

  def __next__(self) -> Batch:
    if self._start is None or self._index >= len(self._plan):
      self._load(self._parent.get_state(), self._count + 1)
    members, length = self._plan[self._index]
    self._index += 1
    local = self._shapes[length] // self._process_count
    mine = members[self._process_index * local:(self._process_index + 1) * local]
    lengths = {k: min(length, self._caps.get(k, length)) for k in self._seq_keys}
    template = self._plan[0][0][0]
    return pipeline.fill_batch(mine, list(template), lengths, local, template)

  def get_state(self):
    if self._start is None:
      return {'start': self._parent.get_state(), 'count': self._count, 'index': 0}
    return {'start': self._start, 'count': self._count, 'index': self._index}

  def set_state(self, state):
    self._parent.set_state(state['start'])
    self._start, self._plan, self._index = None, [], 0
    self._count = int(state['count'])
    if self._count >= 0:  # inside a planned window: re-read and re-plan it
      self._load(state['start'], self._count)
      self._index = int(state['index'])


class Batched(grain.IterDataset):
  """An IterDataset whose iterator is `make_iterator(parent_iterator)`."""

  def __init__(self, parent, make_iterator: Callable):
    super().__init__(parent)
    self._make_iterator = make_iterator

  def __iter__(self):
    return self._make_iterator(self._parent.__iter__())
