"""batching.mode='windows': an LM token stream re-cut at a new offset every epoch."""

import numpy as np
import pytest

from configs import shakespeare_char
from lmjax.config import configlib
from lmjax.data import lm_stream
from lmjax.data import stream

T, B = 16, 4
STREAM = np.arange(1, 1000, dtype=np.int32)  # token i+1 at position i: a window is a run


def windows(context, seed=3, **kw):
  rows = lm_stream.stream_rows(STREAM, T, context)
  lengths = {'targets': T, **({'decoder_inputs': T} if context else {})}
  return lm_stream.WindowIterator.from_rows(rows, B, lengths['targets'], seed, **kw)


@pytest.mark.parametrize('context', [False, True])
def test_each_epoch_tiles_the_stream_from_its_own_offset(context):
  it = windows(context)
  offsets = []
  for epoch in range(6):
    steps = it.batches_per_epoch
    starts = []
    for _ in range(steps):
      batch = next(it)
      targets = batch['targets']  # (B, T)
      assert targets.shape == (B, T)
      np.testing.assert_array_equal(np.diff(targets, axis=1), 1)  # contiguous windows
      if context:  # each target follows the T tokens before it
        np.testing.assert_array_equal(batch['decoder_inputs'], targets - 1)
      starts.extend(targets[:, 0] - 1 - int(context))  # stream index of the window's input
    assert it.epoch == epoch
    starts = np.sort(starts)
    offset = int(starts[0]) % T
    # Disjoint, aligned windows from the epoch's offset, all but < B of the full ones.
    np.testing.assert_array_equal(starts % T, offset)
    assert len(set(starts.tolist())) == len(starts)
    full = (len(STREAM) - offset - int(context)) // T
    assert full - B < len(starts) <= full and len(starts) % B == 0
    offsets.append(offset)
  assert len(set(offsets)) > 2  # the cut moves between epochs


def test_resume_continues_exactly_and_hosts_partition_the_batch():
  straight = windows(True)
  expected = [next(straight) for _ in range(40)]  # > 2 epochs of 15 steps
  first = windows(True)
  for _ in range(17):
    next(first)
  resumed = windows(True)
  resumed.set_state(dict(first.get_state()))
  for want in expected[17:]:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  hosts = [windows(True, process_index=p, process_count=2) for p in range(2)]
  for want in expected[:20]:
    parts = [next(h) for h in hosts]
    for k in want:
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), want[k])


def test_resume_refuses_another_mode_or_stream_and_short_streams_are_errors():
  state = windows(False).get_state()
  assert state['mode'] == 'windows'
  rows = lm_stream.stream_rows(STREAM, T, False)
  plain = stream.from_examples(rows, global_batch_size=B, lengths={'targets': T}, seed=3)
  with pytest.raises(ValueError, match="mode='windows'.*config.task.batching.mode"):
    plain.set_state(state)
  other = lm_stream.WindowIterator(STREAM[:500], B, T, 3, context=False)
  with pytest.raises(ValueError, match='the data changed'):
    other.set_state(state)
  with pytest.raises(ValueError, match='config.train.batch_size=4 windows'):
    lm_stream.WindowIterator(STREAM[:70], B, T, 3, context=False)


def test_config_needs_a_stream_lm_for_windows():
  config = shakespeare_char.get_config('/data,runlocal')
  config.task.batching.mode = 'windows'
  configlib.validate(config)
  config.task.source.stream_context = True
  configlib.validate(config)
  config.task.source.lm_mode = 'line'
  with pytest.raises(configlib.ConfigError, match='task.source.lm_mode'):
    configlib.validate(config)
