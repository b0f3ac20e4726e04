"""Pipeline: packing, length bucketing under a token budget, per-host sharding, eval
padding, and the tokenizers (sentencepiece round trip and workdir cache)."""

import numpy as np
import pytest

from lmjax.data import pipeline
from lmjax.data import stream
from lmjax.data import text_common
from lmjax.data import tokenizers as tok_lib


def make_examples(n=50, max_len=12, seed=0, label=False):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    ex = {'inputs': rng.integers(3, 50, rng.integers(1, max_len + 1)).astype(np.int32),
          'targets': np.append(rng.integers(3, 50, rng.integers(1, max_len)), 1).astype(np.int32)}
    if label:
      ex = {'inputs': ex['inputs'], 'label': np.int32(i % 2)}
    out.append(ex)
  return out


def key(ex):
  return tuple((k, tuple(np.asarray(v).ravel().tolist())) for k, v in sorted(ex.items()))


LENGTHS = {'inputs': 16, 'targets': 16}


def iterator(mode, examples, process_index=0, process_count=1, seed=3):
  batching = {'mode': mode, 'bucket_lengths': [4, 8, 16], 'max_tokens': 64, 'window': 16}
  lengths = LENGTHS if 'targets' in examples[0] else {'inputs': 16}
  return stream.from_examples(examples, global_batch_size=4, lengths=lengths, seed=seed,
                              process_index=process_index, process_count=process_count,
                              batching=batching)


def first_epoch(it, examples, unpack):
  """The examples of the first batches until as many as `examples` came out."""
  seen = []
  while len(seen) < len(examples):
    seen += unpack(next(it))
  return seen[:len(examples)]


def test_packed_rows_hold_every_example_of_an_epoch_once_and_unpack_exactly():
  examples = make_examples()
  it = iterator('pack', examples)
  batch = next(it)
  assert set(batch) == set(pipeline.packed_lengths(LENGTHS))
  assert all(v.shape == (4, 16) for v in batch.values())
  assert batch['inputs_position'][0, 0] == 0 and batch['inputs_segmentation'][0, 0] == 1
  assert max(int(r.max()) for r in batch['inputs_segmentation']) > 1  # rows hold several
  seen = pipeline.unpack_batch(batch) + first_epoch(it, examples, pipeline.unpack_batch)
  assert sorted(map(key, seen[:len(examples)])) == sorted(map(key, examples))


def test_bucketing_budget_and_shapes():
  examples = make_examples(n=80)
  it = iterator('bucket', examples)
  allowed = set(it.allowed_shapes())
  assert allowed == {(16, 4), (8, 8), (4, 16)}

  def rows(batch):
    n, length = batch['inputs'].shape
    assert (n, length) in allowed and n * length <= 64
    assert batch['targets'].shape == (n, length)
    return [ex for ex in (dict(inputs=i[i > 0], targets=t[t > 0])
                          for i, t in zip(batch['inputs'], batch['targets'])) if len(ex['inputs'])]

  seen = first_epoch(it, examples, rows)
  assert sorted(map(key, seen)) == sorted(map(key, examples))  # nothing dropped or repeated


def test_resume_refuses_other_mode_or_data():
  state = iterator('pack', make_examples()).get_state()
  with pytest.raises(ValueError, match="mode='stream-pack'.*config.task.batching.mode"):
    iterator('bucket', make_examples()).set_state(state)
  with pytest.raises(ValueError, match='num_examples=50.*the training data'):
    iterator('pack', make_examples(n=30)).set_state(state)


@pytest.mark.parametrize('mode', ['plain', 'bucket'])
def test_hosts_partition_each_global_batch(mode):
  examples = make_examples(n=48)
  whole = iterator(mode, examples)
  hosts = [iterator(mode, examples, process_index=p, process_count=2) for p in range(2)]
  for _ in range(12):
    full = next(whole)
    parts = [next(h) for h in hosts]
    for k in full:
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), full[k])


def test_eval_batches_pad_the_last_batch_and_keep_order():
  examples = make_examples(n=10, label=True)
  batches = list(pipeline.eval_batches(examples, 4, {'inputs': 16}))
  assert len(batches) == 3 and all(b['inputs'].shape == (4, 16) for b in batches)
  rows = [r for b in batches for r in b['inputs']]
  for ex, row in zip(examples, rows):
    np.testing.assert_array_equal(row[:len(ex['inputs'])], ex['inputs'])
  assert not rows[-1].any() and not rows[-2].any()
  assert batches[-1]['label'].shape == (4,)


def test_filter_and_truncate():
  examples = make_examples(n=20)
  kept = pipeline.filter_by_length(examples, {'inputs': 5, 'targets': 5})
  assert all(len(e['inputs']) <= 5 and len(e['targets']) <= 5 for e in kept)
  assert all(len(e['inputs']) <= 5 for e in pipeline.truncate(examples, {'inputs': 5}))


TEXTS = ['the quick brown fox jumps over the lazy dog', 'a cat sat on the mat',
         'zwei hunde spielen im schnee', 'the dog runs'] * 30


@pytest.mark.parametrize('model_type', ['unigram', 'bpe'])
def test_sentencepiece_round_trip_and_special_ids(tmp_path, model_type):
  tok = tok_lib.build(TEXTS, {'type': 'sentencepiece', 'vocab_size': 60, 'model_type': model_type,
                              'character_coverage': 1.0, 'max_sentences': 100})
  for text in TEXTS[:4]:
    ids = tok.encode(text)
    assert min(ids) > 2 or tok_lib.UNK_ID in ids
    assert tok.decode(ids + [tok_lib.EOS_ID, 7, 0]) == text
  tok.save(str(tmp_path / 'sp.json'), {'type': 'sentencepiece'})
  again = tok_lib.load(str(tmp_path / 'sp.json'))
  assert again.encode(TEXTS[1]) == tok.encode(TEXTS[1]) and again.vocab_size == tok.vocab_size


def test_tokenizer_cached_in_workdir_is_reused(tmp_path):
  calls = []
  opts = {'type': 'char', 'vocab_size': 0, 'min_count': 1}

  def build():
    calls.append(1)
    return tok_lib.build(TEXTS, opts)

  a = text_common.load_or_build_tokenizer(str(tmp_path), 'vocab', build, opts)
  b = text_common.load_or_build_tokenizer(str(tmp_path), 'vocab', build, opts)
  assert len(calls) == 1 and a.tokens == b.tokens
  assert b.decode(b.encode('the cat')) == 'the cat'
