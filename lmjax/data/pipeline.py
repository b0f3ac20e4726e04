"""Static-shape batches from tokenized examples: padding, eval batches, length handling,
and the helpers of packed rows.

An example is a dict of 1-D int arrays (e.g. `inputs`, `targets`) or scalars
(`label`). A batch is a dict of int32 arrays of static shape (B, L) / (B,),
padded with 0 (see lmjax/models/CONTRACT.md).

The training iterators that use these helpers: `lmjax.data.stream` (Grain: modes
plain, pack and bucket, from records or in-memory examples) and `lm_stream` (windows
of an LM token stream); `Task.train_iterator` picks one from config.task.batching.
"""

from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import numpy as np

Example = Mapping[str, np.ndarray]
Batch = Dict[str, np.ndarray]


def chunk_documents(documents: Iterable[Sequence[int]], raw_length: int) -> List[np.ndarray]:
  """Concatenates token documents (as given: T5's pretraining stream has no separators)
  and cuts the stream into chunks of `raw_length` tokens; the last keeps the remainder.

  Args:
    documents: token id sequences.
    raw_length: chunk length (span corruption: `random_spans_helper(inputs_length)[0]`).

  Returns:
    int32 chunks, in stream order.
  """
  if raw_length < 1:
    raise ValueError(f'chunk length must be positive, got {raw_length}')
  parts = [np.asarray(d, np.int32) for d in documents]
  stream = np.concatenate(parts) if parts else np.zeros((0,), np.int32)
  return [stream[s:s + raw_length] for s in range(0, len(stream), raw_length)]


def example_rng(seed: int, index: int) -> np.random.Generator:
  """The random generator of the example at `index` of the endless training stream
  (epoch · N + position), for per-example noise (span corruption, masked LM): it depends
  on nothing else, so a resumed run draws what an uninterrupted one did, and every epoch
  draws anew."""
  return np.random.default_rng([int(seed) % (1 << 32), int(index)])


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


def state_for_process(states: Sequence, process_index: int, process_count: int, what: str,
                      remap=None):
  """The saved iterator position this process continues from.

  Args:
    states: the positions a checkpoint holds, one per process of the run that saved it.
    process_index: this process.
    process_count: processes of this run.
    what: the batching, for messages (e.g. "config.task.batching.mode='pack'").
    remap: None when a position is only valid for the process that saved it; else
      `remap(state, saved_count) -> state` for `process_count` processes, applied when
      the process count changed (the positions of all saving processes must then agree).

  Returns:
    The position to pass to the iterator's `set_state`.

  Raises:
    ValueError: the process count changed and the positions cannot be mapped (one line:
      the mode, both counts and what to do).
  """
  saved = len(states)
  if saved == process_count:
    return states[process_index]
  fresh = ('resume with the process count that wrote it, or start a fresh --workdir '
           '(--config.train.init_from=THAT_WORKDIR starts from its parameters)')
  if remap is None:
    raise ValueError(f'{what} keeps a data position per process (each host batches its own '
                     f'examples): the checkpoint was written by {saved} processes and this run '
                     f'has {process_count}, so the position cannot be carried over; {fresh}')
  if any(s != states[0] for s in states[1:]):
    raise ValueError(f'{what}: the {saved} processes that wrote the checkpoint saved different '
                     f'data positions, which cannot be mapped to {process_count} processes; '
                     f'{fresh}')
  return remap(states[0], saved)
