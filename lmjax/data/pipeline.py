"""Deterministic, resumable batching of tokenized examples into static-shape batches.

An example is a dict of 1-D int arrays (e.g. `inputs`, `targets`) or scalars
(`label`). A batch is a dict of int32 arrays of static shape (B, L) / (B,),
padded with 0 (see lmjax/models/CONTRACT.md).
"""

from typing import Dict, Iterator, List, Mapping, Sequence

import numpy as np

Example = Mapping[str, np.ndarray]
Batch = Dict[str, np.ndarray]


def pad_batch(examples: Sequence[Example], lengths: Mapping[str, int], batch_size: int) -> Batch:
  """Stacks examples into a (batch_size, L) batch, padding rows and positions with 0.

  Args:
    examples: at most batch_size examples.
    lengths: static length L per sequence feature; features not listed are scalars.
    batch_size: rows B; missing rows are all padding.

  Returns:
    Dict of int32 arrays.
  """
  keys = examples[0].keys() if examples else lengths.keys()
  batch = {}
  for k in keys:
    if k in lengths:
      arr = np.zeros((batch_size, lengths[k]), np.int32)  # (B, L)
      for i, ex in enumerate(examples):
        seq = np.asarray(ex[k])[:lengths[k]]
        arr[i, :len(seq)] = seq
    else:
      arr = np.zeros((batch_size,), np.int32)  # (B,)
      for i, ex in enumerate(examples):
        arr[i] = ex[k]
    batch[k] = arr
  return batch


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
    return {'epoch': int(self.epoch), 'index': int(self.index), 'seed': int(self.seed),
            'num_examples': len(self.examples)}

  def set_state(self, state: Mapping[str, int]) -> None:
    """Continues from a position returned by `get_state` (same data and seed)."""
    if state.get('num_examples', len(self.examples)) != len(self.examples):
      raise ValueError(f"checkpointed data position is for {state['num_examples']} examples but "
                       f'the training split now has {len(self.examples)}: the data changed since '
                       'the checkpoint was written')
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
    yield pad_batch(mine, lengths, local)
