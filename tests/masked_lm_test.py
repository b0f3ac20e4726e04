"""BERT masked-LM noise (lmjax/data/masked_lm.py): rates, eligibility, loss positions."""

import numpy as np
import pytest

from lmjax.data import masked_lm
from lmjax.data import pipeline

PIECES = 500
MASK = masked_lm.mask_id(PIECES)


def _rows(rng, n_rows, length=64):
  """Rows of regular tokens with specials (EOS, unknown) inside and padding at the end."""
  rows = []
  for _ in range(n_rows):
    row = rng.integers(3, PIECES, size=length).astype(np.int32)
    row[rng.random(length) < 0.05] = 2  # unknown
    row[rng.random(length) < 0.05] = 1  # EOS
    row[int(rng.integers(length // 2, length)):] = 0  # padding
    rows.append(row)
  return rows


def test_selection_and_replacement_rates_over_200k_eligible_tokens():
  transform = masked_lm.MaskedLM(mask=MASK)
  rng = np.random.default_rng(0)
  eligible = selected = to_mask = to_random = unchanged = 0
  for i, row in enumerate(_rows(rng, 6000)):
    ex = transform(pipeline.example_rng(11, i), {'tokens': row})
    inputs, targets = ex['inputs'], ex['targets']
    regular = row >= 3
    sel = targets > 0
    assert not np.any(sel & ~regular)  # no padding, EOS or unknown is ever selected
    assert np.array_equal(inputs[~sel], row[~sel])  # unselected tokens are untouched
    assert np.array_equal(targets[sel], row[sel])  # targets: the originals, only there
    eligible += int(regular.sum())
    selected += int(sel.sum())
    to_mask += int((inputs[sel] == MASK).sum())
    changed = sel & (inputs != MASK) & (inputs != row)
    assert np.all((inputs[changed] >= 3) & (inputs[changed] < PIECES))  # random regular ids
    to_random += int(changed.sum())
    unchanged += int((sel & (inputs == row)).sum())
  assert eligible >= 200_000
  assert abs(selected / eligible - 0.15) <= 0.005, selected / eligible
  # A random draw equals the original with probability 1/497: counted as unchanged.
  assert abs(to_mask / selected - 0.8) <= 0.01
  assert abs(to_random / selected - 0.1) <= 0.01
  assert abs(unchanged / selected - 0.1) <= 0.01


def test_bad_parameters_are_one_clear_error():
  with pytest.raises(ValueError, match='select_rate'):
    masked_lm.MaskedLM(mask=MASK, select_rate=0.0)
  with pytest.raises(ValueError, match='sum to at most 1'):
    masked_lm.MaskedLM(mask=MASK, mask_fraction=0.8, random_fraction=0.3)
  with pytest.raises(ValueError, match='MASK'):
    masked_lm.MaskedLM(mask=2)
