"""Token-stream batching for stateful truncated-BPTT language models (Zaremba et al., 2014).

The classic layout: the token stream is cut into B contiguous rows, and batch t holds
the t-th window of T tokens of every row,

    stream  a b c d e f g h i j k l m n o p q r s t u v w x      (B = 2, T = 3)
    rows    a b c d e f g h i j k l  |  m n o p q r s t u v w x
    batch 0 [a b c] [m n o]    batch 1 [d e f] [p q r]    batch 2 ...

so row i of batch t+1 continues row i of batch t and the LSTM state can be carried
over. Every batch also has `reset` (B,) int32: 1 on the first window of an epoch,
where the carried state must restart from zeros.
"""

from typing import Dict, Iterator, List, Mapping, Sequence

import numpy as np

from lmjax.data import pipeline

Batch = Dict[str, np.ndarray]


def concat_stream(examples: List[Mapping[str, np.ndarray]], key: str = 'targets') -> np.ndarray:
  """The examples' `key` sequences (padding-free, EOS-terminated) as one int32 stream."""
  if not examples:
    return np.zeros((0,), np.int32)
  return np.concatenate([np.asarray(ex[key], np.int32) for ex in examples])


def stream_rows(ids, length: int, context: bool) -> List[Batch]:
  """Cuts a token stream into rows of `length` (the remainder is a shorter last row).

  Args:
    ids: the token stream (sequence of int).
    length: row length T.
    context: False: rows {'targets': ids[s : s+T]}, decoded from BOS. True: rows
      {'targets': ids[s+1 : s+1+T], 'decoder_inputs': ids[s : s+T]}, each target after
      the T tokens before it (nanoGPT's windows; the stream's first token is never a target).

  Returns:
    The rows, in stream order.
  """
  ids = np.asarray(ids, np.int32)
  if not context:
    return [{'targets': ids[s:s + length]} for s in range(0, len(ids), length)]
  rows = []
  for s in range(0, len(ids) - 1, length):
    targets = ids[s + 1:s + 1 + length]
    rows.append({'targets': targets, 'decoder_inputs': ids[s:s + len(targets)]})
  return rows


class _StreamPosition:
  """get_state/set_state of the stream iterators: (epoch, index) of a stream of known length."""
  MODE = ''
  MISMATCH = ''  # what the current config batches, for the wrong-mode error

  def _setup(self, stream, global_batch_size: int, seq_len: int, seed: int,
             process_index: int, process_count: int) -> None:
    """Stores the stream, sizes and host; raises unless the process count divides B."""
    if global_batch_size % process_count:
      raise ValueError(f'config.train.batch_size={global_batch_size} must be divisible by '
                       f'the number of processes ({process_count})')
    self.stream = np.asarray(stream, np.int32)
    self.global_batch_size, self.seq_len, self.seed = global_batch_size, seq_len, seed
    self.local_batch_size = global_batch_size // process_count
    self.process_index, self.process_count = process_index, process_count

  def get_state(self) -> Dict[str, int]:
    """Position to save in a checkpoint (JSON-serializable)."""
    return {'mode': self.MODE, 'epoch': int(self.epoch), 'index': int(self.index),
            'seed': int(self.seed), 'num_tokens': int(len(self.stream)),
            'batch_size': int(self.global_batch_size)}

  def set_state(self, state: Mapping[str, int]) -> None:
    """Continues from a position returned by `get_state` (same stream, batch size and seed)."""
    if state.get('mode') != self.MODE:
      raise ValueError(f"checkpointed data position is for batching mode {state.get('mode')!r} "
                       f'but {self.MISMATCH}: resume with the config the checkpoint was '
                       'written with')
    if state['num_tokens'] != len(self.stream):
      raise ValueError(f"checkpointed data position is for a stream of {state['num_tokens']} "
                       f'tokens but the training stream now has {len(self.stream)}: the data '
                       'changed since the checkpoint was written')
    if state.get('batch_size', self.global_batch_size) != self.global_batch_size:
      raise ValueError(f"checkpointed data position is for config.train.batch_size="
                       f"{state['batch_size']} but this run has {self.global_batch_size}: resume "
                       'with the batch size the checkpoint was written with')
    self.epoch, self.index = int(state['epoch']), int(state['index'])

  def restore_states(self, states: Sequence[Mapping[str, int]]) -> None:
    """Continues from a checkpoint's per-process positions (one per saving process). The
    position counts global batches, the same on every process, so it carries over to
    any process count that divides the batch."""
    self.set_state(pipeline.state_for_process(
        states, self.process_index, self.process_count, f'batching {self.MODE!r}',
        remap=lambda state, saved: state))

  def close(self) -> None:
    """Nothing to release (no worker processes); the trainer closes every iterator."""


class LMStreamIterator(_StreamPosition):
  """Endless training batches of consecutive windows, exactly resumable from `get_state()`.

  Each epoch starts the rows at an offset in [0, T) drawn from (seed, epoch), so the
  window boundaries move between epochs; the tokens after the last full window of
  each row are left out of that epoch. Every process takes its own contiguous block
  of rows (rows are streams, so the global batch is the same for any host count).
  """
  MODE = 'lm_stream'
  MISMATCH = 'config.train.stateful=True batches a token stream'

  def __init__(self, stream: np.ndarray, global_batch_size: int, seq_len: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    """Args:
      stream: (N,) int32 token stream.
      global_batch_size: rows B over all processes.
      seq_len: window length T (config.task.max_target_length).
      seed: seed of the per-epoch offsets.
      process_index: this host's index.
      process_count: number of hosts (must divide B).

    Raises:
      ValueError: B not divisible by the process count, or a stream too short for one window.
    """
    self._setup(stream, global_batch_size, seq_len, seed, process_index, process_count)
    self.row_len = (len(self.stream) - (seq_len - 1)) // global_batch_size
    if self.row_len < seq_len:
      raise ValueError(
          f'the training stream has {len(self.stream)} tokens: too short for '
          f'config.train.batch_size={global_batch_size} rows of at least one '
          f'config.task.max_target_length={seq_len} window (needs '
          f'{global_batch_size * seq_len + seq_len - 1}); use fewer rows or shorter windows')
    self.epoch, self.index = 0, 0

  @property
  def batches_per_epoch(self) -> int:
    return self.row_len // self.seq_len

  def _offset(self) -> int:
    return int(np.random.default_rng([self.seed, self.epoch]).integers(self.seq_len))

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    if self.index >= self.batches_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    first_row = self.process_index * self.local_batch_size
    rows = np.arange(first_row, first_row + self.local_batch_size)  # (b,)
    starts = self._offset() + rows * self.row_len + self.index * self.seq_len  # (b,)
    targets = self.stream[starts[:, None] + np.arange(self.seq_len)[None]]  # (b, T)
    reset = np.full((self.local_batch_size,), int(self.index == 0), np.int32)
    self.index += 1
    return {'targets': targets, 'reset': reset}


class WindowIterator(_StreamPosition):
  """Endless shuffled training windows of a token stream, re-cut every epoch.

  Epoch e cuts the stream into consecutive full windows of T tokens starting at an offset
  drawn from (seed, e) in [0, T), shuffles them, and yields B per step; so every epoch
  sees windows the previous ones did not (nanoGPT draws random windows; this draws them
  without replacement). Rows are independent (no carried state): with `context` a row is
  {'decoder_inputs': s[i : i+T], 'targets': s[i+1 : i+1+T]}, else {'targets': s[i : i+T]}
  decoded from BOS, as `stream_rows` cuts them. Exactly resumable from `get_state()`.
  """
  MODE = 'windows'
  MISMATCH = "config.task.batching.mode is now 'windows'"

  def __init__(self, stream: np.ndarray, global_batch_size: int, seq_len: int, seed: int,
               context: bool, process_index: int = 0, process_count: int = 1):
    """Args:
      stream: (N,) int32 token stream.
      global_batch_size: rows B over all processes.
      seq_len: window length T.
      seed: seed of the per-epoch offsets and orders.
      context: rows carry 'decoder_inputs' (each target after the T tokens before it).
      process_index: this host's index.
      process_count: number of hosts (must divide B).

    Raises:
      ValueError: B not divisible by the process count, or a stream too short for B windows.
    """
    self._setup(stream, global_batch_size, seq_len, seed, process_index, process_count)
    self.context = context
    if self._num_windows(seq_len - 1) < global_batch_size:
      raise ValueError(f'the training stream has {len(self.stream)} tokens: too few for '
                       f'config.train.batch_size={global_batch_size} windows of '
                       f'config.task.max_target_length={seq_len} (at any offset)')
    self.epoch, self.index = 0, 0
    self._plan = None

  @classmethod
  def from_rows(cls, rows: List[Mapping[str, np.ndarray]], *args, **kwargs) -> 'WindowIterator':
    """The iterator over the stream that `stream_rows` cut into `rows` (same arguments after
    `stream`, without `context`, which the rows tell)."""
    context = 'decoder_inputs' in rows[0]
    stream = concat_stream(rows)
    if context:  # the rows' targets start at the stream's second token
      stream = np.concatenate([np.asarray(rows[0]['decoder_inputs'][:1], np.int32), stream])
    return cls(stream, *args, context=context, **kwargs)

  def _num_windows(self, offset: int) -> int:
    return (len(self.stream) - offset - int(self.context)) // self.seq_len

  def _epoch_plan(self):
    """(offset, window order) of the current epoch."""
    if self._plan is None or self._plan[0] != self.epoch:
      rng = np.random.default_rng([self.seed, self.epoch])
      offset = int(rng.integers(self.seq_len))
      self._plan = (self.epoch, offset, rng.permutation(self._num_windows(offset)))
    return self._plan[1:]

  @property
  def batches_per_epoch(self) -> int:
    """Steps in the current epoch (the window count varies by one with the offset)."""
    return len(self._epoch_plan()[1]) // self.global_batch_size

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    if self.index >= self.batches_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    offset, order = self._epoch_plan()
    first = self.index * self.global_batch_size + self.process_index * self.local_batch_size
    starts = offset + order[first:first + self.local_batch_size] * self.seq_len  # (b,)
    idx = starts[:, None] + np.arange(self.seq_len)[None]  # (b, T)
    self.index += 1
    if self.context:
      return {'decoder_inputs': self.stream[idx], 'targets': self.stream[idx + 1]}
    return {'targets': self.stream[idx]}



def eval_stream_batches(stream: np.ndarray, global_batch_size: int, seq_len: int,
                        process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """One pass over an eval stream in the same layout; every token is scored once.

  Rows hold ceil(N / B) tokens (the last rows are completed with padding 0, weight 0),
  and the last window is padded too. Padding only ever follows a row's real tokens, so
  the state it produces is never used to score a real token.

  Yields:
    Host-local {'targets': (B/P, T), 'reset': (B/P,)}; reset = 1 on the first window.
  """
  n = len(stream)
  row_len = max(-(-n // global_batch_size), 1)
  windows = -(-row_len // seq_len)
  grid = np.zeros((global_batch_size, windows * seq_len), np.int32)  # (B, W·T)
  padded = np.zeros((global_batch_size * row_len,), np.int32)
  padded[:n] = stream
  grid[:, :row_len] = padded.reshape(global_batch_size, row_len)
  local = global_batch_size // process_count
  mine = grid[process_index * local:(process_index + 1) * local]
  for w in range(windows):
    yield {'targets': mine[:, w * seq_len:(w + 1) * seq_len],
           'reset': np.full((local,), int(w == 0), np.int32)}
