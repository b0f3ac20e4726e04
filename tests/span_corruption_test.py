"""T5 span corruption (lmjax/data/span_corruption.py) against seqio's definition."""

import collections
import itertools

import numpy as np
import pytest

from lmjax.data import pipeline
from lmjax.data import span_corruption as sc
from lmjax.data import tokenizers as tok_lib

PIECES, EXTRA_IDS = 1000, 100
V = PIECES + EXTRA_IDS


@pytest.mark.parametrize('inputs_length,raw,targets', [(512, 568, 114), (128, 141, 29),
                                                       (64, 70, 14)])
def test_raw_lengths_are_seqio_random_spans_helper(inputs_length, raw, targets):
  assert sc.random_spans_helper(inputs_length) == (raw, targets)


def _reassemble(inputs, targets):
  """The raw tokens back from a corrupted pair: each input sentinel → its target span."""
  spans, current = {}, None
  for t in targets[:-1]:
    if t >= PIECES:
      current = int(t)
      spans[current] = []
    else:
      spans[current].append(int(t))
  out = []
  for t in inputs[:-1]:
    out.extend(spans[int(t)] if t >= PIECES else [int(t)])
  return out


def test_statistics_over_ten_thousand_chunks_of_raw_length_141():
  corrupt = sc.SpanCorruption(vocab_size=V)
  rng = np.random.default_rng(0)
  span_lengths = collections.Counter()
  for i in range(10_000):
    tokens = rng.integers(3, PIECES, size=141)
    ex = corrupt(pipeline.example_rng(7, i), {'tokens': tokens})
    inputs, targets = ex['inputs'], ex['targets']
    assert len(inputs) == 128 and len(targets) == 29
    assert inputs[-1] == targets[-1] == tok_lib.EOS_ID
    in_sentinels = [int(t) for t in inputs if t >= PIECES]
    tgt_sentinels = [int(t) for t in targets if t >= PIECES]
    expected = [sc.sentinel_id(V, k) for k in range(7)]
    assert in_sentinels == tgt_sentinels == expected  # 7 spans, counting down from V − 1
    assert len(targets) - 7 - 1 == 21  # noise tokens
    assert inputs[0] < PIECES and targets[0] == V - 1  # starts with non-noise
    assert inputs[-2] >= PIECES  # the last span is noise
    assert _reassemble(inputs, targets) == tokens.tolist()
    starts = [j for j, t in enumerate(targets) if t >= PIECES] + [len(targets) - 1]
    span_lengths.update(b - a - 1 for a, b in zip(starts, starts[1:]))
  assert sum(k * n for k, n in span_lengths.items()) == 21 * 10_000
  assert len(span_lengths) >= 8  # random span lengths, not a fixed pattern


def test_span_lengths_are_a_uniform_random_composition():
  # 5 items in 3 positive parts: the C(4, 2) = 6 compositions are equally likely.
  rng = np.random.default_rng(1)
  counts = collections.Counter(tuple(sc._random_segmentation(5, 3, rng)) for _ in range(6000))  # pylint: disable=protected-access
  compositions = {c for c in itertools.product(range(1, 4), repeat=3) if sum(c) == 5}
  assert set(counts) == compositions
  assert all(abs(n - 1000) < 120 for n in counts.values()), counts


@pytest.mark.parametrize('length', list(range(1, 25)) + [141, 568])
def test_noise_mask_counts_for_every_length(length):
  mask = sc.random_spans_noise_mask(length, np.random.default_rng(length))
  assert mask.shape == (length,)
  if length >= 2:
    expected = min(max(int(np.round(np.float32(length) * np.float32(0.15))), 1), length - 1)
    assert mask.sum() == expected and not mask[0] and mask[-1]


def test_a_generator_draws_the_same_mask_again():
  tokens = np.arange(3, 144)
  corrupt = sc.SpanCorruption(vocab_size=V)
  same = [np.array_equal(corrupt(pipeline.example_rng(3, i), {'tokens': tokens})['inputs'],
                         corrupt(pipeline.example_rng(3, i), {'tokens': tokens})['inputs'])
          for i in range(50)]
  assert all(same)
  other = sum(not np.array_equal(corrupt(pipeline.example_rng(3, i), {'tokens': tokens})['inputs'],
                                 corrupt(pipeline.example_rng(4, i), {'tokens': tokens})['inputs'])
              for i in range(50))
  assert other >= 45


def test_documents_are_concatenated_then_cut_at_the_raw_length():
  docs = [[3, 4, 5], [6], [7, 8, 9, 10, 11]]
  chunks = pipeline.chunk_documents(docs, 4)
  assert [c.tolist() for c in chunks] == [[3, 4, 5, 6], [7, 8, 9, 10], [11]]
  with pytest.raises(ValueError, match='chunk length'):
    pipeline.chunk_documents(docs, 0)


def test_bad_parameters_are_one_clear_error():
  with pytest.raises(ValueError, match='noise_density'):
    sc.SpanCorruption(vocab_size=V, noise_density=1.5)
  with pytest.raises(ValueError, match='mean_noise_span_length'):
    sc.SpanCorruption(vocab_size=V, mean_noise_span_length=0.5)


def test_sentinels_are_what_transformers_t5_tokenizer_assigns(tmp_path):
  transformers = pytest.importorskip('transformers')
  pytest.importorskip('sentencepiece')
  texts = [f'a small corpus line number {i} with some words to split into pieces' for i in range(200)]
  sp = tok_lib.SentencePieceTokenizer.train(texts, vocab_size=80)
  path = tmp_path / 'spiece.model'
  path.write_bytes(sp.model_proto)
  hf = transformers.T5Tokenizer(vocab_file=str(path), extra_ids=100, legacy=False)
  vocab_size = sp.vocab_size + 100
  assert len(hf) == vocab_size
  assert (hf.pad_token_id, hf.eos_token_id, hf.unk_token_id) == (0, tok_lib.EOS_ID, tok_lib.UNK_ID)
  for k in range(100):
    assert hf.convert_tokens_to_ids(f'<extra_id_{k}>') == sc.sentinel_id(vocab_size, k)
  ours = tok_lib.SentencePieceTokenizer(sp.model_proto, extra_ids=100)
  ours.save(str(tmp_path / 'vocab.json'))
  loaded = tok_lib.load(str(tmp_path / 'vocab.json'))
  assert loaded.vocab_size == ours.vocab_size == vocab_size
  ids = ours.encode('a small corpus') + [sc.sentinel_id(vocab_size, 0)] + ours.encode('line')
  assert loaded.decode(ids + [tok_lib.EOS_ID, 5]) == hf.decode(ids, skip_special_tokens=False)
