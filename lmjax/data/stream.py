"""Training batches streamed with Grain: global shuffle, per-host shards, worker processes.

    records (ArrayRecord) or a list ─▶ MapDataset.shuffle(seed).repeat()   (new order each epoch)
        ─▶ host p: rows [p·L, (p+1)·L) of every B   (plain, pack: each host its own examples)
        ─▶ decode ─▶ batch (plain | pack | bucket) ─▶ mp_prefetch(workers) ─▶ host batches

Memory does not grow with the corpus: the shuffle is an index permutation computed
per element, records are read one at a time, and a batcher holds at most one batch
(plain, pack) or one window of examples (bucket).

Bucket batches have one of a few shapes that every host must agree on at every step,
so in bucket mode every host reads the whole stream, plans the same global batches
from it, and keeps its slice of the rows (as `pipeline.BucketIterator` does).

The iterator state (Grain's, JSON in the checkpoint) resumes exactly, with worker
processes too; it is only valid for the same data, seed, batching and worker count.
"""

import ctypes
import ctypes.util
import functools
import json
import multiprocessing
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from absl import logging
import numpy as np

from lmjax.data import pipeline
from lmjax.data import records

Batch = Dict[str, np.ndarray]


def _grain():
  """Grain and the batchers, imported on first use (~2 s). Grain reads absl flags (its
  debug options) when it builds iterators; programs that are not absl apps (tests,
  notebooks) have not parsed any."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  import grain  # pylint: disable=g-import-not-at-top
  from lmjax.data import batchers  # pylint: disable=g-import-not-at-top
  return grain, batchers


# Seconds `StreamIterator.close` waits for Grain to stop its workers before killing them.
CLOSE_TIMEOUT_S = 60


class _Decode:
  """Record bytes → example (a picklable map function for worker processes)."""

  def __init__(self, spec, dtype):
    self.spec, self.dtype = spec, dtype

  def __call__(self, raw):
    return records.decode(raw, self.spec, self.dtype)


class _Noise:
  """(stream index, example) → transform(the example's generator, example); picklable."""

  def __init__(self, transform, seed: int):
    self.transform, self.seed = transform, seed

  def __call__(self, index: int, example):
    return self.transform(pipeline.example_rng(self.seed, index), example)


class _HostRows:
  """Local position → global position: host p reads rows [p·L, (p+1)·L) of every global
  batch of B = P·L consecutive shuffled examples, so P hosts together see exactly what one
  host would (the same examples in the same rows: equal losses and dropout masks)."""

  def __init__(self, ds, global_rows: int, local_rows: int, process_index: int):
    self.ds, self.global_rows, self.local_rows = ds, global_rows, local_rows
    self.offset = process_index * local_rows

  def __call__(self, j: int):
    block, row = divmod(int(j), self.local_rows)
    return self.ds[block * self.global_rows + self.offset + row]


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
  """Grain worker init: die with the training process, even on SIGKILL (a preempted VM's
  job loop relaunches it; orphaned workers would hold memory and its output pipes)."""
  del worker_index, worker_count
  parent = os.getppid()
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
  except (OSError, AttributeError):
    pass

  def watch():  # elsewhere (and as a second line): poll the parent
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, daemon=True).start()


def _pad(examples, lengths, rows):
  return pipeline.pad_batch(list(examples), lengths, rows)


class StreamIterator:
  """Endless host-local training batches from Grain, with JSON get_state/set_state."""

  def __init__(self, source: Sequence, global_batch_size: int, lengths: Mapping[str, int],
               seed: int, process_index: int = 0, process_count: int = 1,
               batching: Optional[Mapping[str, Any]] = None, workers: int = 0,
               decode: Optional[_Decode] = None,
               transform: Optional[Callable[[np.random.Generator, Mapping[str, np.ndarray]],
                                            Batch]] = None):
    """Args:
      source: random-access examples: a `records.RecordSource` (with `decode`) or a list.
      global_batch_size: rows per step (plain, pack); the row multiple of buckets.
      lengths: static length per sequence feature.
      seed: shuffling seed (each epoch reshuffles).
      process_index: this host's index.
      process_count: number of hosts.
      batching: `config.task.batching` (mode 'plain' | 'pack' | 'bucket', bucket_lengths,
        max_tokens, window).
      workers: Grain worker processes (0: batches are built in this process).
      decode: record bytes → example (None: the source holds examples).
      transform: (generator, example) → training example, e.g. span corruption or
        masked-LM noise; each example's generator comes from (seed, its index in the
        endless shuffled stream: epoch · N + position), the same on every host and after
        a resume (`pipeline.example_rng`).
    """
    grain, batchers = _grain()
    batching = dict(batching or {'mode': 'plain'})
    self.mode = batching['mode']
    if global_batch_size % process_count:
      raise ValueError(f'config.train.batch_size={global_batch_size} must be divisible by '
                       f'the number of processes ({process_count})')
    if len(source) == 0:  # pylint: disable=g-explicit-length-test
      raise ValueError('the training split is empty')
    self.num_examples, self.seed, self.workers = len(source), int(seed), int(workers)
    # Child processes from before this iterator (not its Grain workers: see `close`).
    self._children_before = {p.pid for p in multiprocessing.active_children()}
    self.global_batch_size = global_batch_size
    self.process_index, self.process_count = process_index, process_count
    local = global_batch_size // process_count
    ds = grain.MapDataset.source(source).shuffle(seed=self.seed % (1 << 32)).repeat()
    if decode is not None:
      ds = ds.map(decode)
    if transform is not None:
      ds = ds.map_with_index(_Noise(transform, self.seed))
    if self.mode in ('plain', 'pack'):
      if self.mode == 'plain' and self.num_examples < global_batch_size:
        raise ValueError(f'the training split has {self.num_examples} examples, fewer than '
                         f'config.train.batch_size={global_batch_size}')
      if process_count > 1:
        ds = grain.MapDataset.range(len(ds) // process_count).map(
            _HostRows(ds, global_batch_size, local, process_index))
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0))
    if self.mode == 'plain':
      ds = ds.batch(local, batch_fn=functools.partial(_pad, lengths=dict(lengths), rows=local))
    elif self.mode == 'pack':
      ds = batchers.Batched(ds, functools.partial(batchers.PackIterator, rows=local,
                                                  lengths=dict(lengths)))
    elif self.mode == 'bucket':
      # A window longer than the split would only re-read it (epochs are reshuffled
      # anyway): at most one split's worth is planned at a time.
      shapes = pipeline.bucket_shapes(batching['bucket_lengths'], batching['max_tokens'],
                                      global_batch_size)
      self.shapes = shapes
      window = min(int(batching['window']), self.num_examples)
      ds = batchers.Batched(ds, functools.partial(
          batchers.BucketIterator, shapes=shapes, window=window, seed=self.seed,
          caps=dict(lengths), process_index=process_index, process_count=process_count))
    else:
      raise ValueError(f"config.task.batching.mode={self.mode!r}: streamed batching is 'plain', "
                       "'pack' or 'bucket'")
    if self.workers:
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                       per_worker_buffer_size=2),
                          worker_init_fn=_exit_with_parent)
    self._it = iter(ds)

  def allowed_shapes(self):
    """Bucket mode: (global rows, length) of every bucket."""
    return [(rows, length) for length, rows in self.shapes.items()]

  def __iter__(self):
    return self

  def __next__(self) -> Batch:
    batch = next(self._it)
    # Worker outputs live in shared memory that Grain frees later: copy them out.
    return {k: np.array(v) for k, v in batch.items()}

  def get_state(self) -> Dict[str, Any]:
    """Position to save in a checkpoint (JSON-serializable)."""
    return {'mode': f'stream-{self.mode}', 'num_examples': self.num_examples, 'seed': self.seed,
            'workers': self.workers, 'batch_size': self.global_batch_size,
            'grain': json.dumps(self._it.get_state())}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues from a position returned by `get_state` (same data, seed, mode, workers)."""
    checks = (('mode', f'stream-{self.mode}', 'config.task.batching.mode'),
              ('num_examples', self.num_examples, 'the training data (it changed since)'),
              ('workers', self.workers, 'config.task.batching.workers'),
              ('seed', self.seed, 'config.data_seed'),
              ('batch_size', self.global_batch_size, 'config.train.batch_size'))
    for key, now, where in checks:
      if key in state and state[key] != now:  # (older checkpoints lack 'batch_size')
        raise ValueError(f'the checkpointed data position is for {key}={state.get(key)!r} but '
                         f'this run has {now!r} ({where}): resume with the settings the '
                         'checkpoint was written with, or start a fresh --workdir')
    self._it.set_state(json.loads(state['grain']))

  def restore_states(self, states: Sequence[Mapping[str, Any]]) -> None:
    """Continues from a checkpoint's per-process positions (one per saving process).

    With the same process count each process takes its own. With another count: bucket
    positions are the same on every process (each reads the whole stream) and carry
    over; plain positions count this host's rows and are rescaled exactly (without
    Grain workers); pack positions are per host and cannot be carried over.

    Raises:
      ValueError: a position that does not fit this run (see `set_state`,
        `pipeline.state_for_process`).
    """
    remap = None
    if self.mode == 'bucket':
      remap = lambda state, saved: state
    elif self.mode == 'plain' and not self.workers:
      remap = self._rescale_plain
    what = f'config.task.batching.mode={self.mode!r}'
    if self.workers and self.mode == 'plain':
      what += f' with config.task.batching.workers={self.workers}'
    self.set_state(pipeline.state_for_process(states, self.process_index, self.process_count,
                                              what, remap))

  def _rescale_plain(self, state: Mapping[str, Any], saved_count: int) -> Dict[str, Any]:
    """A plain-mode position of `saved_count` processes for this run's process count: the
    Grain index counts this host's rows, B / P of each global batch."""
    grain_state = json.loads(state['grain'])
    rows = grain_state['next_index'] * saved_count  # global rows read
    if rows % self.process_count:
      raise ValueError(f'the checkpointed data position ({rows} rows) is not a whole number of '
                       f'rows for {self.process_count} processes: resume with {saved_count}')
    grain_state['next_index'] = rows // self.process_count
    return dict(state, grain=json.dumps(grain_state))

  def close(self) -> None:
    """Stops worker processes (if any), within CLOSE_TIMEOUT_S.

    Grain kills a worker that does not exit within 25 s of being told to (a loaded host
    can take that long); killed inside the stop event's lock, the worker leaves that lock
    held, and Grain's next `close` then waits for it forever. So the close runs in a
    helper thread: past the timeout this iterator's workers are killed and the run goes on.
    """
    close = getattr(self._it, 'close', None)
    if close is None:
      return
    ours = [p for p in multiprocessing.active_children() if p.pid not in self._children_before]
    done = threading.Thread(target=close, daemon=True)
    done.start()
    done.join(CLOSE_TIMEOUT_S)
    if done.is_alive():
      logging.warning('Grain workers did not stop within %d s: killing %d worker process(es)',
                      CLOSE_TIMEOUT_S, len(ours))
      for p in ours:
        if p.is_alive():
          p.kill()
          p.join(5)


def from_records(source: records.RecordSource, **kwargs) -> StreamIterator:
  """A StreamIterator over a preprocessed folder (kwargs as `StreamIterator`)."""
  return StreamIterator(source, decode=_Decode(source.spec, source.dtype), **kwargs)


def from_examples(examples: List[Mapping[str, np.ndarray]], **kwargs) -> StreamIterator:
  """A StreamIterator over in-memory examples (kwargs as `StreamIterator`)."""
  return StreamIterator(examples, **kwargs)
