"""Every objective trains as it did before the objectives refactor (tests/equivalence.py).

20 steps of each case reproduce the losses recorded in tests/data/objective_losses.json;
1e-4 leaves room for another CPU's float32 reordering (`python -m tests.equivalence
--check` holds the recording machine to 1e-5).
"""

import json
import os

import pytest

from tests import equivalence

RECORDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'objective_losses.json')


@pytest.mark.parametrize('case', equivalence.CASES)
def test_twenty_steps_reproduce_the_recorded_losses(case, tmp_path):
  with open(RECORDED) as f:
    want = json.load(f)[case]
  got = equivalence.losses(case, str(tmp_path))
  assert equivalence.max_rel_diff(got, want) <= 1e-4, (got, want)
