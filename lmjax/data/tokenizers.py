"""Tokenizers. Ids 0 = padding, 1 = EOS, 2 = unknown; real tokens from 3."""

import collections
import json
import os
from typing import Iterable, List, Sequence

PAD, EOS, UNK = '<pad>', '</s>', '<unk>'
SPECIALS = (PAD, EOS, UNK)
EOS_ID, UNK_ID = 1, 2


class VocabTokenizer:
  """Word- or character-level tokenizer over a fixed vocabulary.

  Attributes:
    level: 'word' (split on whitespace) or 'char'.
    tokens: id → token (specials first).
  """

  def __init__(self, tokens: Sequence[str], level: str = 'word'):
    if level not in ('word', 'char'):
      raise ValueError(f"tokenizer level must be 'word' or 'char', got {level!r}")
    if tuple(tokens[:3]) != SPECIALS:
      tokens = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
    self.level = level
    self.tokens = list(tokens)
    self._ids = {t: i for i, t in enumerate(self.tokens)}

  @classmethod
  def build(cls, texts: Iterable[str], level: str = 'word', min_count: int = 1,
            max_size: int = 0) -> 'VocabTokenizer':
    """Vocabulary from training texts: tokens seen ≥ min_count times, most frequent first.

    Args:
      texts: training sentences.
      level: 'word' or 'char'.
      min_count: minimum frequency to keep a token (others map to <unk>).
      max_size: cap on vocabulary size including specials (0 = no cap).

    Returns:
      The tokenizer.
    """
    counts = collections.Counter()
    for t in texts:
      counts.update(t.split() if level == 'word' else list(t))
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_size:
      kept = kept[:max_size - len(SPECIALS)]
    return cls(list(SPECIALS) + kept, level)

  @property
  def vocab_size(self) -> int:
    return len(self.tokens)

  def encode(self, text: str) -> List[int]:
    """Text → ids (no EOS)."""
    pieces = text.split() if self.level == 'word' else list(text)
    return [self._ids.get(p, UNK_ID) for p in pieces]

  def decode(self, ids: Iterable[int]) -> str:
    """Ids → text, stopping at EOS and skipping padding."""
    out = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i > EOS_ID:
        out.append(self.tokens[i] if i < len(self.tokens) else UNK)
    return (' ' if self.level == 'word' else '').join(out)

  def save(self, path: str) -> None:
    """Writes the vocabulary as JSON, atomically (write to a temp file, then rename)."""
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump({'type': 'vocab', 'level': self.level, 'tokens': self.tokens}, f, ensure_ascii=False)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> 'VocabTokenizer':
    """Reads a vocabulary written by `save`."""
    try:
      with open(path, encoding='utf-8') as f:
        data = json.load(f)
      return cls(data['tokens'], data['level'])
    except (OSError, ValueError, KeyError) as e:
      raise ValueError(f'tokenizer file {path} is unreadable ({e}); delete it to rebuild it') from e
