"""Built-in synthetic translation task: dates written in words or numerals → ISO dates.

Source sentences use four formats, e.g. for 1994-03-23:

    twenty third of march nineteen ninety four
    march twenty third two thousand eleven          (years ≥ 2010 also "twenty eleven")
    2 3 mar 1 9 9 4
    0 3 / 2 3 / 1 9 9 4                              (US order: month first)

and the target is the ISO date spelled as characters: ``1 9 9 4 - 0 3 - 2 3``. The
task needs reordering, number-word composition and month lookup (it cannot be
solved by copying). Dates 1900-01-01 … 2099-12-31 are split by a fixed hash into
train (~98 %) and held-out eval (~2 %) dates, so eval pairs never occur in training.
"""

import datetime
import functools
import hashlib
from typing import List, Tuple

import numpy as np

MONTHS = ['january', 'february', 'march', 'april', 'may', 'june', 'july', 'august',
          'september', 'october', 'november', 'december']
ONES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten',
        'eleven', 'twelve', 'thirteen', 'fourteen', 'fifteen', 'sixteen', 'seventeen',
        'eighteen', 'nineteen']
TENS = ['', '', 'twenty', 'thirty', 'forty', 'fifty', 'sixty', 'seventy', 'eighty', 'ninety']
ORDINALS = ['', 'first', 'second', 'third', 'fourth', 'fifth', 'sixth', 'seventh', 'eighth',
            'ninth', 'tenth', 'eleventh', 'twelfth', 'thirteenth', 'fourteenth', 'fifteenth',
            'sixteenth', 'seventeenth', 'eighteenth', 'nineteenth']
TENS_ORDINAL = {2: 'twentieth', 3: 'thirtieth'}
NUM_FORMATS = 4


def number_words(n: int) -> str:
  """Words for 0 <= n < 100, e.g. 94 → 'ninety four'."""
  if n < 20:
    return ONES[n]
  tens, ones = divmod(n, 10)
  return TENS[tens] + ('' if ones == 0 else ' ' + ONES[ones])


def ordinal_words(n: int) -> str:
  """Ordinal words for 1 <= n <= 31, e.g. 23 → 'twenty third'."""
  if n < 20:
    return ORDINALS[n]
  tens, ones = divmod(n, 10)
  return TENS_ORDINAL[tens] if ones == 0 else f'{TENS[tens]} {ORDINALS[ones]}'


def year_words(year: int, variant: int) -> str:
  """Spoken year for 1900..2099; `variant` picks between equivalent readings."""
  century, rest = divmod(year, 100)
  if century == 19:
    if rest == 0:
      return 'nineteen hundred'
    return 'nineteen ' + ('oh ' + ONES[rest] if rest < 10 else number_words(rest))
  if rest >= 10 and variant % 2 == 1:
    return 'twenty ' + number_words(rest)
  return 'two thousand' + ('' if rest == 0 else ' ' + number_words(rest))


def digits(n: int, width: int) -> str:
  return ' '.join(str(n).zfill(width))


def render(date: datetime.date, fmt: int, variant: int) -> Tuple[str, str]:
  """(source, target) strings for `date` in source format `fmt`."""
  y, m, d = date.year, date.month, date.day
  if fmt == 0:
    src = f'{ordinal_words(d)} of {MONTHS[m - 1]} {year_words(y, variant)}'
  elif fmt == 1:
    src = f'{MONTHS[m - 1]} {ordinal_words(d)} {year_words(y, variant)}'
  elif fmt == 2:
    src = f'{" ".join(str(d))} {MONTHS[m - 1][:3]} {digits(y, 4)}'
  else:
    src = f'{digits(m, 2)} / {digits(d, 2)} / {digits(y, 4)}'
  tgt = f'{digits(y, 4)} - {digits(m, 2)} - {digits(d, 2)}'
  return src, tgt


def is_heldout(date: datetime.date) -> bool:
  """Fixed hash split: ~2 % of dates are eval-only."""
  return hashlib.md5(date.isoformat().encode()).digest()[0] < 6


@functools.lru_cache(maxsize=None)
def split_dates(split: str) -> Tuple[datetime.date, ...]:
  """The dates of one split, in calendar order (computed once per process: ~73,000 hashes)."""
  start, end = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
  every = (start + datetime.timedelta(days=i) for i in range((end - start).days + 1))
  return tuple(d for d in every if is_heldout(d) == (split == 'eval'))


def dates_pairs(split: str, num_examples: int, seed: int) -> List[Tuple[str, str]]:
  """Deterministic (source, target) pairs for the dates task.

  Args:
    split: 'train' or 'eval' (disjoint sets of dates).
    num_examples: how many pairs to return (distinct (date, format, reading) triples).
    seed: sampling seed.

  Returns:
    List of (source, target) string pairs.

  Raises:
    ValueError: unknown split, or more examples asked for than the split holds.
  """
  if split not in ('train', 'eval'):
    raise ValueError(f"synthetic dates split must be 'train' or 'eval', got {split!r}")
  dates = split_dates(split)
  capacity = len(dates) * NUM_FORMATS * 2
  if num_examples > capacity:
    raise ValueError(f'config.task: asked for {num_examples} {split} examples, '
                     f'the dates task has {capacity}')
  rng = np.random.default_rng([seed, 0 if split == 'train' else 1])
  picks = rng.choice(capacity, size=num_examples, replace=False)
  pairs = []
  for p in picks:
    date_idx, rest = divmod(int(p), NUM_FORMATS * 2)
    fmt, variant = divmod(rest, 2)
    pairs.append(render(dates[date_idx], fmt, variant))
  return pairs


def vocabulary() -> List[str]:
  """Every word the task can produce (sources and targets), in a fixed order."""
  words = set(MONTHS) | {m[:3] for m in MONTHS} | set(ONES) | set(TENS[2:]) | set(ORDINALS[1:])
  words |= set(TENS_ORDINAL.values()) | {'of', 'oh', 'hundred', 'thousand', '/', '-'}
  words |= {str(i) for i in range(10)}
  return sorted(words)
