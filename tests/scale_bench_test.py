"""The corpus generator of the scale benchmark (lmjax/bench/scale.py): alignment, lengths."""

import os

import pytest

from lmjax.bench import scale


def _read(path):
  with open(path, 'rb') as f:
    return f.read().split(b'\n')[:-1]


def _check_corpus(bank, tmp_path):
  src, tgt = str(tmp_path / 'c.en'), str(tmp_path / 'c.de')
  scale.write_lines([src, tgt], bank, 500, seed=3, stream=0)
  source, target = _read(src), _read(tgt)
  assert len(source) == len(target) == 500
  for line in source + target:
    assert scale.MIN_WORDS <= len(line.split()) <= scale.MAX_WORDS
  # Aligned: line i of each side joins the same bank pairs, in the same order.
  picks = [[i for i in row if i < len(bank.source)] for row in scale.pick(bank, 3, 0, 0)[:500]]
  assert all(1 <= len(p) <= 3 for p in picks)
  assert source == [b' '.join(bank.source[i] for i in p) for p in picks]
  assert target == [b' '.join(bank.target[i] for i in p) for p in picks]
  # Deterministic, and a shorter corpus is a prefix of a longer one.
  short = [str(tmp_path / 's.en'), str(tmp_path / 's.de')]
  scale.write_lines(short, bank, 120, seed=3, stream=0)
  assert _read(short[0]) == source[:120] and _read(short[1]) == target[:120]
  assert scale.count_lines(src) == 500 and scale.count_lines(str(tmp_path / 'none')) == -1


def test_synthetic_corpus(tmp_path):
  bank = scale.synthetic_bank(seed=0, size=2000)
  assert bank.name == 'synth' and len(bank.source) == len(bank.target) == 2000
  _check_corpus(bank, tmp_path)


def test_multi30k_corpus(tmp_path):
  data_dir = scale.shared_data_dir()
  if data_dir is None:
    pytest.skip('no Multi30k in ../shared/data')
  bank = scale.load_bank(data_dir)
  assert bank.name == 'm30k' and len(bank.source) == len(bank.target) > 20_000
  _check_corpus(bank, tmp_path)


def test_make_corpora_reuses_files(tmp_path):
  bank = scale.synthetic_bank(seed=1, size=1000)
  corpora = scale.make_corpora(str(tmp_path), [50, 200], 80, seed=1, bank=bank)
  big = os.path.join(corpora['pairs'][200], scale.M30K.format('train', 'de'))
  small = os.path.join(corpora['pairs'][50], scale.M30K.format('train', 'de'))
  assert _read(small) == _read(big)[:50]
  assert scale.count_lines(os.path.join(corpora['pairs'][50], scale.M30K.format('val', 'en'))) == \
      scale.EVAL_PAIRS
  assert scale.count_lines(corpora['lines']) == 80
  mtime = os.stat(big).st_mtime_ns
  scale.make_corpora(str(tmp_path), [50, 200], 80, seed=1, bank=bank)
  assert os.stat(big).st_mtime_ns == mtime  # reused, not rewritten
