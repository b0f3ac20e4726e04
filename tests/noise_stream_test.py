"""Pretraining noise in the Grain training stream: drawn per stream index, so a resumed
run and N hosts see exactly the masks of one uninterrupted host, and epochs differ."""

import numpy as np
import pytest

from lmjax.data import masked_lm
from lmjax.data import span_corruption as sc
from lmjax.data import stream

PIECES = 300
V = PIECES + 100


def _chunks(n=12, length=141):
  rng = np.random.default_rng(5)
  return [{'tokens': rng.integers(3, PIECES, size=length).astype(np.int32)} for _ in range(n)]


def _span_iter(mode='plain', **kw):
  batching = {'mode': mode}
  return stream.from_examples(_chunks(), global_batch_size=4,
                              lengths={'inputs': 128, 'targets': 29}, seed=3,
                              batching=batching, transform=sc.SpanCorruption(V), **kw)


def _take(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize('mode', ['plain', 'pack'])
def test_resumed_stream_draws_the_masks_of_an_uninterrupted_one(mode):
  full = _take(_span_iter(mode), 8)
  first = _span_iter(mode)
  _take(first, 3)
  state = first.get_state()
  resumed = _span_iter(mode)
  resumed.set_state(state)
  for a, b in zip(full[3:], _take(resumed, 5)):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_two_hosts_together_see_the_masks_of_one():
  one = _take(_span_iter(), 6)
  hosts = [_take(_span_iter(process_index=p, process_count=2), 6) for p in range(2)]
  for step, batch in enumerate(one):
    for k in batch:
      np.testing.assert_array_equal(batch[k], np.concatenate([h[step][k] for h in hosts]))


def test_every_epoch_draws_new_masks_for_the_same_chunk():
  # 12 chunks, 4 rows a step: steps 0-2 are epoch 1, steps 3-5 epoch 2 (reshuffled).
  batches = _take(_span_iter(), 6)

  def by_chunk(steps):
    out = {}
    for b in steps:
      for inputs, targets in zip(b['inputs'], b['targets']):
        raw = []
        spans, cur = {}, None
        for t in targets[targets > 0][:-1]:
          if t >= PIECES:
            cur = int(t)
            spans[cur] = []
          else:
            spans[cur].append(int(t))
        for t in inputs[inputs > 0][:-1]:
          raw.extend(spans[int(t)] if t >= PIECES else [int(t)])
        out[tuple(raw)] = inputs.tolist()
    return out

  one, two = by_chunk(batches[:3]), by_chunk(batches[3:])
  assert set(one) == set(two) and len(one) == 12  # each chunk once per epoch, reassembled
  assert sum(one[k] != two[k] for k in one) >= 10


def test_masked_lm_noise_in_the_stream_resumes_exactly():
  rows = [{'tokens': np.random.default_rng(i).integers(3, PIECES, size=40).astype(np.int32)}
          for i in range(10)]
  make = lambda: stream.from_examples(rows, global_batch_size=2, lengths={'inputs': 40,
                                                                          'targets': 40},
                                      seed=1, transform=masked_lm.MaskedLM(PIECES))
  full = _take(make(), 9)
  it = make()
  _take(it, 4)
  again = make()
  again.set_state(it.get_state())
  for a, b in zip(full[4:], _take(again, 5)):
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
    np.testing.assert_array_equal(a['targets'], b['targets'])
  assert any(np.any(b['inputs'] == PIECES) for b in full)
